"""SASRec (Kang & McAuley 2018) with a full-softmax cross-entropy on every position: a causal
self-attention encoder over each learner's time-ordered history predicts the next course or video.

Cross-entropy over the whole catalogue, not sampled BCE, is what lifts SASRec to the top of recent
reproducibility studies (Klenitskiy & Vasilev 2023, "Turning dross into gold loss"). Item vectors
are tied between input and output and can add the items' content features. Histories are the
shared HistoryBuffers (observe / update_state), training windows the shared training_windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeprec.config import check_at_least
from deeprec.errors import ConfigError, DataError
from deeprec.models.base import DeepModelConfig, LightningRecommender, positions_loader, rating_weights
from deeprec.models.sequence import HistoryBuffers, ItemContent, ordered_events, training_windows


@dataclass
class SASRecConfig(DeepModelConfig):
    name: str = "sasrec"
    embedding_dim: int = 64
    num_blocks: int = 2  # self-attention blocks
    num_heads: int = 2
    dropout: float = 0.2
    max_len: int = 50  # events of history read (training windows and scoring)
    window_stride: int = 0  # training windows step back by this many events (0: max_len)
    use_features: bool = True  # add a projection of data.item_features when the data has them
    lr: float = 0.001
    batch_size: int = 128

    def check(self) -> "SASRecConfig":
        super().check()
        check_at_least(self, ("embedding_dim", "num_blocks", "num_heads", "max_len"))
        check_at_least(self, ("window_stride",), minimum=0)
        if self.embedding_dim % self.num_heads:
            raise ConfigError(f"model.embedding_dim={self.embedding_dim} must be a multiple of model.num_heads={self.num_heads}")
        if self.window_stride > self.max_len:
            raise ConfigError(f"model.window_stride={self.window_stride} must not exceed model.max_len={self.max_len}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be within [0, 1)")
        return self


class SASRec(HistoryBuffers, ItemContent, LightningRecommender):
    """score(users [B]) -> [B, I] next-item logits after each user's stored history."""

    name = "sasrec"
    config_class = SASRecConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, n_features: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        cfg = self.config
        d = cfg.embedding_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        nn.init.normal_(self.item_embedding.weight, std=d**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[n_items].zero_()
        self.position_embedding = nn.Embedding(cfg.max_len, d)
        self.register_content(n_items, n_features, d)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, dim_feedforward=d, dropout=cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.register_history(n_users, cfg.max_len, pad_item=n_items)

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        self.check_shape(data)
        self.prepare_content(data, self.config.use_features, log_uniform=False)
        self.rebuild_history(data, "train")

    def train_dataloader_for(self, data) -> DataLoader:
        events = ordered_events(data, "train")
        stride = self.config.window_stride or self.config.max_len
        inputs, _, targets, weights = training_windows(events.items, events.gaps, events.starts, self.config.max_len, stride,
                                                       rating_weights(events.ratings, self.config))
        if not (weights > 0).any():
            raise DataError(f"{data.name}: no user has two train events, so there is no next item to learn")
        self.training_rows = (torch.from_numpy(np.where(inputs < 0, self.n_items, inputs)), torch.from_numpy(targets),
                              torch.from_numpy(weights))
        return positions_loader(len(inputs), self.config.batch_size, self.config.num_workers)

    # -- network ----------------------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """Item vectors [I + 1, d] (last row: padding): id embedding + projected features."""
        content = self.content_vectors()
        return self.item_embedding.weight if content is None else self.item_embedding.weight + content

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[I, d] the (tied) item vectors the encoder's states are matched against."""
        return self.item_vectors()[:-1].detach().clone()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """States [B, L, d] of right-padded histories items [B, L]: position t sees events 0..t only."""
        length = items.shape[1]
        valid = items != self.n_items
        x = F.embedding(items, self.item_vectors()) * self.config.embedding_dim**0.5
        x = self.dropout(x + self.position_embedding.weight[:length]) * valid.unsqueeze(-1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=items.device), 1)
        return self.final_norm(self.encoder(x, mask=causal, is_causal=True))

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Next-item logits [..., I] of states [..., d]."""
        return states @ self.item_vectors()[:-1].T + self.output_bias

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        users = users.to(self.history_items.device)
        lengths = self.history_lengths[users]
        width = max(int(lengths.max()) if len(users) else 1, 1)
        states = self.encode(self.history_items[users, :width])
        last = states.gather(1, (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[2])).squeeze(1)
        last = torch.where((lengths > 0).unsqueeze(1), last, torch.zeros_like(last))
        return self.logits(last)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        """Full-softmax cross-entropy at every position, weighted by the target's rating weight."""
        inputs, targets, weights = self.rows_of(batch)
        width = max(int((inputs != self.n_items).sum(1).max()), 1)
        inputs, targets, weights = inputs[:, :width], targets[:, :width], weights[:, :width]
        in_loss = weights > 0
        states = self.encode(inputs)[in_loss]
        loss = (F.cross_entropy(self.logits(states), targets[in_loss], reduction="none") * weights[in_loss]).mean()
        self.log("train/loss", loss, prog_bar=False, on_step=False, on_epoch=True, batch_size=int(in_loss.sum()))
        return loss
