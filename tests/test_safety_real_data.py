"""Issue 14 on the real datasets in ../shared/data (skipped without them): the EPM clickstream and
MovieLens keep every id exactly, a rerun keeps the user's files, and a table on another rating
scale says so (and how to fix it)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deeprec.data.ratings import RatingsConfig, rate_log
from inprocess_cli import run_cli_output
from test_ratings_epm import epm_log

pytestmark = pytest.mark.shared_data


def test_epm_as_integer_parquet_ids_on_both_paths_and_a_rerun_keeps_the_users_files(shared_data, tmp_path, monkeypatch, capsys):
    # cases: ids-parquet-int-with-null, ids-same-on-both-paths, output-foreign-files-in-own-folder (real log)
    events = epm_log(shared_data)
    users = pd.to_numeric(events["user_id"]).astype("Int64")
    users.iloc[0] = pd.NA  # one row without a learner, as an exporter would write it
    table = pa.table({"user_id": pa.array(users, pa.int64()), "timestamp": events["timestamp"],
                      "course_id": events["course_id"], "lesson_id": events["lesson_id"]})
    log = tmp_path / "epm.parquet"
    pq.write_table(table, log)
    cfg = RatingsConfig(min_courses=3, min_lesson_seconds=60)
    memory, disk = (rate_log(log, cfg, out_of_core=o) for o in (False, True))
    expected = sorted(set(events["user_id"].iloc[1:]))  # plain integers in the log: the same text back
    assert sorted(memory.sessions.index) == sorted(disk.sessions.index) == expected  # "7", never "7.0"
    assert memory.summary["rows_rejected"]["missing_user"] == 1
    key = ["user_id", "course_id"]
    pd.testing.assert_frame_equal(memory.ratings.sort_values(key).reset_index(drop=True),
                                  disk.ratings.sort_values(key).reset_index(drop=True))

    out = tmp_path / "ratings"
    args = [f"input={log}", f"output={out}", "ratings.min_courses=3", "ratings.min_lesson_seconds=60"]
    code, stdout, err = run_cli_output("deeprec.cli.ratings", args, monkeypatch, capsys)
    assert code == 0, err
    s = memory.summary
    rejected = sum(s["rows_rejected"].values())
    line = [row for row in stdout.splitlines() if f"{len(events)} rows read" in row]
    assert len(line) == 1 and f"{s['rows_accepted']} accepted, {rejected} rejected (" in line[0], stdout
    assert "missing_user 1" in line[0] and f"{s['ratings']} ratings" in line[0]
    (out / "notes.txt").write_text("the lab's notes")
    code, stdout, err = run_cli_output("deeprec.cli.ratings", args, monkeypatch, capsys)
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "the lab's notes"


def test_movielens_ids_round_trip_and_another_rating_scale_is_named(shared_data, tmp_path, monkeypatch, capsys):
    # cases: ids-null-markers (real ids as text), mostly-rejected (MovieLens on a 1-10 scale)
    from deeprec.data.adapters.interactions import InteractionsDataConfig, load

    raw = pd.read_csv(shared_data / "ml-latest-small" / "ratings.csv", dtype=str, keep_default_na=False)
    table = raw.rename(columns={"userId": "user_id", "movieId": "item_id"})
    data = load(InteractionsDataConfig(path=_write(table, tmp_path / "ml.csv")))
    assert sorted(data.user_ids) == sorted(set(table["user_id"])) and sorted(data.item_ids) == sorted(set(table["item_id"]))
    assert len(data.extras["rejects"]) == 0  # no repeated (user, movie) pair in MovieLens

    doubled = table.assign(rating=(pd.to_numeric(table["rating"]) * 2).astype(str))
    args = ["data=interactions", f"data.path={_write(doubled, tmp_path / 'ml10.csv')}", "model=pop",
            f"run_dir={tmp_path / 'run'}"]
    code, stdout, err = run_cli_output("deeprec.cli.train", args, monkeypatch, capsys)
    assert code == 0, err
    warning = [line for line in stdout.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "data.rating_range=[1.0, 10.0]" in warning[0], stdout
    code, stdout, err = run_cli_output("deeprec.cli.train", [*args, "data.rating_range=[1.0,10.0]"], monkeypatch, capsys)
    assert code == 0 and f"{len(table)} rows read, {len(table)} accepted, 0 rejected" in stdout, err


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)
