"""RatingsConfig: every choice of SPEC section 1 (ratings inferred from logs) as a typed value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

from deeprec.config import check_choice
from deeprec.errors import ConfigError

DEFAULT_URL_PATTERN = r"^/?(?P<course>[^/?#]+/[^/?#]+)/(?P<lesson>[^/?#]+)"
THRESHOLDS = ("per_user", "global")
PENALTIES = ("quadratic", "linear", "log", "sqrt", "step")
TIMESTAMP_UNITS = ("auto", "s", "ms")
ENGINES = ("pandas", "spark")


@dataclass
class SparkConfig:
    """ratings.engine=spark: where and how Spark runs (deeprec/data/ratings/spark_engine.py)."""

    master: str = "local[*]"  # any Spark master URL; under spark-submit or on Databricks the session's own is used
    app_name: str = "deeprec-ratings"
    driver_memory: str = "4g"  # local mode: the one JVM that holds the driver and the executors
    shuffle_partitions: int = 0  # spark.sql.shuffle.partitions; 0 = 4 per core in local mode, Spark's own on a cluster
    scratch_dir: str | None = None  # where Spark writes the output tables before they are merged; a shared folder on a cluster
    log_level: str = "ERROR"  # Spark's log4j level for a session deeprec starts
    conf: Dict[str, str] = field(default_factory=dict)  # any other Spark setting, e.g. {spark.executor.memory: 8g}


@dataclass
class RatingsConfig:
    """SPEC 1.1-1.9 defaults; `n_partitions`/`batch_rows` only shape the out-of-core path."""

    url_pattern: str = DEFAULT_URL_PATTERN
    view_events: list[str] = field(default_factory=lambda: ["pageview", "page_view", "PageView"])
    timestamp_unit: str = "auto"  # auto: a number above 1e11 is milliseconds, else seconds
    session_gap_minutes: float = 30.0
    min_lesson_seconds: float = 0.0
    min_sessions: int = 1
    max_courses: int | None = 50
    min_courses: int = 3
    threshold: str = "per_user"
    penalty: str = "sqrt"
    train_share: float = 0.7
    catalogue: str | None = None  # optional table course_id, n_lessons (CSV or Parquet)
    engine: str = "pandas"  # pandas (embedded, chosen by measurement: scripts/bench_ratings.py) | spark (pip install ".[spark]")
    spark: SparkConfig = field(default_factory=SparkConfig)  # used by engine=spark only
    n_partitions: int = 0  # out-of-core: user-hash partitions; 0 = about batch_rows events each
    batch_rows: int = 2_000_000  # out-of-core: rows read at a time and events per partition (bounds peak memory)
    memory_budget_mb: int = 300  # inputs estimated above this go out-of-core in deeprec-ratings

    def check(self) -> "RatingsConfig":
        """Raise ConfigError naming the key when a value is outside its valid set."""
        import math
        import re

        choices = {
            "threshold": THRESHOLDS,
            "penalty": PENALTIES,
            "timestamp_unit": TIMESTAMP_UNITS,
            "engine": ENGINES,
        }
        for key, valid in choices.items():
            check_choice(getattr(self, key), valid, f"ratings.{key}")
        try:
            groups = re.compile(self.url_pattern).groupindex
        except re.error as exc:
            raise ConfigError(f"ratings.url_pattern={self.url_pattern!r} is not a valid regex ({exc})") from None
        if not {"course", "lesson"} <= set(groups):
            raise ConfigError(
                f"ratings.url_pattern={self.url_pattern!r} needs the named groups (?P<course>...) and (?P<lesson>...)"
            )
        positive = {"session_gap_minutes": self.session_gap_minutes, "batch_rows": self.batch_rows}
        for key, value in positive.items():
            if not value > 0:  # also false for nan
                raise ConfigError(f"ratings.{key}={value} must be > 0")
        if not math.isfinite(self.min_lesson_seconds):
            raise ConfigError(f"ratings.min_lesson_seconds={self.min_lesson_seconds} must be a finite number of seconds >= 0")
        if not 0 < self.train_share < 1:
            raise ConfigError(f"ratings.train_share={self.train_share} must be between 0 and 1 (exclusive)")
        for key in ("min_lesson_seconds", "min_sessions", "min_courses", "n_partitions"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"ratings.{key}={getattr(self, key)} must be >= 0")
        if self.spark.shuffle_partitions < 0:
            raise ConfigError(f"ratings.spark.shuffle_partitions={self.spark.shuffle_partitions} must be >= 0 "
                              "(0 = 4 per core in local mode, Spark's own on a cluster)")
        if not str(self.spark.master).strip():
            raise ConfigError("ratings.spark.master is empty; give a Spark master URL such as local[*] or spark://host:7077")
        if self.max_courses is not None and self.max_courses < 1:
            raise ConfigError(f"ratings.max_courses={self.max_courses} must be >= 1 or null (no limit)")
        return self
