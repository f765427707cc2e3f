"""deeprec's own generator of realistic MOOC activity logs in the SPEC 1.1 format (user_id, timestamp, url, event).

A catalogue of courses (ordered lessons, a topic, a difficulty, a language, a skewed popularity) and
cohorts of learners (topic interests, ability, activity). Each learner enrols in a few courses drawn by
popularity x interest, follows each course's lessons in order (skipping a few) until dropping out
(more often when the course is hard for them), in sessions separated by breaks longer than the
ratings pipeline's session gap; around the lesson pageviews come non-lesson pages (/home,
/en/search?q=..., /en/profile, a course's landing page: fewer path segments than a lesson URL) and
non-view events on the lesson page (video_play, click, ...) that end a lesson's time.

Everything is vectorised numpy over learners, enrolments, lesson views and events; the only loops are
over blocks of `block_events` events (memory) and the rare extra cohort needed to reach an exact count.
The module is one pipeline over 400 lines on purpose: its config (every knob, validated), the
catalogue, the cohort simulation and the block writer share the private URL vocabulary and cohort
structures; split apart, those internals would become public API.

    from deeprec.data.synthetic import generate_events, write_events, course_catalogue
    log = generate_events(300_000, seed=0)          # a DataFrame, exactly 300,000 rows
    write_events("log.parquet", 50_000_000, seed=0, part_rows=5_000_000)   # a folder of parts
    python -m deeprec.data.synthetic --events 1000000 --out log.csv
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deeprec.atomic import make_temp_folder, remove_deeprec_file
from deeprec.errors import ConfigError

DEFAULT_TOPICS = [
    "algebra", "statistics", "programming", "excel", "writing", "history",
    "biology", "finance", "design", "languages", "chemistry", "music",
]
LEVELS = ["Introduction to", "Foundations of", "Applied", "Advanced"]
NON_LESSON_KINDS = ("home", "search", "profile", "landing")
_CATALOGUE_STREAM = 0x5EED_CA7A  # seed stream of the catalogue (independent of the learner cohorts)


@dataclass
class SyntheticConfig:
    """Every knob of the generator; defaults give a few thousand learners per 300k events, ~150 courses."""

    seed: int = 0
    # catalogue
    n_courses: int = 150
    lessons_min: int = 4
    lessons_max: int = 20
    n_topics: int = 12  # the first ones are named by topic_names, the rest topic-<k>
    topic_names: list[str] = field(default_factory=lambda: list(DEFAULT_TOPICS))
    languages: list[str] = field(default_factory=lambda: ["en", "es", "pt"])
    language_weights: list[float] = field(default_factory=lambda: [0.6, 0.3, 0.1])
    popularity_exponent: float = 1.0  # course weight = rank^-exponent (Zipf); 0 = uniform
    # learners
    mean_courses_per_user: float = 4.0  # 1 + Poisson(activity * (mean - 1)), capped below
    max_courses_per_user: int = 30
    activity_sigma: float = 0.6  # log-normal spread of learner activity (courses taken)
    interest_concentration: float = 0.3  # Dirichlet parameter of topic interests (small = focused)
    interest_strength: float = 1.0  # weight of log(interest in the course's topic) when choosing courses
    ability_beta: list[float] = field(default_factory=lambda: [4.0, 3.0])  # learner ability ~ Beta(a, b)
    # progress through a course
    dropout_rate: float = 0.12  # base probability of leaving a course after each lesson
    difficulty_effect: float = 2.0  # hazard x exp(effect * (difficulty - ability))
    interest_effect: float = 0.3  # hazard x exp(-effect * (relative interest in the topic - 1))
    skip_rate: float = 0.08  # share of lessons (after the first) skipped inside the part followed
    lessons_per_session: float = 3.0  # mean lesson views per session of one course
    # time
    start_date: str = "2023-01-01"
    span_days: float = 365.0  # learners arrive uniformly over this span
    enrol_interval_days: float = 20.0  # mean days between a learner's successive enrolments
    session_break_days: float = 2.0  # median break between two sessions of one course
    session_break_sigma: float = 1.0  # log-normal spread of that break
    min_session_break_minutes: float = 45.0  # every break between sessions is longer than this
    max_event_gap_minutes: float = 25.0  # every gap inside a session is at most this
    view_seconds_median: float = 240.0  # time on a lesson page before the next event
    event_seconds_median: float = 25.0  # time after a non-view event or a non-lesson page
    gap_sigma: float = 0.8  # log-normal spread of in-session gaps
    # event mix
    non_lesson_share: float = 0.12  # share of events that are non-lesson pages (/home, search, ...)
    non_view_share: float = 0.25  # share of events that are not pageviews (video_play, click, ...)
    view_event: str = "pageview"
    non_view_events: list[str] = field(
        default_factory=lambda: ["video_play", "video_pause", "click", "quiz_submit", "download"]
    )
    timestamp_format: str = "epoch"  # epoch (int64 seconds) | iso (ISO-8601 text, UTC with Z)
    sort_by_time: bool = True  # rows in time order (a block at a time), as a platform exports them
    block_events: int = 1_000_000  # events generated at once (memory); blocks are independent cohorts

    def check(self) -> "SyntheticConfig":
        """Raise ConfigError naming the key when a value cannot work."""

        def fail(key: str, why: str) -> None:
            raise ConfigError(f"synthetic.{key}={getattr(self, key)!r} {why}")

        if self.n_courses < 1:
            fail("n_courses", "must be >= 1")
        if not 1 <= self.lessons_min <= self.lessons_max:
            fail("lessons_min", f"must be >= 1 and <= lessons_max ({self.lessons_max})")
        if self.n_topics < 1:
            fail("n_topics", "must be >= 1")
        if not self.languages or len(self.language_weights) != len(self.languages):
            fail("language_weights", f"needs one weight per language ({len(self.languages)})")
        if min(self.language_weights) < 0 or sum(self.language_weights) <= 0:
            fail("language_weights", "must be non-negative with a positive sum")
        if self.mean_courses_per_user < 1:
            fail("mean_courses_per_user", "must be >= 1")
        if self.max_courses_per_user < 1:
            fail("max_courses_per_user", "must be >= 1")
        if len(self.ability_beta) != 2 or min(self.ability_beta) <= 0:
            fail("ability_beta", "must be two positive numbers [a, b]")
        for key in ("dropout_rate", "skip_rate"):
            if not 0 <= getattr(self, key) < 1:
                fail(key, "must be in [0, 1)")
        for key in ("interest_concentration", "lessons_per_session", "span_days", "enrol_interval_days",
                    "session_break_days", "view_seconds_median", "event_seconds_median", "block_events"):
            if not getattr(self, key) > 0:
                fail(key, "must be > 0")
        if not 0 < self.max_event_gap_minutes < self.min_session_break_minutes:
            fail("max_event_gap_minutes", f"must be > 0 and < min_session_break_minutes ({self.min_session_break_minutes})")
        if not (self.non_lesson_share >= 0 and self.non_view_share >= 0 and self.non_lesson_share + self.non_view_share < 1):
            fail("non_view_share", f"and non_lesson_share ({self.non_lesson_share}) must be >= 0 with a sum below 1")
        if self.non_view_share > 0 and not self.non_view_events:
            fail("non_view_events", "must name at least one event when non_view_share > 0")
        if self.timestamp_format not in ("epoch", "iso"):
            fail("timestamp_format", "is not valid; choose epoch or iso")
        try:
            pd.Timestamp(self.start_date)
        except ValueError:
            fail("start_date", "is not a date (e.g. 2023-01-01)")
        return self

    def topic_labels(self) -> list[str]:
        names = list(self.topic_names[: self.n_topics])
        return names + [f"topic-{k}" for k in range(len(names), self.n_topics)]


# -- catalogue ---------------------------------------------------------------------------------

def course_catalogue(cfg: SyntheticConfig | None = None) -> pd.DataFrame:
    """The courses: course_id (`<lang>/<topic>-<k>`, as the default url_pattern extracts it), n_lessons,
    topic, difficulty (0..1), title, language, popularity (the Zipf weight, summing to 1).

    Depends only on cfg (its seed and catalogue knobs), so every cohort of a log shares it.
    """
    cfg = (cfg or SyntheticConfig()).check()
    rng = np.random.default_rng([cfg.seed, _CATALOGUE_STREAM])
    n = cfg.n_courses
    topics = np.asarray(cfg.topic_labels(), dtype=object)
    topic = rng.integers(0, cfg.n_topics, n)
    difficulty = rng.beta(2.0, 2.0, n)
    n_lessons = rng.integers(cfg.lessons_min, cfg.lessons_max + 1, n)
    weights = np.asarray(cfg.language_weights, np.float64)
    language = np.asarray(cfg.languages, dtype=object)[rng.choice(len(weights), n, p=weights / weights.sum())]
    popularity = np.empty(n)
    popularity[rng.permutation(n)] = np.arange(1, n + 1, dtype=np.float64) ** -cfg.popularity_exponent
    popularity /= popularity.sum()
    number = pd.Series(topic).groupby(topic).cumcount().to_numpy() + 1  # k-th course of its topic
    slug = pd.Series(topics[topic]).str.replace(r"[^a-z0-9]+", "-", regex=True).to_numpy(dtype=object)
    level = np.minimum((difficulty * len(LEVELS)).astype(int), len(LEVELS) - 1)
    return pd.DataFrame({
        "course_id": language + "/" + slug + "-" + pd.Series(number).astype(str).str.zfill(2).to_numpy(dtype=object),
        "n_lessons": n_lessons.astype(np.int64),
        "topic": topics[topic],
        "difficulty": difficulty,
        "title": np.asarray(LEVELS, dtype=object)[level] + " " + pd.Series(topics[topic]).str.title().to_numpy(dtype=object)
        + " " + number.astype(str),
        "language": language,
        "popularity": popularity,
    })


@dataclass
class _Urls:
    """Every URL the generator can emit, as one categorical vocabulary with arithmetic codes."""

    names: np.ndarray  # [n_urls] str
    lesson_start: np.ndarray  # [n_courses] code of the course's lesson 1 (lessons are consecutive)
    home: np.ndarray  # [2] codes of "/" and "/home"
    search: np.ndarray  # [n_languages, n_topics] codes of /<lang>/search?q=<topic>
    profile: np.ndarray  # [n_languages]
    landing: np.ndarray  # [n_courses] codes of /<course_id>


def _url_vocabulary(catalogue: pd.DataFrame, cfg: SyntheticConfig) -> _Urls:
    n_lessons = catalogue["n_lessons"].to_numpy()
    course = np.repeat(catalogue["course_id"].to_numpy(dtype=object), n_lessons)
    within = np.arange(n_lessons.sum()) - np.repeat(np.cumsum(n_lessons) - n_lessons, n_lessons) + 1
    lessons = "/" + course + "/lesson-" + pd.Series(within).astype(str).str.zfill(2).to_numpy(dtype=object)
    langs = np.asarray(cfg.languages, dtype=object)
    topics = pd.Series(cfg.topic_labels()).str.replace(r"[^a-z0-9]+", "+", regex=True).to_numpy(dtype=object)
    search = ("/" + np.repeat(langs, len(topics)) + "/search?q=" + np.tile(topics, len(langs)))
    profile = "/" + langs + "/profile"
    landing = "/" + catalogue["course_id"].to_numpy(dtype=object)
    names = np.concatenate([lessons, np.array(["/", "/home"], dtype=object), search, profile, landing])
    n_l, n_s = len(lessons), len(search)
    return _Urls(
        names=names.astype(str),
        lesson_start=(np.cumsum(n_lessons) - n_lessons).astype(np.int64),
        home=np.array([n_l, n_l + 1]),
        search=(n_l + 2 + np.arange(n_s)).reshape(len(langs), len(topics)),
        profile=n_l + 2 + n_s + np.arange(len(langs)),
        landing=n_l + 2 + n_s + len(langs) + np.arange(len(catalogue)),
    )


# -- one cohort of learners ----------------------------------------------------------------------

def _segment_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def _position_in_segment(counts: np.ndarray) -> np.ndarray:
    """[sum(counts)] 0, 1, ..., c-1 for each segment length c."""
    return np.arange(counts.sum()) - np.repeat(_segment_starts(counts), counts)


@dataclass
class _Cohort:
    """Events of one cohort, in generation order. user: [N] local learner index; ts: [N] int64 s."""

    user: np.ndarray
    ts: np.ndarray
    url: np.ndarray
    event: np.ndarray  # code into ["view_event", *non_view_events]
    n_users: int


def _cohort(n_users: int, rng: np.random.Generator, catalogue: pd.DataFrame, urls: _Urls, cfg: SyntheticConfig) -> _Cohort:
    """Simulate `n_users` learners end to end (enrolments -> lesson views -> sessions -> events)."""
    n_courses = len(catalogue)
    course_topic = pd.Index(cfg.topic_labels()).get_indexer(catalogue["topic"])
    course_lang = pd.Index(cfg.languages).get_indexer(catalogue["language"])
    n_lessons = catalogue["n_lessons"].to_numpy()
    difficulty = catalogue["difficulty"].to_numpy()

    # learners: interests [U, T], ability [U], activity -> number of courses [U], arrival time
    interest = rng.dirichlet(np.full(cfg.n_topics, cfg.interest_concentration), n_users)
    ability = rng.beta(*cfg.ability_beta, n_users)
    activity = np.exp(cfg.activity_sigma * rng.standard_normal(n_users) - cfg.activity_sigma**2 / 2)
    k = 1 + rng.poisson(activity * (cfg.mean_courses_per_user - 1))
    k = np.minimum(k, min(cfg.max_courses_per_user, n_courses))
    arrival = rng.random(n_users) * cfg.span_days * 86400.0

    # enrolments without replacement, P ∝ popularity x interest^strength: the k smallest Exp(1)/weight
    # (the exponential form of Gumbel-top-k: no logarithms over the [U, n_courses] matrix)
    affinity = np.power(interest + 1e-3, cfg.interest_strength).astype(np.float32)
    weight = affinity[:, course_topic] * catalogue["popularity"].to_numpy(np.float32)[None, :]
    keys = rng.standard_exponential(weight.shape, dtype=np.float32) / weight
    k_max = int(k.max())
    if k_max < n_courses:
        top = np.argpartition(keys, k_max - 1, axis=1)[:, :k_max]
        order = np.take_along_axis(top, np.argsort(np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
    else:
        order = np.argsort(keys, axis=1)
    take = np.arange(order.shape[1])[None, :] < k[:, None]
    e_user = np.repeat(np.arange(n_users), k)
    e_course = order[take]  # row-major: each learner's courses in preference (= enrolment) order
    e_rank = _position_in_segment(k)
    gaps = rng.exponential(cfg.enrol_interval_days * 86400.0, len(e_user)) * (e_rank > 0)
    e_start = arrival[e_user] + np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[_segment_starts(k)] - gaps[_segment_starts(k)], k)

    # progress: lessons followed until drop-out (geometric hazard), hard / uninteresting courses lose more
    relative_interest = interest[e_user, course_topic[e_course]] * cfg.n_topics
    exponent = cfg.difficulty_effect * (difficulty[e_course] - ability[e_user]) - cfg.interest_effect * (relative_interest - 1)
    hazard = np.clip(cfg.dropout_rate * np.exp(np.clip(exponent, -6, 6)), 1e-6, 1.0)
    reached = np.minimum(rng.geometric(hazard), n_lessons[e_course])

    # lesson views: lesson 1..reached of each enrolment, a few skipped (never the first)
    v_enrol = np.repeat(np.arange(len(e_user)), reached)
    v_lesson = _position_in_segment(reached)
    keep = (v_lesson == 0) | (rng.random(len(v_enrol)) >= cfg.skip_rate)
    v_enrol, v_lesson = v_enrol[keep], v_lesson[keep]
    n_views = len(v_enrol)

    # sessions: a new one at each enrolment's first view and with prob 1/lessons_per_session after
    first = np.r_[True, v_enrol[1:] != v_enrol[:-1]]
    new_session = first | (rng.random(n_views) < 1.0 / cfg.lessons_per_session)
    v_session = np.cumsum(new_session) - 1
    s_enrol = v_enrol[new_session]
    s_user = e_user[s_enrol]
    s_first = first[new_session]
    breaks = cfg.session_break_days * 86400.0 * np.exp(cfg.session_break_sigma * rng.standard_normal(len(s_enrol)))
    breaks = np.where(s_first, 0.0, breaks)
    cum = np.cumsum(breaks)
    enrol_first_session = np.flatnonzero(s_first)
    s_nominal = e_start[s_enrol] + cum - np.repeat(cum[enrol_first_session], np.diff(np.r_[enrol_first_session, len(s_enrol)]))

    # events: per lesson view [non-lesson pages] + pageview + [non-view events on the lesson page]
    per_view = 1.0 / (1.0 - cfg.non_lesson_share - cfg.non_view_share)
    n_before = rng.poisson(cfg.non_lesson_share * per_view, n_views)
    n_after = rng.poisson(cfg.non_view_share * per_view, n_views)
    per = n_before + 1 + n_after
    ev_view = np.repeat(np.arange(n_views), per)
    ev_pos = _position_in_segment(per)
    n_ev = len(ev_view)
    before = ev_pos < n_before[ev_view]
    is_view = ev_pos == n_before[ev_view]
    ev_course = e_course[v_enrol[ev_view]]
    url = urls.lesson_start[ev_course] + v_lesson[ev_view]
    # the non-lesson pages: home, a search for the course's topic, the profile, the course's landing page
    rows = np.flatnonzero(before)
    kind = rng.integers(0, len(NON_LESSON_KINDS), len(rows))
    course_of = ev_course[rows]
    lang = course_lang[course_of]
    url[rows] = np.select(
        [kind == 0, kind == 1, kind == 2],
        [urls.home[rng.integers(0, 2, len(rows))], urls.search[lang, course_topic[course_of]], urls.profile[lang]],
        urls.landing[course_of],
    )
    event = np.zeros(n_ev, np.int8)
    after = np.flatnonzero(~(is_view | before))
    event[after] = 1 + rng.integers(0, max(len(cfg.non_view_events), 1), len(after))

    # time inside sessions: each event's dwell until the next one (seconds, capped below the session gap)
    cap = int(cfg.max_event_gap_minutes * 60)
    median = np.where(is_view, cfg.view_seconds_median, cfg.event_seconds_median)
    dwell = np.clip(np.rint(median * np.exp(cfg.gap_sigma * rng.standard_normal(n_ev))), 1, cap).astype(np.int64)
    ev_session = v_session[ev_view]
    s_events = np.bincount(ev_session, minlength=len(s_enrol))
    csum = np.cumsum(dwell)
    s_base = csum[_segment_starts(s_events)] - dwell[_segment_starts(s_events)]
    offset = csum - dwell - s_base[ev_session]  # seconds from the session's first event
    s_length = offset[np.cumsum(s_events) - 1]  # first to last event of the session

    # place sessions: start >= nominal and >= previous session's end + a break > min (a running max)
    floor_nominal = np.floor(s_nominal).astype(np.int64)
    by_time = np.argsort(s_user * (int(floor_nominal.max()) + 1) + floor_nominal, kind="stable")
    length, owner = s_length[by_time], s_user[by_time]
    min_break = int(cfg.min_session_break_minutes * 60) + 1
    pause = min_break + rng.exponential(600.0, len(by_time)).astype(np.int64)
    step = np.r_[0, (length + pause)[:-1]].astype(np.float64)
    step[np.r_[True, owner[1:] != owner[:-1]]] = 0.0
    user_first = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    counts = np.diff(np.r_[user_first, len(owner)])
    cum_step = np.cumsum(step)
    cum_step -= np.repeat(cum_step[user_first], counts)
    slack = floor_nominal[by_time] - cum_step
    big = float(slack.max() - slack.min() + 1.0)
    lifted = slack + np.repeat(np.arange(len(user_first), dtype=np.float64), counts) * big
    start = np.maximum.accumulate(lifted) - np.repeat(np.arange(len(user_first), dtype=np.float64), counts) * big + cum_step
    s_start = np.empty(len(start), np.int64)
    s_start[by_time] = np.rint(start).astype(np.int64)
    ts = s_start[ev_session] + offset
    return _Cohort(user=e_user[v_enrol[ev_view]], ts=ts, url=url, event=event, n_users=n_users)


def _expected_events_per_user(cfg: SyntheticConfig, catalogue: pd.DataFrame) -> float:
    """A rough prior for sizing the first cohort (the realised mean then sizes any top-up)."""
    lessons = float(np.mean(np.minimum(1.0 / cfg.dropout_rate if cfg.dropout_rate else 1e9, catalogue["n_lessons"])))
    return max(cfg.mean_courses_per_user * lessons * 0.6 / (1.0 - cfg.non_lesson_share - cfg.non_view_share), 1.0)


def _block(n_events: int, block_no: int, catalogue: pd.DataFrame, urls: _Urls, cfg: SyntheticConfig) -> pd.DataFrame:
    """Exactly `n_events` events of one cohort: whole learners in generation order, the last one cut
    at its n-th event in time (learners are i.i.d., so keeping the first ones is unbiased)."""
    per_user = _expected_events_per_user(cfg, catalogue)
    parts: list[_Cohort] = []
    have, batch = 0, 0
    while have < n_events:  # usually one pass; a top-up only when the prior undershoots
        need = n_events - have
        n_users = int(math.ceil(need / per_user * 1.05)) + 8
        rng = np.random.default_rng([cfg.seed, block_no, batch])
        part = _cohort(n_users, rng, catalogue, urls, cfg)
        parts.append(part)
        have += len(part.user)
        per_user = max(len(part.user) / n_users, 1.0)
        batch += 1
    offsets = np.cumsum([0] + [p.n_users for p in parts[:-1]])
    user = np.concatenate([p.user + off for p, off in zip(parts, offsets)])
    ts = np.concatenate([p.ts for p in parts])
    url = np.concatenate([p.url for p in parts])
    event = np.concatenate([p.event for p in parts])
    # the learner holding the n-th event (in user order) is cut: keep its earliest events only
    per_learner = np.bincount(user)
    filled = np.cumsum(per_learner)
    last = int(np.searchsorted(filled, n_events))
    room = n_events - (int(filled[last - 1]) if last > 0 else 0)
    keep = user < last
    cut_rows = np.flatnonzero(user == last)
    keep[cut_rows[np.argsort(ts[cut_rows], kind="stable")[:room]]] = True
    user, ts, url, event = user[keep], ts[keep], url[keep], event[keep]
    order = np.argsort(ts, kind="stable") if cfg.sort_by_time else np.lexsort((ts, user))
    start = int(pd.Timestamp(cfg.start_date, tz="UTC").timestamp())
    return _frame(user[order] + block_no * 1_000_000_000, ts[order] + start, url[order], event[order], urls, cfg)


def _frame(user, epoch, url, event, urls: _Urls, cfg: SyntheticConfig) -> pd.DataFrame:
    events = [cfg.view_event, *cfg.non_view_events]
    if cfg.timestamp_format == "iso":
        timestamp = np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s", timezone="UTC")
    else:
        timestamp = epoch.astype(np.int64)
    return pd.DataFrame({
        "user_id": user.astype(np.int64),
        "timestamp": timestamp,
        "url": pd.Categorical.from_codes(url.astype(np.int32), categories=pd.Index(urls.names, dtype=object)),
        "event": pd.Categorical.from_codes(event.astype(np.int8), categories=pd.Index(events, dtype=object)),
    })


def iter_event_blocks(n_events: int, seed: int | None = None, cfg: SyntheticConfig | None = None) -> Iterator[pd.DataFrame]:
    """The log of generate_events as blocks of at most cfg.block_events rows (for bounded memory)."""
    cfg = cfg or SyntheticConfig()
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=int(seed))
    cfg.check()
    if n_events < 1:
        raise ConfigError(f"n_events={n_events} must be >= 1")
    catalogue = course_catalogue(cfg)
    urls = _url_vocabulary(catalogue, cfg)
    for block_no, begin in enumerate(range(0, int(n_events), int(cfg.block_events))):
        yield _block(min(int(cfg.block_events), int(n_events) - begin), block_no, catalogue, urls, cfg)


def generate_events(n_events: int = 200_000, seed: int | None = None, cfg: SyntheticConfig | None = None) -> pd.DataFrame:
    """A SPEC 1.1 log of exactly `n_events` rows: user_id (int64), timestamp (int64 epoch s, or ISO text
    when cfg.timestamp_format="iso"), url and event (categoricals). `seed` overrides cfg.seed.

    Learner ids are unique across blocks (block b's ids start at b * 1e9); rows are in time order
    within each block of cfg.block_events rows.
    """
    blocks = list(iter_event_blocks(n_events, seed, cfg))
    if len(blocks) == 1:
        return blocks[0]
    return pd.concat(blocks, ignore_index=True)


# -- writing ------------------------------------------------------------------------------------

def _arrow_table(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.table({
        "user_id": pa.array(frame["user_id"].to_numpy()),
        "timestamp": pa.array(frame["timestamp"].to_numpy() if frame["timestamp"].dtype != object
                              else frame["timestamp"].astype(str).to_numpy()),
        "url": pa.array(frame["url"]).cast(pa.string()),
        "event": pa.array(frame["event"]).cast(pa.string()),
    }).replace_schema_metadata(WRITTEN_BY)


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        format = "csv" if path.suffix.lower() in (".csv", ".tsv") else "parquet"
    if format not in ("parquet", "csv"):
        raise ConfigError(f"format={format!r} is not valid; choose parquet or csv")
    return format


def write_events(
    path: str | Path,
    n_events: int,
    seed: int | None = None,
    cfg: SyntheticConfig | None = None,
    format: str | None = None,
    part_rows: int | None = None,
) -> Path:
    """Write generate_events(n_events, seed, cfg) to `path`, block by block (memory bounded by
    cfg.block_events): one file when part_rows is None, else a folder of part-NNNNN files of at most
    part_rows rows. Atomic: written beside `path` under a temporary name, then renamed into place.
    `format` (parquet | csv) defaults to the suffix of `path` (.csv -> csv, anything else parquet).
    Never over what deeprec did not write (deeprec.outputs): an existing file is replaced only when
    it is a Parquet log this function wrote, a folder only when deeprec created it, and then only
    its own parts are replaced.
    """
    from deeprec.outputs import claim_output

    path = Path(path)
    fmt = _format_of(path, format)
    if part_rows is not None and part_rows < 1:
        raise ConfigError(f"part_rows={part_rows} must be >= 1 (or None for a single file)")
    if part_rows is not None:
        with claim_output(path, "deeprec-synthetic", key="out") as out:
            return _write_parts(out, n_events, seed, cfg, fmt, part_rows)
    if path.is_dir() or (path.exists() and not _written_here(path)):
        raise ConfigError(f"out={path} exists and deeprec did not write it; give a new path (deeprec never "
                          "writes over a file it did not write)")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = make_temp_folder(path.parent, path.name)
    try:
        target, writer = scratch / "out", None
        for block in iter_event_blocks(n_events, seed, cfg):
            table = _arrow_table(block)
            if writer is None:
                writer = pq.ParquetWriter(target, table.schema) if fmt == "parquet" else pacsv.CSVWriter(str(target), table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
        os.replace(target, path)
    finally:
        _remove_scratch(scratch, ["out"])
    return path


WRITTEN_BY = {b"written_by": b"deeprec-synthetic"}


def _written_here(path: Path) -> bool:
    """A Parquet file write_events wrote (its metadata says so)."""
    try:
        return (pq.read_schema(path).metadata or {}).get(b"written_by") == WRITTEN_BY[b"written_by"]
    except Exception:  # noqa: BLE001 - not Parquet, unreadable: not ours
        return False


def _write_parts(out, n_events: int, seed: int | None, cfg, fmt: str, part_rows: int) -> Path:
    """The folder mode of write_events into a claimed OutputFolder: parts are written beside it,
    then renamed in; the earlier run's parts (and nothing else) are removed."""
    suffix = "parquet" if fmt == "parquet" else "csv"
    scratch = make_temp_folder(out.path.parent, out.path.name)
    names: list[str] = []
    try:
        part_no = 0
        for block in iter_event_blocks(n_events, seed, cfg):
            for begin in range(0, len(block), part_rows):
                table = _arrow_table(block.iloc[begin : begin + part_rows])
                name = f"part-{part_no:05d}.{suffix}"
                names.append(name)  # before writing: a part half-written by a failure is removed too
                pq.write_table(table, scratch / name) if fmt == "parquet" else pacsv.write_csv(table, scratch / name)
                part_no += 1
        out.remove_owned()
        out.own(names)
        for name in names:
            os.replace(scratch / name, out.path / name)
    finally:
        _remove_scratch(scratch, names)
    return out.path


def _remove_scratch(scratch: Path, names: list[str]) -> None:
    """The scratch folder this call made: the files it wrote there (those not renamed out yet), then
    the folder itself when empty (no recursive delete)."""
    for name in names:
        remove_deeprec_file(scratch / name)
    with contextlib.suppress(OSError):
        scratch.rmdir()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deeprec.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="number of events (rows)")
    parser.add_argument("--out", required=True, help="output file (.parquet or .csv) or folder with --part-rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=["parquet", "csv"], default=None, help="default: from --out's suffix")
    parser.add_argument("--part-rows", type=int, default=None, help="write a folder of parts of this many rows")
    parser.add_argument("--catalogue", default=None, help="also write the course catalogue (CSV) here")
    args = parser.parse_args(argv)
    out = write_events(args.out, args.events, args.seed, format=args.format, part_rows=args.part_rows)
    if args.catalogue:
        course_catalogue(SyntheticConfig(seed=args.seed)).to_csv(args.catalogue, index=False)
    print(f"wrote {args.events:,} events to {out}")


if __name__ == "__main__":
    main()
