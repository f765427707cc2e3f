"""The user mistakes that still ended in a traceback, deeprec-compare's order of work, and what a new
user sees (issue 14 classes 8-10): one line for each mistake, every model checked before any is
trained, per-epoch progress without Lightning's chatter, fallback rows marked, one checkpoint file
for closed-form models.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_random_table
from inprocess_cli import one_line_error, run_cli, run_cli_output

NCF_TINY = ["model=ncf", "model.gmf_dim=4", "model.mlp_dim=4", "model.mlp_layers=[8]", "model.batch_size=64",
            "eval.patience=0"]




@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_random_table(tmp_path_factory.mktemp("table") / "table.csv", seed=11, n=500, n_users=25, n_items=12)


@pytest.fixture(scope="module")
def pop_ckpt(tmp_path_factory):
    """A popularity checkpoint of users u0..u5 and items i0..i8."""
    from deeprec.baselines.pop import Popularity
    from deeprec.checkpoint import save_checkpoint
    from deeprec.data.interactions import from_frame

    rows = [(f"u{u}", f"i{(u + j) % 9}") for u in range(5) for j in range(5)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(split="train")
    frame = pd.concat([frame, pd.DataFrame({"user_id": ["u5"], "item_id": ["i0"], "split": ["test"]})])
    data = from_frame(frame, "t")
    path = tmp_path_factory.mktemp("ckpt") / "pop.ckpt"
    save_checkpoint(Popularity(data.n_users, data.n_items).fit(data), data, path)
    return path


# -- users= / items= files ---------------------------------------------------------------------------
def write_parquet_ids(path: Path, column: str, values, type_=pa.string()) -> Path:
    pq.write_table(pa.table({column: pa.array(values, type_)}), path)
    return path


ID_FILES = [
    ("one-column-csv-with-header", "users.csv", "user_id\nu1\nu3\n"),
    ("byte-order-mark", "users.csv", "\ufeffuser_id\nu1\nu3\n"),
    ("quoted", "users.csv", '"user_id"\n"u1"\n"u3"\n'),
    ("plain-list", "users.txt", "u1\nu3\n"),
    ("plain-list-csv", "users.csv", "u1\nu3\n"),
    ("plain-list-crlf-blank-lines", "users.txt", "u1\r\n\r\nu3\r\n"),
    ("two-columns", "users.csv", "segment,user_id\nA,u1\nB,u3\n"),
    ("tsv", "users.tsv", "user_id\tsegment\nu1\tA\nu3\tB\n"),
    ("parquet", "users.parquet", None),
    ("parquet-one-column-of-another-name", "users.parquet", None),
]


@pytest.mark.parametrize("case, name, content", ID_FILES, ids=[c[0] for c in ID_FILES])
def test_id_lists_are_read_with_or_without_a_header(case, name, content, pop_ckpt, tmp_path):
    # cases: users-file-* (the same reader serves items=)
    from deeprec.scoring.batch import read_id_list

    path = tmp_path / name
    if case == "parquet":
        write_parquet_ids(path, "user_id", ["u1", "u3"])
    elif case.startswith("parquet-"):
        write_parquet_ids(path, "learner", ["u1", "u3"])
    else:
        path.write_bytes(content.encode("utf-8"))
    assert list(read_id_list(str(path), "user_id")) == ["u1", "u3"]


def test_id_lists_keep_null_like_ids_and_integer_ids(tmp_path):
    # cases: users-file-null-like-ids, users-file-parquet-integers-with-null
    from deeprec.scoring.batch import read_id_list

    (tmp_path / "u.txt").write_text("NA\nnull\nNone\n")
    assert list(read_id_list(str(tmp_path / "u.txt"), "user_id")) == ["NA", "null", "None"]
    write_parquet_ids(tmp_path / "u.parquet", "user_id", [7, None, 2**53 + 1], pa.int64())
    assert list(read_id_list(str(tmp_path / "u.parquet"), "user_id")) == ["7", str(2**53 + 1)]


@pytest.mark.parametrize("case, content, message", [
    ("no-such-column", "segment,learner\nA,u1\n", "no column user_id"),
    ("not-utf8", "user_id\nJos\xe9\n".encode("latin-1"), "not valid UTF-8"),
    ("only-a-header", "user_id\n", "no user_id"),
])
def test_bad_id_lists_are_one_line(case, content, message, pop_ckpt, tmp_path, monkeypatch, capsys):
    # cases: users-file-no-column, users-file-not-utf8, users-file-empty
    path = tmp_path / "users.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    code, err = run_cli("deeprec.cli.score", [f"ckpt={pop_ckpt}", f"output={tmp_path / 'out'}", f"users={path}",
                                              "progress=false"], monkeypatch, capsys)
    one_line_error(code, err, message)


def test_score_users_file_with_header_scores_those_users(pop_ckpt, tmp_path, monkeypatch, capsys):
    # case: users-file-one-column-csv-with-header, end to end
    (tmp_path / "users.csv").write_text("\ufeff\"user_id\"\nu1\nu3\n")
    code, err = run_cli("deeprec.cli.score", [f"ckpt={pop_ckpt}", f"output={tmp_path / 'out'}",
                                              f"users={tmp_path / 'users.csv'}", "progress=false"], monkeypatch, capsys)
    assert code == 0, err
    assert sorted(pd.read_parquet(tmp_path / "out")["user_id"].unique()) == ["u1", "u3"]


# -- configuration mistakes --------------------------------------------------------------------------
def test_eval_monitor_at_a_k_not_in_ks_is_one_line(table, tmp_path, monkeypatch, capsys):
    # case: eval-monitor-k-not-in-ks
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={table}", *NCF_TINY, "eval.monitor=ndcg@7",
                                              f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    one_line_error(code, err, "eval.monitor=ndcg@7", "eval.ks")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-2"])
def test_max_epochs_zero_is_one_line(value, table, tmp_path, monkeypatch, capsys):
    # case: trainer-max-epochs-zero
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={table}", *NCF_TINY,
                                              f"trainer.max_epochs={value}", f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    one_line_error(code, err, f"trainer.max_epochs={value}")


def test_a_scoring_manifest_that_is_not_json_is_one_line(pop_ckpt, tmp_path, monkeypatch, capsys):
    # case: score-manifest-not-json
    args = [f"ckpt={pop_ckpt}", f"output={tmp_path / 'out'}", "progress=false", "part_rows=8"]
    assert run_cli("deeprec.cli.score", args, monkeypatch, capsys)[0] == 0
    (tmp_path / "out" / "_manifest.json").write_text("{not json")
    (tmp_path / "out" / "_SUCCESS").unlink()
    code, err = run_cli("deeprec.cli.score", args, monkeypatch, capsys)
    one_line_error(code, err, "_manifest.json", "not valid JSON", "resume=false")
    assert run_cli("deeprec.cli.score", [*args, "resume=false"], monkeypatch, capsys)[0] == 0


@pytest.mark.parametrize("bad", ["nan", "inf", "1e300"])
def test_a_linucb_feature_table_with_non_finite_or_huge_values_is_one_line(bad, table, tmp_path, monkeypatch, capsys):
    # case: linucb-feature-table-bad-values
    items = sorted(pd.read_csv(table)["item_id"].astype(str).unique())
    feats = pd.DataFrame({"item_id": items, "f1": np.linspace(0, 1, len(items)), "f2": 1.0})
    feats["f2"] = feats["f2"].astype(object)
    feats.loc[3, "f2"] = bad
    feats.to_csv(tmp_path / "feat.csv", index=False)
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={table}", "model=linucb", "model.features=table",
                                              f"model.feature_path={tmp_path / 'feat.csv'}", "model.reward=rating",
                                              f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    one_line_error(code, err, "feat.csv", "f2", repr(items[3]))


@pytest.mark.parametrize("model", ["mf", "itemknn", "userknn"])
def test_all_zero_ratings_with_a_rating_weighted_model_are_one_line(model, tmp_path, monkeypatch, capsys):
    # case: all-zero-ratings: mf crashed; item-kNN / user-kNN scored 0 for every item without a word
    frame = pd.read_csv(write_random_table(tmp_path / "t.csv", seed=2, n=300, n_users=20, n_items=10)).assign(rating=0.0)
    frame.to_csv(tmp_path / "zero.csv", index=False)
    args = ["data=interactions", f"data.path={tmp_path / 'zero.csv'}", f"model={model}", f"run_dir={tmp_path / 'run'}"]
    code, err = run_cli("deeprec.cli.train", args, monkeypatch, capsys)
    one_line_error(code, err, "every train rating is 0", "model.binary=true")
    assert run_cli("deeprec.cli.train", [*args, "model.binary=true"], monkeypatch, capsys)[0] == 0


def test_sigterm_stops_training_with_a_non_zero_exit(table, tmp_path):
    # case: sigterm-during-training: exit 143 and a line saying how to continue
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "deeprec.cli.train", "data=interactions", f"data.path={table}", *NCF_TINY,
           "trainer.max_epochs=100000", "checkpoint.every_n_epochs=1", f"run_dir={run_dir}"]  # last.ckpt after epoch 1
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run_dir / "checkpoints" / "last.ckpt").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "resume=true" in err and "Traceback" not in err
    assert not (run_dir / "metrics.json").exists()


# -- deeprec-compare ------------------------------------------------------------------------------------
def test_compare_checks_every_model_against_the_data_before_training_any(table, tmp_path, monkeypatch, capsys):
    # case: compare-model-unfit-for-the-data: linucb needs arm features this table lacks
    out = tmp_path / "cmp"
    code, err = run_cli("deeprec.cli.compare", ["data=interactions", f"data.path={table}", "models=[pop,ease,linucb]",
                                                f"out_dir={out}"], monkeypatch, capsys)
    one_line_error(code, err, "linucb", "features")
    assert not list(out.rglob("metrics.json"))


def test_compare_writes_the_leaderboard_of_the_models_that_finished(table, tmp_path, monkeypatch, capsys):
    # case: compare-later-model-fails: pop and itemknn finished, ease failed in its fit
    from deeprec.baselines.ease import EASE
    from deeprec.errors import DataError

    def broken_fit(self, data, trainer=None):
        raise DataError("ease broke while fitting")

    monkeypatch.setattr(EASE, "fit", broken_fit)
    out = tmp_path / "cmp"
    code, err = run_cli("deeprec.cli.compare", ["data=interactions", f"data.path={table}", "models=[pop,itemknn,ease]",
                                                f"out_dir={out}"], monkeypatch, capsys)
    one_line_error(code, err, "ease broke while fitting")
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board.iloc[:, 0]) == ["itemknn", "pop"]
    assert "ease" in (out / "leaderboard.md").read_text() and "failed" in (out / "leaderboard.md").read_text()


# -- what a new user sees ---------------------------------------------------------------------------------
def test_training_shows_one_line_per_epoch_and_none_of_lightnings_chatter(table, tmp_path):
    # case: console-progress-and-quiet: a per-epoch line; no GPU/TPU lines, tips or warnings that are not the user's
    run = subprocess.run([sys.executable, "-m", "deeprec.cli.train", "data=interactions", f"data.path={table}", *NCF_TINY,
                          "trainer.max_epochs=2", f"run_dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    text = run.stdout + run.stderr
    for chatter in ("GPU available", "TPU available", "Tip:", "litlogger", "log_every_n_steps", "Checkpoint directory",
                    "LeafSpec", "num_workers", "UserWarning"):
        assert chatter not in text, chatter
    assert "epoch 1/2" in text and "epoch 2/2" in text, text


def test_fallback_rows_are_marked_and_k_beyond_the_catalogue_is_reported(pop_ckpt, tmp_path, monkeypatch, capsys):
    # cases: score-fallback-column, score-k-beyond-catalogue
    (tmp_path / "users.txt").write_text("u1\nghost\n")
    code, out, err = run_cli_output("deeprec.cli.score", [f"ckpt={pop_ckpt}", f"output={tmp_path / 'out'}", "k=20",
                                                          f"users={tmp_path / 'users.txt'}", "progress=false"],
                                    monkeypatch, capsys)
    assert code == 0, err
    frame = pd.read_parquet(tmp_path / "out")
    assert frame.groupby("user_id")["fallback"].first().to_dict() == {"u1": False, "ghost": True}
    assert "k=20 is more than the 9 items" in out


def test_a_closed_form_model_writes_its_checkpoint_once(table, tmp_path, monkeypatch, capsys):
    # case: closed-form-one-checkpoint: best.ckpt and last.ckpt are one file
    run_dir = tmp_path / "run"
    assert run_cli("deeprec.cli.train", ["data=interactions", f"data.path={table}", "model=ease", f"run_dir={run_dir}"],
                   monkeypatch, capsys)[0] == 0
    assert os.path.samefile(run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt")


def test_linucb_says_what_its_features_will_cost(table, tmp_path, monkeypatch, capsys):
    # case: linucb-cost: d x d per user, in memory and in the checkpoint
    items = sorted(pd.read_csv(table)["item_id"].astype(str).unique())
    feats = pd.DataFrame(np.random.default_rng(0).random((len(items), 64)), columns=[f"f{i}" for i in range(64)])
    feats.insert(0, "item_id", items)
    feats.to_csv(tmp_path / "feat.csv", index=False)
    code, out, err = run_cli_output("deeprec.cli.train", ["data=interactions", f"data.path={table}", "model=linucb",
                                                          "model.features=table", f"model.feature_path={tmp_path / 'feat.csv'}",
                                                          "model.reward=rating", f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    line = [row for row in out.splitlines() if "linucb:" in row and "64 features" in row]
    assert len(line) == 1 and "25 users" in line[0] and "MB" in line[0], out
