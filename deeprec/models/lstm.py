"""LSTM next-item model: an LSTM reads each learner's time-ordered history (item embeddings, optional
content features, time gaps) and predicts the next course or video with a softmax over the catalogue.

The model keeps every user's last `max_len` events as buffers (items, time gaps, lengths), so
score() and checkpoints are self-contained, `observe(data, splits)` conditions it on the events of
given splits (the evaluator calls it: train when validating, train + valid when testing) and
`update_state(users, items, timestamps)` appends new events without retraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeprec.config import check_at_least, check_choice
from deeprec.errors import ConfigError, DataError
from deeprec.models.base import DeepModelConfig, LightningRecommender, positions_loader, rating_weights
from deeprec.models.sequence import SAMPLERS, HistoryBuffers, ItemContent, ordered_events, sample_items, training_windows

LOSSES = ("full", "sampled")
TIME_FEATURES = ("none", "log", "bucket")


@dataclass
class LSTMConfig(DeepModelConfig):
    name: str = "lstm"
    embedding_dim: int = 64
    hidden_dim: int = 64
    num_layers: int = 1
    dropout: float = 0.5
    max_len: int = 50  # events of history the LSTM reads (training windows and scoring)
    window_stride: int = 0  # training windows step back by this many events (0: max_len, disjoint windows)
    use_features: bool = True  # add a projection of data.item_features when the data has them
    time_features: str = "bucket"  # none | log (continuous log gap) | bucket (embedded log2 bucket)
    time_unit_seconds: float = 60.0  # gap g -> log2(1 + g / unit)
    n_time_buckets: int = 16
    tie_weights: bool = True  # output item vectors = input item vectors (+ features)
    loss: str = "full"  # full softmax | sampled softmax (large catalogues)
    n_negatives: int = 256  # shared sampled-softmax negatives per batch
    negative_sampler: str = "log_uniform"  # log_uniform over popularity rank | uniform
    lr: float = 0.001
    batch_size: int = 128

    def check(self) -> "LSTMConfig":
        super().check()
        check_choice(self.loss, LOSSES, "model.loss")
        check_choice(self.negative_sampler, SAMPLERS, "model.negative_sampler")
        check_choice(self.time_features, TIME_FEATURES, "model.time_features")
        check_at_least(self, ("embedding_dim", "hidden_dim", "num_layers", "max_len", "batch_size", "n_time_buckets"))
        check_at_least(self, ("window_stride",), minimum=0)
        if self.window_stride > self.max_len:
            raise ConfigError(f"model.window_stride={self.window_stride} must not exceed model.max_len={self.max_len}")
        return self


class LSTMRecommender(HistoryBuffers, ItemContent, LightningRecommender):
    """score(users [B]) -> [B, I] next-item logits after each user's stored history."""

    name = "lstm"
    config_class = LSTMConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, n_features: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        cfg = self.config
        d = cfg.embedding_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.register_content(n_items, n_features, d)
        if cfg.time_features == "bucket":
            self.time_embedding = nn.Embedding(cfg.n_time_buckets, d)
        elif cfg.time_features == "log":
            self.time_embedding = nn.Linear(1, d)
        else:
            self.time_embedding = None
        self.lstm = nn.LSTM(d, cfg.hidden_dim, cfg.num_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.to_item_space = nn.Linear(cfg.hidden_dim, d)
        self.output_embedding = None if cfg.tie_weights else nn.Embedding(n_items, d)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.register_history(n_users, cfg.max_len, pad_item=n_items)

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        """Keep the content features, the negative-sampling ranking and the train histories."""
        self.check_shape(data)
        self.prepare_content(data, self.config.use_features, self.config.negative_sampler == "log_uniform")
        self.rebuild_history(data, "train")

    def train_dataloader_for(self, data) -> DataLoader:
        events = ordered_events(data, "train")
        stride = self.config.window_stride or self.config.max_len
        inputs, input_gaps, targets, weights = training_windows(
            events.items, events.gaps, events.starts, self.config.max_len, stride, rating_weights(events.ratings, self.config)
        )
        if not (weights > 0).any():
            raise DataError(f"{data.name}: no user has two train events, so there is no next item to learn")
        inputs = np.where(inputs < 0, self.n_items, inputs)
        self.training_rows = (
            torch.from_numpy(inputs), torch.from_numpy(input_gaps), torch.from_numpy(targets), torch.from_numpy(weights)
        )
        return positions_loader(len(inputs), self.config.batch_size, self.config.num_workers)

    # -- network ----------------------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """Input item vectors [I + 1, d] (last row: padding): id embedding + projected features."""
        vectors = self.item_embedding.weight
        content = self.content_vectors()
        return vectors if content is None else vectors + content

    def output_vectors(self) -> torch.Tensor:
        """Output item vectors [I, d] the hidden state is matched against."""
        if self.output_embedding is not None:
            return self.output_embedding.weight
        return self.item_vectors()[:-1]

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[I, d] the output item vectors the hidden state is matched against (LinUCB arm features)."""
        return self.output_vectors().detach().clone()

    def encode(self, items: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """LSTM outputs [B, L, d] in item space for right-padded histories items [B, L], gaps [B, L]."""
        x = F.embedding(items, self.item_vectors())
        if self.time_embedding is not None:
            log_gap = torch.log2(1.0 + gaps / self.config.time_unit_seconds).unsqueeze(-1)
            if self.config.time_features == "bucket":
                bucket = log_gap.squeeze(-1).floor().long().clamp(0, self.config.n_time_buckets - 1)
                x = x + self.time_embedding(bucket)
            else:
                x = x + self.time_embedding(log_gap)
        out, _ = self.lstm(self.dropout(x))
        return self.to_item_space(self.dropout(out))

    def forward(self, items: torch.Tensor, gaps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-item logits [B, I] after right-padded histories items [B, L] of `lengths` [B]."""
        width = max(int(lengths.max()), 1)
        out = self.encode(items[:, :width], gaps[:, :width])
        last = out.gather(1, (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[2])).squeeze(1)
        last = torch.where((lengths > 0).unsqueeze(1), last, torch.zeros_like(last))
        return last @ self.output_vectors().T + self.output_bias

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        users = users.to(self.history_items.device)
        return self(self.history_items[users], self.history_gaps[users], self.history_lengths[users])

    # -- training ---------------------------------------------------------------------------
    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy [N] of targets [N] given item-space states hidden [N, d]: full or sampled softmax."""
        vectors = self.output_vectors()
        if self.config.loss == "full":
            return F.cross_entropy(hidden @ vectors.T + self.output_bias, targets, reduction="none")
        negatives = sample_items(self.config.negative_sampler, self.items_by_rank, (self.config.n_negatives,))
        log_k = math.log(self.config.n_negatives)
        if self.config.negative_sampler == "uniform":
            q_pos = q_neg = None
        else:
            q_pos, q_neg = self.log_q[targets], self.log_q[negatives]
        pos = (hidden * vectors[targets]).sum(1) + self.output_bias[targets]
        neg = hidden @ vectors[negatives].T + self.output_bias[negatives]
        if q_pos is not None:  # logQ correction: the sampled softmax estimates the full one
            pos = pos - q_pos - log_k
            neg = neg - q_neg - log_k
        neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -torch.inf)
        logits = torch.cat([pos.unsqueeze(1), neg], 1)
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.int64, device=logits.device), reduction="none")

    def training_step(self, batch, batch_idx):
        """Every position of each window is a target (padding and weight-0 targets are not), its
        cross-entropy weighted by the target's rating weight."""
        inputs, gaps, targets, weights = self.rows_of(batch)
        width = max(int((inputs != self.n_items).sum(1).max()), 1)
        inputs, gaps, targets, weights = inputs[:, :width], gaps[:, :width], targets[:, :width], weights[:, :width]
        in_loss = weights > 0
        hidden = self.encode(inputs, gaps)[in_loss]
        loss = (self.next_item_loss(hidden, targets[in_loss]) * weights[in_loss]).mean()
        self.log("train/loss", loss, prog_bar=False, on_step=False, on_epoch=True, batch_size=int(in_loss.sum()))
        return loss
