"""Benchmark BatchedLinUCB against the machine's GEMM bound, a per-user NumPy loop, MABWiser and contextualbandits.

One run measures: float32 GEMM FLOP/s (a large matmul), then per size: fit time, score + top-10 time,
peak memory (each measurement in its own subprocess, so peak RSS is its own), achieved FLOP/s of the
two scoring products, and agreement of the scores with deeprec. MABWiser and contextualbandits model
one ridge per *arm*: users are declared as their arms, contexts are the arm features, so their
[n_arms, U] UCB matrix is ours transposed. They run in a separate interpreter (--libs-python, default
/tmp/benchenv/bin/python) and are never deeprec dependencies.

    python scripts/bench_linucb.py [--device cpu|cuda] [--sizes paper,medium,large] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # users, arms, d, observations per user
    "paper": (2219, 93, 5, 12),
    "medium": (50_000, 1_000, 16, 10),
    "large": (500_000, 5_000, 32, 4),
}
LOOPS_UP_TO = "medium"  # the NumPy loop and the libraries are skipped at the largest size
CHECK_USERS = 64  # users whose scores are compared across implementations
TOP_K = 10

LIBS_WORKER = r'''
import json, sys, time
import numpy as np
name, folder, lam, alpha, check = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
users = np.load(folder + "/users.npy"); contexts = np.load(folder + "/contexts.npy")
rewards = np.load(folder + "/rewards.npy"); arms = np.load(folder + "/arms.npy")
n_users = int(open(folder + "/n_users").read())
t0 = time.perf_counter()
if name == "mabwiser":
    from mabwiser.mab import MAB, LearningPolicy
    model = MAB(arms=list(range(n_users)), learning_policy=LearningPolicy.LinUCB(alpha=alpha, l2_lambda=lam))
    model.fit(decisions=users.tolist(), rewards=rewards, contexts=contexts)
else:
    from contextualbandits.online import LinUCB
    model = LinUCB(nchoices=n_users, alpha=alpha, lambda_=lam, fit_intercept=False, use_float=True, njobs=1)
    model.fit(contexts, users, rewards)
t1 = time.perf_counter()
if name == "mabwiser":
    expectations = model.predict_expectations(arms)
    scores = np.array([[row[u] for u in range(n_users)] for row in expectations]).T
else:
    scores = np.asarray(model.decision_function(arms)).T
top = np.argpartition(-scores, min(10, scores.shape[1] - 1), axis=1)[:, :10]
t2 = time.perf_counter()
np.save(folder + "/" + name + "_scores.npy", scores[:check].astype(np.float64))
print(json.dumps({"fit_s": t1 - t0, "score_topk_s": t2 - t1,
                  "peak_rss_mb": [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]}))
'''


def make_problem(size: str, seed: int = 0):
    """Random users' observations (contexts [N, d], rewards [N]) and arm features [n_arms, d], float32."""
    n_users, n_arms, dim, per_user = SIZES[size]
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    contexts = (rng.standard_normal((len(users), dim)) / np.sqrt(dim)).astype(np.float32)
    truth = rng.standard_normal((n_users, dim)).astype(np.float32)
    rewards = ((contexts * truth[users]).sum(1) + 0.1 * rng.standard_normal(len(users))).astype(np.float32)
    arms = (rng.standard_normal((n_arms, dim)) / np.sqrt(dim)).astype(np.float32)
    return users, contexts, rewards, arms


def gemm_flops(device: str, n: int = 4096, repeats: int = 5) -> float:
    """Best float32 FLOP/s of an n x n x n matmul on `device`."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return rss_high_water_mb()


def rss_high_water_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_deeprec(size: str, device: str, folder: str, chunk_elements: int) -> dict:
    import torch

    from deeprec.bandits import BatchedLinUCB

    users, contexts, rewards, arms = make_problem(size)
    n_users, _, dim, _ = SIZES[size]
    base = peak_memory_mb(device)
    model = BatchedLinUCB(n_users, dim, alpha=1.0, lam=1.0, device=device, chunk_elements=chunk_elements)
    u, x, r = (torch.from_numpy(v).to(device) for v in (users, contexts, rewards))
    arm_x = torch.from_numpy(arms).to(device)
    model.fit(u[:1000], x[:1000], r[:1000])  # warm-up (allocator, kernels)
    model.recommend(arm_x, TOP_K, users=torch.arange(min(n_users, 1000), device=device))
    sync(device)
    t0 = time.perf_counter()
    model.fit(u, x, r)
    sync(device)
    t1 = time.perf_counter()
    model.recommend(arm_x, TOP_K)
    sync(device)
    t2 = time.perf_counter()
    np.save(Path(folder) / "deeprec_scores.npy", model.ucb(arm_x, users=torch.arange(CHECK_USERS, device=device)).double().cpu().numpy())
    return {"fit_s": t1 - t0, "score_topk_s": t2 - t1, "peak_mb": peak_memory_mb(device), "base_mb": base,
            "flops": model.score_flops(n_users, len(arms))}


def worker_numpy_loop(size: str, folder: str) -> dict:
    """The textbook implementation: one ridge per user with np.linalg.inv, scored user by user."""
    users, contexts, rewards, arms = make_problem(size)
    n_users, _, dim, per_user = SIZES[size]
    contexts, rewards, arms = contexts.astype(np.float64), rewards.astype(np.float64), arms.astype(np.float64)
    t0 = time.perf_counter()
    a_inv = np.empty((n_users, dim, dim))
    theta = np.empty((n_users, dim))
    for u in range(n_users):  # the per-user loop is what is being measured
        rows = slice(u * per_user, (u + 1) * per_user)
        d_u = contexts[rows]
        a_inv[u] = np.linalg.inv(np.eye(dim) + d_u.T @ d_u)
        theta[u] = a_inv[u] @ (d_u.T @ rewards[rows])
    t1 = time.perf_counter()
    top = np.empty((n_users, TOP_K), np.int64)
    check = np.empty((min(CHECK_USERS, n_users), len(arms)))
    for u in range(n_users):
        p = arms @ theta[u] + np.sqrt(np.einsum("ij,jk,ik->i", arms, a_inv[u], arms))
        top[u] = np.argpartition(-p, TOP_K)[:TOP_K]
        if u < len(check):
            check[u] = p
    t2 = time.perf_counter()
    np.save(Path(folder) / "numpy_loop_scores.npy", check)
    return {"fit_s": t1 - t0, "score_topk_s": t2 - t1, "peak_mb": peak_memory_mb("cpu")}


def run_library(name: str, size: str, folder: str, python: str, timeout: int) -> dict:
    users, contexts, rewards, arms = make_problem(size)
    for key, value in (("users", users), ("contexts", contexts), ("rewards", rewards), ("arms", arms)):
        np.save(Path(folder) / f"{key}.npy", value)
    (Path(folder) / "n_users").write_text(str(SIZES[size][0]))
    try:
        proc = subprocess.run([python, "-c", LIBS_WORKER, name, folder, "1.0", "1.0", str(CHECK_USERS)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["peak_mb"] = out.pop("peak_rss_mb")
    return out


def run_worker(kind: str, size: str, device: str, folder: str, timeout: int, chunk_elements: int) -> dict:
    """One measurement in a fresh interpreter (clean peak memory)."""
    cmd = [sys.executable, __file__, "--worker", kind, "--sizes", size, "--device", device, "--folder", folder,
           "--chunk-elements", str(chunk_elements)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="paper,medium,large")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    parser.add_argument("--libs-python", default="/tmp/benchenv/bin/python")
    parser.add_argument("--out", default=str(REPO / "bench_results"))
    parser.add_argument("--chunk-elements", type=int, default=None,
                        help="user x arm scores per chunk (default 2**24 on CPU, 2**28 on CUDA)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chunk_elements is None:
        args.chunk_elements = 1 << (28 if args.device.startswith("cuda") else 24)
    if args.worker:
        result = worker_deeprec(args.sizes, args.device, args.folder, args.chunk_elements) if args.worker == "deeprec" \
            else worker_numpy_loop(args.sizes, args.folder)
        print(json.dumps(result))
        return

    import torch

    bound = gemm_flops(args.device)
    libs = Path(args.libs_python).exists()
    rows, results = [], {"device": args.device, "gemm_flops": bound, "threads": torch.get_num_threads(), "sizes": {}}
    print(f"float32 GEMM bound on {args.device}: {bound / 1e9:.1f} GFLOP/s (torch threads {torch.get_num_threads()})")
    for size in args.sizes.split(","):
        n_users, n_arms, dim, per_user = SIZES[size]
        with tempfile.TemporaryDirectory() as folder:
            res = {"deeprec": run_worker("deeprec", size, args.device, folder, args.timeout, args.chunk_elements)}
            small = list(SIZES).index(size) <= list(SIZES).index(LOOPS_UP_TO)
            if small:
                res["numpy loop"] = run_worker("numpy", size, "cpu", folder, args.timeout, args.chunk_elements)
                for lib in ("mabwiser", "contextualbandits"):
                    res[lib] = run_library(lib, size, folder, args.libs_python, args.timeout) if libs \
                        else {"error": f"{args.libs_python} not found"}
            ref_path = Path(folder) / "deeprec_scores.npy"
            ref = np.load(ref_path) if ref_path.exists() else None
            for name, key in (("numpy loop", "numpy_loop"), ("mabwiser", "mabwiser"), ("contextualbandits", "contextualbandits")):
                path = Path(folder) / f"{key}_scores.npy"
                if name in res and ref is not None and path.exists() and "error" not in res[name]:
                    res[name]["max_abs_score_diff"] = float(np.abs(np.load(path) - ref).max())
        deep = res["deeprec"]
        if "error" not in deep:
            deep["achieved_flops"] = deep["flops"] / deep["score_topk_s"]
            deep["x_gemm_bound"] = deep["score_topk_s"] / (deep["flops"] / bound)
        results["sizes"][size] = res
        for name, r in res.items():
            if "error" in r:
                rows.append([size, name, r["error"], "", "", "", "", "", ""])
                continue
            fit_ratio = r["fit_s"] / deep["fit_s"] if "error" not in deep else float("nan")
            score_ratio = r["score_topk_s"] / deep["score_topk_s"] if "error" not in deep else float("nan")
            rows.append([size, name, f"{r['fit_s']:.3f}", f"{r['score_topk_s']:.3f}", f"{r['peak_mb']:.0f}",
                         f"{fit_ratio:.1f}x", f"{score_ratio:.1f}x",
                         f"{deep['achieved_flops'] / 1e9:.1f} GF/s, {deep['x_gemm_bound']:.2f}x bound" if name == "deeprec" else "",
                         f"{r.get('max_abs_score_diff', float('nan')):.1e}" if name != "deeprec" else ""])
        print(f"{size}: done", flush=True)
    header = ["size", "implementation", "fit s", "score+top10 s", "peak MB", "fit vs deeprec", "score vs deeprec",
              "deeprec FLOP/s", "max |score diff|"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    sizes_note = ", ".join(f"{k}: {u} users x {a} arms, d={d}, {p} obs/user" for k, (u, a, d, p) in SIZES.items())
    md = (f"# BatchedLinUCB benchmark ({args.device})\n\nfloat32 GEMM bound: {bound / 1e9:.1f} GFLOP/s; torch threads "
          f"{torch.get_num_threads()}; chunk {args.chunk_elements} scores; sizes: {sizes_note}. 'vs deeprec' = other time / deeprec time. The loop and "
          f"the libraries are skipped at the largest size.\n\n" + "\n".join(lines) + "\n")
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"linucb_bench_{args.device.replace(':', '')}.md").write_text(md)
    (out / f"linucb_bench_{args.device.replace(':', '')}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
