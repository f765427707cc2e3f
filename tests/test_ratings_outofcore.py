"""deeprec-ratings out-of-core: identical output at any chunk/partition size, memory bounded by the chunk."""

from __future__ import annotations

import gc
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import deeprec.data.ratings.pipeline as pipeline
from deeprec.errors import DataError
from deeprec.data.ratings import RatingsConfig, rate_event_files, rate_events, read_events, write_outputs
from deeprec.data.ratings.io import merge_sorted_scratch, scratch_writer
from reference_ratings import reference_ratings
from test_ratings_reference import edge_case_log


def write_folder(events: pd.DataFrame, folder, fmt: str, n_files: int = 3):
    folder.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(events)), n_files)):
        chunk = events.iloc[rows]
        if fmt == "csv":
            chunk.to_csv(folder / f"part{k}.csv", index=False)
        else:
            chunk.to_parquet(folder / f"part{k}.parquet", index=False)
    return folder


def assert_same_result(streamed, in_memory):
    """Exactly the same tables (values, order, dtypes of the written files) and summary."""
    for name in ("ratings", "lesson_durations", "rejects"):
        pd.testing.assert_frame_equal(getattr(streamed, name), getattr(in_memory, name), check_exact=True)
    assert streamed.summary == in_memory.summary


@pytest.mark.parametrize(
    "batch_rows, n_partitions, threshold",
    [(20, 0, "global"), (90, 0, "per_user"), (400, 1, "global"), (10**6, 13, "per_user")],
)
def test_any_chunk_and_partition_size_gives_the_in_memory_output(tmp_path, batch_rows, n_partitions, threshold):
    events = edge_case_log(11, n=1500, users=40)
    folder = write_folder(events, tmp_path / "log", "csv")
    cfg = RatingsConfig(min_courses=2, batch_rows=batch_rows, n_partitions=n_partitions, threshold=threshold)
    in_memory = rate_events(read_events(folder), cfg, source=str(folder))
    streamed = rate_event_files(folder, cfg, work_dir=tmp_path)
    assert_same_result(streamed, in_memory)
    assert len(in_memory.ratings) > 30 and len(in_memory.rejects) >= 40
    assert list(tmp_path.iterdir()) == [folder]  # no scratch left behind


def test_out_of_core_matches_the_row_by_row_reference(tmp_path):
    events = edge_case_log(4, n=1200, users=30)
    cfg = RatingsConfig(min_courses=2, batch_rows=90, threshold="global", penalty="log")
    log = tmp_path / "log.csv"
    events.to_csv(log, index=False)
    result = rate_event_files(log, cfg, work_dir=tmp_path)
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in read_events(log).to_dict("records")]
    ref = reference_ratings(rows, cfg)
    assert list(zip(result.rejects.index, result.rejects["reason"])) == ref["rejects"]
    d = result.lesson_durations
    got = {(u, c, l): s for u, c, l, s in zip(d.user_id, d.course_id, d.lesson_id, d.seconds)}
    assert got.keys() == ref["durations"].keys()
    assert all(got[k] == pytest.approx(ref["durations"][k], abs=1e-6) for k in got)
    r = result.ratings
    assert set(zip(r.user_id, r.course_id)) == set(ref["ratings"])
    for u, c, rating, split in zip(r.user_id, r.course_id, r.rating, r.split):
        assert rating == pytest.approx(ref["ratings"][(u, c)]["rating"], abs=1e-6)
        assert split == ref["ratings"][(u, c)]["split"]


def test_parquet_course_lesson_columns_and_integer_users(tmp_path):
    """course_id/lesson_id columns, integer user ids in Parquet, a lesson seen in one part only."""
    rng = np.random.default_rng(5)
    n = 2000
    events = pd.DataFrame({
        "user_id": rng.integers(0, 50, n),
        "timestamp": 1_700_000_000 + np.cumsum(rng.choice([10, 100, 2000], n, p=[0.5, 0.4, 0.1])),
        "course_id": rng.choice(["A", "B", "C", "D"], n),
        "lesson_id": rng.integers(0, 5, n).astype(str),
    })
    events.loc[0, ["user_id", "course_id", "lesson_id"]] = [999, "E", "only"]  # one user, one view
    folder = write_folder(events, tmp_path / "log", "parquet", n_files=4)
    cfg = RatingsConfig(min_courses=1, batch_rows=120)
    assert_same_result(rate_event_files(folder, cfg, work_dir=tmp_path), rate_events(read_events(folder), cfg, str(folder)))


def test_no_part_holds_the_whole_log(tmp_path, monkeypatch):
    """Peak memory follows batch_rows: every frame validated at once is a small share of the input."""
    events = edge_case_log(2, n=6000, users=300)
    log = tmp_path / "log.csv"
    events.to_csv(log, index=False)
    sizes = []
    validate = pipeline.validate_events
    monkeypatch.setattr(pipeline, "validate_events", lambda frame, *a, **k: sizes.append(len(frame)) or validate(frame, *a, **k))
    written = []
    write = pq.ParquetWriter.write_table
    monkeypatch.setattr(pq.ParquetWriter, "write_table", lambda self, t, *a, **k: written.append(t.num_rows) or write(self, t, *a, **k))
    cfg = RatingsConfig(min_courses=1, batch_rows=500, n_partitions=0)
    result = rate_event_files(log, cfg, work_dir=tmp_path)
    assert result.summary["rows_in"] == len(events) == sum(sizes)
    n_parts = len(sizes)
    assert n_parts >= 6  # about one part per 500 rows of CSV text
    assert max(sizes) < 3 * len(events) / n_parts  # a hash split: no part far above the mean
    assert 0 < max(written) <= 500  # the merged tables are written one step of 500 input rows at a time


def test_on_disk_tables_are_written_and_then_cleaned_up(tmp_path):
    events = edge_case_log(8, n=1500, users=30)
    log = tmp_path / "log.csv"
    events.to_csv(log, index=False)
    cfg = RatingsConfig(min_courses=2, batch_rows=200)
    in_memory = rate_events(read_events(log), cfg, source=str(log))
    write_outputs(in_memory, tmp_path / "mem")
    (tmp_path / "work").mkdir()
    streamed = rate_event_files(log, cfg, work_dir=tmp_path / "work", tables_on_disk=True)
    assert streamed._tables == {"lesson_durations": None, "rejects": None}  # nothing big held in memory
    scratch = streamed.files["lesson_durations"].parent
    write_outputs(streamed, tmp_path / "disk")
    for name in ("ratings", "lesson_durations", "rejects"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "disk" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "mem" / f"{name}.parquet"), check_exact=True)
    assert json.loads((tmp_path / "disk" / "summary.json").read_text()) == json.loads((tmp_path / "mem" / "summary.json").read_text())
    pd.testing.assert_frame_equal(streamed.rerate(threshold="global"), in_memory.rerate(threshold="global"), check_exact=True)
    assert scratch.exists()
    del streamed
    gc.collect()
    assert not scratch.exists()  # the on-disk tables live as long as the result


def test_whole_input_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("user_id,timestamp,url\n")
    with pytest.raises(DataError, match="empty.csv: no rows"):
        rate_event_files(empty, RatingsConfig(batch_rows=10), work_dir=tmp_path)
    no_time = tmp_path / "no_time.csv"
    no_time.write_text("user_id,url\na,/c/x/l1\n")
    with pytest.raises(DataError, match=r"no_time.csv: required column\(s\) \['timestamp'\] missing"):
        rate_event_files(no_time, RatingsConfig(batch_rows=10), work_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "no_time.csv"]  # no scratch left


@pytest.mark.parametrize("step, batch", [(1, 2), (37, 5), (10**9, 64)])
def test_merge_sorted_scratch_interleaves_sorted_files(tmp_path, step, batch):
    rng = np.random.default_rng(3)
    keys = rng.permutation(500) * 3  # unique keys, spread over files in a random interleaving
    owner = rng.integers(0, 4, len(keys))
    files = []
    for k in range(5):  # file 4 is empty
        mine = np.sort(keys[owner == k])
        table = pa.table({"row": mine, "value": (mine * 2).astype(str)})
        files.append(tmp_path / f"f{k}.arrow")
        with scratch_writer(files[-1], table.schema) as writer:
            writer.write_table(table, max_chunksize=batch)
    n = merge_sorted_scratch(files, "row", tmp_path / "out.parquet", step=step)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert n == len(keys) == len(out)
    assert out["row"].tolist() == sorted(keys.tolist())
    assert out["value"].tolist() == [str(2 * k) for k in sorted(keys.tolist())]


def test_user_partition_is_stable_across_batches_and_types():
    ids = pa.chunked_array([pa.array(["7", "x", None, "7", "42"])])
    ints = pa.chunked_array([pa.array([42, 7, 7], pa.int64())])
    a = pipeline._user_partition(ids, 5)
    b = pipeline._user_partition(ints, 5)
    assert a[0] == a[3] == b[1] == b[2] and a[4] == b[0]  # the same user, the same part
    assert a[2] == 0 and ((a >= 0) & (a < 5)).all()
    spread = pipeline._user_partition(pa.chunked_array([pa.array([str(i) for i in range(4000)])]), 8)
    assert np.bincount(spread, minlength=8).min() > 4000 / 8 * 0.8  # users spread evenly
