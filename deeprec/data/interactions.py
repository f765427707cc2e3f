"""The canonical interactions table every model trains on, with stable id <-> index maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from deeprec.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass
class InteractionData:
    """Interactions as integer indices plus the maps back to the user's own ids.

    `frame` columns: user (int64 index), item (int64 index), rating (float32),
    timestamp (float64 epoch seconds, NaN when unknown), split ("train" | "valid" | "test").
    `item_features`: optional [n_items, F] float frame (content features, aligned to item index);
    `user_features`: optional [n_users, G] float frame (learner features, aligned to user index),
    both encoded by deeprec.data.features.
    """

    frame: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_features: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None
    name: str = "interactions"
    extras: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def rows(self, splits: str | tuple[str, ...]) -> pd.DataFrame:
        """The interactions of the given split(s)."""
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        return self.frame[self.frame["split"].isin(splits)]

    def matrix(self, splits: str | tuple[str, ...] = "train", binary: bool = False) -> sp.csr_matrix:
        """User x item CSR matrix of the given split(s): ratings, or 1.0 where binary."""
        rows = self.rows(splits)
        values = np.ones(len(rows), np.float32) if binary else rows["rating"].to_numpy(np.float32)
        m = sp.csr_matrix(
            (values, (rows["user"].to_numpy(), rows["item"].to_numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        return m

    def truth(self, split: str) -> sp.csr_matrix:
        """Binary [n_users, n_items] CSR of the items each user has in `split` (evaluation truth)."""
        return self.matrix(split, binary=True)

    def earlier_splits(self, split: str) -> tuple[str, ...]:
        """The splits whose items are excluded when ranking for `split` (SPEC section 3)."""
        return SPLITS[: SPLITS.index(split)]

    def sequences(self, splits: str | tuple[str, ...] = "train") -> list[np.ndarray]:
        """Each user's items of the given split(s) in time order (input order breaks ties)."""
        rows = self.rows(splits).sort_values(["user", "timestamp"], kind="stable")
        users = rows["user"].to_numpy()
        items = rows["item"].to_numpy()
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    def item_popularity(self, splits: str | tuple[str, ...] = "train") -> np.ndarray:
        """Number of distinct users who interacted with each item: [n_items] int64."""
        m = self.matrix(splits, binary=True)
        return np.asarray((m > 0).sum(axis=0)).ravel().astype(np.int64)


def from_frame(
    df: pd.DataFrame,
    source: str,
    item_features: pd.DataFrame | None = None,
    name: str = "interactions",
) -> InteractionData:
    """Build InteractionData from columns user_id, item_id[, rating][, timestamp][, split].

    Ids are kept as strings; indices follow the sorted order of the ids, so the same ids
    always get the same indices. Missing ratings are 1.0 (implicit feedback).
    `item_features`, if given, is indexed by item_id (as string).
    """
    for col in ("user_id", "item_id"):
        if col not in df.columns:
            raise DataError(f"{source}: required column '{col}' is missing (columns: {list(df.columns)})")
    if len(df) == 0:
        raise DataError(f"{source}: no interactions")
    user_str = df["user_id"].astype(str).to_numpy()
    item_str = df["item_id"].astype(str).to_numpy()
    user_ids, user_idx = np.unique(user_str, return_inverse=True)
    item_ids, item_idx = np.unique(item_str, return_inverse=True)
    frame = pd.DataFrame(
        {
            "user": user_idx.astype(np.int64),
            "item": item_idx.astype(np.int64),
            "rating": (df["rating"].to_numpy(np.float32) if "rating" in df else np.ones(len(df), np.float32)),
            "timestamp": (
                df["timestamp"].to_numpy(np.float64) if "timestamp" in df else np.full(len(df), np.nan)
            ),
        }
    )
    if "split" in df.columns:
        split = df["split"].astype(str).str.lower().to_numpy()
        bad = ~np.isin(split, SPLITS)
        if bad.any():
            raise DataError(
                f"{source}: column 'split' has value {split[bad][0]!r}; valid values are {list(SPLITS)}"
            )
        frame["split"] = split
    features = None
    if item_features is not None:
        features = item_features.copy()
        features.index = features.index.astype(str)
        features = features.reindex(item_ids).fillna(0.0).astype(np.float32)
        features.index = pd.RangeIndex(len(item_ids))
    return InteractionData(frame=frame, user_ids=user_ids, item_ids=item_ids, item_features=features, name=name)
