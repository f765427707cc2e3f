"""InteractionDataModule: the Lightning face of an InteractionData.

The data module owns the data (ids, splits, features); the model being fitted owns the shape of its
training rows, so `train_dataloader()` asks the trainer's LightningRecommender for them
(`train_dataloader_for(data)`). Validation is the shared full-ranking callback, not a val loader.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from deeprec.data.interactions import InteractionData
from deeprec.errors import ConfigError
from deeprec.recommender import Recommender


class InteractionDataModule(pl.LightningDataModule):
    """Wraps an InteractionData for `trainer.fit(model, datamodule=...)`."""

    def __init__(self, data) -> None:
        super().__init__()
        if not isinstance(data, InteractionData):
            raise ConfigError(f"InteractionDataModule needs an InteractionData, got {type(data).__name__}")
        self.data = data

    def train_dataloader(self) -> DataLoader:
        module = None if self.trainer is None else self.trainer.lightning_module
        if not (isinstance(module, Recommender) and module.uses_trainer):
            raise ConfigError("InteractionDataModule.train_dataloader() runs inside trainer.fit of a LightningRecommender")
        return module.train_dataloader_for(self.data)
