"""Which output folders are deeprec's, and one run at a time in each.

The rule, the same for deeprec-ratings output=, deeprec-train run_dir=, deeprec-compare out_dir=
and deeprec-score output=:
- a folder is deeprec's only when deeprec created it: it then holds `.deeprec/manifest.json`, which
  names the command that owns it and every file deeprec wrote there (by name, or by a name pattern
  only deeprec uses, such as its TensorBoard event files, which carry the host and process id);
- deeprec writes into a new or empty folder, or into one of its own of the same command; a folder
  holding anything else, an existing file, the current folder, the file-system root, and a folder
  that holds an input or lies inside one are refused with one line, before any work;
- deeprec removes and replaces only the files its manifest lists (and the hidden temporaries of
  those, `.NAME.*.tmp`); what a user or another tool put there stays, byte for byte;
- a run holds an exclusive lock (`.deeprec/<name>.lock`, fcntl.flock) on its output for its whole
  life, so a second run on the same output stops at once, naming the first one;
- a run may save a fingerprint (of its data and configuration) in the manifest, which resume=true
  compares.

    with claim_output("runs/x", "deeprec-train", key="run_dir", inputs=[data_path]) as out:
        out.own(["metrics.json"]); ...write...; out.finish()
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from deeprec.atomic import MARKER, make_temp, remove_deeprec_file, stale_temporaries, write_json_atomic
from deeprec.errors import ConfigError

MANIFEST = "manifest.json"
FORMAT = 1


def _resolved(path: str | Path) -> Path:
    """The absolute path with symbolic links resolved (an input reached through a link is still that input)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def event_file_pattern(folder: str) -> str:
    """The name pattern of the TensorBoard event files this process writes into `folder` (tensorboard's
    EventFileWriter names them events.out.tfevents.<time>.<host>.<pid>.<n>)."""
    return f"{folder}/events.out.tfevents.*.{socket.gethostname()}.{os.getpid()}.*"


class OutputFolder:
    """An output folder claimed by one run: its manifest, its lock, and the files deeprec may replace."""

    def __init__(self, path: Path, given: str, command: str, key: str, lock: str) -> None:
        self.path, self.given, self.command, self.key, self.lock_name = path, given, command, key, lock
        self.marker = path / MARKER
        self.created = False
        self._lock_fd: int | None = None

    # -- the manifest ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.marker / MANIFEST

    def read_manifest(self) -> dict[str, Any]:
        return read_manifest(self.path, self.given, self.key)

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """Read, change and write the manifest under its own short lock (shards share one folder)."""
        fd = os.open(self.marker / "manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            manifest = self.read_manifest()
            yield manifest
            write_json_atomic(manifest, self.manifest_path)
        finally:
            os.close(fd)

    def own(self, names: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        """Record files (or name patterns) as deeprec's before writing them, so a crash never leaves a
        file of deeprec's that it could not later replace. A name held by a file deeprec did not write
        is refused."""
        names, patterns = [str(n) for n in names], [str(p) for p in patterns]
        with self._editing() as manifest:
            for name in names:
                if (self.path / name).exists() and not owned(manifest, name):
                    raise ConfigError(f"{self.key}={self.given}: {name} exists and deeprec did not write it; "
                                      "move it away or give another folder")
            manifest["files"] = sorted(set(manifest["files"]) | set(names))
            manifest["patterns"] = sorted(set(manifest["patterns"]) | set(patterns))

    def owned_files(self) -> list[str]:
        """The existing files deeprec wrote (names relative to the folder)."""
        manifest = self.read_manifest()
        found = []
        for file in self.path.rglob("*"):
            name = file.relative_to(self.path).as_posix()
            if not name.startswith(MARKER + "/") and file.is_file() and owned(manifest, name):
                found.append(name)
        return sorted(found)

    def remove_owned(self, names: Iterable[str] | None = None) -> list[str]:
        """Delete what deeprec wrote (all of it, or those of `names` it wrote) and forget them;
        folders deeprec created that become empty go too. Returns the names removed."""
        if names is None:
            gone = self.owned_files()
        else:
            manifest = self.read_manifest()
            gone = [n for n in names if (self.path / n).is_file() and owned(manifest, n)]
        with self._editing() as manifest:
            gone = [n for n in gone if owned(manifest, n)]  # the manifest, re-read under its lock, proves each
            for name in gone:
                (self.path / name).unlink(missing_ok=True)
            manifest["files"] = sorted(set(manifest["files"]) - set(gone))
            if names is None:
                manifest["patterns"] = []
            for folder in sorted(manifest.get("folders", []), key=lambda f: -f.count("/")):
                with contextlib.suppress(OSError):
                    (self.path / folder).rmdir()  # only when empty
            manifest["folders"] = [f for f in manifest.get("folders", []) if (self.path / f).is_dir()]
        return gone

    def remove_temporaries(self, name_globs: Iterable[str]) -> None:
        """Hidden temporary files a killed run left beside deeprec's outputs (atomic.make_temp's
        `.NAME.deeprec-*.tmp`: the tag proves deeprec made them)."""
        for name_glob in name_globs:
            folder, _, leaf = name_glob.rpartition("/")
            for stale in stale_temporaries(self.path / folder, leaf):
                remove_deeprec_file(stale)

    def make_folders(self, *names: str) -> None:
        """Create sub-folders, recording the ones deeprec created (removed again when emptied)."""
        created = []
        for name in names:
            folder = self.path / name
            if not folder.exists():
                folder.mkdir(parents=True)
                created.append(name)
        if created:
            with self._editing() as manifest:
                manifest["folders"] = sorted(set(manifest.get("folders", [])) | set(created))

    def prepare(self, names: Iterable[str], patterns: Iterable[str] = (), folders: Iterable[str] = (),
                fresh: bool = True) -> list[str]:
        """Ready the folder for a run that writes `names` / `patterns`: a fresh run first removes every
        file the earlier run wrote (fresh=False keeps them, e.g. resume=true); then the temporaries a
        killed run left go, the names and patterns are recorded and `folders` created. Returns the
        names removed."""
        names = list(names)
        gone = self.remove_owned() if fresh else []
        self.remove_temporaries(names)
        self.own(names, patterns)
        self.make_folders(*folders)
        return gone

    def forget_missing(self) -> None:
        """Drop listed names whose file does not exist (never written, e.g. no valid split this time)."""
        with self._editing() as manifest:
            manifest["files"] = [n for n in manifest["files"] if (self.path / n).exists()]

    def fingerprint(self, name: str) -> dict[str, Any] | None:
        return self.read_manifest().get("fingerprints", {}).get(name)

    def check_fingerprint(self, name: str, value: dict[str, Any], where: str, fix: str) -> None:
        """A run that continues this folder's run (e.g. resume=true) must have the same fingerprint:
        a "data" digest that differs is other data; any other key that differs is named."""
        saved = self.fingerprint(name)
        if saved is None:
            return
        if saved.get("data") != value.get("data"):
            raise ConfigError(f"{where}: {self.key}={self.given} was made from other data; "
                              f"give another {self.key}, or {fix}")
        differ = sorted(k for k in set(saved) | set(value) if k != "data" and saved.get(k) != value.get(k))
        if differ:
            detail = ", ".join(f"{k}: {saved.get(k)!r} then, {value.get(k)!r} now" for k in differ)
            raise ConfigError(f"{where}: {self.key}={self.given} was made with other settings ({detail}); "
                              f"give another {self.key}, or {fix}")

    def set_fingerprint(self, name: str, value: dict[str, Any]) -> None:
        with self._editing() as manifest:
            manifest.setdefault("fingerprints", {})[name] = value

    # -- claiming and releasing ----------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock = self.marker / f"{self.lock_name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            who = ", ".join(f"{k} {holder[k]}" for k in ("command", "pid", "host", "since") if k in holder)
            raise ConfigError(f"{self.key}={self.given} is in use by another deeprec run ({who or 'unknown'}); "
                              "wait for it to end, or give another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"command": self.command, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._lock_fd = fd

    def _others_running(self) -> bool:
        """Whether another run holds a lock of this folder (e.g. another shard of deeprec-score)."""
        mine = self.marker / f"{self.lock_name}.lock"
        for lock in self.marker.glob("*.lock"):
            if lock == mine or lock.name == "manifest.lock":
                continue
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            finally:
                os.close(fd)
        return False

    def release(self, failed: bool = False) -> None:
        """Unlock; a folder this run created, locked and left without any other file goes away again."""
        if self._lock_fd is None:
            return
        if failed and self.created and self.path.is_dir() and not foreign_entries(self.path) and not self._others_running():
            remove_created_folder(self.path, self.lock_name)
        os.close(self._lock_fd)
        self._lock_fd = None


def data_fingerprint(data) -> str:
    """SHA-256 of what a model learns from (an InteractionData): the ids, and every row's user, item,
    rating, time and split."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for ids in (data.user_ids, data.item_ids):
        digest.update("\x1f".join(map(str, ids)).encode("utf-8", "surrogatepass") + b"\x1e")
    frame = data.frame
    for column in ("user", "item", "rating", "timestamp"):
        digest.update(np.ascontiguousarray(frame[column].to_numpy()).tobytes())
    digest.update("".join(frame["split"].astype(str).str[0]).encode())
    return digest.hexdigest()


def owned(manifest: dict[str, Any], name: str) -> bool:
    """Whether the manifest lists the file `name` (relative to the folder), by name or by pattern."""
    return name in manifest["files"] or any(fnmatch.fnmatchcase(name, p) for p in manifest["patterns"])


def read_manifest(path: Path, given: str | None = None, key: str = "output") -> dict[str, Any]:
    """The manifest of a deeprec folder; a ConfigError naming it when it is not deeprec's JSON."""
    file = path / MARKER / MANIFEST
    try:
        manifest = json.loads(file.read_text())
        if not isinstance(manifest, dict) or manifest.get("owner") != "deeprec":
            raise ValueError("no owner")
    except (OSError, ValueError):
        raise ConfigError(f"{key}={given or path}: {file} is not a deeprec manifest; move the folder away "
                          "or give another one") from None
    manifest.setdefault("files", [])
    manifest.setdefault("patterns", [])
    return manifest


def remove_created_folder(folder: Path, lock: str) -> None:
    """Undo a claim that created `folder` and left nothing in it: the marker's files by name (the
    manifest, its temporaries, the two lock files), then the marker and the folder, each rmdir only
    when empty (never a recursive delete)."""
    marker = folder / MARKER
    for name in (MANIFEST, "manifest.lock", f"{lock}.lock"):
        remove_deeprec_file(marker / name)
    for stale in stale_temporaries(marker, MANIFEST):
        remove_deeprec_file(stale)
    with contextlib.suppress(OSError):
        marker.rmdir()
        folder.rmdir()


def foreign_entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name != MARKER)


def check_apart_from_inputs(output: Path, given: str, key: str, inputs: Iterable[str | Path | None]) -> None:
    """An output may not be an input, hold one, or lie inside one."""
    for source in inputs:
        if source in (None, "", "???"):
            continue
        source = _resolved(source)
        if _inside(source, output):
            raise ConfigError(f"{key}={given} holds the input {source}; give an output outside the inputs")
        if _inside(output, source):
            raise ConfigError(f"{key}={given} lies inside the input {source}; give an output outside the inputs")


def check_output(path: str | Path, command: str, key: str, inputs: Iterable[str | Path | None] = ()) -> Path:
    """The refusals of the rule (module docstring), checked before anything is created or read."""
    given = str(path)
    folder = _resolved(path)
    if folder == Path(folder.anchor):
        raise ConfigError(f"{key}={given} is the root of the file system; give a folder of its own")
    if folder == _resolved(Path.cwd()):
        raise ConfigError(f"{key}={given} is the current folder; give a new sub-folder, e.g. {key}=out")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={given} is a file; give a folder (deeprec never writes over a file it did not write)")
    check_apart_from_inputs(folder, given, key, inputs)
    if folder.is_dir() and foreign_entries(folder):
        if not (folder / MARKER / MANIFEST).is_file():
            example = foreign_entries(folder)[0]
            raise ConfigError(f"{key}={given} holds files deeprec did not create (e.g. {example}); "
                              "give a new or empty folder (deeprec writes only into folders it created; "
                              "one an older deeprec wrote has no .deeprec/ marker: move it away)")
        owner = read_manifest(folder, given, key).get("command")
        if owner != command:
            raise ConfigError(f"{key}={given} was written by {owner}, not {command}; give another folder")
    return folder


@contextlib.contextmanager
def claim_output(path: str | Path, command: str, key: str = "output", inputs: Iterable[str | Path | None] = (),
                 lock: str = "run") -> Iterator[OutputFolder]:
    """Check the rule, create the folder (and its marker) if needed, and hold its lock for the block."""
    inputs = list(inputs)
    folder = check_output(path, command, key, inputs)
    out = OutputFolder(folder, str(path), command, key, lock)
    out.created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        out.marker.mkdir(exist_ok=True)
        remove_deeprec_file(make_temp(out.marker, "write-probe"))
    except OSError as exc:
        if out.created and folder.is_dir() and not foreign_entries(folder):
            remove_created_folder(folder, out.lock_name)
        raise ConfigError(f"{key}={path} is not writable ({exc.strerror or exc})") from None
    try:
        out._take_lock()
        fd = os.open(out.marker / "manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not out.manifest_path.exists():
                if foreign_entries(folder):  # something appeared since the check
                    raise ConfigError(f"{key}={path} holds files deeprec did not create; give a new or empty folder")
                write_json_atomic({"owner": "deeprec", "format": FORMAT, "command": command, "files": [],
                                   "patterns": [], "folders": [], "created": time.strftime("%Y-%m-%d %H:%M:%S")},
                                  out.manifest_path)
        finally:
            os.close(fd)
    except BaseException:
        out.release(failed=True)
        raise
    try:
        yield out
    except BaseException:
        out.release(failed=True)
        raise
    out.release()
