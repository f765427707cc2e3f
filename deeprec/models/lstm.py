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

from deeprec.errors import ConfigError, DataError
from deeprec.models.base import LightningRecommender, positions_loader
from deeprec.online import one_event_per_user

LOSSES = ("full", "sampled")
SAMPLERS = ("log_uniform", "uniform")
TIME_FEATURES = ("none", "log", "bucket")


@dataclass
class LSTMConfig:
    name: str = "lstm"
    embedding_dim: int = 64
    hidden_dim: int = 64
    num_layers: int = 1
    dropout: float = 0.1
    max_len: int = 50  # events of history the LSTM reads (training windows and scoring)
    window_stride: int = 25  # training windows overlap by max_len - window_stride events of context
    use_features: bool = True  # add a projection of data.item_features when the data has them
    time_features: str = "bucket"  # none | log (continuous log gap) | bucket (embedded log2 bucket)
    time_unit_seconds: float = 60.0  # gap g -> log2(1 + g / unit)
    n_time_buckets: int = 16
    tie_weights: bool = True  # output item vectors = input item vectors (+ features)
    loss: str = "full"  # full softmax | sampled softmax (large catalogues)
    n_negatives: int = 256  # shared sampled-softmax negatives per batch
    negative_sampler: str = "log_uniform"  # log_uniform over popularity rank | uniform
    lr: float = 0.003
    weight_decay: float = 0.0
    batch_size: int = 128
    num_workers: int = 0


def check_choice(value: str, valid: tuple[str, ...], key: str) -> None:
    """ConfigError naming the key when `value` is not one of `valid`."""
    if value not in valid:
        raise ConfigError(f"model.{key}={value!r} is not valid; choose one of {', '.join(valid)}")


# -- event histories (shared with the attention ranker) ------------------------------------------
def ordered_events(data, splits) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(items [N], gaps [N] seconds, times [N], starts [U+1], users [N]) sorted by user then time.

    The order is that of InteractionData.sequences (input order breaks ties); a user's first event
    and events without timestamps get a gap of 0.
    """
    rows = data.rows(splits).sort_values(["user", "timestamp"], kind="stable")
    users = rows["user"].to_numpy(np.int64)
    items = rows["item"].to_numpy(np.int64)
    times = rows["timestamp"].to_numpy(np.float64)
    gaps = np.zeros(len(rows), np.float64)
    if len(rows) > 1:
        same_user = users[1:] == users[:-1]
        gaps[1:] = np.where(same_user, times[1:] - times[:-1], 0.0)
    gaps = np.nan_to_num(np.clip(gaps, 0.0, None), nan=0.0).astype(np.float32)
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    return items, gaps, times, starts, users


def last_events(values: np.ndarray, starts: np.ndarray, max_len: int, pad) -> tuple[np.ndarray, np.ndarray]:
    """(matrix [U, max_len], lengths [U]): each user's last max_len values, right-padded with `pad`."""
    lengths = np.minimum(np.diff(starts), max_len)
    first = starts[1:] - lengths
    cols = np.arange(max_len)
    idx = first[:, None] + cols[None, :]
    valid = cols[None, :] < lengths[:, None]
    safe = np.clip(idx, 0, max(len(values) - 1, 0))
    taken = values[safe] if len(values) else np.zeros(idx.shape, values.dtype)
    return np.where(valid, taken, pad), lengths


def popularity_ranking(data, splits="train") -> tuple[np.ndarray, np.ndarray]:
    """(items by descending train popularity [I], log-uniform log-probability of each item [I])."""
    popularity = data.item_popularity(splits)
    by_rank = np.argsort(-popularity, kind="stable")
    rank = np.empty_like(by_rank)
    rank[by_rank] = np.arange(len(by_rank))
    n = len(by_rank)
    log_q = np.log(np.log((rank + 2.0) / (rank + 1.0)) / math.log(n + 1.0))
    return by_rank, log_q.astype(np.float32)


def standardised_features(data, use_features: bool) -> torch.Tensor | None:
    """data.item_features as z-scores [I, F] float32 (constant columns become 0), or None."""
    frame = getattr(data, "item_features", None)
    if not use_features or frame is None or frame.shape[1] == 0:
        return None
    values = frame.to_numpy(np.float32)
    if not np.isfinite(values).all():
        bad = frame.columns[~np.isfinite(values).all(axis=0)][0]
        raise DataError(f"item feature column {bad!r} holds NaN or infinite values; fill or drop it")
    std = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return torch.from_numpy(values.astype(np.float32))


class HistoryBuffers:
    """Mixin for nn.Modules: each user's last max_len events as buffers, rebuilt or appended to."""

    def register_history(self, n_users: int, max_len: int, pad_item: int) -> None:
        self.pad_item = pad_item
        self.register_buffer("history_items", torch.full((n_users, max_len), pad_item, dtype=torch.int64))
        self.register_buffer("history_gaps", torch.zeros(n_users, max_len))
        self.register_buffer("history_lengths", torch.zeros(n_users, dtype=torch.int64))
        self.register_buffer("last_time", torch.full((n_users,), float("nan"), dtype=torch.float64))
        self._observed_splits: tuple[str, ...] | None = None

    def prepare_content(self, data) -> torch.Tensor | None:
        """Check data's shape; keep its standardised item features (a new projection when their width
        changes) and, for log-uniform negatives, the popularity ranking. Returns the features or None."""
        if (data.n_users, data.n_items) != (self.n_users, self.n_items):
            raise DataError(f"model built for {self.n_users} users x {self.n_items} items, data has {data.n_users} x {data.n_items}")
        features = standardised_features(data, self.cfg.use_features)
        n_features = 0 if features is None else features.shape[1]
        if n_features != self.n_features:
            self.n_features = n_features
            self.feature_projection = nn.Linear(n_features, self.cfg.embedding_dim) if n_features else None
            self.item_features = torch.zeros(self.n_items, n_features)
        if features is not None:
            self.item_features.copy_(features)
        if self.cfg.negative_sampler == "log_uniform":
            by_rank, log_q = popularity_ranking(data)
            self.items_by_rank.copy_(torch.from_numpy(by_rank))
            self.log_q.copy_(torch.from_numpy(log_q))
        return features

    def observe(self, data, splits) -> None:
        """Condition scores on the events of `splits` of data (the evaluator's known history)."""
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        if splits == self._observed_splits:
            return
        items, gaps, times, starts, _ = ordered_events(data, splits)
        max_len = self.history_items.shape[1]
        item_matrix, lengths = last_events(items, starts, max_len, self.pad_item)
        gap_matrix, _ = last_events(gaps, starts, max_len, 0.0)
        last = np.full(data.n_users, np.nan)
        has = np.diff(starts) > 0
        last[has] = times[starts[1:][has] - 1]
        device = self.history_items.device
        self.history_items.copy_(torch.from_numpy(item_matrix).to(device))
        self.history_gaps.copy_(torch.from_numpy(gap_matrix.astype(np.float32)).to(device))
        self.history_lengths.copy_(torch.from_numpy(lengths.astype(np.int64)).to(device))
        self.last_time.copy_(torch.from_numpy(last).to(device))
        self._observed_splits = splits

    def add_users(self, count: int) -> bool:
        """New users with empty histories: the model reads whatever they do next."""
        device = self.history_items.device
        self.history_items = torch.cat([self.history_items, torch.full((count, self.history_items.shape[1]), self.pad_item,
                                                                         dtype=torch.int64, device=device)])
        self.history_gaps = torch.cat([self.history_gaps, self.history_gaps.new_zeros(count, self.history_gaps.shape[1])])
        self.history_lengths = torch.cat([self.history_lengths, self.history_lengths.new_zeros(count)])
        self.last_time = torch.cat([self.last_time, self.last_time.new_full((count,), float("nan"))])
        self.n_users += count
        return True

    def learn_online(self, users, items, rewards, timestamps) -> None:
        """Events with a positive reward join the users' histories, in the order given (update_state,
        one event per user per step, so the result does not depend on how events are batched)."""
        keep = rewards > 0
        users, items, timestamps = users[keep], items[keep], timestamps[keep]
        for positions in one_event_per_user(users.cpu().numpy()):
            index = torch.from_numpy(positions)
            self.update_state(users[index], items[index], timestamps[index])

    @torch.no_grad()
    def update_state(self, users, items, timestamps=None) -> None:
        """Append events (users [E], items [E], timestamps [E] epoch seconds) to the stored histories.

        Events of one user are appended in timestamp order (input order breaks ties); the oldest
        events fall out when a history exceeds max_len. The next score() reflects them.
        """
        device = self.history_items.device

        def as_tensor(values, dtype):
            values = values if torch.is_tensor(values) else torch.from_numpy(np.array(values))
            return values.to(device=device, dtype=dtype).reshape(-1)

        users = as_tensor(users, torch.int64)
        items = as_tensor(items, torch.int64)
        if timestamps is None:
            times = torch.full(users.shape, float("nan"), dtype=torch.float64, device=device)
        else:
            times = as_tensor(timestamps, torch.float64)
        if not (len(users) == len(items) == len(times)):
            raise DataError(f"update_state needs as many users, items and timestamps; got {len(users)}, {len(items)}, {len(times)}")
        if len(users) == 0:
            return
        n_users, max_len = self.history_items.shape
        if users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= self.pad_item:
            raise DataError(f"update_state: user indices must be in [0, {n_users}) and item indices in [0, {self.pad_item})")
        # Sort by (user, time) with input order breaking ties; NaN times keep input order after the rest.
        order = torch.argsort(torch.nan_to_num(times, nan=float("inf")), stable=True)
        order = order[torch.argsort(users[order], stable=True)]
        users, items, times = users[order], items[order], times[order]
        touched, counts = torch.unique_consecutive(users, return_counts=True)
        event_start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(users), device=device) - torch.repeat_interleave(event_start, counts)
        row = torch.repeat_interleave(torch.arange(len(touched), device=device), counts)
        # Gaps: to the previous new event of the same user, or to the user's stored last event.
        previous = torch.cat([times.new_full((1,), float("nan")), times[:-1]])
        previous = torch.where(rank == 0, self.last_time[users], previous)
        gaps = torch.nan_to_num((times - previous).clamp(min=0), nan=0.0).float()
        # Combined [T, max_len + max_new] histories, then keep each row's last max_len events.
        old_len = self.history_lengths[touched]
        width = max_len + int(counts.max())
        combined_items = torch.full((len(touched), width), self.pad_item, dtype=torch.int64, device=device)
        combined_gaps = torch.zeros(len(touched), width, device=device)
        combined_items[:, :max_len] = self.history_items[touched]
        combined_gaps[:, :max_len] = self.history_gaps[touched]
        combined_items[row, old_len[row] + rank] = items
        combined_gaps[row, old_len[row] + rank] = gaps
        new_len = old_len + counts
        keep = torch.clamp(new_len, max=max_len)
        cols = (new_len - keep)[:, None] + torch.arange(max_len, device=device)[None, :]
        valid = torch.arange(max_len, device=device)[None, :] < keep[:, None]
        cols = cols.clamp(max=width - 1)
        self.history_items[touched] = torch.where(valid, combined_items.gather(1, cols), self.pad_item)
        self.history_gaps[touched] = torch.where(valid, combined_gaps.gather(1, cols), 0.0)
        self.history_lengths[touched] = keep
        latest = torch.nan_to_num(times, nan=-float("inf"))
        last_new = torch.full((len(touched),), -float("inf"), dtype=torch.float64, device=device)
        last_new = last_new.scatter_reduce(0, row, latest, reduce="amax")
        stored = torch.nan_to_num(self.last_time[touched], nan=-float("inf"))
        merged = torch.maximum(stored, last_new)
        self.last_time[touched] = torch.where(torch.isinf(merged), torch.nan, merged)
        self._observed_splits = None


def training_windows(items, gaps, starts, max_len: int, stride: int):
    """Every next-item target of every sequence, as overlapping right-padded windows.

    Returns (inputs [W, L] item, input gaps [W, L], targets [W, L], loss mask [W, L] bool). Window
    ends step back from each sequence's end by `stride`; a window's loss covers only its last
    `stride` targets, so each target counts exactly once with at least max_len - stride events
    of context (or its whole history).
    """
    n = np.diff(starts)
    n_windows = np.where(n >= 2, -(-(n - 1) // stride), 0)
    owner = np.repeat(np.arange(len(n)), n_windows)
    k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    end = n[owner] - 1 - k * stride  # local position of the window's last target
    begin = np.maximum(end - max_len, 0)  # local position of its first input
    cols = np.arange(max_len)[None, :]
    local_input = begin[:, None] + cols
    valid = local_input < end[:, None]
    global_input = np.clip(starts[owner][:, None] + local_input, 0, max(len(items) - 1, 0))
    global_target = np.clip(global_input + 1, 0, max(len(items) - 1, 0))
    in_loss = valid & (local_input + 1 > (end - stride)[:, None])
    return (
        np.where(valid, items[global_input], -1),
        np.where(valid, gaps[global_input], 0.0).astype(np.float32),
        np.where(valid, items[global_target], -1),
        in_loss,
    )


class LSTMRecommender(HistoryBuffers, LightningRecommender):
    """score(users [B]) -> [B, I] next-item logits after each user's stored history."""

    name = "lstm"
    config_class = LSTMConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, n_features: int = 0, **hp) -> None:
        super().__init__(n_users, n_items, seed, **hp)
        cfg = LSTMConfig(**{"name": self.name, **hp})
        check_choice(cfg.loss, LOSSES, "loss")
        check_choice(cfg.negative_sampler, SAMPLERS, "negative_sampler")
        check_choice(cfg.time_features, TIME_FEATURES, "time_features")
        for key in ("embedding_dim", "hidden_dim", "num_layers", "max_len", "window_stride", "batch_size", "n_time_buckets"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"model.{key}={getattr(cfg, key)} must be at least 1")
        if cfg.window_stride > cfg.max_len:
            raise ConfigError(f"model.window_stride={cfg.window_stride} must not exceed model.max_len={cfg.max_len}")
        self.cfg = cfg
        self.n_features = n_features
        d = cfg.embedding_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.feature_projection = nn.Linear(n_features, d) if n_features else None
        self.register_buffer("item_features", torch.zeros(n_items, n_features))
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
        self.register_buffer("items_by_rank", torch.arange(n_items))
        self.register_buffer("log_q", torch.full((n_items,), -math.log(max(n_items, 1))))
        self.register_history(n_users, cfg.max_len, pad_item=n_items)

    def init_args(self) -> dict:
        return {**super().init_args(), "n_features": self.n_features}

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        """Keep the content features, the negative-sampling ranking and the train histories."""
        self.prepare_content(data)
        self._observed_splits = None
        self.observe(data, "train")

    def train_dataloader_for(self, data) -> DataLoader:
        items, gaps, _, starts, _ = ordered_events(data, "train")
        inputs, input_gaps, targets, in_loss = training_windows(items, gaps, starts, self.cfg.max_len, self.cfg.window_stride)
        if not in_loss.any():
            raise DataError(f"{data.name}: no user has two train events, so there is no next item to learn")
        inputs = np.where(inputs < 0, self.n_items, inputs)
        self.training_rows = (
            torch.from_numpy(inputs), torch.from_numpy(input_gaps), torch.from_numpy(targets), torch.from_numpy(in_loss)
        )
        return positions_loader(len(inputs), self.cfg.batch_size, self.cfg.num_workers)

    # -- network ----------------------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """Input item vectors [I + 1, d] (last row: padding): id embedding + projected features."""
        vectors = self.item_embedding.weight
        if self.feature_projection is not None:
            projected = self.feature_projection(self.item_features)
            vectors = vectors + torch.cat([projected, projected.new_zeros(1, projected.shape[1])])
        return vectors

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
            log_gap = torch.log2(1.0 + gaps / self.cfg.time_unit_seconds).unsqueeze(-1)
            if self.cfg.time_features == "bucket":
                bucket = log_gap.squeeze(-1).floor().long().clamp(0, self.cfg.n_time_buckets - 1)
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
    def sample_negatives(self, n: int) -> torch.Tensor:
        """n item indices from the sampling distribution (torch's global RNG: reseeded per epoch)."""
        device = self.output_bias.device
        if self.cfg.negative_sampler == "uniform":
            return torch.randint(0, self.n_items, (n,), device=device)
        u = torch.rand(n, device=device, dtype=torch.float64)
        rank = (torch.exp(u * math.log(self.n_items + 1.0)) - 1.0).floor().long().clamp(0, self.n_items - 1)
        return self.items_by_rank[rank]

    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of targets [N] given item-space states hidden [N, d]: full or sampled softmax."""
        vectors = self.output_vectors()
        if self.cfg.loss == "full":
            return F.cross_entropy(hidden @ vectors.T + self.output_bias, targets)
        negatives = self.sample_negatives(self.cfg.n_negatives)
        log_k = math.log(self.cfg.n_negatives)
        if self.cfg.negative_sampler == "uniform":
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
        return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.int64, device=logits.device))

    def training_step(self, batch, batch_idx):
        inputs, gaps, targets, in_loss = self.rows_of(batch)
        hidden = self.encode(inputs, gaps)[in_loss]
        loss = self.next_item_loss(hidden, targets[in_loss])
        self.log("train/loss", loss, prog_bar=False, on_step=False, on_epoch=True, batch_size=int(in_loss.sum()))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
