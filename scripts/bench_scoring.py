"""Benchmark of batch scoring (the path deeprec-score runs): users/s and user-item pairs/s of the
chunked full ranking (score a chunk, mask seen items, torch.topk) for ncf, autoencoder and linucb
with random parameters and a random `seen` matrix, against two naive implementations measured in
the same run: per-user (one score call per user; measured on --naive-users users and extrapolated)
and unchunked (the whole [U, I] score matrix at once with a dense mask; measured on a subset of
--unchunked-users users, since the full matrix does not fit, and extrapolated).

    python scripts/bench_scoring.py                      # CPU: 100k users x 20k items
    python scripts/bench_scoring.py --device cuda        # GPU: 1M users x 100k items, + bandwidth/FLOP/s

Writes bench_results/scoring_<device>.json and .md. Models whose module does not exist yet are
skipped with a message.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.data.interactions import InteractionData
from deeprec.ranking import full_ranking_topk
from deeprec.registry import MODELS

# Dense FP32 (non-tensor-core) peak FLOP/s and memory bandwidth, by device-name substring.
GPU_PEAKS = {
    "H100 PCIe": (51e12, 2.0e12),
    "H100": (67e12, 3.35e12),  # SXM
    "H200": (67e12, 4.8e12),
    "A100": (19.5e12, 2.0e12),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, default=None, help="default 100000 on CPU, 1000000 on GPU")
    parser.add_argument("--items", type=int, default=None, help="default 20000 on CPU, 100000 on GPU")
    parser.add_argument("--seen-per-user", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None, help="users per chunk; default 1024 CPU, 8192 GPU")
    parser.add_argument("--naive-users", type=int, default=200)
    parser.add_argument("--unchunked-users", type=int, default=None, help="default 8192 CPU, 16384 GPU")
    parser.add_argument("--models", default="ncf,autoencoder,linucb")
    parser.add_argument("--dim", type=int, default=5, help="LinUCB feature dimension")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results")
    return parser.parse_args()


def random_seen(n_users: int, n_items: int, per_user: int, rng: np.random.Generator) -> sp.csr_matrix:
    """[U, I] binary CSR with `per_user` random (possibly repeated, then merged) items per user."""
    items = rng.integers(0, n_items, size=(n_users, per_user))
    rows = np.repeat(np.arange(n_users), per_user)
    seen = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, items.ravel())), shape=(n_users, n_items))
    seen.sum_duplicates()
    seen.data[:] = 1.0
    return seen


def fake_data(seen: sp.csr_matrix) -> InteractionData:
    """InteractionData whose train split is `seen` (what history-based models observe)."""
    coo = seen.tocoo()
    frame = pd.DataFrame({"user": coo.row.astype(np.int64), "item": coo.col.astype(np.int64),
                          "rating": np.ones(coo.nnz, np.float32), "timestamp": np.arange(coo.nnz, dtype=np.float64),
                          "split": "train"})
    n_users, n_items = seen.shape
    return InteractionData(frame=frame, user_ids=np.arange(n_users).astype(str), item_ids=np.arange(n_items).astype(str),
                           name="bench")


def build_linucb(n_users: int, n_items: int, seen: sp.csr_matrix, dim: int, rng: np.random.Generator):
    from deeprec.bandits.recommender import LinUCBRecommender

    model = LinUCBRecommender(n_users, n_items, features="item_features", reward="rating")
    model.arm_features = torch.from_numpy(rng.random((n_items, dim)))
    model.bandit = model._new_bandit(dim)
    coo = seen.tocoo()
    model.bandit.fit(torch.from_numpy(coo.row.astype(np.int64)), model.arm_features[torch.from_numpy(coo.col.astype(np.int64))],
                     torch.from_numpy(rng.random(coo.nnz)))
    return model


def build_model(name: str, n_users: int, n_items: int, seen: sp.csr_matrix, args, rng):
    """A model with random parameters, or None (with a message) when its module is not there yet."""
    module = MODELS[name].split(":")[0]
    if importlib.util.find_spec(module) is None:
        print(f"skip {name}: {module} does not exist yet")
        return None
    if name == "linucb":
        return build_linucb(n_users, n_items, seen, args.dim, rng)
    from deeprec.registry import model_class

    torch.manual_seed(args.seed)
    model = model_class(name)(n_users=n_users, n_items=n_items)
    model.observe(fake_data(seen), ("train",))
    return model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated since the last reset; CPU: the process's peak RSS so far (monotone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def per_user_topk(model, seen: sp.csr_matrix, users: np.ndarray, k: int, device) -> np.ndarray:
    """The naive loop: one score call per user, its seen items set to -inf, topk."""
    out = np.empty((len(users), k), dtype=np.int64)
    for position, user in enumerate(users):
        scores = model.score(torch.tensor([user], device=device)).float()
        scores[0, torch.from_numpy(seen[user].indices.astype(np.int64)).to(device)] = -torch.inf
        out[position] = torch.topk(scores, k, dim=1).indices[0].cpu().numpy()
    return out


@torch.no_grad()
def unchunked_topk(model, seen: sp.csr_matrix, users: np.ndarray, k: int, device) -> torch.Tensor:
    """The naive whole-matrix way: all users' scores at once, a dense boolean mask, topk."""
    scores = model.score(torch.from_numpy(users).to(device)).float()
    mask = torch.from_numpy(seen[users].astype(bool).toarray()).to(device)
    scores.masked_fill_(mask, -torch.inf)
    return torch.topk(scores, k, dim=1).indices


def timed(fn, device) -> tuple[float, object]:
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def bench_model(name: str, model, seen, args, device) -> list[dict]:
    n_users, n_items = seen.shape
    model.to(device).eval()
    users = np.arange(n_users, dtype=np.int64)
    full_ranking_topk(model.score, users[: 2 * args.batch_size], args.k, exclude=seen, batch_size=args.batch_size, device=device)

    reset_peak(device)
    seconds, (_, chunked_items) = timed(
        lambda: full_ranking_topk(model.score, users, args.k, exclude=seen, batch_size=args.batch_size, device=device), device
    )
    rows = [{"model": name, "method": f"chunked (batch {args.batch_size})", "users_measured": n_users, "seconds": seconds,
             "peak_mb": peak_memory_mb(device)}]

    naive_users = users[: args.naive_users]
    seconds_naive, naive_items = timed(lambda: per_user_topk(model, seen, naive_users, args.k, device), device)
    rows.append({"model": name, "method": "per-user loop (extrapolated)", "users_measured": len(naive_users),
                 "seconds": seconds_naive * n_users / len(naive_users), "peak_mb": peak_memory_mb(device)})
    # same lists as the chunked path (sets: ties may be ordered differently)
    agree = np.mean([set(a) == set(b) for a, b in zip(naive_items, chunked_items[: len(naive_users)].numpy())])

    subset = users[: min(args.unchunked_users, n_users)]
    reset_peak(device)
    seconds_whole, _ = timed(lambda: unchunked_topk(model, seen, subset, args.k, device), device)
    rows.append({"model": name, "method": f"unchunked on {len(subset)} users (extrapolated)", "users_measured": len(subset),
                 "seconds": seconds_whole * n_users / len(subset), "peak_mb": peak_memory_mb(device)})

    for row in rows:
        row.update(users_per_s=n_users / row["seconds"], pairs_per_s=n_users * n_items / row["seconds"],
                   time_vs_chunked=row["seconds"] and rows[0]["seconds"] and row["seconds"] / rows[0]["seconds"],
                   per_user_agreement=float(agree))
    if device.type == "cuda":
        flops, bandwidth = next((v for key, v in GPU_PEAKS.items() if key in torch.cuda.get_device_name(device)), (None, None))
        # Traffic lower bound of the chunked path: write the score matrix once and read it once for the mask/topk.
        bytes_moved = 8.0 * n_users * n_items
        rows[0]["bandwidth_gb_s"] = bytes_moved / rows[0]["seconds"] / 1e9
        rows[0]["bandwidth_share_of_peak"] = bandwidth and rows[0]["bandwidth_gb_s"] * 1e9 / bandwidth
        if name == "linucb":
            rows[0]["tflop_s"] = model.bandit.score_flops(n_users, n_items) / rows[0]["seconds"] / 1e12
            rows[0]["flop_share_of_peak"] = flops and rows[0]["tflop_s"] * 1e12 / flops
    model.to("cpu")
    return rows


def markdown(rows: list[dict], header: str) -> str:
    cols = ["model", "method", "users_measured", "seconds", "users_per_s", "pairs_per_s", "time_vs_chunked", "peak_mb",
            "bandwidth_gb_s", "bandwidth_share_of_peak", "tflop_s", "flop_share_of_peak", "per_user_agreement"]
    cols = [c for c in cols if any(c in r for r in rows)]

    def fmt(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"
        return "" if value is None else str(value)

    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA device is available")
    args.users = args.users or (1_000_000 if gpu else 100_000)
    args.items = args.items or (100_000 if gpu else 20_000)
    args.batch_size = args.batch_size or (8192 if gpu else 1024)
    args.unchunked_users = args.unchunked_users or (16384 if gpu else 8192)
    rng = np.random.default_rng(args.seed)
    seen = random_seen(args.users, args.items, args.seen_per_user, rng)
    machine = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} torch threads"
    rows = []
    for name in args.models.split(","):
        model = build_model(name, args.users, args.items, seen, args, rng)
        if model is not None:
            rows += bench_model(name, model, seen, args, device)
            print(markdown(rows[-3:], f"{name}:"), flush=True)
            del model
    header = (f"Batch scoring, {args.users} users x {args.items} items, k={args.k}, {args.seen_per_user} seen items/user, "
              f"{machine}, torch {torch.__version__}")
    table = markdown(rows, header)
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    (out / f"scoring_{device.type}.md").write_text(table + "\n")
    (out / f"scoring_{device.type}.json").write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
