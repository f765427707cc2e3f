"""InteractionDataModule: the Lightning face of an InteractionData.

The data module owns the data (ids, splits, features); the model being fitted owns the shape of its
training rows, so `train_dataloader()` asks the trainer's LightningRecommender for them
(`train_dataloader_for(data)`). Validation is the shared full-ranking callback, not a val loader.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from deeprec.errors import ConfigError


class InteractionDataModule(pl.LightningDataModule):
    """Wraps an InteractionData for `trainer.fit(model, datamodule=...)`."""

    def __init__(self, data) -> None:
        super().__init__()
        if data is None or not hasattr(data, "frame"):
            raise ConfigError(f"InteractionDataModule needs an InteractionData, got {type(data).__name__}")
        self.data = data

    def train_dataloader(self) -> DataLoader:
        if self.trainer is None or not hasattr(self.trainer.lightning_module, "train_dataloader_for"):
            raise ConfigError("InteractionDataModule.train_dataloader() runs inside trainer.fit of a LightningRecommender")
        return self.trainer.lightning_module.train_dataloader_for(self.data)
