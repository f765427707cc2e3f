"""Neighbourhood baselines: item-based CF exactly as SPEC 1.11, and user-based CF.

Both build a sparse top-k cosine similarity in chunks: each chunk's similarity block comes from
one sparse product, then torch.topk keeps the k nearest per row; no loop over items or users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.baselines.history import HistoryRecommender, sparse_product, sparse_tensor
from deeprec.config import check_choice
from deeprec.console import progress
from deeprec.recommender import ModelConfig, csr_to_tensors, tensors_to_csr


def cosine_neighbours(
    vectors: sp.csr_matrix,
    neighbours: int,
    min_similarity: float = 0.0,
    shrink: float = 0.0,
    chunk_size: int = 1024,
    rows: np.ndarray | None = None,
) -> sp.csr_matrix:
    """sim: CSR [N, N] where row n keeps the `neighbours` largest cosine similarities of vectors[n]
    to the other rows (itself excluded), each >= min_similarity; with `rows` [R], only those rows: [R, N].

    sim(n, m) = <v_n, v_m> / (|v_n| |v_m| + shrink); rows of zeros have no neighbours.
    Memory is bounded by chunk_size x N float32 (one dense block of the similarity at a time).
    """
    vectors = sp.csr_matrix(vectors, dtype=np.float32)
    n = vectors.shape[0]
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1), dtype=np.float64).ravel())
    if shrink == 0:  # plain cosine: normalise once, then each block is a plain product
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        vectors = sp.csr_matrix(sp.diags(inverse.astype(np.float32)) @ vectors)
    transposed = vectors.T.tocsr()
    keep = min(neighbours, max(n - 1, 0))
    queries = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    rows, cols, values = [], [], []
    for start in progress(range(0, len(queries), chunk_size), "knn: similarity blocks"):
        stop = min(start + chunk_size, len(queries))
        query = queries[start:stop]
        block = (vectors[query] @ transposed).toarray()
        if shrink != 0:
            block /= np.outer(norms[query], norms).astype(np.float32) + np.float32(shrink)
        block[np.arange(stop - start), query] = 0.0
        block[block < min_similarity] = 0.0
        if keep == 0:
            continue
        top_values, top_cols = torch.topk(torch.from_numpy(block), keep, dim=1)
        top_values, top_cols = top_values.numpy(), top_cols.numpy()
        nonzero = top_values != 0
        rows.append(np.broadcast_to(np.arange(start, stop)[:, None], top_cols.shape)[nonzero])
        cols.append(top_cols[nonzero])
        values.append(top_values[nonzero])
    if not rows:
        return sp.csr_matrix((len(queries), n), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(len(queries), n), dtype=np.float32
    )


def item_similarity(
    ratings: sp.csr_matrix, neighbours: int, min_similarity: float, shrink: float = 0.0, chunk_size: int = 1024
) -> sp.csr_matrix:
    """sim: CSR [I, I], row i = item i's `neighbours` largest cosine similarities to the other items
    over the users' ratings [U, I], those below min_similarity set to 0 (SPEC 1.11)."""
    return cosine_neighbours(ratings.T.tocsr(), neighbours, min_similarity, shrink, chunk_size)


def itemknn_scores(ratings: sp.csr_matrix, n_known: np.ndarray, similarity: sp.csr_matrix) -> np.ndarray:
    """score: [U, I] float32 = sum_{i in known(u)} sim(i, j) r_ui / |known(u)| (SPEC 1.11), dense, on CPU.

    n_known [U] counts every known item, rated 0 or not: ItemKNN's normalization=count divides by the
    nonzero ratings instead, the same ranking (a per-user factor) but not the SPEC's score.
    """
    scores = np.asarray((ratings @ similarity).todense(), dtype=np.float32)
    return scores / np.maximum(n_known, 1).astype(np.float32)[:, None]


def divide_where_positive(scores: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """scores / weight where weight > 0, else 0 (weight broadcasts against scores [B, I])."""
    return torch.where(weight > 0, scores / weight.clamp(min=1e-12), 0.0)


class NeighbourhoodRecommender(HistoryRecommender):
    """State shared by the kNN models: the pruned similarity (CSR) and the history; `_tensors()`
    rebuilds the device tensors that score() uses from them."""

    def _tensors(self) -> None:
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**csr_to_tensors(self.similarity, "similarity"), **self.history_state()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.similarity = tensors_to_csr(state, "similarity")
        self.load_history_state(state)
        self._tensors()


@dataclass
class ItemKNNConfig(ModelConfig):
    name: str = "itemknn"
    neighbours: int = 64  # each item keeps its k nearest items
    min_similarity: float = 0.001  # similarities below this are set to 0
    shrink: float = 0.0  # added to the cosine denominator (0 = plain cosine, SPEC 1.11)
    binary: bool = False  # 1.0 for every interaction instead of the rating
    normalization: str = "count"  # count: / |train(u)| (SPEC) | similarity: / sum_i |sim(i, j)| | none
    prune: str = "source"  # source: item i keeps its k nearest j | target: item j keeps its k nearest i
    chunk_size: int = 1024  # items per similarity block (memory ~ chunk_size x n_items x 4 bytes)

    def check(self) -> "ItemKNNConfig":
        check_choice(self.normalization, ("count", "similarity", "none"), "model.normalization")
        check_choice(self.prune, ("source", "target"), "model.prune")
        return self


class ItemKNN(NeighbourhoodRecommender):
    """score(u, j) = sum_{i in history(u)} sim(i, j) r_ui / |history(u)| (SPEC 1.11), sim pruned to top-k.

    With prune=source, row i of the pruned similarity holds item i's k nearest neighbours j (the
    "each item keeps its 64 nearest neighbours" of SPEC 1.11); prune=target keeps, for each scored
    item j, its k nearest items i instead (the classic Sarwar/Deshpande neighbourhood).
    """

    name = "itemknn"
    config_class = ItemKNNConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.similarity = sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32)
        self._tensors()

    def fit(self, data, trainer=None, ckpt_path=None) -> "ItemKNN":
        self.n_users, self.n_items = data.n_users, data.n_items
        self.history = self.history_matrix(data, "train")
        c = self.config
        sim = item_similarity(self.history, c.neighbours, c.min_similarity, c.shrink, c.chunk_size)
        self.similarity = sim if self.config.prune == "source" else sim.T.tocsr()
        self._tensors()
        return self

    def _tensors(self) -> None:
        self._sim = sparse_tensor(self.similarity, self.device)
        self._abs_sim = sparse_tensor(abs(self.similarity), self.device)

    def item_weights(self, items: torch.Tensor) -> torch.Tensor:
        """[B, I]: column items[b] of the pruned similarity (the normalisation scales a row, not the shares)."""
        return torch.from_numpy(self.similarity[:, items.numpy()].T.toarray().astype(np.float32))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """[B, I]: sparse history rows times the sparse similarity (a user's few items x their k
        neighbours each), never a dense [B, I] row times the [I, I] matrix."""
        rows = self.history[users.detach().cpu().numpy()]
        known = rows.copy()  # 1 where x_ui != 0
        known.data = (known.data != 0).astype(np.float32)
        scores = sparse_product(sparse_tensor(rows, self.device), self._sim)
        if self.config.normalization == "count":
            counts = torch.from_numpy(np.asarray(known.sum(axis=1), dtype=np.float32)).to(scores.device)  # [B, 1]
            scores = scores / counts.clamp(min=1)
        elif self.config.normalization == "similarity":
            weight = sparse_product(sparse_tensor(known, self.device), self._abs_sim)
            scores = divide_where_positive(scores, weight)
        return scores


@dataclass
class UserKNNConfig(ModelConfig):
    name: str = "userknn"
    neighbours: int = 64  # each user keeps its k nearest users
    min_similarity: float = 0.0  # similarities below this are set to 0
    shrink: float = 0.0  # added to the cosine denominator
    binary: bool = False  # 1.0 for every interaction instead of the rating
    normalization: str = "similarity"  # similarity: / sum_v |sim(u, v)| | none
    chunk_size: int = 1024  # users per similarity block (memory ~ chunk_size x n_users x 4 bytes)

    def check(self) -> "UserKNNConfig":
        check_choice(self.normalization, ("similarity", "none"), "model.normalization")
        return self


class UserKNN(NeighbourhoodRecommender):
    """score(u, j) = sum_{v in N(u)} sim(u, v) r_vj / sum_{v in N(u)} |sim(u, v)|, N(u) = u's k nearest users.

    The denominator runs over all of u's neighbours (not only those who rated j), so an item that
    many close neighbours share ranks above one that a single neighbour rated highly.
    """

    name = "userknn"
    config_class = UserKNNConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.similarity = sp.csr_matrix((self.n_users, self.n_users), dtype=np.float32)
        self.live_neighbours = np.zeros(self.n_users, bool)  # users whose neighbours follow their online events
        self._tensors()

    def fit(self, data, trainer=None, ckpt_path=None) -> "UserKNN":
        self.n_users, self.n_items = data.n_users, data.n_items
        self.history = self.history_matrix(data, "train")
        self.history_changed()
        return self

    def history_changed(self) -> None:
        """Neighbours and their items both come from the history, so a new history means new neighbours."""
        self.live_neighbours = np.zeros(self.history.shape[0], bool)
        self.similarity = cosine_neighbours(
            self.history, self.config.neighbours, self.config.min_similarity, self.config.shrink, self.config.chunk_size
        )
        self._tensors()

    def _tensors(self) -> None:
        self._items = sparse_tensor(self.history, self.device)

    # -- online learning: a user with new events gets neighbours from the current histories ----
    def users_added(self, count: int) -> None:
        self.similarity.resize((self.n_users, self.n_users))
        self.similarity = self.similarity.tocsr()
        self.live_neighbours = np.r_[self.live_neighbours, np.zeros(count, bool)]

    def history_rows_changed(self, users: np.ndarray) -> None:
        """These users' neighbours are computed from the current histories whenever they are scored
        (the others keep their fit-time neighbours), and their items reach their neighbours' scores."""
        self.live_neighbours[users] = True
        self._tensors()

    def neighbour_rows(self, users: np.ndarray) -> sp.csr_matrix:
        """[B, U] neighbour similarities of users: fit-time rows, or fresh ones for users with online events."""
        rows = self.similarity[users]
        live = self.live_neighbours[users]
        if not live.any():
            return rows
        hp = self.config
        fresh = cosine_neighbours(self.history, hp.neighbours, hp.min_similarity, hp.shrink, hp.chunk_size, rows=users[live])
        order = np.argsort(np.r_[np.flatnonzero(~live), np.flatnonzero(live)], kind="stable")
        return sp.vstack([rows[~live], fresh]).tocsr()[order]

    def score(self, users: torch.Tensor) -> torch.Tensor:
        rows = self.neighbour_rows(users.detach().cpu().numpy())
        scores = sparse_product(sparse_tensor(rows, self.device), self._items)
        if self.config.normalization == "similarity":
            weight = torch.from_numpy(np.asarray(abs(rows).sum(axis=1), np.float32)).to(self.device)
            scores = divide_where_positive(scores, weight)
        return scores

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**super().state_tensors(), "live_neighbours": torch.from_numpy(self.live_neighbours.copy())}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        live = state.get("live_neighbours")
        self.live_neighbours = np.zeros(int(state["history.shape"][0]), bool) if live is None else live.cpu().numpy().copy()
        super().load_state_tensors(state)
