"""The vectorised pipeline against tests/reference_ratings.py (loop-based SPEC section 1) on
generated logs full of edge cases, and the out-of-core path against the in-memory one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from deeprec.data.ratings import RatingsConfig, rate_event_files, rate_events, read_events
from reference_ratings import reference_ratings


def edge_case_log(seed: int, n: int = 1500, users: int = 25) -> pd.DataFrame:
    """A small log with ties, exact 30-min gaps, non-lesson pages, non-view events, duplicates,
    missing users, bad timestamps, full URLs, and ms / ISO timestamps mixed with seconds."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, users, n).astype(str)
    steps = rng.choice([0, 5, 60, 300, 1800, 1801, 4000], n, p=[0.1, 0.2, 0.3, 0.2, 0.08, 0.07, 0.05])
    ts = 1_600_000_000 + np.cumsum(steps)
    course = rng.integers(0, 6, n)
    lesson = rng.integers(0, 1 + course % 4 + 2, n)
    url = np.array([f"/en/c{c}/l{l}" for c, l in zip(course, lesson)], dtype=object)
    kind = rng.random(n)
    url[kind < 0.1] = "/home"
    url[(kind >= 0.1) & (kind < 0.15)] = [f"https://mooc.example/en/c{c}/l0?x=1" for c in course[(kind >= 0.1) & (kind < 0.15)]]
    event = rng.choice(["pageview", "PageView", "click", "video_play"], n, p=[0.6, 0.1, 0.2, 0.1]).astype(object)
    stamps = ts.astype(object)
    form = rng.random(n)
    stamps[form < 0.2] = (ts[form < 0.2] * 1000).astype(object)  # milliseconds
    iso = (form >= 0.2) & (form < 0.35)
    stamps[iso] = pd.to_datetime(ts[iso], unit="s", utc=True).tz_convert("Europe/Paris").map(lambda t: t.isoformat())
    frame = pd.DataFrame({"user_id": user.astype(object), "timestamp": stamps.astype(str), "url": url, "event": event})
    dup = rng.choice(n, 30, replace=False)
    frame = pd.concat([frame, frame.iloc[dup]], ignore_index=True)
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)  # unsorted input
    frame.loc[rng.choice(len(frame), 10, replace=False), "user_id"] = None
    frame.loc[rng.choice(len(frame), 10, replace=False), "timestamp"] = "n/a"
    return frame


def compare(events: pd.DataFrame, cfg: RatingsConfig) -> None:
    result = rate_events(events, cfg)
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in events.to_dict("records")]
    ref = reference_ratings(rows, cfg)

    assert list(zip(result.rejects.index, result.rejects["reason"])) == ref["rejects"]
    s = result.summary
    assert s["rows_in"] == s["rows_accepted"] + sum(s["rows_rejected"].values()) == len(events)
    assert (s["events"], s["lesson_views"]) == (ref["events"], ref["lesson_views"])
    assert s["users_removed"] == ref["users_removed"]
    assert result.sessions.to_dict() == ref["sessions"]

    d = result.lesson_durations
    got = {(u, c, l): (sec, v) for u, c, l, sec, v in zip(d.user_id, d.course_id, d.lesson_id, d.seconds, d.views)}
    assert set(got) == set(ref["durations"])
    for key, (sec, views) in got.items():
        assert sec == pytest.approx(ref["durations"][key], abs=1e-6)
        assert views == ref["views"][key]

    r = result.ratings
    got = {(u, c): row for u, c, row in zip(r.user_id, r.course_id, r.itertuples())}
    assert set(got) == set(ref["ratings"])
    for key, row in got.items():
        want = ref["ratings"][key]
        assert row.rating == pytest.approx(want["rating"], abs=1e-6)
        assert row.pct_viewed == pytest.approx(want["pct"], abs=1e-9)
        assert row.lessons_viewed == want["lessons"]
        assert row.first_seen == pytest.approx(want["first_seen"], abs=1e-6)
        assert row.split == want["split"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_library_equals_reference_with_defaults(seed):
    compare(edge_case_log(seed), RatingsConfig())


@pytest.mark.parametrize(
    "changes",
    [
        dict(threshold="global", penalty="quadratic", min_courses=2),
        dict(threshold="per_user", penalty="log", min_lesson_seconds=60, min_courses=1, max_courses=4),
        dict(threshold="global", penalty="step", min_sessions=3, session_gap_minutes=10),
        dict(penalty="linear", min_courses=1, max_courses=None, train_share=0.5),
    ],
)
def test_library_equals_reference_across_settings(changes):
    compare(edge_case_log(7), dataclasses.replace(RatingsConfig(), **changes))


def test_rerate_equals_a_fresh_run():
    events = edge_case_log(3)
    base = rate_events(events, RatingsConfig(min_courses=1))
    again = rate_events(events, RatingsConfig(min_courses=1, threshold="global", penalty="log", min_lesson_seconds=30))
    pd.testing.assert_frame_equal(base.rerate(threshold="global", penalty="log", min_lesson_seconds=30), again.ratings)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_out_of_core_equals_in_memory(tmp_path, fmt):
    events = edge_case_log(5, n=3000, users=60)
    folder = tmp_path / "log"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(events)), 3)):  # a folder of three files
        chunk = events.iloc[part]
        if fmt == "csv":
            chunk.to_csv(folder / f"part{k}.csv", index=False)
        else:
            chunk.to_parquet(folder / f"part{k}.parquet", index=False)
    cfg = RatingsConfig(min_courses=2, batch_rows=500, n_partitions=7)
    in_memory = rate_events(read_events(folder), cfg, source=str(folder))
    streamed = rate_event_files(folder, cfg, work_dir=tmp_path)
    for name in ("ratings", "lesson_durations", "rejects"):
        pd.testing.assert_frame_equal(getattr(streamed, name), getattr(in_memory, name), check_dtype=False)
    assert streamed.summary == in_memory.summary
    assert len(in_memory.ratings) > 50 and len(in_memory.rejects) >= 40
    assert list(tmp_path.iterdir()) == [folder]  # the scratch partitions are gone


def test_library_equals_reference_on_the_synthetic_generator():
    from deeprec.data.synthetic import generate_events

    events = generate_events(20_000, seed=3)
    compare(events, RatingsConfig(min_courses=2))
