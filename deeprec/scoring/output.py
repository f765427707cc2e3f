"""Where scored top-k lists go: a folder of Parquet parts with a manifest (resumable), or one file.

Every file appears atomically: it is written under a hidden name (leading dot, ignored by Parquet
readers) and renamed when complete, so a killed run never leaves a partial part visible.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deeprec.atomic import atomic_write, default_file_mode, write_json_atomic
from deeprec.errors import ConfigError

SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32())])


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (identifies the checkpoint or user list a run scored)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PartFolder:
    """A folder of part-NNNNN.parquet files plus _manifest.json and, at the end, _SUCCESS.

    With a shard "i/n" the names carry it (shard-0000i-of-0000n-part-NNNNN.parquet, and the same
    suffix on the manifest and marker), so all shards can share one folder and reading the folder
    as a Parquet dataset gives their union.
    """

    def __init__(self, folder: str | Path, params: dict[str, Any], shard: tuple[int, int] | None, resume: bool) -> None:
        self.folder = Path(folder)
        self.params = params
        self.tag = "" if shard is None else f"shard-{shard[0]:05d}-of-{shard[1]:05d}"
        self.manifest_path = self.folder / (f"_manifest-{self.tag}.json" if self.tag else "_manifest.json")
        self.success_path = self.folder / (f"_SUCCESS-{self.tag}" if self.tag else "_SUCCESS")
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"output={folder} is a file; give a folder, or a path ending in .parquet for one file")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.finished: dict[int, int] = {}  # part number -> rows
        self._open(resume)

    @property
    def prefix(self) -> str:
        return f"{self.tag}-part-" if self.tag else "part-"

    def part_path(self, number: int) -> Path:
        return self.folder / f"{self.prefix}{number:05d}.parquet"

    def _open(self, resume: bool) -> None:
        """Resume the finished parts of a run with the same parameters, or start clean."""
        # temporary files a killed run left: of a part, of the manifest or of _SUCCESS
        for pattern in (f".{self.prefix}*.tmp", f".{self.manifest_path.name}.*.tmp", f".{self.success_path.name}.*.tmp"):
            for stale in self.folder.glob(pattern):
                stale.unlink(missing_ok=True)
        if self.manifest_path.exists() and resume:
            manifest = json.loads(self.manifest_path.read_text())
            changed = {
                key: (manifest["params"].get(key), value)
                for key, value in self.params.items()
                if manifest["params"].get(key) != value
            }
            if changed:
                detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
                raise ConfigError(
                    f"output={self.folder} holds an unfinished or finished run with other parameters ({detail}); "
                    "use another output folder, or resume=false to discard it"
                )
            self.finished = {
                int(number): rows for number, rows in manifest["parts"].items() if self.part_path(int(number)).exists()
            }
            return
        self.success_path.unlink(missing_ok=True)
        for old in self.folder.glob(f"{self.prefix}*.parquet"):
            old.unlink()
        self.manifest_path.unlink(missing_ok=True)
        self._save_manifest(done=False)

    @property
    def complete(self) -> bool:
        return self.success_path.exists() and self.manifest_path.exists()

    def _save_manifest(self, done: bool) -> None:
        write_json_atomic(
            {"params": self.params, "parts": {str(n): r for n, r in sorted(self.finished.items())}, "done": done},
            self.manifest_path,
        )

    def write_part(self, number: int, table: pa.Table) -> None:
        """Write one part atomically, then record it in the manifest."""
        atomic_write(self.part_path(number), lambda tmp: pq.write_table(table, tmp))
        self.finished[number] = table.num_rows
        self._save_manifest(done=False)

    def finish(self, summary: dict[str, Any]) -> None:
        self._save_manifest(done=True)
        write_json_atomic(summary, self.success_path)


class SingleFile:
    """One Parquet file, streamed part by part into a hidden temporary file and renamed at the end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        self.finished: dict[int, int] = {}
        self.complete = False
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = None  # opened with the first part's schema (explain=true adds columns)

    def write_part(self, number: int, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        self.writer.write_table(table)
        self.finished[number] = table.num_rows

    def finish(self, summary: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, SCHEMA)
        self.writer.close()
        os.chmod(self.tmp, default_file_mode())
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)
