"""Reading event logs (CSV/Parquet, file or folder) with whole-input errors, and the atomic output folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq

from deeprec.atomic import default_file_mode, make_temp, remove_deeprec_file
from deeprec.data.ratings.events import check_columns
from deeprec.data.tables import (
    PARQUET_SUFFIXES,
    as_text_columns,
    check_same_columns,
    csv_header,
    table_files,
)
from deeprec.errors import DataError

# every column is read as text: timestamps are parsed by deeprec (numbers or ISO-8601 alike),
# ids keep leading zeros, and each part of a large file is typed the same way
TEXT_COLUMNS = ("user_id", "timestamp", "url", "course_id", "lesson_id", "event")
ID_COLUMNS = ("user_id", "url", "course_id", "lesson_id", "event")  # text from Parquet too (timestamps may be numbers)
ROW_ID = "__deeprec_row"  # the input row (0-based) of each event in the out-of-core scratch files
REJECT_ROW = ROW_ID
# scratch files of the out-of-core path: Arrow IPC with LZ4, about 5x faster to write and read than Parquet;
# small record batches, so that merging many partition files holds little of each
SCRATCH_COMPRESSION = "lz4"
SCRATCH_BATCH_ROWS = 8192
CSV_BYTES_PER_ROW = 60  # about one CSV line of SPEC 1.1 (user, epoch seconds, URL, event)


def _csv_header(path: Path) -> list[str]:
    columns = csv_header(path)
    if not columns:
        raise DataError(f"{path}: the file is empty (no header, no rows)")
    return columns


def _file_columns(file: Path) -> list[str]:
    """The column names of one log file (Parquet schema or CSV header)."""
    if file.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pq.read_schema(file).names
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{file}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
    return _csv_header(file)


def log_files(path: str | Path) -> list[Path]:
    """The files of a log, each checked for SPEC 1.1's columns, all with the same SPEC 1.1 columns:
    a folder where one file lacks e.g. the optional `event` column is an error naming that file."""
    files = table_files(path)
    columns = []
    for file in files:
        names = _file_columns(file)
        check_columns(names, str(file))
        columns.append((file, names))
    check_same_log_columns(columns)
    return files


def check_same_log_columns(columns_by_file: list[tuple[Path, list[str]]]) -> None:
    """(file, its column names) of every file of a log: the same SPEC 1.1 columns in each, else a
    DataError naming the file and the column (both engines apply it)."""
    check_same_columns([(file, [c for c in TEXT_COLUMNS if c in names]) for file, names in columns_by_file],
                       what="log columns (SPEC 1.1), or rate the files separately")


def _csv_options(path: Path, columns: list[str], batch_rows: int = 1 << 62):
    """pyarrow CSV options; blocks of about batch_rows / 8 lines (1-16 MiB): the streaming reader
    holds several blocks ahead, so its memory follows the batch size."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    types = {c: pa.string() for c in columns}
    block = int(min(1 << 24, max(1 << 20, batch_rows * CSV_BYTES_PER_ROW // 8)))
    return (
        pacsv.ReadOptions(block_size=block),
        pacsv.ParseOptions(delimiter=sep),
        # only the empty field is null: NA, null, None, nan, N/A or #N/A are ids (see deeprec.data.tables)
        pacsv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True,
                             quoted_strings_can_be_null=False),
    )


def _parse_error(path: Path, exc: Exception) -> DataError:
    """The line of the first malformed row (pyarrow does not say it; pandas' tokenizer does)."""
    try:
        for _ in pd.read_csv(path, dtype=str, chunksize=1 << 20, sep="\t" if path.suffix.lower() == ".tsv" else ","):
            pass
    except pd.errors.ParserError as pexc:
        return DataError(f"{path}: cannot be parsed: {str(pexc).strip()}")
    except Exception:  # noqa: BLE001 - fall back to pyarrow's own message
        pass
    line = _first_ragged_line(path)
    where = f" (line {line} has another number of fields than the header)" if line else ""
    return DataError(f"{path}: cannot be parsed{where}: {str(exc).strip().splitlines()[0]}")


def _first_ragged_line(path: Path) -> int | None:
    """1-based number of the first line whose field count differs from the header's (error path only)."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        width = len(next(reader, []))
        for fields in reader:
            if fields and len(fields) != width:
                return reader.line_num
    return None


def iter_event_tables(path: str | Path, batch_rows: int) -> Iterator[tuple[Path, pa.Table]]:
    """(file, Arrow table of <= ~batch_rows rows) for every file at `path`; the columns are checked first.

    Ids (user, url, course, lesson, event) come as Arrow strings whatever the file's types, so both
    ratings paths see the same text: an int64 Parquet column with a null gives "7", not "7.0".
    """
    for file in log_files(path):
        suffix = file.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            try:
                reader = pq.ParquetFile(file)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{file}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
            for batch in reader.iter_batches(batch_size=min(batch_rows, 1 << 40)):
                yield file, as_text_columns(pa.Table.from_batches([batch]), ID_COLUMNS)
            continue
        columns = _csv_header(file)
        read, parse, convert = _csv_options(file, [c for c in columns if c in TEXT_COLUMNS], batch_rows)
        try:
            stream = pacsv.open_csv(file, read_options=read, parse_options=parse, convert_options=convert)
            pending, size = [], 0
            for batch in stream:
                pending.append(batch)
                size += batch.num_rows
                if size >= batch_rows:
                    yield file, pa.Table.from_batches(pending)
                    pending, size = [], 0
            if pending:
                yield file, pa.Table.from_batches(pending)
        except pa.ArrowInvalid as exc:
            raise _parse_error(file, exc) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None


def iter_event_batches(path: str | Path, batch_rows: int) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(file, frame of <= ~batch_rows rows) for every file at `path`; the columns are checked first."""
    for file, table in iter_event_tables(path, batch_rows):
        yield file, table.to_pandas()


def read_events(path: str | Path, cfg=None) -> pd.DataFrame:
    """The whole event log at `path` (a CSV/TSV/Parquet file or a folder of them) as one frame.

    Raises DataError naming the file for a missing column, an unparseable line or no rows at all.
    """
    frames = [frame for _, frame in iter_event_batches(path, batch_rows=1 << 62)]
    frames = [f for f in frames if len(f)]
    if not frames:
        raise DataError(f"{path}: no rows (a header but no events)")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_catalogue(path: str | Path) -> pd.Series:
    """Optional catalogue table course_id, n_lessons -> lessons per course (SPEC 1.5)."""
    from deeprec.data.tables import read_tables

    table = read_tables(path, dtype={"course_id": str})
    missing = [c for c in ("course_id", "n_lessons") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: catalogue column(s) {missing} missing; found {list(table.columns)}")
    n = pd.to_numeric(table["n_lessons"], errors="coerce")
    bad = n.isna() | (n <= 0)
    if bad.any():
        raise DataError(
            f"{path}: n_lessons must be a positive number; course {table['course_id'][bad].iloc[0]!r} has "
            f"{table['n_lessons'][bad].iloc[0]!r}"
        )
    return pd.Series(n.to_numpy(np.float64), index=table["course_id"].astype(str).to_numpy(), name="n_lessons")


def parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed Python types written as text (rejects keep the raw values)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    return out


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the columns and types of `schema` (absent columns as nulls)."""
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_scratch(frame: pd.DataFrame | pa.Table, path: Path) -> None:
    """A scratch table (Arrow IPC file, LZ4) that read_scratch/iter_scratch_batches read back."""
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    feather.write_feather(table, path, compression=SCRATCH_COMPRESSION, chunksize=SCRATCH_BATCH_ROWS)


def scratch_writer(path: Path, schema: pa.Schema) -> pa.ipc.RecordBatchFileWriter:
    """A scratch file written batch by batch (write_table), same format as write_scratch."""
    return pa.ipc.new_file(path, schema, options=pa.ipc.IpcWriteOptions(compression=SCRATCH_COMPRESSION))


def read_scratch(paths: list[Path]) -> pd.DataFrame:
    """Scratch files as one frame (read, not memory-mapped: mapped pages would count as the process's)."""
    frames = [feather.read_table(p, memory_map=False).to_pandas() for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _scratch_batches(path: Path) -> Iterator[pa.RecordBatch]:
    reader = pa.ipc.open_file(pa.OSFile(str(path)))
    for i in range(reader.num_record_batches):
        yield reader.get_batch(i)


def _next_table(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    batch = next(batches, None)
    return None if batch is None else pa.Table.from_batches([batch])


def merge_sorted_scratch(files: list[Path], key: str, out: Path, step: int) -> int:
    """Merge scratch files each sorted by the unique integer column `key` into one sorted Parquet `out`.

    Streams: files are read a record batch at a time and `key` values merged `step` at a time
    ([lo, lo + step)), so memory is about step + len(files) batches, not the total.
    Returns the number of rows written.
    """
    schema = pa.unify_schemas([pa.ipc.open_file(pa.OSFile(str(f))).schema for f in files], promote_options="permissive")
    total = sum(pa.ipc.open_file(pa.OSFile(str(f))).count_rows() for f in files)
    readers: list = [_scratch_batches(f) for f in files]
    buffers = [_next_table(r) for r in readers]  # rows read but not yet written, per file
    heads = [b.column(key)[0].as_py() for b in buffers if b is not None and b.num_rows]
    low, written = (min(heads) if heads else 0), 0
    with pq.ParquetWriter(out, schema) as writer:
        writer.write_table(schema.empty_table())
        while written < total:
            high, pieces = low + step, []
            for i, buffer in enumerate(buffers):
                # read on while every buffered row of this file is below the step's upper bound
                while readers[i] is not None and (buffer is None or buffer.num_rows == 0 or buffer.column(key)[-1].as_py() < high):
                    more = _next_table(readers[i])
                    if more is None:
                        readers[i] = None
                    else:
                        buffer = more if buffer is None else pa.concat_tables([buffer, more])
                if buffer is not None and buffer.num_rows:
                    cut = int(np.searchsorted(buffer.column(key).to_numpy(), high))
                    pieces.append(_conform(buffer.slice(0, cut), schema))
                    buffer = buffer.slice(cut)
                buffers[i] = buffer
            merged = pa.concat_tables(pieces) if pieces else schema.empty_table()
            if merged.num_rows:
                writer.write_table(merged.take(pa.array(np.argsort(merged.column(key).to_numpy(), kind="stable"))))
                written += merged.num_rows
            low = high
    return written


def _copy_without(source: Path, target: Path, drop: str, read_rows: int = 1 << 16) -> None:
    """Copy a Parquet file batch by batch, leaving out the column `drop`."""
    reader = pq.ParquetFile(source)
    names = [n for n in reader.schema_arrow.names if n != drop]
    schema = pa.schema([reader.schema_arrow.field(n) for n in names], metadata=reader.schema_arrow.metadata)
    with pq.ParquetWriter(target, schema) as writer:
        writer.write_table(schema.empty_table())
        for batch in reader.iter_batches(batch_size=read_rows, columns=names):
            writer.write_table(pa.Table.from_batches([batch], schema=schema))


def read_parquet_frame(path: Path, index: str | None = None) -> pd.DataFrame:
    """A table written by merge_sorted_parquet as a frame; `index` names a column to become the index."""
    frame = pd.read_parquet(path)
    if index is not None:
        frame.index = frame.pop(index).to_numpy()
    return frame


#: deeprec-ratings' files (summary.json last: its presence says the set is complete); user_features.parquet:
#: the learner behaviour features of deeprec.data.ratings.learners
RATINGS_FILES = ("ratings.parquet", "lesson_durations.parquet", "rejects.parquet", "user_features.parquet", "summary.json")


def write_outputs(result, out_dir) -> Path:
    """SPEC 1.10 folder: ratings, lesson_durations, rejects (Parquet) and summary.json, plus
    user_features.parquet (the learner behaviour features).

    `out_dir` is a path (claimed here, see deeprec.outputs) or an OutputFolder a caller claimed.
    The files are written under hidden temporary names first and renamed into place together
    at the end, so a failed run leaves the previous files (or, in a new folder, no folder at all).
    Only deeprec's own files are replaced; anything else in the folder stays. Tables an out-of-core
    run kept on disk (`result.files`) are copied, never loaded whole.
    """
    from deeprec.outputs import OutputFolder, claim_output

    if not isinstance(out_dir, OutputFolder):
        with claim_output(out_dir, "deeprec-ratings", key="output") as folder:
            return write_outputs(result, folder)
    folder = out_dir
    folder.remove_temporaries(RATINGS_FILES)
    folder.own(RATINGS_FILES)
    files = dict(getattr(result, "files", {}) or {})
    staged: dict[str, Path] = {}

    def stage(name: str) -> Path:
        staged[name] = make_temp(folder.path, name)
        return staged[name]

    try:
        result.ratings.to_parquet(stage("ratings.parquet"), index=False)
        result.user_features.to_parquet(stage("user_features.parquet"), index=False)
        if "lesson_durations" in files:
            shutil.copyfile(files["lesson_durations"], stage("lesson_durations.parquet"))
        else:
            result.lesson_durations.to_parquet(stage("lesson_durations.parquet"), index=False)
        if "rejects" in files:
            _copy_without(files["rejects"], stage("rejects.parquet"), drop=REJECT_ROW)
        else:
            parquet_safe(result.rejects).to_parquet(stage("rejects.parquet"), index=False)
        with open(stage("summary.json"), "w") as fh:
            json.dump(result.summary, fh, indent=2, sort_keys=True, default=str)
        for name, tmp in staged.items():
            os.chmod(tmp, default_file_mode())
        for name in RATINGS_FILES:  # summary.json last: its presence says the set is complete
            os.replace(staged.pop(name), folder.path / name)
    finally:
        for tmp in staged.values():
            remove_deeprec_file(tmp)
    return folder.path
