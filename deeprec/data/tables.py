"""Reading user-supplied tables (CSV or Parquet, a file or a folder of them) with clear errors.

Id columns are text and only the truly empty field is missing: `NA`, `null`, `None`, `nan`, `N/A`
or `#N/A` are ids like any other (the readers' default null markers would make them vanish), and
integer ids from Parquet stay integers written as text even where the column has a null (pandas
would turn them into floats: 7 -> "7.0", and 2^53 + 1 -> 2^53).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deeprec.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")

try:  # the markers pandas reads as missing by default (kept for the columns that are not ids)
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA
except ImportError:  # pragma: no cover - a future pandas without the private name
    _PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                  "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
DEFAULT_NA = sorted(_PANDAS_NA)


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


def separator(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def as_text_columns(table: pa.Table, columns: Iterable[str]) -> pa.Table:
    """`table` with `columns` (those present) cast to Arrow strings: 7 -> "7", null stays null."""
    for name in columns:
        if name in table.column_names and not pa.types.is_string(table.schema.field(name).type):
            column = table[name]
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            table = table.set_column(table.schema.get_field_index(name), name, pc.cast(column, pa.string()))
            table = _pandas_text_metadata(table, name)
    return table


def _pandas_text_metadata(table: pa.Table, name: str) -> pa.Table:
    """The pandas metadata a Parquet file carries, with column `name` now text (else to_pandas would
    rebuild its old dtype, e.g. Int64, from the strings and fail)."""
    metadata = table.schema.metadata or {}
    if b"pandas" not in metadata:
        return table
    info = json.loads(metadata[b"pandas"])
    for column in info.get("columns", []):
        if column.get("name") == name:
            column.update(pandas_type="unicode", numpy_type="object", metadata=None)
    return table.replace_schema_metadata({**metadata, b"pandas": json.dumps(info).encode()})


def text_columns_of(dtype) -> list[str]:
    """The columns a read_table `dtype` mapping asks for as text (dtype str)."""
    if not isinstance(dtype, dict):
        return []
    return [name for name, kind in dtype.items() if kind in (str, "str", "string", object)]


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV/TSV file (a byte-order mark and quotes removed); [] for an empty file."""
    try:
        with open(path, encoding="utf-8-sig") as fh:  # -sig: an Excel byte-order mark is not part of the header
            line = fh.readline()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(separator(path))] if line.strip() else []


def read_table(path: str | Path, dtype=None) -> pd.DataFrame:
    """One CSV/TSV/Parquet file as a DataFrame; a parse error names the file and the line.

    Columns `dtype` maps to str are ids: text, with only the empty field missing (see the module).
    """
    path = Path(path)
    text = text_columns_of(dtype)
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            table = pq.read_table(path)
            return as_text_columns(table, text).to_pandas()
        header = csv_header(path)
        na_values = {name: ([""] if name in text else DEFAULT_NA) for name in header}
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        return pd.read_csv(path, sep=separator(path), dtype=dtype, encoding="utf-8-sig", on_bad_lines="error",
                           keep_default_na=False, na_values=na_values)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot be parsed: {str(exc).strip()}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from None


def check_same_columns(columns_by_file: list[tuple[Path, list[str]]], what: str = "columns") -> None:
    """Every file of a folder has the same columns; otherwise a DataError names the file and the
    column (a column missing in one file would silently change the meaning of its rows)."""
    if len(columns_by_file) < 2:
        return
    first, first_columns = columns_by_file[0]
    for file, columns in columns_by_file[1:]:
        lacks = sorted(set(first_columns) - set(columns))
        extra = sorted(set(columns) - set(first_columns))
        if lacks or extra:
            detail = "; ".join(
                part for part in (
                    f"lacks the column(s) {', '.join(map(repr, lacks))} that {first.name} has" if lacks else "",
                    f"has the column(s) {', '.join(map(repr, extra))} that {first.name} lacks" if extra else "",
                ) if part
            )
            raise DataError(f"{file}: {detail} (first file: {first}); every file of a folder needs the same {what}")


def read_tables(path: str | Path, dtype=None) -> pd.DataFrame:
    """All tables at `path` concatenated (a folder of parts reads as one table, all with the same columns)."""
    files = table_files(path)
    frames = [read_table(p, dtype=dtype) for p in files]
    check_same_columns([(file, list(frame.columns)) for file, frame in zip(files, frames)])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_id_column(path: str | Path, column: str) -> pd.Series:
    """The ids of a users= / items= file as text (first occurrence order, duplicates and blanks dropped).

    Accepted: a plain list (one id per line, no header), a CSV/TSV with a header naming `column`
    (one or more columns; a byte-order mark and quotes are fine), or a Parquet file with a `column`
    column or a single column of any name.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path} does not exist; give a file of ids (one per line, or a table with {column})")
    if file.suffix.lower() in PARQUET_SUFFIXES:
        try:
            names = pq.read_schema(file).names
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot be read as Parquet: {str(exc).splitlines()[0]}") from None
        name = column if column in names else (names[0] if len(names) == 1 else None)
        if name is None:
            raise DataError(f"{path}: no column {column} (columns: {names}); give it one, or a single column of ids")
        ids = read_table(file, dtype={name: str})[name]
    else:
        header = csv_header(file)
        if column in header:
            ids = read_table(file, dtype={name: str for name in header})[column]
        elif len(header) > 1:
            raise DataError(f"{path}: no column {column} in the header {header}; name the column {column}, "
                            "or give one id per line without a header")
        else:  # a plain list: every line is an id
            try:
                lines = file.read_text(encoding="utf-8-sig").splitlines()
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: is not valid UTF-8 text (byte {exc.start}: {exc.reason})") from None
            ids = pd.Series([line.strip().strip('"') for line in lines], dtype=object)
    ids = ids.dropna().astype(str).str.strip()
    ids = ids[ids != ""]
    if len(ids) == 0:
        raise DataError(f"{path}: no {column} in the file")
    return pd.Series(pd.unique(ids.to_numpy(dtype=object)), dtype=object, name=column)
