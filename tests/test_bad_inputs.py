"""The bad-input catalogue (README "Reliability"): every case ends in a clear error naming the problem
or in rejects with a reason, and rows_in == accepted + rejected wherever rows are read.

Each test id (the `case` string) is a row of the README table. Event logs are rated both in memory
and out-of-core, so the two paths must agree on every case. CLI cases run the Hydra entry points
in-process (sys.argv + SystemExit) to check the exit code and that no traceback is printed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.checkpoint import load_recommender, save_checkpoint
from deeprec.data.adapters.interactions import InteractionsDataConfig, load
from deeprec.data.ratings import RatingsConfig, rate_events, rate_log
from deeprec.data.splits import SplitConfig
from deeprec.errors import CheckpointError, DataError
from conftest import write_random_table
from inprocess_cli import run_cli

HEADER = "user_id,timestamp,url\n"


# -- helpers -----------------------------------------------------------------------------------
def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def rated(path: Path, out_of_core: bool, **cfg):
    """rate_log on a file, with the rows_in invariant checked on the way."""
    cfg.setdefault("min_courses", 1)
    result = rate_log(path, RatingsConfig(**cfg), out_of_core=out_of_core)
    s = result.summary
    assert s["rows_in"] == s["rows_accepted"] + sum(s["rows_rejected"].values())
    assert len(result.rejects) == sum(s["rows_rejected"].values())
    return result


def interactions(path: Path, **cfg):
    """data=interactions on a file, with the rows_in invariant checked on the way."""
    cfg.setdefault("split", SplitConfig(strategy="random", valid_share=0.0))
    data = load(InteractionsDataConfig(path=str(path), **cfg))
    assert data.extras["rows_in"] == len(data.frame) + len(data.extras["rejects"])
    return data


def reasons(frame: pd.DataFrame) -> list[str]:
    return frame["reason"].tolist()


both_paths = pytest.mark.parametrize("out_of_core", [False, True], ids=["in-memory", "out-of-core"])


# -- event logs: whole-input errors (deeprec-ratings, data=events) ------------------------------
WHOLE_INPUT = [
    ("ratings-missing-column", "noloc.csv", "user_id,timestamp,page\na,0,/c/x/l1\n",
     r"noloc\.csv: required column\(s\) \['url \(or both course_id and lesson_id\)'\] missing"),
    ("ratings-renamed-column", "renamed.csv", "userid,timestamp,url\na,0,/c/x/l1\n",
     r"renamed\.csv: required column\(s\) \['user_id'\] missing; found \['userid', 'timestamp', 'url'\]"),
    ("ratings-empty-file", "empty.csv", "", r"empty\.csv: the file is empty"),
    ("ratings-header-only", "header.csv", HEADER, r"header\.csv: no rows \(a header but no events\)"),
    ("ratings-non-utf8", "latin1.csv", (HEADER + "Jos\xe9,0,/c/x/l1\n").encode("latin-1"),
     r"latin1\.csv: is not valid UTF-8 text \(byte 25"),
    ("ratings-too-many-fields", "ragged.csv", HEADER + "a,0,/c/x/l1\na,1,/c/x/l2,extra\n",
     r"ragged\.csv: cannot be parsed.*Expected 3 fields in line 3, saw 4"),
    ("ratings-too-few-fields", "short.csv", HEADER + "a,0,/c/x/l1\na,1\n",
     r"short\.csv: cannot be parsed.*Expected 3 columns, got 2: a,1"),
    ("ratings-not-parquet", "fake.parquet", b"user_id,timestamp\n", r"fake\.parquet: cannot be read as Parquet"),
]


@both_paths
@pytest.mark.parametrize("case, name, content, message", WHOLE_INPUT, ids=[c[0] for c in WHOLE_INPUT])
def test_event_log_whole_input_errors_name_the_file(tmp_path, case, name, content, message, out_of_core):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        rated(path, out_of_core)


@both_paths
def test_ratings_no_such_path_and_empty_folder(tmp_path, out_of_core):
    # cases: ratings-no-such-path, ratings-empty-folder
    with pytest.raises(DataError, match=r"absent\.csv: no such file or folder"):
        rated(tmp_path / "absent.csv", out_of_core)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "notes.txt").write_text("not a table")
    with pytest.raises(DataError, match=r"logs: the folder holds no \.csv, \.tsv or \.parquet file"):
        rated(tmp_path / "logs", out_of_core)


def test_ratings_too_few_fields_names_the_line(tmp_path):
    # case: ratings-too-few-fields (line number)
    path = write(tmp_path, "short.csv", HEADER + "a,0,/c/x/l1\na,1\n")
    with pytest.raises(DataError, match="line 3"):
        rated(path, False)


def test_ratings_byte_order_mark_header_is_read(tmp_path):
    # case: ratings-bom-header
    path = write(tmp_path, "excel.csv", "\ufeff" + HEADER + "a,0,/c/x/l1\na,10,/home\n")
    assert rated(path, False).lesson_durations["seconds"].tolist() == [10.0]


# -- event logs: row errors go to rejects with a reason ------------------------------------------
@both_paths
def test_ratings_bad_and_out_of_range_timestamps_are_rejected(tmp_path, out_of_core):
    # cases: ratings-bad-timestamp, ratings-out-of-range-timestamp
    rows = ["a,yesterday,/c/x/l1", "a,2020-13-45T00:00:00,/c/x/l1", "a,,/c/x/l1", "a,1e30,/c/x/l1",
            "a,99999-01-01T00:00:00,/c/x/l1", "a,inf,/c/x/l1", "a,nan,/c/x/l1", "a,0,/c/x/l1", "a,10,/home"]
    result = rated(write(tmp_path, "ts.csv", HEADER + "\n".join(rows) + "\n"), out_of_core)
    assert reasons(result.rejects) == ["bad_timestamp"] * 7
    assert result.rejects.index.tolist() == list(range(7))  # the input rows, in order
    assert result.rejects["timestamp"].tolist()[:2] == ["yesterday", "2020-13-45T00:00:00"]  # original text kept
    assert result.summary["rows_accepted"] == 2
    assert result.lesson_durations["seconds"].tolist() == [10.0]


@both_paths
def test_ratings_mixed_timestamp_formats_are_one_time_line(tmp_path, out_of_core):
    # case: ratings-mixed-timestamps. 2020-01-01T00:00:00Z = 1577836800 s; each format below is 10 s later.
    rows = ["a,2020-01-01T00:00:00Z,/c/x/l1", "a,1577836810,/c/x/l2", "a,1577836820000,/c/x/l3",
            "a,2020-01-01T01:00:30+01:00,/c/x/l4", "a,2020-01-01 00:00:40,/home"]
    result = rated(write(tmp_path, "mixed.csv", HEADER + "\n".join(rows) + "\n"), out_of_core)
    d = result.lesson_durations.sort_values("lesson_id")
    assert d["lesson_id"].tolist() == ["l1", "l2", "l3", "l4"]
    assert d["seconds"].tolist() == [10.0, 10.0, 10.0, 10.0]
    assert result.ratings["first_seen"].tolist() == [1577836800.0]


@both_paths
def test_ratings_rows_out_of_order_give_the_sorted_result(tmp_path, rng, out_of_core):
    # case: ratings-rows-out-of-order (a property: the result does not depend on the row order)
    n = 300
    log = pd.DataFrame({
        "user_id": rng.integers(0, 8, n).astype(str),
        "timestamp": rng.choice(np.arange(0, 40_000, 7), n, replace=False),
        "url": [f"/c/k{c}/l{lesson}" for c, lesson in zip(rng.integers(0, 4, n), rng.integers(0, 3, n))],
    })
    in_order = log.sort_values(["user_id", "timestamp"])
    in_order.to_csv(tmp_path / "sorted.csv", index=False)
    log.to_csv(tmp_path / "shuffled.csv", index=False)
    a = rated(tmp_path / "sorted.csv", out_of_core)
    b = rated(tmp_path / "shuffled.csv", out_of_core)
    key = ["user_id", "course_id"]
    pd.testing.assert_frame_equal(a.ratings.sort_values(key).reset_index(drop=True),
                                  b.ratings.sort_values(key).reset_index(drop=True))


@both_paths
def test_ratings_duplicates_and_missing_users_are_rejected(tmp_path, out_of_core):
    # cases: ratings-duplicates, ratings-missing-user (empty, blank, NaN-like ids)
    text = ("user_id,timestamp,url,event\n"
            "a,0,/c/x/l1,pageview\n"
            "a,0,/c/x/l1,pageview\n"      # exact repeat: duplicate
            "a,0,/c/x/l1,click\n"         # another event at the same time: kept
            ",5,/c/x/l1,pageview\n"       # empty id
            "   ,5,/c/x/l1,pageview\n"    # blank id
            "a,60,/home,pageview\n")
    result = rated(write(tmp_path, "dups.csv", text), out_of_core)
    assert reasons(result.rejects) == ["duplicate", "missing_user", "missing_user"]
    assert result.rejects.index.tolist() == [1, 3, 4]
    assert result.summary["rows_rejected"] == {"missing_user": 2, "bad_timestamp": 0, "duplicate": 1}


def test_ratings_ids_of_mixed_types_are_one_id_per_text():
    # case: ratings-mixed-type-ids: 7 and "7" are the same learner (ids are text); "07" is another
    log = pd.DataFrame({"user_id": [7, "7", "07"], "timestamp": [0, 10, 0],
                        "url": ["/c/x/l1", "/c/x/l2", "/c/x/l1"]})
    result = rate_events(log, RatingsConfig(min_courses=1))
    assert sorted(result.sessions.index) == ["07", "7"]
    got = result.lesson_durations.set_index(["user_id", "lesson_id"])["views"].to_dict()
    assert got == {("7", "l1"): 1, ("7", "l2"): 1, ("07", "l1"): 1}


@both_paths
def test_ratings_ids_are_text_with_leading_zeros(tmp_path, out_of_core):
    # case: ratings-leading-zero-ids: "007" and "7" in a CSV are two learners
    result = rated(write(tmp_path, "z.csv", HEADER + "007,0,/c/x/l1\n7,0,/c/x/l1\n"), out_of_core)
    assert sorted(result.ratings["user_id"]) == ["007", "7"]


# -- event logs: degenerate but valid data --------------------------------------------------------
def test_ratings_user_with_a_single_event_is_imputed_then_filtered(tmp_path):
    # case: ratings-single-event-user. b's only view ends its session: d = the observed mean of l1
    # (a: 40 s). With min_courses=1 b is rated (pct 1 -> 5); with the default 3, b is removed and counted.
    text = HEADER + "a,0,/c/x/l1\na,40,/home\nb,100,/c/x/l1\n"
    path = write(tmp_path, "single.csv", text)
    one = rated(path, False)
    d = one.lesson_durations.set_index("user_id")["seconds"].to_dict()
    assert d == {"a": 40.0, "b": 40.0}
    assert one.ratings.set_index("user_id")["rating"].to_dict() == {"a": 5.0, "b": 5.0}
    default = rated(path, False, min_courses=3)
    assert len(default.ratings) == 0 and default.summary["users_removed"]["min_courses"] == 2


def test_ratings_course_with_a_single_lesson_and_a_dataset_with_one_user(tmp_path):
    # cases: ratings-single-lesson-course, ratings-one-user. One learner, 3 courses, y has one lesson:
    # lessons_in(x)=2, (y)=1, (z)=1; every pct is 1 -> t_u = 1 -> every rating 5; split 2 train + 1 test.
    text = HEADER + "a,0,/c/x/l1\na,10,/c/x/l2\na,20,/c/y/m\na,30,/c/z/n\na,40,/home\n"
    result = rated(write(tmp_path, "one.csv", text), False, min_courses=3)
    r = result.ratings.set_index("course_id")
    assert r["pct_viewed"].to_dict() == {"c/x": 1.0, "c/y": 1.0, "c/z": 1.0}
    assert r["rating"].tolist() == [5.0, 5.0, 5.0]
    assert r["split"].tolist() == ["train", "train", "test"]
    assert result.summary["users"] == 1


def test_ratings_all_rows_rejected_is_an_empty_result_then_a_clear_data_error(tmp_path):
    # case: ratings-all-rejected: deeprec-ratings writes empty tables with the counts; data=events stops
    from deeprec.data.adapters.events import ratings_to_interactions

    result = rated(write(tmp_path, "bad.csv", HEADER + ",0,/c/x/l1\na,x,/c/x/l1\n"), False)
    assert result.summary["rows_rejected"] == {"missing_user": 1, "bad_timestamp": 1, "duplicate": 0}
    assert len(result.ratings) == 0
    with pytest.raises(DataError, match=r"bad\.csv: no ratings: all 2 rows were rejected \(bad_timestamp 1, missing_user 1\)"):
        ratings_to_interactions(result)


# -- data=interactions ------------------------------------------------------------------------------
def test_interactions_ratings_out_of_range_negative_nan_and_text_are_rejected(tmp_path):
    # cases: interactions-negative-rating, interactions-out-of-range-rating, interactions-nan-rating
    text = "user_id,item_id,rating\na,x,-1\na,y,3\nb,x,\nb,y,inf\nb,z,five\nc,z,5.5\nc,x,0\n"
    data = interactions(write(tmp_path, "r.csv", text))
    rejects = data.extras["rejects"]
    assert reasons(rejects) == ["bad_rating"] * 5
    assert rejects.index.tolist() == [0, 2, 3, 4, 5]
    assert sorted(data.frame["rating"].tolist()) == [0.0, 3.0]
    ranged = interactions(write(tmp_path, "r10.csv", "user_id,item_id,rating\na,x,10\na,y,11\n"), rating_range=[1.0, 10.0])
    assert reasons(ranged.extras["rejects"]) == ["bad_rating"] and ranged.frame["rating"].tolist() == [10.0]


def test_interactions_bad_and_out_of_range_timestamps_are_rejected(tmp_path):
    # case: interactions-bad-timestamp (text, inf, beyond int64 microseconds) and -mixed-timestamps
    text = ("user_id,item_id,timestamp\n"
            "a,i1,2020-01-01T00:00:00Z\na,i2,1577836810\na,i3,1577836820000\na,i4,2020-01-01T01:00:30+01:00\n"
            "a,i5,inf\na,i6,-inf\na,i7,1e30\na,i8,99999-01-01\na,i9,soon\n")
    data = interactions(write(tmp_path, "t.csv", text))
    assert reasons(data.extras["rejects"]) == ["bad_timestamp"] * 5
    by_item = dict(zip(data.item_ids[data.frame["item"]], data.frame["timestamp"]))
    assert by_item == {"i1": 1577836800.0, "i2": 1577836810.0, "i3": 1577836820.0, "i4": 1577836830.0}


def test_interactions_missing_ids_duplicates_and_all_rejected(tmp_path):
    # cases: interactions-missing-ids, interactions-duplicates, interactions-all-rejected
    text = "user_id,item_id,timestamp\n,x,1\na,,2\n  ,y,3\na,x,4\na,x,4\na,y,5\n"
    data = interactions(write(tmp_path, "ids.csv", text))
    assert reasons(data.extras["rejects"]) == ["missing_user", "missing_item", "missing_user", "duplicate"]
    assert len(data.frame) == 2
    with pytest.raises(DataError, match=r"bad\.csv: no valid interaction \(all 2 rows rejected: .*'missing_user': 1"):
        interactions(write(tmp_path, "bad.csv", "user_id,item_id,rating\n,x,3\na,y,9\n"))


@pytest.mark.parametrize(
    "case, content, message",
    [
        ("interactions-renamed-column", "userId,item_id\na,x\n", r"f\.csv: required column\(s\) \['user_id'\] missing; found \['userId', 'item_id'\]"),
        ("interactions-header-only", "user_id,item_id\n", r"f\.csv: no rows \(a header but no interactions\)"),
        ("interactions-empty-file", "", r"f\.csv: the file is empty"),
        ("interactions-non-utf8", "user_id,item_id\nJos\xe9,x\n".encode("latin-1"), r"f\.csv: is not valid UTF-8 text"),
        ("interactions-too-many-fields", "user_id,item_id\na,x\na,y,z\n", r"f\.csv: cannot be parsed.*Expected 2 fields in line 3, saw 3"),
        ("interactions-bad-split-value", "user_id,item_id,split\na,x,training\n", r"f\.csv: column 'split' has value 'training'"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("interactions-") else "",
)
def test_interactions_whole_input_errors_name_the_file(tmp_path, case, content, message):
    with pytest.raises(DataError, match=message):
        interactions(write(tmp_path, "f.csv", content))


def test_interactions_byte_order_mark_and_text_ids(tmp_path):
    # cases: interactions-bom-header (Excel's "CSV UTF-8"), interactions-leading-zero-ids
    data = interactions(write(tmp_path, "x.csv", "\ufeffuser_id,item_id\n007,x\n7,x\n7,y\n"))
    assert list(data.user_ids) == ["007", "7"] and len(data.frame) == 3


# -- deeprec-train / deeprec-score configuration -------------------------------------------------
@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_random_table(tmp_path_factory.mktemp("table") / "table.csv", seed=5, n=600, n_users=30, n_items=25)


TRAIN_CASES = [
    # (case, overrides, exit code, message in stderr)
    ("train-unknown-model", ["model=popular"], 1, "Could not find 'model/popular'"),
    ("train-unknown-data", ["data=foo"], 1, "Could not find 'data/foo'"),
    ("train-misspelt-override", ["modle.l2=3"], 1, "Could not override 'modle.l2'"),
    ("train-misspelt-model-key", ["model=ease", "model.l3=3"], 1, "Key 'l3' is not in struct"),
    ("train-appended-unknown-key", ["model=ease", "+model.l3=3"], 2, "model=ease: unknown key(s) ['l3']; valid keys:"),
    ("train-bad-value-type", ["model=ease", "model.l2=heavy"], 2, "model=ease: l2: Value 'heavy' of type 'str' could not be converted to Float"),
    ("train-bad-split-strategy", ["model=pop", "data.split.strategy=bogus"], 2, "split.strategy='bogus' is not valid"),
]


@pytest.mark.parametrize("case, overrides, code, message", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_config_mistakes_exit_without_traceback(table, tmp_path, monkeypatch, capsys, case, overrides, code, message):
    argv = ["data=interactions", f"data.path={table}", f"run_dir={tmp_path / 'run'}", *overrides]
    got, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()
    if code == 2:  # deeprec's own errors are one line
        assert len(err.strip().splitlines()) == 1 and err.startswith("deeprec-train: error: ")


def test_train_config_mistake_leaves_the_earlier_run_untouched(table, tmp_path, monkeypatch, capsys):
    # case: train-mistake-into-existing-run_dir: model and data keys are checked before run_dir is
    # cleared for the new run, and before any data is read
    run_dir = tmp_path / "run"
    base = ["data=interactions", f"data.path={table}", f"run_dir={run_dir}"]
    assert run_cli("deeprec.cli.train", [*base, "model=pop"], monkeypatch, capsys)[0] == 0
    before = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    import deeprec.cli.train as train

    def no_data(section):  # reading the data would mean the check came too late
        raise AssertionError("data was loaded before the model keys were checked")

    monkeypatch.setattr(train, "load_data", no_data)
    for mistake in (["model=ease", "+model.l3=3"], ["model=pop", "data.split.strategy=bogus"]):
        code, err = run_cli("deeprec.cli.train", [*base, *mistake], monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    after = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize("overrides, message", [
    (["models=[pop,eas]"], "models: unknown model 'eas'; valid models:"),
    (["models=[pop,ease]", "+model_overrides.eas.l2=5"], "model_overrides: eas not in models=['pop', 'ease']"),
    (["models=[pop,ease]", "+model_overrides.ease.l3=5"], "model=ease: unknown key(s) ['l3']"),
])
def test_compare_mistakes_fail_before_any_model_is_trained(table, tmp_path, monkeypatch, capsys, overrides, message):
    # cases: compare-unknown-model, compare-override-for-another-model, compare-bad-override-key
    argv = ["data=interactions", f"data.path={table}", f"out_dir={tmp_path / 'cmp'}", *overrides]
    code, err = run_cli("deeprec.cli.compare", argv, monkeypatch, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "cmp").exists()  # nothing trained, nothing written


def test_train_missing_data_path_is_one_line(tmp_path, monkeypatch, capsys):
    # case: train-missing-data-path
    code, err = run_cli("deeprec.cli.train", ["data=interactions", "model=pop", f"run_dir={tmp_path}"], monkeypatch, capsys)
    assert code == 2 and err.strip() == "deeprec-train: error: data=interactions: no value for path; give data.path=... on the command line"


@pytest.mark.parametrize("override", ["seed=abc", "eval.ks=[0]"])
def test_train_bad_seed_or_ks_is_one_line(table, tmp_path, monkeypatch, capsys, override):
    # cases: train-bad-seed, train-bad-eval-ks
    argv = ["data=interactions", f"data.path={table}", "model=pop", f"run_dir={tmp_path}", override]
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2 and override.split("=")[0] in err and "Traceback" not in err


def test_train_bad_trainer_value_is_an_error_for_every_model(table, tmp_path, monkeypatch, capsys):
    # case: train-bad-trainer-value
    argv = ["data=interactions", f"data.path={table}", "model=pop", f"run_dir={tmp_path}", "trainer.max_epochs=abc"]
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2 and "max_epochs" in err


def test_train_dataset_with_one_user(tmp_path):
    # case: train-one-user: a valid degenerate input; the one user is evaluated on its last item
    from hydra import compose, initialize_config_module

    from deeprec.cli.train import train

    path = write(tmp_path, "one.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,3\nu,d,4\n")
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=interactions", f"data.path={path}", "model=pop", f"run_dir={tmp_path / 'r'}"])
    metrics = train(cfg)
    # temporal split of 4 items (SPEC 1.9: floor(.7 * 4) = 2 train, of which the later one is carved as
    # valid): train a, valid b, test c, d. Ranking for test excludes a and b, so the only candidates, c and
    # d, are both test items: hit@5 = recall@5 = 1, precision@5 = 2 / 5.
    assert metrics["n_users_evaluated"] == 1 and metrics["hit@5"] == 1.0 and metrics["recall@5"] == 1.0
    assert metrics["precision@5"] == pytest.approx(0.4)


def test_train_resume_with_a_checkpoint_of_another_model_is_one_line(table, tmp_path, monkeypatch, capsys):
    # case: train-resume-other-model: run_dir holds an ncf with gmf_dim=4, the resumed config asks for 8
    from hydra import compose, initialize_config_module

    from deeprec.cli.train import train

    tiny = ["data=interactions", f"data.path={table}", "model=ncf", "model.mlp_dim=4", "model.mlp_layers=[8]",
            f"run_dir={tmp_path / 'run'}"]
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        train(compose("train", overrides=[*tiny, "model.gmf_dim=4", "trainer.max_epochs=1"]))
    code, err = run_cli("deeprec.cli.train", [*tiny, "model.gmf_dim=8", "trainer.max_epochs=2", "resume=true"], monkeypatch, capsys)
    assert code == 2 and "gmf_dim" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def pop_ckpt(tmp_path_factory, table) -> Path:
    from deeprec.baselines.pop import Popularity

    data = interactions(table)
    path = tmp_path_factory.mktemp("ckpt") / "pop.ckpt"
    save_checkpoint(Popularity(data.n_users, data.n_items).fit(data), data, path)
    return path


def test_score_config_mistakes_exit_2_in_one_line(pop_ckpt, tmp_path, monkeypatch, capsys):
    # cases: score-missing-ckpt, score-no-such-ckpt, score-not-a-checkpoint, score-empty-users-file,
    # score-unknown-items, score-output-is-a-file
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.ckpt")
    (tmp_path / "users.txt").write_text("\n  \n")
    (tmp_path / "items.txt").write_text("nope\nnever\n")
    (tmp_path / "taken").write_text("a file")
    cases = [
        (["k=3"], "deeprec-score needs ckpt=PATH"),
        ([f"ckpt={tmp_path / 'none.ckpt'}", f"output={tmp_path / 'o'}"], f"checkpoint {tmp_path / 'none.ckpt'} does not exist"),
        ([f"ckpt={tmp_path / 'plain.ckpt'}", f"output={tmp_path / 'o'}"], "is not a deeprec checkpoint (no 'deeprec' entry)"),
        ([f"ckpt={pop_ckpt}", f"output={tmp_path / 'o'}", f"users={tmp_path / 'users.txt'}"], "users.txt: no user_id in the file"),
        ([f"ckpt={pop_ckpt}", f"output={tmp_path / 'o'}", f"items={tmp_path / 'items.txt'}"], "none of its ids is an item of checkpoint"),
        ([f"ckpt={pop_ckpt}", f"output={tmp_path / 'taken'}"], "is a file; give a folder"),
    ]
    for argv, message in cases:
        code, err = run_cli("deeprec.cli.score", [*argv, "progress=false"], monkeypatch, capsys)
        assert code == 2, (argv, err)
        assert err.startswith("deeprec-score: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_checkpoint_of_another_model_is_refused(pop_ckpt, tmp_path):
    # case: score-checkpoint-of-another-model: a pop checkpoint relabelled as ease, and an expectation
    with pytest.raises(CheckpointError, match=r"holds model 'pop', not 'ncf'"):
        load_recommender(pop_ckpt, expect_model="ncf")
    ckpt = torch.load(pop_ckpt, weights_only=True)
    ckpt["deeprec"]["model"] = "ease"
    meta = ckpt["deeprec"]
    meta["init_args"] = {"n_users": len(meta["user_ids"]), "n_items": len(meta["item_ids"])}
    torch.save(ckpt, tmp_path / "relabelled.ckpt")
    with pytest.raises(CheckpointError, match=r"relabelled\.ckpt does not match model 'ease'"):
        load_recommender(tmp_path / "relabelled.ckpt")


def test_truncated_checkpoint_every_length_is_refused(pop_ckpt, tmp_path):
    # case: score-truncated-checkpoint (deeprec-score's exit code: tests/test_scoring.py::
    # test_truncated_checkpoint_is_a_clear_error); here every cut point of the file is a CheckpointError
    blob = pop_ckpt.read_bytes()
    for cut in np.linspace(0, len(blob) - 1, 12).astype(int):
        (tmp_path / "cut.ckpt").write_bytes(blob[:cut])
        with pytest.raises(CheckpointError, match=r"cut\.ckpt (is truncated|is not a deeprec)"):
            load_recommender(tmp_path / "cut.ckpt")


def test_ratings_cli_mistakes_exit_2_in_one_line(tmp_path, monkeypatch, capsys):
    # cases: ratings-misspelt-override, ratings-bad-value, ratings-missing-input (the subprocess versions:
    # tests/test_ratings_cli.py::test_cli_misspelt_key_fails_in_one_line)
    log = write(tmp_path, "log.csv", HEADER + "a,0,/c/x/l1\n")
    out = tmp_path / "out"
    cases = [
        ([f"input={log}", f"output={out}", "ratings.min_course=2"], "ratings: unknown key 'min_course'; valid keys:"),
        ([f"input={log}", f"output={out}", "ratings.session_gap_minutes=-5"], "ratings.session_gap_minutes=-5.0 must be > 0"),
        ([f"input={log}", f"output={out}", "ratings.max_courses=0"], "ratings.max_courses=0 must be >= 1 or null"),
        ([f"input={log}", f"output={out}", "out_of_core=maybe"], "out_of_core='maybe' is not valid"),
        ([f"output={out}"], "input= is required"),
        ([f"input={tmp_path / 'absent.csv'}", f"output={out}"], "absent.csv: no such file or folder"),
    ]
    for argv, message in cases:
        code, err = run_cli("deeprec.cli.ratings", argv, monkeypatch, capsys)
        assert code == 2, (argv, err)
        assert err.startswith("deeprec-ratings: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
