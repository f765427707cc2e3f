"""A deliberately simple, loop-based reading of SPEC section 1, for checking the vectorised library.

Plain Python over rows (dicts), standard-library parsing (float, datetime.fromisoformat, re,
urllib), no pandas/numpy logic; slow on purpose and written straight from the SPEC text.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import datetime, timezone
from urllib.parse import urlsplit

PENALTY = {
    "quadratic": lambda x: x * x,
    "linear": lambda x: x,
    "log": lambda x: math.log2(1 + x),
    "sqrt": lambda x: math.sqrt(x),
    "step": lambda x: 0.0,
}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def parse_ts(value, unit="auto"):
    """Epoch seconds or None (SPEC 1.1)."""
    if _missing(value):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = None
    if x is not None:
        if not math.isfinite(x):
            return None
        if unit == "ms" or (unit == "auto" and abs(x) > 1e11):
            return x / 1000.0
        return x
    try:
        stamp = datetime.fromisoformat(str(value).strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def location(row, pattern):
    """(course, lesson) or None."""
    course, lesson = row.get("course_id"), row.get("lesson_id")
    if not _missing(course) and not _missing(lesson):
        return str(course), str(lesson)
    url = row.get("url")
    if _missing(url):
        return None
    match = re.match(pattern, urlsplit(str(url)).path)
    if match is None:
        return None
    return match.group("course"), match.group("lesson")


def reference_ratings(rows: list[dict], cfg) -> dict:
    """Everything SPEC 1.2-1.9 defines, computed one row at a time."""
    rejects, seen, events = [], set(), []
    for i, row in enumerate(rows):
        if _missing(row.get("user_id")):
            rejects.append((i, "missing_user"))
            continue
        ts = parse_ts(row.get("timestamp"), cfg.timestamp_unit)
        if ts is None:
            rejects.append((i, "bad_timestamp"))
            continue
        key = (str(row["user_id"]), ts, row.get("url"), row.get("course_id"), row.get("lesson_id"), row.get("event"))
        if key in seen:
            rejects.append((i, "duplicate"))
            continue
        seen.add(key)
        loc = location(row, cfg.url_pattern)
        is_view = loc is not None and ("event" not in row or row.get("event") in cfg.view_events)
        events.append({"i": i, "user": str(row["user_id"]), "ts": ts, "lesson": loc if is_view else None})

    by_user = defaultdict(list)
    for e in events:
        by_user[e["user"]].append(e)
    sessions = {}
    observed = defaultdict(list)  # (course, lesson) -> observed d
    views = []  # (user, course, lesson, d or None, ts, i)
    for user, evs in by_user.items():
        evs.sort(key=lambda e: (e["ts"], e["i"]))
        count = 0
        for k, e in enumerate(evs):
            if k == 0 or evs[k]["ts"] - evs[k - 1]["ts"] > cfg.session_gap_minutes * 60:
                count += 1
            if e["lesson"] is None:
                continue
            nxt = evs[k + 1] if k + 1 < len(evs) else None
            if nxt is not None and nxt["ts"] - e["ts"] <= cfg.session_gap_minutes * 60:
                d = nxt["ts"] - e["ts"]
                observed[e["lesson"]].append(d)
            else:
                d = None
            views.append((user, e["lesson"][0], e["lesson"][1], d, e["ts"], e["i"]))
        sessions[user] = count

    all_observed = [d for ds in observed.values() for d in ds]
    durations, first_view, lessons_in = defaultdict(float), {}, defaultdict(set)
    view_counts = defaultdict(int)
    for user, course, lesson, d, ts, i in views:
        view_counts[(user, course, lesson)] += 1
        if d is None:
            if observed[(course, lesson)]:
                d = sum(observed[(course, lesson)]) / len(observed[(course, lesson)])
            elif all_observed:
                d = sum(all_observed) / len(all_observed)
            else:
                d = 0.0
        durations[(user, course, lesson)] += d
        key = (user, course, lesson)
        if key not in first_view or (ts, i) < first_view[key]:
            first_view[key] = (ts, i)
        lessons_in[course].add(lesson)

    n_lessons = {c: len(ls) for c, ls in lessons_in.items()}
    n_lessons.update(getattr(cfg, "catalogue_table", None) or {})
    pairs = {}
    for (user, course, lesson), seconds in durations.items():
        if seconds >= cfg.min_lesson_seconds:
            p = pairs.setdefault((user, course), {"lessons": 0, "first": (math.inf, 0)})
            p["lessons"] += 1
            p["first"] = min(p["first"], first_view[(user, course, lesson)])
    for (user, course), p in pairs.items():
        p["pct"] = p["lessons"] / n_lessons[course]

    removed = {}
    for name in ("min_sessions", "max_courses", "min_courses"):
        courses = defaultdict(int)
        for user, course in pairs:
            courses[user] += 1
        drop = set()
        for user, n in courses.items():
            if name == "min_sessions" and sessions[user] < cfg.min_sessions:
                drop.add(user)
            if name == "max_courses" and cfg.max_courses is not None and n > cfg.max_courses:
                drop.add(user)
            if name == "min_courses" and n < cfg.min_courses:
                drop.add(user)
        removed[name] = len(drop)
        pairs = {k: v for k, v in pairs.items() if k[0] not in drop}

    user_pcts = defaultdict(list)
    for (user, course), p in pairs.items():
        user_pcts[user].append(p["pct"])
    all_pcts = [p["pct"] for p in pairs.values()]
    for (user, course), p in pairs.items():
        if cfg.threshold == "per_user":
            t = sum(user_pcts[user]) / len(user_pcts[user])
        else:
            t = sum(all_pcts) / len(all_pcts)
        x = p["pct"] / t
        p["rating"] = 5.0 if x >= 1 else 5.0 * PENALTY[cfg.penalty](x)

    for user in user_pcts:
        mine = sorted((p["first"], course) for (u, course), p in pairs.items() if u == user)
        n = len(mine)
        n_train = min(max(math.floor(cfg.train_share * n), 1), n - 1)
        for rank, (_, course) in enumerate(mine):
            pairs[(user, course)]["split"] = "train" if rank < n_train else "test"
            pairs[(user, course)]["first_seen"] = pairs[(user, course)]["first"][0]

    return {
        "rejects": rejects,
        "durations": dict(durations),
        "views": dict(view_counts),
        "ratings": pairs,
        "sessions": sessions,
        "users_removed": removed,
        "events": len(events),
        "lesson_views": len(views),
    }
