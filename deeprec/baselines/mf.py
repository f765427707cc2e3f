"""Implicit-feedback matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008).

Loss: sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2), p_ui = 1[r_ui > 0], c_ui = 1 + alpha r_ui.
Each half-step solves every user's (or item's) k x k normal equations at once as a batched
torch.linalg.solve on [B, k, k] matrices built with the Y'Y + Y'(C_u - I)Y trick: Y'Y once, and
Y'(C_u - I)Y from each row's gathered items as one batched product; the only Python loops run
over iterations and over chunks of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.baselines.history import HistoryRecommender
from deeprec.config import DTYPES, check_at_least, check_choice, resolve_dtype
from deeprec.console import progress
from deeprec.errors import DataError
from deeprec.recommender import ModelConfig


@dataclass
class ALSConfig(ModelConfig):
    name: str = "mf"
    factors: int = 64
    regularization: float = 50.0  # reg in the loss above (TUNING.md: the best on valid for synthetic and coursera)
    alpha: float = 1.0  # confidence c_ui = 1 + alpha r_ui
    iterations: int = 15  # each one solves all users, then all items
    binary: bool = False  # r_ui = 1 for every interaction instead of the rating
    init_scale: float = 0.01  # item factors start as N(0, init_scale^2), drawn from the run's seed
    batch_size: int = 4096  # rows per batched solve (memory ~ batch_size x k^2)
    max_chunk_entries: int = 262144  # rows x padded row length per gathered block (memory ~ this x k x 2)
    track_loss: bool = False  # record the full loss after every half-step in loss_history (costs O(nnz k))
    dtype: str = "float32"  # float32 | float64

    def check(self) -> "ALSConfig":
        check_choice(self.dtype, DTYPES, "model.dtype")
        check_at_least(self, ("factors", "batch_size", "max_chunk_entries"))
        return self


def length_sorted_chunks(counts: np.ndarray, max_rows: int, max_entries: int) -> list[np.ndarray]:
    """Row indices sorted by their number of entries, cut into chunks of at most `max_rows` rows whose
    padded size (rows x the chunk's longest row) stays within `max_entries` (a long row gets its own)."""
    order = np.argsort(counts, kind="stable")
    sorted_counts = counts[order]
    chunks, start = [], 0
    while start < len(order):
        # rows start..end-1 fit when (end - start) * sorted_counts[end - 1] <= max_entries (monotone in end)
        limit = min(start + max_rows, len(order))
        fits = (np.arange(start + 1, limit + 1) - start) * np.maximum(sorted_counts[start:limit], 1) <= max_entries
        end = start + max(int(np.argmin(fits)) if not fits.all() else len(fits), 1)
        chunks.append(order[start:end])
        start = end
    return chunks


def normal_equations(
    weights: sp.csr_matrix, rows: np.ndarray, fixed: torch.Tensor, alpha: float, regularization: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B, k, k], b [B, k]) of `rows` of `weights` (CSR [N, M], r > 0) against `fixed` [M, k].

    A_u = Y'Y + sum_{i in N(u)} alpha r_ui y_i y_i' + reg I, b_u = sum_{i in N(u)} (1 + alpha r_ui) y_i:
    each row's items are gathered into a zero-padded [B, L, k] block, so the sum over N(u) is one
    batched matrix product (rows of similar length share a chunk, so padding stays small).
    """
    device, dtype = fixed.device, fixed.dtype
    k = fixed.shape[1]
    counts = np.diff(weights.indptr)[rows]
    width = max(int(counts.max(initial=0)), 1)
    offsets = np.arange(width)
    present = offsets[None, :] < counts[:, None]
    positions = np.where(present, weights.indptr[rows][:, None] + offsets[None, :], 0)
    items = torch.from_numpy(weights.indices[positions].astype(np.int64)).to(device)
    ratings = np.where(present, weights.data[positions], 0.0)
    ratings = torch.from_numpy(ratings).to(device, dtype)
    present = torch.from_numpy(present).to(device, dtype)
    gathered = fixed[items]  # [B, L, k]
    a = torch.bmm((gathered * (alpha * ratings).unsqueeze(2)).transpose(1, 2), gathered)
    a += fixed.T @ fixed + regularization * torch.eye(k, device=device, dtype=dtype)
    b = torch.bmm(((1.0 + alpha * ratings) * present).unsqueeze(1), gathered).squeeze(1)
    return a, b


def solve_side(
    weights: sp.csr_matrix, fixed: torch.Tensor, alpha: float, regularization: float, batch_size: int, max_entries: int
) -> torch.Tensor:
    """factors [N, k]: the exact minimiser of the loss for every row of `weights` [N, M] given `fixed` [M, k]."""
    out = torch.empty(weights.shape[0], fixed.shape[1], device=fixed.device, dtype=fixed.dtype)
    for rows in length_sorted_chunks(np.diff(weights.indptr), batch_size, max_entries):
        a, b = normal_equations(weights, rows, fixed, alpha, regularization)
        out[torch.from_numpy(rows).to(fixed.device)] = torch.linalg.solve(a, b.unsqueeze(2)).squeeze(2)
    return out


def implicit_loss(
    weights: sp.csr_matrix, users: torch.Tensor, items: torch.Tensor, alpha: float, regularization: float, chunk: int = 1 << 20
) -> float:
    """The full HKV loss over all U x I pairs, in O(nnz k + (U + I) k^2): sum of s^2 over all pairs
    is trace((X'X)(Y'Y)); observed pairs then swap their s^2 for c (1 - s)^2."""
    total = float(((users.T @ users) * (items.T @ items)).sum())
    coo = weights.tocoo()
    for start in range(0, coo.nnz, chunk):
        rows = torch.from_numpy(coo.row[start : start + chunk].astype(np.int64)).to(users.device)
        cols = torch.from_numpy(coo.col[start : start + chunk].astype(np.int64)).to(users.device)
        r = torch.from_numpy(coo.data[start : start + chunk]).to(users.device, users.dtype)
        s = (users[rows] * items[cols]).sum(1)
        total += float(((1.0 + alpha * r) * (1.0 - s) ** 2 - s**2).sum())
    return total + regularization * float((users**2).sum() + (items**2).sum())


class ALS(HistoryRecommender):
    """score(u, j) = x_u . y_j with factors from implicit ALS; observe() folds in user factors."""

    name = "mf"
    config_class = ALSConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.dtype = resolve_dtype(self.config.dtype)
        self.user_factors = torch.zeros(self.n_users, self.config.factors, dtype=self.dtype)
        self.item_factors = torch.zeros(self.n_items, self.config.factors, dtype=self.dtype)
        self.loss_history: list[float] = []

    def fit(self, data, trainer=None, ckpt_path=None) -> "ALS":
        """Alternate exact user and item solves on self.device (set by to(); the run's `device`); with
        track_loss, loss_history holds the loss after every half-step."""
        self.n_users, self.n_items = data.n_users, data.n_items
        dtype = self.dtype
        weights = self.history_matrix(data, "train")
        if weights.nnz and weights.data.min() < 0:
            raise DataError(f"model=mf needs non-negative ratings (confidence 1 + alpha r); found {weights.data.min()}")
        weights_t = weights.T.tocsr()
        generator = torch.Generator().manual_seed(self.seed)
        items = torch.randn(self.n_items, self.config.factors, generator=generator, dtype=dtype) * self.config.init_scale
        items = items.to(self.device)
        users = torch.zeros(self.n_users, self.config.factors, dtype=dtype, device=self.device)
        self.loss_history = []
        self._track_loss(weights, users, items)
        for _ in progress(range(self.config.iterations), "mf: ALS iterations"):
            users = self.solve(weights, items)
            self._track_loss(weights, users, items)
            items = self.solve(weights_t, users)
            self._track_loss(weights, users, items)
        self.item_factors = items
        self.history = weights
        self.user_factors = self.solve(weights, items)
        return self

    def solve(self, weights: sp.csr_matrix, fixed: torch.Tensor) -> torch.Tensor:
        """One half-step: the exact factors of every row of `weights` given the other side `fixed`."""
        c = self.config
        return solve_side(weights, fixed, c.alpha, c.regularization, c.batch_size, c.max_chunk_entries)

    def _track_loss(self, weights: sp.csr_matrix, users: torch.Tensor, items: torch.Tensor) -> None:
        if self.config.track_loss:
            self.loss_history.append(implicit_loss(weights, users, items, self.config.alpha, self.config.regularization))

    def history_changed(self) -> None:
        """Fold-in: every user's exact factor for the new history, item factors fixed (one user half-step)."""
        self.user_factors = self.solve(self.history, self.item_factors)

    def users_added(self, count: int) -> None:
        self.user_factors = torch.cat([self.user_factors, self.user_factors.new_zeros(count, self.config.factors)])

    def history_rows_changed(self, users: np.ndarray) -> None:
        """Online fold-in: the exact factors of the users whose history changed, item factors fixed."""
        self.user_factors[torch.from_numpy(users).to(self.device)] = self.solve(self.history[users], self.item_factors)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users.to(self.device)] @ self.item_factors.T).float()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors, **self.history_state()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.user_factors = state["user_factors"].to(self.device)
        self.item_factors = state["item_factors"].to(self.device)
        if "history.shape" in state:  # checkpoints before online fold-in carried no history
            self.load_history_state(state)
