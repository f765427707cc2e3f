"""The blend stage: each member's candidate scores normalised per user, then combined by weights
learned on the valid split.

Feature columns per candidate (CandidateFeatures): for every member `<m>:z` (its score as a z-score
over the user's candidates) and `<m>:rank` (1 / (rrf_k + rank), its reciprocal rank among them);
`head:z` (the LinUCB head's UCB, when the head is blended); `popularity:z` (log train popularity)
and `history` (log(1 + the user's known items)), which only the learned combiner reads.

Methods (`blend`):
- equal: the mean of the members' normalised scores (`normalisation` = z | rank).
- rrf: reciprocal rank fusion, equal weights on the `<m>:rank` columns (Cormack et al. 2009).
- lsq: non-negative least squares of the relevance labels on the normalised columns.
- ndcg: coordinate ascent on the weights for valid NDCG@10 itself, started from lsq.
- learned: a small MLP over every column, trained with Lightning on a listwise softmax loss
  (combiner.py), early-stopped on held-out valid users.
- single:<member>: one member alone (weight 1 on its z-score), which auto also tries, so a blend
  is only kept where it beats the best member on users it was not fitted on.
- auto: each of the above scored by 3-fold cross-validation over the valid users (fitted on two
  folds, NDCG@10 on the third); the best is refitted on all of them, and a blend is kept only when
  it beats the best member alone on the held-out users by a one-sided paired Wilcoxon test at 0.05
  (else that member alone). Without a valid split: equal weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import nnls

from deeprec.evaluation.metrics import hit_matrix, per_user_metric
from deeprec.evaluation.stats import paired_test
from deeprec.ranking import topk_with_pads

log = logging.getLogger("deeprec.hybrid")

BLENDS = ("auto", "equal", "rrf", "lsq", "ndcg", "learned")
NORMALISATIONS = ("z", "rank")
LINEAR_CANDIDATES = ("equal", "rrf", "lsq", "ndcg")
AUTO_FOLDS = 3  # auto: folds of the valid users (each method fitted on two, scored on the third)
AUTO_SIGNIFICANCE = 0.05  # auto: a blend must beat the best member alone at this one-sided level


# -- normalisation --------------------------------------------------------------------------------
def zscore(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """values [B, C] as z-scores over each row's valid entries (0 at pads and for constant rows)."""
    count = valid.sum(1, keepdim=True).clamp(min=1)
    filled = torch.where(valid, values, torch.zeros_like(values))
    mean = filled.sum(1, keepdim=True) / count
    centred = torch.where(valid, values - mean, torch.zeros_like(values))
    std = (centred.square().sum(1, keepdim=True) / count).sqrt()
    return torch.where(std > 1e-12, centred / std.clamp(min=1e-12), torch.zeros_like(centred))


def reciprocal_rank(values: torch.Tensor, valid: torch.Tensor, k: float = 60.0) -> torch.Tensor:
    """1 / (k + rank) with rank 1 for the highest valid value of each row [B, C] (0 at pads)."""
    masked = torch.where(valid, values, torch.full_like(values, -float("inf")))
    order = torch.argsort(masked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return torch.where(valid, 1.0 / (k + 1.0 + rank.to(values.dtype)), torch.zeros_like(values))


@dataclass
class CandidateFeatures:
    """What the blend sees for users [B]: candidates [B, C] (-1 pads), valid [B, C], features [B, C, F]."""

    users: torch.Tensor
    candidates: torch.Tensor
    valid: torch.Tensor
    features: torch.Tensor
    names: list[str]

    def column(self, name: str) -> int:
        return self.names.index(name)


def concat_features(parts: list[CandidateFeatures]) -> CandidateFeatures:
    """One CandidateFeatures from chunks (candidate widths padded to the widest)."""
    width = max(p.candidates.shape[1] for p in parts)

    def pad(t: torch.Tensor, value) -> torch.Tensor:
        extra = width - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, t.new_full(shape, value)], 1)

    return CandidateFeatures(
        users=torch.cat([p.users for p in parts]),
        candidates=torch.cat([pad(p.candidates, -1) for p in parts]),
        valid=torch.cat([pad(p.valid, False) for p in parts]),
        features=torch.cat([pad(p.features, 0.0) for p in parts]),
        names=parts[0].names,
    )


def labels_of(batch: CandidateFeatures, truth: sp.csr_matrix) -> torch.Tensor:
    """relevance [B, C] float32: 1 where the candidate is in the truth row of its user (truth [B, I])."""
    return (hit_matrix(batch.candidates, truth) & batch.valid).float()


def ndcg_at(scores: torch.Tensor, batch: CandidateFeatures, truth: sp.csr_matrix, k: int = 10) -> float:
    """Mean NDCG@k (the shared definition) of ranking each user's candidates by scores [B, C]."""
    values = ndcg_per_user(scores, batch, truth, k)
    return float(values[np.diff(truth.indptr) > 0].mean()) if (np.diff(truth.indptr) > 0).any() else 0.0


# -- blends ---------------------------------------------------------------------------------------
class Blend:
    """A learned combination of candidate features: __call__(features [B, C, F]) -> scores [B, C]."""

    method: str = ""

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def uses(self, column: int) -> bool:
        """Whether the blend reads feature column `column` (the others need not be computed)."""
        return True


class LinearBlend(Blend):
    """scores = features @ weights (weights [F], zero for the columns the method does not use)."""

    def __init__(self, weights: torch.Tensor, method: str) -> None:
        self.weights = weights.float()
        self.method = method

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weights.to(features.device, features.dtype)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"blend.weights": self.weights}

    def uses(self, column: int) -> bool:
        return bool(self.weights[column] != 0)


def member_columns(names: list[str], members: list[str], normalisation: str, with_head: bool) -> list[int]:
    """Indices of the columns a linear blend combines: each member's normalised score (+ the head's)."""
    wanted = [f"{m}:{normalisation}" for m in members] + (["head:z"] if with_head else [])
    return [names.index(w) for w in wanted if w in names]


def weights_on(columns: list[int], values, n_features: int) -> torch.Tensor:
    w = torch.zeros(n_features, dtype=torch.float32)
    w[torch.tensor(columns, dtype=torch.long)] = torch.as_tensor(np.asarray(values, np.float32))
    return w


def fit_lsq(batch: CandidateFeatures, labels: torch.Tensor, columns: list[int]) -> np.ndarray:
    """Non-negative weights of the columns from least squares of labels on [columns, 1] over valid candidates."""
    rows = batch.valid.reshape(-1)
    x = batch.features.reshape(-1, batch.features.shape[2])[rows][:, columns].double().numpy()
    y = labels.reshape(-1)[rows].double().numpy()
    design = np.hstack([x, np.ones((len(x), 1))])
    # the normal equations (columns x columns) keep memory small for millions of candidates
    gram, target = design.T @ design, design.T @ y
    root = np.linalg.cholesky(gram + 1e-9 * np.eye(len(gram)) * max(np.trace(gram), 1.0))
    weights, _ = nnls(root.T, np.linalg.solve(root, target))
    w = weights[:-1]
    return w / w.sum() if w.sum() > 0 else np.full(len(columns), 1.0 / len(columns))


def fit_ndcg(batch: CandidateFeatures, truth: sp.csr_matrix, columns: list[int], start: np.ndarray,
             rounds: int = 6) -> np.ndarray:
    """Coordinate ascent on valid NDCG@10: each weight in turn tries x0, x0.25, x0.5, x2, x4 (and 0 /
    a small value), keeping what raises NDCG; stops when a round changes nothing."""
    x = batch.features[:, :, columns]
    w = np.asarray(start, np.float64).copy()
    if w.sum() <= 0:
        w = np.full(len(columns), 1.0 / len(columns))

    def value(weights) -> float:
        return ndcg_at(x @ torch.as_tensor(weights, dtype=x.dtype), batch, truth)

    best = value(w)
    for _ in range(rounds):
        improved = False
        for j in range(len(w)):
            base = w[j] if w[j] > 0 else 0.05 * max(w.sum(), 1e-3)
            for factor in (0.0, 0.25, 0.5, 2.0, 4.0):
                trial = w.copy()
                trial[j] = base * factor
                if trial.sum() <= 0:
                    continue
                score = value(trial)
                if score > best + 1e-6:
                    best, w, improved = score, trial, True
        if not improved:
            break
    return w / w.sum()


def fit_linear(method: str, batch: CandidateFeatures, labels: torch.Tensor, truth: sp.csr_matrix,
               members: list[str], normalisation: str, with_head: bool) -> LinearBlend:
    """equal | rrf | lsq | ndcg weights on the member columns."""
    names = batch.names
    if method.startswith("single:"):
        columns = member_columns(names, [method.split(":", 1)[1]], "z", False)
        return LinearBlend(weights_on(columns, [1.0], len(names)), method)
    if method == "rrf":
        columns = member_columns(names, members, "rank", False)
        return LinearBlend(weights_on(columns, np.full(len(columns), 1.0 / len(columns)), len(names)), method)
    columns = member_columns(names, members, normalisation, with_head)
    if method == "equal":
        values = np.full(len(columns), 1.0 / len(columns))
    else:
        values = fit_lsq(batch, labels, columns)
        if method == "ndcg":
            values = fit_ndcg(batch, truth, columns, values)
    return LinearBlend(weights_on(columns, values, len(names)), method)


def split_users(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of n users, a seeded random `share` held out (at least one each)."""
    order = np.random.default_rng(seed).permutation(n)
    n_out = min(max(int(round(share * n)), 1), n - 1)
    return np.sort(order[n_out:]), np.sort(order[:n_out])


def subset(batch: CandidateFeatures, rows: np.ndarray) -> CandidateFeatures:
    index = torch.from_numpy(rows)
    return CandidateFeatures(batch.users[index], batch.candidates[index], batch.valid[index], batch.features[index], batch.names)


def fit_blend(method: str, batch: CandidateFeatures, truth: sp.csr_matrix, members: list[str], normalisation: str,
              with_head: bool, seed: int, combiner_cfg: dict) -> tuple[Blend, dict[str, float]]:
    """The blend `method` fitted on valid candidates (truth: [B, I] valid items of batch's users),
    and the held-out NDCG@10 of every method tried (auto)."""
    from deeprec.hybrid.combiner import fit_combiner

    labels = labels_of(batch, truth)

    def fit(name: str, part: CandidateFeatures, part_labels, part_truth) -> Blend:
        if name == "learned":
            return fit_combiner(part, part_labels, part_truth, seed, **combiner_cfg)
        return fit_linear(name, part, part_labels, part_truth, members, normalisation, with_head)

    if method != "auto":
        return fit(method, batch, labels, truth), {}
    if len(batch.users) < 10:  # too few valid users to compare methods: least squares
        return fit("lsq", batch, labels, truth), {}
    names = (*[f"single:{m}" for m in members], *LINEAR_CANDIDATES, "learned")
    held_scores = {name: np.zeros(len(batch.users)) for name in names}  # each valid user's NDCG when held out
    folds = np.random.default_rng(seed).permutation(len(batch.users)) % AUTO_FOLDS
    for fold in range(AUTO_FOLDS):
        fit_rows, held_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        fit_part, held = subset(batch, fit_rows), subset(batch, held_rows)
        for name in names:
            blend = fit(name, fit_part, labels[torch.from_numpy(fit_rows)], truth[fit_rows])
            held_scores[name][held_rows] = ndcg_per_user(blend(held.features), held, truth[held_rows])
    trials = {name: float(values.mean()) for name, values in held_scores.items()}
    winner = max(trials, key=lambda name: (trials[name], -names.index(name)))  # ties: the earlier (simpler) one
    best_single = max((n for n in names if n.startswith("single:")), key=lambda n: trials[n])
    if not winner.startswith("single:"):
        # a blend replaces the best member only when it is better on users it was not fitted on beyond noise
        p = paired_test(held_scores[winner], held_scores[best_single], alternative="greater")
        if p >= AUTO_SIGNIFICANCE:
            log.info("hybrid blend: %s (%.4f) is not significantly above %s (%.4f) on held-out valid users (p = %.2g)",
                     winner, trials[winner], best_single, trials[best_single], p)
            winner = best_single
    log.info("hybrid blend on valid (NDCG@10 of held-out valid users, %d folds): %s -> %s", AUTO_FOLDS,
             {k: round(v, 4) for k, v in trials.items()}, winner)
    return fit(winner, batch, labels, truth), trials


def ndcg_per_user(scores: torch.Tensor, batch: CandidateFeatures, truth: sp.csr_matrix, k: int = 10) -> np.ndarray:
    """NDCG@k [B] (the shared definition) of ranking each user's candidates by scores [B, C]."""
    masked = torch.where(batch.valid, scores, torch.full_like(scores, -float("inf")))
    _, top = topk_with_pads(masked, k)  # candidate positions [B, k], -1 past the valid ones
    items = torch.where(top >= 0, batch.candidates.gather(1, top.clamp(min=0)), -1)
    keep = np.diff(truth.indptr) > 0
    out = np.zeros(len(keep))
    out[keep] = per_user_metric(items[torch.from_numpy(keep)], truth[keep], "ndcg", k)
    return out
