"""EASE (Steck 2019): a closed-form item-item linear autoencoder with a zero diagonal.

B = I - P diagMat(1 / diag(P)), P = (X'X + l2 I)^-1, then diag(B) = 0; score(u) = x_u B.
The dense I x I inverse is a Cholesky factorisation in torch (CPU or GPU), refused up front when
it would not fit the configured memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deeprec.baselines.history import HistoryRecommender
from deeprec.config import DTYPES, check_choice, resolve_dtype
from deeprec.errors import ConfigError
from deeprec.recommender import ModelConfig


@dataclass
class EASEConfig(ModelConfig):
    name: str = "ease"
    l2: float = 200.0  # lambda on the diagonal of X'X
    binary: bool = True  # X as 0/1 (Steck's setting) instead of the ratings
    dtype: str = "float32"  # float32 | float64 for the inversion
    max_dense_gb: float = 8.0  # refuse when the ~3 dense I x I matrices of the fit exceed this
    chunk_size: int = 2048  # item columns per block of the sparse Gram product X'X

    def check(self) -> "EASEConfig":
        check_choice(self.dtype, DTYPES, "model.dtype")
        return self


def ease_weights(gram: torch.Tensor, l2: float) -> torch.Tensor:
    """B [I, I] from the Gram matrix X'X [I, I] (overwritten): B_ij = -P_ij / P_jj, B_jj = 0."""
    gram.diagonal().add_(l2)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        raise ConfigError(f"model.l2={l2}: X'X + l2 I is not positive definite; use a larger l2 (> 0)")
    precision = torch.cholesky_inverse(factor)
    precision /= -precision.diagonal().clone().unsqueeze(0)
    precision.diagonal().zero_()
    return precision


class EASE(HistoryRecommender):
    """score(u, j) = sum_i x_ui B_ij over the user's known items (train, or train + valid when testing)."""

    name = "ease"
    config_class = EASEConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.dtype = resolve_dtype(self.config.dtype)
        self.weights = torch.zeros(0, 0)  # [n_items, n_items] after fit: never allocated before the memory check

    def dense_gb(self, n_items: int) -> float:
        """Memory of the fit: the Gram matrix, its Cholesky factor and the inverse, I x I each."""
        return 3 * n_items**2 * torch.finfo(self.dtype).bits / 8 / 1e9

    def check_data(self, data) -> None:
        """The memory check, before anything of size I x I exists (and the zero-ratings check)."""
        super().check_data(data)
        need = self.dense_gb(data.n_items)
        if need > self.config.max_dense_gb:
            raise ConfigError(
                f"model=ease: {data.n_items} items need about {need:.1f} GB of dense I x I matrices, over "
                f"model.max_dense_gb={self.config.max_dense_gb}; raise max_dense_gb, filter rare items, or use itemknn/mf"
            )

    def fit(self, data, trainer=None, ckpt_path=None) -> "EASE":
        """Closed form on self.device (set by to(); the run's `device`)."""
        self.check_data(data)
        self.n_users, self.n_items = data.n_users, data.n_items
        self.history = self.history_matrix(data, "train")
        self.weights = ease_weights(self.gram(), self.config.l2)
        return self

    def gram(self) -> torch.Tensor:
        """X'X [I, I] dense on the fit device, built chunk_size item columns at a time so the sparse
        intermediate of the product never holds more than I x chunk_size entries."""
        x = self.history.astype(np.float64 if self.config.dtype == "float64" else np.float32)
        xt, x_columns = x.T.tocsr(), x.tocsc()
        gram = torch.empty(self.n_items, self.n_items, dtype=self.dtype, device=self.device)
        for start in range(0, self.n_items, self.config.chunk_size):
            stop = min(start + self.config.chunk_size, self.n_items)
            gram[:, start:stop] = torch.from_numpy((xt @ x_columns[:, start:stop]).toarray())
        return gram

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return (self.history_rows(users).to(self.weights.dtype) @ self.weights).float()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, **self.history_state()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"].to(self.device)
        self.load_history_state(state)
