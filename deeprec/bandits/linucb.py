"""BatchedLinUCB: one disjoint ridge model per user, held as batched tensors [U, d, d] (SPEC 2.4).

Scores for all users x all arms are two matrix products per user chunk: the mean X θ_u, and the
variance diag(X A_u⁻¹ Xᵀ) as each user's packed A_u⁻¹ (upper triangle, off-diagonals doubled:
d(d+1)/2 numbers) against the row-wise outer products of X. No loop over users, only over chunks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from deeprec.config import check_choice
from deeprec.console import progress
from deeprec.errors import ConfigError
from deeprec.ranking import mask_excluded, topk_with_pads

INVERSE_METHODS = ("auto", "columns", "lapack")


def batched_cholesky(a: torch.Tensor) -> torch.Tensor:
    """L: [B, d, d] lower Cholesky factors of SPD a [B, d, d], column by column in batched tensor ops.

    d steps of batched vector work instead of B small LAPACK calls (which are slow on CPU).
    """
    d = a.shape[-1]
    lower = torch.zeros_like(a)
    for j in range(d):
        col = a[:, j:, j] - torch.einsum("bik,bk->bi", lower[:, j:, :j], lower[:, j, :j])
        pivot = col[:, 0].clamp(min=torch.finfo(a.dtype).tiny).sqrt()
        lower[:, j, j] = pivot
        lower[:, j + 1 :, j] = col[:, 1:] / pivot.unsqueeze(1)
    return lower


def batched_lower_inverse(lower: torch.Tensor) -> torch.Tensor:
    """L⁻¹: [B, d, d] for lower-triangular L [B, d, d], by forward substitution row by row."""
    d = lower.shape[-1]
    inv = torch.zeros_like(lower)
    eye = torch.eye(d, dtype=lower.dtype, device=lower.device)
    for i in range(d):
        row = eye[i].expand(lower.shape[0], d) - torch.einsum("bk,bkj->bj", lower[:, i, :i], inv[:, :i, :])
        inv[:, i, :] = row / lower[:, i, i].unsqueeze(1)
    return inv


def batched_spd_inverse(a: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """a⁻¹: [B, d, d] for SPD a [B, d, d] through a Cholesky factorisation (stable, exact for SPD).

    method: lapack (torch.linalg.cholesky + cholesky_inverse, batched inside torch), columns (the
    same factorisation as d steps of batched tensor ops, for backends without batched LAPACK),
    auto = lapack (measured ~10x faster than columns on CPU for 50k x 16 x 16).
    """
    if a.shape[0] == 0:
        return a.clone()
    if method in ("auto", "lapack"):
        return torch.cholesky_inverse(torch.linalg.cholesky(a))
    inv_lower = batched_lower_inverse(batched_cholesky(a))
    return inv_lower.transpose(1, 2) @ inv_lower


def packed_upper_indices(dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the upper triangle of a d x d matrix: each [d(d+1)/2]."""
    idx = torch.triu_indices(dim, dim, device=device)
    return idx[0], idx[1]


def arm_outer_products(arm_features: torch.Tensor) -> torch.Tensor:
    """Z: [n_arms, d(d+1)/2] with Z[a, (i, j)] = x_ai x_aj for i <= j (the row-wise outer products of X)."""
    rows, cols = packed_upper_indices(arm_features.shape[1], arm_features.device)
    return arm_features[:, rows] * arm_features[:, cols]


def stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """Stable argsort of integer keys [N]; NumPy's radix sort on CPU (~40x faster than torch's there)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys.numpy(), kind="stable"))
    return torch.argsort(keys, stable=True)


class PreparedArms(NamedTuple):
    """Arm features ready for scoring (BatchedLinUCB.prepare_arms)."""

    xt: torch.Tensor  # Xᵀ [d, n_arms]
    zt: torch.Tensor  # Zᵀ [d(d+1)/2, n_arms], the row-wise outer products
    weights: torch.Tensor  # [d(d+1)/2] 1 on the diagonal, 2 off it


class BatchedLinUCB:
    """Disjoint LinUCB for n_users users sharing arm features X [n_arms, d]; state A, b, A⁻¹: [U, d, d] / [U, d].

    A_u = λI + Σ x xᵀ, b_u = Σ r x, θ_u = A_u⁻¹ b_u, p_u = X θ_u + α ∘ sqrt(diag(X A_u⁻¹ Xᵀ)).
    A and b are kept exactly (sums); A⁻¹ follows by Sherman-Morrison and is recomputed from A by a
    batched Cholesky every `reinvert_every` rank-1 updates of a user, so float32 does not drift.
    """

    def __init__(
        self,
        n_users: int,
        dim: int,
        alpha: float = 1.0,
        lam: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        reinvert_every: int = 64,
        max_sherman_morrison_rounds: int | None = None,
        chunk_elements: int = 1 << 24,
        inverse_method: str = "auto",
    ) -> None:
        if lam <= 0:
            raise ConfigError(f"LinUCB lam={lam} is not valid; the ridge term must be > 0")
        check_choice(inverse_method, INVERSE_METHODS, "LinUCB inverse_method")
        if reinvert_every < 1:
            raise ConfigError(f"LinUCB reinvert_every={reinvert_every} is not valid; use an integer >= 1")
        self.n_users, self.dim = int(n_users), int(dim)
        self.alpha, self.lam = float(alpha), float(lam)
        self.device, self.dtype = torch.device(device), dtype
        self.reinvert_every = int(reinvert_every)
        # a user seen more often than this in one batch is re-inverted from A instead (cheaper, exact)
        self.max_sherman_morrison_rounds = max_sherman_morrison_rounds or self.dim
        self.chunk_elements = int(chunk_elements)
        self.inverse_method = inverse_method
        self.reset()

    # -- state ------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Every user back to the prior: A = λI, b = 0, θ = 0."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        self.A = (self.lam * eye).expand(self.n_users, -1, -1).contiguous()
        self.A_inv = (eye / self.lam).expand(self.n_users, -1, -1).contiguous()
        self.b = torch.zeros(self.n_users, self.dim, dtype=self.dtype, device=self.device)
        self.theta = torch.zeros_like(self.b)
        self.updates_since_inverse = torch.zeros(self.n_users, dtype=torch.int64, device=self.device)

    def add_users(self, count: int) -> None:
        """Append `count` users at the prior (A = λI, b = 0), indices n_users .. n_users + count - 1."""
        if count <= 0:
            return
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        self.A = torch.cat([self.A, (self.lam * eye).expand(count, -1, -1)])
        self.A_inv = torch.cat([self.A_inv, (eye / self.lam).expand(count, -1, -1)])
        self.b = torch.cat([self.b, self.b.new_zeros(count, self.dim)])
        self.theta = torch.cat([self.theta, self.theta.new_zeros(count, self.dim)])
        self.updates_since_inverse = torch.cat([self.updates_since_inverse, self.updates_since_inverse.new_zeros(count)])
        self.n_users += count

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Named tensors for a weights_only checkpoint (A_inv and θ are rebuilt from A and b)."""
        return {"A": self.A, "b": self.b, "hyper": torch.tensor([self.alpha, self.lam], dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of state_dict: A, b, then one batched re-inversion."""
        self.A = state["A"].to(self.device, self.dtype).contiguous()
        self.b = state["b"].to(self.device, self.dtype).contiguous()
        self.n_users, self.dim = self.b.shape
        if "hyper" in state:
            self.alpha, self.lam = (float(v) for v in state["hyper"].tolist())
        self.updates_since_inverse = torch.zeros(self.n_users, dtype=torch.int64, device=self.device)
        self.reinvert()

    def to(self, device: str | torch.device) -> "BatchedLinUCB":
        self.device = torch.device(device)
        for key in ("A", "A_inv", "b", "theta", "updates_since_inverse"):
            setattr(self, key, getattr(self, key).to(self.device))
        return self

    def reinvert(self, users: torch.Tensor | None = None) -> None:
        """A⁻¹ and θ recomputed from A and b (all users, or the given user indices)."""
        if users is None:
            self.A_inv = self._inverse(self.A)
            self.theta = torch.einsum("uij,uj->ui", self.A_inv, self.b)
            self.updates_since_inverse.zero_()
            return
        if users.numel() == 0:
            return
        inv = self._inverse(self.A[users])
        self.A_inv[users] = inv
        self.theta[users] = torch.einsum("uij,uj->ui", inv, self.b[users])
        self.updates_since_inverse[users] = 0

    def _inverse(self, a: torch.Tensor) -> torch.Tensor:
        """Batched SPD inverse in chunks (bounds the temporaries of the column-by-column method)."""
        step = max(1, self.chunk_elements // (self.dim * self.dim))
        if a.shape[0] <= step:
            return batched_spd_inverse(a, self.inverse_method)
        return torch.cat([batched_spd_inverse(a[s : s + step], self.inverse_method) for s in range(0, a.shape[0], step)])

    # -- learning ---------------------------------------------------------------------------------
    def _as_inputs(self, users, contexts, rewards) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        users = torch.as_tensor(users, dtype=torch.int64, device=self.device).reshape(-1)
        contexts = torch.as_tensor(contexts, device=self.device).to(self.dtype)
        rewards = torch.as_tensor(rewards, device=self.device).to(self.dtype).reshape(-1)
        if contexts.dim() != 2 or contexts.shape[1] != self.dim:
            raise ConfigError(f"LinUCB contexts have shape {tuple(contexts.shape)}; expected [B, {self.dim}]")
        if not (len(users) == len(contexts) == len(rewards)):
            raise ConfigError(
                f"LinUCB got {len(users)} users, {len(contexts)} contexts and {len(rewards)} rewards; they must be equal"
            )
        if len(users) and (int(users.min()) < 0 or int(users.max()) >= self.n_users):
            raise ConfigError(f"LinUCB user index out of range 0..{self.n_users - 1}")
        return users, contexts, rewards

    def _accumulate(self, users: torch.Tensor, contexts: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """A[u] += D_uᵀD_u and b[u] += D_uᵀr_u for every user in the rows; returns the touched users.

        Each user's rows are zero-padded to a power-of-two count, so the Gram matrices of all users
        of one padded length are one batched matmul [n, L, d+1]ᵀ @ [n, L, d+1] (zero rows add
        nothing; the extra column carries the rewards, giving Dᵀr in the same product). Rows are
        sorted once by (padded length, user), so every block is a contiguous slice: no boolean
        masks, and the loop runs over the log2(max count) lengths and memory-bounded chunks, not users.
        """
        d, device = self.dim, self.device
        _, inverse, counts = torch.unique(users, return_inverse=True, return_counts=True)  # O(rows), not O(users)
        level = torch.ceil(torch.log2(counts.double())).long().index_select(0, inverse)  # padded length 2**level, per row
        order = stable_argsort(level * self.n_users + users)
        sorted_users = users.index_select(0, order)
        rows = torch.cat([contexts, rewards.unsqueeze(1)], 1).index_select(0, order)
        first = torch.ones(len(sorted_users), dtype=torch.bool, device=device)
        first[1:] = sorted_users[1:] != sorted_users[:-1]
        run_start = torch.nonzero(first).squeeze(1)  # one run of rows per touched user
        run_users = sorted_users.index_select(0, run_start)
        run_of_row = torch.cumsum(first, 0) - 1
        position = torch.arange(len(sorted_users), device=device) - run_start.index_select(0, run_of_row)
        bounds = torch.cat([run_start, run_start.new_tensor([len(sorted_users)])]).tolist()
        levels, runs_per_level = torch.unique_consecutive(level.index_select(0, order.index_select(0, run_start)),
                                                          return_counts=True)
        first_run = 0
        for lev, n_runs in progress(list(zip(levels.tolist(), runs_per_level.tolist())), "linucb: fitting users by history length"):
            length = 1 << lev
            step = max(1, self.chunk_elements // (length * (d + 1)))
            for a in range(first_run, first_run + n_runs, step):  # chunks of users bound the padded block
                e = min(a + step, first_run + n_runs)
                lo, hi = bounds[a], bounds[e]
                padded = torch.zeros(e - a, length, d + 1, dtype=self.dtype, device=device)
                slots = (run_of_row[lo:hi] - a) * length + position[lo:hi]
                padded.view(-1, d + 1).index_copy_(0, slots, rows[lo:hi])
                gram = padded.transpose(1, 2) @ padded  # [n, d+1, d+1]: DᵀD and Dᵀr in one product
                block = run_users[a:e]
                self.A.index_add_(0, block, gram[:, :d, :d].contiguous())
                self.b.index_add_(0, block, gram[:, :d, d].contiguous())
            first_run += n_runs
        return run_users

    def fit(self, users, contexts, rewards) -> "BatchedLinUCB":
        """From the prior: A = λI + DᵀD, b = Dᵀr per user for rows (users [N], contexts [N, d], rewards [N])."""
        users, contexts, rewards = self._as_inputs(users, contexts, rewards)
        self.reset()
        self._accumulate(users, contexts, rewards)
        self.reinvert()
        return self

    def update(self, users, contexts, rewards) -> "BatchedLinUCB":
        """Batched rank-1 updates (users [B], contexts [B, d], rewards [B]); a user may repeat in a batch.

        A and b take every row exactly. For A⁻¹, the k-th occurrence of each user is applied in
        Sherman-Morrison round k (users are distinct within a round); users seen more than
        max_sherman_morrison_rounds times, or due for re-inversion, are re-inverted from A.
        """
        users, contexts, rewards = self._as_inputs(users, contexts, rewards)
        if len(users) == 0:
            return self
        self._accumulate(users, contexts, rewards)
        order = stable_argsort(users)
        touched, counts = torch.unique_consecutive(users[order], return_counts=True)  # work in the batch, not in U
        starts = torch.cumsum(counts, 0) - counts
        occurrence = torch.empty_like(users)
        occurrence[order] = torch.arange(len(users), device=self.device) - torch.repeat_interleave(starts, counts)
        self.updates_since_inverse[touched] += counts
        redo = (counts > self.max_sherman_morrison_rounds) | (self.updates_since_inverse[touched] >= self.reinvert_every)
        redo_row = torch.empty_like(users, dtype=torch.bool)
        redo_row[order] = torch.repeat_interleave(redo, counts)
        incremental = ~redo_row
        n_rounds = int(occurrence[incremental].max()) + 1 if bool(incremental.any()) else 0
        for k in range(n_rounds):
            rows = incremental & (occurrence == k)
            u, x = users[rows], contexts[rows]
            inv = self.A_inv[u]
            ax = torch.einsum("uij,uj->ui", inv, x)
            denom = 1.0 + (ax * x).sum(1)
            self.A_inv[u] = inv - ax.unsqueeze(2) * ax.unsqueeze(1) / denom[:, None, None]
        plain = touched[~redo]
        self.theta[plain] = torch.einsum("uij,uj->ui", self.A_inv[plain], self.b[plain])
        self.reinvert(touched[redo])
        return self

    # -- scoring ----------------------------------------------------------------------------------
    def _users(self, users) -> torch.Tensor:
        if users is None:
            return torch.arange(self.n_users, device=self.device)
        return torch.as_tensor(users, dtype=torch.int64, device=self.device).reshape(-1)

    def prepare_arms(self, arm_features) -> PreparedArms:
        """Arm features X [n_arms, d] in the form scoring uses; pass it to ucb / recommend in place of X
        when the same arms are scored many times (one user per request: building Zᵀ costs ~100x the scores)."""
        return PreparedArms(*self._arms(arm_features))

    def _arms(self, arm_features) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Xᵀ [d, n], Zᵀ [P, n], packed weights [P]) for scoring."""
        if isinstance(arm_features, PreparedArms):
            if arm_features.xt.device != self.device or arm_features.xt.dtype != self.dtype:
                raise ConfigError("LinUCB prepared arms are of another device or dtype; prepare them again")
            return arm_features
        x = torch.as_tensor(arm_features, device=self.device).to(self.dtype)
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"LinUCB arm_features have shape {tuple(x.shape)}; expected [n_arms, {self.dim}]")
        rows, cols = packed_upper_indices(self.dim, self.device)
        weights = torch.where(rows == cols, 1.0, 2.0).to(self.dtype)
        return x.t().contiguous(), arm_outer_products(x).t().contiguous(), weights

    def _chunk_scores(self, users, xt, zt, weights, alpha) -> torch.Tensor:
        """p: [B, n] for user indices [B]: addmm(α ∘ sqrt(C Zᵀ), θ, Xᵀ) with C the packed A⁻¹."""
        rows, cols = packed_upper_indices(self.dim, self.device)
        packed_inv = self.A_inv.reshape(-1, self.dim * self.dim).index_select(0, users).index_select(1, rows * self.dim + cols)
        packed_inv *= weights  # two index_selects: half the time of A⁻¹[users][:, rows, cols] at 4k users
        scores = packed_inv @ zt  # variance diag(X A⁻¹ Xᵀ) for every (user, arm)
        scores.clamp_(min=0).sqrt_()
        if isinstance(alpha, torch.Tensor):
            scores.mul_(alpha)
        elif alpha != 1.0:
            scores.mul_(alpha)
        return scores.addmm_(self.theta[users], xt)

    def _alpha_rows(self, alpha, start: int, stop: int):
        """The exploration weight for users start:stop: a float, or rows of a [U, n_arms] / [U] tensor."""
        if alpha is None:
            return self.alpha
        if isinstance(alpha, torch.Tensor):
            rows = alpha[start:stop].to(self.device, self.dtype)
            return rows.unsqueeze(1) if rows.dim() == 1 else rows
        return float(alpha)

    def _chunks(self, n_users: int, n_arms: int):
        step = max(1, self.chunk_elements // max(n_arms, 1))
        return ((s, min(s + step, n_users)) for s in range(0, n_users, step))

    @torch.no_grad()
    def ucb(self, arm_features, users=None, alpha=None) -> torch.Tensor:
        """p: [U, n_arms] upper confidence bounds for `users` (default all) and arms X [n_arms, d].

        alpha: None (self.alpha), a float, or a tensor [U, n_arms] (per user and arm) or [U].
        """
        users = self._users(users)
        xt, zt, weights = self._arms(arm_features)
        out = torch.empty(len(users), xt.shape[1], dtype=self.dtype, device=self.device)
        for s, e in self._chunks(len(users), xt.shape[1]):
            out[s:e] = self._chunk_scores(users[s:e], xt, zt, weights, self._alpha_rows(alpha, s, e))
        return out

    @torch.no_grad()
    def recommend(self, arm_features, k: int, exclude=None, users=None, alpha=None) -> torch.Tensor:
        """items: LongTensor [U, k], the k arms of highest UCB per user (−1 where fewer are allowed).

        exclude: bool tensor [U, n_arms] or scipy CSR [U, n_arms] (rows aligned with `users`) of arms
        never to recommend. Scores are computed and reduced chunk by chunk: memory ~ chunk x n_arms.
        """
        users = self._users(users)
        xt, zt, weights = self._arms(arm_features)
        out = torch.empty((len(users), int(k)), dtype=torch.int64, device=self.device)
        for s, e in self._chunks(len(users), xt.shape[1]):
            scores = self._chunk_scores(users[s:e], xt, zt, weights, self._alpha_rows(alpha, s, e))
            excluded = None if exclude is None else exclude[s:e]
            out[s:e] = topk_with_pads(mask_excluded(scores, excluded), int(k))[1]
        return out

    def score_flops(self, n_users: int, n_arms: int) -> float:
        """Floating-point operations of the two scoring products for n_users x n_arms (for benchmarks)."""
        return 2.0 * n_users * n_arms * (self.dim * (self.dim + 1) / 2 + self.dim)
