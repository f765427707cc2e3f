"""Full-ranking evaluation of any Recommender: its users ranked in chunks on the model's device by
the shared primitive (deeprec.ranking: mask the items of earlier splits, torch.topk), then the shared
metrics, overall and per user segment. No Python loop over users, only over chunks (and segments)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from deeprec.evaluation.metrics import DEFAULT_KS, evaluate_topk
from deeprec.evaluation.segments import user_segments
from deeprec.ranking import full_ranking_topk

SEGMENT_PREFIX = "segment/"


def diversity_vectors(data) -> np.ndarray:
    """[n_items, d] item vectors intra-list diversity is measured on, the same for every model: the
    data's item features (each column min-max scaled to 0..1), else item factors of the train split."""
    cached = data.extras.get("diversity_vectors")
    if cached is not None:
        return cached
    from deeprec.data.features import item_factors

    frame = data.item_features
    if frame is not None and frame.shape[1]:
        values = frame.to_numpy(np.float64)
        low, span = values.min(0), values.max(0) - values.min(0)
        vectors = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)
    else:
        vectors = item_factors(data, 32)
    data.extras["diversity_vectors"] = vectors
    return vectors


def evaluate_recommender(
    recommender,
    data,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    return_topk: bool = False,
    segments: str = "none",
):
    """Shared evaluation of any Recommender on `split` of InteractionData (SPEC section 3).

    Items of earlier splits are excluded (train for valid; train and valid for test); users with
    no item in `split` are skipped and counted. A recommender with `observe(data, splits)` (sequence
    and history models) is first conditioned on those same earlier splits, its known history.
    Beside SPEC 3's metrics: ild@k (deeprec.evaluation.metrics) and, when items have a difficulty,
    adaptivity@k; with `segments` (auto | ability | history, deeprec.evaluation.segments) every
    metric again per segment as `segment/<name>/<metric>`, with `segment/<name>/n_users`.
    """
    from deeprec.data.features import item_difficulty

    truth = data.truth(split)
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    known = data.matrix(data.earlier_splits(split), binary=True)
    recommender.observe(data, data.earlier_splits(split))
    _, items = full_ranking_topk(
        recommender.score, users, max(ks), exclude=known, batch_size=batch_size, device=recommender.device
    )
    train_users = data.matrix("train", binary=True)
    common = dict(
        ks=ks,
        n_items=data.n_items,
        item_popularity=data.item_popularity("train"),
        n_popularity_users=int((np.diff(train_users.indptr) > 0).sum()),
        item_vectors=diversity_vectors(data),
        item_difficulty=item_difficulty(data),
    )
    metrics = evaluate_topk(items, truth[users], known=known[users], **common)
    metrics["n_users_skipped"] = float(data.n_users - len(users))
    table = user_segments(data, segments)
    if table is not None:
        labels = table["segment"].to_numpy()[users]
        for name in np.unique(labels):  # a loop over a handful of segments, not users
            rows = np.flatnonzero(labels == name)
            part = evaluate_topk(items[rows], truth[users[rows]], known=known[users[rows]], **common)
            metrics[f"{SEGMENT_PREFIX}{name}/n_users"] = float(len(rows))
            metrics.update({f"{SEGMENT_PREFIX}{name}/{k}": v for k, v in part.items() if "@" in k})
    if return_topk:
        return metrics, users, items
    return metrics
