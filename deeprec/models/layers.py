"""Training-row shuffling that stays exact when a run resumes from a checkpoint.

A DataLoader with shuffle=True draws its permutation when its iterator is created; on resume
Lightning creates that iterator before `on_train_epoch_start` reseeds, so the first resumed epoch
would see another order. Here the loader yields positions 0..N-1 in order and the model maps them
through a permutation drawn in `on_train_epoch_start` (after the reseed): the order depends only on
(seed, epoch). Under DDP, Lightning's DistributedSampler splits the positions, every rank holds the
same permutation, so ranks still see disjoint rows.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def positions_loader(n_rows: int, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A DataLoader of LongTensor[batch] positions 0..n_rows-1, in order (no shuffle).

    Its own generator: creating a DataLoader iterator draws a base seed, which must not come from
    the global RNG (on resume the iterator is created before the epoch's reseed).
    """
    return DataLoader(torch.arange(n_rows), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))


class EpochShuffledRows:
    """Mixin for LightningRecommenders: `self.training_rows` (a tuple of [N, ...] tensors) are read in
    a fresh random order each epoch via `rows_of(positions)`; subclasses set them in train_dataloader_for()."""

    training_rows: tuple[torch.Tensor, ...] = ()
    _epoch_order: torch.Tensor | None = None

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # reseeds torch from (seed, epoch)
        n_rows = len(self.training_rows[0])
        self._epoch_order = torch.randperm(n_rows).to(self.device)

    def rows_of(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The training rows at `positions` [B] of this epoch's order, on the module's device."""
        if self.training_rows[0].device != self.device:
            self.training_rows = tuple(t.to(self.device) for t in self.training_rows)
        order = self._epoch_order if self._epoch_order is not None else torch.arange(len(self.training_rows[0]), device=self.device)
        index = order[positions.to(self.device)]
        return tuple(t[index] for t in self.training_rows)
