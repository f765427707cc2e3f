"""Full-ranking evaluation of any Recommender: its users ranked in chunks on the model's device by
the shared primitive (deeprec.ranking: mask the items of earlier splits, torch.topk), then the shared
metrics. No Python loop over users, only over chunks."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from deeprec.evaluation.metrics import DEFAULT_KS, evaluate_topk
from deeprec.ranking import full_ranking_topk


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
