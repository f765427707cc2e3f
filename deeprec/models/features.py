"""Side-feature input shared by the deep models: the data's item and user features (encoded by
deeprec.data.features), standardised and projected into a model's vector space.

One module serves every model that reads features (ncf, lstm, attention): `FeatureInput` holds the
standardised values as a buffer (so checkpoints are self-contained) and a linear projection; the
`SideFeatures` mixin registers one per side and puts their widths in init_args. A projection of a
one-hot block is an embedding of the category, so categorical columns are embedded this way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deeprec.errors import DataError


def standardised_values(frame, use: bool = True) -> torch.Tensor | None:
    """A feature frame [N, F] as z-scores float32 (constant columns become 0), or None (no frame,
    no column, or use=False). NaN or infinite values are a DataError naming the column."""
    if not use or frame is None or frame.shape[1] == 0:
        return None
    values = frame.to_numpy(np.float32)
    if not np.isfinite(values).all():
        bad = frame.columns[~np.isfinite(values).all(axis=0)][0]
        raise DataError(f"feature column {bad!r} holds NaN or infinite values; fill or drop it")
    std = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return torch.from_numpy(values.astype(np.float32))


class FeatureInput(nn.Module):
    """values [N, F] (standardised features of N items or users) and a projection F -> dim.

    forward(rows [B] | None) -> [B or N, dim], or None when there are no features (F = 0)."""

    def __init__(self, n_rows: int, n_features: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("values", torch.zeros(n_rows, n_features))
        self.projection = nn.Linear(n_features, dim) if n_features else None

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def load(self, frame, use: bool = True) -> torch.Tensor | None:
        """Hold the standardised `frame` (a new projection when its width changes); returns the values or None."""
        values = standardised_values(frame, use)
        width = 0 if values is None else values.shape[1]
        if width != self.n_features:
            device = self.values.device
            self.values = torch.zeros(len(self.values), width, device=device)
            self.projection = nn.Linear(width, self.dim).to(device) if width else None
        if values is not None:
            if len(values) != len(self.values):
                raise DataError(f"feature table has {len(values)} rows; the model was built for {len(self.values)}")
            self.values.copy_(values)
        return values

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        if self.projection is None:
            return None
        values = self.values if rows is None else self.values[rows.to(self.values.device)]
        return self.projection(values)


class SideFeatures:
    """Mixin for nn.Modules: `item_content` and `user_content` FeatureInputs of one width `dim`.

    The widths are constructor arguments (n_features for items, n_user_features for users) and so
    part of init_args; prepare_side_features(data) loads the data's tables before training."""

    def register_side_features(self, n_users: int, n_items: int, n_features: int, n_user_features: int, dim: int) -> None:
        self.item_content = FeatureInput(n_items, n_features, dim)
        self.user_content = FeatureInput(n_users, n_user_features, dim)

    @property
    def n_features(self) -> int:
        return self.item_content.n_features

    @property
    def n_user_features(self) -> int:
        return self.user_content.n_features

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), "n_features": self.n_features, "n_user_features": self.n_user_features}

    def prepare_side_features(self, data, use_items: bool, use_users: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Load data.item_features / data.user_features (when used); returns both standardised tables or None."""
        items = self.item_content.load(data.item_features, use_items)
        users = self.user_content.load(data.user_features, use_users)
        return items, users

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor | None:
        """[B, dim] projected features of users [B], or None without user features."""
        return self.user_content(users)
