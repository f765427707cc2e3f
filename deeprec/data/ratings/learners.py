"""Learner behaviour features from the log (seed 000 section 4.2): activity level, study frequency,
mean lesson duration and completion share per user, written beside the ratings (user_features.parquet).

Only each user's train courses (SPEC 1.9) count, so the features carry nothing of the test period:
- `train_courses`: courses in the user's train split;
- `activity_lessons`: lessons viewed in them (activity level); `lesson_views`: their views;
- `study_days`: distinct days (UTC) with a first lesson view; `study_frequency`: study days per week
  of the user's train span (first to last first view, at least one week);
- `mean_lesson_seconds`: mean time on a lesson (SPEC 1.4 durations);
- `completion_share`: mean share of a course viewed (SPEC 1.5 pct_viewed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

COLUMNS = ("user_id", "train_courses", "activity_lessons", "lesson_views", "study_days", "study_frequency",
           "mean_lesson_seconds", "completion_share")
DURATION_COLUMNS = ["user_id", "course_id", "seconds", "views", "first_seen"]
SECONDS_PER_DAY = 86_400.0


def _train_lessons(durations: pd.DataFrame, train_keys: pd.Index) -> pd.DataFrame:
    """The rows of `durations` whose (user, course) is a train pair, with the view's UTC day."""
    keys = pd.MultiIndex.from_arrays([durations["user_id"].astype(str), durations["course_id"].astype(str)])
    rows = durations[keys.isin(train_keys)]
    return pd.DataFrame({
        "user_id": rows["user_id"].astype(str).to_numpy(),
        "seconds": rows["seconds"].to_numpy(np.float64),
        "views": rows["views"].to_numpy(np.int64),
        "day": np.floor(rows["first_seen"].to_numpy(np.float64) / SECONDS_PER_DAY).astype(np.int64),
    })


def _duration_batches(lesson_durations: pd.DataFrame | str | Path, batch_rows: int):
    """The lesson durations in batches: the frame itself, or a Parquet file read batch by batch."""
    if isinstance(lesson_durations, pd.DataFrame):
        yield lesson_durations
        return
    reader = pq.ParquetFile(lesson_durations)
    for batch in reader.iter_batches(batch_size=batch_rows, columns=DURATION_COLUMNS):
        yield batch.to_pandas()


def learner_features(ratings: pd.DataFrame, lesson_durations: pd.DataFrame | str | Path,
                     batch_rows: int = 2_000_000) -> pd.DataFrame:
    """One row per rated user (COLUMNS) from the ratings and the lesson durations (a frame, or the
    Parquet file an out-of-core run keeps: read in batches, memory ~ batch_rows + users x days)."""
    train = ratings[ratings["split"] == "train"]
    train_keys = pd.MultiIndex.from_arrays([train["user_id"].astype(str), train["course_id"].astype(str)])
    per_user = pd.DataFrame({
        "train_courses": train.groupby("user_id", sort=True).size(),
        "completion_share": train.groupby("user_id", sort=True)["pct_viewed"].mean(),
    })
    per_user.index = per_user.index.astype(str)
    sums, days = [], []
    for batch in _duration_batches(lesson_durations, batch_rows):
        lessons = _train_lessons(batch, train_keys)
        sums.append(lessons.groupby("user_id").agg(activity_lessons=("seconds", "size"), seconds=("seconds", "sum"),
                                                   lesson_views=("views", "sum")))
        days.append(lessons[["user_id", "day"]].drop_duplicates())
    totals = (pd.concat(sums).groupby(level=0).sum() if sums
              else pd.DataFrame(columns=["activity_lessons", "seconds", "lesson_views"], dtype=np.float64))
    day_rows = pd.concat(days).drop_duplicates() if days else pd.DataFrame({"user_id": [], "day": []})
    by_day = day_rows.groupby("user_id")["day"]
    span_days = (by_day.max() - by_day.min() + 1).astype(np.float64)
    frame = per_user.join(totals, how="left").join(by_day.size().rename("study_days"), how="left")
    frame = frame.join((span_days / 7.0).clip(lower=1.0).rename("weeks"), how="left")
    counts = frame[["activity_lessons", "lesson_views", "study_days"]].fillna(0).astype(np.int64)
    out = pd.DataFrame({
        "user_id": frame.index.astype(str),
        "train_courses": frame["train_courses"].astype(np.int64).to_numpy(),
        "activity_lessons": counts["activity_lessons"].to_numpy(),
        "lesson_views": counts["lesson_views"].to_numpy(),
        "study_days": counts["study_days"].to_numpy(),
        "study_frequency": (counts["study_days"] / frame["weeks"].fillna(1.0)).to_numpy(np.float64),
        "mean_lesson_seconds": (frame["seconds"].fillna(0.0) / counts["activity_lessons"].clip(lower=1)).to_numpy(np.float64),
        "completion_share": frame["completion_share"].to_numpy(np.float64),
    })
    return out[list(COLUMNS)].reset_index(drop=True)
