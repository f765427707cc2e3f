"""Lightning callbacks: the shared full-ranking evaluation on the valid split after every epoch, and
the one line per epoch a user sees (EpochLine).

It logs `valid/<metric>@<k>` for every metric of evaluation.metrics (e.g. valid/ndcg@10) so checkpoints
and EarlyStopping can monitor the same numbers the offline comparison reports; it calls the same code
(evaluate_recommender). It also logs `step` = the epoch, so Lightning writes every epoch-level scalar
(valid/*, train/loss) at the epoch on TensorBoard's x-axis, not at the optimiser step. A split without
users is not evaluated.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import pytorch_lightning as pl
import torch

from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.evaluation.metrics import METRICS

log = logging.getLogger("deeprec.train")


class FullRankingEvaluation(pl.Callback):
    """Evaluate `pl_module` (a Recommender) on data's valid split at each train epoch end."""

    def __init__(self, data, ks: Sequence[int] = (5, 10, 20), batch_size: int = 1024, split: str = "valid") -> None:
        self.data = data
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self.split = split
        #: False when no user has an item in `split`: nothing to evaluate, nothing to monitor
        self.active = bool(data.truth(split).nnz)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("step", float(trainer.current_epoch), logger=True, on_step=False, on_epoch=True)
        if not self.active:
            return
        was_training = pl_module.training
        pl_module.eval()
        metrics = evaluate_recommender(pl_module, self.data, self.split, self.ks, self.batch_size)
        pl_module.train(was_training)
        logged = {
            f"{self.split}/{key}": value
            for key, value in metrics.items()
            if key.split("@")[0] in METRICS
        }
        pl_module.log_dict(logged, prog_bar=False, logger=True, sync_dist=False)


class EpochLine(pl.Callback):
    """One log line per finished epoch: 'epoch 3/20: train/loss 0.4123, valid/ndcg@10 0.2311 (best 0.2400), 1.2 s'.

    Lightning gathers an epoch's logged values after the epoch-end hooks, so the line of an epoch
    is written when the next one starts, and the last one when training ends.
    """

    def __init__(self, monitor: str | None) -> None:
        self.monitor = monitor
        self.best: float | None = None
        self._epoch: int | None = None  # the epoch started in this process whose line is due
        self._started = 0.0

    def _line(self, trainer: pl.Trainer) -> None:
        if self._epoch is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not isinstance(v, torch.Tensor) or v.numel() == 1}
        parts = [f"train/loss {metrics['train/loss']:.4f}"] if "train/loss" in metrics else []
        if self.monitor and self.monitor in metrics:
            value = metrics[self.monitor]
            self.best = value if self.best is None else max(self.best, value)
            parts.append(f"{self.monitor} {value:.4f} (best {self.best:.4f})")
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts.append(f"{time.perf_counter() - self._started:.1f} s")
        log.info("epoch %d%s: %s", self._epoch + 1, total, ", ".join(parts))
        self._epoch = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._line(trainer)
            self._epoch, self._started = trainer.current_epoch, time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._line(trainer)
