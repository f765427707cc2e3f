"""A result computed on little of the data says so (issue 14 classes 5-6): every command prints one
line of what it accepted and rejected, a mostly rejected input warns (strict=true: stops), and the
inputs that leave nothing to learn or to evaluate stop with a message naming the cause. Repeated
(user, item) rows are merged by one documented rule; a pair in both train and test is reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeprec.data.adapters.interactions import InteractionsDataConfig, load
from deeprec.data.splits import SplitConfig
from inprocess_cli import one_line_error, run_cli_output

HEADER = "user_id,timestamp,url\n"


def train_pop(path: Path, tmp_path: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str, str]:
    """deeprec-train model=pop on an interactions file, in-process: (exit code, stdout, stderr)."""
    return run_cli_output("deeprec.cli.train", ["data=interactions", f"data.path={path}", "model=pop",
                                                f"run_dir={tmp_path / 'run'}", *extra], monkeypatch, capsys)


def lines_with(text: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if fragment in line]




@pytest.fixture
def log_csv(tmp_path) -> Path:
    """Four learners on three courses; one row without a user, one with a bad time."""
    rows = [f"u{u},{100 * u + 10 * t},/c/k{t % 3}/l{t}" for u in range(4) for t in range(6)]
    rows += [",5,/c/k0/l0", "u1,yesterday,/c/k0/l0"]
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def scale_table(path: Path, seed: int = 0, n_users: int = 40, n_items: int = 20) -> Path:
    """Ratings on a 1-10 scale: with the default data.rating_range [0, 5] about half go to rejects."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(0, n_users, 800), "item_id": rng.integers(0, n_items, 800),
                          "timestamp": rng.integers(0, 10**6, 800)}).drop_duplicates(["user_id", "item_id"])
    frame["rating"] = np.where(rng.random(len(frame)) < 0.8, rng.integers(6, 11, len(frame)), rng.integers(1, 6, len(frame)))
    frame.to_csv(path, index=False)
    return path


# -- one summary line per command ----------------------------------------------------------------
def test_ratings_prints_what_it_accepted_and_rejected(log_csv, tmp_path, monkeypatch, capsys):
    # case: summary-line (deeprec-ratings)
    code, out, err = run_cli_output("deeprec.cli.ratings", [f"input={log_csv}", f"output={tmp_path / 'out'}",
                                                             "ratings.min_courses=1"], monkeypatch, capsys)
    assert code == 0, err
    found = lines_with(out, "26 rows read")
    assert len(found) == 1 and "24 accepted, 2 rejected (bad_timestamp 1, missing_user 1)" in found[0], out
    assert "4 users x 3 courses" in found[0]


def test_train_prints_what_it_read_and_whom_it_evaluated(tmp_path, monkeypatch, capsys):
    # case: summary-line (deeprec-train): rows read / accepted / rejected, then users evaluated
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},{10 * i}\n" for u in range(6) for i in range(5))
                    + "u0,i0,0\n,i1,3\n")
    code, out, err = train_pop(path, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    found = lines_with(out, "32 rows read")
    assert len(found) == 1 and "30 accepted, 2 rejected (duplicate 1, missing_user 1)" in found[0], out
    assert len(lines_with(out, "evaluated 6 of 6 users")) == 1, out


def test_score_prints_whom_the_model_and_the_fallback_scored(tmp_path, monkeypatch, capsys):
    # case: summary-line (deeprec-score)
    from deeprec.baselines.pop import Popularity
    from deeprec.checkpoint import save_checkpoint
    from deeprec.data.interactions import from_frame

    data = from_frame(pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "split": ["train"] * 3}), "t")
    save_checkpoint(Popularity(data.n_users, data.n_items).fit(data), data, tmp_path / "pop.ckpt")
    (tmp_path / "users.txt").write_text("a\nb\nzz\n")
    code, out, err = run_cli_output("deeprec.cli.score", [f"ckpt={tmp_path / 'pop.ckpt'}", f"output={tmp_path / 's'}",
                                                           f"users={tmp_path / 'users.txt'}", "progress=false"],
                                    monkeypatch, capsys)
    assert code == 0, err
    assert len(lines_with(out, "3 users: 2 scored by the model, 1 by the popularity fallback (1 unknown id)")) == 1, out


# -- mostly rejected: a warning, strict=true an error -----------------------------------------------
def test_mostly_rejected_ratings_warn_and_name_the_rating_range(tmp_path, monkeypatch, capsys):
    # case: mostly-rejected (bad_rating on a 1-10 scale): the warning names data.rating_range
    path = scale_table(tmp_path / "ten.csv")
    args = ["data=interactions", f"data.path={path}", "model=pop", f"run_dir={tmp_path / 'run'}"]
    code, out, err = run_cli_output("deeprec.cli.train", args, monkeypatch, capsys)
    assert code == 0, err
    warning = lines_with(out, "WARNING")
    assert len(warning) == 1 and "% of the rows were rejected" in warning[0], out
    assert "bad_rating" in warning[0] and "data.rating_range=[1.0, 10.0]" in warning[0], warning[0]
    code, out, err = run_cli_output("deeprec.cli.train", [*args, "strict=true"], monkeypatch, capsys)
    one_line_error(code, err, "rejected", "data.rating_range", "strict=true")
    code, out, err = run_cli_output("deeprec.cli.train", [*args, "max_reject_share=0.9"], monkeypatch, capsys)
    assert code == 0 and not lines_with(out, "WARNING"), out


def test_mostly_rejected_events_warn_and_strict_stops(tmp_path, monkeypatch, capsys):
    # case: mostly-rejected (deeprec-ratings): 3 of 4 rows have a time that is not a time
    rows = [f"u{u},{10 * t},/c/k{t}/l1" for u in range(3) for t in range(3)]
    rows += [f"u{u},{t} o'clock,/c/k{t}/l1" for u in range(3) for t in range(9)]
    path = tmp_path / "clock.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    args = [f"input={path}", f"output={tmp_path / 'out'}", "ratings.min_courses=1"]
    code, out, err = run_cli_output("deeprec.cli.ratings", args, monkeypatch, capsys)
    assert code == 0, err
    assert len(lines_with(out, "WARNING: 75% of the rows were rejected (bad_timestamp 75%)")) == 1, out
    code, out, err = run_cli_output("deeprec.cli.ratings", [*args, "strict=true"], monkeypatch, capsys)
    one_line_error(code, err, "75% of the rows were rejected")


# -- nothing to learn from: stop, naming the cause ------------------------------------------------------
def test_a_url_pattern_that_matches_no_row_is_named(tmp_path, monkeypatch, capsys):
    # case: url-pattern-matches-nothing (deeprec-ratings and data=events): the message names the
    # pattern and a URL of the log, not the user filters
    path = tmp_path / "yt.csv"
    path.write_text(HEADER + "".join(f"u{u},{10 * t},/watch?v=lesson{t}\n" for u in range(5) for t in range(4)))
    code, out, err = run_cli_output("deeprec.cli.ratings", [f"input={path}", f"output={tmp_path / 'out'}"], monkeypatch, capsys)
    line = one_line_error(code, err, "ratings.url_pattern", "/watch?v=lesson0")
    assert "min_courses" not in line
    code, out, err = run_cli_output("deeprec.cli.train", ["data=events", f"data.path={path}", "model=pop",
                                                           f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    line = one_line_error(code, err, "ratings.url_pattern", "/watch?v=lesson0")
    assert "min_courses" not in line


def test_no_ratings_out_of_the_pipeline_stops_with_the_cause(log_csv, tmp_path, monkeypatch, capsys):
    # case: zero-ratings (deeprec-ratings): all rows rejected, or the user filters removed everyone
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + ",0,/c/x/l1\na,x,/c/x/l1\n")
    code, out, err = run_cli_output("deeprec.cli.ratings", [f"input={bad}", f"output={tmp_path / 'o1'}"], monkeypatch, capsys)
    one_line_error(code, err, "no ratings", "all 2 rows were rejected", "bad_timestamp 1", "missing_user 1")
    assert (tmp_path / "o1" / "rejects.parquet").is_file()  # written, to look at
    code, out, err = run_cli_output("deeprec.cli.ratings", [f"input={log_csv}", f"output={tmp_path / 'o2'}",
                                                             "ratings.min_courses=4"], monkeypatch, capsys)
    one_line_error(code, err, "no ratings", "min_courses", "4 users")


def test_a_nan_minimum_lesson_time_is_refused(log_csv, tmp_path, monkeypatch, capsys):
    # case: min-lesson-seconds-nan
    code, out, err = run_cli_output("deeprec.cli.ratings", [f"input={log_csv}", f"output={tmp_path / 'o'}",
                                                             "ratings.min_lesson_seconds=nan"], monkeypatch, capsys)
    one_line_error(code, err, "ratings.min_lesson_seconds=nan")
    assert not (tmp_path / "o").exists()


def test_a_model_with_no_train_row_is_not_trained(tmp_path, monkeypatch, capsys):
    # case: no-train-rows: a split column with only test rows
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,split\n" + "".join(f"u{u},i{i},test\n" for u in range(4) for i in range(3)))
    code, out, err = train_pop(path, tmp_path, monkeypatch, capsys)
    one_line_error(code, err, "no train rows")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_test_split_with_no_evaluable_user_stops_before_training(tmp_path, monkeypatch, capsys):
    # case: no-evaluable-user: the test items are all items the users had in train
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,split\n" + "".join(f"u{u},i{i},train\n" for u in range(4) for i in range(3))
                    + "u0,i0,test\n")
    code, out, err = train_pop(path, tmp_path, monkeypatch, capsys)
    one_line_error(code, err, "test split", "no user")
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- repeated pairs ------------------------------------------------------------------------------------
def interactions(path: Path, **split) -> object:
    data = load(InteractionsDataConfig(path=str(path), split=SplitConfig(strategy="random", valid_share=0.0, **split)))
    assert data.extras["rows_in"] == len(data.frame) + len(data.extras["rejects"])
    return data


def test_repeated_pairs_keep_the_latest_rating(tmp_path):
    # case: repeated-pairs: the latest row of a (user, item) counts, never a sum outside the range
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,rating,timestamp\na,x,5,2\na,x,3,1\na,x,4,3\na,y,4,3\nb,x,2,1\n")
    data = interactions(path)
    matrix = data.matrix(("train", "valid", "test"))
    a, x = list(data.user_ids).index("a"), list(data.item_ids).index("x")
    assert matrix[a, x] == 4.0 and matrix.max() <= 5.0
    assert data.extras["rejects"]["reason"].tolist() == ["repeated_pair", "repeated_pair"]
    assert data.extras["rejects"]["rating"].astype(float).tolist() == [5.0, 3.0]
    no_time = tmp_path / "n.csv"
    no_time.write_text("user_id,item_id,rating\na,x,5\na,x,1\nb,y,2\n")  # no timestamp: the last row in the file
    data = interactions(no_time)
    a, x = list(data.user_ids).index("a"), list(data.item_ids).index("x")
    assert data.matrix(("train", "valid", "test"))[a, x] == 1.0


def test_a_pair_in_train_and_test_is_reported(tmp_path, monkeypatch, capsys):
    # case: pair-in-train-and-test: its test row can never be hit (the item is excluded as seen)
    path = tmp_path / "t.csv"
    path.write_text("user_id,item_id,split\na,x,train\na,y,train\na,x,test\na,z,test\nb,x,train\nb,z,test\n")
    data = interactions(path)
    assert data.extras["pairs_in_train_and_test"] == 1
    code, out, err = train_pop(path, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert len(lines_with(out, "1 (user, item) pair is in both train and test")) == 1, out
