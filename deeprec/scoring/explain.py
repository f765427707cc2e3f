"""Explanations in deeprec-score's output (explain=true): per recommendation, the history items that
weighed most and their weights (Recommender.explain) and, for composite models, what each part of
the score added (Recommender.contributions); written as list and float columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from deeprec.errors import ConfigError


def list_array(values: np.ndarray, index: np.ndarray, pa_type) -> pa.Array:
    """A list column: row r holds values[index[r, c]] for every c with index[r, c] >= 0 (index [R, t])."""
    mask = index >= 0
    offsets = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    flat = np.asarray(values, dtype=object)[index[mask]] if pa_type == pa.string() else np.asarray(values)[mask]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa_type))


@torch.no_grad()
def explanations(model, users: np.ndarray, items: np.ndarray, top: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """For users [P] and their lists items [P, k] (checkpoint item indices, -1 pads): "because" [P, k, top],
    "because_weights" [P, k, top] (model.explain) and "contribution_<part>" [P, k] (model.contributions),
    both from one model.explain_with_contributions call per chunk of (user, item) rows."""
    p, k = items.shape
    because = np.full((p, k, top), -1, np.int64)
    weights = np.zeros((p, k, top), np.float32)
    parts: dict[str, np.ndarray] = {}
    flat_users, flat_items = np.repeat(users, k), items.reshape(-1)
    rows = np.flatnonzero(flat_items >= 0)
    step = max(1, batch_size)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        u = torch.from_numpy(flat_users[chunk]).to(device)
        j = torch.from_numpy(flat_items[chunk]).to(device)
        given, split = model.explain_with_contributions(u, j, top)
        if given is not None:
            because.reshape(-1, top)[chunk] = given[0].cpu().numpy()
            weights.reshape(-1, top)[chunk] = given[1].float().cpu().numpy()
        if split is not None:
            names, values = split
            for n, name in enumerate(names):
                parts.setdefault(f"contribution_{name}", np.full(p * k, np.nan, np.float32))[chunk] = values[:, n].float().cpu().numpy()
    return {"because": because, "because_weights": weights, **{n: v.reshape(p, k) for n, v in parts.items()}}


def check_explainable(model, meta: dict) -> None:
    """explain=true on a model that can say nothing (no explain, no contributions) is a one-line error."""
    users = torch.zeros(1, dtype=torch.int64)
    if model.explain(users, users, 1) is None and model.contributions(users, users) is None:
        raise ConfigError(f"explain=true: model {meta['model']!r} cannot explain its recommendations "
                          "(attention, hybrid, ease and itemknn can); use explain=false")
