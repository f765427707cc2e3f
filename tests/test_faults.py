"""Faults: kill -9 during training then resume=true, a scorer killed mid-write, an unwritable run_dir,
a full disk, a NaN loss, and float32 LinUCB after a million updates (README "Reliability").

The scorer's folder output killed with SIGKILL and resumed is tests/test_scoring.py::
test_kill_minus_9_then_resume_equals_uninterrupted_run; here the single-file output.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from conftest import write_random_table
from inprocess_cli import run_cli

NCF_TINY = ["model=ncf", "model.gmf_dim=4", "model.mlp_dim=4", "model.mlp_layers=[8]", "model.batch_size=64",
            "model.dropout=0.1", "model.lr=0.01", "trainer=cpu", "eval.patience=0", "seed=1"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_random_table(tmp_path_factory.mktemp("table") / "table.csv", seed=7, n=1500, n_users=60, n_items=40)


@pytest.fixture
def one_thread():
    """Training in this process and in the subprocesses on one thread: bitwise the same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_cfg(overrides: list[str]):
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


# -- kill -9 during training, then resume=true ------------------------------------------------------
def test_kill_minus_9_during_training_then_resume_equals_uninterrupted(table, tmp_path, one_thread):
    # case: fault-kill-training
    from deeprec.cli.train import train

    epochs = 10
    # last.ckpt every 2 epochs: the resumed run redoes the epochs after the latest write, exactly.
    overrides = ["data=interactions", f"data.path={table}", *NCF_TINY, f"trainer.max_epochs={epochs}",
                 "checkpoint.every_n_epochs=2"]
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    code = "import torch; torch.set_num_threads(1); from deeprec.cli.train import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *overrides, f"run_dir={killed_dir}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The random moment, seeded by the test: a random epoch, then a random instant within it. Waiting
    # for an epoch (not a wall-clock delay) keeps the kill inside training however fast the machine is.
    rng = np.random.default_rng(2024)
    target_epoch, delay = int(rng.integers(1, epochs - 3)), rng.uniform(0.0, 0.02)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= target_epoch:
            break
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {err.decode()[-2000:]}"
    assert not (killed_dir / "metrics.json").exists()
    stopped_at = torch.load(killed_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    assert stopped_at < epochs - 1  # the resumed run has epochs left to train

    from deeprec.models.ncf import NCF

    epochs_run = []
    real_start = NCF.on_train_epoch_start

    def recording(self):
        epochs_run.append(self.current_epoch)
        real_start(self)

    NCF.on_train_epoch_start = recording
    try:
        resumed = train(train_cfg([*overrides, f"run_dir={killed_dir}", "resume=true"]))
    finally:
        NCF.on_train_epoch_start = real_start
    assert epochs_run == list(range(stopped_at + 1, epochs))  # continued from the checkpoint, not from scratch
    straight = train(train_cfg([*overrides, f"run_dir={tmp_path / 'straight'}"]))  # never interrupted
    assert set(resumed) == set(straight)
    for key, value in straight.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key
    on_disk = json.loads((killed_dir / "metrics.json").read_text())
    assert on_disk == pytest.approx(json.loads((tmp_path / "straight" / "metrics.json").read_text()), abs=1e-6)


def test_sigterm_during_training_writes_the_last_finished_epoch_and_resume_equals_uninterrupted(table, tmp_path, one_thread):
    # case: fault-sigterm-training (a scheduler's stop): no periodic writes, yet last.ckpt appears
    from deeprec.cli.train import train

    epochs = 8
    overrides = ["data=interactions", f"data.path={table}", *NCF_TINY, f"trainer.max_epochs={epochs}",
                 "checkpoint.every_n_epochs=0", "checkpoint.every_seconds=0"]
    stopped = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # The child reports each finished epoch on stderr, so the test signals it mid-training.
    code = ("import sys, torch; torch.set_num_threads(1); from deeprec.models.ncf import NCF; "
            "end = NCF.on_train_epoch_end; "
            "NCF.on_train_epoch_end = lambda self: (print('EPOCH', self.current_epoch, file=sys.stderr, flush=True), end(self)); "
            "from deeprec.cli.train import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, *overrides, f"run_dir={stopped}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("EPOCH 3"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and not (stopped / "metrics.json").exists(), err[-2000:]
    assert "stopped by SIGTERM" in err and "resume=true" in err
    last = torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)
    assert 3 <= last["epoch"] < epochs - 1  # the last finished epoch (3, or 4 if the signal came late)
    assert (stopped / "checkpoints" / "best.ckpt").exists()
    resumed = train(train_cfg([*overrides, f"run_dir={stopped}", "resume=true"]))
    straight = train(train_cfg([*overrides, f"run_dir={tmp_path / 'straight'}"]))
    for key, value in straight.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key


# -- deeprec-score killed mid-write (one-file output) -----------------------------------------------
@pytest.fixture(scope="module")
def ease_ckpt(tmp_path_factory) -> Path:
    from deeprec.baselines.ease import EASE
    from deeprec.checkpoint import save_checkpoint
    from deeprec.data.interactions import from_frame

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"user_id": rng.integers(0, 400, 3000).astype(str), "item_id": rng.integers(0, 60, 3000).astype(str)})
    data = from_frame(frame.drop_duplicates(), "scores")
    data.frame["split"] = "train"
    path = tmp_path_factory.mktemp("score") / "ease.ckpt"
    save_checkpoint(EASE(data.n_users, data.n_items).fit(data), data, path)
    return path


def test_score_killed_mid_write_leaves_no_output_and_the_rerun_completes(ease_ckpt, tmp_path):
    # case: fault-kill-score (one-file output). The process kills itself (SIGKILL) after its 3rd part reached the
    # hidden temporary file: a deterministic "kill -9 mid-write".
    from deeprec.scoring.batch import ScoreConfig, score_users

    out = tmp_path / "top.parquet"
    code = (
        "import os, signal; from deeprec.scoring import output\n"
        "real = output.SingleFile.write_part\n"
        "def dying(self, number, table):\n"
        "    real(self, number, table)\n"
        "    if number == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "output.SingleFile.write_part = dying\n"
        "from deeprec.cli.score import main; main()\n"
    )
    args = [f"ckpt={ease_ckpt}", "k=5", "part_rows=250", "batch_size=50", "progress=false"]
    proc = subprocess.run([sys.executable, "-c", code, *args, f"output={out}"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["top_unknown_users.txt"]  # no top.parquet, partial or otherwise
    kwargs = dict(ckpt=str(ease_ckpt), k=5, part_rows=250, batch_size=50, progress=False)
    summary = score_users(ScoreConfig(**kwargs, output=str(out)))
    score_users(ScoreConfig(**kwargs, output=str(tmp_path / "clean.parquet")))
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "clean.parquet"))
    assert len(pd.read_parquet(out)) == summary["users"] * 5 and summary["parts"] > 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".top.parquet")]  # the killed run's temp is gone


# -- unwritable run_dir / output, full disk ---------------------------------------------------------
def test_run_dir_that_cannot_be_created_is_a_one_line_error(table, tmp_path, monkeypatch, capsys):
    # case: fault-unwritable-run-dir (a file where the run_dir's parent folder must go)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    argv = ["data=interactions", f"data.path={table}", "model=pop", f"run_dir={blocker / 'run'}"]
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2 and err.strip() == f"deeprec-train: error: run_dir={blocker / 'run'} is not writable (Not a directory)"


def test_unwritable_run_dir_and_outputs_are_one_line_errors(table, ease_ckpt, tmp_path, monkeypatch, capsys):
    # cases: fault-unwritable-run-dir (permission denied: tests run as root, so chmod cannot make a folder
    # unwritable; the error is injected where deeprec probes the folder), fault-unwritable-output
    # (deeprec-ratings output= and deeprec-score output= below a file)
    import tempfile

    real_mkstemp = tempfile.mkstemp

    def denied(*args, dir=None, prefix=None, **kwargs):
        if (prefix or "").startswith(".write-probe"):  # the write probe (a tagged temporary in the marker)
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    argv = ["data=interactions", f"data.path={table}", "model=pop", f"run_dir={tmp_path / 'locked'}"]
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2 and err.strip() == f"deeprec-train: error: run_dir={tmp_path / 'locked'} is not writable (Permission denied)"
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)

    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    log = tmp_path / "log.csv"
    log.write_text("user_id,timestamp,url\na,0,/c/x/l1\na,5,/c/x/l2\na,9,/c/y/l1\na,12,/c/z/l1\n")
    code, err = run_cli("deeprec.cli.ratings", [f"input={log}", f"output={blocker / 'out'}"], monkeypatch, capsys)
    assert code == 2 and err.startswith(f"deeprec-ratings: error: output={blocker / 'out'} is not writable"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, err = run_cli("deeprec.cli.score", [f"ckpt={ease_ckpt}", f"output={blocker / 'scores'}", "progress=false"],
                        monkeypatch, capsys)
    assert code == 2 and err.startswith(f"deeprec-score: error: output={blocker / 'scores'} is not writable"), err
    assert len(err.strip().splitlines()) == 1


def test_full_disk_while_writing_run_files_is_a_clear_error_and_leaves_no_partial_file(table, tmp_path, monkeypatch, capsys):
    # case: fault-full-disk (deeprec-train): the checkpoint write, then metrics.json, fail with ENOSPC
    import deeprec.checkpoint as checkpoint

    real_save = torch.save

    def half_then_full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    run_dir = tmp_path / "run"
    argv = ["data=interactions", f"data.path={table}", "model=pop", f"run_dir={run_dir}"]
    monkeypatch.setattr(checkpoint.torch, "save", half_then_full)
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert code == 2 and err.startswith("deeprec-train: error: cannot write ") and err.strip().endswith("No space left on device")
    assert list((run_dir / "checkpoints").iterdir()) == []  # neither last.ckpt nor its temporary file

    real_write_text = Path.write_text

    def full_metrics(self, text, *args, **kwargs):  # the disk fills up half-way through metrics.json
        if not self.name.startswith(".metrics.json."):
            return real_write_text(self, text, *args, **kwargs)
        real_write_text(self, text[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_metrics)
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2 and err.strip() == "deeprec-train: error: cannot write: No space left on device"
    assert not (run_dir / "metrics.json").exists()
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_while_scoring_then_rerun_completes(ease_ckpt, tmp_path, monkeypatch, capsys):
    # case: fault-full-disk (deeprec-score): the 2nd part fails with ENOSPC; finished parts stay, none is partial
    import pyarrow.parquet as pq

    from deeprec.scoring.batch import ScoreConfig, score_users

    real = pq.write_table
    calls = {"n": 0}

    def fills_up(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(where).write_bytes(b"PAR1 half")
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *args, **kwargs)

    out = tmp_path / "scores"
    argv = [f"ckpt={ease_ckpt}", f"output={out}", "k=5", "part_rows=500", "progress=false"]
    monkeypatch.setattr(pq, "write_table", fills_up)
    code, err = run_cli("deeprec.cli.score", argv, monkeypatch, capsys)
    monkeypatch.setattr(pq, "write_table", real)
    assert code == 2 and err.startswith("deeprec-score: error: cannot write ") and "No space left on device" in err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(("_", "."))) == ["part-00000.parquet"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    summary = score_users(ScoreConfig(ckpt=str(ease_ckpt), output=str(out), k=5, part_rows=500, progress=False))
    assert (out / "_SUCCESS").exists() and len(pd.read_parquet(out)) == summary["rows"] == summary["users"] * 5


# -- numerics ---------------------------------------------------------------------------------------
def test_nan_loss_stops_training_naming_the_step(table, tmp_path, monkeypatch, capsys, one_thread):
    # case: numerics-nan-loss: the 6th batch's loss is NaN -> exit 2, one line naming the epoch and the step
    # (step = optimizer steps taken, the NaN one included: global_step 5 while computing it, 6 after)
    from deeprec.models.ncf import NCF

    real_step = NCF.training_step

    def poisoned(self, batch, batch_idx):
        loss = real_step(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == 5 else loss

    monkeypatch.setattr(NCF, "training_step", poisoned)
    argv = ["data=interactions", f"data.path={table}", *NCF_TINY, "trainer.max_epochs=3", f"run_dir={tmp_path / 'r'}"]
    code, err = run_cli("deeprec.cli.train", argv, monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1] == ("deeprec-train: error: training loss became nan at epoch 0, step 6; "
                         "lower the learning rate or set trainer.gradient_clip_val")
    assert "Traceback" not in err and not (tmp_path / "r" / "metrics.json").exists()


def test_gradient_clipping_is_a_trainer_setting(table, tmp_path):
    # case: numerics-gradient-clipping: trainer.gradient_clip_val reaches the Lightning Trainer
    from importlib.resources import files

    from deeprec.cli.train import make_trainer
    from deeprec.data.adapters.interactions import InteractionsDataConfig, load

    for yaml in files("deeprec.conf").joinpath("trainer").iterdir():
        if yaml.name.endswith(".yaml"):
            assert "gradient_clip_val:" in yaml.read_text(), yaml.name
    cfg = train_cfg(["data=interactions", f"data.path={table}", "model=ncf", "trainer.gradient_clip_val=0.5"])
    data = load(InteractionsDataConfig(path=str(table)))
    trainer = make_trainer(cfg, data, tmp_path, logger=False)
    assert trainer.gradient_clip_val == 0.5


def test_linucb_float32_stays_within_tolerance_of_float64_after_a_million_updates():
    # case: numerics-linucb-drift: 1,000,000 rank-1 updates (10 batches of 100,000 over 100 users, ~10,000
    # per user) in float32 vs an independent float64 solve A = λI + Σ x xᵀ, θ = A⁻¹ b, UCB by hand.
    # (The Sherman-Morrison path with small batches: tests/test_linucb.py::test_float32_drift_after_a_million_updates, slow.)
    from deeprec.bandits import BatchedLinUCB

    gen = torch.Generator().manual_seed(0)
    n_users, dim, batch, n_batches = 100, 5, 100_000, 10
    model = BatchedLinUCB(n_users, dim, dtype=torch.float32)
    gram = torch.eye(dim, dtype=torch.float64).repeat(n_users, 1, 1)
    b = torch.zeros(n_users, dim, dtype=torch.float64)
    for _ in range(n_batches):
        u = torch.randint(n_users, (batch,), generator=gen)
        x = torch.rand(batch, dim, generator=gen, dtype=torch.float64)  # features in 0..1 like SPEC 2.3
        r = x.mean(1) + 0.1 * torch.randn(batch, generator=gen, dtype=torch.float64)
        model.update(u, x, r)
        gram.index_add_(0, u, x[:, :, None] * x[:, None, :])
        b.index_add_(0, u, r[:, None] * x)
    inv = torch.linalg.inv(gram)
    theta = (inv @ b[:, :, None])[:, :, 0]
    arms = torch.rand(30, dim, generator=gen, dtype=torch.float64)
    expected = arms @ theta.T + torch.sqrt(torch.einsum("jd,ude,je->uj", arms, inv, arms)).T
    got = model.ucb(arms.float()).double()
    assert got.shape == (n_users, 30)
    assert (got - expected.T).abs().max().item() < 1e-4
    rel = ((model.A_inv.double() - inv).abs().amax((1, 2)) / inv.abs().amax((1, 2))).max().item()
    assert rel < 1e-3
