"""Training throughput of deeprec's Lightning models vs the same module in a plain PyTorch loop.

For each model in --models (registry names, hyper-parameters from conf/model/<name>.yaml plus
--set overrides), trains on the same planted data (a) with a Lightning Trainer (no logger, no
checkpoints, no evaluation callback: the training loop alone) and (b) with a hand-written loop over
the same DataLoader, optimiser, training_step and per-epoch reseed. Each measurement runs in a
fresh process, so CPU peak memory (the process's peak RSS, VmHWM) belongs to that run alone; on
CUDA peak memory is torch.cuda.max_memory_allocated. Reports samples/s (rows of the model's
training loader: positives for ncf, users for autoencoder) and the ratio Lightning / plain.

    python scripts/bench_training.py [--models ncf,autoencoder] [--device cpu|cuda] [--epochs 3]
        [--users 6000] [--items 3000] [--per-user 40] [--threads N] [--set ncf.batch_size=4096 ...]
Writes bench_results/bench_training_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import plain_training_loop

DEFAULT_MODELS = "ncf,autoencoder"


def planted_data(n_users: int, n_items: int, per_user: int, seed: int = 0):
    """Users in 8 taste groups, each drawing `per_user` items mostly (80%) from its group's block."""
    from deeprec.data.interactions import from_frame

    rng = np.random.default_rng(seed)
    groups = 8
    block = n_items // groups
    group = rng.integers(0, groups, n_users)
    own = group[:, None] * block + rng.integers(0, block, (n_users, per_user))
    other = rng.integers(0, n_items, (n_users, per_user))
    items = np.where(rng.random((n_users, per_user)) < 0.8, own, other)
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), per_user),
        "item_id": items.ravel(),
        "rating": rng.integers(1, 6, n_users * per_user).astype(np.float32),
        "timestamp": 1e9 + 3600.0 * np.tile(np.arange(per_user), n_users),
    }).drop_duplicates(["user_id", "item_id"])
    frame["split"] = "train"
    return from_frame(frame, "bench-planted")


def model_hparams(name: str, overrides: list[str]) -> dict:
    """conf/model/<name>.yaml validated against the model's schema, with `name.key=value` overrides."""
    import dataclasses
    from importlib import resources

    from omegaconf import OmegaConf

    from deeprec.config import validate_section
    from deeprec.registry import model_class

    section = OmegaConf.load(resources.files("deeprec.conf") / "model" / f"{name}.yaml")
    mine = [o.split(".", 1)[1] for o in overrides if o.split(".", 1)[0] == name]
    section = OmegaConf.merge(section, OmegaConf.from_dotlist(mine))
    hp = dataclasses.asdict(validate_section(section, model_class(name).config_class, f"model={name}"))
    hp.pop("name", None)
    return hp


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(job: dict) -> dict:
    """One (model, mode) run in this process: {'seconds', 'samples', 'peak_mb', 'loss'}."""
    import warnings

    import pytorch_lightning as pl
    import torch

    from deeprec.registry import model_class

    warnings.filterwarnings("ignore")
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    device = job["device"]
    data = planted_data(job["users"], job["items"], job["per_user"])
    pl.seed_everything(0, verbose=False)
    model = model_class(job["model"])(data.n_users, data.n_items, seed=0, **job["hp"])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    epochs = job["epochs"]
    if job["mode"] == "lightning":
        trainer = pl.Trainer(max_epochs=epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
        start = time.perf_counter()
        model.fit(data, trainer=trainer)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        samples = len(model.training_rows[0]) * epochs
        loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    else:
        start = time.perf_counter()
        model.to(device)
        model.prepare(data)
        loader = model.train_dataloader_for(data)
        optimizer = model.configure_optimizers()
        model.log = lambda *args, **kwargs: None  # no trainer to log to
        model.train()
        loss = plain_training_loop(model, loader, optimizer, epochs, device)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        samples = len(loader.dataset) * epochs
        loss = float(loss)
    return {"seconds": seconds, "samples": samples, "peak_mb": peak_memory_mb(device), "final_loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated registry names")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--per-user", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--set", nargs="*", default=[], help="model.key=value overrides, e.g. ncf.batch_size=4096")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_training: --device cuda requested but torch sees no CUDA device")
    context = mp.get_context("spawn")
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        hp = model_hparams(name, args.set)
        result = {}
        for mode in ("plain", "lightning"):
            job = {"model": name, "mode": mode, "hp": hp, "device": args.device, "epochs": args.epochs,
                   "users": args.users, "items": args.items, "per_user": args.per_user, "threads": args.threads}
            with context.Pool(1) as pool:
                result[mode] = pool.apply(measure, (job,))
        plain, lit = result["plain"], result["lightning"]
        rows.append({
            "model": name,
            "samples_per_epoch": lit["samples"] // args.epochs,
            "plain_samples_per_s": plain["samples"] / plain["seconds"],
            "lightning_samples_per_s": lit["samples"] / lit["seconds"],
            "ratio_lightning_over_plain": (lit["samples"] / lit["seconds"]) / (plain["samples"] / plain["seconds"]),
            "plain_peak_mb": plain["peak_mb"],
            "lightning_peak_mb": lit["peak_mb"],
            "plain_final_loss": plain["final_loss"],
            "lightning_final_loss": lit["final_loss"],
            "hparams": hp,
        })
        print(f"{name}: plain {rows[-1]['plain_samples_per_s']:.0f}/s, lightning {rows[-1]['lightning_samples_per_s']:.0f}/s "
              f"(x{rows[-1]['ratio_lightning_over_plain']:.2f})", flush=True)

    machine = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "data": {"users": args.users, "items": args.items, "per_user": args.per_user, "epochs": args.epochs},
    }
    header = ("| model | samples/epoch | plain samples/s | Lightning samples/s | Lightning / plain | "
              "peak MB plain | peak MB Lightning |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['samples_per_epoch']} | {r['plain_samples_per_s']:.0f} | "
                     f"{r['lightning_samples_per_s']:.0f} | {r['ratio_lightning_over_plain']:.2f} | "
                     f"{r['plain_peak_mb']:.0f} | {r['lightning_peak_mb']:.0f} |")
    memory_note = ("CUDA max allocated" if args.device == "cuda" else "process peak RSS (VmHWM), one process per run")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / f"bench_training_{args.device}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    (out / f"bench_training_{args.device}.md").write_text(
        f"Training throughput, {args.device} ({machine['gpu'] or machine['cpu']}, {machine['cpu_count']} cores, "
        f"{machine['torch_threads']} torch threads); planted data {args.users} users x {args.items} items x "
        f"{args.per_user}, {args.epochs} epochs; peak memory = {memory_note}.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
