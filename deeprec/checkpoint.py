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
from deeprec.errors import CheckpointError, DeeprecError
from deeprec.recommender import Recommender, csr_to_tensors, tensors_to_csr

FORMAT = 1
# init_args earlier deeprec versions wrote that this one no longer takes (fit_device: one run-level
# `device` key replaced it); Recommender.from_init_args drops them with a warning. Any other unknown
# name is refused: it was never deeprec's.
RETIRED_INIT_ARGS = ("fit_device",)


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


# an archive's entries may expand to at most this many times the file's size, plus EXPANSION_SLACK
# (torch.save stores its entries uncompressed, so a real checkpoint expands by about 1x)
MAX_EXPANSION = 4
EXPANSION_SLACK = 16 * 2**20
# the model a checkpoint's init_args build (on the meta device: no memory) may hold at most this many
# times the elements the file's tensors hold, plus ELEMENT_SLACK: a crafted size cannot allocate without limit
MAX_ELEMENT_RATIO = 2
ELEMENT_SLACK = 2**24


def check_archive(path: Path) -> None:
    """Refuse, unread, a file that is not a PyTorch archive or whose entries expand far beyond its size."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint (not a PyTorch archive: "
                              f"{_first_line(exc)})") from None
    if not any(e.filename == "data.pkl" or e.filename.endswith("/data.pkl") for e in entries):
        raise CheckpointError(f"checkpoint {path} is not a checkpoint (the archive holds no PyTorch data.pkl)")
    expanded = sum(e.file_size for e in entries)
    if expanded > MAX_EXPANSION * size + EXPANSION_SLACK:
        raise CheckpointError(f"checkpoint {path} expands to {expanded / 2**20:.1f} MB from {size / 2**20:.1f} MB on disk; "
                              "refused unread (a checkpoint deeprec writes is stored, not compressed)")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; a missing, truncated, oversized or unsafe file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    check_archive(path)
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
    for key in ("deeprec", "state_dict"):
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"checkpoint {path}: its '{key}' entry is a {type(ckpt[key]).__name__}, not a dict")
    return ckpt


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_meta(ckpt: dict[str, Any], path: Path) -> None:
    """Every key, type and size of a checkpoint's "deeprec" entry and state, against each other, in one line."""
    from deeprec.registry import MODELS, model_class

    meta, state = ckpt["deeprec"], ckpt["state_dict"]
    where = f"checkpoint {path}"
    model = meta.get("model")
    if model not in MODELS:
        raise CheckpointError(f"{where} holds model {model!r}, which deeprec does not know (models: {', '.join(sorted(MODELS))})")
    args = meta.get("init_args")
    if not isinstance(args, dict):
        raise CheckpointError(f"{where} has no init_args (a dict of the model's settings)")
    unknown = sorted(set(args) - model_class(model).init_arg_names() - set(RETIRED_INIT_ARGS))
    if unknown:
        raise CheckpointError(f"{where}: init_args {', '.join(map(repr, unknown))} are no setting of model {model!r}, "
                              "in this or an earlier deeprec")
    for kind in ("user", "item"):
        ids, n = meta.get(f"{kind}_ids"), args.get(f"n_{kind}s")
        if not _count(n):
            raise CheckpointError(f"{where}: init_args n_{kind}s={n!r} is not a count")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise CheckpointError(f"{where}: {kind}_ids is a {type(ids).__name__}, not a list of ids (text)")
        if len(ids) != n:
            raise CheckpointError(f"{where}: init_args n_{kind}s={n} but the checkpoint has {len(ids)} {kind} ids")
    n_users, n_items = args["n_users"], args["n_items"]
    for name in ("seen.indptr", "seen.indices", "seen.data", "seen.shape"):
        if not isinstance(meta.get(name), torch.Tensor):
            raise CheckpointError(f"{where}: {name} is missing or not a tensor")
    shape = meta["seen.shape"].tolist()
    if shape != [n_users, n_items] or meta["seen.indptr"].numel() != n_users + 1 or \
            meta["seen.indices"].numel() != meta["seen.data"].numel():
        raise CheckpointError(f"{where}: the seen matrix (shape {shape}) does not match n_users={n_users}, n_items={n_items}")
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: state_dict[{name!r}] is a {type(value).__name__}, not a tensor")


def _build(cls, args: dict[str, Any], path: Path, file_elements: int):
    """cls.from_init_args(args), first on the meta device (no memory) to bound what the real one will allocate."""
    try:
        with torch.device("meta"):
            probe = cls.from_init_args(args)
        needed = sum(t.numel() for t in probe.state_tensors().values())
    except (TypeError, ValueError, DeeprecError) as exc:
        raise CheckpointError(f"checkpoint {path}: its init_args do not build model {cls.name!r} ({_first_line(exc)})") from None
    if needed > MAX_ELEMENT_RATIO * file_elements + ELEMENT_SLACK:
        raise CheckpointError(f"checkpoint {path}: its init_args ask for tensors of other shapes than the file holds "
                              f"({needed:,} elements against {file_elements:,}); refused before allocating")
    return cls(**probe.init_args())  # the arguments from_init_args kept (its warning for retired ones once)


def load_recommender(path: str | Path, expect_model: str | None = None) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the recommender of a checkpoint: (recommender on CPU, the "deeprec" meta entry).

    The metadata is checked against the tensors the file holds before anything is allocated, and
    the loaded model scores one user to prove its tensors fit together; each problem is one line."""
    from deeprec.registry import model_class

    path = Path(path)
    ckpt = read_checkpoint(path)
    check_meta(ckpt, path)
    meta = ckpt["deeprec"]
    if expect_model is not None and meta["model"] != expect_model:
        raise CheckpointError(f"checkpoint {path} holds model {meta['model']!r}, not {expect_model!r}")
    cls = model_class(meta["model"])
    file_elements = sum(t.numel() for t in ckpt["state_dict"].values()) + sum(
        v.numel() for v in meta.values() if isinstance(v, torch.Tensor))
    recommender = _build(cls, meta["init_args"], path, file_elements)
    try:
        recommender.load_state_tensors(ckpt["state_dict"])
        if recommender.n_users:
            recommender.eval()
            with torch.no_grad():
                scores = recommender.score(torch.zeros(1, dtype=torch.int64))
            if tuple(scores.shape) != (1, meta["init_args"]["n_items"]):
                raise ValueError(f"one user's scores have shape {list(scores.shape)}, not [1, n_items={meta['init_args']['n_items']}]")
    except (KeyError, RuntimeError, ValueError, IndexError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {meta['model']!r}: {_first_line(exc)}") from None
    return recommender, meta


def seen_matrix(meta: dict[str, Any]) -> sp.csr_matrix:
    """The [n_users, n_items] CSR of items each user had in the training data of a checkpoint."""
    return tensors_to_csr(meta, "seen")


def id_arrays(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids, item_ids) as string arrays, position = index."""
    return np.asarray(meta["user_ids"], dtype=object), np.asarray(meta["item_ids"], dtype=object)
