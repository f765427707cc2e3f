"""Shared fixtures: seeded RNGs, the ../shared/data folder (tests needing it skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """../shared/data beside the clone (or $DEEPREC_SHARED_DATA), or None when absent."""
    env = os.environ.get("DEEPREC_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The shared datasets folder. A user's clone has none, so the test is skipped there, with the
    reason; where the data must be checked, DEEPREC_REQUIRE_SHARED_DATA=1 turns the skip into a failure."""
    path = shared_data_dir()
    if path is None:
        skip_unless_required("../shared/data is not present (a user's clone has no shared datasets)", "DEEPREC_REQUIRE_SHARED_DATA")
    return path


def skip_unless_required(message: str, require_env: str) -> None:
    """Skip with `message`, or fail where the environment variable `require_env`=1 says it must run."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{message} and {require_env}=1")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def write_random_table(path: Path, seed: int, n: int, n_users: int, n_items: int) -> Path:
    """A CSV of n uniform random (user, item, timestamp) rows, duplicate pairs dropped."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(0, n_users, n), "item_id": rng.integers(0, n_items, n),
                          "timestamp": rng.integers(0, 10**6, n)}).drop_duplicates(["user_id", "item_id"])
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (ratings.engine=spark tests); small shuffles, no UI."""
    pyspark_sql = pytest.importorskip("pyspark.sql")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]").appName("deeprec-tests")
        .config("spark.sql.shuffle.partitions", "2").config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g").config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    import logging

    # py4j logs its shutdown at INFO; after pytest has closed the streams a handler the CLI tests left would fail on it
    logging.getLogger("py4j").setLevel(logging.WARNING)
    yield session
    session.stop()
