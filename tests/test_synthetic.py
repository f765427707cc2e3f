"""The synthetic MOOC log generator: determinism, exact size, and the properties it claims, each checked
against an independent computation on the generated log (not the generator's own bookkeeping)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from deeprec.data.ratings import RatingsConfig, rate_events
from deeprec.data.ratings.config import DEFAULT_URL_PATTERN
from deeprec.data.synthetic import SyntheticConfig, course_catalogue, generate_events, main, write_events
from deeprec.errors import ConfigError

SMALL = SyntheticConfig(n_courses=40, seed=3)  # the seed fixes the catalogue and the learners


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return generate_events(60_000, cfg=SMALL)


def lesson_parts(log: pd.DataFrame) -> pd.DataFrame:
    """course and lesson number of each lesson pageview, found by SPEC's default url_pattern (not the generator)."""
    views = log[log["event"] == "pageview"]
    found = views["url"].astype(str).str.extract(DEFAULT_URL_PATTERN)
    views = views.assign(course=found["course"], lesson=found["lesson"]).dropna(subset=["course"])
    return views.assign(number=views["lesson"].str.extract(r"(\d+)$")[0].astype(int))


def test_same_seed_same_log_other_seed_other_log():
    a = generate_events(5_000, seed=11, cfg=SMALL)
    b = generate_events(5_000, seed=11, cfg=SMALL)
    c = generate_events(5_000, seed=12, cfg=SMALL)
    pd.testing.assert_frame_equal(a, b)
    assert not a["timestamp"].equals(c["timestamp"])


@pytest.mark.parametrize("n", [1, 17, 999, 2_500])
def test_exact_event_count_across_blocks(n):
    cfg = SyntheticConfig(n_courses=20, block_events=1_000)
    log = generate_events(n, seed=0, cfg=cfg)
    assert len(log) == n
    # a learner belongs to one block (cohorts are independent): ids never repeat across blocks
    block = np.arange(n) // 1_000
    owners = pd.DataFrame({"user": log["user_id"], "block": block}).drop_duplicates()
    assert owners["user"].is_unique


def test_columns_and_time_order(log):
    assert list(log.columns) == ["user_id", "timestamp", "url", "event"]
    assert log["timestamp"].dtype == np.int64 and log["timestamp"].is_monotonic_increasing
    start = pd.Timestamp(SMALL.start_date, tz="UTC").timestamp()
    assert log["timestamp"].min() >= start


def test_sessions_are_separated_by_long_breaks_and_events_by_short_gaps(log):
    ordered = log.sort_values(["user_id", "timestamp"], kind="stable")
    same_user = ordered["user_id"].to_numpy()[1:] == ordered["user_id"].to_numpy()[:-1]
    gaps = np.diff(ordered["timestamp"].to_numpy())[same_user]
    inside = gaps <= SMALL.max_event_gap_minutes * 60
    between = gaps > SMALL.min_session_break_minutes * 60
    assert (inside | between).all()  # nothing between 25 and 45 minutes: the 30-minute rule is unambiguous
    assert between.sum() > 1_000 and (gaps[inside] >= 1).all()
    assert np.median(gaps[inside]) < 600  # seconds to minutes inside a session
    # the ratings pipeline (gap > 30 min starts a session) finds exactly one session per long break
    result = rate_events(log, RatingsConfig(min_courses=1))
    assert result.summary["sessions"] == int(between.sum()) + log["user_id"].nunique()


def test_non_lesson_pages_do_not_match_the_lesson_pattern(log):
    pattern = re.compile(DEFAULT_URL_PATTERN)
    urls = log["url"].astype(str)
    is_lesson = urls.map(lambda u: pattern.match(u) is not None).to_numpy()  # a slow, obvious reference
    page = urls[~is_lesson]
    assert page.str.count("/").max() <= 2  # /home, /en/search?q=..., /en/profile, /<lang>/<course>
    kinds = {"/home", "/", "search", "profile"}
    assert all(any(k in u for u in page.unique()) for k in kinds)
    assert abs((~is_lesson).mean() - SMALL.non_lesson_share) < 0.03
    assert (log.loc[~is_lesson, "event"] == "pageview").all()


def test_non_view_events_are_on_lesson_pages_with_the_configured_share(log):
    other = log[log["event"] != "pageview"]
    assert set(other["event"].astype(str)) == set(SMALL.non_view_events)
    assert other["url"].astype(str).str.match(DEFAULT_URL_PATTERN).all()
    assert abs(len(other) / len(log) - SMALL.non_view_share) < 0.03


def test_lessons_are_followed_in_order(log):
    views = lesson_parts(log).sort_values(["user_id", "timestamp"], kind="stable")
    step = views.groupby(["user_id", "course"])["number"].diff().dropna()
    assert (step >= 1).all()  # never back to an earlier lesson, skips allowed
    assert (step == 1).mean() > 0.8


def test_dropout_spreads_the_share_of_lessons_viewed(log):
    catalogue = course_catalogue(SMALL).set_index("course_id")
    views = lesson_parts(log)
    pairs = views.groupby(["user_id", "course"])["number"].nunique().rename("seen").reset_index()
    pct = pairs["seen"] / catalogue.loc[pairs["course"], "n_lessons"].to_numpy()
    assert pct.max() <= 1.0
    assert (pct < 0.5).mean() > 0.2 and (pct >= 0.999).mean() > 0.1
    assert pct.std() > 0.2


def test_no_dropout_and_no_skips_means_every_course_is_finished():
    cfg = SyntheticConfig(n_courses=30, dropout_rate=0.0, skip_rate=0.0, sort_by_time=False, seed=1)
    log = generate_events(20_000, cfg=cfg)
    log = log[log["user_id"] != log["user_id"].iloc[-1]]  # in learner order the last one is cut at the exact count
    views = lesson_parts(log)
    seen = views.groupby(["user_id", "course"])["number"].nunique()
    n_lessons = course_catalogue(cfg).set_index("course_id").loc[seen.index.get_level_values(1), "n_lessons"]
    assert len(seen) > 100 and (seen.to_numpy() == n_lessons.to_numpy()).all()


def dataclass_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def test_popularity_is_skewed_and_follows_the_catalogue():
    def enrolments(exponent: float) -> pd.Series:
        cfg = SyntheticConfig(n_courses=60, popularity_exponent=exponent, seed=5)
        views = lesson_parts(generate_events(40_000, cfg=cfg))
        counts = views.drop_duplicates(["user_id", "course"])["course"].value_counts()
        return counts.reindex(course_catalogue(cfg)["course_id"]).fillna(0)

    skewed, flat = enrolments(1.0), enrolments(0.0)
    top_share = lambda c: np.sort(c.to_numpy())[::-1][: len(c) // 10].sum() / c.sum()  # noqa: E731
    # uniform popularity: the top 10% of courses hold little more than 10% of enrolments; Zipf(1): > 2.5x that
    assert top_share(flat) < 0.16 and top_share(skewed) > 2.5 * top_share(flat)
    assert skewed.max() / max(skewed.min(), 1) > 10 and flat.max() / flat.min() < 3
    popularity = course_catalogue(SyntheticConfig(n_courses=60, seed=5))["popularity"].to_numpy()
    rho = pd.Series(popularity).rank().corr(pd.Series(skewed.to_numpy()).rank())
    assert rho > 0.6


def test_catalogue_matches_the_urls():
    catalogue = course_catalogue(SMALL)
    assert catalogue["course_id"].is_unique and len(catalogue) == SMALL.n_courses
    assert catalogue["n_lessons"].between(SMALL.lessons_min, SMALL.lessons_max).all()
    assert catalogue["difficulty"].between(0, 1).all() and abs(catalogue["popularity"].sum() - 1) < 1e-9
    views = lesson_parts(generate_events(20_000, cfg=SMALL))
    assert set(views["course"]) <= set(catalogue["course_id"])
    top = views.groupby("course")["number"].max()
    assert (top <= catalogue.set_index("course_id").loc[top.index, "n_lessons"]).all()


def test_iso_timestamps_are_the_same_instants():
    epoch = generate_events(2_000, seed=4, cfg=SMALL)
    iso = generate_events(2_000, seed=4, cfg=dataclass_replace(SMALL, timestamp_format="iso"))
    parsed = pd.to_datetime(iso["timestamp"], utc=True, format="ISO8601")
    assert ((parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().astype(np.int64).to_numpy() == epoch["timestamp"].to_numpy()).all()


def test_the_ratings_pipeline_accepts_every_row(log):
    result = rate_events(log, RatingsConfig())
    assert result.summary["rows_accepted"] == len(log)
    assert result.summary["users"] > 100 and result.summary["courses"] > 20


@pytest.mark.parametrize("fmt,part_rows", [("parquet", None), ("csv", None), ("parquet", 700), ("csv", 700)])
def test_write_events_round_trip(tmp_path, fmt, part_rows):
    cfg = dataclass_replace(SMALL, block_events=1_000)
    target = tmp_path / ("log." + fmt if part_rows is None else "log")
    write_events(target, 2_300, seed=2, cfg=cfg, format=fmt, part_rows=part_rows)
    files = sorted(target.glob("part-*")) if part_rows else [target]
    if part_rows:
        assert all(len(read(f, fmt)) <= part_rows for f in files)
    back = pd.concat([read(f, fmt) for f in files], ignore_index=True)
    expected = generate_events(2_300, seed=2, cfg=cfg)
    assert back["user_id"].astype(np.int64).tolist() == expected["user_id"].tolist()
    assert back["timestamp"].astype(np.int64).tolist() == expected["timestamp"].tolist()
    assert back["url"].astype(str).tolist() == expected["url"].astype(str).tolist()
    assert back["event"].astype(str).tolist() == expected["event"].astype(str).tolist()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left behind


def read(path, fmt):
    return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)


def test_write_events_is_atomic(tmp_path, monkeypatch):
    import deeprec.data.synthetic as synthetic

    target = tmp_path / "log.parquet"
    write_events(target, 500, seed=0, cfg=SMALL)
    before = pd.read_parquet(target)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_arrow_table", broken)
    with pytest.raises(RuntimeError):
        write_events(target, 800, seed=1, cfg=SMALL)
    pd.testing.assert_frame_equal(pd.read_parquet(target), before)  # the old log is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["log.parquet"]


def test_write_events_never_writes_over_what_deeprec_did_not_write(tmp_path):
    # case: output-foreign-folder (the synthetic generator): a user's folder or file is refused and kept
    from deeprec.errors import ConfigError

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (tmp_path / "mine.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="deeprec did not create"):
        write_events(folder, 100, seed=0, cfg=SMALL, part_rows=50)
    with pytest.raises(ConfigError, match="deeprec did not write"):
        write_events(tmp_path / "mine.csv", 100, seed=0, cfg=SMALL)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (tmp_path / "mine.csv").read_text() == "a,b\n1,2\n"
    write_events(tmp_path / "parts", 100, seed=0, cfg=SMALL, part_rows=50)  # its own folder: rewritten,
    (tmp_path / "parts" / "notes.txt").write_text("mine")  # and what others add stays
    write_events(tmp_path / "parts", 60, seed=0, cfg=SMALL, part_rows=50)
    assert sorted(p.name for p in (tmp_path / "parts").glob("part-*")) == ["part-00000.parquet", "part-00001.parquet"]
    assert (tmp_path / "parts" / "notes.txt").read_text() == "mine"


def test_command_line(tmp_path, capsys):
    main(["--events", "1234", "--out", str(tmp_path / "x.csv"), "--seed", "7", "--catalogue", str(tmp_path / "c.csv")])
    log = pd.read_csv(tmp_path / "x.csv")
    assert len(log) == 1234
    catalogue = pd.read_csv(tmp_path / "c.csv")
    assert len(catalogue) == SyntheticConfig().n_courses
    courses = log["url"].str.extract(DEFAULT_URL_PATTERN)["course"].dropna()
    assert set(courses) <= set(catalogue["course_id"])  # the catalogue of the same seed
    assert "1,234 events" in capsys.readouterr().out


@pytest.mark.parametrize("change", [
    {"lessons_min": 0}, {"max_event_gap_minutes": 50.0}, {"non_lesson_share": 0.6, "non_view_share": 0.5},
    {"timestamp_format": "unix"}, {"language_weights": [1.0]}, {"start_date": "yesterday-ish"},
])
def test_bad_knobs_are_config_errors(change):
    key = next(iter(change))
    with pytest.raises(ConfigError, match=key if key != "non_lesson_share" else "non_view_share"):
        generate_events(100, cfg=dataclass_replace(SyntheticConfig(), **change))
