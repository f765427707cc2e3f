"""ratings.engine=spark (deeprec/data/ratings/spark_engine.py) against the pandas engine and by hand.

Every log is rated by both engines; the Spark result must equal the pandas one to 1e-6 in every
column and row order (ratings, lesson durations, rejects with their reasons and input rows, the
summary, the sessions). The pandas engine is itself checked by hand (test_ratings_rules.py) and
against a loop-based reading of the SPEC (test_ratings_reference.py); a few values are checked by
hand here too. Spark runs in local mode, one session for the whole test run (conftest.py).
Skipped when pyspark is not installed; CI installs it (pip install -e ".[dev,spark]").
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")

from deeprec.data.ratings import RatingsConfig, parse_timestamps_us, rate_events, rate_log, write_outputs  # noqa: E402
from deeprec.data.ratings.events import BAD_TS  # noqa: E402
from deeprec.errors import ConfigError, DataError  # noqa: E402
from inprocess_cli import run_cli  # noqa: E402
from test_bad_inputs import WHOLE_INPUT  # noqa: E402
from test_ratings_reference import edge_case_log  # noqa: E402

pytestmark = pytest.mark.usefixtures("spark")


def same(a, b) -> None:
    """The pandas result `a` and the Spark result `b` agree everywhere (floats to 1e-6)."""
    for name in ("ratings", "lesson_durations"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=False, rtol=0, atol=1e-6)
    # rejects: the same rows, values (as text, as written), reasons and input rows; the in-memory column
    # types of a folder of mixed files differ (pandas' concat gives object); the CLI test compares files
    plain = lambda f: f.astype(object).where(f.notna(), None).map(lambda v: v if v is None else str(v))  # noqa: E731
    pd.testing.assert_frame_equal(plain(a.rejects), plain(b.rejects), check_dtype=False)
    sa, sb = dict(a.summary), dict(b.summary)
    assert sa.pop("config")["engine"] == "pandas" and sb.pop("config")["engine"] == "spark"
    assert sa == sb
    assert sb["rows_in"] == sb["rows_accepted"] + sum(sb["rows_rejected"].values())
    assert a.sessions.sort_index().to_dict() == b.sessions.sort_index().to_dict()
    pd.testing.assert_series_equal(a.lessons_in.sort_index(), b.lessons_in.sort_index())


def both(events: pd.DataFrame, **cfg):
    """(pandas result, Spark result) of one in-memory log, checked equal."""
    cfg.setdefault("min_courses", 1)
    base = RatingsConfig(**cfg)
    a, b = rate_events(events, base), rate_events(events, dataclasses.replace(base, engine="spark"))
    same(a, b)
    return a, b


def log(rows, columns=("user_id", "timestamp", "url")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def seconds(result) -> dict:
    d = result.lesson_durations
    return {(u, c, l): s for u, c, l, s in zip(d.user_id, d.course_id, d.lesson_id, d.seconds)}


# -- the hand-made logs of test_ratings_rules.py ---------------------------------------------------
HAND_MADE = {
    "ties-keep-input-order": log([["a", 0, "/c/x/l2"], ["a", 0, "/c/x/l1"], ["a", 10, "/home"]]),
    "gap-of-exactly-30-min": log([["a", 0, "/c/x/l1"], ["a", 1800, "/home"], ["b", 0, "/c/x/l1"], ["b", 100, "/home"]]),
    "gap-of-30-min-and-1-s": log([["a", 0, "/c/x/l1"], ["a", 1801, "/home"], ["b", 0, "/c/x/l1"], ["b", 100, "/home"]]),
    "imputation": log([
        ["b", 0, "/c/x/l1"], ["b", 100, "/home"], ["b", 200, "/c/x/l1"], ["b", 500, "/home"],
        ["b", 600, "/c/x/l2"], ["b", 650, "/home"], ["a", 0, "/c/x/l1"], ["a", 5000, "/c/x/l3"]]),
    "nothing-observed": log([["a", 0, "/c/x/l1"], ["b", 0, "/c/x/l2"]]),
    "non-view-events": log([
        ["a", 0, "/c/x/l1", "pageview"], ["a", 40, "/c/x/l1", "click"],
        ["a", 100, "https://example.org/c/x/l2?tab=2#top", "page_view"], ["a", 160, "/home", "pageview"],
        ["a", 170, "/c/y/m1", None]], columns=("user_id", "timestamp", "url", "event")),
    "deeper-path": log([["a", 0, "en/excel/formulas/extra"], ["a", 5, "/"]]),
    "course-lesson-columns": log([["a", 0, "C1", "L1"], ["a", 7, "C1", "L2"], ["a", 9, None, None], ["a", 12, " ", "L3"]],
                                 columns=("user_id", "timestamp", "course_id", "lesson_id")),
    "rejects-and-duplicates": log([
        ["a", 0, "/c/x/l1", "pageview"], ["a", 0, "/c/x/l1", "pageview"], ["a", 0, "/c/x/l1", "click"],
        [None, 5, "/c/x/l1", "pageview"], ["  ", 5, "/c/x/l1", "pageview"], ["\u3000", 5, "/c/x/l1", "pageview"],
        ["a", "yesterday", "/c/x/l1", "pageview"], ["a", None, "/c/x/l1", "pageview"], ["a", 60, "/home", "pageview"],
        ["a", 60, "/home", "pageview"], ["a", "60", "/home", "pageview"]], columns=("user_id", "timestamp", "url", "event")),
    "ms-iso-offsets-naive": log([
        ["a", str(1577836800 * 1000), "/c/x/l1"], ["a", "2020-01-01T01:01:00+01:00", "/home"],
        ["a", "2020-01-01 00:05:00", "/c/x/l2"], ["a", "2020-01-01T00:06:00.250Z", "/c/x/l3"],
        ["a", "2019-12-31T19:07:00-05:00", "/home"], ["a", "not a time", "/c/x/l1"], ["a", "1577837300.5", "/c/y/l1"]]),
    "mixed-id-types": log([[1, 0, "/c/x/l1"], ["1", 10, "/home"], ["007", 0, "/c/x/l1"], [7, 5, "/c/x/l2"]]),
}


# hand-worked answers on the Spark side (test_ratings_rules.py works them out)
BY_HAND = {
    "ties-keep-input-order": lambda r: seconds(r) == {("a", "c/x", "l1"): 10.0, ("a", "c/x", "l2"): 0.0},
    "gap-of-exactly-30-min": lambda r: seconds(r)[("a", "c/x", "l1")] == 1800.0 and r.sessions["a"] == 1,
    "gap-of-30-min-and-1-s": lambda r: seconds(r)[("a", "c/x", "l1")] == 100.0 and r.sessions["a"] == 2,  # imputed
    "imputation": lambda r: (abs(seconds(r)[("a", "c/x", "l1")] - 200.0) < 1e-9
                             and abs(seconds(r)[("a", "c/x", "l3")] - 150.0) < 1e-9),
    "nothing-observed": lambda r: set(seconds(r).values()) == {0.0},
    "non-view-events": lambda r: seconds(r) == {("a", "c/x", "l1"): 40.0, ("a", "c/x", "l2"): 60.0},
    "deeper-path": lambda r: seconds(r) == {("a", "en/excel", "formulas"): 5.0},
    "course-lesson-columns": lambda r: seconds(r) == {("a", "C1", "L1"): 7.0, ("a", "C1", "L2"): 2.0},
    "rejects-and-duplicates": lambda r: (
        r.rejects["reason"].tolist() == ["duplicate", "missing_user", "missing_user", "missing_user", "bad_timestamp",
                                         "bad_timestamp", "duplicate", "duplicate"]
        and r.rejects.index.tolist() == [1, 3, 4, 5, 6, 7, 9, 10]),
    # l1 0 -> 60 s; l2 300 -> l3 at 360.25; l3 -> /home at 420; c/y/l1 at 500.5 ends the log: imputed with the
    # mean of all observed durations, (60 + 60.25 + 59.75) / 3 = 60
    "ms-iso-offsets-naive": lambda r: seconds(r) == {("a", "c/x", "l1"): 60.0, ("a", "c/x", "l2"): 60.25,
                                                    ("a", "c/x", "l3"): 59.75, ("a", "c/y", "l1"): 60.0},
    "mixed-id-types": lambda r: sorted(r.sessions.index) == ["007", "1", "7"],
}


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hand_made_logs_equal_the_pandas_engine_and_the_hand_worked_values(name):
    _, result = both(HAND_MADE[name])
    assert BY_HAND[name](result), seconds(result)


@pytest.mark.parametrize("changes", [
    {"threshold": "global", "penalty": "log", "session_gap_minutes": 5.0, "max_courses": None, "train_share": 0.5},
    {"threshold": "per_user", "penalty": "quadratic", "min_lesson_seconds": 60.0, "min_sessions": 2, "max_courses": 4},
    {"penalty": "linear", "timestamp_unit": "s", "min_courses": 3, "view_events": ["pageview", "click"]},
], ids=["global-log-gap-5", "per-user-quadratic-filters", "linear-unit-s-views"])
def test_generated_edge_case_logs_with_every_setting(changes, tmp_path):
    """Equal results under each group of settings; write_outputs of the Spark result is the pandas
    folder, and re-rating it (the cached pairs) gives the pandas re-rating."""
    a, b = both(edge_case_log(seed=3), **changes)
    write_outputs(a, tmp_path / "a")
    write_outputs(b, tmp_path / "b")
    for name in ("ratings", "lesson_durations", "rejects"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{name}.parquet"), check_exact=False, rtol=0, atol=1e-6)
    for strategy in ({"threshold": "global", "penalty": "log"}, {"threshold": "per_user", "penalty": "sqrt"}):
        pd.testing.assert_frame_equal(a.rerate(**strategy), b.rerate(**strategy), check_exact=False, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [5_000, pytest.param(300_000, marks=pytest.mark.slow)])
def test_synthetic_generator_log_with_a_catalogue(tmp_path, n):
    """The generator's ISO-timestamped, unsorted log with a course catalogue (300k: run by
    scripts/bench_ratings.py --slow-tests)."""
    from deeprec.data.synthetic import SyntheticConfig, course_catalogue, generate_events

    gen = SyntheticConfig(seed=5, timestamp_format="iso", sort_by_time=False)
    catalogue = tmp_path / "catalogue.csv"
    course_catalogue(gen)[["course_id", "n_lessons"]].to_csv(catalogue, index=False)
    a, b = both(generate_events(n, cfg=gen), min_courses=3, catalogue=str(catalogue))
    assert len(b.ratings) > n // 50 and b.summary["rows_in"] == n


# -- timestamps: the Spark expressions against parse_timestamps_us -----------------------------------
def timestamp_strings(seed: int, n: int) -> list[str]:
    """ISO-like and numeric strings around every rule of the grammar (years 1900-2100)."""
    rnd = random.Random(seed)
    pick = rnd.choice
    out = []
    for _ in range(n):
        s = pick(["", "", " ", "\t", "x"]) + pick(["2024", "2023", "1999", "202", "20245"])
        sep = pick(["-", "-", "/", ".", " ", "\\", "", ":"])
        s += sep + pick(["01", "1", "12", "13", "02", "00", "001"])
        if rnd.random() < 0.8:
            s += pick([sep, sep, "-", ""]) + pick(["01", "1", "29", "30", "31", "00", "9"])
            if rnd.random() < 0.8:
                s += pick(["T", " ", "t", "  "]) + pick(["10", "1", "23", "24", "00", "9", ""])
                hs = pick([":", ":", "", "."])
                if rnd.random() < 0.8:
                    s += hs + pick(["00", "5", "59", "60"])
                    if rnd.random() < 0.7:
                        s += pick([hs, ":", ""]) + pick(["00", "5", "59", "60"])
                        if rnd.random() < 0.5:
                            s += pick([".", ",", ""]) + pick(["", "1", "123456", "1234567", "999999999", "1" * 19])
                if rnd.random() < 0.6:
                    s += pick(["", " "]) + pick(["Z", "z", "+02:00", "-05:30", "+0200", "+2", "+2:3", "+25:00", "+02:60",
                                                 "UTC", "+02:", "-0", "+14:00", "+02:00:00"])
        out.append(s + pick(["", "", " ", "\n", "x"]))
    numbers = ["1600000000", " 1600000000 ", "+1600000000", "1.6e9", ".5", "5.", "1e11", "100000000001", "1600000000123",
               "-1600000000", "1_000", "1d", "0x10", "1e400", "inf", "Infinity", "1e5.5", "e5", "+", ".", "12\x0b",
               "\x1c12", "12\xa0", "1600000000.0000005", "1600000000.0000015", "2.5e-6", "-2.5e-6"]
    # near the canonical form that Spark's own cast reads (spark_engine.CANON): each field at and past its range
    for _ in range(n // 2):
        s = f"{pick(['2024', '2023', '1999', '2100', '1899'])}-{pick(['01', '02', '12', '13', '00'])}-{pick(['01', '28', '29', '30', '31', '32', '00'])}"
        if rnd.random() < 0.85:
            s += pick(["T", " "]) + pick(["00", "09", "23", "24"]) + ":" + pick(["00", "59", "60"])
            if rnd.random() < 0.8:
                s += ":" + pick(["00", "59", "60"]) + pick(["", "", ".5", ".123", ".123456", ".1234567", ".123456789"])
            s += pick(["", "", "Z", "+02:00", "-05:30", "+17:59", "-18:00", "+19:00", "+00:00", "+02:60"])
        out.append(s)
    return out + numbers


def test_timestamp_expressions_equal_the_pandas_parser(spark):
    """Both Spark routes against parse_timestamps_us: the per-row one (numbers, canonical ISO through
    Spark's cast, the grammar in expressions for the rest) and parse_events' (odd text parsed once per
    distinct value on the driver, joined back)."""
    from pyspark.sql import functions as F

    from deeprec.data.ratings.spark_engine import CANON, RUNTIME, TS, _runtime_conf, odd_timestamp_us, parse_events, timestamp_us

    values = timestamp_strings(seed=0, n=4000)
    want = parse_timestamps_us(pd.Series(values + [None], dtype=object))[:-1]
    frame = spark.createDataFrame(pd.DataFrame({"user_id": "u", "timestamp": values, "url": "/c/x/l1", "i": np.arange(len(values))}))
    with _runtime_conf(spark, RUNTIME):
        per_row = timestamp_us(F.col("timestamp"), frame.schema["timestamp"].dataType, "auto", False,
                               odd_timestamp_us(F.col("timestamp")))
        got_rows = frame.select("i", per_row.alias(TS)).toPandas()
        got_distinct = parse_events(frame, RatingsConfig(), {"nanos": False, "csv": False}).select("i", TS).toPandas()
    for got in (got_rows, got_distinct):
        got = got.sort_values("i")[TS].fillna(BAD_TS).astype(np.int64).to_numpy()
        wrong = [(values[i], want[i], got[i]) for i in np.flatnonzero(got != want)]
        assert not wrong, wrong[:10]
    canon = frame.where(F.col("timestamp").rlike(CANON)).count()
    assert (want != BAD_TS).sum() > 250 and canon > 100  # the grammar and the native cast are both exercised


# -- files, folders, the CLI ---------------------------------------------------------------------------
def both_files(path: Path, **cfg):
    cfg.setdefault("min_courses", 1)
    base = RatingsConfig(**cfg)
    a, b = rate_log(path, base, out_of_core=False), rate_log(path, dataclasses.replace(base, engine="spark"))
    same(a, b)
    return a, b


def test_csv_text_rules_and_many_input_partitions(tmp_path, spark):
    """Quoted fields, pyarrow's null strings, a BOM, CRLF, leading zeros; then the same log split into
    many input partitions, so that the input rows come from the per-partition counts."""
    frame = edge_case_log(seed=4, n=3000)
    path = tmp_path / "log.csv"
    text = frame.to_csv(index=False, lineterminator="\r\n")
    text = text.replace("/home", '"/home,again"', 5).replace("\r\n1,", "\r\nNA,", 3).replace("\r\n2,", "\r\n007,", 3)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    a, _ = both_files(path)
    assert a.summary["rows_rejected"]["missing_user"] >= 3
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    try:
        both_files(path)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)


def test_folder_of_csv_tsv_and_parquet_files(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    frame = edge_case_log(seed=5, n=900)
    frame.iloc[:300].to_csv(folder / "a.csv", index=False)
    frame.iloc[300:600].to_csv(folder / "b.tsv", index=False, sep="\t")
    third = frame.iloc[600:].copy()
    third["user_id"] = pd.to_numeric(third["user_id"], errors="coerce").astype("Int64")
    third["timestamp"] = 1_600_000_000 + np.arange(len(third), dtype=np.int64) * 37  # an integer column
    third.to_parquet(folder / "c.parquet", index=False)
    both_files(folder)
    # the same-columns rule (safety, issue 14): a file of the folder without `event` is refused by both engines
    frame.iloc[300:600].drop(columns="event").to_csv(folder / "b.tsv", index=False, sep="\t")
    for engine in ("pandas", "spark"):
        with pytest.raises(DataError, match=r"b\.tsv: lacks the column\(s\) 'event' that a\.csv has"):
            rate_log(folder, RatingsConfig(min_courses=1, engine=engine), out_of_core=False)


def test_parquet_course_lesson_columns_integer_users_and_ns_timestamps(tmp_path):
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 40, n),
        "timestamp": pd.Timestamp("2024-03-01", tz="Europe/Rome") + pd.to_timedelta(np.sort(rng.integers(0, 10**6, n)), unit="s"),
        "course_id": rng.choice(["C1", "C2", "C3", " "], n), "lesson_id": rng.choice(["L1", "L2", "L3"], n),
        "extra": rng.random(n),
    })
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    a, _ = both_files(tmp_path / "log.parquet", min_courses=2)
    assert len(a.ratings) > 0


def test_cli_engine_spark_writes_the_same_folder(tmp_path, monkeypatch, capsys):
    path = tmp_path / "log.csv"
    edge_case_log(seed=6).to_csv(path, index=False)
    code, err = run_cli("deeprec.cli.ratings", [f"input={path}", f"output={tmp_path / 'pd'}", "ratings.min_courses=1"], monkeypatch, capsys)
    assert code == 0, err
    code, err = run_cli("deeprec.cli.ratings", [f"input={path}", f"output={tmp_path / 'sp'}", "ratings.min_courses=1", "engine=spark",
                                                 "spark.shuffle_partitions=3"], monkeypatch, capsys)
    assert code == 0, err
    # beside deeprec's ownership marker (.deeprec/, deeprec.outputs) the five files of the pandas engine
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == [".deeprec", "lesson_durations.parquet", "ratings.parquet",
                                                                   "rejects.parquet", "summary.json", "user_features.parquet"]
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == sorted(p.name for p in (tmp_path / "pd").iterdir())
    for name in ("ratings", "lesson_durations", "rejects"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pd" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "sp" / f"{name}.parquet"), check_exact=False, rtol=0, atol=1e-6)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("pd", "sp"))
    assert sb["config"]["engine"] == "spark" and sb["config"]["spark"]["shuffle_partitions"] == 3
    sa.pop("config"), sb.pop("config")
    assert sa == sb
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_data_configs_take_the_engine(tmp_path):
    from hydra import compose, initialize_config_dir

    from deeprec.cli.common import CONFIG_PATH
    from deeprec.config import validate_section
    from deeprec.data.adapters import events, synthetic

    path = tmp_path / "log.csv"
    edge_case_log(seed=7).to_csv(path, index=False)
    conf = str((Path(__file__).parents[1] / "conf").resolve()) if not Path(CONFIG_PATH).is_absolute() else CONFIG_PATH
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=["data=events", f"data.path={path}", "data.engine=spark", "data.ratings.min_courses=1",
                                          "data.ratings.spark.shuffle_partitions=2"])
        syn = compose("train", overrides=["data=synthetic", "data.engine=spark", "data.n_events=20000"])
    ecfg = validate_section(cfg.data, events.EventsDataConfig, "data=events")
    assert ecfg.ratings.engine == "spark" and ecfg.ratings.spark.shuffle_partitions == 2
    spark_data = events.load(ecfg)
    pandas_data = events.load(dataclasses.replace(ecfg, ratings=dataclasses.replace(ecfg.ratings, engine="pandas")))
    pd.testing.assert_frame_equal(spark_data.frame, pandas_data.frame, check_exact=False, rtol=0, atol=1e-6)
    scfg = validate_section(syn.data, synthetic.SyntheticDataConfig, "data=synthetic")
    assert scfg.ratings.engine == "spark"
    a = synthetic.load(scfg)
    b = synthetic.load(dataclasses.replace(scfg, ratings=dataclasses.replace(scfg.ratings, engine="pandas")))
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=False, rtol=0, atol=1e-6)


# -- bad input: the pandas engine's errors -------------------------------------------------------------
@pytest.mark.parametrize("case, name, content, message", WHOLE_INPUT, ids=[c[0] for c in WHOLE_INPUT])
def test_whole_input_errors_are_the_pandas_engines(tmp_path, case, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataError, match=message):
        rate_log(path, RatingsConfig(engine="spark"))


def test_invalid_utf8_past_the_header_and_missing_paths(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(b"user_id,timestamp,url\na,0,/c/x/l1\nJos\xe9,1,/c/x/l2\n")
    with pytest.raises(DataError) as pandas_error:
        rate_log(path, RatingsConfig())
    with pytest.raises(DataError) as spark_error:
        rate_log(path, RatingsConfig(engine="spark"))
    assert str(spark_error.value) == str(pandas_error.value)
    with pytest.raises(DataError, match="no such file or folder"):
        rate_log(tmp_path / "absent.csv", RatingsConfig(engine="spark"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .csv"):
        rate_log(tmp_path / "empty", RatingsConfig(engine="spark"))


def test_missing_pyspark_or_java_is_one_clear_line(monkeypatch):
    import sys

    from deeprec.data.ratings import spark_engine
    from deeprec.data.ratings.config import SparkConfig
    from pyspark.sql import SparkSession

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.setattr(spark_engine.shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    with pytest.raises(ConfigError, match=r"needs a Java 17\+ runtime.*openjdk-17-jre-headless"):
        spark_engine.spark_session(SparkConfig())
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ConfigError, match=re.escape('pip install "deeprec[spark]"')):
        spark_engine.spark_session(SparkConfig())


def test_config_values_are_checked():
    with pytest.raises(ConfigError, match="ratings.engine='duckdb'"):
        RatingsConfig(engine="duckdb").check()
    with pytest.raises(ConfigError, match="shuffle_partitions"):
        RatingsConfig(spark=dataclasses.replace(RatingsConfig().spark, shuffle_partitions=-1)).check()


def test_java_url_pattern_keeps_the_python_meaning():
    from deeprec.data.ratings.spark_engine import java_url_pattern

    java, course, lesson = java_url_pattern(r"^/(?P<lang>\w+)/(?P<course>[^/]+)/(?P=lang)-(?P<lesson>\d+)\Z")
    assert java == r"(?Ud)^/(\w+)/([^/]+)/(?:\1)-(\d+)\z" and (course, lesson) == (2, 3)


def test_custom_url_pattern_and_view_events(tmp_path):
    events = log([["a", 0, "/en/x/en-1", "open"], ["a", 30, "/en/x/en-2", "open"], ["a", 50, "/en/x/fr-3", "open"],
                  ["a", 70, "/home", "open"]], columns=("user_id", "timestamp", "url", "event"))
    _, b = both(events, url_pattern=r"^/(?P<lang>\w+)/(?P<course>[^/]+)/(?P=lang)-(?P<lesson>\d+)\Z", view_events=["open"])
    assert seconds(b) == {("a", "x", "1"): 30.0, ("a", "x", "2"): 20.0}


# -- the real EPM clickstream ----------------------------------------------------------------------------
@pytest.mark.shared_data
def test_epm_clickstream_equals_the_pandas_engine(shared_data):
    from test_ratings_epm import epm_log

    a, b = both(epm_log(shared_data), min_courses=3, min_lesson_seconds=60)
    assert b.summary["rows_in"] > 100_000 and len(b.ratings) > 100
