"""`data=interactions`: any table user_id, item_id[, rating][, timestamp][, split] a user brings.

A `split` column (train / valid / test) is used exactly as given, so results compare with other
libraries on identical splits; otherwise `split.*` decides. Bad rows go to `data.rejects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from deeprec.data.interactions import InteractionData, from_frame
from deeprec.data.ratings.events import BAD_TS, parse_timestamps_us
from deeprec.data.splits import SplitConfig, assign_splits
from deeprec.data.tables import read_tables
from deeprec.errors import DataError



@dataclass
class InteractionsDataConfig:
    name: str = "interactions"
    path: str = "???"
    min_rating: float | None = None  # keep only rows with rating >= this (e.g. 4 on MovieLens)
    rating_range: list[float] = field(default_factory=lambda: [0.0, 5.0])
    split: SplitConfig = field(default_factory=SplitConfig)


def parse_timestamps(values: pd.Series) -> np.ndarray:
    """Epoch seconds (float64, NaN where unparseable) per value: a number (ms when > 1e11, else s)
    or ISO-8601 text (an offset is honoured, a naive time is UTC) - the ratings pipeline's parser."""
    us = parse_timestamps_us(values, "auto")
    return np.where(us == BAD_TS, np.nan, us / 1e6)


def clean_interactions(df: pd.DataFrame, source: str, rating_range=(0.0, 5.0)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows, rejects with a `reason`): missing ids, bad ratings or timestamps, duplicates,
    and repeated pairs.

    A `duplicate` repeats user, item, rating, timestamp and split exactly. A `repeated_pair` is an earlier
    row of a (user, item) pair (in the same split, when there is a split column): the latest row
    counts (by timestamp, then the order of the file), as a re-rating replaces a rating; so no pair
    is ever counted twice and no rating leaves the range.
    """
    reason = pd.Series(pd.NA, index=df.index, dtype="object")
    for col in ("user_id", "item_id"):
        ids = df[col].astype("string").str.strip()
        reason = reason.mask(reason.isna() & (ids.isna() | (ids == "")), f"missing_{col.split('_')[0]}")
    if "rating" in df.columns:
        rating = pd.to_numeric(df["rating"], errors="coerce")
        lo, hi = rating_range
        bad = rating.isna() | ~np.isfinite(rating) | (rating < lo) | (rating > hi)
        reason = reason.mask(reason.isna() & bad, "bad_rating")
    ts = parse_timestamps(df["timestamp"]) if "timestamp" in df.columns else np.full(len(df), np.nan)
    if "timestamp" in df.columns:
        reason = reason.mask(reason.isna() & np.isnan(ts), "bad_timestamp")
    key_cols = [c for c in ("user_id", "item_id", "rating", "timestamp", "split") if c in df.columns]
    dup = df.duplicated(subset=key_cols, keep="first")
    reason = reason.mask(reason.isna() & dup, "duplicate")
    reason = reason.mask(reason.isna() & earlier_rows_of_a_pair(df, ts, reason.isna().to_numpy()), "repeated_pair")
    rejects = df[reason.notna()].assign(reason=reason[reason.notna()])
    accepted = df[reason.isna()].copy()
    if "rating" in accepted.columns:
        accepted["rating"] = pd.to_numeric(accepted["rating"]).astype(np.float32)
    if "timestamp" in accepted.columns:
        accepted["timestamp"] = ts[reason.isna().to_numpy()]
    if len(accepted) == 0:
        raise DataError(f"{source}: no valid interaction (all {len(df)} rows rejected: {rejects['reason'].value_counts().to_dict()})")
    return accepted, rejects


def earlier_rows_of_a_pair(df: pd.DataFrame, ts: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[N] bool: valid rows of a (user, item[, split]) that a later valid row of the pair replaces
    (later: a larger timestamp, then further down the file)."""
    pair = [c for c in ("user_id", "item_id", "split") if c in df.columns]
    rows = np.flatnonzero(valid)
    keys = df.iloc[rows][pair].astype("string").reset_index(drop=True)
    order = np.lexsort((rows, np.nan_to_num(ts[rows], nan=-np.inf)))  # time, then file order
    replaced = keys.iloc[order].duplicated(keep="last").to_numpy()
    out = np.zeros(len(df), bool)
    out[rows[order[replaced]]] = True
    return out


def rating_span(df: pd.DataFrame) -> tuple[float, float] | None:
    """(min, max) of the numeric ratings in the input (rejected ones included), for the rating_range hint."""
    if "rating" not in df.columns:
        return None
    rating = pd.to_numeric(df["rating"], errors="coerce")
    rating = rating[np.isfinite(rating)]
    return (float(rating.min()), float(rating.max())) if len(rating) else None


def pairs_in_train_and_test(frame: pd.DataFrame) -> int:
    """Distinct (user, item) pairs with a test row and a train or valid row: their test truth can
    never be hit, since evaluation excludes the items of earlier splits."""
    key = frame["user"].to_numpy(np.int64) * (int(frame["item"].max()) + 1) + frame["item"].to_numpy(np.int64)
    is_test = frame["split"].to_numpy() == "test"
    return int(np.isin(np.unique(key[is_test]), key[~is_test]).sum())


def build(df: pd.DataFrame, cfg, source: str, name: str, item_features=None, min_rating=None) -> InteractionData:
    """Clean, filter, split and index a user_id/item_id table into InteractionData."""
    if len(df) == 0:
        raise DataError(f"{source}: no rows (a header but no interactions)")
    accepted, rejects = clean_interactions(df, source, tuple(cfg.rating_range))
    if min_rating is not None and "rating" in accepted.columns:
        low = accepted["rating"] < min_rating
        rejects = pd.concat([rejects, accepted[low].assign(reason="below_min_rating")])
        accepted = accepted[~low]
    data = from_frame(accepted, source, item_features=item_features, name=name)
    if "split" not in data.frame.columns:
        data.frame["split"] = assign_splits(data.frame, cfg.split).to_numpy()
    data.extras["rejects"] = rejects
    data.extras["rows_in"] = len(df)
    data.extras["source"] = source
    data.extras["rating_range"] = list(cfg.rating_range)
    data.extras["rating_span"] = rating_span(df)
    data.extras["pairs_in_train_and_test"] = pairs_in_train_and_test(data.frame)
    return data


CONFIG = InteractionsDataConfig


def load(cfg: InteractionsDataConfig) -> InteractionData:
    if cfg.path in ("???", "", None):
        raise DataError("data=interactions needs data.path=FILE (a CSV or Parquet table user_id,item_id[,rating][,timestamp][,split])")
    df = read_tables(cfg.path, dtype={"user_id": str, "item_id": str})
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise DataError(f"{cfg.path}: required column(s) {missing} missing; found {list(df.columns)}")
    return build(df, cfg, str(cfg.path), cfg.name, min_rating=cfg.min_rating)
