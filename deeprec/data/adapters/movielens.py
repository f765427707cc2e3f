"""`data=movielens`: a MovieLens folder (ratings.csv userId,movieId,rating,timestamp; movies.csv for genres).

Default path ../shared/data/ml-latest-small. Rows with a missing id, a rating outside `rating_range`,
a bad timestamp or a repeated (user, movie, timestamp) go to data.extras["rejects"] with the reason;
`min_rating` keeps only ratings >= it (the rest are rejected as below_min_rating). Split: `split.*`
(temporal per user by default). item_features: genres multi-hot from movies.csv (`genre=<name>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from deeprec.data.adapters.interactions import build
from deeprec.data.adapters.shared_data import dataset_path
from deeprec.data.features import SideFeaturesConfig, attach_side_features
from deeprec.data.interactions import InteractionData
from deeprec.data.splits import SplitConfig
from deeprec.data.tables import read_table
from deeprec.errors import DataError

FOLDER = "ml-latest-small"
COLUMNS = {"userId": "user_id", "movieId": "item_id", "rating": "rating", "timestamp": "timestamp"}
NO_GENRE = "(no genres listed)"


@dataclass
class MovieLensDataConfig(SideFeaturesConfig):
    name: str = "movielens"
    path: str | None = None  # a MovieLens folder or its ratings.csv; default ../shared/data/ml-latest-small
    min_rating: float | None = None  # keep only ratings >= this (e.g. 4.0 for "liked")
    rating_range: list[float] = field(default_factory=lambda: [0.5, 5.0])
    genres: bool = True  # item_features = genres multi-hot from movies.csv beside ratings.csv
    split: SplitConfig = field(default_factory=SplitConfig)


CONFIG = MovieLensDataConfig


def genre_features(movies_csv: Path) -> pd.DataFrame:
    """[n_movies, n_genres] float32 multi-hot indexed by movieId (as text); no column for NO_GENRE."""
    movies = read_table(movies_csv, dtype={"movieId": str})
    missing = [c for c in ("movieId", "genres") if c not in movies.columns]
    if missing:
        raise DataError(f"{movies_csv}: required column(s) {missing} missing; found {list(movies.columns)}")
    one_hot = movies["genres"].fillna(NO_GENRE).str.get_dummies(sep="|")
    one_hot = one_hot.drop(columns=[NO_GENRE], errors="ignore").add_prefix("genre=").astype("float32")
    one_hot.index = movies["movieId"].astype(str).str.strip().to_numpy()
    return one_hot[~one_hot.index.duplicated()]


def load(cfg: MovieLensDataConfig) -> InteractionData:
    path = dataset_path(cfg.path, FOLDER, "movielens")
    ratings_csv = path / "ratings.csv" if path.is_dir() else path
    if not ratings_csv.is_file():
        raise DataError(f"{ratings_csv}: no MovieLens ratings file there (data.path= a folder with ratings.csv, or the file)")
    raw = read_table(ratings_csv, dtype={"userId": str, "movieId": str})
    missing = [c for c in ("userId", "movieId", "rating") if c not in raw.columns]
    if missing:
        raise DataError(f"{ratings_csv}: required column(s) {missing} missing; found {list(raw.columns)}")
    if len(raw) == 0:
        raise DataError(f"{ratings_csv}: no rows (a header but no ratings)")
    table = raw.rename(columns=COLUMNS)
    features = None
    movies_csv = ratings_csv.parent / "movies.csv"
    if cfg.genres and movies_csv.is_file():
        features = genre_features(movies_csv)
    data = build(table, cfg, str(ratings_csv), cfg.name, item_features=features, min_rating=cfg.min_rating)
    data.extras["rejects"] = data.extras["rejects"].rename(columns={v: k for k, v in COLUMNS.items()})
    return attach_side_features(data, cfg)
