"""One full-ranking validation pass of the attention ranker: 1k users x 2k items, histories of 50.

python scripts/bench_attention_scoring.py [--users 1000 --items 2000 --history 50 --threads 2]
-> bench_results/attention_scoring.{md,json}

It times deeprec's evaluate_recommender on the valid split (what the Lightning callback runs after
every epoch) and, in the same run, two baselines on the same model: `score_per_position`, the
previous `score` (the activation unit run for every (user, history position, item) triple), and the
general candidate_scores path over 64-candidate chunks (what validation ran before that). Both
baselines are timed on the first 200 users and extrapolated (their cost is linear in users); all
three must give the same scores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeprec.atomic import write_text_atomic
from deeprec.data.interactions import from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.models.attention import AttentionRanker


def make_data(n_users: int, n_items: int, history: int, seed: int = 0):
    """Each user: `history` train events, 1 valid, 1 test, items drawn from a Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    per_user = history + 2
    weights = 1.0 / np.arange(1, n_items + 1)
    items = np.stack([rng.choice(n_items, per_user, replace=False, p=weights / weights.sum()) for _ in range(n_users)])
    position = np.tile(np.arange(per_user), n_users)
    split = np.where(position < history, "train", np.where(position == history, "valid", "test"))
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), per_user), "item_id": items.ravel(),
                          "timestamp": 1e9 + 60.0 * position, "split": split})
    features = pd.DataFrame(rng.random((n_items, 8)).astype(np.float32), index=[str(i) for i in range(n_items)])
    return from_frame(frame, "bench", item_features=features)


def reference_scores(model: AttentionRanker, users: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """[B, I]: candidate_scores over chunks of `chunk` candidates for all users at once."""
    history = model.history_of(users)
    with torch.no_grad():
        return torch.cat([model.candidate_scores(history, part) for part in torch.arange(model.n_items).split(chunk)], 1)


def score_per_position(model: AttentionRanker, users: torch.Tensor) -> torch.Tensor:
    """[B, I]: the previous AttentionRanker.score, kept as the benchmark's baseline: the activation
    unit runs per (user, history position, item) through shared_attention_logits, users in blocks."""
    history_items = model.history_of(users)
    width = history_items.shape[1]
    vectors = model.item_vectors()
    candidates = vectors[:-1]
    mlp_in, mlp_rest = model.score_mlp[0], model.score_mlp[1:]
    w_interest, w_candidate, w_product = mlp_in.weight.split(model.config.embedding_dim, dim=1)
    candidate_hidden = candidates @ w_candidate.T + mlp_in.bias
    budget = model.config.score_chunk_elements
    users_per_block = max(1, budget // (width * model.n_items))
    rows_per_block = max(64, budget // (model.n_items * model.config.attention_hidden))
    out = []
    with torch.no_grad():
        for block in history_items.split(users_per_block):
            history = vectors[block]
            logits = model.shared_attention_logits(history, candidates, rows_per_block)
            logits = logits.masked_fill((block == model.n_items).unsqueeze(-1), -torch.inf)
            weights = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)
            interest = weights.transpose(1, 2) @ history
            hidden = interest @ w_interest.T + candidate_hidden + (interest * candidates) @ w_product.T
            out.append(mlp_rest(hidden).squeeze(-1) + model.item_bias)
    return torch.cat(out)


def timed(fn, *args) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_results/attention_scoring")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_data(args.users, args.items, args.history)
    model = AttentionRanker(data.n_users, data.n_items, seed=0)
    model.prepare(data)
    model.eval()
    metrics, evaluation_s = timed(evaluate_recommender, model, data, "valid", (5, 10, 20))
    users = torch.arange(min(200, data.n_users))
    model.observe(data, ("train",))
    scale = data.n_users / len(users)
    got = model.score(users)
    before, before_s = timed(score_per_position, model, users)
    want, reference_s = timed(reference_scores, model, users)
    before_s, reference_s = before_s * scale, reference_s * scale
    max_diff = float(max((got - want).abs().max(), (got - before).abs().max()))
    result = {
        "users": args.users, "items": args.items, "history": args.history, "threads": args.threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "validation_pass_s": round(evaluation_s, 2), "per_position_s_extrapolated": round(before_s, 2),
        "reference_chunked_s_extrapolated": round(reference_s, 2),
        "speedup_vs_per_position": round(before_s / evaluation_s, 2),
        "speedup_vs_reference": round(reference_s / evaluation_s, 2), "max_abs_score_diff": max_diff,
        "valid_ndcg@10": metrics["ndcg@10"],
    }
    lines = ["| users x items, history | threads | load | validation pass s | previous score (per position) s | "
             "64-candidate chunks s | speed-up vs previous | vs chunks | max score diff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {args.users} x {args.items}, {args.history} | {args.threads} | {result['load_average_1min']} | "
             f"{evaluation_s:.2f} | {before_s:.2f} | {reference_s:.2f} | {before_s / evaluation_s:.1f}x | "
             f"{reference_s / evaluation_s:.1f}x | {max_diff:.1e} |"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(result, indent=2))
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
