"""Chunked full-ranking evaluation: score users in chunks on the model's device, mask the items
of earlier splits, torch.topk, then the shared metrics. No Python loop over users, only over chunks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.evaluation.metrics import DEFAULT_KS, evaluate_topk


def mask_rows(scores: torch.Tensor, exclude: sp.csr_matrix | None, rows: np.ndarray) -> torch.Tensor:
    """Set scores of excluded items to -inf in place: scores [B, I], rows: the B user indices."""
    if exclude is None or exclude.nnz == 0:
        return scores
    sub = exclude[rows]
    if sub.nnz:
        row_idx = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        r = torch.from_numpy(row_idx).to(scores.device)
        c = torch.from_numpy(sub.indices.astype(np.int64)).to(scores.device)
        scores[r, c] = -torch.inf
    return scores


def topk_from_scores(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, items) of the top k; items whose score is -inf (excluded) become -1 pads."""
    k_eff = min(k, scores.shape[1])
    values, items = torch.topk(scores, k_eff, dim=1)
    items = torch.where(torch.isneginf(values), torch.full_like(items, -1), items)
    if k_eff < k:
        pad = k - k_eff
        items = torch.cat([items, items.new_full((items.shape[0], pad), -1)], 1)
        values = torch.cat([values, values.new_full((values.shape[0], pad), -torch.inf)], 1)
    return values, items


@torch.no_grad()
def full_ranking_topk(
    score_fn,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [U, k], items [U, k] int64 on CPU) for `users`, ranking every item.

    score_fn(users: LongTensor[B] on device) -> [B, I]; exclude: CSR [n_users, I] of items never
    to recommend (seen ones). Memory is bounded by batch_size x I, not by U x I.
    """
    users = np.asarray(users, dtype=np.int64)
    all_values, all_items = [], []
    for start in range(0, len(users), batch_size):
        rows = users[start : start + batch_size]
        scores = score_fn(torch.from_numpy(rows).to(device)).float()
        scores = mask_rows(scores, exclude, rows)
        values, items = topk_from_scores(scores, k)
        all_values.append(values.cpu())
        all_items.append(items.cpu())
    if not all_items:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
    return torch.cat(all_values), torch.cat(all_items)


def evaluate_recommender(
    recommender,
    data,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    return_topk: bool = False,
):
    """Shared evaluation of any Recommender on `split` of InteractionData (SPEC section 3).

    Items of earlier splits are excluded (train for valid; train and valid for test); users with
    no item in `split` are skipped and counted. A recommender with `observe(data, splits)` (sequence
    and history models) is first conditioned on those same earlier splits, its known history.
    """
    truth = data.truth(split)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    exclude = data.matrix(data.earlier_splits(split), binary=True)
    recommender.observe(data, data.earlier_splits(split))
    _, items = full_ranking_topk(
        recommender.score, users, max(ks), exclude=exclude, batch_size=batch_size, device=recommender.device
    )
    train_users = data.matrix("train", binary=True)
    n_train_users = int((np.diff(train_users.indptr) > 0).sum())
    metrics = evaluate_topk(
        items,
        truth[users],
        ks=ks,
        n_items=data.n_items,
        item_popularity=data.item_popularity("train"),
        n_popularity_users=n_train_users,
    )
    metrics["n_users_skipped"] = float(data.n_users - len(users))
    if return_topk:
        return metrics, users, items
    return metrics
