"""Reading user-supplied tables (CSV or Parquet, a file or a folder of them) with clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deeprec.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def table_files(path: str | Path) -> list[Path]:
    """The table files at `path`: the file itself, or the CSV/Parquet files of a folder (sorted)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: the folder holds no .csv, .tsv or .parquet file")
        return files
    return [path]


def read_table(path: str | Path, dtype=None) -> pd.DataFrame:
    """One CSV/TSV/Parquet file as a DataFrame; a parse error names the file and the line."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        sep = "\t" if suffix == ".tsv" else ","
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        return pd.read_csv(path, sep=sep, dtype=dtype, encoding="utf-8-sig", on_bad_lines="error")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot be parsed: {str(exc).strip()}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None


def read_tables(path: str | Path, dtype=None) -> pd.DataFrame:
    """All tables at `path` concatenated (a folder of parts reads as one table)."""
    frames = [read_table(p, dtype=dtype) for p in table_files(path)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
