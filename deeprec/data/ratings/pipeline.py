"""SPEC section 1 end to end: an event log -> RatingsResult, in memory or out-of-core by user hash."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeprec.data.ratings.config import RatingsConfig
from deeprec.data.ratings.durations import EventAggregates, aggregate_events, concat_views, lesson_durations
from deeprec.data.ratings.events import REJECT_REASONS, validate_events
from deeprec.data.ratings.io import iter_event_batches, read_catalogue
from deeprec.data.ratings.rating import observed_lessons_in, ratings_from_durations
from deeprec.data.tables import table_files
from deeprec.errors import DataError

ROW_ID = "__deeprec_row"


@dataclass
class RatingsResult:
    """The SPEC 1.10 tables plus what re-rating needs (sessions per user, lessons per course, cfg).

    ratings: user_id, course_id, rating, pct_viewed, lessons_viewed, first_seen (epoch s), split.
    lesson_durations: user_id, course_id, lesson_id, seconds, views, first_seen, first_row.
    rejects: the rejected input rows (original columns) + reason, indexed by input row (0-based).
    """

    ratings: pd.DataFrame
    lesson_durations: pd.DataFrame
    rejects: pd.DataFrame
    summary: dict
    sessions: pd.Series = field(repr=False, default=None)
    lessons_in: pd.Series = field(repr=False, default=None)
    cfg: RatingsConfig = field(repr=False, default=None)

    def rerate(self, **changes) -> pd.DataFrame:
        """Ratings under another strategy (threshold, penalty, min_lesson_seconds, filters) without
        recomputing sessions or durations: rerate(threshold="global", penalty="log")."""
        cfg = dataclasses.replace(self.cfg, **changes).check()
        ratings, _ = ratings_from_durations(self.lesson_durations, self.sessions, cfg, self.lessons_in)
        return ratings


def _finish(parts: list[EventAggregates], rejects: pd.DataFrame, rows_in: int, cfg: RatingsConfig, source: str) -> RatingsResult:
    """Combine the parts: impute durations over all users, then rate (SPEC 1.4-1.10)."""
    durations = lesson_durations(concat_views([p.views for p in parts]))
    for p in parts:
        p.views = None  # free each part's partial sums
    sessions = pd.concat([p.sessions for p in parts]) if len(parts) > 1 else parts[0].sessions
    lessons_in = observed_lessons_in(durations)
    if cfg.catalogue:
        catalogue = read_catalogue(cfg.catalogue)
        lessons_in = catalogue.combine_first(lessons_in.astype(np.float64))
    ratings, filtered = ratings_from_durations(durations, sessions, cfg, lessons_in)
    # ids as plain (Arrow-backed) strings in the results, whatever the partitioning
    durations = durations.astype({"course_id": "str", "lesson_id": "str"})
    ratings = ratings.astype({"course_id": "str"})
    rejects = rejects.sort_index(kind="stable")  # index = the input row (0-based)
    counts = rejects["reason"].value_counts()
    summary = {
        "source": source,
        "rows_in": int(rows_in),
        "rows_accepted": int(sum(p.events for p in parts)),
        "rows_rejected": {reason: int(counts.get(reason, 0)) for reason in REJECT_REASONS},
        "events": int(sum(p.events for p in parts)),
        "lesson_views": int(sum(p.lesson_views for p in parts)),
        "sessions": int(sessions.sum()),
        "users_in_log": int(len(sessions)),
        "lessons": int(len(durations[["course_id", "lesson_id"]].drop_duplicates())),
        "users_before_filters": filtered["users_before_filters"],
        "users_removed": filtered["users_removed"],
        "users": int(ratings["user_id"].nunique()),
        "courses": int(ratings["course_id"].nunique()),
        "ratings": int(len(ratings)),
        "config": dataclasses.asdict(cfg),
    }
    return RatingsResult(ratings, durations, rejects, summary, sessions, lessons_in, cfg)


def rate_events(events: pd.DataFrame, cfg: RatingsConfig | None = None, source: str = "events") -> RatingsResult:
    """SPEC section 1 on an in-memory log (columns of SPEC 1.1); `source` names it in errors."""
    cfg = (cfg or RatingsConfig()).check()
    if len(events) == 0:
        raise DataError(f"{source}: no rows (a header but no events)")
    validated = validate_events(events, cfg, source)
    return _finish([aggregate_events(validated, cfg)], validated.rejects, validated.rows_in, cfg, source)


def _auto_partitions(path: str | Path, cfg: RatingsConfig) -> int:
    """Partitions so each holds about batch_rows*2 events (estimated from file sizes)."""
    if cfg.n_partitions:
        return int(cfg.n_partitions)
    size = sum(f.stat().st_size * (4 if f.suffix.lower() in (".parquet", ".pq") else 1) for f in table_files(path))
    return max(1, math.ceil(size / (cfg.batch_rows * 2 * 60)))  # ~60 bytes per CSV event


def partition_by_user(path: str | Path, cfg: RatingsConfig, work_dir: Path) -> tuple[list[Path], int]:
    """Split the log into Parquet parts by a hash of user_id, each row tagged with its input row."""
    n_parts = _auto_partitions(path, cfg)
    folders = [work_dir / f"part-{k:04d}" for k in range(n_parts)]
    for folder in folders:
        folder.mkdir()
    rows_in = 0
    for batch_no, (_, frame) in enumerate(iter_event_batches(path, cfg.batch_rows)):
        frame[ROW_ID] = np.arange(rows_in, rows_in + len(frame), dtype=np.int64)
        rows_in += len(frame)
        user_text = frame["user_id"].astype("string").fillna("")
        part = pd.util.hash_array(user_text.to_numpy(dtype=object), categorize=True) % np.uint64(n_parts)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
        for k in range(n_parts):  # a loop over partitions, not rows
            rows = order[bounds[k] : bounds[k + 1]]
            if len(rows):
                frame.iloc[rows].to_parquet(folders[k] / f"batch-{batch_no:06d}.parquet", index=False)
    return folders, rows_in


def rate_event_files(path: str | Path, cfg: RatingsConfig | None = None, work_dir: str | Path | None = None) -> RatingsResult:
    """SPEC section 1 on a log larger than memory: partition by user hash, then one part at a time.

    Sessions and durations need only one user's events; the imputation means and lessons_in are
    combined over all parts afterwards, so the result equals rate_events(read_events(path)).
    """
    cfg = (cfg or RatingsConfig()).check()
    scratch = Path(tempfile.mkdtemp(prefix="deeprec-ratings-", dir=work_dir))
    try:
        folders, rows_in = partition_by_user(path, cfg, scratch)
        if rows_in == 0:
            raise DataError(f"{path}: no rows (a header but no events)")
        parts, rejects = [], []
        for folder in folders:
            files = sorted(folder.glob("*.parquet"))
            if not files:
                continue
            frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
            frame.index = frame.pop(ROW_ID).to_numpy()
            validated = validate_events(frame, cfg, str(path), row_ids=frame.index.to_numpy())
            parts.append(aggregate_events(validated, cfg))
            rejects.append(validated.rejects)
            shutil.rmtree(folder)
        return _finish(parts, pd.concat(rejects), rows_in, cfg, str(path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def input_megabytes(path: str | Path) -> float:
    """Estimated in-memory size of a log (Parquet expands about 4x when read)."""
    files = table_files(path)
    return sum(f.stat().st_size * (4 if f.suffix.lower() in (".parquet", ".pq") else 1) for f in files) / 2**20


def rate_log(path: str | Path, cfg: RatingsConfig | None = None, out_of_core: bool | None = None) -> RatingsResult:
    """Rate the log at `path`: in memory, or out-of-core when it is estimated above cfg.memory_budget_mb."""
    from deeprec.data.ratings.io import read_events

    cfg = (cfg or RatingsConfig()).check()
    if out_of_core is None:
        out_of_core = input_megabytes(path) > cfg.memory_budget_mb
    if out_of_core:
        return rate_event_files(path, cfg)
    return rate_events(read_events(path, cfg), cfg, source=str(path))
