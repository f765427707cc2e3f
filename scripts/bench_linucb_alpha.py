"""Benchmark LinUCB scoring with personalised exploration (alpha_s = ability_s x attention, SPEC 2.4):
deeprec (alpha kept as its factors, attention per chunk by cumulative sums), the same head given a
dense [users, arms] alpha (what deeprec did before), and an independent rank-1 implementation of
the same model written here (its own ridge solve, attention and scoring), side by side in one run.

    python scripts/bench_linucb_alpha.py [--users 50000] [--arms 1000] [--dim 16] [--repeats 3]
-> bench_results/linucb_alpha.{md,json}; the scores of all three are checked to agree.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def problem(n_users: int, n_arms: int, dim: int, per_user: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    arms = (rng.standard_normal((n_arms, dim)) / np.sqrt(dim)).astype(np.float32)
    played = np.concatenate([rng.choice(n_arms, per_user, replace=False) for _ in range(n_users)])
    rewards = rng.random(len(users)).astype(np.float32)
    ability = rng.random(n_users)
    dif = rng.random(n_arms)
    return users, played, arms, rewards, ability, dif


def independent_scores(users, played, arms, rewards, ability, dif, n_users: int, chunk: int) -> torch.Tensor:
    """The model written from SPEC 2.4 directly: A_u = I + D_uᵀD_u inverted by torch.linalg.inv,
    diag(X A_u⁻¹ Xᵀ) as one GEMM of vec(A_u⁻¹) [U, d²] with the arms' outer products [d², n],
    S_u[j] = mean_m |dif_j - dif_m| over the m watched arms ([B, n, m]), and
    p = Xθ + a_u S_u sqrt(var), chunk by chunk."""
    x = torch.from_numpy(arms)
    d = x.shape[1]
    per_user = len(users) // n_users
    rows = x[torch.from_numpy(played)].view(n_users, per_user, d)
    a = torch.eye(d).expand(n_users, d, d) + rows.transpose(1, 2) @ rows
    b = (rows * torch.from_numpy(rewards).view(n_users, per_user, 1)).sum(1)
    a_inv = torch.linalg.inv(a)
    theta = (a_inv @ b.unsqueeze(2)).squeeze(2)
    outer = (x.unsqueeze(2) * x.unsqueeze(1)).reshape(len(arms), d * d).T.contiguous()  # [d², n]
    watched_dif = torch.from_numpy(dif).float()[torch.from_numpy(played)].view(n_users, per_user)
    arm_dif = torch.from_numpy(dif).float()
    scale = torch.from_numpy(ability).float()
    out = torch.empty(n_users, len(arms))
    for s in range(0, n_users, chunk):
        e = min(s + chunk, n_users)
        var = (a_inv[s:e].reshape(e - s, d * d) @ outer).clamp_(min=0).sqrt_()
        attention = (arm_dif.view(1, -1, 1) - watched_dif[s:e].unsqueeze(1)).abs_().mean(2)
        out[s:e] = torch.addmm(var.mul_(attention).mul_(scale[s:e].unsqueeze(1)), theta[s:e], x.T)
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--arms", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from deeprec.bandits.features import PersonalisedAlpha, attention, watched_matrix
    from deeprec.bandits.linucb import BatchedLinUCB

    users, played, arms, rewards, ability, dif = problem(args.users, args.arms, args.dim, args.per_user)
    bandit = BatchedLinUCB(args.users, args.dim, lam=1.0).fit(users, arms[played], rewards)
    watched = watched_matrix(users, played, args.users, args.arms)
    arm_x = torch.from_numpy(arms)
    factored = PersonalisedAlpha(torch.from_numpy(ability), watched, torch.from_numpy(dif), torch.float32)
    chunk = max(1, bandit.chunk_elements // args.arms)

    def deeprec_factored():
        return bandit.ucb(arm_x, alpha=factored)

    def deeprec_dense():  # alpha materialised for all users first, as before
        dense = torch.from_numpy(ability).unsqueeze(1) * attention(watched, dif)
        return bandit.ucb(arm_x, alpha=dense)

    def before_change():  # alpha dense, attention as the [users, arms] x [arms, arms] product |dif_j - dif_m|
        gaps = (torch.from_numpy(dif).unsqueeze(0) - torch.from_numpy(dif).unsqueeze(1)).abs()
        w = torch.from_numpy(watched.toarray().astype(np.float64))
        dense = torch.from_numpy(ability).unsqueeze(1) * (w @ gaps) / w.sum(1, keepdim=True).clamp(min=1)
        return bandit.ucb(arm_x, alpha=dense)

    def independent():
        return independent_scores(users, played, arms, rewards, ability, dif, args.users, chunk)

    deeprec_factored(), independent()  # warm-up
    t_independent, ref = timed(independent, args.repeats)
    t_factored, got = timed(deeprec_factored, args.repeats)
    t_dense, dense = timed(deeprec_dense, args.repeats)
    t_before, before = timed(before_change, args.repeats)
    agree = float((got.double() - ref.double()).abs().max())
    agree_dense = float((dense.double() - ref.double()).abs().max())
    result = {
        "size": f"{args.users} users x {args.arms} arms, d = {args.dim}, {args.per_user} observations per user",
        "threads": torch.get_num_threads(),
        "independent_s": t_independent, "deeprec_factored_s": t_factored, "deeprec_dense_alpha_s": t_dense,
        "factored_over_independent": t_factored / t_independent, "dense_over_independent": t_dense / t_independent,
        "before_change_s": t_before, "before_over_independent": t_before / t_independent,
        "max_abs_difference": agree, "max_abs_difference_dense": agree_dense,
        "command": "python scripts/bench_linucb_alpha.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    out = REPO / "bench_results"
    out.mkdir(exist_ok=True)
    (out / "linucb_alpha.json").write_text(json.dumps(result, indent=2))
    md = ["| variant | score all users (s) | ÷ independent rank-1 |", "|---|---:|---:|",
          f"| independent rank-1 implementation | {t_independent:.3f} | 1.00 |",
          f"| deeprec, alpha as its factors | {t_factored:.3f} | {t_factored / t_independent:.2f} |",
          f"| deeprec given a dense [users, arms] alpha | {t_dense:.3f} | {t_dense / t_independent:.2f} |",
          f"| before: dense alpha, attention as W @ abs(dif gaps) | {t_before:.3f} | {t_before / t_independent:.2f} |",
          "", f"{result['size']}, {result['threads']} threads; scores agree to {agree:.1e} (dense: {agree_dense:.1e})."]
    (out / "linucb_alpha.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
