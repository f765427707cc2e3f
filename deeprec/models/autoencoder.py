"""Mult-DAE and Mult-VAE (Liang et al. 2018): an autoencoder over each user's interaction vector.

The encoder maps a user's L2-normalised, input-dropped history row to a latent vector (the user
embedding; the VAE's mean); the decoder maps it back to logits over all items, trained with the
multinomial log-likelihood (+ beta * KL for the VAE, beta annealed linearly up to `anneal_cap`).
Histories are CSR buffers of the module (indptr / indices / values), so score() and checkpoints
are self-contained; `observe(data, splits)` swaps in the history the evaluator asks for.
The user embeddings and the decoder's item vectors are exported (Parquet + TensorBoard projector)
as features for other models (e.g. LinUCB, "neural-linear").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeprec.atomic import write_parquet_atomic
from deeprec.config import check_at_least, check_choice
from deeprec.errors import ConfigError, DataError
from deeprec.models.base import DeepModelConfig, LightningRecommender, positions_loader, rating_weights
from deeprec.online import set_entries

VARIANTS = ("dae", "vae")
HISTORY = ("history_indptr", "history_indices", "history_values")


@dataclass
class AutoencoderConfig(DeepModelConfig):
    name: str = "autoencoder"
    variant: str = "dae"  # dae (Mult-DAE) | vae (Mult-VAE)
    hidden_dims: list[int] = field(default_factory=lambda: [256])  # encoder widths (decoder mirrors)
    latent_dim: int = 64
    dropout: float = 0.5  # dropout on the (normalised) input row: the denoising corruption
    batch_size: int = 128  # users per batch
    anneal_cap: float = 0.2  # VAE: the largest KL weight beta
    total_anneal_steps: int = 2000  # VAE: beta = min(anneal_cap, step / total_anneal_steps); 0: cap at once
    use_ratings: bool = False  # input row holds ratings instead of 1s
    embedding_batch_size: int = 1024  # users per chunk in user_embeddings()
    export_embeddings: bool = True  # write embeddings/ and the TensorBoard projector at the end of fit

    def check(self) -> "AutoencoderConfig":
        super().check()
        check_choice(self.variant, VARIANTS, "model.variant")
        check_at_least(self, ("latent_dim", "batch_size", "embedding_batch_size"))
        if any(width < 1 for width in self.hidden_dims):
            raise ConfigError(f"model.hidden_dims={self.hidden_dims} must hold positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be within [0, 1)")
        if self.anneal_cap < 0 or self.total_anneal_steps < 0:
            raise ConfigError("model.anneal_cap and model.total_anneal_steps must not be negative")
        return self


def dense_rows(users: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, n_items: int) -> torch.Tensor:
    """[B, n_items] float rows of a CSR matrix (indptr [U+1], indices/values [nnz]) for users [B]."""
    starts = indptr[users]
    counts = indptr[users + 1] - starts
    row = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
    offset = torch.arange(int(counts.sum()), device=users.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    position = torch.repeat_interleave(starts, counts) + offset
    dense = torch.zeros(len(users), n_items, device=values.device, dtype=values.dtype)
    dense[row, indices[position]] = values[position]
    return dense


def embedding_frame(ids, key: str, vectors: torch.Tensor) -> pd.DataFrame:
    """A frame `key` (the user's own id, as string) + e0 .. e{d-1} float32."""
    values = vectors.detach().float().cpu().numpy()
    frame = pd.DataFrame(values, columns=[f"e{k}" for k in range(values.shape[1])])
    frame.insert(0, key, [str(i) for i in ids])
    return frame


def projector_labels(ids) -> list[str]:
    """One line per id for the projector's metadata.tsv: tabs, newlines and backslashes escaped."""
    table = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
    return [str(i).translate(table) for i in ids]


class AutoencoderRecommender(LightningRecommender):
    """score(users [B]) -> [B, I] decoder logits of the users' stored history rows."""

    name = "autoencoder"
    config_class = AutoencoderConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        cfg = self.config
        widths = [n_items, *cfg.hidden_dims]
        latent_out = 2 * cfg.latent_dim if cfg.variant == "vae" else cfg.latent_dim
        self.encoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, [*widths[1:], latent_out]))
        back = [cfg.latent_dim, *reversed(cfg.hidden_dims), n_items]
        self.decoder = nn.ModuleList(nn.Linear(a, b) for a, b in zip(back[:-1], back[1:]))
        for layer in [*self.encoder, *self.decoder]:  # the paper's Xavier weights, N(0, 0.001) biases
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.register_buffer("history_indptr", torch.zeros(n_users + 1, dtype=torch.int64))
        self.register_buffer("history_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("history_values", torch.zeros(0))
        self._observed_splits: tuple[str, ...] | None = None
        self._train_history: tuple[torch.Tensor, ...] | None = None
        self._train_targets: tuple[torch.Tensor, ...] | None = None

    # -- histories ------------------------------------------------------------------------------
    def history_tensors(self, data, splits, target: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indptr [U+1], indices [nnz], values [nnz]) of the users' rows in `splits`: the input row
        (1s, or ratings with use_ratings), or with `target` the loss weight of each item (the rating
        weights; 1s without them). Interactions of weight 0 (zero_rating=negative) are in neither."""
        rows = data.rows(splits)
        ratings = rows["rating"].to_numpy(np.float32)
        weights = rating_weights(ratings, self.config)
        keep = weights > 0
        values = weights if target else (ratings if self.config.use_ratings else np.ones(len(rows), np.float32))
        matrix = sp.csr_matrix(
            (values[keep], (rows["user"].to_numpy()[keep], rows["item"].to_numpy()[keep])),
            shape=(self.n_users, self.n_items), dtype=np.float32,
        )
        matrix.sum_duplicates()
        matrix.sort_indices()
        return (
            torch.from_numpy(matrix.indptr.astype(np.int64)),
            torch.from_numpy(matrix.indices.astype(np.int64)),
            torch.from_numpy(matrix.data.astype(np.float32)),
        )

    def set_history(self, indptr, indices, values) -> None:
        """Replace the history buffers (their nnz may change) on the module's device."""
        device = self.history_indptr.device
        self.history_indptr = indptr.to(device)
        self.history_indices = indices.to(device)
        self.history_values = values.to(device)

    def observe(self, data, splits) -> None:
        """Score from the rows of `splits` (the evaluator's known history: train, or train + valid)."""
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        if splits != self._observed_splits:
            self.set_history(*self.history_tensors(data, splits))
            self._observed_splits = splits

    # -- online learning ------------------------------------------------------------------------
    def add_users(self, count: int) -> bool:
        """New users with empty history rows: the encoder reads whatever they do next."""
        self.history_indptr = torch.cat([self.history_indptr, self.history_indptr[-1:].expand(count)])
        self.n_users += count
        return True

    @torch.no_grad()
    def learn_online(self, users, items, rewards, timestamps) -> None:
        """Each (user, item) of the input rows takes the latest event's reward (1.0 unless use_ratings);
        a reward <= 0 takes the item out of the row. The next score() encodes the new row."""
        values = rewards.cpu().numpy().astype(np.float32).clip(min=0.0)
        if not self.config.use_ratings:
            values = (values > 0).astype(np.float32)
        matrix = sp.csr_matrix(
            (self.history_values.cpu().numpy(), self.history_indices.cpu().numpy(), self.history_indptr.cpu().numpy()),
            shape=(self.n_users, self.n_items),
        )
        matrix = set_entries(matrix, users.cpu().numpy(), items.cpu().numpy(), values)
        self.set_history(torch.from_numpy(matrix.indptr.astype(np.int64)), torch.from_numpy(matrix.indices.astype(np.int64)),
                         torch.from_numpy(matrix.data.astype(np.float32)))
        self._observed_splits = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The history buffers' length depends on the data: take the incoming one's shape first.
        for name in HISTORY:
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        self._observed_splits = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        """Keep the train rows (training inputs) and make them the scoring history."""
        self.check_shape(data)
        self._train_history = self.history_tensors(data, ("train",))
        self._train_targets = self.history_tensors(data, ("train",), target=True) if self.config.rating_weights else None
        self._observed_splits = None
        self.observe(data, ("train",))

    def train_dataloader_for(self, data) -> DataLoader:
        """Positions into the users with at least one train row, read in a per-epoch order."""
        counts = self._train_history[0].diff()
        users = torch.nonzero(counts > 0).squeeze(1)
        if len(users) == 0:
            raise DataError(f"{data.name}: the train split is empty; autoencoder needs train interactions")
        self.training_rows = (users,)
        return positions_loader(len(users), self.config.batch_size, self.config.num_workers)

    # -- network ----------------------------------------------------------------------------
    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean [B, latent], log-variance [B, latent] or None for the DAE) of history rows [B, I]."""
        hidden = self.input_dropout(F.normalize(rows, dim=1))
        for k, layer in enumerate(self.encoder):
            hidden = layer(hidden)
            if k < len(self.encoder) - 1:
                hidden = torch.tanh(hidden)
        if self.config.variant == "dae":
            return torch.tanh(hidden), None  # Mult-DAE: tanh on the code layer too
        mean, log_var = hidden.split(self.config.latent_dim, dim=1)
        return mean, log_var

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Item logits [B, I] of latent vectors [B, latent]."""
        hidden = latent
        for k, layer in enumerate(self.decoder):
            hidden = layer(hidden)
            if k < len(self.decoder) - 1:
                hidden = torch.tanh(hidden)
        return hidden

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits [B, I], mean, log-variance) of history rows [B, I]; the VAE samples in training."""
        mean, log_var = self.encode(rows)
        latent = mean
        if log_var is not None and self.training:
            latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return self.decode(latent), mean, log_var

    def history_rows(self, users: torch.Tensor) -> torch.Tensor:
        """The stored history rows [B, I] of users [B]."""
        return dense_rows(users, self.history_indptr, self.history_indices, self.history_values, self.n_items)

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        users = users.to(self.history_indptr.device)
        mean, _ = self.encode(self.history_rows(users))
        return self.decode(mean)

    # -- training ---------------------------------------------------------------------------
    def kl_weight(self) -> float:
        """beta at the current optimiser step: linear warm-up to anneal_cap."""
        if self.config.total_anneal_steps == 0:
            return self.config.anneal_cap
        return min(self.config.anneal_cap, self.global_step / self.config.total_anneal_steps)

    def training_step(self, batch, batch_idx):
        (users,) = self.rows_of(batch)
        if self._train_history[0].device != users.device:
            self._train_history = tuple(t.to(users.device) for t in self._train_history)
            if self._train_targets is not None:
                self._train_targets = tuple(t.to(users.device) for t in self._train_targets)
        rows = dense_rows(users, *self._train_history, self.n_items)
        targets = rows if self._train_targets is None else dense_rows(users, *self._train_targets, self.n_items)
        logits, mean, log_var = self(rows)
        nll = -(F.log_softmax(logits.float(), dim=1) * targets).sum(1).mean()
        loss = nll
        if log_var is not None:
            kl = 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum(1).mean()
            beta = self.kl_weight()
            loss = nll + beta * kl
            self.log("train/kl", kl, on_step=False, on_epoch=True, batch_size=len(users))
            self.log("train/beta", beta, on_step=False, on_epoch=True, batch_size=len(users))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        return loss

    # -- embeddings -----------------------------------------------------------------------------
    @torch.no_grad()
    def user_embeddings(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """[U, latent] encoder means of the stored histories (all users, or `users` [U]), no dropout."""
        if users is None:
            users = torch.arange(self.n_users)
        users = users.to(self.history_indptr.device)
        was_training = self.training
        self.eval()
        chunks = [
            self.encode(self.history_rows(users[start : start + self.config.embedding_batch_size]))[0]
            for start in range(0, len(users), self.config.embedding_batch_size)
        ]
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, self.config.latent_dim)

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[I, d] the decoder's output weights (d = the last decoder width: hidden_dims[0] or latent_dim)."""
        return self.decoder[-1].weight.detach().clone()

    def export_embeddings(self, run_dir: str | Path, user_ids=None, item_ids=None, log_dir: str | Path | None = None,
                          global_step: int = 0) -> Path:
        """Write run_dir/embeddings/{users,items}.parquet (id + e0..) atomically and, in `log_dir`
        (default run_dir/tensorboard), TensorBoard projector files with the ids as metadata
        (under `global_step`, so a resumed run's export does not overwrite an earlier one)."""
        from torch.utils.tensorboard import SummaryWriter

        meta = self._ckpt_meta or {}
        user_ids = user_ids if user_ids is not None else meta.get("user_ids", range(self.n_users))
        item_ids = item_ids if item_ids is not None else meta.get("item_ids", range(self.n_items))
        out = Path(run_dir) / "embeddings"
        users, items = self.user_embeddings().cpu(), self.item_embeddings().cpu()
        write_parquet_atomic(embedding_frame(user_ids, "user_id", users), out / "users.parquet")
        write_parquet_atomic(embedding_frame(item_ids, "item_id", items), out / "items.parquet")
        writer = SummaryWriter(log_dir=str(log_dir or Path(run_dir) / "tensorboard"))
        writer.add_embedding(users, metadata=projector_labels(user_ids), tag="user_embeddings", global_step=global_step)
        writer.add_embedding(items, metadata=projector_labels(item_ids), tag="item_embeddings", global_step=global_step)
        writer.close()
        return out

    def on_fit_end(self) -> None:
        """Export the embeddings into the run. deeprec's checkpoint callback has already loaded the
        best epoch's weights into this module (its on_fit_end runs first), so nothing is read back."""
        trainer = self.trainer
        logger = trainer.logger
        if not self.config.export_embeddings or logger is None or getattr(logger, "log_dir", None) is None:
            return
        if not trainer.is_global_zero:
            return
        self.export_embeddings(trainer.default_root_dir, log_dir=logger.log_dir, global_step=trainer.global_step)
