"""HybridRecommender (`model=hybrid`): several recommenders combined into one list, as seed 000
section 5.3 describes (predictions of several models, real-time feedback through a bandit, business
rules), behind the one Recommender interface, so evaluation, comparison, scoring and checkpoints
treat it like any model.

score(users) runs the three stages for a chunk of users:
1. candidates: every member scores the full catalogue; the union of their top `n_candidates`
   (or one member's top-M, `candidates=<member>`), the user's known items left out;
2. blend: the members' scores normalised per user over the candidates and combined by weights
   learned on the valid split (blend.py; `blend=auto` picks the method on held-out valid users);
3. re-ranking: the LinUCB head's UCB (blended with a learned weight, or added with `bandit_weight`),
   rule terms (`popularity_penalty`, `freshness`), MMR `diversity` (rerank.py).
Items outside the candidates score below every candidate, in the order of the members' mean z-score.
The checkpoint holds every member's state, so it is self-contained (weights_only).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.config import resolve_device
from deeprec.hybrid.blend import (
    Blend, CandidateFeatures, LinearBlend, concat_features, fit_blend, reciprocal_rank, weights_on, zscore,
)
from deeprec.hybrid.config import BLEND_KINDS, HybridConfig
from deeprec.hybrid.members import (
    Member, build_members, load_member_states, member_scores, member_states, rebuild_members, union_candidates,
)
from deeprec.hybrid.rerank import LinUCBHead, arm_features, mmr, rule_scores
from deeprec.online import set_entries
from deeprec.recommender import Recommender, csr_to_tensors, tensors_to_csr

log = logging.getLogger("deeprec.hybrid")

class HybridRecommender(Recommender):
    """Members -> candidates -> blend -> LinUCB head + rules + MMR, scored chunk by chunk."""

    name = "hybrid"
    config_class = HybridConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, member_specs: list[dict] | None = None,
                 **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.members: list[Member] = rebuild_members(member_specs) if member_specs else []
        self.blend: Blend | None = None
        self.head: LinUCBHead | None = None
        self.popularity = torch.zeros(self.n_items)
        self.item_side = torch.zeros(self.n_items, 0)  # combiner_side_features: standardised item / user features
        self.user_side = torch.zeros(self.n_users, 0)
        self.first_seen = torch.zeros(self.n_items)
        self.diversity_vectors: torch.Tensor | None = None
        self.seen = sp.csr_matrix((self.n_users, self.n_items), dtype=np.float32)
        self.rating_scale = 1.0
        self.blend_trials: dict[str, float] = {}
        self.stage_seconds: dict[str, float] = {}  # first stage / blend / re-ranking wall time of score()
        self._nested: list[float] = []

    # -- layout -------------------------------------------------------------------------------------
    @property
    def member_names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def head_blended(self) -> bool:
        return self.config.bandit_weight is None

    @property
    def uses_head(self) -> bool:
        return self.config.bandit_weight is None or self.config.bandit_weight > 0

    def feature_names(self) -> list[str]:
        names = [f"{m}:{kind}" for m in self.member_names for kind in ("z", "rank")]
        names += (["head:z"] if self.head_blended else []) + ["popularity:z", "history"]
        return names + [f"item:{j}" for j in range(self.item_side.shape[1])] + [f"user:{j}" for j in range(self.user_side.shape[1])]

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), "member_specs": [m.spec() for m in self.members]}

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, data, trainer=None, ckpt_path=None) -> "HybridRecommender":
        """Fit the members on train, the head and the rules' item values, then the blend on valid."""
        c = self.config
        self.n_users, self.n_items = data.n_users, data.n_items
        self.members = build_members(list(c.members), dict(c.member_overrides or {}), data, self.seed, self.device,
                                     c.member_max_epochs, c.member_patience)
        self._item_values(data)
        self._fit_head_arms(data)
        self.observe(data, ("train",))
        self.blend = self._fit_blend(data)
        return self

    def _item_values(self, data) -> None:
        """Log train popularity, freshness (first train timestamp, 0..1) and the rating scale."""
        train = data.rows("train")
        self.popularity = torch.from_numpy(np.log1p(data.item_popularity("train")).astype(np.float32))
        first = np.full(data.n_items, np.nan)
        stamps = train["timestamp"].to_numpy(np.float64)
        if np.isfinite(stamps).any():
            ok = np.isfinite(stamps)
            first = np.full(data.n_items, np.inf)
            np.minimum.at(first, train["item"].to_numpy()[ok], stamps[ok])
            seen_items = np.isfinite(first)
            low, high = first[seen_items].min(), first[seen_items].max()
            first = np.where(seen_items, (first - low) / max(high - low, 1e-9), 0.0)
        self.first_seen = torch.from_numpy(np.nan_to_num(first, nan=0.0).astype(np.float32))
        self.rating_scale = float(train["rating"].max()) if len(train) and train["rating"].max() > 0 else 1.0
        if self.config.combiner_side_features:
            from deeprec.models.features import standardised_values

            for side, frame, rows in (("item_side", data.item_features, data.n_items), ("user_side", data.user_features, data.n_users)):
                values = standardised_values(frame)
                setattr(self, side, values if values is not None else torch.zeros(rows, 0))

    def _fit_head_arms(self, data) -> None:
        """Arm features of the head (members' embeddings or item factors) and the MMR item vectors."""
        from deeprec.data.features import item_factors

        c = self.config
        embeddings = [e for e in (m.model.item_embeddings() for m in self.members) if e is not None]
        fallback = item_factors(data, c.bandit_dim, self.seed) if not embeddings else None
        arms = arm_features(embeddings, fallback, c.bandit_dim, self.seed)
        if self.uses_head:
            self.head = LinUCBHead(self.n_users, arms, c.bandit_alpha, c.bandit_lam).to(self.device)
        features = data.item_features
        use_items = c.diversity_features == "item_features" or (
            c.diversity_features == "auto" and features is not None and features.shape[1] > 1)
        if use_items and features is not None:
            values = torch.from_numpy(np.array(features.to_numpy(np.float32)))
            low, span = values.min(0).values, values.max(0).values - values.min(0).values
            self.diversity_vectors = torch.where(span > 0, (values - low) / span.clamp(min=1e-12), torch.zeros_like(values))
        else:
            self.diversity_vectors = arms.float()

    def observe(self, data, splits: tuple[str, ...]) -> None:
        """Members observe the known history; the seen filter and the head are rebuilt from it."""
        for member in self.members:
            member.model.observe(data, splits)
        self.seen = data.matrix(splits, binary=True)
        if self.head is not None:
            known = data.rows(splits)
            rewards = np.clip(known["rating"].to_numpy(np.float64) / self.rating_scale, 0.0, 1.0)
            self.head.fit(known["user"].to_numpy(), known["item"].to_numpy(), rewards)

    def _fit_blend(self, data) -> Blend:
        """The blend learned on the valid split (members, seen filter and head on train); equal weights without one."""
        c = self.config
        self.blend = None  # candidate_features computes every column while there is no blend
        truth = data.truth("valid")
        users = np.flatnonzero(np.diff(truth.indptr) > 0)
        names = self.feature_names()
        equal = self._linear_equal(names)
        if len(users) == 0:
            log.info("hybrid: no valid split; the blend is equal weights")
            return equal
        if len(users) > c.blend_max_users:
            users = np.sort(np.random.default_rng(self.seed).choice(users, c.blend_max_users, replace=False))
        self.eval()
        parts = [self.candidate_features(torch.from_numpy(users[s : s + 1024])) for s in range(0, len(users), 1024)]
        batch = concat_features(parts)
        combiner = {"hidden": c.combiner_hidden, "epochs": c.combiner_epochs, "lr": c.combiner_lr,
                    "weight_decay": c.combiner_weight_decay}
        blend, self.blend_trials = fit_blend(c.blend, batch, truth[users], self.member_names, c.normalisation,
                                             self.head_blended, self.seed, combiner)
        if isinstance(blend, LinearBlend):
            shown = {n: round(float(w), 4) for n, w in zip(names, blend.weights) if float(w) != 0}
            log.info("hybrid blend %s weights: %s", blend.method, shown)
        return blend

    def _linear_equal(self, names: list[str]) -> LinearBlend:
        columns = [names.index(f"{m}:{self.config.normalisation}") for m in self.member_names]
        return LinearBlend(weights_on(columns, np.full(len(columns), 1.0 / len(columns)), len(names)), "equal")

    # -- scoring ------------------------------------------------------------------------------------
    def _excluded(self, users: torch.Tensor) -> torch.Tensor | None:
        """[B, I] bool of the users' known items (None when filter_seen is off)."""
        return self.seen_mask(users, self.device) if self.config.filter_seen else None

    def seen_mask(self, users: torch.Tensor, device) -> torch.Tensor:
        """[B, I] bool on `device`: the items users [B] have seen (by index assignment, no dense copy)."""
        rows = self.seen[users.detach().cpu().numpy()]
        known = rows.data > 0
        row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))[known]
        mask = torch.zeros(rows.shape, dtype=torch.bool)
        mask[torch.from_numpy(row_of), torch.from_numpy(rows.indices[known].astype(np.int64))] = True
        return mask.to(device)

    @torch.no_grad()
    def candidate_features(self, users: torch.Tensor, scores: list[torch.Tensor] | None = None,
                           excluded: torch.Tensor | None = None) -> CandidateFeatures:
        """Stage 1 and the blend's inputs for users [B] (blend.py's feature columns)."""
        users = users.to(self.device)
        with self.timer("first stage"):
            scores = member_scores(self.members, users) if scores is None else scores
            excluded = self._excluded(users) if excluded is None else excluded
            first = None if self.config.candidates == "union" else self.member_names.index(self.config.candidates)
            candidates = union_candidates(scores, self.config.n_candidates, excluded, first)
        with self.timer("blend"):
            return self._features(users, scores, candidates)

    def _features(self, users: torch.Tensor, scores: list[torch.Tensor], candidates: torch.Tensor) -> CandidateFeatures:
        valid = candidates >= 0
        index = candidates.clamp(min=0)
        columns = []
        needed = (lambda column: True) if self.blend is None else self.blend.uses  # fitting reads every column
        zeros = torch.zeros(valid.shape, device=valid.device)
        for s in scores:
            at = s.gather(1, index)
            position = len(columns)
            columns.append(zscore(at, valid) if needed(position) else zeros)
            columns.append(reciprocal_rank(at, valid, self.config.rrf_k) if needed(position + 1) else zeros)
        if self.head_blended and needed(len(columns)):
            with self.timer("re-ranking"):  # the head is re-ranking work, whether its weight is learned or set
                columns.append(zscore(self.head.ucb_at(users, candidates).to(self.device), valid))
        elif self.head_blended:
            columns.append(zeros)
        columns.append(rule_scores(candidates, valid, self.popularity))
        history = torch.from_numpy(np.log1p(np.diff(self.seen.indptr)[users.cpu().numpy()]).astype(np.float32))
        columns.append(history.to(self.device).unsqueeze(1).expand_as(valid).float())
        for j in range(self.item_side.shape[1]):  # the learned blend's side inputs (zeros where unused)
            column = self.item_side[:, j].to(self.device)
            columns.append(column[index] if needed(len(columns)) else zeros)
        for j in range(self.user_side.shape[1]):
            column = self.user_side[:, j].to(self.device)
            columns.append(column[users].unsqueeze(1).expand_as(valid) if needed(len(columns)) else zeros)
        features = torch.stack(columns, 2)
        return CandidateFeatures(users, candidates, valid, features, self.feature_names())

    def rerank(self, batch: CandidateFeatures, relevance: torch.Tensor) -> torch.Tensor:
        """Final candidate scores [B, C]: z(relevance) + head + rules, then MMR when diversity > 0."""
        with self.timer("re-ranking"):
            return self._rerank(batch, relevance)

    def _rerank(self, batch: CandidateFeatures, relevance: torch.Tensor) -> torch.Tensor:
        c = self.config
        final = zscore(relevance, batch.valid)
        if self.uses_head and not self.head_blended:
            final = final + c.bandit_weight * zscore(self.head.ucb_at(batch.users, batch.candidates).to(final.device), batch.valid)
        if c.popularity_penalty:
            final = final - c.popularity_penalty * rule_scores(batch.candidates, batch.valid, self.popularity)
        if c.freshness:
            final = final + c.freshness * rule_scores(batch.candidates, batch.valid, self.first_seen)
        if c.diversity > 0:
            final = mmr(final, batch.candidates, batch.valid, self.diversity_vectors, c.diversity, c.diversity_depth)
        return final.masked_fill(~batch.valid, -float("inf"))

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """scores [B, n_items]: the re-ranked candidates, then the other items below them, the user's known
        items last (filter_seen; finite scores, as every model's)."""
        users = users.to(self.device)
        with self.timer("first stage"):
            scores = member_scores(self.members, users)
            excluded = self._excluded(users)
        batch = self.candidate_features(users, scores, excluded)
        with self.timer("blend"):
            relevance = self.blend(batch.features)
        final = self.rerank(batch, relevance)
        with self.timer("other items"):
            return self._assemble(scores, batch, final, excluded)

    def _assemble(self, scores, batch, final, excluded) -> torch.Tensor:
        """[B, I]: final at the candidates, the other items below them, known items below everything."""
        # the other items: below the lowest candidate, ordered by the members' mean z-score over the candidates
        # (the z-scores' means are a per-row constant, which cancels in order.max - order: only the
        # scale 1/std is applied, in place, one pass over the catalogue per member)
        valid = batch.valid
        count = valid.sum(1, keepdim=True).clamp(min=1)
        order = torch.zeros_like(scores[0])
        for s in scores:
            at = s.gather(1, batch.candidates.clamp(min=0))
            mean = torch.where(valid, at, torch.zeros_like(at)).sum(1, keepdim=True) / count
            std = (torch.where(valid, at - mean, torch.zeros_like(at)).square().sum(1, keepdim=True) / count).sqrt()
            order.addcmul_(s, 1.0 / std.clamp(min=1e-6))
        lowest = torch.where(valid, final, torch.full_like(final, float("inf"))).min(1, keepdim=True).values
        lowest = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest))
        out = order.sub_(order.max(1, keepdim=True).values).div_(len(scores)).add_(lowest - 1.0)  # lowest - 1 - (max - order) / n
        rows, cols = torch.nonzero(valid, as_tuple=True)
        out[rows, batch.candidates[rows, cols]] = final[rows, cols]
        if excluded is not None:  # known items last, at a finite score (callers exclude them anyway)
            floor = torch.where(excluded, torch.full_like(out, float("inf")), out).min(1, keepdim=True).values
            floor = torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))
            out = torch.where(excluded, floor - 1.0, out)
        return out

    # -- explanations -------------------------------------------------------------------------------
    @torch.no_grad()
    def contributions(self, users: torch.Tensor, items: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """(parts, values [B, P]): how much each member (and the head) moved the blended relevance of
        items[b] for users[b]: the blend minus the blend with that part's columns at their neutral 0.
        NaN where items[b] is not among the user's candidates."""
        # a list's k rows share one user: the members score each distinct user's catalogue once
        distinct, inverse = torch.unique(users.to(self.device), return_inverse=True)
        batch = self.candidate_features(distinct)
        names = batch.names
        parts = list(self.member_names) + (["head"] if self.head_blended else [])
        candidates = batch.candidates[inverse]  # [B, C]: users[b] is distinct[inverse[b]]
        match = candidates == items.to(candidates.device).unsqueeze(1)
        found = match.any(1)
        position = match.float().argmax(1)
        x = batch.features[inverse, position]  # [B, F]
        full = self.blend(x.unsqueeze(1))[:, 0]
        values = []
        for part in parts:
            cut = x.clone()
            cut[:, [i for i, n in enumerate(names) if n.split(":")[0] == part]] = 0.0
            values.append(full - self.blend(cut.unsqueeze(1))[:, 0])
        out = torch.stack(values, 1)
        return parts, torch.where(found.unsqueeze(1), out, torch.full_like(out, float("nan")))

    @torch.no_grad()
    def explain(self, users: torch.Tensor, items: torch.Tensor, top: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """(history items [B, top], weights [B, top]): the members' own explanations (attention weights,
        item-item contributions) mixed by each member's share of the positive contributions; a
        member-less fallback is the cosine similarity of the arm features of history and item."""
        return self._explain(users, items, top, self.contributions(users, items)[1])

    @torch.no_grad()
    def explain_with_contributions(self, users: torch.Tensor, items: torch.Tensor, top: int = 3):
        """explain and contributions from one pass of the members over the distinct users."""
        split = self.contributions(users, items)
        return self._explain(users, items, top, split[1]), split

    def _explain(self, users: torch.Tensor, items: torch.Tensor, top: int, shares: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """explain, given the contributions' values [B, P] of (users, items)."""
        shares = torch.nan_to_num(shares[:, : len(self.members)], nan=0.0).clamp(min=0)
        total = shares.sum(1, keepdim=True)
        shares = torch.where(total > 0, shares / total.clamp(min=1e-12), torch.full_like(shares, 1.0 / len(self.members)))
        weight = torch.zeros(len(users), self.n_items + 1)
        explained = False
        for k, member in enumerate(self.members):
            given = member.model.explain(users, items, top)
            if given is None:
                continue
            explained = True
            hist, w = (t.cpu() for t in given)
            w = torch.where(hist >= 0, w.float(), torch.zeros_like(w.float()))
            norm = w.sum(1, keepdim=True).clamp(min=1e-12)
            weight.scatter_add_(1, torch.where(hist >= 0, hist, self.n_items), shares[:, k : k + 1].cpu() * w / norm)
        if not explained:
            weight = self._similarity_weights(users, items)
        weight = weight[:, : self.n_items]
        history = self.seen_mask(users, weight.device)
        weight = torch.where(history, weight, torch.zeros_like(weight))
        values, index = torch.topk(weight, min(top, self.n_items), dim=1)
        index = torch.where(values > 0, index, -1)
        if index.shape[1] < top:
            index = torch.cat([index, index.new_full((len(users), top - index.shape[1]), -1)], 1)
            values = torch.cat([values, values.new_zeros(len(users), top - values.shape[1])], 1)
        return index, values.clamp(min=0)

    def _similarity_weights(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, I + 1]: relu cosine of every item's vector to items[b] (the history mask comes after)."""
        vectors = torch.nn.functional.normalize(self.diversity_vectors.float(), dim=1)
        weights = (vectors @ vectors[items.cpu()].T).T.clamp(min=0)
        return torch.cat([weights, weights.new_zeros(len(users), 1)], 1)

    @contextlib.contextmanager
    def timer(self, stage: str):
        """Adds the wall time of the block to self.stage_seconds[stage] (nested stages are subtracted
        from the enclosing one, so the stages add up to the total; scripts/bench_hybrid.py reads them)."""
        start = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            inner = self._nested.pop()
            spent = time.perf_counter() - start
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + spent - inner
            if self._nested:
                self._nested[-1] += spent

    # -- online learning (deeprec-serve's feedback loop) ----------------------------------------------
    def add_users(self, count: int) -> bool:
        """New users in every member, the seen filter, the side features (zeros: the standardised mean) and
        the head (at the prior). The hybrid ranks them only when every member does; else the caller's fallback."""
        if not all([member.model.add_users(count) for member in self.members]):
            return False
        self.seen = set_entries(self.seen, [], [], [], self.n_users + count)
        self.user_side = torch.cat([self.user_side, self.user_side.new_zeros(count, self.user_side.shape[1])])
        if self.head is not None:
            self.head.bandit.add_users(count)
        self.n_users += count
        return True

    def learn_online(self, users, items, rewards, timestamps) -> None:
        """Every member learns the events, the seen filter gains their items, and the head's ridge models
        take them as in observe() (reward = rating / rating_scale clipped to [0, 1], the arm's features).
        Members and head are order-respecting sums or sequences, so batching does not change the result."""
        if len(users) == 0:
            return
        for member in self.members:
            member.model.learn_online(users, items, rewards, timestamps)
        # every event's item is seen, whatever its reward: unlike the history baselines, a reward <= 0
        # does not take it out (the user has met the item; filter_seen keeps it out of their lists)
        self.seen = set_entries(self.seen, users.cpu().numpy(), items.cpu().numpy(), np.ones(len(users), np.float32))
        if self.head is not None:
            device = self.head.bandit.device
            scaled = (rewards.double() / self.rating_scale).clamp(0.0, 1.0)
            self.head.bandit.update(users.to(device), self.head.features[items.to(device)], scaled.to(device))

    # -- devices and modes ---------------------------------------------------------------------------
    def to(self, device) -> "HybridRecommender":
        self.device = resolve_device(device)
        for member in self.members:
            member.model = member.model.to(self.device)
        if self.head is not None:
            self.head.to(self.device)
        return self

    def eval(self) -> "HybridRecommender":
        for member in self.members:
            member.model.eval()
        return self

    def train(self, mode: bool = True) -> "HybridRecommender":
        for member in self.members:
            member.model.train(mode)
        return self

    # -- persistence --------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        state = {**member_states(self.members), "popularity": self.popularity, "first_seen": self.first_seen,
                 "item_side": self.item_side, "user_side": self.user_side,
                 "rating_scale": torch.tensor([self.rating_scale], dtype=torch.float64), **csr_to_tensors(self.seen, "seen")}
        if self.diversity_vectors is not None:
            state["diversity_vectors"] = self.diversity_vectors
        if self.blend is not None:
            state.update(self.blend.state_tensors())
            state["blend.method"] = torch.tensor([BLEND_KINDS.index(self.blend.method.split(":")[0])])
        if self.head is not None:
            state.update(self.head.state_tensors())
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        from deeprec.hybrid.combiner import CombinerBlend

        load_member_states(self.members, state)
        self.popularity = state["popularity"].float()
        self.first_seen = state["first_seen"].float()
        self.item_side = state.get("item_side", torch.zeros(len(self.popularity), 0)).float()
        self.user_side = state.get("user_side", torch.zeros(self.n_users, 0)).float()
        self.rating_scale = float(state["rating_scale"][0])
        self.seen = tensors_to_csr(state, "seen")
        self.n_users, self.n_items = self.seen.shape
        self.diversity_vectors = state.get("diversity_vectors")
        if "blend.method" in state:
            method = BLEND_KINDS[int(state["blend.method"][0])]
            self.blend = CombinerBlend.from_state(state) if method == "learned" else LinearBlend(state["blend.weights"], method)
        if "head.features" in state:
            self.head = LinUCBHead.from_state(state, self.n_users, self.config.bandit_alpha, self.config.bandit_lam)
        self.to(self.device)
