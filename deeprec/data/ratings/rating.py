"""SPEC 1.5-1.9: lesson durations -> share of a course viewed -> user filters -> 0..5 ratings -> split.

`ratings_from_durations` needs only the lesson durations and the session counts, so many strategies
(thresholds x penalties x minimum lesson durations) are rated from one pass over the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from deeprec.data.ratings.config import RatingsConfig
from deeprec.data.splits import temporal_train_count

PENALTIES = {
    "quadratic": np.square,  # F1
    "linear": lambda x: x,  # F2
    "log": lambda x: np.log2(1.0 + x),  # F3
    "sqrt": np.sqrt,  # F4
    "step": np.zeros_like,  # F5
}
RATING_COLUMNS = ["user_id", "course_id", "rating", "pct_viewed", "lessons_viewed", "first_seen", "split"]
FILTERS = ("min_sessions", "max_courses", "min_courses")


def penalty_rating(x: np.ndarray, penalty: str) -> np.ndarray:
    """rating: [N] = 5 where x >= 1, else 5 f(x) (SPEC 1.8)."""
    x = np.asarray(x, np.float64)
    return np.where(x >= 1.0, 5.0, 5.0 * PENALTIES[penalty](np.minimum(x, 1.0)))


def observed_lessons_in(lesson_durations: pd.DataFrame) -> pd.Series:
    """lessons_in(c): distinct lessons of each course seen anywhere in the accepted log."""
    pairs = lesson_durations[["course_id", "lesson_id"]].drop_duplicates()
    counts = pairs.groupby("course_id", observed=True).size().rename("n_lessons")
    counts.index = counts.index.astype(str)
    return counts


def course_shares(lesson_durations: pd.DataFrame, lessons_in: pd.Series, min_lesson_seconds: float) -> pd.DataFrame:
    """SPEC 1.5: one row per (user, course) with a counted lesson: lessons_viewed, pct_viewed, first_seen.

    first_seen/first_row are those of the earliest view of a counted lesson (ties: input order).
    """
    counted = np.flatnonzero(lesson_durations["seconds"].to_numpy() >= min_lesson_seconds)
    first = lesson_durations[["first_seen", "first_row"]].to_numpy()[counted]
    counted = counted[np.lexsort((first[:, 1], first[:, 0]))]
    counted = lesson_durations[["user_id", "course_id", "lesson_id", "first_seen", "first_row"]].take(counted)
    pairs = counted.groupby(["user_id", "course_id"], sort=False, observed=True).agg(
        lessons_viewed=("lesson_id", "size"), first_seen=("first_seen", "first"), first_row=("first_row", "first")
    )
    pairs = pairs.reset_index()
    n_lessons = pairs["course_id"].astype(str).map(lessons_in).to_numpy(np.float64)
    pairs["pct_viewed"] = pairs["lessons_viewed"].to_numpy() / n_lessons
    return pairs


def filter_users(pairs: pd.DataFrame, sessions_per_user: pd.Series, cfg: RatingsConfig) -> tuple[pd.DataFrame, dict]:
    """SPEC 1.6, in order: min_sessions, max_courses, min_courses; returns kept pairs and users removed."""
    removed = {}
    sessions = pairs["user_id"].map(sessions_per_user).fillna(0).to_numpy()
    max_courses = np.inf if cfg.max_courses is None else cfg.max_courses
    for name in FILTERS:
        n_courses = pairs.groupby("user_id", sort=False)["course_id"].transform("size").to_numpy()
        keep = {
            "min_sessions": sessions >= cfg.min_sessions,
            "max_courses": n_courses <= max_courses,
            "min_courses": n_courses >= cfg.min_courses,
        }[name]
        removed[name] = int(pairs.loc[~keep, "user_id"].nunique())
        pairs, sessions = pairs[keep], sessions[keep]
    return pairs, removed


def rate_pairs(pairs: pd.DataFrame, threshold: str, penalty: str) -> np.ndarray:
    """SPEC 1.7-1.8: rating [N] from pct_viewed against the per-user or the global threshold."""
    pct = pairs["pct_viewed"].to_numpy(np.float64)
    if threshold == "per_user":
        t = pairs.groupby("user_id", sort=False)["pct_viewed"].transform("mean").to_numpy(np.float64)
    else:
        t = np.full(len(pct), pct.mean() if len(pct) else 1.0)
    return penalty_rating(pct / t, penalty)


def temporal_split(pairs: pd.DataFrame, train_share: float) -> np.ndarray:
    """SPEC 1.9: split [N] "train"/"test": each user's first n_train courses by first counted view."""
    order = np.lexsort((pairs["first_row"].to_numpy(), pairs["first_seen"].to_numpy()))
    by_time = pairs.iloc[order]
    rank = np.empty(len(pairs), np.int64)
    rank[order] = by_time.groupby("user_id", sort=False).cumcount().to_numpy()
    n = pairs.groupby("user_id", sort=False)["course_id"].transform("size").to_numpy()
    return np.where(rank < temporal_train_count(n, train_share), "train", "test")


def ratings_from_durations(
    lesson_durations: pd.DataFrame,
    sessions_per_user: pd.Series,
    cfg: RatingsConfig,
    lessons_in: pd.Series | None = None,
) -> tuple[pd.DataFrame, dict]:
    """SPEC 1.5-1.9 from lesson durations: (ratings frame, filter counts for the summary).

    lesson_durations: user_id, course_id, lesson_id, seconds, first_seen, first_row (as in
    RatingsResult.lesson_durations); sessions_per_user: sessions indexed by user_id;
    lessons_in: lessons per course_id (default: the lessons seen in `lesson_durations`).
    Rating several strategies = calling this with dataclasses.replace(cfg, threshold=..., penalty=...).
    """
    if lessons_in is None:
        lessons_in = observed_lessons_in(lesson_durations)
    pairs = course_shares(lesson_durations, lessons_in, cfg.min_lesson_seconds)
    users_before = int(pairs["user_id"].nunique())
    pairs, removed = filter_users(pairs, sessions_per_user, cfg)
    return rate_kept_pairs(pairs, cfg), {"users_before_filters": users_before, "users_removed": removed}


def rate_kept_pairs(pairs: pd.DataFrame, cfg: RatingsConfig) -> pd.DataFrame:
    """SPEC 1.7-1.9 on the (user, course) pairs that passed the user filters: threshold, penalty and
    temporal split, then the output's row order (user, first view) and columns."""
    pairs = pairs.assign(
        rating=rate_pairs(pairs, cfg.threshold, cfg.penalty),
        split=temporal_split(pairs, cfg.train_share),
    )
    pairs = pairs.sort_values(["user_id", "first_seen", "first_row"], kind="stable", ignore_index=True)
    return pairs[RATING_COLUMNS].astype({"lessons_viewed": np.int64})


@dataclass
class RatedMatrices:
    """One rated data set as sparse matrices over users x courses (courses in id order).

    train, test: binary CSR [U, I] of each user's train / test courses (SPEC 1.9);
    ratings: (threshold, penalty) -> CSR [U, I] of the train ratings (explicit zeros kept).
    """

    user_ids: np.ndarray
    course_ids: np.ndarray
    train: sp.csr_matrix
    test: sp.csr_matrix
    ratings: dict[tuple[str, str], sp.csr_matrix]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)


def rated_matrices(ratings: pd.DataFrame, strategies: list[tuple[str, str]]) -> RatedMatrices:
    """RatedMatrices of a ratings frame (user_id, course_id, pct_viewed, split), every strategy re-rated
    from pct_viewed with the ratings pipeline's own rule (SPEC 1.7-1.8)."""
    users, user_ids = pd.factorize(ratings["user_id"], sort=True)
    courses, course_ids = pd.factorize(ratings["course_id"], sort=True)
    shape = (len(user_ids), len(course_ids))
    is_train = (ratings["split"] == "train").to_numpy()

    def matrix(rows: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values[rows], (users[rows], courses[rows])), shape=shape, dtype=np.float32)
        m.sort_indices()
        return m

    train_rows, test_rows = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    ones = np.ones(len(ratings), np.float32)
    by_strategy = {s: matrix(train_rows, rate_pairs(ratings, *s).astype(np.float32)) for s in strategies}
    return RatedMatrices(np.asarray(user_ids), np.asarray(course_ids), matrix(train_rows, ones), matrix(test_rows, ones), by_strategy)
