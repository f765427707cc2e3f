"""Content cold start for deeprec-score (`fallback=content`): users with no history are served from
their features, fitted at scoring time from what every checkpoint carries (its `seen` matrix and the
data's encoded user and item features).

- A user with a feature row (a known user without seen items, or an unknown id found in the
  `user_features=` table, encoded with the checkpoint's spec): ridge regression from standardised
  user features to the seen matrix over the users with history, W = (UᵀU + λI)⁻¹ UᵀX, so
  score(u, j) = u·W_j: the items that learners with similar features took.
- Without a feature row, where the items have features: the items closest (cosine over min-max
  scaled item features) to the mean profile of everything taken, so items nobody took yet can
  still be recommended.
- Otherwise: popularity (the same list as fallback=popularity).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.data.features import HAS_FEATURES, apply_spec, combine, read_feature_table
from deeprec.ranking import topk_with_pads


def features_of(meta: dict, side: str) -> tuple[np.ndarray | None, list[str]]:
    """([rows, F] float32 | None, column names) of a checkpoint's encoded user or item features."""
    values = meta.get(f"{side}_features")
    if values is None:
        return None, []
    return torch.as_tensor(values).float().numpy(), list(meta.get(f"{side}_feature_columns", []))


def encode_users(path: str, ids: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """(features [P, F], found [P] bool) of user ids from a user_features= table, encoded with the
    checkpoint's spec and columns; ids not in the table are not found."""
    specs = meta.get("user_feature_spec") or []
    columns = list(meta.get("user_feature_columns", []))
    table = read_feature_table(path, "user_id")
    table = table.assign(user_id=table["user_id"].astype(str).str.strip()).drop_duplicates("user_id")
    rows = table.set_index("user_id").reindex(pd.Index(np.asarray(ids).astype(str)))
    found = rows.notna().any(axis=1).to_numpy() if rows.shape[1] else np.zeros(len(ids), bool)
    frame = None
    for entry in specs:
        frame = combine(frame, apply_spec(rows.reset_index(drop=True), entry["spec"]))
    if frame is None:
        return np.zeros((len(ids), len(columns)), np.float32), np.zeros(len(ids), bool)
    frame[HAS_FEATURES] = found.astype(np.float32)
    return frame.reindex(columns=columns, fill_value=0.0).to_numpy(np.float32), found


class ContentFallback:
    """Scores [P, n_items] for users without history, from their features or the item features."""

    def __init__(self, seen: sp.csr_matrix, user_features: np.ndarray | None, item_features: np.ndarray | None,
                 lam: float = 1.0) -> None:
        self.seen = sp.csr_matrix(seen, dtype=np.float64)
        self.popularity = np.asarray((self.seen > 0).sum(0), np.float64).ravel()
        self.weights = self.mean = self.scale = None
        active = np.diff(self.seen.indptr) > 0
        if user_features is not None and user_features.shape[1] and active.any():
            u = np.asarray(user_features, np.float64)[active]
            self.mean, std = u.mean(0), u.std(0)
            self.scale = np.where(std > 0, std, 1.0)
            z = (u - self.mean) / self.scale
            gram = z.T @ z + lam * len(z) * np.eye(z.shape[1]) / max(z.shape[1], 1)
            self.weights = np.linalg.solve(gram, (self.seen[active].T @ z).T)  # [F, I]
            self.item_mean = np.asarray(self.seen[active].mean(0)).ravel()
        self.profile = None
        if item_features is not None and item_features.shape[1]:
            x = np.asarray(item_features, np.float64)
            low, span = x.min(0), x.max(0) - x.min(0)
            x = np.where(span > 0, (x - low) / np.where(span > 0, span, 1.0), 0.0)
            centre = (self.popularity @ x) / max(self.popularity.sum(), 1.0)
            norms = np.linalg.norm(x, axis=1) * max(np.linalg.norm(centre), 1e-12)
            self.profile = np.where(norms > 0, x @ centre / np.where(norms > 0, norms, 1.0), 0.0)

    @property
    def uses_user_features(self) -> bool:
        return self.weights is not None

    def scores(self, features: np.ndarray | None, has_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores [P, I] float32, kind [P]: "user_features" | "item_features" | "popularity")."""
        n = len(has_row)
        out = np.broadcast_to(self.popularity, (n, len(self.popularity))).astype(np.float32).copy()
        kind = np.full(n, "popularity", dtype=object)
        if self.profile is not None:
            # similarity to the profile, popularity breaking ties (items nobody took still rank by content)
            base = self.profile + 1e-6 * self.popularity / max(self.popularity.max(), 1.0)
            out[:] = base.astype(np.float32)
            kind[:] = "item_features"
        if self.uses_user_features and features is not None:
            rows = np.flatnonzero(has_row)
            if len(rows):
                z = (np.asarray(features[rows], np.float64) - self.mean) / self.scale
                out[rows] = (self.item_mean + z @ self.weights).astype(np.float32)
                kind[rows] = "user_features"
        return out, kind


def fallback_lists(cfg, meta: dict, targets, rows: np.ndarray, columns: np.ndarray | None,
                   content) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values [R, k], items [R, k], kind [R]) of the fallback for target rows `rows` (users without history)."""
    user_features, _ = features_of(meta, "user")
    n_features = 0 if user_features is None else user_features.shape[1]
    features = np.zeros((len(rows), n_features), np.float32)
    has_row = np.zeros(len(rows), bool)
    index = targets.index[rows]
    known = index >= 0
    if user_features is not None:
        columns_names = list(meta.get("user_feature_columns", []))
        flag = columns_names.index("has_features") if "has_features" in columns_names else None
        features[known] = user_features[index[known]]
        has_row[known] = True if flag is None else user_features[index[known], flag] > 0
        if cfg.user_features and (~known).any():
            encoded, found = encode_users(cfg.user_features, targets.ids[rows][~known], meta)
            features[~known], has_row[~known] = encoded, found
    scores, kind = content.scores(features if n_features else None, has_row)
    scores = torch.from_numpy(scores if columns is None else scores[:, columns])
    values, items = topk_with_pads(scores, cfg.k)  # users without history have no seen item to exclude
    return values.numpy(), items.numpy(), kind
