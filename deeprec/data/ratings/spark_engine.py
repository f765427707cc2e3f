"""SPEC section 1 on Apache Spark (`ratings.engine=spark`): the pandas engine's rules as DataFrame
operations, for logs that already live in a cluster. Same output folder, same values (to 1e-6).

Plan (one read of the log, two cached tables):
1. Read each input file (in table_files order) and tag every row with monotonically_increasing_id,
   which increases with the input order (partitions follow files and byte offsets); per-partition
   row counts turn it into the exact 0-based input row, needed only for the output tables.
2. Parse every row with column expressions (ids as text, SPEC 1.1 timestamps through two regexes,
   the url_pattern through regexp_extract), shuffle once by user, flag duplicates with a window over
   (user, timestamp, location, event) and cache the flagged events (`flagged`).
3. One window per user ordered by (timestamp, input row): sessions, the time to the next event;
   partial sums per (user, course, lesson) are cached (`views`); the two global quantities - the
   imputation means (per lesson and over all lessons) and, for threshold=global, the mean share -
   are aggregations.
4. Lesson durations and rejects are written by Spark as Parquet parts in the scratch folder, merged
   on the driver into the single files of the pandas engine (streamed, one row group at a time), and
   handed to write_outputs like the out-of-core path's files; the ratings (one row per kept
   user-course pair) are collected as pandas.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deeprec.atomic import make_temp_folder, remove_deeprec_folder
from deeprec.data.ratings.config import RatingsConfig, SparkConfig
from deeprec.data.ratings.events import (
    BAD_TS,
    REJECT_REASONS,
    URL_PREFIX,
    _url_lessons,
    check_columns,
    parse_timestamps_us,
)
from deeprec.data.ratings.io import (
    ROW_ID,
    _csv_header,
    check_same_log_columns,
    iter_event_tables,
    parquet_safe,
)
from deeprec.data.tables import TABLE_SUFFIXES, table_files
from deeprec.errors import ConfigError, DataError

# -- SPEC 1.1 timestamps as the pandas engine reads them (parse_timestamps_us), in Java regex ---------
# A number (epoch s or ms) is what pd.to_numeric accepts; other text is the ISO-8601 grammar of
# pandas' parser (format="ISO8601"): optional ws, YYYY, then M/D with one of - . / \ space (1-2 digits)
# or MMDD, then T or space and a time (hh[:mm[:ss[.f{0,18}]]] or hhmm[ss[.f]]), then Z / +-hh[[:]mm].
# tests/test_ratings_spark.py checks these against parse_timestamps_us on thousands of strings.
_WS = r"[ \t\n\x0b\x0c\r]"
NUMBER = rf"^{_WS}*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?{_WS}*\z"
INTEGER = r"^[0-9]{1,15}\z"  # the common case of NUMBER, with a cheaper regex
# canonical ISO-8601, where Spark's own string -> timestamp cast gives pandas' value (checked on the
# generated strings of tests/test_ratings_spark.py); any other text is "odd": parsed per distinct value
CANON = (r"^(?:19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?"
         r"(?:Z|[+-](?:0[0-9]|1[0-7]):[0-5][0-9])?)?)?\z")


def _iso_pattern() -> tuple[str, list[str]]:
    """(Java regex of the ISO-8601 grammar, names of its groups in order)."""
    names: list[str] = []

    def g(name: str, body: str) -> str:
        names.append(name)
        return f"(?<{name}>{body})"

    def time(k: str) -> str:
        frac = lambda j: rf"(?:\.{g(f'f{k}{j}', '[0-9]{0,18}+')})?"  # noqa: E731
        two = (g(f"h{k}a", "[0-9]{2}")
               + rf"(?::{g(f'm{k}a', '[0-9]{1,2}+')}(?::{g(f's{k}a', '[0-9]{1,2}+')}{frac('a')})?"
               + rf"|{g(f'm{k}b', '[0-9]{2}')}(?:{g(f's{k}b', '[0-9]{2}')}{frac('b')})?)?")
        one = g(f"h{k}c", "[0-9]") + rf":{g(f'm{k}c', '[0-9]{1,2}+')}(?::{g(f's{k}c', '[0-9]{1,2}+')}{frac('c')})?"
        zone = (rf"{_WS}*+(?:{g(f'z{k}', 'Z')}{_WS}*|{g(f'sg{k}', '[+-]')}{g(f'oh{k}', '[0-9]{1,2}+')}"
                rf"(?::?{g(f'om{k}', '[0-9]{1,2}+')}{_WS}*)?)?")
        return rf"(?:[T ](?:{two}|{one}){zone})?"

    year = g("Y", "[0-9]{4}")
    sep = g("sep", r"[-./\\ ]")
    dated = g("M1", "[0-9]{1,2}+") + r"(?:\k<sep>" + g("D1", "[0-9]{1,2}+") + time("1") + ")?"
    compact = g("M2", "[0-9]{2}") + g("D2", "[0-9]{2}") + time("2")
    return rf"^{_WS}*{year}(?:{sep}{dated}|{compact})?\z", names


ISO, ISO_GROUPS = _iso_pattern()
MARK = "\u0001"  # starts the regexp_replace result of a matched ISO string
# Python's str.isspace characters: a user/course/lesson id made of these is blank (the pandas engine's strip)
BLANK = r"^[\t\n\x0B\f\r\x1C-\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\z"
# internal column names (kept apart from the log's own columns)
(USER, TS, MID, COURSE, LESSON, REASON, FFFD, BUCKET, TS_KEY, TS_ODD, URL_KEY, URL_COURSE, URL_LESSON, NAMED,
 MISSED) = (f"__dr_{n}" for n in ("user", "ts", "mid", "course", "lesson", "reason", "fffd", "bucket", "ts_key", "ts_odd",
                                  "url_key", "url_course", "url_lesson", "named", "missed"))
PART_BITS = 33  # monotonically_increasing_id = partition << 33 | row within the partition


def java_url_pattern(pattern: str) -> tuple[str, int, int]:
    """A Python url_pattern as a Java regex with the same meaning, and the numbers of its course/lesson groups.

    Named groups become numbered ones (same numbering), (?P=name) a numbered back-reference,
    \\Z Java's \\z; (?Ud) makes \\d \\w \\s Unicode and only \\n a line end, as in Python.
    """
    index = re.compile(pattern).groupindex
    java = re.sub(r"\(\?P<[^>]+>", "(", pattern)
    java = re.sub(r"\(\?P=([^)]+)\)", lambda m: f"(?:\\{index[m.group(1)]})", java)
    java = java.replace(r"\Z", r"\z")
    return "(?Ud)" + java, index["course"], index["lesson"]


# -- the Spark session ----------------------------------------------------------------------------
def _java_found() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and (Path(home) / "bin" / "java").exists()))


def _local_partitions(master: str) -> int:
    """Shuffle partitions for local mode: 4 per core (Spark's 200 cost seconds of task overhead on small logs); 0 elsewhere."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master.strip())
    if not found:
        return 0
    threads = found.group(1)
    cores = 1 if threads is None else (os.cpu_count() or 1) if threads == "*" else int(threads)
    return 4 * max(1, cores)


def spark_session(scfg: SparkConfig):
    """The active SparkSession (spark-submit, Databricks, a test's), else a new one from `scfg`."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("ratings.engine=spark needs pyspark, which is not installed: pip install \"deeprec[spark]\" "
                          "(and a Java 17+ runtime)") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # under spark-submit: its --master and --conf apply
    if not submitted and not _java_found():
        raise ConfigError("ratings.engine=spark needs a Java 17+ runtime: no `java` on PATH and JAVA_HOME is not set "
                          "(e.g. apt-get install -y openjdk-17-jre-headless)")
    builder = SparkSession.builder.appName(scfg.app_name)
    settings = {"spark.ui.showConsoleProgress": "false", "spark.sql.session.timeZone": "UTC"}
    if not submitted:
        builder = builder.master(scfg.master)
        settings["spark.driver.memory"] = scfg.driver_memory
    partitions = scfg.shuffle_partitions or _local_partitions(scfg.master if not submitted else "")
    if partitions:
        settings["spark.sql.shuffle.partitions"] = str(partitions)
    settings.update({str(k): str(v) for k, v in (scfg.conf or {}).items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a JVM that does not start: one line, not a Java trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"ratings.engine=spark: Spark did not start with master {scfg.master!r}: {first}") from None
    spark.sparkContext.setLogLevel(scfg.log_level)
    return spark


@contextlib.contextmanager
def _runtime_conf(spark, settings: dict[str, str]):
    """Session settings the rules depend on, restored afterwards (the session may be the user's)."""
    old = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


RUNTIME = {
    "spark.sql.session.timeZone": "UTC",  # a naive timestamp is UTC (SPEC 1.1)
    "spark.sql.ansi.enabled": "false",  # a bad value is a reject, not a failed job
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.legacy.parquet.nanosAsLong": "true",  # pandas writes ns timestamps; read them as numbers
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # toPandas / createDataFrame through Arrow
}


# -- reading --------------------------------------------------------------------------------------
def _is_uri(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", path))


def _list_uri(spark, uri: str) -> list[str]:
    """The table files under a Hadoop-FS URI (s3a://, hdfs://, abfss://, file://), sorted as table_files sorts."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        raise DataError(f"{uri}: no such file or folder")
    if fs.getFileStatus(path).isFile():
        return [uri]
    found, it = [], fs.listFiles(path, True)
    while it.hasNext():
        name = it.next().getPath().toString()
        if Path(name).suffix.lower() in TABLE_SUFFIXES:
            found.append(name)
    if not found:
        raise DataError(f"{uri}: the folder holds no .csv, .tsv or .parquet file")
    return sorted(found)


def _parquet_nanos(file: str) -> bool:
    """Whether a local Parquet file stores `timestamp` as nanosecond timestamps (read as numbers)."""
    try:
        field_type = pq.read_schema(file).field("timestamp").type
    except (KeyError, OSError, pa.ArrowInvalid):
        return False
    return pa.types.is_timestamp(field_type) and field_type.unit == "ns"


def _parquet_types(files: list[str], uri: bool) -> dict:
    """The Arrow type of each column of a log of local Parquet files only, where every file agrees on it."""
    if uri or any(Path(f).suffix.lower() not in (".parquet", ".pq") for f in files):
        return {}
    seen: dict = {}
    for file in files:
        for field in pq.read_schema(file):
            seen.setdefault(field.name, set()).add(field.type)
    return {name: next(iter(kinds)) for name, kinds in seen.items() if len(kinds) == 1}


def _read_file(spark, file: str, local: bool):
    """One log file as a DataFrame (CSV/TSV: every column text), after the pandas engine's whole-input checks."""

    suffix = Path(file).suffix.lower()
    if suffix in (".parquet", ".pq"):
        if local:
            try:
                names = pq.ParquetFile(file).schema_arrow.names
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{file}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
            check_columns(names, file)
        frame = spark.read.parquet(file)
        check_columns(frame.columns, file)
        return frame, {"nanos": local and _parquet_nanos(file), "csv": False}
    if local:
        check_columns(_csv_header(Path(file)), file)
    reader = spark.read.options(header=True, sep="\t" if suffix == ".tsv" else ",", quote='"', escape='"',
                                mode="FAILFAST", encoding="UTF-8", multiLine=False, inferSchema=False)
    frame = reader.csv(file)  # only the empty field is null: NA, null, None, nan ... are ids (as the pandas engine)
    check_columns(frame.columns, file)
    return frame, {"nanos": False, "csv": True}


def read_log(spark, path: str | Path):
    """(DataFrame of the whole log with MID, the files, reading flags): files in table_files order."""
    from pyspark.sql import functions as F

    text = str(path)
    uri = _is_uri(text)
    files = _list_uri(spark, text) if uri else [str(f) for f in table_files(path)]
    frames, flags = [], {"nanos": False, "csv": False}
    for file in files:
        frame, flag = _read_file(spark, file, local=not uri)
        frames.append(frame)
        flags = {k: flags[k] or flag[k] for k in flags}
    check_same_log_columns([(Path(file), frame.columns) for file, frame in zip(files, frames)])
    log = frames[0]
    for frame in frames[1:]:
        log = log.unionByName(frame, allowMissingColumns=True)
    # after the union: partition ids follow the files, and byte offsets within a file
    return log.withColumn(MID, F.monotonically_increasing_id()), files, flags, uri


# -- SPEC 1.1-1.2 as column expressions ------------------------------------------------------------
def _numbers_to_us(x, unit: str):
    """Epoch numbers (double) -> int64 µs as _numbers_to_us of the pandas engine (round half to even)."""
    from pyspark.sql import functions as F

    scale = {"ms": F.lit(1e3), "s": F.lit(1e6)}.get(unit, F.when(F.abs(x) > 1e11, F.lit(1e3)).otherwise(F.lit(1e6)))
    us = x * scale
    return F.when(~F.isnan(us) & (F.abs(us) < 9e18), F.bround(us, 0).cast("long"))


def iso_parts(text):
    """[groups] of the ISO-8601 grammar as text ("" for a group that took no part), null when `text`
    is not ISO-8601 (one regexp_replace per row; materialise it as a column: _iso_to_us reads it often)."""
    from pyspark.sql import functions as F

    replaced = F.regexp_replace(text, ISO, MARK + "|" + "|".join("${%s}" % n for n in ISO_GROUPS))
    parts = F.split(replaced, r"\|")
    return F.when(F.element_at(parts, 1) == MARK, F.slice(parts, 2, len(ISO_GROUPS)))


def _iso_to_us(parts):
    """ISO-8601 parts (iso_parts) -> int64 µs (offset honoured, naive = UTC, fraction truncated to µs), null if invalid."""
    from pyspark.sql import functions as F

    part = {n: F.element_at(parts, i + 1) for i, n in enumerate(ISO_GROUPS)}

    def joined(*names):  # the one alternative that matched (the others are empty)
        return F.concat(*[part[n] for n in names])

    def num(*names, default=0):
        value = joined(*names)
        return F.coalesce(F.when(value != "", value.cast("long")), F.lit(default).cast("long"))

    year = part["Y"].cast("long")
    compact = part["sep"] == ""
    month = F.when(compact, part["M2"]).otherwise(part["M1"]).cast("long")
    day = F.coalesce(F.when(compact, part["D2"]).otherwise(F.when(part["D1"] != "", part["D1"])).cast("long"), F.lit(1).cast("long"))
    alt = [f"{k}{a}" for k in "12" for a in "abc"]
    hour = num(*[f"h{k}" for k in ("1a", "1c", "2a", "2c")])
    minute = num(*[f"m{k}" for k in alt])
    second = num(*[f"s{k}" for k in alt])
    frac = joined(*[f"f{k}" for k in alt])
    frac_us = F.rpad(F.substring(frac, 1, 6), 6, "0").cast("long")
    sign = joined("sg1", "sg2")
    off_h, off_m = num("oh1", "oh2"), num("om1", "om2")
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_days = (F.when(month == 2, F.when(leap, 29).otherwise(28))
                  .when(month.isin(4, 6, 9, 11), 30).otherwise(31))
    valid = ((month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days) & (hour < 24) & (minute < 60)
             & (second < 60) & (off_h < 24) & (off_m < 60))
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil, years >= 0)
    y = year - F.when(month <= 2, 1).otherwise(0)
    era = F.floor(y / 400)
    yoe = y - era * 400
    doy = F.floor((153 * (month + F.when(month > 2, -3).otherwise(9)) + 2) / 5) + day - 1
    doe = yoe * 365 + F.floor(yoe / 4) - F.floor(yoe / 100) + doy
    days = era * 146097 + doe - 719468
    offset = F.when(sign == "-", -1).otherwise(1) * (off_h * 60 + off_m)
    minutes = (days * 24 + hour) * 60 + minute - F.when(sign != "", offset).otherwise(0)
    us = minutes.cast("long") * 60_000_000 + second * 1_000_000 + F.coalesce(frac_us, F.lit(0).cast("long"))
    return F.when(parts.isNotNull() & valid, us)


def timestamp_us(column, dtype, unit: str, nanos: bool, odd=None):
    """SPEC 1.1 timestamps of any Spark type as int64 epoch µs (null where the pandas engine has BAD_TS).

    Text: a number, or canonical ISO-8601 (CANON) through Spark's own cast; `odd`: the µs of any
    other text (a lookup of its distinct values or odd_timestamp_us), null when not given.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if nanos and isinstance(dtype, T.LongType):  # a pandas datetime64[ns] column read as its integer
        return F.floor(column / 1000).cast("long")
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return F.unix_micros(column.cast("timestamp"))
    if isinstance(dtype, T.BooleanType):
        return F.lit(None).cast("long")
    if isinstance(dtype, T.NumericType):
        return _numbers_to_us(column.cast("double"), unit)
    text = column.cast("string")
    us = (F.when(text.rlike(INTEGER) | text.rlike(NUMBER), _numbers_to_us(text.cast("double"), unit))
          .when(text.rlike(CANON), F.unix_micros(text.cast("timestamp"))))
    return us if odd is None else us.otherwise(odd)


def is_odd_timestamp(text):
    """Text that is neither a number nor canonical ISO-8601: parsed once per distinct value."""
    return text.isNotNull() & ~text.rlike(INTEGER) & ~text.rlike(NUMBER) & ~text.rlike(CANON)


def odd_timestamp_us(text):
    """µs of odd timestamp text by the ISO-8601 grammar in Spark expressions: the per-row fallback when
    the distinct odd values are too many to parse on the driver (slow: dozens of regex groups a row)."""
    from pyspark.sql import functions as F

    return F.when(is_odd_timestamp(text), _iso_to_us(iso_parts(text)))


def _text(column, dtype):
    """A column as the pandas engine's id text: a float NaN is missing, like null."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if isinstance(dtype, (T.FloatType, T.DoubleType)):
        column = F.when(~F.isnan(column), column)
    return column.cast("string")


def _blank(column):
    return column.isNull() | column.rlike(BLANK)


DISTINCT_LIMIT = 500_000  # distinct odd timestamps / URLs parsed on the driver; past it, per-row Spark expressions


def distinct_values(log, exprs: dict, limit: int = DISTINCT_LIMIT) -> dict:
    """{name: the distinct non-null values of exprs[name] (object array), None past `limit`}, in one scan."""
    from pyspark.sql import functions as F

    if not exprs:
        return {}

    def collect(named: dict, cap: int):
        pairs = F.inline(F.array(*[F.struct(F.lit(k).alias("k"), e.cast("string").alias("v")) for k, e in named.items()]))
        return log.select(pairs).where(F.col("v").isNotNull()).distinct().limit(cap + 1).toPandas()

    rows = collect(exprs, limit * len(exprs))
    if len(rows) > limit * len(exprs) and len(exprs) > 1:  # cut short: each on its own
        return {k: distinct_values(log, {k: e}, limit)[k] for k, e in exprs.items()}
    found = {k: rows["v"][rows["k"] == k].to_numpy(object) for k in exprs}
    return {k: v if len(v) <= limit else None for k, v in found.items()}


def _lookup(log, key, table: pd.DataFrame, schema: str):
    """`log` left-joined on `key` to the small driver-made `table` (first column: the key), broadcast."""
    from pyspark.sql import functions as F

    small = log.sparkSession.createDataFrame(table, schema=schema)
    return log.join(F.broadcast(small), key == small[table.columns[0]], "left").drop(table.columns[0])


def parse_events(log, cfg: RatingsConfig, flags: dict):
    """Every row with its user (text), µs timestamp, lesson view location (course, lesson or null) and
    reject reason (missing_user, bad_timestamp; duplicates come from flag_duplicates).

    The URLs and the odd timestamps (neither numbers nor canonical ISO-8601) are few distinct values:
    one scan collects them, the driver parses them with the pandas engine's own functions, and a
    broadcast join brings the answers back to every row (per-row Spark expressions past DISTINCT_LIMIT).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cols = set(log.columns)
    types = dict((f.name, f.dataType) for f in log.schema.fields)
    text = lambda c: _text(F.col(f"`{c}`"), types[c])  # noqa: E731
    originals = list(log.columns)
    text_ts = isinstance(types["timestamp"], T.StringType)
    wanted = {}
    if text_ts:
        wanted["ts"] = F.when(is_odd_timestamp(F.col("`timestamp`")), F.col("`timestamp`"))
    if "url" in cols:
        wanted["url"] = text("url")
    found = distinct_values(log, wanted)
    odd = None
    if text_ts and found["ts"] is None:
        odd = odd_timestamp_us(F.col("`timestamp`"))
    elif text_ts and len(found["ts"]):
        us = parse_timestamps_us(pd.Series(found["ts"], dtype=object), cfg.timestamp_unit)
        table = pd.DataFrame({TS_KEY: found["ts"], TS_ODD: pd.array(np.where(us == BAD_TS, None, us), dtype="Int64")})
        log = _lookup(log, F.col("`timestamp`"), table, f"{TS_KEY} string, {TS_ODD} long")
        odd = F.col(TS_ODD)
    ts = timestamp_us(F.col("`timestamp`"), types["timestamp"], cfg.timestamp_unit, flags["nanos"], odd)
    course = lesson = F.lit(None).cast("string")
    if "url" in cols and found["url"] is not None:
        url_course, url_lesson = _url_lessons(found["url"], cfg.url_pattern)
        table = pd.DataFrame({URL_KEY: found["url"], URL_COURSE: url_course, URL_LESSON: url_lesson})
        log = _lookup(log, text("url"), table, f"{URL_KEY} string, {URL_COURSE} string, {URL_LESSON} string")
        course, lesson = F.col(URL_COURSE), F.col(URL_LESSON)
    elif "url" in cols:
        pattern, gc, gl = java_url_pattern(cfg.url_pattern)
        path = F.regexp_replace(text("url"), URL_PREFIX, "")
        url_course, url_lesson = F.regexp_extract(path, pattern, gc), F.regexp_extract(path, pattern, gl)
        hit = F.coalesce((url_course != "") & (url_lesson != ""), F.lit(False))
        course, lesson = F.when(hit, url_course), F.when(hit, url_lesson)
    if {"course_id", "lesson_id"} <= cols:
        both = ~_blank(text("course_id")) & ~_blank(text("lesson_id"))
        course = F.when(both, text("course_id")).otherwise(course)
        lesson = F.when(both, text("lesson_id")).otherwise(lesson)
    named = course.isNotNull()  # the row names a lesson, view or not (summary: rows_naming_a_lesson)
    missed = F.when(~named, text("url")) if "url" in cols else F.lit(None).cast("string")  # url_pattern missed it
    if "event" in cols:
        is_view = F.coalesce(text("event").isin(list(cfg.view_events)), F.lit(False))
        course, lesson = F.when(is_view, course), F.when(is_view, lesson)
    user = text("user_id")
    missing = _blank(user)
    reason = F.when(missing, "missing_user").when(ts.isNull(), "bad_timestamp")
    extra = []
    if flags["csv"]:  # invalid UTF-8 bytes read as U+FFFD: checked against the pandas reader afterwards
        extra = [F.greatest(*[F.coalesce(F.instr(F.col(f"`{c}`"), "\ufffd"), F.lit(0)) for c in originals if c != MID],
                            F.lit(0)) > 0]
        extra = [extra[0].alias(FFFD)]
    return log.select(*[F.col(f"`{c}`") for c in originals], user.alias(USER), ts.alias(TS), course.alias(COURSE),
                      lesson.alias(LESSON), reason.alias(REASON), named.alias(NAMED), missed.alias(MISSED), *extra)


def flag_duplicates(events, originals: list[str]):
    """Shuffle once by user; a valid row that exactly repeats an earlier one (user, timestamp, url,
    course_id, lesson_id, event) gets reason `duplicate`. Rejected rows keep their original columns."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    types = dict((f.name, f.dataType) for f in events.schema.fields)
    keys = [_text(F.col(f"`{c}`"), types[c]) for c in ("url", "course_id", "lesson_id", "event") if c in originals]
    by_user = events.repartition(USER)
    first = Window.partitionBy(USER, TS, *keys).orderBy(MID)
    reason = F.when(F.col(REASON).isNull() & (F.row_number().over(first) > 1), F.lit("duplicate")).otherwise(F.col(REASON))
    flagged = by_user.withColumn(REASON, reason)
    kept = [F.when(F.col(REASON).isNotNull(), F.col(f"`{c}`")).alias(c) for c in originals]
    extra = [FFFD] if FFFD in events.columns else []
    return flagged.select(USER, TS, MID, COURSE, LESSON, REASON, NAMED, MISSED, *extra, *kept)


# -- SPEC 1.3-1.4 -----------------------------------------------------------------------------------
def lesson_view_sums(flagged, cfg: RatingsConfig):
    """Per (user, course, lesson) of the accepted events: observed_us, n_observed, n_imputed, the first
    view (ts, mid), plus per user (rows with course null: non-view events) the sessions and events."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    gap = cfg.session_gap_minutes * 60e6
    accepted = flagged.where(F.col(REASON).isNull())
    timeline = Window.partitionBy(USER).orderBy(TS, MID)
    prev, nxt = F.lag(TS).over(timeline), F.lead(TS).over(timeline)
    start = prev.isNull() | ((F.col(TS) - prev) > gap)
    has_next = nxt.isNotNull() & ~((nxt - F.col(TS)) > gap)
    timed = accepted.select(
        USER, TS, MID, COURSE, LESSON,
        start.cast("long").alias("start"),
        has_next.alias("has_next"),
        F.when(has_next, nxt - F.col(TS)).otherwise(F.lit(0).cast("long")).alias("d_us"),
    )
    timed = timed.withColumn("sessions", F.sum("start").over(Window.partitionBy(USER)))
    view = F.col(COURSE).isNotNull()
    return timed.groupBy(USER, COURSE, LESSON).agg(
        F.sum(F.when(view, F.col("d_us")).otherwise(0)).alias("observed_us"),
        F.sum(F.when(view & F.col("has_next"), 1).otherwise(0)).alias("n_observed"),
        F.sum(F.when(view & ~F.col("has_next"), 1).otherwise(0)).alias("n_imputed"),
        F.min(F.struct(TS, MID)).alias("first"),
        F.count(F.lit(1)).alias("n_events"),
        F.max("sessions").alias("sessions"),
    )


def lesson_means(sums: pd.DataFrame) -> np.ndarray:
    """mean_us: [L] the imputed duration of each lesson of `sums` (SPEC 1.4), as lesson_durations computes it."""
    total_us, total_n = int(sums["observed_us"].sum()), int(sums["n_observed"].sum())
    fallback_us = total_us / total_n if total_n else 0.0
    n = sums["n_observed"].to_numpy(np.int64)
    return np.where(n > 0, sums["observed_us"].to_numpy(np.int64) / np.maximum(n, 1), fallback_us)


# -- output tables ----------------------------------------------------------------------------------
def _with_rows(frame, mid: str, out: str, offsets):
    """`frame` plus `out`: the exact 0-based input row of its MID column, from the rows per input partition."""
    from pyspark.sql import functions as F

    frame = frame.withColumn("p", F.shiftright(F.col(mid), PART_BITS)).join(F.broadcast(offsets), on="p", how="left")
    row = F.col("offset") + (F.col(mid) - F.shiftleft(F.col("p"), PART_BITS))
    return frame.withColumn(out, row.cast("long")).drop("p", "offset")


BUCKET_ROWS = 4_000_000  # input rows per output bucket: Spark writes the sorted tables in buckets of about this


def _write_sorted(frame, key: str, rows_in: int, scratch: Path, name: str, types: dict | None = None) -> Path:
    """One Parquet file of `frame` sorted by `key` (a unique input row in [0, rows_in)).

    Spark writes it in buckets of consecutive input rows (key * n // rows_in), each sorted within,
    so no sampling job is needed for a range partitioning; the driver then streams the buckets in
    order into one file, a row group at a time. types: Arrow types to restore by column (a Parquet
    log's own, e.g. a timestamp's time zone).
    """
    from pyspark.sql import functions as F

    # buckets of at most BUCKET_ROWS rows, and enough of them to keep every core busy (one sorting task each)
    cores = frame.sparkSession.sparkContext.defaultParallelism
    n = max(1, -(-rows_in // BUCKET_ROWS), min(cores, -(-rows_in // 100_000)))
    parts = scratch / f"{name}.parts"
    bucketed = frame.withColumn(BUCKET, F.floor(F.col(key) * n / rows_in).cast("int"))
    # sorted by (bucket, key): the writer's own order by bucket is then met, no second (unstable) sort
    (bucketed.repartition(n, BUCKET).sortWithinPartitions(BUCKET, key)
     .write.partitionBy(BUCKET).mode("overwrite").parquet(str(parts)))
    buckets = sorted(parts.glob(f"{BUCKET}=*"), key=lambda d: int(d.name.split("=", 1)[1]))
    files = [f for d in buckets for f in sorted(d.glob("part-*.parquet"))]
    if files:
        schema = pa.schema(list(pq.read_schema(files[0])))
    else:  # no row at all: the columns from Spark's schema
        from pyspark.sql.pandas.types import to_arrow_schema

        try:
            schema = to_arrow_schema(frame.schema, timezone="UTC")
        except TypeError:  # pyspark 3.5 has no timezone argument
            schema = to_arrow_schema(frame.schema)
    for column, type_ in (types or {}).items():
        i = schema.get_field_index(column)
        if i >= 0 and schema.field(i).type != type_:
            schema = schema.set(i, pa.field(column, type_))
    out = scratch / f"{name}.parquet"
    with pq.ParquetWriter(out, schema) as writer:
        writer.write_table(schema.empty_table())
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=1 << 16):
                writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema, safe=False))
    remove_deeprec_folder(parts)
    return out


def _pandas_reader_error(files: list[str]) -> DataError | None:
    """The pandas engine's own whole-input error for the first local CSV file it cannot read, if any."""
    for file in files:
        if Path(file).suffix.lower() not in (".parquet", ".pq"):
            try:
                for _ in iter_event_tables(file, batch_rows=1 << 62):
                    pass
            except DataError as error:
                return error
    return None


def _read_error(exc: Exception, files: list[str], local: bool) -> DataError | None:
    """A Spark read failure (malformed CSV) as a one-line DataError: the pandas engine's, naming the line."""
    message = str(exc)
    if not any(m in message for m in ("MALFORMED", "FAILED_READ_FILE", "Malformed")):
        return None
    error = _pandas_reader_error(files) if local else None
    if error is not None:
        return error
    where = re.search(r"reading file (\S+?)\.?\s", message)
    record = re.search(r"Malformed CSV record: (.*?)(?: SQLSTATE|$)", message, flags=re.M)
    what = f"malformed record {record.group(1)!r}" if record else message.strip().splitlines()[0]
    return DataError(f"{where.group(1) if where else files[0]}: cannot be parsed: {what}")


def first_missed(per_part: pd.DataFrame, offsets: pd.DataFrame) -> tuple[int, str] | None:
    """(input row, url) of the first accepted row whose url the pattern missed, from job 1's per-partition
    minimum (MID, url) and the partitions' row offsets; None when the pattern named every url."""
    found = [(int(m[MID]), str(m[MISSED]), int(p)) for m, p in zip(per_part["missed"], per_part["p"]) if m is not None]
    if not found:
        return None
    mid, url, p = min(found)
    offset = int(offsets.loc[offsets["p"] == p, "offset"].iloc[0])
    return offset + mid - (p << PART_BITS), url


def rate_log_spark(path: str | Path, cfg: RatingsConfig, source: str | None = None):
    """SPEC section 1 on the log at `path` (local file/folder or a Hadoop-FS URI) with Spark -> RatingsResult.

    lesson_durations and rejects stay in scratch Parquet files (result.files) until write_outputs
    copies them; the scratch folder lives as long as the result.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from deeprec.data.ratings.pipeline import RatingsResult, _lessons_in, _summary

    cfg = cfg.check()
    source = source or str(path)
    spark = spark_session(cfg.spark)
    scratch = make_temp_folder(cfg.spark.scratch_dir, "spark")
    cached = []
    try:
        with _runtime_conf(spark, RUNTIME):
            log, files, flags, uri = read_log(spark, path)
            originals = [c for c in log.columns if c != MID]
            try:
                # job 1: the distinct URLs and odd timestamps; job 2 (reads the log, fills the cache):
                # rows per input partition, reasons, U+FFFD
                flagged = flag_duplicates(parse_events(log, cfg, flags), originals).persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(flagged)
                accepted = F.col(REASON).isNull()
                stats = [F.count(F.lit(1)).alias("rows")] + [
                    F.sum(F.when(F.col(REASON) == r, 1).otherwise(0)).alias(r) for r in REJECT_REASONS] + [
                    F.sum(F.when(accepted & F.col(NAMED), 1).otherwise(0)).alias("named"),
                    F.min(F.when(accepted & F.col(MISSED).isNotNull(), F.struct(MID, MISSED))).alias("missed")]
                if FFFD in flagged.columns:
                    stats.append(F.sum(F.col(FFFD).cast("long")).alias("fffd"))
                per_part = flagged.groupBy(F.shiftright(MID, PART_BITS).alias("p")).agg(*stats).toPandas()
            except Exception as exc:  # noqa: BLE001 - a malformed file: the pandas engine's message
                error = _read_error(exc, files, local=not uri)
                if error is None:
                    raise
                raise error from None
            rows_in = int(per_part["rows"].sum())
            if rows_in == 0:
                raise DataError(f"{source}: no rows (a header but no events)")
            if "fffd" in per_part and per_part["fffd"].sum() > 0 and not uri:
                error = _pandas_reader_error(files)  # U+FFFD read: invalid UTF-8, or the character itself
                if error is not None:
                    raise error
            per_part = per_part.sort_values("p", ignore_index=True)
            offsets_pd = pd.DataFrame({
                "p": per_part["p"].astype(np.int64),
                "offset": (per_part["rows"].cumsum() - per_part["rows"]).astype(np.int64),
            })
            offsets = spark.createDataFrame(offsets_pd)
            reject_counts = pd.Series({r: int(per_part[r].sum()) for r in REJECT_REASONS})

            # jobs 2-3: the timeline of each user, partial sums per lesson, the global imputation means
            views = lesson_view_sums(flagged, cfg).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(views)
            lesson_rows = views.where(F.col(COURSE).isNotNull())
            sums = (lesson_rows.groupBy(COURSE, LESSON)
                    .agg(F.sum("observed_us").alias("observed_us"), F.sum("n_observed").alias("n_observed"))
                    .toPandas())
            sums = pd.DataFrame({
                "course_id": sums[COURSE].astype(str).to_numpy(object), "lesson_id": sums[LESSON].astype(str).to_numpy(object),
                "observed_us": sums["observed_us"].astype(np.int64), "n_observed": sums["n_observed"].astype(np.int64),
            }).sort_values(["course_id", "lesson_id"], ignore_index=True)
            users = views.groupBy(USER).agg(F.max("sessions").alias("sessions"), F.sum("n_events").alias("n_events"),
                                          F.sum("n_observed").alias("n_obs"), F.sum("n_imputed").alias("n_imp")).toPandas()
            sessions = pd.Series(users["sessions"].to_numpy(np.int64), index=pd.Index(users[USER].astype(str).to_numpy(object), name="user_id"),
                                 name="sessions")
            lessons_in = _lessons_in(sums, cfg)

            # lesson durations (SPEC 1.4): partial sums + imputed views x the lesson's mean
            means = spark.createDataFrame(pd.DataFrame({COURSE: sums["course_id"], LESSON: sums["lesson_id"],
                                                        "mean_us": lesson_means(sums).astype(np.float64)}))
            durations = lesson_rows.join(F.broadcast(means), on=[COURSE, LESSON], how="left").select(
                F.col(USER).alias("user_id"), F.col(COURSE).alias("course_id"), F.col(LESSON).alias("lesson_id"),
                ((F.col("observed_us") + F.col("n_imputed") * F.col("mean_us")) / 1e6).alias("seconds"),
                (F.col("n_observed") + F.col("n_imputed")).cast("long").alias("views"),
                (F.col("first")[TS] / 1e6).alias("first_seen"),
                F.col("first")[MID].alias("first_mid"),
            )
            durations = _with_rows(durations, "first_mid", "first_row", offsets).drop("first_mid")
            durations_file = _write_sorted(durations, "first_row", rows_in, scratch, "lesson_durations")

            ratings, filtered = rate_pairs_spark(durations, sessions, lessons_in, cfg)

            rejects = flagged.where(F.col(REASON).isNotNull())
            rejects = _with_rows(rejects, MID, ROW_ID, offsets)
            rejects = rejects.select(*[F.col(f"`{c}`") for c in originals], F.col(REASON).alias("reason"), ROW_ID)
            rejects_file = _write_sorted(rejects, ROW_ID, rows_in, scratch, "rejects", _parquet_types(files, uri))

        parts = [SimpleNamespace(events=int(users["n_events"].sum()), lesson_views=int((users["n_obs"] + users["n_imp"]).sum()),
                                 named_rows=int(per_part["named"].sum()), unmatched_url=first_missed(per_part, offsets_pd))]
        summary = _summary(source, rows_in, parts, sessions, len(sums), filtered, ratings, reject_counts, cfg)
        files_out = {"lesson_durations": durations_file, "rejects": rejects_file}
        result = RatingsResult(ratings, None, None, summary, sessions, lessons_in, cfg, files=files_out)
        weakref.finalize(result, remove_deeprec_folder, scratch)  # the files live as long as the result
        scratch = None
        return result
    finally:
        for frame in cached:
            frame.unpersist()
        if scratch is not None:
            remove_deeprec_folder(scratch)


def rate_pairs_spark(durations, sessions: pd.Series, lessons_in: pd.Series, cfg: RatingsConfig) -> tuple[pd.DataFrame, dict]:
    """SPEC 1.5 on Spark (one row per user-course pair with a counted lesson, collected: about one per
    rating), then SPEC 1.6-1.9 by the pandas engine's own filter_users and rate_kept_pairs.

    Returns the ratings (in the pandas engine's order and dtypes) and the filter counts.
    """
    from pyspark.sql import functions as F

    from deeprec.data.ratings.rating import filter_users, rate_kept_pairs

    counted = durations.where(F.col("seconds") >= float(cfg.min_lesson_seconds))
    pairs = counted.groupBy("user_id", "course_id").agg(
        F.count(F.lit(1)).alias("lessons_viewed"), F.min(F.struct("first_seen", "first_row")).alias("first"),
    ).select("user_id", "course_id", "lessons_viewed", F.col("first.first_seen").alias("first_seen"),
             F.col("first.first_row").alias("first_row")).toPandas()
    pairs = pd.DataFrame({
        "user_id": pairs["user_id"].astype(str).to_numpy(object), "course_id": pairs["course_id"].astype(str).to_numpy(object),
        "lessons_viewed": pairs["lessons_viewed"].to_numpy(np.int64), "first_seen": pairs["first_seen"].to_numpy(np.float64),
        "first_row": pairs["first_row"].to_numpy(np.int64),
    }).sort_values(["user_id", "first_seen", "first_row"], kind="stable", ignore_index=True)
    pairs["pct_viewed"] = pairs["lessons_viewed"].to_numpy() / pairs["course_id"].map(lessons_in).to_numpy(np.float64)
    users_before = int(pairs["user_id"].nunique())
    kept, removed = filter_users(pairs, sessions, cfg)
    ratings = rate_kept_pairs(kept, cfg)
    return ratings.astype({"user_id": "str", "course_id": "str", "split": "str"}), {
        "users_before_filters": users_before, "users_removed": removed}


def rate_events_spark(events: pd.DataFrame, cfg: RatingsConfig, source: str = "events"):
    """SPEC section 1 with Spark on an in-memory log: written to a scratch Parquet file, then rate_log_spark."""
    check_columns(events.columns, source)
    scratch = make_temp_folder(cfg.spark.scratch_dir, "spark-in")
    try:
        frame = parquet_safe(events)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        # Spark reads µs timestamps; pandas' ns ones would be read as integers
        table = table.cast(pa.schema([pa.field(f.name, pa.timestamp("us", f.type.tz)) if pa.types.is_timestamp(f.type) else f
                                      for f in table.schema]), safe=False)
        file = scratch / "events.parquet"
        pq.write_table(table, file)
        result = rate_log_spark(file, cfg, source=source)
        # in memory, as the pandas engine returns them: the rejected rows of the frame itself (their own values)
        found = result.rejects
        rejects = events.iloc[found.index.to_numpy()].copy()
        rejects["reason"] = np.asarray(found["reason"], dtype=str)  # as validate_events sets it
        rejects.index = found.index
        result._tables["rejects"] = rejects
        return result
    finally:
        remove_deeprec_folder(scratch)
