"""Per-user splits into train / valid / test, vectorised with groupby ranks (no loop over users)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from deeprec.errors import ConfigError


STRATEGIES = ("temporal", "leave_last_k", "random")


@dataclass
class SplitConfig:
    """How interactions without a given `split` column are divided.

    strategy: temporal (SPEC 1.9 per user, then the last train items go to valid),
    leave_last_k (last k items test, the k before valid), random (per-user random hold-out).
    """

    strategy: str = "temporal"
    train_share: float = 0.7
    valid_share: float = 0.1
    k: int = 1
    seed: int = 0

    def __post_init__(self) -> None:  # checked when the config is validated, before any data is read
        check_strategy(self.strategy)


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"split.strategy={strategy!r} is not valid; choose temporal, leave_last_k or random")


def temporal_train_count(n: np.ndarray, train_share: float = 0.7) -> np.ndarray:
    """SPEC 1.9: n_train = min(max(floor(share * n), 1), n - 1) (3 items -> 2 train + 1 test)."""
    n = np.asarray(n)
    return np.minimum(np.maximum(np.floor(train_share * n + 1e-9).astype(np.int64), 1), n - 1)


def _order_within_user(frame: pd.DataFrame, by_time: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Position of each row within its user's history (0-based) and the user's row count."""
    if by_time:
        key = frame["timestamp"].to_numpy()
    else:
        key = np.random.default_rng(seed).random(len(frame))
    order = pd.DataFrame({"user": frame["user"].to_numpy(), "key": key, "pos": np.arange(len(frame))})
    order = order.sort_values(["user", "key", "pos"], kind="stable")
    rank = np.empty(len(frame), np.int64)
    rank[order["pos"].to_numpy()] = order.groupby("user", sort=False).cumcount().to_numpy()
    count = frame.groupby("user")["user"].transform("size").to_numpy()
    return rank, count


def assign_splits(frame: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """A split label for every row of `frame` (columns user, item, timestamp)."""
    check_strategy(cfg.strategy)
    by_time = cfg.strategy != "random"
    if by_time and frame["timestamp"].isna().all():
        raise ConfigError(
            f"split.strategy={cfg.strategy} needs timestamps but the data has none; use split.strategy=random"
        )
    rank, n = _order_within_user(frame, by_time, cfg.seed)
    if cfg.strategy == "leave_last_k":
        n_test = np.where(n > cfg.k, cfg.k, 0)
        n_valid = np.where(n > 2 * cfg.k, cfg.k, 0)
        n_train = n - n_test - n_valid
    else:
        n_train_all = np.where(n >= 2, temporal_train_count(n, cfg.train_share), n)
        n_valid = np.where(n_train_all >= 2, np.maximum(np.floor(cfg.valid_share * n_train_all), 1), 0)
        n_valid = np.where(cfg.valid_share > 0, n_valid, 0).astype(np.int64)
        n_train = n_train_all - n_valid
    split = np.where(rank < n_train, "train", np.where(rank < n_train + n_valid, "valid", "test"))
    return pd.Series(split, index=frame.index, name="split")
