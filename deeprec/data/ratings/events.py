"""SPEC 1.1-1.2: raw event rows -> validated events (integer codes, µs timestamps) + rejects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from deeprec.data.ratings.config import RatingsConfig
from deeprec.errors import DataError

REJECT_REASONS = ("missing_user", "bad_timestamp", "duplicate")
BAD_TS = np.iinfo(np.int64).min
URL_PREFIX = r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/]*"  # scheme://host of a full URL: the path follows


def check_columns(columns, source: str) -> None:
    """Whole-input check of SPEC 1.1: user_id, timestamp and a location (url or course_id+lesson_id)."""
    columns = list(columns)
    missing = [c for c in ("user_id", "timestamp") if c not in columns]
    if "url" not in columns and not {"course_id", "lesson_id"} <= set(columns):
        missing.append("url (or both course_id and lesson_id)")
    if missing:
        raise DataError(f"{source}: required column(s) {missing} missing; found {columns}")


def _as_arrow(values: pd.Series) -> pa.Array | None:
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _numbers_to_us(numbers: np.ndarray, unit: str) -> np.ndarray:
    """Epoch numbers (float64, NaN = bad) -> int64 µs; unit auto means ms above 1e11 (SPEC 1.1)."""
    if unit == "ms":
        scale = np.full(len(numbers), 1e3)
    elif unit == "s":
        scale = np.full(len(numbers), 1e6)
    else:
        scale = np.where(np.abs(numbers) > 1e11, 1e3, 1e6)
    us = numbers * scale
    ok = np.isfinite(us) & (np.abs(us) < 9e18)
    out = np.full(len(numbers), BAD_TS, np.int64)
    out[ok] = np.round(us[ok]).astype(np.int64)
    return out


def parse_timestamps_us(values: pd.Series, unit: str = "auto") -> np.ndarray:
    """timestamps: [N] int64 epoch microseconds (BAD_TS where unparseable).

    A number is epoch s or ms (`unit`); text is a number or ISO-8601 (offset honoured, naive = UTC).
    Integer microseconds make a gap of exactly 30 minutes compare exactly.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values.dt.tz_localize("UTC") if getattr(values.dt, "tz", None) is None else values.dt.tz_convert("UTC")
        ns = stamps.dt.as_unit("us").astype("int64").to_numpy()
        return np.where(values.isna().to_numpy(), BAD_TS, ns)
    if pd.api.types.is_bool_dtype(values.dtype):
        return np.full(len(values), BAD_TS, np.int64)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return _numbers_to_us(pd.to_numeric(values).to_numpy(np.float64, na_value=np.nan), unit)
    arrow = _as_arrow(values)
    if arrow is not None and (pa.types.is_string(arrow.type) or pa.types.is_large_string(arrow.type)):
        for target in (pa.int64(), pa.float64()):  # fast path: a column of plain numbers
            try:
                numbers = pc.cast(arrow, target).to_numpy(zero_copy_only=False).astype(np.float64)
                return _numbers_to_us(numbers, unit)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    text = values.astype("string")
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    us = _numbers_to_us(numbers, unit)
    is_text = np.isnan(numbers) & text.notna().to_numpy()
    if is_text.any():
        parsed = pd.to_datetime(text[is_text], errors="coerce", utc=True, format="ISO8601")
        ok = parsed.notna().to_numpy()
        parsed_us = np.full(len(parsed), BAD_TS, np.int64)
        parsed_us[ok] = parsed[ok].dt.as_unit("us").astype("int64").to_numpy()
        us[is_text] = parsed_us
    return us


def user_time_order(user: np.ndarray, ts_us: np.ndarray, row: np.ndarray) -> np.ndarray:
    """order: [N] permutation sorting by (user, ts_us, row) (SPEC 1.3: ties keep input order).

    One stable argsort of a combined int64 key when it fits (rows already in input order), else lexsort.
    """
    if len(user) == 0:
        return np.zeros(0, np.int64)
    lo, span = int(ts_us.min()), int(ts_us.max()) - int(ts_us.min()) + 1
    rows_in_order = bool(np.all(row[1:] > row[:-1]))
    if rows_in_order and (int(user.max()) + 1) <= (2**62) // span:
        return np.argsort(user * span + (ts_us - lo), kind="stable")
    return np.lexsort((row, ts_us, user))


def as_text(values) -> np.ndarray:
    """[N] object array of Python str. Not numpy's astype(str): its fixed-width strings drop a trailing NUL,
    which would merge the ids "c\\x00" and "c"."""
    return pd.Index(np.asarray(values, dtype=object)).astype(str).to_numpy(dtype=object)


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N] int64, -1 for null; uniques as strings): factorize once, work on the few uniques."""
    if values.dtype == object:  # mixed Python types: 1 and "1" are the same id
        values = values.astype("string")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes.astype(np.int64), np.asarray(pd.Index(uniques).astype(str), dtype=object)


def _url_lessons(urls: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """(course, lesson) strings per distinct URL (None where the path names no lesson)."""
    paths = pd.Series(urls, dtype="string").str.replace(URL_PREFIX, "", regex=True)
    found = paths.str.extract(pattern)[["course", "lesson"]]
    ok = found["course"].notna() & found["lesson"].notna() & (found["course"] != "") & (found["lesson"] != "")
    return (
        np.where(ok, found["course"].astype(object), None),
        np.where(ok, found["lesson"].astype(object), None),
    )


@dataclass
class ValidatedEvents:
    """Accepted events as arrays sorted by (user, time, input row) + lesson and user tables.

    user: [N] int64 index into user_ids; ts_us: [N] int64; lesson: [N] int64 index into
    lesson_course/lesson_name, -1 where the event is not a lesson view; row: [N] int64 input row.
    """

    user: np.ndarray
    ts_us: np.ndarray
    lesson: np.ndarray
    row: np.ndarray
    user_ids: np.ndarray
    lesson_course: np.ndarray
    lesson_name: np.ndarray
    rejects: pd.DataFrame
    rows_in: int
    named_rows: int = 0  # accepted rows whose location names a lesson (before the event filter)
    unmatched_url: tuple[int, str] | None = None  # (input row, url) of the first accepted url the pattern missed


def validate_events(events: pd.DataFrame, cfg: RatingsConfig, source: str, row_ids: np.ndarray | None = None) -> ValidatedEvents:
    """SPEC 1.1-1.2 on one frame: codes, timestamps, lesson views, and rejects with a reason.

    `row_ids` [N] gives each row's position in the whole input (the out-of-core path reads parts).
    """
    check_columns(events.columns, source)
    n = len(events)
    rows = np.arange(n, dtype=np.int64) if row_ids is None else np.asarray(row_ids, np.int64)
    user_code, user_ids = _codes(events["user_id"])
    blank_user = np.append(pd.Series(user_ids, dtype="string").str.strip().eq("").to_numpy(bool), True)
    missing_user = blank_user[user_code]  # code -1 (null) picks the appended True
    ts_us = parse_timestamps_us(events["timestamp"], cfg.timestamp_unit)
    bad_ts = ~missing_user & (ts_us == BAD_TS)

    # location: course_id + lesson_id where both are given, else the url's path (SPEC 1.1)
    key_codes, lesson_course, lesson_name, lesson_of_row = [], [], [], np.full(n, -1, np.int64)
    n_found = 0
    if "url" in events.columns:
        url_code, urls = _codes(events["url"])
        key_codes.append(url_code)
        course, lesson = _url_lessons(urls, cfg.url_pattern)
        has = pd.notna(course).astype(bool)
        local = np.full(len(urls), -1, np.int64)
        local[has] = np.arange(has.sum())
        lesson_course.append(course[has])
        lesson_name.append(lesson[has])
        hit = url_code >= 0
        mapped = np.where(hit, local[np.maximum(url_code, 0)], -1)
        lesson_of_row = np.where(mapped >= 0, mapped + n_found, -1)
        n_found += int(has.sum())
    if {"course_id", "lesson_id"} <= set(events.columns):
        c_code, c_uni = _codes(events["course_id"])
        l_code, l_uni = _codes(events["lesson_id"])
        key_codes += [c_code, l_code]
        c_blank = np.append(pd.Series(c_uni, dtype="string").str.strip().eq("").to_numpy(bool), True)
        l_blank = np.append(pd.Series(l_uni, dtype="string").str.strip().eq("").to_numpy(bool), True)
        both = ~c_blank[c_code] & ~l_blank[l_code]
        pair = c_code * max(len(l_uni), 1) + l_code
        pair_code, pair_uni = pd.factorize(pair[both])
        lesson_course.append(c_uni[pair_uni // max(len(l_uni), 1)])
        lesson_name.append(l_uni[pair_uni % max(len(l_uni), 1)])
        lesson_of_row = lesson_of_row.copy()
        lesson_of_row[both] = pair_code + n_found
        n_found += len(pair_uni)
    named = lesson_of_row >= 0
    has_url = (url_code >= 0) if "url" in events.columns else np.zeros(n, bool)
    if "event" in events.columns:
        event_code, event_names = _codes(events["event"])
        key_codes.append(event_code)
        is_view = np.isin(event_names, np.asarray(list(cfg.view_events), dtype=object))
        lesson_of_row = np.where((event_code >= 0) & is_view[np.maximum(event_code, 0)], lesson_of_row, -1)

    # one index per distinct (course, lesson), whichever column set named it
    course_all = np.concatenate(lesson_course) if lesson_course else np.zeros(0, object)
    name_all = np.concatenate(lesson_name) if lesson_name else np.zeros(0, object)
    if len(course_all):
        merged = pd.MultiIndex.from_arrays([as_text(course_all), as_text(name_all)])
        merged_code, merged_uni = pd.factorize(merged)
        lesson_of_row = np.where(lesson_of_row >= 0, merged_code[np.maximum(lesson_of_row, 0)], -1)
        lesson_course = np.asarray(merged_uni.get_level_values(0), dtype=object)
        lesson_name = np.asarray(merged_uni.get_level_values(1), dtype=object)
    else:
        lesson_course = lesson_name = np.zeros(0, object)

    # duplicates: an exact repeat of user, timestamp, location and event among the valid rows; only
    # rows sharing (user, timestamp) with a neighbour in time order can be one, so few are hashed
    valid_rows = np.flatnonzero(~missing_user & ~bad_ts)
    order = valid_rows[user_time_order(user_code[valid_rows], ts_us[valid_rows], rows[valid_rows])]
    su, st = user_code[order], ts_us[order]
    tie = (su[1:] == su[:-1]) & (st[1:] == st[:-1])
    in_tie = np.zeros(len(order), bool)
    in_tie[1:] |= tie
    in_tie[:-1] |= tie
    candidates = np.sort(order[in_tie])
    duplicate = np.zeros(n, bool)
    if len(candidates):
        frame = pd.DataFrame({"u": user_code[candidates], "t": ts_us[candidates]})
        for i, codes in enumerate(key_codes):
            frame[f"k{i}"] = codes[candidates]
        duplicate[candidates[frame.duplicated(keep="first").to_numpy()]] = True

    rejected = missing_user | bad_ts | duplicate
    reason = np.select([missing_user, bad_ts, duplicate], list(REJECT_REASONS), default="")
    rejects = events.iloc[np.flatnonzero(rejected)].copy()
    rejects["reason"] = reason[rejected]
    rejects.index = rows[rejected]  # input rows, so parts of a partitioned log merge in input order
    keep = order[~duplicate[order]]  # accepted events, sorted by (user, time, input row)
    missed = keep[has_url[keep] & ~named[keep]]
    unmatched = None
    if len(missed):
        first = missed[np.argmin(rows[missed])]
        unmatched = (int(rows[first]), str(urls[url_code[first]]))
    return ValidatedEvents(
        user=user_code[keep],
        ts_us=ts_us[keep],
        lesson=lesson_of_row[keep],
        row=rows[keep],
        user_ids=user_ids,
        lesson_course=lesson_course,
        lesson_name=lesson_name,
        rejects=rejects,
        rows_in=n,
        named_rows=int(named[keep].sum()),
        unmatched_url=unmatched,
    )
