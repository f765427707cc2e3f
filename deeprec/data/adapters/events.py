"""`data=events data.path=LOG`: an event log (SPEC 1.1) rated by SPEC section 1, ready for training.

item = course, rating = the 0..5 rating, timestamp = first_seen, split = the ratings' temporal
split (SPEC 1.9). So deep models can early-stop, the last `valid_share` of each user's train
courses (by first_seen, the same temporal rule) become `valid`; valid_share=0 keeps none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from deeprec.data.intake import explain_no_ratings
from deeprec.data.interactions import InteractionData, from_frame
from deeprec.data.ratings import RatingsConfig, RatingsResult, rate_log
from deeprec.data.splits import SplitConfig, assign_splits
from deeprec.errors import ConfigError, DataError


@dataclass
class EventsDataConfig:
    name: str = "events"
    path: str = "???"
    valid_share: float = 0.1  # share of each user's train courses (the latest) moved to valid
    engine: str = "pandas"  # the ratings engine: pandas | spark (data.engine=spark sets data.ratings.engine)
    ratings: RatingsConfig = field(default_factory=RatingsConfig)


CONFIG = EventsDataConfig


def carve_valid(frame: pd.DataFrame, valid_share: float) -> np.ndarray:
    """split: [N] with the latest train items of each user relabelled valid (SPEC 1.9 rule on train)."""
    split = frame["split"].to_numpy().copy()
    if valid_share <= 0:
        return split
    train = frame[split == "train"]
    rule = SplitConfig(strategy="temporal", train_share=1.0 - valid_share, valid_share=0.0)
    later = assign_splits(train, rule).to_numpy() == "test"
    split[np.flatnonzero(split == "train")[later]] = "valid"
    return split


def ratings_to_interactions(result: RatingsResult, name: str = "events", valid_share: float = 0.1) -> InteractionData:
    """InteractionData (course items, 0..5 ratings, train/valid/test) from a RatingsResult."""
    if not 0 <= valid_share < 1:
        raise ConfigError(f"data.valid_share={valid_share} must be in [0, 1)")
    ratings = result.ratings
    source = result.summary.get("source", name)
    if len(ratings) == 0:
        raise DataError(explain_no_ratings(result.summary, prefix="data.ratings."))
    table = pd.DataFrame(
        {
            "user_id": ratings["user_id"].to_numpy(),
            "item_id": ratings["course_id"].to_numpy(),
            "rating": ratings["rating"].to_numpy(np.float32),
            "timestamp": ratings["first_seen"].to_numpy(np.float64),
        }
    )
    data = from_frame(table, source, name=name)
    data.frame["split"] = ratings["split"].to_numpy()
    data.frame["split"] = carve_valid(data.frame, valid_share)
    data.extras["rejects"] = result.rejects
    data.extras["rows_in"] = result.summary["rows_in"]
    data.extras["ratings_summary"] = result.summary
    data.extras["source"] = source
    return data


def rate(cfg: EventsDataConfig) -> RatingsResult:
    """SPEC 1.1-1.10 on the log at data.path."""
    if cfg.path in ("???", "", None):
        raise DataError("data=events needs data.path=LOG (a CSV/Parquet event log: user_id, timestamp, url or course_id+lesson_id)")
    return rate_log(cfg.path, cfg.ratings)


def load(cfg: EventsDataConfig) -> InteractionData:
    return ratings_to_interactions(rate(cfg), cfg.name, cfg.valid_share)
