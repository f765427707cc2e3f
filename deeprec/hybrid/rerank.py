"""The re-ranking stage: a LinUCB head on the blended candidates, rule terms, and MMR diversity.

- LinUCB head: one ridge model per user (deeprec.bandits.BatchedLinUCB, SPEC 2.4) over arm features
  made of the members' item embeddings (each member's block scaled to unit row norm, then reduced
  to `bandit_dim` by PCA), or item factors of the train split when no member has embeddings; fitted
  on the user's known items with the rating (over its maximum) as reward. Its UCB, mean plus
  `bandit_alpha` times the confidence width, puts exploration into the ranking itself.
- rules: a popularity penalty (log train popularity), freshness (the item's first train timestamp),
  both as per-user z-scores over the candidates; already-seen items filtered.
- diversity: maximal marginal relevance (Carbonell & Goldstein 1998) with lambda = 1 - diversity over
  item vectors (the data's item features, else the arm features): the greedy picks' marginal values
  are non-increasing, so they are the output scores and the ranking follows the MMR order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import normalize

from deeprec.bandits.linucb import BatchedLinUCB
from deeprec.hybrid.blend import zscore


def arm_features(embeddings: list[torch.Tensor], fallback: np.ndarray, dim: int, seed: int) -> torch.Tensor:
    """[I, <= dim] float32 arm features: the members' embeddings (unit rows, side by side) reduced by
    PCA to `dim`, or `fallback` (item factors) when no member has embeddings."""
    if not embeddings:
        return torch.as_tensor(fallback, dtype=torch.float32)[:, :dim]
    x = torch.cat([normalize(e.detach().cpu().double(), dim=1) for e in embeddings], 1)
    if x.shape[1] <= dim:
        return x.float()
    with torch.random.fork_rng(devices=[]):  # a seeded PCA that leaves the caller's CPU generator as it was
        torch.manual_seed(seed)
        centred = x - x.mean(0, keepdim=True)
        _, s, v = torch.pca_lowrank(centred, q=dim, center=False, niter=4)
    return (centred @ v[:, :dim]).float()


class LinUCBHead:
    """Per-user LinUCB over arm features X [I, d], scored only at candidate items."""

    def __init__(self, n_users: int, features: torch.Tensor, alpha: float, lam: float) -> None:
        self.features = features.float()  # float32: scoring is 5x faster than float64 and d is small
        self.alpha = float(alpha)
        self.bandit = BatchedLinUCB(n_users, features.shape[1], alpha=alpha, lam=lam, dtype=torch.float32)

    def fit(self, users: np.ndarray, items: np.ndarray, rewards: np.ndarray) -> "LinUCBHead":
        """Each user's ridge model from their known (user, item, reward) rows, from the prior."""
        x = self.features[torch.from_numpy(items.astype(np.int64))]
        self.bandit.fit(torch.from_numpy(users.astype(np.int64)), x, torch.from_numpy(rewards.astype(np.float32)))
        return self

    def to(self, device) -> "LinUCBHead":
        self.bandit.to(device)
        self.features = self.features.to(device)
        return self

    @torch.no_grad()
    def ucb_at(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """[B, C] float32: x_cᵀθ_u + alpha sqrt(x_cᵀ A_u⁻¹ x_c) at candidates [B, C] (pads: 0)."""
        device = self.bandit.device
        users = users.to(device)
        x = self.features[candidates.clamp(min=0).to(device)]  # [B, C, d]
        mean = torch.bmm(x, self.bandit.theta[users].unsqueeze(2)).squeeze(2)
        width = torch.einsum("bcd,bde,bce->bc", x, self.bandit.A_inv[users], x).clamp_(min=0).sqrt_()
        return mean.add_(width, alpha=self.alpha)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"head.features": self.features, **{f"head.{k}": v for k, v in self.bandit.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], n_users: int, alpha: float, lam: float) -> "LinUCBHead":
        head = cls(n_users, state["head.features"], alpha, lam)
        head.bandit.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.") and k != "head.features"})
        return head


def rule_scores(candidates: torch.Tensor, valid: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A per-item value [I] at candidates [B, C] as a per-user z-score over the valid candidates."""
    return zscore(values.to(candidates.device)[candidates.clamp(min=0)].float(), valid)


@torch.no_grad()
def mmr(relevance: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor, vectors: torch.Tensor,
        diversity: float, depth: int, pool: int | None = None) -> torch.Tensor:
    """Marginal relevance [B, C] of greedy MMR over each user's candidates: lambda * rel - (1 - lambda) *
    (max cosine similarity to the items picked so far, floored at 0), lambda = 1 - diversity, rel the
    relevance min-max scaled to 0..1 per user. The first `depth` picks get the value they were picked
    at, the others their value after the last pick; non-increasing along the MMR order. Pads: -inf.

    Only the `pool` most relevant candidates (default 4 x depth) enter the greedy loop: a candidate
    below them cannot be picked within `depth` steps unless diversity outweighs nearly all relevance.
    The rest keep their relevance order below the pool's lowest value."""
    lam = 1.0 - diversity
    low = torch.where(valid, relevance, torch.full_like(relevance, float("inf"))).min(1, keepdim=True).values
    high = torch.where(valid, relevance, torch.full_like(relevance, -float("inf"))).max(1, keepdim=True).values
    span = (high - low).clamp(min=1e-12)
    rel = torch.where(valid, (relevance - low) / span, torch.zeros_like(relevance))
    width = min(relevance.shape[1], pool or 4 * depth)
    _, top = torch.topk(torch.where(valid, rel, torch.full_like(rel, -1.0)), width, dim=1)
    pool_valid = valid.gather(1, top)
    pool_rel = rel.gather(1, top)
    unit = normalize(vectors.float(), dim=1).to(candidates.device)[candidates.gather(1, top).clamp(min=0)]  # [B, P, d]
    closest = torch.zeros_like(pool_rel)
    available = pool_valid.clone()
    picked = torch.full_like(pool_rel, -float("inf"))
    rows = torch.arange(len(rel), device=rel.device)
    gain = lam * pool_rel
    for _ in range(min(depth, width)):
        value = (gain - (1 - lam) * closest).masked_fill_(~available, -float("inf"))
        best, pick = value.max(1)
        live = torch.isfinite(best)
        if not bool(live.any()):
            break
        picked[rows[live], pick[live]] = best[live]
        available[rows[live], pick[live]] = False
        similarity = torch.bmm(unit, unit[rows, pick].unsqueeze(2)).squeeze(2).clamp_(min=0)
        closest = torch.where(live.unsqueeze(1), torch.maximum(closest, similarity), closest)
    pool_values = torch.where(available, gain - (1 - lam) * closest, picked).masked_fill_(~pool_valid, -float("inf"))
    floor = torch.where(pool_valid, pool_values, torch.full_like(pool_values, float("inf"))).min(1, keepdim=True).values
    out = floor - 1.0 + rel - 1.0  # below the pool, in relevance order (rel <= 1)
    out.scatter_(1, top, pool_values)
    return out.masked_fill_(~valid, -float("inf"))
