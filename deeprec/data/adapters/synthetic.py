"""`data=synthetic` (the embedded default): a generated MOOC log rated by SPEC section 1, with content features.

item = course, rating = the 0..5 rating inferred from the share of lessons viewed, split = SPEC 1.9
(+ the latest `valid_share` of each user's train courses as valid). item_features: the topic one-hot
(`topic=<name>`), `difficulty` (0..1) and `n_lessons` of each course, from the generator's catalogue.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deeprec.data.adapters.events import ratings_to_interactions
from deeprec.data.features import SideFeaturesConfig, attach_side_features
from deeprec.data.interactions import InteractionData
from deeprec.data.ratings import RatingsConfig, RatingsResult, rate_events
from deeprec.data.synthetic import SyntheticConfig, course_catalogue, generate_events
from deeprec.errors import ConfigError


@dataclass
class SyntheticDataConfig(SideFeaturesConfig):
    name: str = "synthetic"
    n_events: int = 300_000  # ~4k rated learners, 150 courses; deeprec-train model=ease in seconds
    valid_share: float = 0.1  # share of each user's train courses (the latest) moved to valid
    use_catalogue: bool = True  # lessons_in(c) from the generator's catalogue (SPEC 1.5), unless ratings.catalogue is set
    generator: SyntheticConfig = field(default_factory=SyntheticConfig)
    engine: str = "pandas"  # the ratings engine: pandas | spark (data.engine=spark sets data.ratings.engine)
    ratings: RatingsConfig = field(default_factory=RatingsConfig)


CONFIG = SyntheticDataConfig


def course_features(catalogue: pd.DataFrame, topics: list[str]) -> pd.DataFrame:
    """[n_courses, n_topics + 2] float32 indexed by course_id: topic one-hot, difficulty, n_lessons."""
    one_hot = pd.get_dummies(pd.Categorical(catalogue["topic"], categories=topics), prefix="topic", prefix_sep="=")
    features = one_hot.astype("float32")
    features["difficulty"] = catalogue["difficulty"].to_numpy("float32")
    features["n_lessons"] = catalogue["n_lessons"].to_numpy("float32")
    features.index = catalogue["course_id"].astype(str).to_numpy()
    return features


def rate(cfg: SyntheticDataConfig, catalogue: pd.DataFrame | None = None) -> RatingsResult:
    """SPEC 1.1-1.10 on the generated log; lessons_in(c) from the generator's catalogue (use_catalogue;
    `catalogue`: course_catalogue(cfg.generator) when the caller has it already)."""
    if cfg.n_events < 1:
        raise ConfigError(f"data.n_events={cfg.n_events} must be >= 1")
    generator = cfg.generator.check()
    events = generate_events(cfg.n_events, cfg=generator)
    ratings_cfg = cfg.ratings
    source = f"synthetic log ({cfg.n_events:,} events, seed {generator.seed})"
    with tempfile.TemporaryDirectory(prefix="deeprec-synthetic-") as scratch:
        if cfg.use_catalogue and not ratings_cfg.catalogue:
            table = Path(scratch) / "catalogue.parquet"
            catalogue = course_catalogue(generator) if catalogue is None else catalogue
            catalogue[["course_id", "n_lessons"]].to_parquet(table, index=False)
            ratings_cfg = dataclasses.replace(ratings_cfg, catalogue=str(table))
        return rate_events(events, ratings_cfg, source=source)


def load(cfg: SyntheticDataConfig) -> InteractionData:
    generator = cfg.generator.check()
    catalogue = course_catalogue(generator)  # built once: the ratings' lessons_in(c) and the item features
    data = ratings_to_interactions(rate(cfg, catalogue), cfg.name, cfg.valid_share)  # + the learner features of the log
    features = course_features(catalogue, generator.topic_labels())
    data.item_features = features.reindex(data.item_ids.astype(str)).reset_index(drop=True)
    data.extras["catalogue"] = catalogue
    return attach_side_features(data, cfg)
