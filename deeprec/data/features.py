"""Side features for any data: user and item tables (CSV/Parquet keyed by user_id / item_id) encoded
into float columns aligned to the data's indices, with a report of what was unknown, missing or encoded;
and the item representations every consumer shares (item factors of the train split, difficulty).

Encoding, per column of a feature table (the key column excluded):
- numeric (and bool, and datetime as epoch seconds): the value; a missing value gets the column's
  mean, and a `<col>=missing` 0/1 column says where that happened;
- categorical (text, category dtype, or a column named in `categorical_columns`): one-hot columns
  `<col>=<value>` for the `max_categories` most frequent values, `<col>=<other>` for the rest (and
  for values never seen when a new table is encoded with the same spec), `<col>=<missing>` for blanks.
  A model's linear projection of a one-hot block is an embedding of the category, so "one-hot" and
  "embedded" are the same thing to the models that project features (lstm, attention, ncf).
- ids of the data without a row in the table get every column's fill value and `has_features` = 0.
The spec (fills, categories, column order) is plain JSON, so a checkpoint can encode new rows alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deeprec.data.tables import read_tables
from deeprec.errors import ConfigError, DataError

log = logging.getLogger("deeprec.features")

MISSING = "<missing>"
OTHER = "<other>"
HAS_FEATURES = "has_features"


@dataclass
class SideFeaturesConfig:
    """The keys every data config shares for side features (data.item_features=PATH, ...)."""

    item_features: str | None = None  # CSV/Parquet keyed by item_id: extra item columns (numeric or categorical)
    user_features: str | None = None  # CSV/Parquet keyed by user_id: learner columns (numeric or categorical)
    categorical_columns: list[str] = field(default_factory=list)  # numeric-looking columns to one-hot (e.g. a category code)
    max_categories: int = 50  # one-hot columns per categorical column; rarer values share <col>=<other>


def _numeric_values(column: pd.Series) -> np.ndarray | None:
    """float64 values of a numeric, bool or datetime column (NaN where missing), or None for text."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.to_datetime(column, utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        return seconds.to_numpy(np.float64)
    return None


def fit_spec(table: pd.DataFrame, key: str, categorical: list[str], max_categories: int) -> list[dict[str, Any]]:
    """The encoding of each feature column of `table` (see the module docstring), as JSON-able dicts."""
    spec = []
    for name in table.columns:
        if name == key:
            continue
        column = table[name]
        values = None if name in categorical else _numeric_values(column)
        if values is not None:
            finite = values[np.isfinite(values)]
            if len(finite) == 0:
                continue  # an empty column carries nothing (reported as dropped)
            spec.append({"column": name, "kind": "numeric", "fill": float(finite.mean()),
                         "indicator": bool(len(finite) < len(values))})
        else:
            text = column.astype("string").str.strip()
            text = text.mask(text == "", pd.NA)
            counts = text.dropna().value_counts()
            order = sorted(counts.index, key=lambda v: (-counts[v], str(v)))  # most frequent first, ties by name
            spec.append({"column": name, "kind": "categorical", "categories": [str(v) for v in order[:max_categories]],
                         "other": len(order) > max_categories, "missing": bool(text.isna().any())})
    return spec


def spec_columns(spec: list[dict[str, Any]]) -> list[str]:
    """The encoded column names a spec produces, in order."""
    names = []
    for entry in spec:
        col = entry["column"]
        if entry["kind"] == "numeric":
            names += [col] + ([f"{col}=missing"] if entry["indicator"] else [])
        else:
            names += [f"{col}={v}" for v in entry["categories"]] + [f"{col}={OTHER}", f"{col}={MISSING}"]
    return names + [HAS_FEATURES]


def apply_spec(table: pd.DataFrame, spec: list[dict[str, Any]]) -> pd.DataFrame:
    """[rows, F] float32 encoding of `table` by `spec` (one row per table row, same order)."""
    blocks = {}
    n = len(table)
    for entry in spec:
        col = entry["column"]
        column = table[col] if col in table.columns else pd.Series([pd.NA] * n, index=table.index, dtype="object")
        if entry["kind"] == "numeric":
            values = _numeric_values(column)
            if values is None:  # text in a numeric column of the spec: numbers where they parse
                values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
            missing = ~np.isfinite(values)
            blocks[col] = np.where(missing, entry["fill"], values)
            if entry["indicator"]:
                blocks[f"{col}=missing"] = missing.astype(np.float64)
        else:
            text = column.astype("string").str.strip()
            text = text.mask(text == "", pd.NA)
            blank = text.isna().to_numpy()
            codes = pd.Index(entry["categories"], dtype=object).get_indexer(text.fillna("").astype(object).to_numpy())
            codes = np.where(blank, -1, codes)
            for k, value in enumerate(entry["categories"]):
                blocks[f"{col}={value}"] = (codes == k).astype(np.float64)
            blocks[f"{col}={OTHER}"] = ((codes < 0) & ~blank).astype(np.float64)
            blocks[f"{col}={MISSING}"] = blank.astype(np.float64)
    blocks[HAS_FEATURES] = np.ones(n)
    return pd.DataFrame(blocks, index=table.index).astype(np.float32)


def fill_row(spec: list[dict[str, Any]]) -> pd.DataFrame:
    """The encoding of an id without a feature row: fill values, <missing> categories, has_features 0."""
    row = apply_spec(pd.DataFrame(index=[0]), spec)
    row[HAS_FEATURES] = 0.0
    return row


@dataclass
class EncodedFeatures:
    """Features aligned to a list of ids: `frame` [n_ids, F] float32 (RangeIndex), the spec, the report."""

    frame: pd.DataFrame
    spec: list[dict[str, Any]]
    report: dict[str, Any]


def encode_table(table: pd.DataFrame, key: str, ids: np.ndarray, source: str, categorical=(),
                 max_categories: int = 50, spec: list[dict[str, Any]] | None = None) -> EncodedFeatures:
    """Encode a feature table keyed by `key` for the data's `ids` (index order), reporting what it
    could not use: ids the data does not have (never fatal), ids without a row, blanks per column,
    repeated ids (the first row is kept). A missing key column, a categorical column the table does
    not have, or a table whose ids match none of the data's is a DataError naming it."""
    if key not in table.columns:
        raise DataError(f"{source}: the key column '{key}' is missing (columns: {list(table.columns)}); "
                        f"a feature table needs a '{key}' column")
    absent = sorted(set(categorical) - set(table.columns))
    if absent:
        raise DataError(f"{source}: data.categorical_columns names {absent}, which the table does not have "
                        f"(columns: {list(table.columns)})")
    if max_categories < 1:
        raise ConfigError(f"data.max_categories={max_categories} must be at least 1")
    keys = table[key].astype("string").str.strip()
    blank_key = keys.isna() | (keys == "")
    table = table[~blank_key.to_numpy()].assign(**{key: keys[~blank_key].astype(str).to_numpy()})
    repeated = table.duplicated(subset=[key], keep="first").to_numpy()
    table = table[~repeated]
    ids = np.asarray(ids).astype(str)
    position = pd.Index(ids).get_indexer(table[key].to_numpy())
    known = position >= 0
    if len(table) and not known.any():
        raise DataError(f"{source}: none of its {len(table)} {key} values is an id of the data "
                        f"(table: {table[key].head(3).tolist()}, data: {ids[:3].tolist()}); check the key column")
    unknown_ids = table.loc[~known, key].tolist()
    table = table[known]
    spec = spec if spec is not None else fit_spec(table, key, list(categorical), max_categories)
    encoded = apply_spec(table, spec)
    frame = pd.concat([fill_row(spec)] * len(ids), ignore_index=True) if len(ids) else fill_row(spec).iloc[:0]
    frame.iloc[position[known]] = encoded.to_numpy()
    used = {entry["column"] for entry in spec}
    report = {
        "source": source,
        "key": key,
        "rows": int(len(table) + len(unknown_ids) + repeated.sum() + blank_key.sum()),
        "ids_matched": int(known.sum()),
        "ids_unknown": len(unknown_ids),
        "unknown_examples": [str(v) for v in unknown_ids[:5]],
        "rows_blank_key": int(blank_key.sum()),
        "rows_repeated_key": int(repeated.sum()),
        "ids_without_features": int(len(ids) - known.sum()),
        "missing_values": {c: int(table[c].isna().sum()) for c in table.columns if c != key and table[c].isna().any()},
        "numeric": [e["column"] for e in spec if e["kind"] == "numeric"],
        "categorical": {e["column"]: len(e["categories"]) for e in spec if e["kind"] == "categorical"},
        "dropped_empty": [c for c in table.columns if c != key and c not in used],
        "encoded_columns": int(frame.shape[1]),
    }
    return EncodedFeatures(frame.reset_index(drop=True), spec, report)


def read_feature_table(path: str, key: str) -> pd.DataFrame:
    """A user/item feature table (CSV/TSV/Parquet file or folder) with its key column read as text."""
    return read_tables(path, dtype={key: str})


def log_report(report: dict[str, Any]) -> None:
    """One line for what was used, one warning for what was not."""
    log.info("%s: %d ids matched, %d encoded columns (numeric %s, categorical %s)", report["source"],
             report["ids_matched"], report["encoded_columns"], report["numeric"], report["categorical"])
    problems = {k: report[k] for k in ("ids_unknown", "ids_without_features", "rows_blank_key", "rows_repeated_key")
                if report[k]}
    if problems or report["missing_values"] or report["dropped_empty"]:
        log.warning("%s: %s; blanks per column %s (filled); empty columns dropped %s; unknown ids e.g. %s",
                    report["source"], problems, report["missing_values"], report["dropped_empty"],
                    report["unknown_examples"])


def combine(existing: pd.DataFrame | None, extra: pd.DataFrame | None) -> pd.DataFrame | None:
    """Column-wise union of two aligned feature frames (the extra table's columns win a name clash)."""
    if existing is None or existing.shape[1] == 0:
        return extra
    if extra is None:
        return existing
    kept = existing.drop(columns=[c for c in existing.columns if c in extra.columns])
    return pd.concat([kept.reset_index(drop=True), extra.reset_index(drop=True)], axis=1).astype(np.float32)


def attach_side_features(data, cfg, derived_users: pd.DataFrame | None = None):
    """Add cfg.item_features / cfg.user_features (SideFeaturesConfig keys) to `data`, plus learner
    features derived from the log (`derived_users`, keyed by user_id), and record their reports and
    specs in data.extras ("feature_reports", "user_feature_spec", "item_feature_spec")."""
    reports = data.extras.setdefault("feature_reports", [])
    categorical = list(getattr(cfg, "categorical_columns", []) or [])
    max_categories = int(getattr(cfg, "max_categories", 50))
    sides = (("item", "item_id", data.item_ids, getattr(cfg, "item_features", None), None),
             ("user", "user_id", data.user_ids, getattr(cfg, "user_features", None), derived_users))
    work = []  # (side, key, ids, table, source, columns to one-hot)
    for side, key, ids, path, derived in sides:
        if derived is not None and len(derived):
            work.append((side, key, ids, derived, f"{side} features derived from the log", []))
        if path:
            table = read_feature_table(path, key)
            work.append((side, key, ids, table, str(path), [c for c in categorical if c in table.columns]))
    named = {c for *_, table, _, _ in work for c in table.columns}
    absent = sorted(set(categorical) - named)
    if absent:
        raise ConfigError(f"data.categorical_columns={categorical}: {absent} is a column of no feature table given "
                          "(data.item_features / data.user_features)")
    for side, key, ids, table, source, wanted in work:
        encoded = encode_table(table, key, ids, source, wanted, max_categories)
        log_report(encoded.report)
        reports.append({"side": side, **encoded.report})
        setattr(data, f"{side}_features", combine(getattr(data, f"{side}_features"), encoded.frame))
        data.extras[f"{side}_feature_spec"] = data.extras.get(f"{side}_feature_spec", []) + [
            {"source": source, "key": key, "spec": encoded.spec}]
    return data


# -- shared item representations ----------------------------------------------------------------
def item_factors(data, dim: int = 32, seed: int = 0) -> np.ndarray:
    """[n_items, dim] float64 item factors of the binary train matrix (truncated SVD, V·sqrt(S)).

    The default item representation where the data has no item features (LinUCB's features=auto,
    intra-list diversity, the hybrid's arm features). Deterministic for a seed; items nobody has
    in train get zeros. Fewer dimensions than requested when the matrix is smaller.
    """
    import torch

    train = data.matrix("train", binary=True).tocoo()
    rank = max(1, min(dim, min(train.shape) - 1 if min(train.shape) > 1 else 1))
    if train.nnz == 0:
        return np.zeros((data.n_items, rank))
    dense_small = train.shape[0] * train.shape[1] <= 4_000_000
    with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's CPU generator as it was
        torch.manual_seed(seed)
        if dense_small:
            x = torch.from_numpy(train.toarray().astype(np.float64))
            _, s, v = torch.linalg.svd(x, full_matrices=False)
            s, v = s[:rank], v[:rank].T
        else:
            index = torch.from_numpy(np.vstack([train.row, train.col]).astype(np.int64))
            x = torch.sparse_coo_tensor(index, torch.from_numpy(train.data.astype(np.float64)), train.shape,
                                        check_invariants=False)
            _, s, v = torch.svd_lowrank(x, q=rank, niter=4)
    factors = (v * s.clamp(min=0).sqrt()).numpy()
    signs = np.sign(factors[np.abs(factors).argmax(0), np.arange(factors.shape[1])])  # a fixed sign per factor
    return factors * np.where(signs == 0, 1.0, signs)


def item_difficulty(data) -> np.ndarray | None:
    """[n_items] float64 difficulty in 0..1 when the data has one: data.extras["item_difficulty"]
    (coursera: SPEC 2.3's dif over the train rows), or an item feature column named `difficulty`
    or `dif` (synthetic's course difficulty), min-max scaled; else None."""
    given = data.extras.get("item_difficulty")
    if given is not None:
        return np.asarray(given, np.float64)
    frame = data.item_features
    if frame is None:
        return None
    for name in ("difficulty", "dif"):
        if name in frame.columns:
            values = frame[name].to_numpy(np.float64)
            low, high = np.nanmin(values), np.nanmax(values)
            return np.zeros_like(values) if high <= low else (values - low) / (high - low)
    return None
