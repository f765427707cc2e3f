"""Attention content ranker (DIN style): a candidate item attends over the learner's history, so the
interest vector differs per candidate, and the attention weights explain each recommendation
("because you took ...").

Item vector = id embedding + projection of the item's content features (synthetic: topic one-hot,
difficulty, n_lessons; coursera: the SPEC 2.3 video statistics; movielens: genres; no features:
ids only). The local activation unit scores [h, c, h - c, h * c] for each history item h and
candidate c; the weights are a softmax over the valid history (padding gets weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeprec.config import check_at_least, check_choice
from deeprec.errors import ConfigError, DataError
from deeprec.models.base import DeepModelConfig, LightningRecommender, positions_loader, rating_weights
from deeprec.models.sequence import SAMPLERS, HistoryBuffers, ItemContent, ordered_events, sample_items
from deeprec.ranking import mask_excluded, topk_with_pads

LOSSES = ("bce", "sampled_softmax")


@dataclass
class AttentionConfig(DeepModelConfig):
    name: str = "attention"
    embedding_dim: int = 32
    attention_hidden: int = 16  # width of the local activation unit
    mlp_hidden: int = 32  # width of the scoring MLP over [interest, candidate, interest * candidate]
    dropout: float = 0.1
    max_len: int = 50  # history items a candidate attends over
    use_ids: bool = True  # id embeddings (false: content features only)
    use_features: bool = True  # projected data.item_features when the data has them
    use_user_features: bool = False  # add projected data.user_features to the interest vector (opt-in: README, Side features)
    loss: str = "sampled_softmax"  # bce (positive vs sampled negatives) | sampled_softmax
    n_negatives: int = 32  # sampled negatives per positive
    negative_sampler: str = "uniform"  # uniform | log_uniform (over popularity rank)
    lr: float = 0.003
    batch_size: int = 1024
    score_chunk_elements: int = 16_777_216  # elements of a [users, history, items] block when scoring all items

    def check(self) -> "AttentionConfig":
        super().check()
        check_choice(self.loss, LOSSES, "model.loss")
        check_choice(self.negative_sampler, SAMPLERS, "model.negative_sampler")
        check_at_least(self, ("embedding_dim", "attention_hidden", "mlp_hidden", "max_len", "n_negatives", "batch_size",
                              "score_chunk_elements"))
        return self


def prefix_histories(items: np.ndarray, starts: np.ndarray, max_len: int, pad: int) -> np.ndarray:
    """For every event, the up to max_len events of its user before it: [N, max_len], right-padded."""
    n = np.diff(starts)
    position = np.arange(len(items)) - np.repeat(starts[:-1], n)
    first = np.maximum(position - max_len, 0)
    cols = np.arange(max_len)[None, :]
    valid = cols < (position - first)[:, None]
    idx = np.clip((np.arange(len(items)) - position + first)[:, None] + cols, 0, max(len(items) - 1, 0))
    return np.where(valid, items[idx], pad)


class AttentionRanker(HistoryBuffers, ItemContent, LightningRecommender):
    """score(users [B]) -> [B, I]: every item scored against its own attention over the history."""

    name = "attention"
    config_class = AttentionConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, n_features: int = 0, n_user_features: int = 0,
                 **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        cfg = self.config
        d = cfg.embedding_dim
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items) if cfg.use_ids else None
        self.register_content(n_items, n_features, d, n_users, n_user_features)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.activation_unit = nn.Linear(4 * d, cfg.attention_hidden)
        self.activation_out = nn.Linear(cfg.attention_hidden, 1)
        self.score_mlp = nn.Sequential(
            nn.Linear(3 * d, cfg.mlp_hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.mlp_hidden, 1)
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.register_history(n_users, cfg.max_len, pad_item=n_items)

    @classmethod
    def tuning_space(cls, space: dict[str, dict], config, data) -> dict[str, dict]:
        """Without item features (none in data, or use_features=false) use_ids=false cannot train, so
        the search keeps the config's use_ids instead of spending trials on a choice that fails."""
        if data.item_features is None or not config.get("use_features", True):
            return {k: v for k, v in space.items() if k != "use_ids"}
        return space

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        """Keep the standardised content features, the popularity ranking and the train histories."""
        self.check_shape(data)
        features = self.prepare_content(data, self.config.use_features, self.config.negative_sampler == "log_uniform",
                                        self.config.use_user_features)
        if features is None and not self.config.use_ids:
            raise ConfigError(f"model.use_ids=false needs item features, but data {data.name!r} has none (or model.use_features=false)")
        self.rebuild_history(data, "train")

    def train_dataloader_for(self, data) -> DataLoader:
        """One sample per train event: (the events before it, at most max_len; the event's item; its user)."""
        events = ordered_events(data, "train")
        weights = rating_weights(events.ratings, self.config)
        keep = weights > 0  # a weight-0 event (zero_rating=negative) is history, not a positive
        if not keep.any():
            raise DataError(f"{data.name}: the train split has no positive interactions")
        histories = prefix_histories(events.items, events.starts, self.config.max_len, self.n_items)
        self.training_rows = (torch.from_numpy(histories[keep]), torch.from_numpy(events.items[keep]),
                              torch.from_numpy(weights[keep]), torch.from_numpy(events.users[keep]))
        return positions_loader(int(keep.sum()), self.config.batch_size, self.config.num_workers)

    # -- network ----------------------------------------------------------------------------
    def item_vectors(self) -> torch.Tensor:
        """Item vectors [I + 1, d] (last row: padding, zero): id embedding + projected features."""
        d = self.config.embedding_dim
        vectors = self.item_bias.new_zeros(self.n_items + 1, d)
        if self.item_embedding is not None:
            vectors = vectors + self.item_embedding.weight
        content = self.content_vectors()
        return vectors if content is None else vectors + content

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[I, d] the item vectors (id embedding + projected content features; LinUCB arm features)."""
        return self.item_vectors()[:-1].detach().clone()

    def attention_weights(self, history: torch.Tensor, valid: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """weights [B, L, C]: softmax over the valid history [B, L, d] (mask [B, L]) for each candidate.

        candidates: [C, d] (the same for every row) or [B, C, d]. The activation unit's first layer
        on [h, c, h - c, h * c] is split into its four blocks, so no [B, L, C, 4d] tensor is built.
        """
        d = self.config.embedding_dim
        w_h, w_c, w_diff, w_prod = self.activation_unit.weight.split(d, dim=1)  # each [M, d]
        history_part = history @ (w_h + w_diff).T  # [B, L, M]
        candidate_part = candidates @ (w_c - w_diff).T + self.activation_unit.bias  # [(B,) C, M]
        scaled = history.unsqueeze(2) * w_prod  # [B, L, M, d]
        if candidates.dim() == 2:
            product_part = scaled @ candidates.T  # [B, L, M, C]
            candidate_part = candidate_part.T  # [M, C]
        else:
            product_part = scaled @ candidates.transpose(1, 2).unsqueeze(1)  # [B, L, M, C]
            candidate_part = candidate_part.transpose(1, 2).unsqueeze(1)  # [B, 1, M, C]
        hidden = F.relu(history_part.unsqueeze(-1) + candidate_part + product_part)
        logits = torch.einsum("blmc,m->blc", hidden, self.activation_out.weight[0]) + self.activation_out.bias
        logits = logits.masked_fill(~valid.unsqueeze(-1), -torch.inf)
        weights = torch.softmax(logits, dim=1)
        return torch.nan_to_num(weights, nan=0.0)  # a user without history attends to nothing

    def candidate_scores(self, history_items: torch.Tensor, candidates: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """scores [B, C] of candidates ([C] shared or [B, C] per row) for right-padded histories [B, L]
        of users [B] (whose projected features, when the model has them, join the interest vector)."""
        vectors = self.item_vectors()
        valid = history_items != self.n_items
        history = self.dropout(vectors[history_items])
        candidate_vectors = vectors[candidates]
        weights = self.attention_weights(history, valid, candidate_vectors)
        interest = torch.einsum("blc,bld->bcd", weights, history)
        learner = None if users is None else self.user_vectors(users)
        if learner is not None:
            interest = interest + learner.unsqueeze(1)
        if candidate_vectors.dim() == 2:
            candidate_vectors = candidate_vectors.unsqueeze(0).expand(interest.shape[0], -1, -1)
        features = torch.cat([interest, candidate_vectors, interest * candidate_vectors], dim=-1)
        return self.score_mlp(features).squeeze(-1) + self.item_bias[candidates]

    def history_of(self, users: torch.Tensor) -> torch.Tensor:
        """Stored histories [B, L'] of users, trimmed to the longest one in the batch."""
        users = users.to(self.history_items.device)
        width = max(int(self.history_lengths[users].max()), 1)
        return self.history_items[users, :width]

    def shared_attention_logits(self, history: torch.Tensor, candidates: torch.Tensor, rows_per_block: int) -> torch.Tensor:
        """Activation-unit logits [B, L, C] of history [B, L, d] for candidates [C, d] shared by all rows.

        All three parts of the unit's first layer come from one GEMM per block of (user, position)
        rows: [h, 1, h (w_h + w_diff)^T] @ K, where K [d + 1 + M, C * M] holds w_prod[m] * c, the
        candidate part and an identity that adds the history part. The [rows, C, M] block is
        activated in place and reduced by one matrix-vector product: no [B, L, M, C] temporaries.
        Same values as attention_weights' general path (tests/test_attention.py)."""
        d, m = self.config.embedding_dim, self.config.attention_hidden
        b, length, _ = history.shape
        n = len(candidates)
        w_h, w_c, w_diff, w_prod = self.activation_unit.weight.split(d, dim=1)  # each [M, d]
        product = (candidates[:, None, :] * w_prod[None]).reshape(n * m, d)  # [(C, M), d]
        candidate_part = (candidates @ (w_c - w_diff).T + self.activation_unit.bias).reshape(1, n * m)
        identity = torch.eye(m, device=history.device, dtype=history.dtype).repeat(1, n)  # [M, (C, M)]
        kernel = torch.cat([product.T, candidate_part, identity])  # [d + 1 + M, C * M]
        rows = history.reshape(b * length, d)
        expanded = torch.cat([rows, rows.new_ones(len(rows), 1), rows @ (w_h + w_diff).T], 1)  # [B L, d + 1 + M]
        w_out = self.activation_out.weight[0]
        logits = rows.new_empty(b * length, n)
        for start in range(0, len(rows), rows_per_block):
            hidden = (expanded[start : start + rows_per_block] @ kernel).relu_()  # [r, C * M]
            logits[start : start + rows_per_block] = (hidden.view(-1, m) @ w_out).view(-1, n)
        return logits.view(b, length, n) + self.activation_out.bias

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """[B, I]: every item against its own attention over each user's history.

        Without dropout a history position's activation logit depends only on (its item, the
        candidate), so the unit runs once per (distinct history item of the batch, candidate): a
        [u, C] table from shared_attention_logits' GEMMs, gathered per (user, position). That is
        u x I pairs (u <= I) instead of B x L x I. The scoring MLP's first layer on
        [interest, c, interest * c] is one [d, H] matrix per candidate (w_interest + diag(c) w_product),
        so it runs as one batched GEMM over candidates. Candidates come in chunks whose table and
        [users, L, C] blocks hold about score_chunk_elements elements; the softmax over the history
        is per candidate, so chunking changes no value."""
        history_items = self.history_of(users) if len(users) else self.history_items[:0, :1]
        batch, width = history_items.shape
        vectors = self.item_vectors()
        vectors[-1] = 0.0  # the padding item: a user without history attends to zeros (interest 0)
        candidates = vectors[:-1]  # [I, d]
        distinct, position_item = torch.unique(history_items, return_inverse=True)  # [u], [B, L]
        distinct_vectors = vectors[distinct].unsqueeze(0)  # [1, u, d]
        padding = history_items == self.n_items  # [B, L]
        # Mask the padding only where there is a history; an empty one keeps finite (uniform) logits.
        padding = (padding & ~padding.all(1, keepdim=True)).unsqueeze(-1)  # [B, L, 1]
        mlp_in, mlp_rest = self.score_mlp[0], self.score_mlp[1:]
        w_interest, w_candidate, w_product = mlp_in.weight.split(self.config.embedding_dim, dim=1)  # [H, d] each
        budget, m = self.config.score_chunk_elements, self.config.attention_hidden
        items_per_chunk = max(1, budget // max(len(distinct), 1))
        out = history_items.new_empty((batch, self.n_items), dtype=vectors.dtype)
        learner = self.user_vectors(users)  # [B, d] projected user features joining the interest, or None
        for first in range(0, self.n_items, items_per_chunk):
            chunk = slice(first, min(first + items_per_chunk, self.n_items))
            part = candidates[chunk]  # [C, d]
            n = len(part)
            rows_per_block = max(1, budget // (n * m))
            table = self.shared_attention_logits(distinct_vectors, part, rows_per_block)[0]  # [u, C]
            candidate_hidden = (part @ w_candidate.T + mlp_in.bias).unsqueeze(1)  # [C, 1, H]
            per_candidate = w_interest.T + part.unsqueeze(-1) * w_product.T  # [C, d, H]
            users_per_block = max(1, budget // (n * max(width, mlp_in.out_features, self.config.embedding_dim)))
            for rows in range(0, batch, users_per_block):
                block = slice(rows, rows + users_per_block)
                logits = table[position_item[block]].masked_fill_(padding[block], -torch.inf)  # [b, L, C]
                weights = torch.softmax(logits, dim=1)
                interest = weights.transpose(1, 2) @ vectors[history_items[block]]  # [b, C, d]
                if learner is not None:
                    interest = interest + learner[block].unsqueeze(1)
                hidden = torch.baddbmm(candidate_hidden, interest.transpose(0, 1), per_candidate)  # [C, b, H]
                out[block, chunk] = mlp_rest(hidden).squeeze(-1).T + self.item_bias[chunk]
        return out

    # -- explanations -----------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, users: torch.Tensor, items: torch.Tensor, top: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """(history items [B, top], weights [B, top]): what user b attended to when scoring items[b].

        Highest weight first; -1 and weight 0 where the history is shorter than `top`.
        """
        history = self.history_of(users)
        items = items.to(history.device)
        vectors = self.item_vectors()
        weights = self.attention_weights(vectors[history], history != self.n_items, vectors[items].unsqueeze(1))[..., 0]
        k = min(top, history.shape[1])
        top_weights, position = torch.topk(weights, k, dim=1)
        top_items = history.gather(1, position)
        empty = history.gather(1, position) == self.n_items
        top_items = torch.where(empty, -1, top_items)
        top_weights = torch.where(empty, 0.0, top_weights)
        if k < top:
            top_items = torch.cat([top_items, top_items.new_full((len(items), top - k), -1)], 1)
            top_weights = torch.cat([top_weights, top_weights.new_zeros(len(items), top - k)], 1)
        return top_items, top_weights

    @torch.no_grad()
    def recommend_with_explanations(self, user_indices, k: int = 10, user_ids=None, item_ids=None,
                                    exclude=None) -> pd.DataFrame:
        """Top-k per user with the history item that weighed most: columns user, rank, item, score,
        because_item, because_weight. Ids come from `user_ids` / `item_ids` (index -> id) when
        given; `exclude` (CSR [n_users, I]) masks items, by default each user's stored history."""
        users = torch.as_tensor(np.asarray(user_indices, dtype=np.int64))
        scores = self.score(users).float()
        if exclude is None:
            history = self.history_items[users.to(self.history_items.device)]
            seen = torch.zeros(len(users), self.n_items + 1, dtype=torch.bool, device=scores.device)
            seen.scatter_(1, history.to(scores.device), True)
            excluded = seen[:, : self.n_items]
        else:
            excluded = exclude[users.numpy()]
        values, items = (t.cpu() for t in topk_with_pads(mask_excluded(scores, excluded), k))
        keep = items >= 0
        row = torch.arange(len(users)).unsqueeze(1).expand_as(items)[keep]
        flat_items = items[keep]
        because, weight = self.explain(users[row], flat_items, top=1)
        because, weight = because[:, 0].cpu().numpy(), weight[:, 0].cpu().numpy()
        rank = torch.arange(1, k + 1).unsqueeze(0).expand_as(items)[keep].numpy()
        user_idx = users[row].numpy()
        item_idx = flat_items.numpy()

        def named(ids, idx):
            if ids is None:
                return idx
            ids = np.asarray(ids, dtype=object)
            return np.where(idx >= 0, ids[np.clip(idx, 0, None)], None)

        return pd.DataFrame({
            "user": named(user_ids, user_idx),
            "rank": rank,
            "item": named(item_ids, item_idx),
            "score": values[keep].numpy(),
            "because_item": named(item_ids, because),
            "because_weight": weight,
        })

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        history, positives, row_weights, users = self.rows_of(batch)
        width = max(int((history != self.n_items).sum(1).max()), 1)
        negatives = sample_items(self.config.negative_sampler, self.items_by_rank, (len(positives), self.config.n_negatives))
        candidates = torch.cat([positives.unsqueeze(1), negatives], 1)
        scores = self.candidate_scores(history[:, :width], candidates, users)
        accidental = torch.cat([torch.zeros_like(positives, dtype=torch.bool).unsqueeze(1),
                                negatives == positives.unsqueeze(1)], 1)
        if self.config.loss == "bce":
            labels = torch.zeros_like(scores)
            labels[:, 0] = 1.0
            weight = (~accidental).float()
            weight[:, 0] = row_weights  # the positive's rating weight (1 without rating_weights)
            loss = F.binary_cross_entropy_with_logits(scores, labels, weight=weight)
        else:
            if self.config.negative_sampler == "log_uniform":  # logQ correction
                scores = scores - self.log_q[candidates]
            scores = scores.masked_fill(accidental, -torch.inf)
            target = torch.zeros(len(positives), dtype=torch.int64, device=scores.device)
            loss = (F.cross_entropy(scores, target, reduction="none") * row_weights).mean()
        self.log("train/loss", loss, prog_bar=False, on_step=False, on_epoch=True, batch_size=len(positives))
        return loss
