"""Where the named real datasets live: `data.path=`, else ../shared/data/<folder> found from the
current directory, from the repository (deeprec's parent's parent), or under $DEEPREC_SHARED_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import deeprec
from deeprec.errors import DataError


def candidate_dirs(folder: str) -> list[Path]:
    """The places searched for the dataset folder `folder`, in order."""
    places = []
    env = os.environ.get("DEEPREC_SHARED_DATA")
    if env:
        places.append(Path(env) / folder)
    repo = Path(deeprec.__file__).resolve().parent.parent
    places += [Path.cwd() / ".." / "shared" / "data" / folder, repo.parent / "shared" / "data" / folder]
    return list(dict.fromkeys(p.resolve() for p in places))


def dataset_path(path: str | None, folder: str, data_name: str) -> Path:
    """`path` when given (it must exist), else the first existing candidate of `folder`."""
    if path not in (None, "", "???"):
        given = Path(path).expanduser()
        if not given.exists():
            raise DataError(f"data={data_name}: data.path={path} does not exist")
        return given
    for place in candidate_dirs(folder):
        if place.exists():
            return place
    looked = ", ".join(str(p) for p in candidate_dirs(folder))
    raise DataError(
        f"data={data_name}: the dataset folder {folder!r} was not found (looked in {looked}); "
        f"set data.path=PATH or the environment variable DEEPREC_SHARED_DATA"
    )
