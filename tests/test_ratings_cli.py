"""deeprec-ratings end to end (subprocess), whole-input errors, atomic output, and data=events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeprec.data.ratings import RatingsConfig, rate_events, read_events, write_outputs
from deeprec.errors import DataError

LOG = """user_id,timestamp,url,event
a,0,/c/x/l1,pageview
a,60,/c/x/l2,pageview
a,100,/home,pageview
a,200,/c/y/m1,pageview
a,260,/c/z/n1,pageview
a,300,/home,click
b,0,/c/x/l1,pageview
b,30,/c/y/m1,pageview
b,90,/c/z/n1,pageview
b,95,/c/z/n2,pageview
b,99,/home,pageview
,5,/c/x/l1,pageview
"""


def cli(args, cwd) -> subprocess.CompletedProcess:
    code = "from deeprec.cli.ratings import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def log_csv(tmp_path) -> Path:
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    return path


def test_cli_writes_the_output_folder_and_honours_overrides(tmp_path, log_csv):
    out = tmp_path / "out"
    run = cli([f"input={log_csv}", f"output={out}", "ratings.threshold=global", "ratings.penalty=linear",
               "ratings.min_lesson_seconds=10", "ratings.max_courses=null"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        ".deeprec", "lesson_durations.parquet", "ratings.parquet", "rejects.parquet", "summary.json"]
    ratings = pd.read_parquet(out / "ratings.parquet")
    assert list(ratings.columns) == ["user_id", "course_id", "rating", "pct_viewed", "lessons_viewed", "first_seen", "split"]
    # by hand: lessons_in: x 2, y 1, z 2 (n1, n2). a: x l1 60 s, l2 40 s (2/2), y 60 s (1/1),
    # z n1 40 s (1/2). b: x l1 30 s (1/2), y 60 s, z: n1 5 s and n2 4 s (< 10 s, do not count), so
    # b keeps 2 courses < min_courses 3 and is removed. Global t = (1 + 1 + .5) / 3 = 5/6;
    # z: x = .5 / (5/6) = .6 -> linear 5 * .6 = 3.
    assert ratings["user_id"].tolist() == ["a"] * 3 and ratings["course_id"].tolist() == ["c/x", "c/y", "c/z"]
    assert ratings["rating"].tolist() == pytest.approx([5.0, 5.0, 3.0])
    assert ratings["split"].tolist() == ["train", "train", "test"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == 12 and summary["rows_rejected"]["missing_user"] == 1
    assert summary["users_removed"]["min_courses"] == 1
    assert summary["config"]["penalty"] == "linear" and summary["config"]["max_courses"] is None
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert rejects["reason"].tolist() == ["missing_user"] and rejects["url"].tolist() == ["/c/x/l1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "out"]  # no outputs/, no .hydra


def test_cli_misspelt_key_fails_in_one_line(tmp_path, log_csv):
    run = cli([f"input={log_csv}", f"output={tmp_path / 'out'}", "ratings.treshold=global"], cwd=tmp_path)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "treshold" in lines[0] and "threshold" in lines[0]
    bad_value = cli([f"input={log_csv}", f"output={tmp_path / 'out'}", "ratings.penalty=cubic"], cwd=tmp_path)
    assert bad_value.returncode != 0 and "cubic" in bad_value.stderr and "sqrt" in bad_value.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_column_names_the_file(tmp_path):
    bad = tmp_path / "nourl.csv"
    bad.write_text("user_id,timestamp,page\na,0,/c/x/l1\n")
    run = cli([f"input={bad}", f"output={tmp_path / 'out'}"], cwd=tmp_path)
    assert run.returncode != 0
    assert str(bad) in run.stderr and "url" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_whole_input_errors_name_file_and_line(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        read_events(empty)
    header = tmp_path / "header.csv"
    header.write_text("user_id,timestamp,url\n")
    with pytest.raises(DataError, match="header.csv: no rows"):
        read_events(header)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,timestamp,url\na,0,/c/x/l1\na,1,/c/x/l2\na,2,/c/x/l3,extra\n")
    with pytest.raises(DataError, match=r"ragged.csv: cannot be parsed.*line 4"):
        read_events(ragged)
    with pytest.raises(DataError, match="no such file"):
        read_events(tmp_path / "absent.csv")


def test_ids_are_read_as_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("user_id,timestamp,course_id,lesson_id\n007,0,01,1\n007,9,01,2\n")
    events = read_events(path)
    result = rate_events(events, RatingsConfig(min_courses=1))
    assert result.ratings["user_id"].tolist() == ["007"] and result.ratings["course_id"].tolist() == ["01"]


def test_write_outputs_is_atomic(tmp_path, log_csv, monkeypatch):
    result = rate_events(read_events(log_csv), RatingsConfig(min_courses=1))
    out = tmp_path / "out"
    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the ratings file is written, then the disk "fills up"
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError):
        write_outputs(result, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]  # no folder, no temp sibling
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    write_outputs(result, out)
    before = (out / "ratings.parquet").read_bytes()
    calls["n"] = 0
    monkeypatch.setattr(pd.DataFrame, "to_parquet", failing)
    with pytest.raises(OSError):
        write_outputs(result, out)
    assert (out / "ratings.parquet").read_bytes() == before  # a failed rewrite keeps the old folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv", "out"]


def test_events_dataset_splits_and_rejects(tmp_path):
    from hydra import compose, initialize_config_module

    from deeprec.cli.common import load_data

    rng = np.random.default_rng(0)
    n = 4000
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 40, n).astype(str),
        "timestamp": np.sort(rng.integers(0, 10**6, n)),
        "url": [f"/en/c{c}/l{l}" for c, l in zip(rng.integers(0, 12, n), rng.integers(0, 4, n))],
    })
    frame.loc[0, "user_id"] = None
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=events", f"data.path={path}", "data.valid_share=0.25"])
    data = load_data(cfg.data)
    assert data.extras["rows_in"] == n and data.extras["rejects"]["reason"].tolist() == ["missing_user"]
    ratings = rate_events(read_events(path), RatingsConfig()).ratings
    f = data.frame.assign(user_id=data.user_ids[data.frame["user"]], course_id=data.item_ids[data.frame["item"]])
    merged = f.merge(ratings, on=["user_id", "course_id"], suffixes=("", "_r"))
    assert len(merged) == len(ratings) == len(f)
    assert (merged["split_r"] == "test").eq(merged["split"] == "test").all()  # test is the ratings' test
    assert np.allclose(merged["rating"], merged["rating_r"])
    for user, rows in merged[merged["split"] != "test"].groupby("user_id"):
        n_train = len(rows)
        n_keep = min(max(int(np.floor(0.75 * n_train + 1e-9)), 1), n_train - 1)
        by_time = rows.sort_values("first_seen")["split"].tolist()
        assert by_time == ["train"] * n_keep + ["valid"] * (n_train - n_keep), user
