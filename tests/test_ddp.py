"""trainer=ddp: the real deeprec-train entry point with 2 CPU processes on gloo trains to the same
weights and test metrics as 1 process.

The model is full-batch (one batch of every user-item pair, mean loss), so DDP's gradient average
over the two halves equals the 1-process gradient and only float summation order differs:
weights must agree within 1e-4 and every test metric within 0.02 (one user's tie flip on 40 users
moves a mean metric by at most 1/40 of a hit; in practice they are equal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.checkpoint import read_checkpoint

TINY_MODEL = textwrap.dedent(
    '''
    """A tiny full-batch matrix factorisation LightningRecommender for the DDP test."""
    from dataclasses import dataclass

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from deeprec.models.base import LightningRecommender
    from deeprec.recommender import ModelConfig


    @dataclass
    class TinyMFConfig(ModelConfig):
        name: str = "tinymf"
        dim: int = 8
        lr: float = 0.05


    class TinyMF(LightningRecommender):
        name = "tinymf"
        config_class = TinyMFConfig

        def __init__(self, n_users=0, n_items=0, seed=0, dim=8, lr=0.05, **config):
            super().__init__(n_users, n_items, seed=seed, dim=dim, lr=lr)
            generator = torch.Generator().manual_seed(seed)
            self.users = torch.nn.Parameter(0.1 * torch.randn(n_users, dim, generator=generator))
            self.items = torch.nn.Parameter(0.1 * torch.randn(n_items, dim, generator=generator))
            self.lr = lr

        def train_dataloader_for(self, data):
            labels = torch.from_numpy(data.matrix("train", binary=True).toarray()).reshape(-1)
            users = torch.arange(self.n_users).repeat_interleave(self.n_items)
            items = torch.arange(self.n_items).repeat(self.n_users)
            return DataLoader(TensorDataset(users, items, labels), batch_size=len(labels), shuffle=False)

        def training_step(self, batch, batch_idx):
            users, items, labels = batch
            logits = (self.users[users] * self.items[items]).sum(1)
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

        def score(self, users):
            return self.users[users.to(self.users.device)] @ self.items.T
    '''
)

ENTRY = textwrap.dedent(
    """
    from deeprec.registry import MODELS

    MODELS["tinymf"] = "tiny_mf:TinyMF"
    from deeprec.cli.train import main

    main()
    """
)


def write_interactions(path: Path, n_users: int = 40, n_items: int = 30, per_user: int = 6, seed: int = 5) -> None:
    """user_id,item_id,split with per-user clusters (so the model has something to learn); train/test only."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        base = (u % 5) * 6
        items = rng.choice(np.r_[base : base + 6, rng.choice(n_items, 4)], size=per_user, replace=False)
        for rank, item in enumerate(items):
            rows.append((f"u{u:03d}", f"i{item:03d}", "test" if rank == 0 else "train"))
    pd.DataFrame(rows, columns=["user_id", "item_id", "split"]).drop_duplicates(["user_id", "item_id"]).to_csv(path, index=False)


def train(tmp_path: Path, run_dir: str, devices: int) -> Path:
    extra = ["trainer=ddp", "trainer.strategy=ddp"] if devices > 1 else ["trainer=cpu"]
    command = [
        sys.executable, str(tmp_path / "entry.py"), "model=tinymf", "data=interactions",
        f"data.path={tmp_path / 'interactions.csv'}", f"run_dir={tmp_path / run_dir}", "seed=3",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]", *extra, "trainer.accelerator=cpu",
        f"trainer.devices={devices}", "trainer.max_epochs=40", "trainer.log_every_n_steps=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    if devices > 1:  # Lightning really ran two processes on gloo
        log = result.stdout + result.stderr
        assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    return tmp_path / run_dir


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    (tmp_path / "tiny_mf.py").write_text(TINY_MODEL)
    (tmp_path / "entry.py").write_text(ENTRY)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tinymf.yaml").write_text("name: tinymf\ndim: 8\nlr: 0.05\n")
    write_interactions(tmp_path / "interactions.csv")

    single = train(tmp_path, "one", devices=1)
    double = train(tmp_path, "two", devices=2)

    one = read_checkpoint(single / "checkpoints" / "last.ckpt")
    two = read_checkpoint(double / "checkpoints" / "last.ckpt")
    assert one["global_step"] == two["global_step"] == 40  # one full batch per epoch in both
    start = torch.Generator().manual_seed(3)
    initial_users = 0.1 * torch.randn(40, 8, generator=start)
    assert (one["state_dict"]["users"] - initial_users).abs().max() > 0.05  # it did train
    for key in ("users", "items"):
        torch.testing.assert_close(one["state_dict"][key], two["state_dict"][key], atol=1e-4, rtol=1e-4)

    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((double / "metrics.json").read_text())
    assert set(m1) == set(m2) and m1["hit@10"] > 0.3  # better than chance: the clusters are learnt
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], abs=0.02), key
