"""The one interface every recommender implements (deep, classic, bandit).

Evaluation and scoring call only these methods, so they never special-case a model.
A recommender's state is a flat dict of tensors (plus JSON-able config), so checkpoints load
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

if TYPE_CHECKING:
    from deeprec.data.interactions import InteractionData


class Recommender(ABC):
    """fit on InteractionData; score(users) -> [B, n_items]; state as tensors for save/load."""

    #: the registry name (conf/model/<name>.yaml)
    name: str = ""

    def __init__(self, n_users: int = 0, n_items: int = 0, **config: Any) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.config = dict(config)
        self.device = torch.device("cpu")

    # -- training ------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, data: "InteractionData", trainer=None) -> "Recommender":
        """Learn from data's train split (valid for early stopping); `trainer` for Lightning models."""

    # -- inference -----------------------------------------------------------------------------
    def observe(self, data: "InteractionData", splits: tuple[str, ...]) -> None:
        """Condition on the users' known history (the given splits) before scoring.

        History-based models (sequences, autoencoders) read their inputs here; others ignore it.
        """

    @abstractmethod
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """scores: [B, n_items] float for user indices `users` [B] (higher is better)."""

    def eval(self) -> "Recommender":
        """Inference mode (no dropout); a no-op for models without one. torch models inherit nn.Module's."""
        return self

    def to(self, device: str | torch.device) -> "Recommender":
        """Move the tensors used by `score` to `device`."""
        self.device = torch.device(device)
        state = self.state_tensors()
        if state:
            self.load_state_tensors({k: v.to(self.device) for k, v in state.items()})
        return self

    # -- online learning (deeprec-serve's feedback loop) ---------------------------------------
    def add_users(self, count: int) -> bool:
        """Make room for `count` new users with no history, at indices n_users .. n_users + count - 1.

        Returns whether score() ranks them from their own (online) state. The default, for models whose
        per-user parameters only fit() learns, adds nothing and returns False: callers serve such
        users a fallback.
        """
        return False

    def learn_online(self, users: torch.Tensor, items: torch.Tensor, rewards: torch.Tensor,
                     timestamps: torch.Tensor) -> None:
        """Fold new events into the state without retraining, in the order given, so the next score() reflects them.

        users, items: [E] int64 indices; rewards: [E] float64; timestamps: [E] float64 epoch seconds.
        The result depends only on the sequence of events, not on how it is cut into calls (a service
        replays its log in large blocks). Default: nothing (scores that only fit() changes).
        """

    def explain(self, users: torch.Tensor, items: torch.Tensor, top: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """(history items [B, top] int64, weights [B, top]): what made user b's score of items[b].

        -1 and weight 0 where there is nothing to show; the default, for models that cannot explain.
        """
        return torch.full((len(users), top), -1, dtype=torch.int64), torch.zeros(len(users), top)

    # -- persistence ---------------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything `score` needs, as named tensors."""

    @abstractmethod
    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors."""

    def init_args(self) -> dict[str, Any]:
        """Constructor arguments (ints, floats, strings, lists) to rebuild an empty instance."""
        return {"n_users": self.n_users, "n_items": self.n_items, **self.config}

    # -- shared helpers ------------------------------------------------------------------------
    @staticmethod
    def rows_as_dense(matrix: sp.csr_matrix, users: torch.Tensor, device) -> torch.Tensor:
        """Dense [B, n_items] float32 rows of a CSR matrix for a batch of users."""
        rows = matrix[users.detach().cpu().numpy()]
        return torch.from_numpy(np.asarray(rows.todense(), dtype=np.float32)).to(device)


def csr_to_tensors(matrix: sp.csr_matrix, prefix: str) -> dict[str, torch.Tensor]:
    """A CSR matrix as three tensors (for state dicts that load with weights_only=True)."""
    m = sp.csr_matrix(matrix)
    return {
        f"{prefix}.indptr": torch.from_numpy(m.indptr.astype(np.int64)),
        f"{prefix}.indices": torch.from_numpy(m.indices.astype(np.int64)),
        f"{prefix}.data": torch.from_numpy(m.data.astype(np.float32)),
        f"{prefix}.shape": torch.tensor(m.shape, dtype=torch.int64),
    }


def tensors_to_csr(state: dict[str, torch.Tensor], prefix: str) -> sp.csr_matrix:
    """Inverse of csr_to_tensors."""
    shape = tuple(int(x) for x in state[f"{prefix}.shape"].tolist())
    return sp.csr_matrix(
        (
            state[f"{prefix}.data"].cpu().numpy(),
            state[f"{prefix}.indices"].cpu().numpy(),
            state[f"{prefix}.indptr"].cpu().numpy(),
        ),
        shape=shape,
    )
