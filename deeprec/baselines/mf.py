"""Implicit-feedback matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008).

Loss: sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (|X|^2 + |Y|^2), p_ui = 1[r_ui > 0], c_ui = 1 + alpha r_ui.
Each half-step solves every user's (or item's) k x k normal equations at once as a batched
torch.linalg.solve on [B, k, k] matrices built with the Y'Y + Y'(C_u - I)Y trick from sparse
products; the only Python loops run over iterations and over chunks of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.baselines.history import HistoryRecommender, resolve_device, sparse_tensor
from deeprec.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class ALSConfig:
    name: str = "mf"
    factors: int = 64
    regularization: float = 10.0  # reg in the loss above (tuned on ml-latest-small valid)
    alpha: float = 1.0  # confidence c_ui = 1 + alpha r_ui
    iterations: int = 15  # each one solves all users, then all items
    binary: bool = False  # r_ui = 1 for every interaction instead of the rating
    init_scale: float = 0.01  # item factors start as N(0, init_scale^2)
    seed: int = 0
    batch_size: int = 2048  # rows per batched solve, and fixed-side rows per k^2 block (memory ~ batch_size x k^2)
    dtype: str = "float32"  # float32 | float64
    fit_device: str = "cpu"  # cpu | cuda | auto


def normal_equations(
    weights: sp.csr_matrix, fixed: torch.Tensor, alpha: float, regularization: float, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B, k, k], b [B, k]) of the rows of `weights` (CSR [B, M] of r > 0) against `fixed` [M, k].

    A_u = Y'Y + sum_{i in N(u)} alpha r_ui y_i y_i' + reg I, b_u = sum_{i in N(u)} (1 + alpha r_ui) y_i.
    The sum over N(u) is the sparse product (alpha R)[B, block] @ (y_i y_i')[block, k^2] over blocks
    of the fixed side, so memory stays at block_size x k^2.
    """
    device, dtype = fixed.device, fixed.dtype
    k = fixed.shape[1]
    a = (fixed.T @ fixed + regularization * torch.eye(k, device=device, dtype=dtype)).expand(weights.shape[0], k, k)
    a = a.reshape(weights.shape[0], k * k).clone()
    weights_csc = weights.tocsc()
    for start in range(0, fixed.shape[0], block_size):
        stop = min(start + block_size, fixed.shape[0])
        block = weights_csc[:, start:stop]
        if block.nnz == 0:
            continue
        y = fixed[start:stop]
        outer = (y.unsqueeze(2) * y.unsqueeze(1)).reshape(stop - start, k * k)
        a += alpha * torch.sparse.mm(sparse_tensor(block, device, dtype), outer)
    ratings = sparse_tensor(weights, device, dtype)
    confidence = torch.sparse_coo_tensor(ratings.indices(), 1.0 + alpha * ratings.values(), ratings.shape, check_invariants=False)
    b = torch.sparse.mm(confidence, fixed)
    return a.reshape(-1, k, k), b


def solve_side(
    weights: sp.csr_matrix, fixed: torch.Tensor, alpha: float, regularization: float, batch_size: int
) -> torch.Tensor:
    """factors [N, k]: the exact minimiser of the loss for every row of `weights` [N, M] given `fixed` [M, k]."""
    out = torch.empty(weights.shape[0], fixed.shape[1], device=fixed.device, dtype=fixed.dtype)
    for start in range(0, weights.shape[0], batch_size):
        stop = min(start + batch_size, weights.shape[0])
        a, b = normal_equations(weights[start:stop], fixed, alpha, regularization, batch_size)
        out[start:stop] = torch.linalg.solve(a, b.unsqueeze(2)).squeeze(2)
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

    def __init__(self, n_users: int = 0, n_items: int = 0, **config) -> None:
        super().__init__(n_users, n_items, **config)
        self.hp = ALSConfig(**config)
        if self.hp.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.hp.dtype!r} is not valid; choose one of {list(DTYPES)}")
        if self.hp.factors < 1 or self.hp.batch_size < 1:
            raise ConfigError("model.factors and model.batch_size must be positive integers")
        dtype = DTYPES[self.hp.dtype]
        self.user_factors = torch.zeros(n_users, self.hp.factors, dtype=dtype)
        self.item_factors = torch.zeros(n_items, self.hp.factors, dtype=dtype)
        self.loss_history: list[float] = []

    def fit(self, data, trainer=None) -> "ALS":
        """Alternate exact user and item solves; loss_history holds the loss after every half-step."""
        self.n_users, self.n_items = data.n_users, data.n_items
        self.device = resolve_device(self.hp.fit_device)
        dtype = DTYPES[self.hp.dtype]
        weights = self.history_matrix(data, "train")
        weights_t = weights.T.tocsr()
        generator = torch.Generator().manual_seed(self.hp.seed)
        items = (torch.randn(self.n_items, self.hp.factors, generator=generator, dtype=dtype) * self.hp.init_scale).to(self.device)
        users = torch.zeros(self.n_users, self.hp.factors, dtype=dtype, device=self.device)
        hp = self.hp
        self.loss_history = [implicit_loss(weights, users, items, hp.alpha, hp.regularization)]
        for _ in range(hp.iterations):
            users = solve_side(weights, items, hp.alpha, hp.regularization, hp.batch_size)
            self.loss_history.append(implicit_loss(weights, users, items, hp.alpha, hp.regularization))
            items = solve_side(weights_t, users, hp.alpha, hp.regularization, hp.batch_size)
            self.loss_history.append(implicit_loss(weights, users, items, hp.alpha, hp.regularization))
        self.item_factors = items
        self.history = weights
        self.user_factors = solve_side(weights, items, hp.alpha, hp.regularization, hp.batch_size)
        return self

    def history_changed(self) -> None:
        """Fold-in: every user's exact factor for the new history, item factors fixed (one user half-step)."""
        self.user_factors = solve_side(
            self.history, self.item_factors, self.hp.alpha, self.hp.regularization, self.hp.batch_size
        )

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return (self.user_factors[users.to(self.device)] @ self.item_factors.T).float()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.user_factors = state["user_factors"].to(self.device)
        self.item_factors = state["item_factors"].to(self.device)
