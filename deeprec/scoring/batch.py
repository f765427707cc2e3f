"""Batch scoring: top-k items for every (or every listed) user of a checkpoint, to Parquet in parts.

Users are scored in chunks by the shared ranking primitive (deeprec.ranking.full_ranking_topk: score,
mask the user's seen items, torch.topk), so memory is bounded by batch_size x n_items. Parts are written
atomically and recorded in a manifest, so a re-run after a crash resumes and ends identical.
Users without history (unknown ids, or no seen item) get the fallback list: the items most users
of the checkpoint had (popularity from its `seen` matrix), or nothing with fallback=skip.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import torch

from deeprec.atomic import atomic_write
from deeprec.checkpoint import id_arrays, load_recommender, seen_matrix
from deeprec.config import check_choice, resolve_device
from deeprec.errors import ConfigError, DataError
from deeprec.ranking import full_ranking_topk
from deeprec.scoring.output import SCHEMA, PartFolder, SingleFile, file_sha256, shard_tag

log = logging.getLogger("deeprec.score")

FALLBACKS = ("popularity", "skip")


@dataclass
class ScoreConfig:
    ckpt: str = ""  # a deeprec checkpoint (any model), loaded with weights_only=True
    output: str = ""  # a folder of Parquet parts (resumable), or a path ending in .parquet for one file
    k: int = 10  # items per user
    device: str = "cpu"  # cpu | cuda | cuda:N
    batch_size: int | None = None  # users per scoring chunk; null: sized to the device's free memory
    users: str | None = None  # file of user ids to score (one per line, or a CSV/Parquet table with user_id)
    items: str | None = None  # file of item ids to rank among (one per line, or a table with item_id)
    shard: str | None = None  # "i/n": score the i-th of n contiguous, equal blocks of the users (0-based)
    fallback: str = "popularity"  # popularity | skip: what users without history get
    resume: bool = True  # continue from the finished parts of a run with the same parameters
    part_rows: int = 1000000  # output rows (users x k) per Parquet part
    progress: bool = True  # a tqdm progress bar on stderr
    memory_fraction: float = 0.5  # share of the device's free memory the automatic batch_size may fill
    score_bytes: int = 16  # device bytes per user-item score (scores, mask, topk workspace) for the automatic batch_size
    max_batch_size: int = 8192  # upper bound of the automatic batch_size


def check_config(cfg: ScoreConfig) -> None:
    """Values the schema's types cannot check: one sentence each, naming the key."""
    for key in ("ckpt", "output"):
        if getattr(cfg, key) in ("", "???", None):
            raise ConfigError(f"deeprec-score needs {key}=PATH")
    if cfg.k < 1:
        raise ConfigError(f"k={cfg.k} is not valid; give a number of items >= 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size} is not valid; give a number >= 1, or null for automatic")
    if cfg.part_rows < 1:
        raise ConfigError(f"part_rows={cfg.part_rows} is not valid; give a number of rows >= 1")
    check_choice(cfg.fallback, FALLBACKS, "fallback")
    if not 0 < cfg.memory_fraction <= 1:
        raise ConfigError(f"memory_fraction={cfg.memory_fraction} is not valid; give a share in (0, 1]")
    parse_shard(cfg.shard)


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """"i/n" -> (i, n) with 0 <= i < n; None for no sharding."""
    if shard is None:
        return None
    try:
        index, count = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise ConfigError(f"shard={shard!r} is not valid; give i/n, e.g. shard=0/4 (0-based)") from None
    if not 0 <= index < count:
        raise ConfigError(f"shard={shard!r} is not valid; need 0 <= i < n, e.g. shard=0/4 .. shard=3/4")
    return index, count


def read_id_list(path: str, column: str) -> np.ndarray:
    """Ids (strings, first occurrence order, duplicates dropped) from a plain list (one id per line),
    a CSV/TSV with a `column` header, or a Parquet file (deeprec.data.tables.read_id_column)."""
    from deeprec.data.tables import read_id_column

    return read_id_column(path, column).to_numpy(dtype=object)


def auto_batch_size(n_items: int, device: torch.device, cfg: ScoreConfig) -> int:
    """Users per chunk so that chunk scores (batch x n_items x score_bytes) fill memory_fraction of free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fits = int(free * cfg.memory_fraction) // max(1, n_items * cfg.score_bytes)
    return int(min(max(fits, 1), cfg.max_batch_size))


@dataclass
class Targets:
    """The users to score, in output order: ids, checkpoint index (-1 unknown), and whether the
    model scores them (known and with seen items) or the fallback does."""

    ids: np.ndarray  # [P] object (str)
    index: np.ndarray  # [P] int64, -1 for ids the checkpoint does not know
    by_model: np.ndarray  # [P] bool

    def __len__(self) -> int:
        return len(self.ids)


def resolve_targets(cfg: ScoreConfig, user_ids: np.ndarray, seen: sp.csr_matrix) -> Targets:
    """All checkpoint users (or cfg.users), restricted to cfg.shard's contiguous block."""
    if cfg.users is None:
        ids = np.asarray(user_ids, dtype=object)
        index = np.arange(len(ids), dtype=np.int64)
    else:
        ids = read_id_list(cfg.users, "user_id")
        index = pd.Index(np.asarray(user_ids).astype(str)).get_indexer(ids.astype(str)).astype(np.int64)
    shard = parse_shard(cfg.shard)
    if shard is not None:
        bounds = np.linspace(0, len(ids), shard[1] + 1).astype(np.int64)
        block = slice(bounds[shard[0]], bounds[shard[0] + 1])
        ids, index = ids[block], index[block]
    history = np.zeros(len(ids), dtype=bool)
    known = index >= 0
    history[known] = np.diff(seen.indptr)[index[known]] > 0
    return Targets(ids=ids, index=index, by_model=history)


def resolve_items(cfg: ScoreConfig, item_ids: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(checkpoint item indices to rank among, or None for all; number of listed ids it does not know)."""
    if cfg.items is None:
        return None, 0
    listed = read_id_list(cfg.items, "item_id")
    index = pd.Index(np.asarray(item_ids).astype(str)).get_indexer(listed.astype(str))
    if (index < 0).all():
        raise DataError(f"items={cfg.items}: none of its ids is an item of checkpoint {cfg.ckpt} (e.g. {listed[:3].tolist()})")
    return index[index >= 0].astype(np.int64), int((index < 0).sum())


def popularity_topk(seen: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [k] float32, items [k] int64, -1 padded) of the items most users have; ties by lower index."""
    counts = np.asarray(seen.astype(bool).sum(axis=0)).ravel().astype(np.float32)
    order = np.argsort(-counts, kind="stable")[:k]
    items = np.full(k, -1, dtype=np.int64)
    values = np.full(k, -np.inf, dtype=np.float32)
    items[: len(order)], values[: len(order)] = order, counts[order]
    return values, items


def run_fingerprint(cfg: ScoreConfig, n_targets: int) -> dict[str, Any]:
    """What decides the result; a resumed run must match it exactly."""
    return {
        "ckpt_sha256": file_sha256(cfg.ckpt),
        "users_sha256": None if cfg.users is None else file_sha256(cfg.users),
        "items_sha256": None if cfg.items is None else file_sha256(cfg.items),
        "k": cfg.k,
        "shard": cfg.shard,
        "fallback": cfg.fallback,
        "part_rows": cfg.part_rows,
        "n_users": n_targets,
    }


def part_table(ids: np.ndarray, values: np.ndarray, items: np.ndarray, item_ids: np.ndarray,
               fallback: np.ndarray | None = None) -> pa.Table:
    """Rows (user_id, rank 1.., item_id, score, fallback) of top-k lists: values/items [P, k], fallback [P]
    (the popularity fallback's rows, whose score is a count of users, not the model's); -1 pads are dropped."""
    p, k = items.shape
    keep = (items >= 0).ravel()
    flat_items = items.ravel()[keep]
    return pa.table(
        {
            "user_id": pa.array(np.repeat(ids.astype(str), k)[keep].astype(object), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), p)[keep]),
            "item_id": pa.array(np.asarray(item_ids, dtype=object)[flat_items], pa.string()),
            "score": pa.array(values.ravel()[keep].astype(np.float32)),
            "fallback": pa.array(np.repeat(np.zeros(p, bool) if fallback is None else fallback, k)[keep]),
        },
        schema=SCHEMA,
    )


def score_users(cfg: ScoreConfig) -> dict[str, Any]:
    """Score cfg's users with cfg.ckpt's model and write cfg.output; returns the run summary.

    The output is claimed first (deeprec.outputs: a folder deeprec created, locked for this shard;
    or one .parquet file deeprec wrote), before the checkpoint is read."""
    from deeprec.outputs import claim_output

    check_config(cfg)
    inputs = [cfg.ckpt, cfg.users, cfg.items]
    if str(cfg.output).lower().endswith(".parquet"):
        sink = SingleFile(cfg.output, inputs)
        try:
            return _score_into(cfg, sink)
        except BaseException:
            sink.abort()
            raise
    lock = shard_tag(parse_shard(cfg.shard)) or "run"
    with claim_output(cfg.output, "deeprec-score", key="output", inputs=inputs, lock=lock) as out:
        return _score_into(cfg, out)


def _score_into(cfg: ScoreConfig, out) -> dict[str, Any]:
    """score_users' work; `out` is the SingleFile sink or the claimed OutputFolder."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    device = resolve_device(cfg.device, "device", allow_auto=False)
    model, meta = load_recommender(cfg.ckpt)
    user_ids, item_ids = id_arrays(meta)
    seen = seen_matrix(meta)
    targets = resolve_targets(cfg, user_ids, seen)
    columns, n_unknown_items = resolve_items(cfg, item_ids)
    ranked_ids = item_ids if columns is None else item_ids[columns]
    exclude = seen if columns is None else seen[:, columns].tocsr()
    fallback_values, fallback_items = popularity_topk(exclude, cfg.k)

    if len(ranked_ids) < cfg.k:
        log.warning("WARNING: k=%d is more than the %d items ranked; every list has at most %d items",
                    cfg.k, len(ranked_ids), len(ranked_ids))
    single = isinstance(out, SingleFile)
    if single:
        sink = out
        unknown_path = Path(str(cfg.output)[: -len(".parquet")] + "_unknown_users.txt")
    else:
        sink = PartFolder(out, run_fingerprint(cfg, len(targets)), parse_shard(cfg.shard), cfg.resume)
        unknown_path = sink.unknown_path
        if sink.complete:
            log.info("output=%s is already complete; nothing to do (resume=false to redo it)", cfg.output)
            return {**json.loads(sink.success_path.read_text()), "already_complete": True}
    unknown = targets.ids[targets.index < 0]
    atomic_write(unknown_path, lambda tmp: tmp.write_text("".join(f"{u}\n" for u in unknown)))

    model.to(device).eval()
    batch_size = cfg.batch_size or auto_batch_size(len(ranked_ids), device, cfg)
    users_per_part = max(1, cfg.part_rows // cfg.k)
    n_parts = -(-len(targets) // users_per_part)
    bar = tqdm(total=len(targets), disable=not cfg.progress, unit="user", desc="deeprec-score")
    cols = None if columns is None else torch.from_numpy(columns).to(device)

    def score_fn(users: torch.Tensor) -> torch.Tensor:
        bar.update(len(users))
        scores = model.score(users)
        return scores if cols is None else scores.index_select(1, cols)

    try:
        for number in range(n_parts):
            block = slice(number * users_per_part, (number + 1) * users_per_part)
            if number in sink.finished:
                bar.update(len(targets.ids[block]))
                continue
            ids, index, by_model = targets.ids[block], targets.index[block], targets.by_model[block]
            values = np.broadcast_to(fallback_values, (len(ids), cfg.k)).copy()
            items = np.broadcast_to(fallback_items, (len(ids), cfg.k)).copy()
            if by_model.any():
                model_values, model_items = full_ranking_topk(
                    score_fn, index[by_model], cfg.k, exclude=exclude, batch_size=batch_size, device=device
                )
                values[by_model], items[by_model] = model_values.numpy(), model_items.numpy()
            bar.update(int((~by_model).sum()))
            keep = by_model if cfg.fallback == "skip" else np.ones(len(ids), dtype=bool)
            sink.write_part(number, part_table(ids[keep], values[keep], items[keep], ranked_ids, ~by_model[keep]))
    finally:
        bar.close()

    seconds = time.perf_counter() - started
    summary = {
        "output": str(cfg.output),
        "config": asdict(cfg),
        "users": len(targets),
        "users_scored_by_model": int(targets.by_model.sum()),
        "users_fallback": int((~targets.by_model).sum()) if cfg.fallback == "popularity" else 0,
        "users_skipped": int((~targets.by_model).sum()) if cfg.fallback == "skip" else 0,
        "users_unknown": int(len(unknown)),
        "unknown_users_file": str(unknown_path),
        "items_ranked": int(len(ranked_ids)),
        "items_unknown": n_unknown_items,
        "rows": int(sum(sink.finished.values())),
        "parts": n_parts,
        "batch_size": int(batch_size),
        "device": str(device),
        "seconds": round(seconds, 3),
    }
    sink.finish(summary)
    log.info("%s", score_line(summary, cfg))
    return summary


def score_line(summary: dict[str, Any], cfg: ScoreConfig) -> str:
    """'deeprec-score: 3 users: 2 scored by the model, 1 by the popularity fallback (1 unknown id) -> OUT'."""
    others = summary["users"] - summary["users_scored_by_model"]
    unknown = summary["users_unknown"]
    tail = f" ({unknown} unknown id{'s' if unknown != 1 else ''})" if unknown else ""
    rest = f"{others} skipped (fallback=skip)" if cfg.fallback == "skip" else f"{others} by the popularity fallback"
    return (f"deeprec-score: {summary['users']} users: {summary['users_scored_by_model']} scored by the model, "
            f"{rest}{tail} -> {summary['rows']} rows in {summary['output']}")
