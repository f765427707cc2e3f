"""Self-contained checkpoints that load with weights_only=True.

Layout (a dict of tensors and plain values only):
  "state_dict": the recommender's tensors
  "deeprec": {"model": name, "init_args": {...}, "user_ids": [...], "item_ids": [...],
              "format": 1, plus CSR tensors of each user's seen items under "seen.*"}
Lightning checkpoints carry the same "deeprec" entry (added in on_save_checkpoint), so one loader
serves every model.
"""

from __future__ import annotations

import errno
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.atomic import atomic_write
from deeprec.errors import CheckpointError
from deeprec.recommender import Recommender, csr_to_tensors, tensors_to_csr

FORMAT = 1


def checkpoint_meta(recommender: Recommender, data) -> dict[str, Any]:
    """The "deeprec" entry: what rebuilds the model and maps indices back to ids."""
    seen = data.matrix(("train", "valid", "test"), binary=True)
    return {
        "format": FORMAT,
        "model": recommender.name,
        "init_args": recommender.init_args(),
        "user_ids": [str(u) for u in data.user_ids],
        "item_ids": [str(i) for i in data.item_ids],
        "dataset": data.name,
        **csr_to_tensors(seen, "seen"),
    }


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(recommender: Recommender, data, path: str | Path, extra: dict | None = None) -> None:
    """Write a deeprec checkpoint for any (non-Lightning-trained) recommender."""
    state = {k: v.detach().cpu() for k, v in recommender.state_tensors().items()}
    atomic_torch_save({"state_dict": state, "deeprec": checkpoint_meta(recommender, data), **(extra or {})}, path)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when the message is empty (EOFError())."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a missing, truncated or unsafe file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains objects other than tensors and plain values "
            f"(loading it could run code). Detail: {_first_line(exc)}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, IndexError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint ({_first_line(exc)})") from None
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # torch's zip reader on a cut file; other OSErrors are the disk's
            raise
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict) or "deeprec" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a deeprec checkpoint (no 'deeprec' entry)")
    return ckpt


def load_recommender(path: str | Path, expect_model: str | None = None) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the recommender of a checkpoint: (recommender on CPU, the "deeprec" meta entry)."""
    from deeprec.registry import model_class

    ckpt = read_checkpoint(path)
    meta = ckpt["deeprec"]
    if expect_model is not None and meta["model"] != expect_model:
        raise CheckpointError(f"checkpoint {path} holds model {meta['model']!r}, not {expect_model!r}")
    recommender = model_class(meta["model"]).from_init_args(meta["init_args"])
    try:
        recommender.load_state_tensors(ckpt["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {meta['model']!r}: {_first_line(exc)}") from None
    return recommender, meta


def seen_matrix(meta: dict[str, Any]) -> sp.csr_matrix:
    """The [n_users, n_items] CSR of items each user had in the training data of a checkpoint."""
    return tensors_to_csr(meta, "seen")


def id_arrays(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids, item_ids) as string arrays, position = index."""
    return np.asarray(meta["user_ids"], dtype=object), np.asarray(meta["item_ids"], dtype=object)
