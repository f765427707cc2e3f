"""What the sequence models (LSTM, attention) share: each learner's time-ordered events, held as
buffers that observe() rebuilds and update_state() / learn_online() append to; the items' content features projected
into the item space; and the negative samplers over the catalogue.

The mixins here register the attributes they use (register_history, register_content) and take
their settings as arguments, so a model composes them without them reading its config.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from deeprec.errors import DataError
from deeprec.online import one_event_per_user

SAMPLERS = ("log_uniform", "uniform")


# -- event histories -----------------------------------------------------------------------------
class Events(NamedTuple):
    """Events of every user, sorted by user then time: items, gaps (seconds since the user's previous
    event), times (epoch seconds), ratings [N]; starts [U+1] (user u's events are starts[u]:starts[u+1]);
    users [N]."""

    items: np.ndarray
    gaps: np.ndarray
    times: np.ndarray
    starts: np.ndarray
    users: np.ndarray
    ratings: np.ndarray


def ordered_events(data, splits) -> Events:
    """The events of `splits` sorted by user then time.

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
    return Events(items, gaps, times, starts, users, rows["rating"].to_numpy(np.float32))


def training_windows(items, gaps, starts, max_len: int, stride: int, weights=None):
    """Next-item training windows of every sequence, every position a target (SASRec-style).

    Returns (inputs [W, L] item, input gaps [W, L], targets [W, L], target weights [W, L] float32:
    0 on padding). Window ends step back from each sequence's end by `stride`; with
    stride = max_len the windows are disjoint and each target counts once, a smaller stride repeats
    targets with more context. `weights` [N]: the loss weight of each event as a target (default 1).
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
    weights = np.ones(len(items), np.float32) if weights is None else np.asarray(weights, np.float32)
    return (
        np.where(valid, items[global_input], -1),
        np.where(valid, gaps[global_input], 0.0).astype(np.float32),
        np.where(valid, items[global_target], -1),
        np.where(valid, weights[global_target] if len(items) else 0.0, 0.0).astype(np.float32),
    )


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
    frame = data.item_features
    if not use_features or frame is None or frame.shape[1] == 0:
        return None
    values = frame.to_numpy(np.float32)
    if not np.isfinite(values).all():
        bad = frame.columns[~np.isfinite(values).all(axis=0)][0]
        raise DataError(f"item feature column {bad!r} holds NaN or infinite values; fill or drop it")
    std = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return torch.from_numpy(values.astype(np.float32))


def sample_items(sampler: str, items_by_rank: torch.Tensor, shape) -> torch.Tensor:
    """Item indices of `shape` (torch's global RNG, reseeded per epoch): uniform over the catalogue,
    or log_uniform over the popularity rank (items_by_rank [I]: items by descending popularity)."""
    n_items, device = len(items_by_rank), items_by_rank.device
    if sampler == "uniform":
        return torch.randint(0, n_items, shape, device=device)
    u = torch.rand(shape, device=device, dtype=torch.float64)
    rank = (torch.exp(u * math.log(n_items + 1.0)) - 1.0).floor().long().clamp(0, n_items - 1)
    return items_by_rank[rank]


class HistoryBuffers:
    """Mixin for nn.Modules: each user's last max_len events as buffers, rebuilt or appended to.

    register_history() creates every attribute the other methods use."""

    def register_history(self, n_users: int, max_len: int, pad_item: int) -> None:
        """Buffers history_items [U, max_len] (pad_item where empty), history_gaps [U, max_len] seconds,
        history_lengths [U] and last_time [U] epoch seconds (NaN: no event)."""
        self.pad_item = pad_item
        self.register_buffer("history_items", torch.full((n_users, max_len), pad_item, dtype=torch.int64))
        self.register_buffer("history_gaps", torch.zeros(n_users, max_len))
        self.register_buffer("history_lengths", torch.zeros(n_users, dtype=torch.int64))
        self.register_buffer("last_time", torch.full((n_users,), float("nan"), dtype=torch.float64))
        self._observed_splits: tuple[str, ...] | None = None

    def rebuild_history(self, data, splits) -> None:
        """Forget what was observed and hold the events of `splits` (prepare(): the train histories)."""
        self._observed_splits = None
        self.observe(data, splits)

    def observe(self, data, splits) -> None:
        """Condition scores on the events of `splits` of data (the evaluator's known history)."""
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        if splits == self._observed_splits:
            return
        items, gaps, times, starts, *_ = ordered_events(data, splits)
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


class ItemContent:
    """Mixin for nn.Modules: the data's item features (standardised) projected into a `dim`-wide item
    space, and the popularity ranking that log-uniform negatives draw from.

    register_content() creates every attribute the other methods use; `n_features` is a constructor
    argument of the model (the projection's width), so it is part of init_args."""

    def register_content(self, n_items: int, n_features: int, dim: int) -> None:
        """feature_projection (Linear n_features -> dim, None without features), buffers item_features
        [I, n_features], items_by_rank [I] and log_q [I] (log-uniform log-probabilities)."""
        self.n_features = n_features
        self.content_dim = dim
        self.feature_projection = nn.Linear(n_features, dim) if n_features else None
        self.register_buffer("item_features", torch.zeros(n_items, n_features))
        self.register_buffer("items_by_rank", torch.arange(n_items))
        self.register_buffer("log_q", torch.full((n_items,), -math.log(max(n_items, 1))))

    def init_args(self) -> dict:
        return {**super().init_args(), "n_features": self.n_features}

    def prepare_content(self, data, use_features: bool, log_uniform: bool) -> torch.Tensor | None:
        """Keep data's standardised item features (a new projection when their width changes) and, for
        log-uniform negatives, its popularity ranking. Returns the features [I, F] or None."""
        features = standardised_features(data, use_features)
        n_features = 0 if features is None else features.shape[1]
        if n_features != self.n_features:
            self.n_features = n_features
            self.feature_projection = nn.Linear(n_features, self.content_dim) if n_features else None
            self.item_features = torch.zeros(len(self.items_by_rank), n_features)
        if features is not None:
            self.item_features.copy_(features)
        if log_uniform:
            by_rank, log_q = popularity_ranking(data)
            self.items_by_rank.copy_(torch.from_numpy(by_rank))
            self.log_q.copy_(torch.from_numpy(log_q))
        return features

    def content_vectors(self) -> torch.Tensor | None:
        """Projected features [I + 1, dim] (last row, the padding item: zero), or None without features."""
        if self.feature_projection is None:
            return None
        projected = self.feature_projection(self.item_features)
        return torch.cat([projected, projected.new_zeros(1, projected.shape[1])])
