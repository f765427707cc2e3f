"""Benchmark model=hybrid scoring against scoring its members alone, in the same run.

A generated implicit-feedback table (users x items, a low-rank taste plus popularity, `--per-user`
items each, the last one test, the one before valid); the hybrid is fitted with the given members
and scores `--score-users` users (top-k, seen items excluded, the shared ranking primitive), once
with the default re-ranking (the LinUCB head) and once with every rule on (popularity penalty,
freshness, MMR diversity). Its stages are timed inside score() (HybridRecommender.stage_seconds):
the first stage (members' full-catalogue scores + the union of their top-M), the blend, the
re-ranking (head UCB, rules, MMR) and the ordering of the other items.

    python scripts/bench_hybrid.py [--users 100000] [--items 20000] [--candidates 200] [--members itemknn,mf,pop]
-> bench_results/hybrid_bench.{md,json}
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def generate(n_users: int, n_items: int, per_user: int, seed: int = 0):
    """InteractionData: each user's items drawn without replacement by Gumbel top-k of a rank-8 taste
    plus Zipf popularity; the last two in time are valid and test."""
    from deeprec.data.interactions import from_frame

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    users = torch.randn(n_users, 8, generator=gen)
    items = torch.randn(n_items, 8, generator=gen)
    log_pop = torch.from_numpy(-1.0 * np.log(np.arange(1, n_items + 1)).astype(np.float32))[torch.randperm(n_items, generator=gen)]
    chosen = []
    for start in range(0, n_users, 2048):
        logits = users[start : start + 2048] @ items.T + log_pop
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp(1e-12, 1 - 1e-7)))
        chosen.append(torch.topk(logits + gumbel, per_user, dim=1).indices.numpy())
    picks = np.concatenate(chosen)
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), per_user).astype(str),
        "item_id": picks.ravel().astype(str),
        "timestamp": np.tile(np.arange(per_user), n_users).astype(float) + rng.random(n_users * per_user) * 0.1,
    })
    position = np.tile(np.arange(per_user), n_users)
    frame["split"] = np.where(position == per_user - 1, "test", np.where(position == per_user - 2, "valid", "train"))
    return from_frame(frame, "bench")


def rank_users(score_fn, users: np.ndarray, exclude, k: int, batch: int) -> float:
    """Seconds to rank `users` through score_fn with the shared primitive."""
    from deeprec.ranking import full_ranking_topk

    t = time.perf_counter()
    full_ranking_topk(score_fn, users, k, exclude=exclude, batch_size=batch)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--members", default="itemknn,mf,pop")
    parser.add_argument("--score-users", type=int, default=10_000, help="users scored for the throughput (a sample)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from deeprec.atomic import write_json_atomic, write_text_atomic
    from deeprec.hybrid.recommender import HybridRecommender

    t = time.perf_counter()
    data = generate(args.users, args.items, args.per_user)
    generate_s = time.perf_counter() - t
    print(f"generated {data.n_users} x {data.n_items} in {generate_s:.0f} s", flush=True)
    members = args.members.split(",")
    t = time.perf_counter()
    model = HybridRecommender(data.n_users, data.n_items, seed=1, members=members, n_candidates=args.candidates,
                              blend="lsq", blend_max_users=5000).fit(data)
    fit_s = time.perf_counter() - t
    print(f"fitted the hybrid in {fit_s:.0f} s", flush=True)
    model.observe(data, ("train", "valid"))
    model.eval()
    exclude = data.matrix(("train", "valid"), binary=True)
    users = np.sort(np.random.default_rng(2).choice(data.n_users, min(args.score_users, data.n_users), replace=False))
    rank_users(model.score, users[: args.batch], exclude, args.k, args.batch)  # warm-up

    per_member = {m.name: rank_users(m.model.score, users, exclude, args.k, args.batch) for m in model.members}
    print(f"members alone: {per_member}", flush=True)
    runs = {}
    for label, rules in (("default", {}), ("all rules on", {"popularity_penalty": 0.2, "freshness": 0.2, "diversity": 0.3})):
        for key, value in rules.items():
            setattr(model.config, key, value)
        model.stage_seconds = {}
        total = rank_users(model.score, users, exclude, args.k, args.batch)
        runs[label] = {"seconds": total, "users_per_s": len(users) / total, "stages": dict(model.stage_seconds)}
    members_s = sum(per_member.values())
    result = {
        "size": f"{args.users} users x {args.items} items, {args.per_user} items per user, M = {args.candidates}",
        "members": members, "threads": torch.get_num_threads(), "generate_s": generate_s, "fit_s": fit_s,
        "scored_users": len(users), "members_alone_s": per_member, "members_alone_total_s": members_s,
        "members_alone_users_per_s": len(users) / members_s, "hybrid": runs,
        "load_average_1min": os.getloadavg()[0], "cpu_cores": os.cpu_count(),
        "command": "python scripts/bench_hybrid.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    out = REPO / "bench_results"
    out.mkdir(exist_ok=True)
    write_json_atomic(result, out / "hybrid_bench.json")
    lines = [f"{result['size']}; members {', '.join(members)}; {len(users):,} users scored (top-{args.k}, batch {args.batch}), "
             f"{result['threads']} threads; fit {fit_s:.0f} s; load average {result['load_average_1min']:.1f} on "
             f"{result['cpu_cores']} cores at the end", "",
             "| scoring | users/s | first stage s | blend s | re-ranking s | other items s | re-ranking ÷ first stage |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| members alone ({' + '.join(f'{n} {s:.1f} s' for n, s in per_member.items())}) | {len(users) / members_s:,.0f} | | | | | |"]
    for label, run in runs.items():
        st = run["stages"]
        lines.append(f"| hybrid, {label} | {run['users_per_s']:,.0f} | {st.get('first stage', 0):.1f} | {st.get('blend', 0):.1f} | "
                     f"{st.get('re-ranking', 0):.1f} | {st.get('other items', 0):.1f} | "
                     f"{st.get('re-ranking', 0) / max(st.get('first stage', 1e-9), 1e-9):.2f} |")
    write_text_atomic(out / "hybrid_bench.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
