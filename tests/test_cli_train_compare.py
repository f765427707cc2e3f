"""deeprec-train and deeprec-compare end to end on a tiny table (console scripts and compose API)."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from deeprec.checkpoint import load_recommender
from deeprec.evaluation.stats import bonferroni, mean_ci


@pytest.fixture
def tiny_table(tmp_path, rng):
    n = 3000
    df = pd.DataFrame(
        {
            "user_id": rng.integers(0, 150, n),
            "item_id": (rng.zipf(1.6, n) % 120).astype(int),
            "rating": rng.integers(1, 6, n),
            "timestamp": rng.integers(1_600_000_000, 1_700_000_000, n),
        }
    ).drop_duplicates(["user_id", "item_id"])
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    return path


def _cfg(config_name, overrides):
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        return compose(config_name, overrides=overrides)


def test_train_console_script_writes_run_dir(tiny_table, tmp_path):
    run_dir = tmp_path / "run"
    cmd = ["deeprec-train", "data=interactions", f"data.path={tiny_table}", "model=pop", f"run_dir={run_dir}", "seed=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"precision@10", "ndcg@10", "coverage@10", "n_users_evaluated"} <= set(metrics)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert metrics["n_users_evaluated"] + metrics["n_users_skipped"] == 150
    model, meta = load_recommender(run_dir / "checkpoints" / "last.ckpt")
    ids = pd.read_parquet(run_dir / "id_maps" / "items.parquet")
    assert meta["item_ids"] == ids["id"].tolist()


def test_fresh_run_replaces_earlier_outputs_and_files_are_world_readable(tiny_table, tmp_path):
    import os
    import stat

    from deeprec.cli.train import run_training

    run_dir = tmp_path / "run"
    dirty = tmp_path / "dirty.csv"  # the same table with one row repeated: the first run writes rejects.parquet
    dirty.write_text(tiny_table.read_text() + tiny_table.read_text().splitlines()[1] + "\n")
    overrides = ["data=interactions", "model=pop", f"run_dir={run_dir}", "seed=1"]
    from deeprec.atomic import default_file_mode

    old_umask = os.umask(0o022)
    default_file_mode.cache_clear()  # the mode is read once per process
    try:
        run_training(_cfg("train", [*overrides, f"data.path={dirty}"]))
        assert (run_dir / "rejects.parquet").exists()
        (run_dir / "my-notes.txt").write_text("x")  # the user's: never deeprec's to remove
        run_training(_cfg("train", [*overrides, f"data.path={tiny_table}"]))
    finally:
        os.umask(old_umask)
        default_file_mode.cache_clear()
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert not (run_dir / "rejects.parquet").exists()  # the earlier run's, replaced by nothing
    assert (run_dir / "my-notes.txt").read_text() == "x"
    for name in ("metrics.json", "config.yaml", "checkpoints/last.ckpt", "id_maps/items.parquet"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize(
    "override, message",
    [("model=popular", "Could not find 'model/popular'"), ("modle.l2=3", "modle"), ("data.pth=x", "pth")],
)
def test_train_typos_fail_fast(tiny_table, tmp_path, override, message):
    cmd = ["deeprec-train", "data=interactions", f"data.path={tiny_table}", f"run_dir={tmp_path/'r'}", override]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_user_error_is_one_line_without_traceback(tmp_path):
    cmd = ["deeprec-train", "data=interactions", f"data.path={tmp_path/'missing.csv'}", f"run_dir={tmp_path/'r'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing.csv: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_writes_leaderboard_with_significance(tiny_table, tmp_path):
    from deeprec.cli.compare import compare

    out = tmp_path / "cmp"
    cfg = _cfg("compare", ["data=interactions", f"data.path={tiny_table}", "models=[pop,ease]", f"out_dir={out}"])
    table = compare(cfg)
    assert set(table.index) == {"pop", "ease"}
    assert (out / "leaderboard.md").read_text().count("|") > 10
    csv = pd.read_csv(out / "leaderboard.csv", index_col=0)
    best = csv["vs"].iloc[0]
    other = [m for m in csv.index if m != best][0]
    assert 0.0 <= csv.loc[other, "p_bonferroni"] <= 1.0
    assert (out / "leaderboard.png").stat().st_size > 1000
    assert (out / "pop" / "metrics.json").is_file() and (out / "ease" / "metrics.json").is_file()


def test_mean_ci_and_bonferroni_by_hand():
    mean, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    # sd = 1.29099, t(0.975, 3) = 3.18245 -> half width = 3.18245 * 1.29099 / 2 = 2.05426
    assert mean == 2.5 and lo == pytest.approx(2.5 - 2.05426, abs=1e-4) and hi == pytest.approx(4.55426, abs=1e-4)
    assert bonferroni([0.01, 0.2, 0.5]).tolist() == pytest.approx([0.03, 0.6, 1.0])
