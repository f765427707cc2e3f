"""From a score row to the served list, with the propensity of each position (for off-policy evaluation).

Epsilon exploration per position: each of the k slots is, with probability 1 - epsilon, the best
remaining item of the ranking and, with probability epsilon, an item drawn uniformly from the
eligible items not yet in the list. The propensity logged for slot j is the probability that the
policy puts that item there given the slots before it:

    p_j = (1 - epsilon) * [item is the best remaining] + epsilon / (eligible items left at slot j)

so the probability of the whole list is the product of its p_j. With epsilon = 0 (the default) every
model's ranking is deterministic given the state, and every propensity is 1.0. LinUCB's exploration
is deterministic too (an upper confidence bound), so its lists also have propensity 1.0 unless
epsilon is set.
"""

from __future__ import annotations

import numpy as np
import torch

from deeprec.ranking import topk_with_pads

RANDOM_TRIES = 32  # rejection draws before the eligible items are listed explicitly


def choose(scores: torch.Tensor, k: int, epsilon: float, rng: np.random.Generator,
           order: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(items [n] int64, propensities [n] float64) for scores [I] where -inf marks an ineligible item; n <= k.
    order: [I] a fixed ranking of all items to follow instead of sorting scores (the popularity
    fallback's, whose ties deeprec-score breaks by item index)."""
    eligible = torch.isfinite(scores)
    n_eligible = int(eligible.sum())
    n = min(int(k), n_eligible)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    if epsilon == 0.0:
        return ranked(scores, n, order).numpy(), np.ones(n)
    greedy = ranked(scores, min(2 * n, n_eligible), order).tolist()  # at most n greedy picks + n skipped
    eligible_np = eligible.numpy()
    items, propensities, taken, g = [], [], set(), 0
    for slot in range(n):  # a loop over the k positions of one list
        while greedy[g] in taken:
            g += 1
        best = greedy[g]
        item = random_eligible(eligible_np, taken, rng) if rng.random() < epsilon else best
        remaining = n_eligible - slot
        propensities.append((1.0 - epsilon) * (item == best) + epsilon / remaining)
        items.append(item)
        taken.add(item)
    return np.asarray(items, np.int64), np.asarray(propensities)


def ranked(scores: torch.Tensor, k: int, order: torch.Tensor | None = None) -> torch.Tensor:
    """The k best eligible items of scores [I], best first (the shared ranking primitive, pads dropped);
    with order [I]: its first k eligible items."""
    if order is not None:
        return order[torch.isfinite(scores[order])][:k]
    _, items = topk_with_pads(scores.unsqueeze(0), k)
    return items[0][items[0] >= 0]


def random_eligible(eligible: np.ndarray, taken: set, rng: np.random.Generator) -> int:
    """A uniform draw among the eligible items not in `taken` (rejection first, then the explicit list)."""
    for _ in range(RANDOM_TRIES):
        item = int(rng.integers(len(eligible)))
        if eligible[item] and item not in taken:
            return item
    pool = np.flatnonzero(eligible)
    pool = pool[~np.isin(pool, np.fromiter(taken, np.int64, len(taken)))]
    return int(pool[rng.integers(len(pool))])
