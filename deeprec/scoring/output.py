"""Where scored top-k lists go: a folder of Parquet parts with a manifest (resumable), or one file.

Every file appears atomically: it is written under a hidden name (leading dot, ignored by Parquet
readers) and renamed when complete, so a killed run never leaves a partial part visible.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deeprec.atomic import (
    atomic_write,
    default_file_mode,
    make_temp,
    remove_deeprec_file,
    stale_temporaries,
    write_json_atomic,
)
from deeprec.errors import ConfigError

# fallback: the row is the popularity fallback's (score = the number of users who had the item), not the model's
SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32()),
                    ("fallback", pa.bool_())], metadata={b"written_by": b"deeprec-score"})


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

    def __init__(self, out, params: dict[str, Any], shard: tuple[int, int] | None, resume: bool) -> None:
        """`out`: the claimed deeprec.outputs.OutputFolder (its lock is this shard's)."""
        self.out = out
        self.folder = out.path
        self.params = params
        self.tag = shard_tag(shard)
        self.manifest_path = self.folder / (f"_manifest-{self.tag}.json" if self.tag else "_manifest.json")
        self.success_path = self.folder / (f"_SUCCESS-{self.tag}" if self.tag else "_SUCCESS")
        self.unknown_path = self.folder / (f"_unknown_users-{self.tag}.txt" if self.tag else "_unknown_users.txt")
        self.finished: dict[int, int] = {}  # part number -> rows
        self._open(resume)

    @property
    def prefix(self) -> str:
        return f"{self.tag}-part-" if self.tag else "part-"

    def part_path(self, number: int) -> Path:
        return self.folder / f"{self.prefix}{number:05d}.parquet"

    def _own_files(self) -> list[str]:
        """This shard's files that deeprec wrote: its parts, manifest, marker and unknown-users list."""
        names = (self.manifest_path.name, self.success_path.name, self.unknown_path.name)
        return [n for n in self.out.owned_files() if n in names or (n.startswith(self.prefix) and n.endswith(".parquet"))]

    def _open(self, resume: bool) -> None:
        """Resume the finished parts of a run with the same parameters, or start clean."""
        # temporary files a killed run left: of a part, of the manifest, of _SUCCESS or of the unknown ids
        self.out.remove_temporaries([f"{self.prefix}*", self.manifest_path.name, self.success_path.name,
                                     self.unknown_path.name])
        self.out.own([self.manifest_path.name, self.success_path.name, self.unknown_path.name])
        if self.manifest_path.exists() and resume:
            try:
                manifest = json.loads(self.manifest_path.read_text())
                manifest["params"], manifest["parts"]  # noqa: B018 - the keys a resume reads
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"output={self.folder}: {self.manifest_path.name} is not valid JSON of a scoring run "
                                  f"({str(exc).splitlines()[0]}); resume=false starts over") from None
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
        self.out.remove_owned(names=self._own_files())  # only deeprec's: another tool's parts stay
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
        self.out.own([self.part_path(number).name])
        atomic_write(self.part_path(number), lambda tmp: pq.write_table(table, tmp))
        self.finished[number] = table.num_rows
        self._save_manifest(done=False)

    def finish(self, summary: dict[str, Any]) -> None:
        self._save_manifest(done=True)
        write_json_atomic(summary, self.success_path)


def shard_tag(shard: tuple[int, int] | None) -> str:
    return "" if shard is None else f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


def written_by_deeprec(path: Path) -> bool:
    """Whether a Parquet file carries deeprec-score's metadata (SCHEMA's written_by)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        return False
    return metadata.get(b"written_by") == b"deeprec-score"


class SingleFile:
    """One Parquet file, streamed part by part into a hidden temporary file and renamed at the end.

    An existing file is replaced only when deeprec-score wrote it (its Parquet metadata says so);
    a lock file beside it (`.NAME.deeprec-lock`, removed at the end) keeps a second run out.
    """

    def __init__(self, path: str | Path, inputs=()) -> None:
        from deeprec.outputs import check_apart_from_inputs

        self.path = Path(path)
        given = str(path)
        if self.path.is_dir():
            raise ConfigError(f"output={given} is a folder; a path ending in .parquet names one file")
        if self.path.exists() and not written_by_deeprec(self.path):
            raise ConfigError(f"output={given} is a file deeprec did not write; give another path")
        check_apart_from_inputs(Path(os.path.realpath(self.path)), given, "output", inputs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.parent / f".{self.path.name}.deeprec-lock"
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise ConfigError(f"output={given} is in use by another deeprec run; wait for it to end, or give another path") from None
        for stale in stale_temporaries(self.path.parent, self.path.name):  # left by a killed deeprec run
            remove_deeprec_file(stale)
        self.finished: dict[int, int] = {}
        self.complete = False
        self.tmp = make_temp(self.path.parent, self.path.name)
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
        self._unlock()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        remove_deeprec_file(self.tmp)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None
