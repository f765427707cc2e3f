"""Every rule of SPEC section 1 on hand-made logs; the expected values are worked out by hand."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from deeprec.data.ratings import RatingsConfig, parse_timestamps_us, rate_events, ratings_from_durations
from deeprec.data.ratings.events import BAD_TS
from deeprec.errors import ConfigError


def log(rows, columns=("user_id", "timestamp", "url")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def rate(events, **cfg):
    cfg.setdefault("min_courses", 1)
    return rate_events(events, RatingsConfig(**cfg))


def seconds(result) -> dict:
    d = result.lesson_durations
    return {(u, c, l): s for u, c, l, s in zip(d.user_id, d.course_id, d.lesson_id, d.seconds)}


def test_ties_keep_input_order():
    # both views at t=0: in input order l1 (0 s to l2), then l2 (10 s to /home)
    result = rate(log([["a", 0, "/c/x/l1"], ["a", 0, "/c/x/l2"], ["a", 10, "/home"]]))
    assert seconds(result) == {("a", "c/x", "l1"): 0.0, ("a", "c/x", "l2"): 10.0}
    flipped = rate(log([["a", 0, "/c/x/l2"], ["a", 0, "/c/x/l1"], ["a", 10, "/home"]]))
    assert seconds(flipped) == {("a", "c/x", "l1"): 10.0, ("a", "c/x", "l2"): 0.0}


def test_gap_of_exactly_30_minutes_is_the_same_session_and_one_second_more_is_not():
    observed_elsewhere = [["b", 0, "/c/x/l1"], ["b", 100, "/home"]]  # l1's observed mean = 100 s
    same = rate(log([["a", 0, "/c/x/l1"], ["a", 1800, "/home"]] + observed_elsewhere))
    assert seconds(same)[("a", "c/x", "l1")] == 1800.0
    assert same.sessions["a"] == 1
    split = rate(log([["a", 0, "/c/x/l1"], ["a", 1801, "/home"]] + observed_elsewhere))
    assert seconds(split)[("a", "c/x", "l1")] == 100.0  # last of its session: imputed
    assert split.sessions["a"] == 2
    assert split.summary["sessions"] == 3


def test_imputation_lesson_mean_then_global_mean_then_zero():
    events = log(
        [
            ["b", 0, "/c/x/l1"], ["b", 100, "/home"],  # l1 observed 100
            ["b", 200, "/c/x/l1"], ["b", 500, "/home"],  # l1 observed 300
            ["b", 600, "/c/x/l2"], ["b", 650, "/home"],  # l2 observed 50
            ["a", 0, "/c/x/l1"],  # ends its session (next event 5000 s later): l1 mean = 200
            ["a", 5000, "/c/x/l3"],  # nobody finished l3: mean of all observed = 450 / 3 = 150
        ]
    )
    got = seconds(rate(events))
    assert got[("a", "c/x", "l1")] == pytest.approx(200.0)
    assert got[("a", "c/x", "l3")] == pytest.approx(150.0)
    assert got[("b", "c/x", "l1")] == pytest.approx(400.0)  # summed over views and sessions
    assert got[("b", "c/x", "l2")] == pytest.approx(50.0)
    nothing_observed = rate(log([["a", 0, "/c/x/l1"], ["b", 0, "/c/x/l2"]]))
    assert set(seconds(nothing_observed).values()) == {0.0}


def test_non_lesson_pages_and_non_view_events_end_a_lesson_but_are_not_views():
    events = log(
        [
            ["a", 0, "/c/x/l1", "pageview"],
            ["a", 40, "/c/x/l1", "click"],  # not a view event: ends l1's time
            ["a", 100, "https://example.org/c/x/l2?tab=2#top", "page_view"],
            ["a", 160, "/home", "pageview"],  # no lesson in the path
            ["a", 170, "/c/y/m1", None],  # no event type: not a view
        ],
        columns=("user_id", "timestamp", "url", "event"),
    )
    result = rate(events)
    assert seconds(result) == {("a", "c/x", "l1"): 40.0, ("a", "c/x", "l2"): 60.0}
    views = result.lesson_durations.set_index("lesson_id")["views"].to_dict()
    assert views == {"l1": 1, "l2": 1}
    assert result.summary["lesson_views"] == 2 and result.summary["events"] == 5


def test_url_pattern_default_on_a_deeper_path_and_course_lesson_columns():
    result = rate(log([["a", 0, "en/excel/formulas/extra"], ["a", 5, "/"]]))
    assert seconds(result) == {("a", "en/excel", "formulas"): 5.0}
    cols = log(
        [["a", 0, "C1", "L1"], ["a", 7, "C1", "L2"], ["a", 9, None, None]],
        columns=("user_id", "timestamp", "course_id", "lesson_id"),
    )
    assert seconds(rate(cols)) == {("a", "C1", "L1"): 7.0, ("a", "C1", "L2"): 2.0}


def test_validation_rejects_with_reasons_and_the_rows_in_invariant():
    events = log(
        [
            ["a", 0, "/c/x/l1", "pageview"],
            ["a", 0, "/c/x/l1", "pageview"],  # exact repeat -> duplicate
            ["a", 0, "/c/x/l1", "click"],  # other event: not a duplicate
            [None, 5, "/c/x/l1", "pageview"],
            ["  ", 5, "/c/x/l1", "pageview"],
            ["a", "yesterday", "/c/x/l1", "pageview"],
            ["a", None, "/c/x/l1", "pageview"],
            ["a", 60, "/home", "pageview"],
        ],
        columns=("user_id", "timestamp", "url", "event"),
    )
    result = rate(events)
    assert result.rejects["reason"].tolist() == ["duplicate", "missing_user", "missing_user", "bad_timestamp", "bad_timestamp"]
    assert result.rejects["timestamp"].tolist()[3] == "yesterday"  # the original value is kept
    s = result.summary
    assert s["rows_in"] == 8 and s["rows_accepted"] == 3
    assert s["rows_in"] == s["rows_accepted"] + sum(s["rows_rejected"].values())
    assert s["rows_rejected"] == {"missing_user": 2, "bad_timestamp": 2, "duplicate": 1}


def test_timestamps_seconds_milliseconds_iso_with_offsets_and_naive_utc():
    t = 1577836800  # 2020-01-01T00:00:00Z
    values = pd.Series(
        [
            str(t), str(t * 1000), "2020-01-01T00:00:00Z", "2020-01-01T02:00:00+02:00",
            "2019-12-31T19:00:00-05:00", "2020-01-01 00:00:00", "2020-01-01T00:00:00.250Z", "not a time", None,
        ],
        dtype=object,
    )
    us = parse_timestamps_us(values)
    assert us[:6].tolist() == [t * 10**6] * 6
    assert us[6] == t * 10**6 + 250_000
    assert us[7] == BAD_TS and us[8] == BAD_TS
    assert parse_timestamps_us(pd.Series([10**12]), "s")[0] == 10**18  # unit=s: never milliseconds
    assert parse_timestamps_us(pd.Series([1000]), "ms")[0] == 10**6
    # a pipeline over mixed forms: 60 s from an ms stamp to an ISO stamp with an offset
    mixed = log([["a", str(t * 1000), "/c/x/l1"], ["a", "2020-01-01T01:01:00+01:00", "/home"]])
    assert seconds(rate(mixed)) == {("a", "c/x", "l1"): 60.0}


def durations_frame(rows):
    """user, course, lesson, seconds, first_seen -> a lesson_durations frame."""
    frame = pd.DataFrame(rows, columns=["user_id", "course_id", "lesson_id", "seconds", "first_seen"])
    frame["views"] = 1
    frame["first_row"] = np.arange(len(frame))
    return frame


def three_courses(user="u", counts=(1, 2, 3), start=0.0):
    """`user` viewed counts[i] of the 4 lessons of course A/B/C (pct .25/.5/.75 by default)."""
    rows = []
    for k, (course, n) in enumerate(zip("ABC", counts)):
        rows += [[user, course, f"l{j}", 60.0, start + 10 * k + j] for j in range(n)]
    return rows


LESSONS_IN = pd.Series({"A": 4, "B": 4, "C": 4})
SESSIONS = pd.Series({"u": 1, "v": 1})


@pytest.mark.parametrize(
    "penalty, f_half",
    [("quadratic", 0.25), ("linear", 0.5), ("log", math.log2(1.5)), ("sqrt", math.sqrt(0.5)), ("step", 0.0)],
)
def test_per_user_threshold_and_the_five_penalties(penalty, f_half):
    cfg = RatingsConfig(threshold="per_user", penalty=penalty)
    ratings, _ = ratings_from_durations(durations_frame(three_courses()), SESSIONS, cfg, LESSONS_IN)
    # t_u = (.25 + .5 + .75) / 3 = .5 -> x = .5, 1, 1.5
    assert ratings["pct_viewed"].tolist() == [0.25, 0.5, 0.75]
    assert ratings["rating"].tolist() == pytest.approx([5 * f_half, 5.0, 5.0], abs=1e-12)


@pytest.mark.parametrize("penalty", ["quadratic", "linear", "log", "sqrt", "step"])
def test_global_threshold(penalty):
    rows = three_courses("u") + three_courses("v", counts=(4, 4, 4), start=100)
    cfg = RatingsConfig(threshold="global", penalty=penalty)
    ratings, _ = ratings_from_durations(durations_frame(rows), SESSIONS, cfg, LESSONS_IN)
    # t = (.25 + .5 + .75 + 1 + 1 + 1) / 6 = .75 -> u: x = 1/3, 2/3, 1; v: x = 4/3
    f = {"quadratic": lambda x: x * x, "linear": lambda x: x, "log": lambda x: math.log2(1 + x),
         "sqrt": math.sqrt, "step": lambda x: 0.0}[penalty]
    expected = [5 * f(1 / 3), 5 * f(2 / 3), 5.0, 5.0, 5.0, 5.0]
    assert ratings["rating"].tolist() == pytest.approx(expected, abs=1e-12)


def test_penalty_order_of_the_paper():
    x = np.linspace(0.01, 0.99, 50)
    from deeprec.data.ratings import penalty_rating

    r = {p: penalty_rating(x, p) for p in ("quadratic", "linear", "log", "sqrt", "step")}
    assert (r["sqrt"] > r["log"]).all() and (r["log"] > r["linear"]).all()
    assert (r["linear"] > r["quadratic"]).all() and (r["quadratic"] > r["step"]).all()


def test_duration_filter_and_pairs_without_counted_lessons_disappear():
    rows = [["u", "A", "l0", 10.0, 0], ["u", "A", "l1", 40.0, 1], ["u", "B", "l0", 5.0, 2], ["u", "C", "l0", 30.0, 3]]
    cfg = RatingsConfig(min_lesson_seconds=30, min_courses=1)
    ratings, _ = ratings_from_durations(durations_frame(rows), SESSIONS, cfg, LESSONS_IN)
    # l0 of A (10 s) and B (5 s) do not count; 30 s counts (>=)
    assert ratings["course_id"].tolist() == ["A", "C"]
    assert ratings["lessons_viewed"].tolist() == [1, 1]
    assert ratings["first_seen"].tolist() == [1.0, 3.0]  # first view of a *counted* lesson


def test_catalogue_gives_lessons_in(tmp_path):
    catalogue = tmp_path / "catalogue.csv"
    pd.DataFrame({"course_id": ["c/x"], "n_lessons": [4]}).to_csv(catalogue, index=False)
    events = log([["a", 0, "/c/x/l1"], ["a", 10, "/c/x/l2"], ["a", 20, "/c/y/m1"], ["a", 30, "/home"]])
    result = rate(events, catalogue=str(catalogue))
    pct = result.ratings.set_index("course_id")["pct_viewed"].to_dict()
    assert pct == {"c/x": 0.5, "c/y": 1.0}  # 2 of the catalogue's 4; c/y is not listed: observed 1


def test_user_filters_in_order_with_counts():
    rows, sessions = [], {}
    # w: 5 courses (too many for max_courses=4); x: 2 courses (too few); y: 1 session; z: kept
    for user, n in {"w": 5, "x": 2, "y": 3, "z": 3}.items():
        rows += [[user, f"C{k}", "l0", 60.0, float(k)] for k in range(n)]
        sessions[user] = 1 if user == "y" else 2
    cfg = RatingsConfig(min_sessions=2, max_courses=4, min_courses=3)
    ratings, info = ratings_from_durations(durations_frame(rows), pd.Series(sessions), cfg)
    assert sorted(ratings["user_id"].unique()) == ["z"]
    assert info["users_removed"] == {"min_sessions": 1, "max_courses": 1, "min_courses": 1}
    no_limit = dataclasses.replace(cfg, max_courses=None)
    ratings, info = ratings_from_durations(durations_frame(rows), pd.Series(sessions), no_limit)
    assert sorted(ratings["user_id"].unique()) == ["w", "z"] and info["users_removed"]["max_courses"] == 0


@pytest.mark.parametrize("n, n_train", [(2, 1), (3, 2), (4, 2), (10, 7), (1, 0)])
def test_temporal_split(n, n_train):
    # courses first seen in reverse name order: the split follows time, not names
    rows = [["u", f"C{k}", "l0", 60.0, float(n - k)] for k in range(n)]
    cfg = RatingsConfig(min_courses=1)
    ratings, _ = ratings_from_durations(durations_frame(rows), SESSIONS, cfg)
    by_time = ratings.sort_values("first_seen")
    assert by_time["split"].tolist() == ["train"] * n_train + ["test"] * (n - n_train)


def test_config_values_are_checked():
    with pytest.raises(ConfigError, match="ratings.penalty='cubic'"):
        RatingsConfig(penalty="cubic").check()
    with pytest.raises(ConfigError, match="named groups"):
        RatingsConfig(url_pattern="^/(.*)$").check()
