"""Training throughput of the sequence/attention models: Lightning fit vs a plain PyTorch loop.

For `lstm` and `attention`, trains the same module on the same planted data (a) with a Lightning
Trainer (no logger, no checkpoints, no evaluation callback) and (b) with a hand-written loop over
the same DataLoader, optimiser and loss. Reports training samples/s (next-item targets for lstm,
positive events for attention), the ratio Lightning / plain measured in the same run, and peak
memory (CUDA: max allocated; CPU: the process's peak RSS so far, which only grows).

    python scripts/bench_training_seq.py [--device cpu|cuda] [--users 2000] [--epochs 2]
Writes bench_results/bench_training_seq_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from benchutil import plain_training_loop
from deeprec.data.interactions import from_frame
from deeprec.evaluation.report import markdown_table as report_table
from deeprec.models.attention import AttentionRanker
from deeprec.models.lstm import LSTMRecommender

MODELS = {"lstm": LSTMRecommender, "attention": AttentionRanker}


def planted_data(n_users: int, n_items: int, length: int, seed: int = 0):
    """Random walks on a fixed item cycle with occasional jumps; every event is train."""
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    steps = np.where(rng.random((n_users, length)) < 0.8, 1, rng.integers(2, n_items, (n_users, length)))
    position = (rng.integers(0, n_items, (n_users, 1)) + np.cumsum(steps, axis=1)) % n_items
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), length),
        "item_id": cycle[position].ravel(),
        "timestamp": 1e9 + 3600.0 * np.tile(np.arange(length), n_users),
        "split": "train",
    })
    return from_frame(frame, "bench")


def n_samples(model) -> int:
    """Training samples per epoch: next-item targets (lstm) or positive events (attention)."""
    rows = model.training_rows
    return int(rows[3].sum()) if len(rows) == 4 else len(rows[0])


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def lightning_run(cls, data, hp, epochs, device):
    """(seconds, samples, peak MB) of Trainer.fit for `epochs` epochs."""
    pl.seed_everything(0, verbose=False)
    model = cls(data.n_users, data.n_items, seed=0, **hp)
    model.prepare(data)
    loader = model.train_dataloader_for(data)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    reset_peak(device)
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    sync(device)
    return time.perf_counter() - start, n_samples(model) * epochs, peak_memory_mb(device)


def plain_run(cls, data, hp, epochs, device):
    """The same module, loss and optimiser in a hand-written loop: (seconds, samples, peak MB)."""
    pl.seed_everything(0, verbose=False)
    model = cls(data.n_users, data.n_items, seed=0, **hp)
    model.prepare(data)
    loader = model.train_dataloader_for(data)
    model.to(device).train()
    optimizer = model.configure_optimizers()
    reset_peak(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log() without a Trainer warns and does nothing
        plain_training_loop(model, loader, optimizer, epochs, device)
    sync(device)
    return time.perf_counter() - start, n_samples(model) * epochs, peak_memory_mb(device)


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table, float columns to 3 significant digits."""
    cells = table.apply(lambda column: column.map("{:.3g}".format) if column.dtype.kind == "f" else column)
    return report_table(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", default="lstm,attention")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()

    data = planted_data(args.users, args.items, args.length)
    hp = {"lstm": {}, "attention": {}}
    rows = []
    for name in args.models.split(","):
        cls = MODELS[name]
        plain_run(cls, data, hp[name], 1, args.device)  # warm-up (allocator, kernels)
        p_sec, p_samples, p_mem = plain_run(cls, data, hp[name], args.epochs, args.device)
        l_sec, l_samples, l_mem = lightning_run(cls, data, hp[name], args.epochs, args.device)
        rows.append({
            "model": name, "device": args.device, "epochs": args.epochs, "samples_per_epoch": p_samples // args.epochs,
            "plain_samples_per_s": p_samples / p_sec, "lightning_samples_per_s": l_samples / l_sec,
            "lightning_over_plain": (l_samples / l_sec) / (p_samples / p_sec),
            "plain_peak_mb": p_mem, "lightning_peak_mb": l_mem,
        })
    table = pd.DataFrame(rows)
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    if args.device == "cuda":
        machine += f", {torch.cuda.get_device_name()}"
    markdown = (f"Training throughput ({args.users} users x {args.length} events, {args.items} items, "
                f"{args.epochs} epochs; {machine})\n\n" + markdown_table(table))
    print(markdown)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / f"bench_training_seq_{args.device}.json").write_text(json.dumps({"machine": machine, "args": vars(args), "rows": rows}, indent=2))
    (out / f"bench_training_seq_{args.device}.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
