"""LightningRecommender: a LightningModule that is also a Recommender.

Subclasses define the network, `training_step`, `configure_optimizers`, `score(users)` and
`train_dataloader_for(data)`. This base wires fitting through a Lightning Trainer, puts the
deeprec checkpoint entry into every Lightning checkpoint, and reseeds at each epoch start so a
run resumed from an epoch checkpoint continues exactly as an uninterrupted one.

Row order that resumes exactly: a DataLoader with shuffle=True draws its permutation when its
iterator is created, and on resume Lightning creates that iterator before `on_train_epoch_start`
reseeds, so the first resumed epoch would see another order. Instead a subclass stores its training
rows in `self.training_rows` (a tuple of [N, ...] tensors) and returns `positions_loader(N, ...)`;
the loader yields positions 0..N-1 in order and `rows_of(positions)` maps them through a permutation
drawn after the reseed, so the order depends only on (seed, epoch). Under DDP, Lightning's
DistributedSampler splits the positions; every rank holds the same permutation, so ranks still see
disjoint rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from deeprec.config import check_choice
from deeprec.errors import ConfigError, DataError
from deeprec.recommender import ModelConfig, Recommender

LR_SCHEDULES = ("none", "plateau")
ZERO_RATINGS = ("weak", "negative")


@dataclass
class DeepModelConfig(ModelConfig):
    """What every deep model's config shares: the optimiser, its schedule and the rating weights.

    Rating weights (`rating_weights: true`): a training interaction's loss is weighted by
    rating / (mean rating of the positive train ratings), so the mean weight of the positives is 1.
    A rating of 0 (the step penalty's, a fracComp of 0) follows `zero_rating`: `weak` keeps it as a
    positive of weight `zero_weight`; `negative` makes it no positive at all (weight 0: it is no
    target, no input of the autoencoder, and NCF may draw it as a negative).
    """

    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 256
    lr_schedule: str = "none"  # none | plateau: lr x lr_decay after lr_patience epochs without a better valid metric
    lr_decay: float = 0.3
    lr_patience: int = 2
    rating_weights: bool = False  # weight each training interaction's loss by its rating (see zero_rating)
    zero_rating: str = "weak"  # weak (a positive of weight zero_weight) | negative (not a positive)
    zero_weight: float = 0.1
    num_workers: int = 0

    def check(self) -> "DeepModelConfig":
        check_choice(self.lr_schedule, LR_SCHEDULES, "model.lr_schedule")
        check_choice(self.zero_rating, ZERO_RATINGS, "model.zero_rating")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"model.lr={self.lr} must be positive and model.weight_decay={self.weight_decay} not negative")
        if not 0.0 < self.lr_decay < 1.0 or self.lr_patience < 0:
            raise ConfigError(f"model.lr_decay={self.lr_decay} must be within (0, 1) and model.lr_patience={self.lr_patience} >= 0")
        if not 0.0 <= self.zero_weight <= 1.0:
            raise ConfigError(f"model.zero_weight={self.zero_weight} must be within [0, 1]")
        if self.batch_size < 1:
            raise ConfigError(f"model.batch_size={self.batch_size} must be at least 1")
        return self


def rating_weights(ratings: np.ndarray, cfg: DeepModelConfig) -> np.ndarray:
    """Loss weights [N] float32 of training interactions with `ratings` [N] (DeepModelConfig's rule):
    all 1 without rating_weights; else rating / mean positive rating, a 0 rating zero_weight (weak)
    or 0 (negative). Ratings are never negative (the loaders reject them)."""
    ratings = np.asarray(ratings, np.float32)
    if not cfg.rating_weights:
        return np.ones(len(ratings), np.float32)
    positive = ratings > 0
    scale = float(ratings[positive].mean()) if positive.any() else 1.0
    zero = cfg.zero_weight if cfg.zero_rating == "weak" else 0.0
    return np.where(positive, ratings / scale, zero).astype(np.float32)


def positions_loader(n_rows: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A DataLoader of LongTensor[batch] positions 0..n_rows-1, in order (no shuffle).

    Its own generator: creating a DataLoader iterator draws a base seed, which must not come from
    the global RNG (on resume the iterator is created before the epoch's reseed).
    """
    return DataLoader(torch.arange(n_rows), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))


class LightningRecommender(pl.LightningModule, Recommender):
    """A Recommender fitted by a Lightning Trainer (`uses_trainer`); nn.Module supplies eval/train/to."""

    uses_trainer = True
    training_rows: tuple[torch.Tensor, ...] = ()
    _epoch_order: torch.Tensor | None = None

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config: Any) -> None:
        pl.LightningModule.__init__(self)
        self.configure(n_users, n_items, seed, config)
        self._ckpt_meta: dict | None = None

    # -- Recommender -------------------------------------------------------------------------
    def check_shape(self, data) -> None:
        """DataError when data's users x items differ from the ones the model was built for."""
        if (data.n_users, data.n_items) != (self.n_users, self.n_items):
            raise DataError(f"model built for {self.n_users} users x {self.n_items} items, data has {data.n_users} x {data.n_items}")

    def prepare(self, data) -> None:
        """Hook: keep what score() needs from the data (e.g. history buffers). Default: nothing."""

    def train_dataloader_for(self, data) -> DataLoader:
        raise NotImplementedError

    def fit(self, data, trainer: pl.Trainer | None = None, ckpt_path: str | None = None) -> "LightningRecommender":
        """Fit on an InteractionData or an InteractionDataModule through a Lightning Trainer."""
        from deeprec.checkpoint import checkpoint_meta
        from deeprec.data.datamodule import InteractionDataModule

        if trainer is None:
            trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        datamodule = data if isinstance(data, InteractionDataModule) else InteractionDataModule(data)
        self.prepare(datamodule.data)
        self._ckpt_meta = checkpoint_meta(self, datamodule.data)
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    def to(self, *args, **kwargs):  # nn.Module.to, not Recommender.to
        return pl.LightningModule.to(self, *args, **kwargs)

    # -- Lightning hooks ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._ckpt_meta is not None:
            checkpoint["deeprec"] = self._ckpt_meta

    def on_train_epoch_start(self) -> None:
        # Data order, negative samples and dropout depend only on (seed, epoch): resumable exactly.
        pl.seed_everything(self.seed * 100_003 + self.current_epoch, workers=True, verbose=False)
        if self.training_rows:
            self._epoch_order = torch.randperm(len(self.training_rows[0])).to(self.device)

    def rows_of(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The training rows at `positions` [B] of this epoch's order, on the module's device."""
        if self.training_rows[0].device != self.device:
            self.training_rows = tuple(t.to(self.device) for t in self.training_rows)
        order = self._epoch_order
        if order is None or len(order) != len(self.training_rows[0]):
            order = torch.arange(len(self.training_rows[0]), device=self.device)
        return tuple(t[order[positions.to(self.device)]] for t in self.training_rows)

    #: the metric a plateau schedule follows (set by deeprec-train to valid/<eval.monitor>; None: no valid split)
    monitor: str | None = None

    def configure_optimizers(self):
        """Adam (lr, weight_decay) and, with lr_schedule=plateau and a validation metric, lr x lr_decay
        after lr_patience epochs without improvement (its state is in every checkpoint: exact resume)."""
        cfg = self.config
        optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule != "plateau" or self.monitor is None:
            return optimizer
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_decay, patience=cfg.lr_patience)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": self.monitor, "interval": "epoch"}}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"training loss became {float(loss)} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate or set trainer.gradient_clip_val"
            )
