"""SPEC section 1 end to end: an event log -> RatingsResult, in memory or out-of-core by user hash."""

from __future__ import annotations

import dataclasses
import math
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deeprec.atomic import make_temp_folder, remove_deeprec_file, remove_deeprec_folder
from deeprec.data.ratings.config import RatingsConfig
from deeprec.data.ratings.durations import EventAggregates, aggregate_events, lesson_durations, lesson_sums, merge_lesson_sums
from deeprec.data.ratings.events import REJECT_REASONS, validate_events
from deeprec.data.ratings.io import (
    CSV_BYTES_PER_ROW, ROW_ID, iter_event_tables, merge_sorted_scratch, parquet_safe, read_catalogue,
    read_parquet_frame, read_scratch, scratch_writer, write_scratch,
)
from deeprec.data.ratings.rating import (
    FILTERS, course_shares, filter_users, rate_kept_pairs, ratings_from_durations,
)
from deeprec.data.tables import table_files
from deeprec.errors import DataError

class RatingsResult:
    """The SPEC 1.10 tables plus what re-rating needs (sessions per user, lessons per course, cfg).

    ratings: user_id, course_id, rating, pct_viewed, lessons_viewed, first_seen (epoch s), split.
    user_features: learner behaviour features per rated user (train courses only; learners.py).
    lesson_durations: user_id, course_id, lesson_id, seconds, views, first_seen, first_row.
    rejects: the rejected input rows (original columns) + reason, indexed by input row (0-based).
    An out-of-core run may keep lesson_durations and rejects on disk (`files`: name -> Parquet);
    the attributes then read them on each access, and write_outputs copies the files.
    """

    def __init__(self, ratings: pd.DataFrame, lesson_durations: pd.DataFrame | None, rejects: pd.DataFrame | None,
                 summary: dict, sessions: pd.Series | None = None, lessons_in: pd.Series | None = None,
                 cfg: RatingsConfig | None = None, files: dict[str, Path] | None = None):
        self.ratings, self.summary, self.sessions, self.lessons_in, self.cfg = ratings, summary, sessions, lessons_in, cfg
        self.files = dict(files or {})
        self._tables = {"lesson_durations": lesson_durations, "rejects": rejects}
        self._user_features: pd.DataFrame | None = None

    def _table(self, name: str) -> pd.DataFrame:
        if self._tables[name] is not None:
            return self._tables[name]
        return read_parquet_frame(self.files[name], index=ROW_ID if name == "rejects" else None)

    @property
    def lesson_durations(self) -> pd.DataFrame:
        return self._table("lesson_durations")

    @property
    def user_features(self) -> pd.DataFrame:
        """Learner behaviour features per rated user (deeprec.data.ratings.learners), computed once."""
        if self._user_features is None:
            from deeprec.data.ratings.learners import learner_features

            durations = self._tables["lesson_durations"]
            source = durations if durations is not None else self.files["lesson_durations"]
            batch_rows = self.cfg.batch_rows if self.cfg is not None else 2_000_000
            self._user_features = learner_features(self.ratings, source, batch_rows)
        return self._user_features

    @property
    def rejects(self) -> pd.DataFrame:
        return self._table("rejects")

    def __repr__(self) -> str:
        return f"RatingsResult(ratings={len(self.ratings)} rows, summary={self.summary})"

    def rerate(self, **changes) -> pd.DataFrame:
        """Ratings under another strategy (threshold, penalty, min_lesson_seconds, filters) without
        recomputing sessions or durations: rerate(threshold="global", penalty="log").
        It holds all lesson durations in memory (also those an out-of-core run kept on disk)."""
        cfg = dataclasses.replace(self.cfg, **changes).check()
        ratings, _ = ratings_from_durations(self.lesson_durations, self.sessions, cfg, self.lessons_in)
        return ratings


def _lessons_in(sums: pd.DataFrame, cfg: RatingsConfig) -> pd.Series:
    """lessons_in(c) (SPEC 1.5): lessons of each course seen in the log (sums: one row per lesson), or the catalogue's."""
    lessons_in = sums.groupby("course_id", sort=True).size().rename("n_lessons")
    lessons_in.index = lessons_in.index.astype(str)
    if cfg.catalogue:
        lessons_in = read_catalogue(cfg.catalogue).combine_first(lessons_in.astype(np.float64))
    return lessons_in


def _summary(source: str, rows_in: int, parts: list[EventAggregates], sessions: pd.Series, n_lessons: int,
             filtered: dict, ratings: pd.DataFrame, reject_counts: pd.Series, cfg: RatingsConfig) -> dict:
    """summary.json (SPEC 1.10): row counts, events, sessions, users, courses, users removed by each filter,
    and what explains an empty result: the rows naming a lesson and the first URL url_pattern missed."""
    missed = [p.unmatched_url for p in parts if p.unmatched_url is not None]
    return {
        "source": source,
        "rows_in": int(rows_in),
        "rows_accepted": int(sum(p.events for p in parts)),
        "rows_rejected": {reason: int(reject_counts.get(reason, 0)) for reason in REJECT_REASONS},
        "events": int(sum(p.events for p in parts)),
        "lesson_views": int(sum(p.lesson_views for p in parts)),
        "rows_naming_a_lesson": int(sum(p.named_rows for p in parts)),
        "unmatched_url_example": min(missed)[1] if missed else None,
        "sessions": int(sessions.sum()),
        "users_in_log": int(len(sessions)),
        "lessons": int(n_lessons),
        "users_before_filters": filtered["users_before_filters"],
        "users_removed": filtered["users_removed"],
        "users": int(ratings["user_id"].nunique()),
        "courses": int(ratings["course_id"].nunique()),
        "ratings": int(len(ratings)),
        "config": dataclasses.asdict(cfg),
    }


def _finish(part: EventAggregates, rejects: pd.DataFrame, rows_in: int, cfg: RatingsConfig, source: str) -> RatingsResult:
    """Impute durations over all users, then rate (SPEC 1.4-1.10), all in memory."""
    sums = lesson_sums(part.views)
    durations = lesson_durations(part.views, sums)
    views, part.views = part.views, None  # free the partial sums
    del views
    lessons_in = _lessons_in(sums, cfg)
    ratings, filtered = ratings_from_durations(durations, part.sessions, cfg, lessons_in)
    # ids as plain (Arrow-backed) strings in the results, whatever the partitioning
    durations = durations.astype({"course_id": "str", "lesson_id": "str"})
    ratings = ratings.astype({"course_id": "str"})
    rejects = rejects.sort_index(kind="stable")  # index = the input row (0-based)
    summary = _summary(source, rows_in, [part], part.sessions, len(sums), filtered, ratings,
                       rejects["reason"].value_counts(), cfg)
    return RatingsResult(ratings, durations, rejects, summary, part.sessions, lessons_in, cfg)


def rate_events(events: pd.DataFrame, cfg: RatingsConfig | None = None, source: str = "events") -> RatingsResult:
    """SPEC section 1 on an in-memory log (columns of SPEC 1.1); `source` names it in errors."""
    cfg = (cfg or RatingsConfig()).check()
    if len(events) == 0:
        raise DataError(f"{source}: no rows (a header but no events)")
    if cfg.engine == "spark":
        from deeprec.data.ratings.spark_engine import rate_events_spark

        return rate_events_spark(events, cfg, source)
    validated = validate_events(events, cfg, source)
    return _finish(aggregate_events(validated, cfg), validated.rejects, validated.rows_in, cfg, source)


def _auto_partitions(path: str | Path, cfg: RatingsConfig) -> int:
    """Partitions of about batch_rows events each (estimated from file sizes), so memory follows batch_rows."""
    if cfg.n_partitions:
        return int(cfg.n_partitions)
    return max(1, math.ceil(input_megabytes(path) * 2**20 / (cfg.batch_rows * CSV_BYTES_PER_ROW)))


def _user_partition(user_ids: pa.ChunkedArray, n_parts: int) -> np.ndarray:
    """part: [N] int64 partition of each row, a hash of its user_id as text (the same in every batch and file)."""
    encoded = pc.dictionary_encode(pc.cast(user_ids, pa.string()).combine_chunks())
    names = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    part_of_name = np.append(pd.util.hash_array(names, categorize=False) % np.uint64(n_parts), 0).astype(np.int64)
    index = pc.fill_null(encoded.indices, len(names)).to_numpy()  # a missing user -> the appended part 0
    return part_of_name[index]


def partition_by_user(path: str | Path, cfg: RatingsConfig, work_dir: Path) -> tuple[list[Path], int]:
    """Stream the log, batch_rows rows at a time, into Parquet parts by a hash of user_id.

    Each row is tagged with its input row (ROW_ID); a part holds one file per input file.
    Returns the part folders and the number of input rows.
    """
    n_parts = _auto_partitions(path, cfg)
    folders = [work_dir / f"part-{k:04d}" for k in range(n_parts)]
    for folder in folders:
        folder.mkdir()
    rows_in, writers, current = 0, {}, None
    try:
        for file_no, (file, table) in enumerate(iter_event_tables(path, cfg.batch_rows)):
            if file != current:  # a new input file (its own schema): new part files
                for writer in writers.values():
                    writer.close()
                writers, current = {}, file
            table = table.append_column(ROW_ID, pa.array(np.arange(rows_in, rows_in + table.num_rows, dtype=np.int64)))
            rows_in += table.num_rows
            part = _user_partition(table.column("user_id"), n_parts)
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
            for k in range(n_parts):  # a loop over partitions, not rows
                rows = order[bounds[k] : bounds[k + 1]]
                if len(rows) == 0:
                    continue
                if k not in writers:
                    writers[k] = scratch_writer(folders[k] / f"file-{file_no:06d}.arrow", table.schema)
                writers[k].write_table(table.take(pa.array(rows)))
            del table, part, order
    finally:
        for writer in writers.values():
            writer.close()
    return folders, rows_in


def _aggregate_part(folder: Path, cfg: RatingsConfig, source: str) -> tuple[EventAggregates, pd.DataFrame, pd.Series]:
    """Pass 1 on one part: validate, sessions and partial lesson sums; views and rejects go to disk.

    Returns the part's aggregates (views dropped), its lesson_sums and its reject counts by reason.
    """
    frame = read_scratch(sorted(folder.glob("file-*.arrow")))
    frame.index = frame.pop(ROW_ID).to_numpy()
    validated = validate_events(frame, cfg, source, row_ids=frame.index.to_numpy())
    del frame
    rejects = validated.rejects
    write_scratch(parquet_safe(rejects).assign(**{ROW_ID: rejects.index.to_numpy()}), folder / "rejects.arrow")
    counts = rejects["reason"].value_counts()
    part = aggregate_events(validated, cfg)
    del validated, rejects
    sums = lesson_sums(part.views)
    write_scratch(part.views, folder / "views.arrow")
    part.views = None
    for f in folder.glob("file-*.arrow"):
        remove_deeprec_file(f)
    return part, sums, counts


def _rate_part(folder: Path, sums: pd.DataFrame, lessons_in: pd.Series, sessions: pd.Series,
               cfg: RatingsConfig) -> tuple[pd.DataFrame, int, dict]:
    """Pass 2 on one part: durations with the global means (to disk), course shares, per-user filters.

    Returns the kept (user, course) pairs, the users before the filters and the users removed by each.
    """
    views = read_scratch([folder / "views.arrow"])
    durations = lesson_durations(views, sums)
    del views
    write_scratch(durations.astype({"course_id": "str", "lesson_id": "str"}), folder / "durations.arrow")
    pairs = course_shares(durations, lessons_in, cfg.min_lesson_seconds)
    del durations
    users_before = int(pairs["user_id"].nunique())
    pairs, removed = filter_users(pairs, sessions, cfg)
    return pairs.astype({"course_id": "str"}), users_before, removed


def _rate_all_pairs(kept: list[pd.DataFrame], cfg: RatingsConfig) -> pd.DataFrame:
    """SPEC 1.7-1.9 on the kept pairs of every part (emptied), as ratings_from_durations does on one frame.

    The pairs are first put in the in-memory path's order (by first counted view), so that the
    global threshold sums the same numbers in the same order: identical ratings, not just close.
    """
    pairs = pd.concat(kept, ignore_index=True)
    kept.clear()  # one copy of the pairs at a time
    pairs = pairs.take(np.lexsort((pairs["first_row"].to_numpy(), pairs["first_seen"].to_numpy())))
    return rate_kept_pairs(pairs, cfg)


def rate_event_files(path: str | Path, cfg: RatingsConfig | None = None, work_dir: str | Path | None = None,
                     tables_on_disk: bool = False) -> RatingsResult:
    """SPEC section 1 on a log larger than memory, in memory bounded by cfg.batch_rows, not the log.

    Partition by user hash (streamed), then two passes one part at a time: sessions and partial
    lesson sums, then durations with the means over all parts, shares and per-user filters. Only
    per-lesson sums, per-user sessions and the kept (user, course) pairs stay in memory; durations
    and rejects are merged on disk in input order. The result equals rate_events(read_events(path)).
    tables_on_disk: keep lesson_durations/rejects as Parquet files (result.files) instead of loading them.
    """
    cfg = (cfg or RatingsConfig()).check()
    source = str(path)
    scratch = make_temp_folder(work_dir, "ratings")
    try:
        folders, rows_in = partition_by_user(path, cfg, scratch)
        if rows_in == 0:
            raise DataError(f"{path}: no rows (a header but no events)")
        folders = [f for f in folders if any(f.glob("file-*.arrow"))]
        parts, part_sums, counts = [], [], pd.Series(dtype=np.int64)
        for folder in folders:
            part, sums, reasons = _aggregate_part(folder, cfg, source)
            parts.append(part)
            part_sums.append(sums)
            counts = counts.add(reasons, fill_value=0)
        sums = merge_lesson_sums(part_sums)
        lessons_in = _lessons_in(sums, cfg)
        kept, users_before, removed = [], 0, dict.fromkeys(FILTERS, 0)
        for folder, part in zip(folders, parts):
            pairs, before, gone = _rate_part(folder, sums, lessons_in, part.sessions, cfg)
            kept.append(pairs)
            users_before += before
            removed = {name: removed[name] + gone[name] for name in FILTERS}
        ratings = _rate_all_pairs(kept, cfg)
        sessions = pd.concat([p.sessions for p in parts])
        files = {
            "lesson_durations": scratch / "lesson_durations.parquet",
            "rejects": scratch / "rejects.parquet",
        }
        merge_sorted_scratch([f / "durations.arrow" for f in folders], "first_row", files["lesson_durations"], cfg.batch_rows)
        merge_sorted_scratch([f / "rejects.arrow" for f in folders], ROW_ID, files["rejects"], cfg.batch_rows)
        for folder in folders:
            remove_deeprec_folder(folder)
        filtered = {"users_before_filters": users_before, "users_removed": removed}
        summary = _summary(source, rows_in, parts, sessions, len(sums), filtered, ratings, counts, cfg)
        if tables_on_disk:
            result = RatingsResult(ratings, None, None, summary, sessions, lessons_in, cfg, files=files)
            weakref.finalize(result, remove_deeprec_folder, scratch)  # the files live as long as the result
            scratch = None
            return result
        durations = read_parquet_frame(files["lesson_durations"])
        rejects = read_parquet_frame(files["rejects"], index=ROW_ID)
        return RatingsResult(ratings, durations, rejects, summary, sessions, lessons_in, cfg)
    finally:
        if scratch is not None:
            remove_deeprec_folder(scratch)


def input_megabytes(path: str | Path) -> float:
    """Estimated size of a log as CSV text (Parquet expands about 4x)."""
    files = table_files(path)
    return sum(f.stat().st_size * (4 if f.suffix.lower() in (".parquet", ".pq") else 1) for f in files) / 2**20


def rate_log(path: str | Path, cfg: RatingsConfig | None = None, out_of_core: bool | None = None) -> RatingsResult:
    """Rate the log at `path`: in memory, or out-of-core when it is estimated above cfg.memory_budget_mb
    (then lesson_durations and rejects stay on disk until write_outputs copies them); cfg.engine=spark
    runs it on Apache Spark instead (spark_engine.py; the same result)."""
    from deeprec.data.ratings.io import read_events

    cfg = (cfg or RatingsConfig()).check()
    if cfg.engine == "spark":  # Spark's own partitioning: out_of_core does not apply
        from deeprec.data.ratings.spark_engine import rate_log_spark

        return rate_log_spark(path, cfg)
    if out_of_core is None:
        out_of_core = input_megabytes(path) > cfg.memory_budget_mb
    if out_of_core:
        return rate_event_files(path, cfg, tables_on_disk=True)
    return rate_events(read_events(path, cfg), cfg, source=str(path))
