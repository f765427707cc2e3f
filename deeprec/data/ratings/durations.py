"""SPEC 1.3-1.4: sessions and lesson durations (with the imputation rule), vectorised over events.

The work is split so that a log can be processed in parts (one part per user-hash partition):
`aggregate_events` turns one part's events into per-(user, course, lesson) partial sums,
`lesson_sums` of every part are merged into per-lesson totals (merge_lesson_sums), and
`lesson_durations` then times each part's views, imputing with means taken over every user.
Durations stay integer microseconds until the end, so the sums do not depend on the partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from deeprec.data.ratings.config import RatingsConfig
from deeprec.data.ratings.events import ValidatedEvents, as_text



@dataclass
class EventAggregates:
    """One part's contribution: partial lesson views, sessions per user, and counts.

    views: user_id, course_id, lesson_id, observed_us (sum of observed d), n_observed, n_imputed,
    first_ts_us, first_row (the earliest view of the lesson; ties by input row).
    """

    views: pd.DataFrame
    sessions: pd.Series  # sessions per user_id (SPEC 1.3, on all accepted events)
    events: int
    lesson_views: int
    named_rows: int = 0  # accepted events naming a lesson, views or not (ValidatedEvents.named_rows)
    unmatched_url: tuple[int, str] | None = None  # ValidatedEvents.unmatched_url


def session_starts(user: np.ndarray, ts_us: np.ndarray, gap_minutes: float) -> np.ndarray:
    """new_session: [N] bool for events sorted by (user, ts): first event of a user, or gap > limit."""
    starts = np.ones(len(user), bool)
    if len(user) > 1:
        gap = ts_us[1:] - ts_us[:-1]
        starts[1:] = (user[1:] != user[:-1]) | (gap > gap_minutes * 60e6)
    return starts


def aggregate_events(ev: ValidatedEvents, cfg: RatingsConfig) -> EventAggregates:
    """Cut sessions and time each lesson view until the next event (events sorted by user, time, row)."""
    user, ts, lesson, row = ev.user, ev.ts_us, ev.lesson, ev.row
    starts = session_starts(user, ts, cfg.session_gap_minutes)
    sessions = np.bincount(user[starts], minlength=len(ev.user_ids))
    # d(e) = ts(next event) - ts(e) when the next event is in the same session, else imputed later
    has_next = np.zeros(len(user), bool)
    has_next[:-1] = ~starts[1:]
    to_next = np.zeros(len(user), np.int64)
    to_next[:-1] = ts[1:] - ts[:-1]
    view = np.flatnonzero(lesson >= 0)
    observed = has_next[view]
    frame = pd.DataFrame(
        {
            "user": user[view],
            "lesson": lesson[view],
            "observed_us": np.where(observed, to_next[view], 0),
            "n_observed": observed.astype(np.int64),
            "n_imputed": (~observed).astype(np.int64),
            "first_ts_us": ts[view],
            "first_row": row[view],
        }
    )
    # rows are in time order, so "first" of each group is the earliest view (ties: input order)
    grouped = frame.groupby(["user", "lesson"], sort=False).agg(
        observed_us=("observed_us", "sum"),
        n_observed=("n_observed", "sum"),
        n_imputed=("n_imputed", "sum"),
        first_ts_us=("first_ts_us", "first"),
        first_row=("first_row", "first"),
    )
    u = grouped.index.get_level_values(0).to_numpy()
    les = grouped.index.get_level_values(1).to_numpy()
    # course and lesson as categoricals (few distinct values): a compact frame for large logs
    course = pd.Categorical(as_text(ev.lesson_course))
    name = pd.Categorical(as_text(ev.lesson_name))
    views = pd.DataFrame(
        {
            "user_id": pd.array(ev.user_ids[u], dtype="str"),
            "course_id": pd.Categorical.from_codes(course.codes[les], course.categories),
            "lesson_id": pd.Categorical.from_codes(name.codes[les], name.categories),
            **{c: grouped[c].to_numpy() for c in grouped.columns},
        }
    )
    active = sessions > 0
    return EventAggregates(
        views=views,
        sessions=pd.Series(sessions[active], index=pd.Index(ev.user_ids[active], name="user_id"), name="sessions"),
        events=len(user),
        lesson_views=len(view),
        named_rows=ev.named_rows,
        unmatched_url=ev.unmatched_url,
    )


def lesson_sums(views: pd.DataFrame) -> pd.DataFrame:
    """Observed time per lesson: course_id, lesson_id (str), observed_us, n_observed (int64 sums).

    Integer sums of the parts of a partitioned log add up exactly (merge_lesson_sums), so the
    imputation means of SPEC 1.4 are the same however the log was split.
    """
    sums = views.groupby(["course_id", "lesson_id"], sort=False, observed=True)[["observed_us", "n_observed"]].sum()
    return sums.reset_index().astype({"course_id": "str", "lesson_id": "str", "observed_us": np.int64, "n_observed": np.int64})


def merge_lesson_sums(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The lesson_sums of all parts of a log as one table (one row per lesson seen anywhere)."""
    if len(parts) == 1:
        return parts[0]
    return lesson_sums(pd.concat(parts, ignore_index=True))


def _lesson_of_view(views: pd.DataFrame, sums: pd.DataFrame) -> np.ndarray:
    """index: [V] row of `sums` holding each view's (course, lesson); matched on the few distinct pairs."""
    course = pd.Categorical(views["course_id"])
    name = pd.Categorical(views["lesson_id"])
    key = course.codes.astype(np.int64) * max(len(name.categories), 1) + name.codes
    distinct, inverse = np.unique(key, return_inverse=True)
    wanted = pd.MultiIndex.from_arrays(
        [as_text(np.asarray(course.categories, dtype=object)[distinct // max(len(name.categories), 1)]),
         as_text(np.asarray(name.categories, dtype=object)[distinct % max(len(name.categories), 1)])]
    )
    found = pd.MultiIndex.from_arrays([as_text(sums["course_id"]), as_text(sums["lesson_id"])]).get_indexer(wanted)
    if (found < 0).any():
        raise ValueError("lesson_durations: a viewed lesson is missing from the lesson sums (a bug)")
    return found[inverse.reshape(-1)]


def lesson_durations(views: pd.DataFrame, sums: pd.DataFrame | None = None) -> pd.DataFrame:
    """SPEC 1.4: seconds per (user, course, lesson), imputing unfinished views.

    A view that ends its session gets the mean observed d of its (course, lesson) over all users
    (`sums`: lesson_sums of the whole log; default: of `views`), else the mean of all observed lesson
    durations, else 0. Returns user_id, course_id, lesson_id, seconds, views, first_seen (epoch s of
    the first view), first_row (its input row), in the input order of the first views.
    """
    if sums is None:
        sums = lesson_sums(views)
    total_us, total_n = int(sums["observed_us"].sum()), int(sums["n_observed"].sum())
    fallback_us = total_us / total_n if total_n else 0.0
    lesson_n = sums["n_observed"].to_numpy(np.int64)
    lesson_mean_us = np.where(lesson_n > 0, sums["observed_us"].to_numpy(np.int64) / np.maximum(lesson_n, 1), fallback_us)
    mean_us = lesson_mean_us[_lesson_of_view(views, sums)] if len(views) else np.zeros(0)
    n_imputed = views["n_imputed"].to_numpy()
    seconds = (views["observed_us"].to_numpy() + n_imputed * mean_us) / 1e6
    out = pd.DataFrame(
        {
            "user_id": views["user_id"].array,
            "course_id": views["course_id"].array,
            "lesson_id": views["lesson_id"].array,
            "seconds": seconds,
            "views": (views["n_observed"].to_numpy() + n_imputed).astype(np.int64),
            "first_seen": views["first_ts_us"].to_numpy() / 1e6,
            "first_row": views["first_row"].to_numpy(),
        }
    )
    del views
    # input order of each lesson's first view: unique, and the same however the log was partitioned
    return out.take(np.argsort(out["first_row"].to_numpy(), kind="stable")).reset_index(drop=True)
