"""Atomic file writes: every output deeprec writes goes to a hidden temporary file beside its target
and is renamed into place, so a reader never sees a half-written file and a failure leaves none."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


@functools.lru_cache(maxsize=1)
def default_file_mode() -> int:
    """The mode a plain open() would give a new file (0o666 less the umask); mkstemp gives 0o600.
    Read once per process: os.umask can only be read by setting it, which races with other threads."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: in every temporary's name: what lets a later run prove a left-over `.NAME.deeprec-*.tmp` is deeprec's
TEMP_TAG = "deeprec-"
#: the folder in every output folder deeprec created that holds its manifest and locks
MARKER = ".deeprec"


def is_tagged(name: str) -> bool:
    """Whether a file or folder name is one make_temp / make_temp_folder gives (`.NAME.deeprec-XXXX.tmp`)."""
    return name.startswith(".") and f".{TEMP_TAG}" in name and name.endswith(".tmp")


def proven_deeprec(path: Path) -> bool:
    """Whether a path's name proves deeprec made it: a tagged temporary or scratch folder, anything
    inside one (deeprec made the folder under a fresh random name), or a file of a .deeprec marker."""
    return is_tagged(path.name) or any(is_tagged(p.name) for p in path.parents) or path.parent.name == MARKER


def _refuse_unproven(path: Path) -> None:
    if not proven_deeprec(path):
        raise RuntimeError(f"deeprec refuses to delete {path}: nothing proves deeprec wrote it")


def remove_deeprec_file(path: str | Path) -> None:
    """Unlink a file whose place proves deeprec made it (proven_deeprec); anything else raises instead."""
    path = Path(path)
    _refuse_unproven(path)
    path.unlink(missing_ok=True)


def remove_deeprec_folder(path: str | Path) -> None:
    """Delete a scratch folder deeprec made (make_temp_folder), or one inside it, with its contents;
    a folder whose name does not prove it is deeprec's raises instead. Missing: nothing to do."""
    import shutil

    path = Path(path)
    _refuse_unproven(path)
    shutil.rmtree(path, ignore_errors=True)


def make_temp(parent: str | Path, name: str) -> Path:
    """A new empty hidden temporary `.NAME.deeprec-XXXX.tmp` in `parent`, to be renamed to NAME."""
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{name}.{TEMP_TAG}", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def make_temp_folder(parent: str | Path, name: str) -> Path:
    """A new hidden scratch folder `.NAME.deeprec-XXXX.tmp` in `parent` (tagged like make_temp's files)."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{TEMP_TAG}", suffix=".tmp"))


def stale_temporaries(parent: str | Path, name_glob: str) -> list[Path]:
    """The temporaries make_temp made for names matching `name_glob` in `parent` (a killed run's);
    a user's file without the tag never matches."""
    return sorted(Path(parent).glob(f".{name_glob}.{TEMP_TAG}*.tmp"))


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a hidden temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(path.parent, path.name)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        remove_deeprec_file(tmp)
        raise
    return path


def write_bytes_atomic(path: str | Path, writer: Callable[[Any], Any]) -> Path:
    """Call writer(binary file handle), e.g. a matplotlib savefig, and rename the result into place."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            writer(fh)

    return atomic_write(path, write)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(obj: Any, path: str | Path, **dumps_kwargs: Any) -> Path:
    options = {"indent": 2, "sort_keys": True, **dumps_kwargs}
    return write_text_atomic(path, json.dumps(obj, **options))


def write_parquet_atomic(frame, path: str | Path) -> Path:
    """A pandas frame to Parquet (no index)."""
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def link_atomic(source: str | Path, target: str | Path) -> Path:
    """`target` becomes a hard link to `source`: one file on disk under two names (renamed into place;
    a copy where the file system has no hard links)."""
    import shutil

    target = Path(target)
    tmp = make_temp(target.parent, target.name)
    remove_deeprec_file(tmp)  # the temporary this call just made: os.link needs the name free
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target
