"""Popularity: every user gets the items most users interacted with in training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deeprec.recommender import ModelConfig, Recommender


@dataclass
class PopularityConfig(ModelConfig):
    name: str = "pop"


class Popularity(Recommender):
    """score(u, j) = number of training users of j (the same list for everyone)."""

    name = "pop"
    config_class = PopularityConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.counts = torch.zeros(self.n_items)

    def fit(self, data, trainer=None, ckpt_path=None) -> "Popularity":
        self.n_users, self.n_items = data.n_users, data.n_items
        self.counts = torch.from_numpy(data.item_popularity("train").astype(np.float32)).to(self.device)
        return self

    def add_users(self, count: int) -> bool:
        """Everyone gets the same list, so a new user needs no state of their own."""
        self.n_users += count
        return True

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(len(users), -1).clone()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.counts = state["counts"].to(self.device)
