"""The hybrid's typed config (conf/model/hybrid.yaml holds exactly these keys): members, candidates,
blend, LinUCB head, rules and diversity; check() fails fast on every value the types cannot check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deeprec.config import check_choice
from deeprec.errors import ConfigError
from deeprec.hybrid.blend import BLENDS, NORMALISATIONS
from deeprec.hybrid.members import check_members, is_checkpoint
from deeprec.recommender import ModelConfig

DIVERSITY_FEATURES = ("auto", "item_features", "arms")
BLEND_KINDS = (*BLENDS, "single")  # what a checkpoint records of the fitted blend (single: one member alone)


def _default_members() -> list[str]:
    return ["ease", "itemknn", "userknn", "mf", "pop"]


@dataclass
class HybridConfig(ModelConfig):
    name: str = "hybrid"
    members: list[str] = field(default_factory=_default_members)  # registered model names and/or checkpoint paths
    member_overrides: dict[str, Any] = field(default_factory=dict)  # per member name: its config keys, {ease: {l2: 500}}
    member_max_epochs: int = 30  # Lightning members: epochs at most (early stopping on valid NDCG@10)
    member_patience: int = 3  # Lightning members: epochs without gain before stopping
    candidates: str = "union"  # union (of every member's top-M) | a member's name (its top-M only)
    n_candidates: int = 200  # M: candidates per member
    normalisation: str = "z"  # z (z-score over the candidates) | rank (reciprocal rank) for the linear blends
    blend: str = "auto"  # auto | equal | rrf | lsq | ndcg | learned (blend.py)
    blend_max_users: int = 5000  # valid users the blend is fitted on at most (a seeded sample; bounds its memory)
    rrf_k: float = 60.0  # reciprocal rank 1 / (rrf_k + rank)
    combiner_hidden: int = 32  # learned blend: MLP width
    combiner_epochs: int = 30
    combiner_lr: float = 0.01
    combiner_weight_decay: float = 0.0001
    combiner_side_features: bool = False  # the learned blend also reads the item's and the user's features
    bandit_weight: float | None = None  # LinUCB head: null = its weight learned in the blend; 0 = no head; > 0 = added to the blend's z-score
    bandit_alpha: float = 0.1  # LinUCB head: exploration (mean + alpha x confidence width)
    bandit_dim: int = 16  # LinUCB head: arm feature dimensions (PCA of the members' embeddings / item factors)
    bandit_lam: float = 1.0  # LinUCB head: ridge
    popularity_penalty: float = 0.0  # rule: minus this x the z-score of log popularity
    freshness: float = 0.0  # rule: plus this x the z-score of the item's first train timestamp (newer is higher)
    diversity: float = 0.0  # MMR: 0 = relevance only, 1 = dissimilarity only
    diversity_depth: int = 20  # MMR: greedy picks per user (the rest follow by their last marginal value)
    diversity_features: str = "auto"  # auto (item features, else arms) | item_features | arms
    filter_seen: bool = True  # the user's known items are never candidates

    def check(self) -> "HybridConfig":
        check_members(list(self.members), dict(self.member_overrides or {}))
        names = [m for m in self.members if not is_checkpoint(m)]
        if self.candidates != "union" and self.candidates not in names:
            raise ConfigError(f"model.candidates={self.candidates!r} is not valid; choose union or a named member {names}")
        check_choice(self.normalisation, NORMALISATIONS, "model.normalisation")
        check_choice(self.blend, BLENDS, "model.blend")
        check_choice(self.diversity_features, DIVERSITY_FEATURES, "model.diversity_features")
        for key in ("n_candidates", "blend_max_users", "bandit_dim", "diversity_depth", "combiner_hidden", "combiner_epochs",
                    "member_max_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}={getattr(self, key)} must be at least 1")
        if not 0.0 <= self.diversity <= 1.0:
            raise ConfigError(f"model.diversity={self.diversity} must be within [0, 1]")
        if self.bandit_lam <= 0 or self.bandit_alpha < 0 or (self.bandit_weight is not None and self.bandit_weight < 0):
            raise ConfigError("model.bandit_lam must be > 0, model.bandit_alpha and model.bandit_weight >= 0")
        return self
