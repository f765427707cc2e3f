"""Top-k ranking metrics over all users at once (SPEC section 3), vectorised in torch.

Definitions (T = a user's truth set, R = the top-k list, hit[r] = R[r] in T):
precision = |R∩T|/k; recall = |R∩T|/|T|; f1 = mean over users of 2PR/(P+R) (0 when P+R=0);
hit = share of users with |R∩T| > 0; ndcg = Σ hit[r]/log2(r+2) / Σ_{r<min(|T|,k)} 1/log2(r+2);
map = Σ_r precision@r·hit[r] / min(|T|,k); mrr = 1/(rank of the first hit) within k, else 0;
coverage = distinct recommended items / n_items; personalization = 1 − mean over user pairs of
|R(u)∩R(v)|/k; novelty = mean over recommended items of −log2(popularity_i / n_popularity_users).
Users with an empty truth set are skipped and counted in `n_users_skipped`. Every result is keyed
f"{name}@{k}" with a name from PER_USER_METRICS or LIST_METRICS: callers use these names, not copies.

precision_at_user_k is the ratings paper's metric (SPEC 1.11): precision at k_u = min(k, |T|).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.ranking import ranking_keys

DEFAULT_KS = (5, 10, 20)
#: metrics with one value per evaluated user (reported as the mean; paired tests use the values)
PER_USER_METRICS = ("precision", "recall", "f1", "hit", "ndcg", "map", "mrr")
#: metrics of the whole set of top-k lists
LIST_METRICS = ("coverage", "personalization", "novelty")
#: every metric name evaluate_topk reports (at each k)
METRICS = PER_USER_METRICS + LIST_METRICS


def truth_to_csr(truth, n_items: int | None = None) -> sp.csr_matrix:
    """Truth as a binary CSR [U, n_items]: accepts a CSR matrix or a sequence of index sequences."""
    if sp.issparse(truth):
        m = sp.csr_matrix(truth, dtype=np.float32)
        m.data[:] = 1.0
        return m
    lengths = np.fromiter((len(t) for t in truth), dtype=np.int64, count=len(truth))
    indices = (
        np.concatenate([np.asarray(t, dtype=np.int64).ravel() for t in truth])
        if lengths.sum()
        else np.zeros(0, np.int64)
    )
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    n_cols = n_items if n_items is not None else int(indices.max(initial=-1)) + 1
    m = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(truth), max(n_cols, 1)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def hit_matrix(topk: torch.Tensor, truth: sp.csr_matrix) -> torch.Tensor:
    """hits: [U, K] bool, True where topk[u, r] is in truth row u (binary search on sorted keys)."""
    n_cols = truth.shape[1]
    coo = truth.tocoo()
    truth_keys = torch.from_numpy(np.sort(coo.row.astype(np.int64) * n_cols + coo.col.astype(np.int64)))
    users = torch.arange(topk.shape[0], dtype=torch.int64).unsqueeze(1)
    valid = (topk >= 0) & (topk < n_cols)
    keys = users * n_cols + topk.clamp(min=0, max=max(n_cols - 1, 0))
    if truth_keys.numel() == 0:
        return torch.zeros_like(topk, dtype=torch.bool)
    pos = torch.searchsorted(truth_keys, keys).clamp(max=truth_keys.numel() - 1)
    return (truth_keys[pos] == keys) & valid


def personalization(topk: torch.Tensor, k: int) -> float:
    """1 − mean over pairs of lists of |R(u) ∩ R(v)| / k, for topk [U, K] (−1 pads); NaN for fewer than 2 lists."""
    lists = topk[:, :k]
    counts = torch.bincount(lists[lists >= 0]).double()
    n_lists = lists.shape[0]
    if n_lists < 2:
        return float("nan")
    overlap_pairs = (counts * (counts - 1)).sum().item()  # ordered pairs (u != v) sharing an item
    return float(1.0 - overlap_pairs / (n_lists * (n_lists - 1)) / k)


def _set_metrics(topk: torch.Tensor, k: int, n_items: int, popularity: np.ndarray | None, n_pop_users: int):
    """Metrics over the whole list set: coverage, personalization, novelty at k."""
    lists = topk[:, :k]
    valid = lists >= 0
    flat = lists[valid]
    counts = torch.bincount(flat, minlength=n_items).double()
    out = {f"coverage@{k}": float((counts > 0).sum().item() / max(n_items, 1))}
    out[f"personalization@{k}"] = personalization(topk, k)
    if popularity is not None and flat.numel() > 0:
        share = np.clip(popularity.astype(np.float64), 1, None) / max(n_pop_users, 1)
        out[f"novelty@{k}"] = float(np.mean(-np.log2(share[flat.numpy()])))
    return out


def _user_metrics_at_k(hits: torch.Tensor, n_truth: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """Per-user precision, recall, f1, hit, ndcg, map, mrr at k: each [U] float64."""
    h = hits[:, :k]
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = h.cumsum(1)
    n_hit = cum_hits[:, -1]
    precision = n_hit / k
    recall = n_hit / n_truth
    ideal_cum = torch.cat([torch.zeros(1, dtype=torch.float64), discount.cumsum(0)])
    return {
        "precision": precision,
        "recall": recall,
        "f1": torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0),
        "hit": (n_hit > 0).double(),
        "ndcg": (h * discount).sum(1) / ideal_cum[torch.clamp(n_truth, max=k).long()],
        "map": (h * cum_hits / ranks).sum(1) / torch.clamp(n_truth, max=k),
        "mrr": torch.where(h.any(1), 1.0 / (h.argmax(1).double() + 1), 0.0),
    }


def _evaluated_hits(topk, truth):
    """(topk of users with truth, their hits [U', K] float64, |T| [U'], keep mask [U], truth CSR)."""
    topk = torch.as_tensor(np.asarray(topk) if not torch.is_tensor(topk) else topk).to("cpu", torch.int64)
    if topk.dim() != 2:
        raise ValueError(f"topk must be a [U, K] matrix, got shape {tuple(topk.shape)}")
    truth_csr = truth_to_csr(truth)
    if truth_csr.shape[0] != topk.shape[0]:
        raise ValueError(f"topk has {topk.shape[0]} users but truth has {truth_csr.shape[0]}")
    n_truth = torch.from_numpy(np.diff(truth_csr.indptr).astype(np.float64))
    keep = n_truth > 0
    hits = hit_matrix(topk[keep], truth_csr[keep.numpy()]).double()
    return topk[keep], hits, n_truth[keep], keep, truth_csr


def evaluate_topk(
    topk,
    truth: Sequence[Sequence[int]] | sp.spmatrix,
    ks: Sequence[int] = DEFAULT_KS,
    n_items: int | None = None,
    item_popularity: np.ndarray | None = None,
    n_popularity_users: int | None = None,
) -> dict[str, float]:
    """Every SPEC section 3 metric for each k in `ks`.

    topk: [U, K] item indices, best first, −1 pads; truth: U sequences of item indices (or a CSR).
    item_popularity: [n_items] count of users per item in the training data, for novelty
    (n_popularity_users: the user count it was measured on; default U).
    Returns keys like "precision@10", plus n_users_evaluated and n_users_skipped.
    """
    topk, hits, n_truth, keep, truth_csr = _evaluated_hits(topk, truth)
    if n_items is None:
        n_items = max(int(topk.max().item()) + 1 if topk.numel() else 0, truth_csr.shape[1])
    out: dict[str, float] = {
        "n_users_evaluated": float(keep.sum().item()),
        "n_users_skipped": float((~keep).sum().item()),
    }
    if not keep.any():
        return out
    n_pop_users = n_popularity_users if n_popularity_users is not None else len(keep)
    for k in ks:
        if k > topk.shape[1]:
            raise ValueError(f"k={k} is larger than the {topk.shape[1]} columns of topk")
        for name, values in _user_metrics_at_k(hits, n_truth, k).items():
            out[f"{name}@{k}"] = values.mean().item()
        out.update(_set_metrics(topk, k, int(n_items), item_popularity, n_pop_users))
    return out


def per_user_metric(topk, truth, metric: str, k: int) -> np.ndarray:
    """One metric per evaluated user (for paired significance tests): [U_eval] float64."""
    _, hits, n_truth, _, _ = _evaluated_hits(topk, truth)
    values = _user_metrics_at_k(hits, n_truth, k)
    if metric not in values:
        raise ValueError(f"per-user metric {metric!r} is not one of {sorted(values)}")
    return values[metric].numpy()


def precision_at_user_k(
    scores: torch.Tensor, exclude: torch.Tensor, truth: torch.Tensor, k: int, tie_rank: torch.Tensor
) -> torch.Tensor:
    """precision: [B] float64 at k_u = min(k, |truth(u)|) for scores [B, I]; NaN where truth(u) is empty.

    exclude, truth: bool [B, I] (train courses never recommended; test courses relevant); equal scores
    are ordered by tie_rank [I] (lower first), so the result does not depend on sort internals.
    """
    top = torch.topk(ranking_keys(scores, tie_rank).masked_fill(exclude, torch.iinfo(torch.int64).min),
                     min(k, scores.shape[1]), dim=1).indices
    hits = truth.gather(1, top)
    k_u = truth.sum(1).clamp(max=k)
    within = torch.arange(top.shape[1], device=top.device)[None, :] < k_u[:, None]
    return (hits & within).sum(1).double() / k_u.double()


def random_precision(train: sp.csr_matrix, test: sp.csr_matrix, k: int) -> float:
    """Expected precision@k_u of a uniformly random ranking of each user's unseen courses (mean over users).

    A random top-k_u of the C_u candidates holds on average k_u |test(u)| / C_u test courses.
    """
    n_test = np.diff(test.indptr)
    candidates = train.shape[1] - np.diff(train.indptr)
    users = n_test > 0
    return float(np.mean(n_test[users] / candidates[users])) if users.any() else float("nan")
