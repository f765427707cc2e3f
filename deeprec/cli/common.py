"""Shared pieces of the console scripts: clean error reporting, data and model construction."""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from deeprec.config import validate_section
from deeprec.errors import ConfigError, DeeprecError

CONFIG_PATH = "pkg://deeprec.conf"


# OSErrors that are the environment's or the user's, not deeprec's: no space, no permission, a
# read-only file system, a file where a folder is needed (ENOTDIR, EEXIST) or the reverse, a disk quota.
USER_OS_ERRORS = (
    errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.EDQUOT,
)


def report_user_errors(prog: str) -> Callable:
    """Decorator: a DeeprecError, an unwritable/full disk or a non-finite training loss ends the
    program with one line on stderr and exit code 2 (a SIGTERM during training: 143, after
    deeprec.checkpointing wrote last.ckpt); tracebacks are kept for bugs."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (DeeprecError, FloatingPointError) as exc:  # FloatingPointError: a NaN/inf loss, naming the step
                print(f"{prog}: error: {exc}", file=sys.stderr)
                sys.exit(exc.exit_code if isinstance(exc, DeeprecError) else 2)  # 143: TrainingInterrupted (SIGTERM)
            except OSError as exc:
                if exc.errno in USER_OS_ERRORS:
                    where = f" {exc.filename}" if exc.filename else ""
                    hint = " (a file stands where a folder is needed)" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else ""
                    print(f"{prog}: error: cannot write{where}: {exc.strerror or os.strerror(exc.errno)}{hint}", file=sys.stderr)
                    sys.exit(2)
                raise

        return inner

    return wrap


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_epochs: int = 200
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 50
    deterministic: bool = True
    enable_progress_bar: bool = False
    limit_train_batches: float | None = None


def data_config(section: DictConfig):
    """Validate cfg.data against the schema of the adapter it names."""
    import importlib

    from deeprec.registry import DATASETS

    name = section.get("name")
    if name not in DATASETS:
        raise ConfigError(f"unknown data {name!r}; valid data names: {', '.join(sorted(DATASETS))}")
    module = importlib.import_module(DATASETS[name].split(":")[0])
    return validate_section(section, module.CONFIG, f"data={name}")


def data_inputs(section: DictConfig) -> list:
    """The files a cfg.data section names (its log or table, the ratings catalogue): what an output
    may not hold or lie inside (deeprec.outputs)."""
    ratings = section.get("ratings") or {}
    return [section.get("path"), ratings.get("catalogue")]


def load_data(section):
    """The InteractionData named by cfg.data: a config section (validated here) or the dataclass
    data_config already returned (not validated twice)."""
    from deeprec.registry import dataset_loader

    cfg = section if dataclasses.is_dataclass(section) else data_config(section)
    return dataset_loader(cfg.name)(cfg)


def model_kwargs(section: DictConfig) -> tuple[type, dict[str, Any]]:
    """(Recommender class, its checked hyper-parameters without `name`) for cfg.model: a bad key,
    type or value fails here, before any data is read."""
    from deeprec.registry import model_class

    name = section.get("name")
    cls = model_class(name)
    hp = dataclasses.asdict(validate_section(section, cls.config_class, f"model={name}").check())
    hp.pop("name", None)
    return cls, hp


def build_model(section: DictConfig, data, seed: int = 0):
    """An unfitted recommender for `data` from cfg.model, seeded with the run's seed."""
    cls, hp = model_kwargs(section)
    return cls(n_users=data.n_users, n_items=data.n_items, seed=seed, **hp)


def run_device(cfg: DictConfig) -> str:
    """The run's `device`: where models without a Lightning Trainer fit and where every model is
    evaluated. null follows the trainer: cuda when trainer.accelerator asks for a GPU and one exists."""
    from deeprec.config import resolve_device

    if cfg.get("device") is not None:
        return str(resolve_device(cfg.device, "device"))
    import torch

    wants_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
