"""Full-ranking evaluation speed and memory: deeprec's chunked evaluator vs a plain per-user loop,
and torchmetrics' retrieval metrics on a slice (values and speed).

Scores come from a cheap random factor model (users x 64 @ 64 x items); each user has `--seen`
random training items (masked) and `--truth` random test items. Every variant runs in its own
subprocess so its peak RSS (VmHWM from /proc/self/status) is its own; torch uses `--threads` threads.
The per-user loops run on `--loop-users` users and are extrapolated to all users (reported as such).

    python scripts/bench_evaluation.py [--users 100000] [--items 20000] [--k 20] [--threads 2]
Writes bench_results/bench_evaluation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "bench_results"


def proc_status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_case(n_users: int, n_items: int, factors: int, n_seen: int, n_truth: int, seed: int = 0):
    """(user factors, item factors, seen CSR [U, I], truth CSR [U, I]) of the random factor model."""
    import scipy.sparse as sp
    import torch

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    user_f = torch.randn(n_users, factors, generator=gen)
    item_f = torch.randn(n_items, factors, generator=gen)

    def random_sets(per_user: int) -> sp.csr_matrix:
        cols = rng.integers(0, n_items, (n_users, per_user)).ravel()
        rows = np.repeat(np.arange(n_users), per_user)
        m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n_users, n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    seen = random_sets(n_seen)
    truth = random_sets(n_truth)
    truth = truth - truth.multiply(seen)  # test items are not training items
    truth.eliminate_zeros()
    return user_f, item_f, seen, truth


# -- workers (each in its own process) -------------------------------------------------------------
def worker_chunked(a: dict) -> dict:
    """deeprec: full_ranking_topk (chunks of batch_size users) + evaluate_topk, all users."""
    import torch

    from deeprec.evaluation import evaluate_topk
    from deeprec.ranking import full_ranking_topk

    user_f, item_f, seen, truth = make_case(a["users"], a["items"], a["factors"], a["seen"], a["truth"])
    popularity = np.asarray(seen.sum(0)).ravel()
    rss_setup = proc_status_mb("VmRSS")
    start = time.perf_counter()
    _, topk = full_ranking_topk(
        lambda u: user_f[u] @ item_f.T, np.arange(a["users"]), a["k"], exclude=seen, batch_size=a["batch_size"]
    )
    metrics = evaluate_topk(topk, truth, ks=(a["k"],), n_items=a["items"], item_popularity=popularity)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "users_per_s": a["users"] / seconds,
        "rss_setup_mb": rss_setup,
        "peak_rss_mb": proc_status_mb("VmHWM"),
        f"ndcg@{a['k']}": metrics[f"ndcg@{a['k']}"],
        "threads": torch.get_num_threads(),
    }


def worker_loop(a: dict) -> dict:
    """The plain loop: per user score, mask, rank (numpy argsort or torch.topk), metrics in Python."""
    import torch

    user_f, item_f, seen, truth = make_case(a["users"], a["items"], a["factors"], a["seen"], a["truth"])
    k, n = a["k"], a["loop_users"]
    rss_setup = proc_status_mb("VmRSS")
    sums = dict.fromkeys(("precision", "recall", "ndcg", "map", "mrr", "hit"), 0.0)
    recommended_counts: dict[int, int] = {}
    start = time.perf_counter()
    for u in range(n):
        scores = user_f[u] @ item_f.T
        scores[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = -math.inf
        if a["rank"] == "argsort":
            top = np.argsort(-scores.numpy(), kind="stable")[:k].tolist()
        else:
            top = torch.topk(scores, k).indices.tolist()
        relevant = set(truth.indices[truth.indptr[u] : truth.indptr[u + 1]].tolist())
        hits = [1 if i in relevant else 0 for i in top]
        n_hit = sum(hits)
        sums["precision"] += n_hit / k
        sums["recall"] += n_hit / len(relevant)
        sums["hit"] += n_hit > 0
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
        sums["ndcg"] += sum(h / math.log2(r + 2) for r, h in enumerate(hits)) / ideal
        running, ap = 0, 0.0
        for r, h in enumerate(hits):
            running += h
            ap += h * running / (r + 1)
        sums["map"] += ap / min(len(relevant), k)
        sums["mrr"] += next((1 / (r + 1) for r, h in enumerate(hits) if h), 0.0)
        for i in top:
            recommended_counts[i] = recommended_counts.get(i, 0) + 1
    seconds = time.perf_counter() - start
    return {
        "seconds_measured": seconds,
        "users_measured": n,
        "users_per_s": n / seconds,
        "seconds_extrapolated": seconds / n * a["users"],
        "rss_setup_mb": rss_setup,
        "peak_rss_mb": proc_status_mb("VmHWM"),
        f"ndcg@{k}": sums["ndcg"] / n,
    }


def worker_torchmetrics(a: dict) -> dict:
    """torchmetrics RetrievalNormalizedDCG / RetrievalPrecision (indexes = user) vs deeprec on a slice."""
    import torch
    from torchmetrics.retrieval import RetrievalNormalizedDCG, RetrievalPrecision

    from deeprec.evaluation import evaluate_topk
    from deeprec.ranking import full_ranking_topk

    user_f, item_f, seen, truth = make_case(a["users"], a["items"], a["factors"], a["seen"], a["truth"])
    n, k = a["tm_users"], a["k"]
    users = np.arange(n)
    start = time.perf_counter()
    _, topk = full_ranking_topk(lambda u: user_f[u] @ item_f.T, users, k, exclude=seen, batch_size=1024)
    ours = evaluate_topk(topk, truth[:n], ks=(k,), n_items=a["items"])
    ours_seconds = time.perf_counter() - start

    start = time.perf_counter()
    ndcg = RetrievalNormalizedDCG(top_k=k)
    precision = RetrievalPrecision(top_k=k)
    for lo in range(0, n, a["tm_chunk"]):  # torchmetrics needs flat [n x I] preds/target/indexes
        rows = users[lo : lo + a["tm_chunk"]]
        scores = user_f[rows] @ item_f.T
        sub = seen[rows].tocoo()
        scores[torch.from_numpy(sub.row.astype(np.int64)), torch.from_numpy(sub.col.astype(np.int64))] = -math.inf
        target = torch.from_numpy(truth[rows].toarray() > 0)
        indexes = torch.from_numpy(rows).unsqueeze(1).expand_as(scores)
        ndcg.update(scores.ravel(), target.ravel(), indexes=indexes.ravel())
        precision.update(scores.ravel(), target.ravel(), indexes=indexes.ravel())
    tm_ndcg, tm_precision = float(ndcg.compute()), float(precision.compute())
    tm_seconds = time.perf_counter() - start
    return {
        "users": n,
        "ours_seconds": ours_seconds,
        "torchmetrics_seconds": tm_seconds,
        "ours_ndcg": ours[f"ndcg@{k}"],
        "torchmetrics_ndcg": tm_ndcg,
        "ours_precision": ours[f"precision@{k}"],
        "torchmetrics_precision": tm_precision,
        "peak_rss_mb": proc_status_mb("VmHWM"),
    }


WORKERS = {"chunked": worker_chunked, "loop": worker_loop, "torchmetrics": worker_torchmetrics}


def run_worker(kind: str, args: dict, threads: int) -> dict:
    """Run one variant in a fresh interpreter (its own peak RSS) and parse its JSON line."""
    code = (
        f"import json, sys, torch; torch.set_num_threads({threads}); sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench_evaluation as b; print('RESULT ' + json.dumps(b.WORKERS[{kind!r}](json.loads(sys.argv[1]))))"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seen", type=int, default=20, help="random training items per user (masked)")
    p.add_argument("--truth", type=int, default=5, help="random test items per user")
    p.add_argument("--batch-sizes", type=int, nargs=2, default=[512, 4096])
    p.add_argument("--loop-users", type=int, default=2000)
    p.add_argument("--tm-users", type=int, default=1000)
    p.add_argument("--tm-chunk", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    base = {"users": a.users, "items": a.items, "factors": a.factors, "k": a.k, "seen": a.seen, "truth": a.truth}

    rows = []
    for users in (a.users // 2, a.users):
        for batch_size in a.batch_sizes:
            r = run_worker("chunked", {**base, "users": users, "batch_size": batch_size}, a.threads)
            rows.append({"variant": f"deeprec chunked, batch_size={batch_size}", "users": users, **r})
            print(f"chunked users={users} batch={batch_size}: {r['users_per_s']:.0f} users/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    loops = {}
    for rank in ("topk", "argsort"):
        r = run_worker("loop", {**base, "loop_users": a.loop_users, "rank": rank}, a.threads)
        loops[rank] = r
        rows.append({"variant": f"plain per-user loop ({rank}), {a.loop_users} users extrapolated", "users": a.users, **r,
                     "seconds": r["seconds_extrapolated"]})
        print(f"loop {rank}: {r['users_per_s']:.0f} users/s", flush=True)
    tm = run_worker("torchmetrics", {**base, "tm_users": a.tm_users, "tm_chunk": a.tm_chunk}, a.threads)
    print(f"torchmetrics: {tm}", flush=True)

    full = [r for r in rows if r["users"] == a.users and r["variant"].startswith("deeprec")]
    best = max(full, key=lambda r: r["users_per_s"])
    for r in rows:
        r["speedup_vs_topk_loop"] = r["users_per_s"] / loops["topk"]["users_per_s"]
        r["speedup_vs_argsort_loop"] = r["users_per_s"] / loops["argsort"]["users_per_s"]
    machine = f"{platform.machine()}, torch threads={a.threads}, {platform.python_version()}"
    lines = [
        f"### Full-ranking evaluation, {a.users:,} users x {a.items:,} items, k = {a.k} (CPU, {a.threads} threads)",
        "",
        f"Random factor model ({a.factors} factors), {a.seen} masked training items and {a.truth} test items per user. "
        f"Loops measured on {a.loop_users:,} users and extrapolated. Peak RSS = the variant's own process (VmHWM).",
        "",
        "| variant | users | seconds | users/s | x topk loop | x argsort loop | RSS after setup (MB) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['users']:,} | {r['seconds']:.1f} | {r['users_per_s']:,.0f} | {r['speedup_vs_topk_loop']:.1f} "
            f"| {r['speedup_vs_argsort_loop']:.1f} | {r['rss_setup_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"torchmetrics ({tm['users']:,} users, flat [users x items] preds with indexes, chunks of {a.tm_chunk}): "
        f"ndcg@{a.k} {tm['torchmetrics_ndcg']:.6f} vs deeprec {tm['ours_ndcg']:.6f}; precision@{a.k} "
        f"{tm['torchmetrics_precision']:.6f} vs {tm['ours_precision']:.6f}; {tm['torchmetrics_seconds']:.2f} s vs "
        f"{tm['ours_seconds']:.2f} s for deeprec (scoring included in both) = "
        f"{tm['torchmetrics_seconds'] / tm['ours_seconds']:.1f}x slower.",
        "",
        f"Best deeprec variant: {best['users_per_s']:,.0f} users/s = {best['speedup_vs_topk_loop']:.1f}x the torch.topk loop, "
        f"{best['speedup_vs_argsort_loop']:.1f}x the numpy argsort loop. Machine: {machine}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_evaluation.md").write_text(text)
    (OUT / "bench_evaluation.json").write_text(
        json.dumps({"args": vars(a), "rows": rows, "torchmetrics": tm, "machine": machine}, indent=2)
    )


if __name__ == "__main__":
    main()
