"""The one ranking primitive: mask the items a user must not get, take the top k, pad with -1, in
chunks of users. Evaluation, batch scoring, the attention ranker's explanations and the LinUCB head
all rank through it; memory is bounded by a chunk's [batch, n_items] scores, never users x items.
ranking_keys adds an explicit order among equal scores where a protocol fixes one (SPEC 1.11).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

#: score_fn(users: LongTensor [B] on the scoring device) -> scores [B, n_items]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]


def mask_excluded(scores: torch.Tensor, excluded: sp.spmatrix | torch.Tensor | None) -> torch.Tensor:
    """Set scores [B, I] of excluded items to -inf, in place. excluded: the B rows of a mask, as a CSR
    [B, I] or a bool tensor [B, I] (row b belongs to scores row b), or None for no mask."""
    if excluded is None:
        return scores
    if not sp.issparse(excluded):
        return scores.masked_fill_(excluded.to(scores.device, torch.bool), -torch.inf)
    excluded = sp.csr_matrix(excluded)
    if excluded.nnz:
        rows = np.repeat(np.arange(excluded.shape[0]), np.diff(excluded.indptr))
        r = torch.from_numpy(rows).to(scores.device)
        c = torch.from_numpy(excluded.indices.astype(np.int64)).to(scores.device)
        scores[r, c] = -torch.inf
    return scores


def topk_with_pads(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, k], items [B, k] int64) of the top k of scores [B, I]; excluded items (-inf) and
    the columns beyond I when k > I become item -1 with value -inf."""
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
    score_fn: ScoreFn,
    users,
    k: int,
    exclude: sp.csr_matrix | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [U, k], items [U, k] int64, on CPU) for user indices `users` [U], ranking every item.

    exclude: CSR [n_users, I] of items never to recommend, indexed by user (seen ones). Scores come
    in float32 (a half-precision model's are widened first). Memory is bounded by batch_size x I.
    """
    users = np.asarray(users, dtype=np.int64)
    all_values, all_items = [], []
    for start in range(0, len(users), batch_size):
        rows = users[start : start + batch_size]
        scores = score_fn(torch.from_numpy(rows).to(device)).float()
        if exclude is not None and exclude.nnz:
            mask_excluded(scores, exclude[rows])
        values, items = topk_with_pads(scores, k)
        all_values.append(values.cpu())
        all_items.append(items.cpu())
    if not all_items:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
    return torch.cat(all_values), torch.cat(all_items)


def ranking_keys(scores: torch.Tensor, tie_rank: torch.Tensor) -> torch.Tensor:
    """keys: [B, I] int64, distinct within a row, ordered as (score as float32, then lower tie_rank).

    The float32 bit pattern, with the bits of negative numbers flipped, is an integer in the order of
    the values; shifting it left and adding the tie order makes one exact key, so a partial top-k
    (torch.topk) replaces a full stable sort.
    """
    bits = (scores.float() + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    n_items = scores.shape[1]
    return ordered * n_items + (n_items - 1 - tie_rank.to(torch.int64))[None, :]


#: orders among equal scores: a seeded random item order, the item index, or descending popularity
TIE_ORDERS = ("random", "index", "popularity")


def random_item_rank(n_items: int, seed: int) -> np.ndarray:
    """[I] a seeded random priority per item for ties (its own stream [seed, 1], independent of other draws)."""
    return np.random.default_rng([seed, 1]).permutation(n_items).astype(np.int64)


def tie_ranks(mode: str, train: sp.csr_matrix, random_rank: np.ndarray) -> torch.Tensor:
    """[I] int64 priority of each item among equal scores (0 first) by a TIE_ORDERS mode; train: CSR
    [U, I] for the popularity, random_rank [I]: the random order (random_item_rank)."""
    if mode == "random":
        return torch.from_numpy(random_rank)
    if mode == "index":
        return torch.arange(train.shape[1])
    popularity = np.asarray(train.sum(axis=0)).ravel()
    rank = np.empty(len(popularity), np.int64)
    rank[np.argsort(-popularity, kind="stable")] = np.arange(len(popularity))
    return torch.from_numpy(rank)
