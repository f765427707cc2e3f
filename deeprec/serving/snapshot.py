"""Snapshots of the serving state: state_dir/snapshots/snapshot-<seq>.pt, written atomically.

A snapshot is the state after the event `seq` of the log: the model's tensors, the ids of users met
online and the items seen online. It is a dict of tensors and plain values, so it loads with
torch.load(weights_only=True); the process never loads a pickle. Only the newest `keep` files named
like this are kept; nothing else in the folder is touched.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from deeprec.checkpoint import atomic_torch_save

log = logging.getLogger("deeprec.serve")

PATTERN = re.compile(r"^snapshot-(\d{12})\.pt$")


def snapshot_files(folder: Path) -> list[tuple[int, Path]]:
    """(seq, path) of the snapshots in folder, newest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(found, reverse=True)


def write_snapshot(folder: Path, seq: int, payload: dict[str, Any], keep: int) -> Path:
    """Save payload as the snapshot of `seq` (temporary file + rename), then drop all but the newest `keep`."""
    path = folder / f"snapshot-{seq:012d}.pt"
    atomic_torch_save(payload, path)
    for _, old in snapshot_files(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


def read_latest(folder: Path, model_version: str, last_logged: int) -> dict[str, Any] | None:
    """The newest readable snapshot of this model version (weights_only), or None.

    A snapshot that cannot be read, is of another checkpoint or is ahead of the log is skipped with
    a warning (the log then replays from the previous one, or from the checkpoint).
    """
    for seq, path in snapshot_files(folder):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: fall back to the previous snapshot
            log.warning("snapshot %s is unreadable (%s); trying an older one", path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        if not isinstance(payload, dict) or payload.get("model_version") != model_version:
            log.warning("snapshot %s is not of checkpoint %s; skipped", path, model_version)
            continue
        if seq > last_logged:
            log.warning("snapshot %s is ahead of the log (last seq %d); skipped", path, last_logged)
            continue
        return payload
    return None
