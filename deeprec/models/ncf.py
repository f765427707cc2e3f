"""Neural collaborative filtering (He et al. 2017): GMF, MLP and NeuMF on implicit feedback.

Each train interaction is a positive; `num_negatives` items per positive are drawn uniformly
among the items the user has NOT interacted with in train (exact rejection, vectorised), so the
loss sees true negatives only. Pointwise BCE or pairwise BPR; ratings can weight the positives.
NeuMF can start from separately trained GMF and MLP towers (`pretrain`, the paper's recipe).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deeprec.config import check_at_least, check_choice
from deeprec.errors import ConfigError, DataError
from deeprec.models.base import DeepModelConfig, LightningRecommender, positions_loader, rating_weights

VARIANTS = ("gmf", "mlp", "neumf")
LOSSES = ("bce", "bpr")


@dataclass
class NCFConfig(DeepModelConfig):
    name: str = "ncf"
    variant: str = "neumf"  # gmf | mlp | neumf
    gmf_dim: int = 32  # GMF user/item embedding size
    mlp_dim: int = 32  # MLP user/item embedding size (the MLP reads their concatenation)
    mlp_layers: list[int] = field(default_factory=lambda: [64, 32, 16])  # hidden widths, ReLU
    dropout: float = 0.0  # on every MLP hidden layer
    batch_size: int = 1024  # positives per batch (each with num_negatives negatives)
    loss: str = "bpr"  # bce (pointwise) | bpr (pairwise, each positive vs each of its negatives)
    num_negatives: int = 8
    pretrain: bool = False  # neumf only: initialise from a GMF and an MLP trained pretrain_epochs each
    pretrain_epochs: int = 5
    pretrain_alpha: float = 0.5  # NeuMF output = alpha * GMF output layer ++ (1 - alpha) * MLP's
    score_memory_mb: int = 0  # bound on the [users, items, mlp width] activations in score(); 0 = auto

    def check(self) -> "NCFConfig":
        super().check()
        check_choice(self.variant, VARIANTS, "model.variant")
        check_choice(self.loss, LOSSES, "model.loss")
        check_at_least(self, ("gmf_dim", "mlp_dim", "batch_size", "num_negatives"))
        if self.score_memory_mb < 0:
            raise ConfigError(f"model.score_memory_mb={self.score_memory_mb} must be 0 (auto) or positive")
        if self.variant != "gmf" and (not self.mlp_layers or min(self.mlp_layers) < 1):
            raise ConfigError(f"model.mlp_layers={self.mlp_layers} must list at least one positive width")
        if not 0.0 <= self.pretrain_alpha <= 1.0:
            raise ConfigError(f"model.pretrain_alpha={self.pretrain_alpha} must be within [0, 1]")
        return self


def negative_sampling_keys(indptr: torch.Tensor, indices: torch.Tensor, n_items: int) -> torch.Tensor:
    """keys [nnz] int64: user * n_items + (p_j - j) for each user's sorted positives p_0 < p_1 < ...

    p_j - j counts the non-positive items below p_j, so for r uniform in [0, n_items - m_u) the r-th
    non-positive item of u is r + #{j : p_j - j <= r}: one searchsorted over these keys.
    """
    counts = indptr[1:] - indptr[:-1]
    owner = torch.repeat_interleave(torch.arange(len(counts), device=indices.device), counts)
    rank = torch.arange(len(indices), device=indices.device) - indptr[owner]
    return owner * n_items + indices - rank


def sample_negatives(users: torch.Tensor, n: int, indptr, keys, n_items: int) -> torch.Tensor:
    """[B, n] items drawn uniformly among the items each user has no train interaction with.

    users [B]; indptr [U+1] / keys from negative_sampling_keys. Uses torch's global RNG (reseeded
    per epoch by the base class). A user who has every item gets uniform items (nothing to reject).
    """
    n_positive = indptr[users + 1] - indptr[users]
    n_free = (n_items - n_positive).clamp(min=1)
    r = (torch.rand(len(users), n, device=users.device, dtype=torch.float64) * n_free[:, None]).long()
    r = torch.minimum(r, n_free[:, None] - 1)
    query = users[:, None] * n_items + r
    below = torch.searchsorted(keys, query.reshape(-1), right=True).view_as(r) - indptr[users][:, None]
    items = r + below
    saturated = n_positive >= n_items
    return torch.where(saturated[:, None], r % n_items, items)


class NCF(LightningRecommender):
    """score(users [B]) -> [B, I] logits of the GMF, MLP or NeuMF interaction function."""

    name = "ncf"
    config_class = NCFConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        cfg = self.config
        self.uses_gmf = cfg.variant in ("gmf", "neumf")
        self.uses_mlp = cfg.variant in ("mlp", "neumf")
        out_width = 0
        if self.uses_gmf:
            self.gmf_user = nn.Embedding(n_users, cfg.gmf_dim)
            self.gmf_item = nn.Embedding(n_items, cfg.gmf_dim)
            out_width += cfg.gmf_dim
        if self.uses_mlp:
            self.mlp_user = nn.Embedding(n_users, cfg.mlp_dim)
            self.mlp_item = nn.Embedding(n_items, cfg.mlp_dim)
            widths = [2 * cfg.mlp_dim, *cfg.mlp_layers]
            self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
            out_width += widths[-1]
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(out_width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation: N(0, 0.01) embeddings, Xavier/He layers."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.01)
        if self.uses_mlp:
            for layer in self.mlp:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.kaiming_uniform_(self.output.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.output.bias)

    # -- data -------------------------------------------------------------------------------
    def prepare(self, data) -> None:
        """Keep the train positives (user, item, rating weight) and their CSR keys for negative sampling.

        With rating_weights and zero_rating=negative, 0-rated interactions are no positives: they are
        left out of the rows and out of the keys, so they can be drawn as negatives."""
        self.check_shape(data)
        train = data.rows("train")
        weights = rating_weights(train["rating"].to_numpy(np.float32), self.config)
        keep = weights > 0
        users, items = train["user"].to_numpy(np.int64)[keep], train["item"].to_numpy(np.int64)[keep]
        order = np.lexsort((items, users))  # by user, then item: the order does not depend on the file's
        users, items, weights = users[order], items[order], weights[keep][order]
        if len(users) == 0:
            raise DataError(f"{data.name}: the train split has no positive interactions; ncf needs some")
        positives = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(self.n_users, self.n_items))
        positives.sum_duplicates()
        positives.sort_indices()
        self._indptr = torch.from_numpy(positives.indptr.astype(np.int64))
        self._keys = negative_sampling_keys(self._indptr, torch.from_numpy(positives.indices.astype(np.int64)), self.n_items)
        self.training_rows = (torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(weights))

    def train_dataloader_for(self, data) -> DataLoader:
        """Positions into the train positives (user, item, weight), read in a per-epoch order."""
        return positions_loader(len(self.training_rows[0]), self.config.batch_size, self.config.num_workers)

    # -- network ----------------------------------------------------------------------------
    def mlp_tower(self, hidden: torch.Tensor) -> torch.Tensor:
        """The MLP after its first linear map: hidden [..., mlp_layers[0]] pre-activation."""
        for k, layer in enumerate(self.mlp):
            if k:
                hidden = layer(hidden)
            hidden = self.dropout(F.relu(hidden))
        return hidden

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits [B, N] of user [B] with items [B, N] (each row its own candidates)."""
        parts = []
        if self.uses_gmf:
            parts.append(self.gmf_user(users)[:, None, :] * self.gmf_item(items))
        if self.uses_mlp:
            first = self.mlp[0]
            d = self.config.mlp_dim
            user_part = self.mlp_user(users) @ first.weight[:, :d].T + first.bias  # [B, h1]
            item_part = self.mlp_item(items) @ first.weight[:, d:].T  # [B, N, h1]
            parts.append(self.mlp_tower(user_part[:, None, :] + item_part))
        return self.output(torch.cat(parts, -1)).squeeze(-1)

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[I, d] the item embeddings of the towers in use, side by side (GMF then MLP): features for
        the LinUCB head's neural-linear mode."""
        parts = ([self.gmf_item.weight] if self.uses_gmf else []) + ([self.mlp_item.weight] if self.uses_mlp else [])
        return torch.cat(parts, 1).detach().clone()

    def score_memory_mb(self, device: torch.device) -> int:
        """The activation budget of score(): the configured one, or by device when 0. On a CPU,
        cache-sized chunks win: 16 MB scored 1,266 users/s against 656 for 256 MB (20k items,
        2 threads); a GPU wants large chunks."""
        if self.config.score_memory_mb:
            return self.config.score_memory_mb
        return 256 if device.type == "cuda" else 16

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """[B, I]: GMF as one matmul; the MLP's first layer split into user and item halves,
        broadcast over all items in user chunks that keep [chunk, I, h1] within score_memory_mb."""
        users = users.to(self.output.weight.device)
        w = self.output.weight[0]
        scores = self.output.bias.expand(len(users), self.n_items).clone()
        if self.uses_gmf:
            g = self.config.gmf_dim
            scores += (self.gmf_user(users) * w[:g]) @ self.gmf_item.weight.T
        if self.uses_mlp:
            first = self.mlp[0]
            d = self.config.mlp_dim
            user_part = self.mlp_user(users) @ first.weight[:, :d].T + first.bias  # [B, h1]
            item_part = self.mlp_item.weight @ first.weight[:, d:].T  # [I, h1]
            w_mlp = w[self.config.gmf_dim if self.uses_gmf else 0 :]
            per_user = self.n_items * max(self.config.mlp_layers) * 4 * 2
            chunk = min(len(users), max(1, self.score_memory_mb(users.device) * 2**20 // per_user))
            # One buffer per layer, reused by every chunk: fresh multi-MB temporaries per chunk cost
            # page faults on CPU that made scoring several times slower than the arithmetic.
            buffers = None if self.training else [
                torch.empty(chunk * self.n_items, width, device=w.device, dtype=w.dtype) for width in self.config.mlp_layers
            ]
            for start in range(0, len(users), chunk):
                part = user_part[start : start + chunk]
                if buffers is None:  # training mode, dropout active: the autograd-style path
                    hidden = self.mlp_tower(part[:, None, :] + item_part[None])
                else:
                    hidden = self.mlp_tower_into(part, item_part, buffers)
                scores[start : start + chunk] += hidden @ w_mlp
        return scores

    def mlp_tower_into(self, user_part: torch.Tensor, item_part: torch.Tensor, buffers: list[torch.Tensor]) -> torch.Tensor:
        """mlp_tower (eval mode) of user_part [c, h1] broadcast over item_part [I, h1], computed in
        the preallocated `buffers` (one [>= c * I, width] per layer): [c, I, last width]."""
        c, n = len(user_part), len(item_part)
        x = buffers[0][: c * n].view(c, n, -1)
        torch.add(user_part[:, None, :], item_part[None], out=x)
        x = x.relu_().view(c * n, -1)
        for layer, buffer in zip(list(self.mlp)[1:], buffers[1:]):
            y = buffer[: c * n]
            torch.addmm(layer.bias, x, layer.weight.T, out=y)
            x = y.relu_()
        return x.view(c, n, -1)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        users, items, weights = self.rows_of(batch)
        if self._keys.device != users.device:
            self._indptr, self._keys = self._indptr.to(users.device), self._keys.to(users.device)
        negatives = sample_negatives(users, self.config.num_negatives, self._indptr, self._keys, self.n_items)
        logits = self(users, torch.cat([items[:, None], negatives], 1))  # [B, 1 + n]
        pos, neg = logits[:, :1], logits[:, 1:]
        if self.config.loss == "bce":
            pos_loss = F.binary_cross_entropy_with_logits(pos[:, 0], torch.ones_like(pos[:, 0]), reduction="none")
            neg_loss = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none").sum(1)
            loss = ((weights * pos_loss + neg_loss) / (1 + self.config.num_negatives)).mean()
        else:
            loss = (weights[:, None] * -F.logsigmoid(pos - neg)).mean()
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(users))
        return loss

    # -- NeuMF pre-training -------------------------------------------------------------------
    def fit(self, data, trainer: pl.Trainer | None = None, ckpt_path: str | None = None) -> "NCF":
        """NeuMF with pretrain=true first trains its GMF and MLP towers (not when resuming)."""
        if self.config.pretrain and self.config.variant == "neumf" and ckpt_path is None:
            self.pretrain_towers(data, trainer)
        return super().fit(data, trainer=trainer, ckpt_path=ckpt_path)

    def pretrain_towers(self, data, trainer: pl.Trainer | None = None) -> dict[str, "NCF"]:
        """Train a GMF and an MLP (pretrain_epochs each), then copy them into this NeuMF with the
        output layer alpha * h_gmf ++ (1 - alpha) * h_mlp (He et al. 2017, section 3.4.1). Returns
        the towers {"gmf": NCF, "mlp": NCF}. The paper then trains NeuMF with SGD; deeprec keeps Adam."""
        accelerator = "cpu"
        if trainer is not None and trainer.strategy.root_device.type == "cuda":
            accelerator = "gpu"
        towers = {}
        hp = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("name", "variant", "pretrain")}
        for offset, variant in enumerate(("gmf", "mlp")):
            pl.seed_everything(self.seed * 7919 + offset, verbose=False)
            tower = NCF(self.n_users, self.n_items, seed=self.seed + offset + 1, variant=variant, pretrain=False, **hp)
            tower.fit(data, trainer=pl.Trainer(
                max_epochs=self.config.pretrain_epochs, accelerator=accelerator, devices=1, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            ))
            towers[variant] = tower.cpu()
        gmf, mlp = towers["gmf"], towers["mlp"]
        alpha = self.config.pretrain_alpha
        with torch.no_grad():
            self.gmf_user.weight.copy_(gmf.gmf_user.weight)
            self.gmf_item.weight.copy_(gmf.gmf_item.weight)
            self.mlp_user.weight.copy_(mlp.mlp_user.weight)
            self.mlp_item.weight.copy_(mlp.mlp_item.weight)
            for mine, theirs in zip(self.mlp, mlp.mlp):
                mine.load_state_dict(theirs.state_dict())
            self.output.weight.copy_(torch.cat([alpha * gmf.output.weight, (1 - alpha) * mlp.output.weight], 1))
            self.output.bias.copy_(alpha * gmf.output.bias + (1 - alpha) * mlp.output.bias)
        return towers
