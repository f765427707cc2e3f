"""What a user sees while deeprec works: a progress bar on a terminal for the long loops (fitting
baselines and LinUCB, scoring), one line per training epoch (deeprec.evaluation.callbacks.EpochLine),
and none of Lightning's chatter (its GPU / TPU lines, tips and advertisements, and warnings about
settings deeprec chose, not the user). No Lightning import here: the bandit and baselines use it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Iterable, TypeVar

T = TypeVar("T")

# Lightning's messages that describe deeprec's own choices, not the user's: deeprec logs per epoch
# (not per step), reads its in-memory rows without workers, checkpoints into a folder it owns
LIGHTNING_WARNINGS = (
    r".*smaller than the logging interval.*",  # log_every_n_steps: deeprec logs per epoch
    r".*does not have many workers.*",  # num_workers: rows are in memory
    r"Checkpoint directory .* exists and is not empty.*",  # run_dir is deeprec's; it replaces its own files
    r".*isinstance\(treespec, LeafSpec\).*",  # a deprecation inside Lightning itself
    r".*`training_step` returned `None`.*",
)
LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                          "lightning_fabric.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                          "pytorch_lightning.accelerators.cuda", "lightning.pytorch.accelerators.cuda")
# Lightning's info lines that tell a deeprec user nothing: hardware it did not use, advertisements,
# the end of a fit that deeprec reports itself (DDP's start-up lines and restores stay)
LIGHTNING_CHATTER = ("GPU available", "TPU available", "HPU available", "IPU available", "\U0001f4a1 Tip", "LOCAL_RANK:",
                     "`Trainer.fit` stopped")


class _DropChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(LIGHTNING_CHATTER)


def quiet_lightning() -> None:
    """Drop Lightning's chatter lines (GPU/TPU available, tips) and ignore the warnings listed above;
    its warnings about the user's own settings, DDP's start-up lines and every error still come through."""
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropChatter) for f in logger.filters):
            logger.addFilter(_DropChatter())
    for message in LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    """A tqdm bar on stderr when it is a terminal (nothing in logs and pipes), cleared when done."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False, file=sys.stderr)
