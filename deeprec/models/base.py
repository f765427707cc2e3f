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
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from deeprec.errors import DataError
from deeprec.recommender import Recommender


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

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"training loss became {float(loss)} at epoch {self.current_epoch}, step {self.global_step}; "
                "lower the learning rate or set trainer.gradient_clip_val"
            )
