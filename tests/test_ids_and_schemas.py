"""A user's ids are theirs (issue 14 classes 3-4): text such as NA / null / None is an id, integer
ids from Parquet stay integers as text even with a null, ids beyond 2^53 stay distinct, every input
type (CSV, TSV, Parquet, a folder) and both ratings paths give the same ids, and a folder whose files
disagree on the columns is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deeprec.data.adapters.interactions import InteractionsDataConfig, load
from deeprec.data.ratings import RatingsConfig, rate_log
from deeprec.data.splits import SplitConfig
from deeprec.errors import DataError

# the default null markers of pandas' and pyarrow's CSV readers: all of them are ids here
NULL_LIKE = ["NA", "null", "None", "nan", "N/A", "#N/A", "NULL", "n/a", "<NA>", "NaN", "-nan", "#NA"]
BIG = [2**53, 2**53 + 1, 2**63 - 1]  # float64 merges the first two and rounds the last

both_paths = pytest.mark.parametrize("out_of_core", [False, True], ids=["in-memory", "out-of-core"])
FORMATS = ("csv", "tsv", "parquet", "folder")


def write_table(frame: pd.DataFrame, folder: Path, fmt: str) -> Path:
    """The frame (all text columns) as one CSV / TSV / Parquet file, or a folder of two CSV files."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(folder / "t.csv", index=False)
        return folder / "t.csv"
    if fmt == "tsv":
        frame.to_csv(folder / "t.tsv", index=False, sep="\t")
        return folder / "t.tsv"
    if fmt == "parquet":
        frame.to_parquet(folder / "t.parquet", index=False)
        return folder / "t.parquet"
    half = len(frame) // 2
    frame.iloc[:half].to_csv(folder / "a.csv", index=False)
    frame.iloc[half:].to_csv(folder / "b.csv", index=False)
    return folder


def null_like_log() -> pd.DataFrame:
    """Each learner (named by a null marker) views two lessons of a course named by a marker, then leaves."""
    rows = []
    for n, name in enumerate(NULL_LIKE):
        t = 1000 * n
        course = NULL_LIKE[(n + 1) % len(NULL_LIKE)]
        rows += [(name, t, course, "NA"), (name, t + 10, course, "null"), (name, t + 20, "", "")]  # "": not a lesson
    return pd.DataFrame(rows, columns=["user_id", "timestamp", "course_id", "lesson_id"]).astype(str)


@both_paths
@pytest.mark.parametrize("fmt", FORMATS)
def test_event_log_ids_that_look_like_nulls_are_ids(fmt, out_of_core, tmp_path):
    # case: ids-null-markers (events): every learner, course and lesson keeps its name
    path = write_table(null_like_log(), tmp_path / "log", fmt)
    result = rate_log(path, RatingsConfig(min_courses=1), out_of_core=out_of_core)
    assert sum(result.summary["rows_rejected"].values()) == 0
    assert sorted(result.ratings["user_id"]) == sorted(NULL_LIKE)
    assert set(result.lesson_durations["lesson_id"]) == {"NA", "null"}
    assert set(result.ratings["course_id"]) == set(NULL_LIKE)


@pytest.mark.parametrize("fmt", FORMATS)
def test_interaction_ids_that_look_like_nulls_are_ids(fmt, tmp_path):
    # case: ids-null-markers (interactions)
    frame = pd.DataFrame({"user_id": NULL_LIKE * 2, "item_id": NULL_LIKE[1:] + NULL_LIKE[:1] + ["x"] * len(NULL_LIKE)})
    path = write_table(frame, tmp_path / "t", fmt)
    data = load(InteractionsDataConfig(path=str(path), split=SplitConfig(strategy="random", valid_share=0.0)))
    assert len(data.extras["rejects"]) == 0
    assert sorted(data.user_ids) == sorted(NULL_LIKE)
    got = {(data.user_ids[u], data.item_ids[i]) for u, i in zip(data.frame["user"], data.frame["item"])}
    assert got == set(map(tuple, frame.to_numpy()))


def integer_parquet_log(path: Path) -> Path:
    """An event log with int64 user and course ids (one user id null), as a Spark or pandas job writes it."""
    users = [7, 7, None, BIG[0], BIG[0], BIG[1], BIG[1], BIG[2], BIG[2]]
    table = pa.table({
        "user_id": pa.array(users, pa.int64()),
        "timestamp": pa.array([0, 10, 5, 0, 10, 0, 10, 0, 10], pa.int64()),
        "course_id": pa.array([1, 1, 1, 2, 2, 3, 3, 4, 4], pa.int64()),
        "lesson_id": pa.array([1, 2, 1, 1, 2, 1, 2, 1, 2], pa.int64()),
    })
    pq.write_table(table, path)
    return path


def test_integer_parquet_ids_with_a_null_round_trip_on_both_paths(tmp_path):
    # cases: ids-parquet-int-with-null (no "7.0"), ids-beyond-2^53 (no merge), ids-same-on-both-paths
    path = integer_parquet_log(tmp_path / "log.parquet")
    results = [rate_log(path, RatingsConfig(min_courses=1), out_of_core=o) for o in (False, True)]
    for result in results:
        assert sorted(result.sessions.index) == sorted(["7", *map(str, BIG)])
        assert sorted(result.ratings["course_id"].unique()) == ["1", "2", "3", "4"]
        assert result.summary["rows_rejected"]["missing_user"] == 1
    key = ["user_id", "course_id"]
    pd.testing.assert_frame_equal(results[0].ratings.sort_values(key).reset_index(drop=True),
                                  results[1].ratings.sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(results[0].lesson_durations.sort_values(["user_id", "lesson_id"]).reset_index(drop=True),
                                  results[1].lesson_durations.sort_values(["user_id", "lesson_id"]).reset_index(drop=True))


def test_integer_parquet_interaction_ids_with_a_null_round_trip(tmp_path):
    # cases: ids-parquet-int-with-null, ids-beyond-2^53 (interactions)
    table = pa.table({"user_id": pa.array([7, None, BIG[0], BIG[1], BIG[2]], pa.int64()),
                      "item_id": pa.array([1, 1, 2, 2, None], pa.int64())})
    pq.write_table(table, tmp_path / "t.parquet")
    data = load(InteractionsDataConfig(path=str(tmp_path / "t.parquet"),
                                       split=SplitConfig(strategy="random", valid_share=0.0)))
    assert sorted(data.user_ids) == sorted(["7", str(BIG[0]), str(BIG[1])])
    assert sorted(data.item_ids) == ["1", "2"]
    assert data.extras["rejects"]["reason"].tolist() == ["missing_user", "missing_item"]


@both_paths
def test_a_folder_whose_files_disagree_on_the_event_column_is_an_error(out_of_core, tmp_path):
    # case: folder-differing-schemas (events): b.csv lacks the optional `event` column
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.csv").write_text("user_id,timestamp,url,event\nu,0,/c/x/l1,pageview\nu,10,/c/x/l2,click\n")
    (folder / "b.csv").write_text("user_id,timestamp,url\nv,0,/c/x/l1\nv,10,/c/x/l2\n")
    with pytest.raises(DataError, match=r"b\.csv: .*'event'.*a\.csv"):
        rate_log(folder, RatingsConfig(min_courses=1), out_of_core=out_of_core)


def test_a_parquet_folder_whose_files_disagree_is_an_error(tmp_path):
    # case: folder-differing-schemas (events, Parquet parts)
    folder = tmp_path / "logs"
    folder.mkdir()
    pd.DataFrame({"user_id": ["u"], "timestamp": [0], "url": ["/c/x/l1"], "event": ["pageview"]}).to_parquet(folder / "p1.parquet")
    pd.DataFrame({"user_id": ["v"], "timestamp": [0], "url": ["/c/x/l1"]}).to_parquet(folder / "p2.parquet")
    with pytest.raises(DataError, match=r"p2\.parquet: .*'event'"):
        rate_log(folder, RatingsConfig(min_courses=1))


def test_an_interactions_folder_whose_files_disagree_is_an_error(tmp_path):
    # case: folder-differing-schemas (interactions): b.csv has no rating column
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "a.csv").write_text("user_id,item_id,rating\nu,x,4\nu,y,2\n")
    (folder / "b.csv").write_text("user_id,item_id\nv,x\nv,y\n")
    with pytest.raises(DataError, match=r"b\.csv: .*'rating'.*a\.csv"):
        load(InteractionsDataConfig(path=str(folder), split=SplitConfig(strategy="random", valid_share=0.0)))
