"""Reading event logs (CSV/Parquet, file or folder) with whole-input errors, and the atomic output folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deeprec.data.ratings.events import check_columns
from deeprec.data.tables import table_files
from deeprec.errors import DataError

# every column is read as text: timestamps are parsed by deeprec (numbers or ISO-8601 alike),
# ids keep leading zeros, and each part of a large file is typed the same way
TEXT_COLUMNS = ("user_id", "timestamp", "url", "course_id", "lesson_id", "event")


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if not line.strip():
        raise DataError(f"{path}: the file is empty (no header, no rows)")
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(sep)]


def _csv_options(path: Path, columns: list[str]):
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    types = {c: pa.string() for c in columns}
    return (
        pacsv.ReadOptions(block_size=1 << 24),
        pacsv.ParseOptions(delimiter=sep),
        pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False),
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
    return DataError(f"{path}: cannot be parsed: {str(exc).strip().splitlines()[0]}")


def iter_event_batches(path: str | Path, batch_rows: int) -> Iterator[tuple[Path, pd.DataFrame]]:
    """(file, frame of <= ~batch_rows rows) for every file at `path`; the columns are checked first."""
    for file in table_files(path):
        suffix = file.suffix.lower()
        if suffix in (".parquet", ".pq"):
            try:
                reader = pq.ParquetFile(file)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{file}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
            check_columns(reader.schema_arrow.names, str(file))
            for batch in reader.iter_batches(batch_size=batch_rows):
                yield file, batch.to_pandas()
            continue
        columns = _csv_header(file)
        check_columns(columns, str(file))
        read, parse, convert = _csv_options(file, [c for c in columns if c in TEXT_COLUMNS])
        try:
            stream = pacsv.open_csv(file, read_options=read, parse_options=parse, convert_options=convert)
            pending, size = [], 0
            for batch in stream:
                pending.append(batch)
                size += batch.num_rows
                if size >= batch_rows:
                    yield file, pa.Table.from_batches(pending).to_pandas()
                    pending, size = [], 0
            if pending:
                yield file, pa.Table.from_batches(pending).to_pandas()
        except pa.ArrowInvalid as exc:
            raise _parse_error(file, exc) from None
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None


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


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed Python types written as text (rejects keep the raw values)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    return out


def write_outputs(result, out_dir: str | Path) -> Path:
    """SPEC 1.10 folder: ratings, lesson_durations, rejects (Parquet) and summary.json, atomically.

    Everything is written into a temporary sibling folder that is renamed at the end; an existing
    `out_dir` is replaced only then, so a failed run leaves the previous state (or nothing).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        result.ratings.to_parquet(tmp / "ratings.parquet", index=False)
        result.lesson_durations.to_parquet(tmp / "lesson_durations.parquet", index=False)
        _parquet_safe(result.rejects).to_parquet(tmp / "rejects.parquet", index=False)
        with open(tmp / "summary.json", "w") as fh:
            json.dump(result.summary, fh, indent=2, sort_keys=True, default=str)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "previous")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
