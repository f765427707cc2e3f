"""What the classic baselines share: the user x item history each one scores from, and sparse
tensors on the scoring device.

The history is the train split after fit(); observe(data, splits) replaces it with the splits the
evaluator names (train + valid when testing), so a user's known items feed the score.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.errors import DataError
from deeprec.online import set_entries
from deeprec.recommender import Recommender, csr_to_tensors, tensors_to_csr


def sparse_tensor(matrix: sp.spmatrix, device, dtype=torch.float32) -> torch.Tensor:
    """A scipy matrix as a coalesced torch sparse COO tensor on `device` (torch.sparse.mm runs on CPU and CUDA)."""
    coo = sp.coo_matrix(matrix)
    index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(np.asarray(coo.data)).to(dtype)
    return torch.sparse_coo_tensor(index, values, coo.shape, device=device, check_invariants=False).coalesce()


def sparse_product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left @ right for two sparse COO tensors, as a dense tensor (torch's beta-CSR warning silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse.mm(left, right).to_dense()


class HistoryRecommender(Recommender):
    """A Recommender that scores from each user's known items (`self.history`, CSR [U, I]).

    Its config has a `binary` field: the history holds 1.0 for every interaction instead of the rating.
    """

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.history = sp.csr_matrix((self.n_users, self.n_items), dtype=np.float32)

    def check_data(self, data) -> None:
        """A model that weighs interactions by their rating learns nothing when every train rating is 0."""
        if self.config.binary:
            return
        ratings = data.rows("train")["rating"].to_numpy()
        if len(ratings) and not (ratings != 0).any():
            raise DataError(f"model={self.name}: every train rating is 0 ({len(ratings)} rows); model={self.name} weighs "
                            "each interaction by its rating, so it has nothing to learn: give model.binary=true "
                            "(every interaction counts 1) or ratings above 0")

    def history_matrix(self, data, splits) -> sp.csr_matrix:
        """The user x item matrix of `splits`: ratings, or 1.0 when the config has binary=True."""
        if splits == "train":
            self.check_data(data)
        matrix = data.matrix(splits, binary=self.config.binary)
        matrix.eliminate_zeros()
        return matrix

    def observe(self, data, splits: tuple[str, ...]) -> None:
        if splits:
            self.history = self.history_matrix(data, splits)
            self.history_changed()

    def history_changed(self) -> None:
        """Hook: refresh what depends on the history (e.g. a user-user similarity). Default: nothing."""

    # -- online learning ----------------------------------------------------------------------
    def add_users(self, count: int) -> bool:
        """New users with empty history rows; the scores of a user follow from their history."""
        self.history = set_entries(self.history, [], [], [], self.n_users + count)
        self.n_users += count
        self.users_added(count)
        return True

    def learn_online(self, users, items, rewards, timestamps) -> None:
        """Each (user, item) of the history takes the latest event's reward (1.0 where the model is
        binary); a reward <= 0 takes the item out of the model's input. Then history_rows_changed."""
        values = rewards.cpu().numpy().astype(np.float32).clip(min=0.0)
        if self.config.binary:
            values = (values > 0).astype(np.float32)
        users_np = users.cpu().numpy()
        self.history = set_entries(self.history, users_np, items.cpu().numpy(), values)
        self.history_rows_changed(np.unique(users_np))

    def users_added(self, count: int) -> None:
        """Hook: grow per-user state beyond the history by `count` rows. Default: nothing."""

    def history_rows_changed(self, users: np.ndarray) -> None:
        """Hook: refresh what depends on the history rows of `users` [T]. Default: nothing (scores read the rows)."""

    def history_rows(self, users: torch.Tensor) -> torch.Tensor:
        """Dense history rows [B, I] float32 on self.device."""
        rows = self.history[users.detach().cpu().numpy()]
        return torch.from_numpy(np.asarray(rows.todense(), dtype=np.float32)).to(self.device)

    def item_weights(self, items: torch.Tensor) -> torch.Tensor | None:
        """[B, I] dense: how much each known item i adds per unit of x_ui to the score of items[b]
        (an item-item model's column); None for models that do not score that way."""
        return None

    @torch.no_grad()
    def explain(self, users: torch.Tensor, items: torch.Tensor, top: int = 3) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(history items [B, top], weights [B, top]): the known items with the largest share x_ui w_ij of
        the score of items[b] (item-item models); shares of the positive part, -1 / 0 pads."""
        weights = self.item_weights(items.detach().cpu())
        if weights is None:
            return None
        part = (self.history_rows(users).cpu() * weights).clamp(min=0)
        part = part / part.sum(1, keepdim=True).clamp(min=1e-12)
        values, index = torch.topk(part, min(top, part.shape[1]), dim=1)
        index = torch.where(values > 0, index, -1)
        if index.shape[1] < top:
            index = torch.cat([index, index.new_full((len(index), top - index.shape[1]), -1)], 1)
            values = torch.cat([values, values.new_zeros(len(values), top - values.shape[1])], 1)
        return index, values

    def history_state(self) -> dict[str, torch.Tensor]:
        return csr_to_tensors(self.history, "history")

    def load_history_state(self, state: dict[str, torch.Tensor]) -> None:
        self.history = tensors_to_csr(state, "history")
