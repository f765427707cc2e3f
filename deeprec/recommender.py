"""The one interface every recommender implements (deep, classic, bandit).

Callers (training, evaluation, scoring, other models) use only what is declared here, so they never
ask what a model is: the typed `config`, `check_data`, `fit`, `observe`, `score`, `recommend`, `eval`/`train`,
`to`, online learning for deeprec-serve (`add_users`, `learn_online`, with defaults that learn
nothing), the optional capabilities `item_embeddings`, `explain` and `contributions` (None where a
model has none), and the persistence methods. A recommender's state is a flat dict of tensors and its constructor
arguments are JSON-able values, so checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

if TYPE_CHECKING:
    from deeprec.data.interactions import InteractionData

log = logging.getLogger("deeprec.recommender")


@dataclass
class ModelConfig:
    """Base of every model's typed config: conf/model/<name>.yaml holds exactly its fields.

    `name` is the registry name; `check()` validates what the field types cannot (choices, ranges)
    and returns the config, so a bad value fails when the config is built, before any data is read.
    """

    name: str = ""

    def check(self) -> "ModelConfig":
        return self


class Recommender(ABC):
    """fit(data) on InteractionData; score(users) -> [B, n_items]; state as tensors for save/load.

    Constructed as `cls(n_users, n_items, seed=run_seed, **config_fields)`; `init_args()` returns
    exactly those arguments, so `cls(**model.init_args())` rebuilds an empty model of the same shape.
    """

    #: the registry name (conf/model/<name>.yaml)
    name: ClassVar[str] = ""
    #: the dataclass of this model's hyper-parameters; `self.config` is a validated instance of it
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    #: True when fit() runs a Lightning Trainer that the caller builds (callbacks, checkpoints, resume);
    #: False when fit() is a plain computation and the caller saves the checkpoint itself
    uses_trainer: ClassVar[bool] = False

    config: ModelConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config: Any) -> None:
        self.configure(n_users, n_items, seed, config)
        self.device = torch.device("cpu")

    def configure(self, n_users: int, n_items: int, seed: int, config: dict[str, Any]) -> None:
        """Set the shape, the seed (every random draw of fit derives from it) and the checked config."""
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.seed = int(seed)
        self.config = self.config_class(**{"name": self.name, **config}).check()

    # -- training ------------------------------------------------------------------------------
    def check_data(self, data: "InteractionData") -> None:
        """Raise DataError / ConfigError when `data` cannot train this model (what fit would need:
        features, memory, non-zero ratings); cheap, called before any model is trained."""

    @classmethod
    def tuning_space(cls, space: dict[str, dict], config: Any, data: "InteractionData") -> dict[str, dict]:
        """conf/tuning/<name>.yaml's space restricted to the values `data` can take with `config` (the
        model's merged section), so tune=N trains N usable trials. Default: the space unchanged."""
        return space

    @abstractmethod
    def fit(self, data: "InteractionData", trainer=None, ckpt_path: str | None = None) -> "Recommender":
        """Learn from data's train split (valid for early stopping). `trainer` and `ckpt_path` (the
        checkpoint to resume from) are for models with `uses_trainer`; the others ignore them."""

    def observe(self, data: "InteractionData", splits: tuple[str, ...]) -> None:
        """Condition on the users' known history (the rows of `splits`) before scoring.

        History-based models (sequences, autoencoders, neighbourhoods, bandits) read it here; others ignore it.
        """

    # -- inference -----------------------------------------------------------------------------
    @abstractmethod
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """scores: [B, n_items] float for user indices `users` [B] (higher is better)."""

    def recommend(
        self, users, k: int, exclude: sp.csr_matrix | None = None, batch_size: int = 1024
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [U, k], items [U, k] int64, -1 pads; on CPU) of users [U], every item ranked.

        exclude: CSR [n_users, n_items] of items never to recommend (seen ones). Models customise
        score(); the ranking itself is the shared one (deeprec.ranking.full_ranking_topk).
        """
        from deeprec.ranking import full_ranking_topk

        return full_ranking_topk(self.score, users, k, exclude=exclude, batch_size=batch_size, device=self.device)

    def eval(self) -> "Recommender":
        """Inference mode (no dropout); a no-op for models without one. torch models inherit nn.Module's."""
        return self

    def train(self, mode: bool = True) -> "Recommender":
        """Training mode; a no-op for models without one. torch models inherit nn.Module's."""
        return self

    def to(self, device: str | torch.device) -> "Recommender":
        """Move the tensors used by fit and score to `device` (cpu | cuda | cuda:N | auto)."""
        from deeprec.config import resolve_device

        self.device = resolve_device(device)
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

    # -- optional capabilities (None: this model has none) --------------------------------------
    def item_embeddings(self) -> torch.Tensor | None:
        """[n_items, d] item vectors (e.g. arm features for the neural-linear LinUCB), or None."""
        return None

    def explain(self, users: torch.Tensor, items: torch.Tensor, top: int = 3) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(history items [B, top] int64, weights [B, top]) that made user b's score of items[b],
        highest weight first, -1 / 0 pads; or None when the model cannot say."""
        return None

    def contributions(self, users: torch.Tensor, items: torch.Tensor) -> tuple[list[str], torch.Tensor] | None:
        """(names of the parts of a composite score, values [B, P]: what each part added to user b's
        score of items[b]); or None for a model that is not made of parts."""
        return None

    def explain_with_contributions(self, users: torch.Tensor, items: torch.Tensor, top: int = 3):
        """(explain(users, items, top), contributions(users, items)) in one call: what deeprec-score's
        explanations ask; a composite model overrides it to share the work the two have in common."""
        return self.explain(users, items, top), self.contributions(users, items)

    # -- persistence ---------------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything `score` needs, as named tensors."""

    @abstractmethod
    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors."""

    def init_args(self) -> dict[str, Any]:
        """Constructor arguments (ints, floats, strings, lists) that rebuild an empty instance."""
        fields = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "name"}
        return {"n_users": self.n_users, "n_items": self.n_items, "seed": self.seed, **fields}

    @classmethod
    def init_arg_names(cls) -> set[str]:
        """The names the constructor takes: its own parameters and the config's fields."""
        return set(inspect.signature(cls.__init__).parameters) | {f.name for f in dataclasses.fields(cls.config_class)}

    @classmethod
    def from_init_args(cls, args: dict[str, Any]) -> "Recommender":
        """An empty instance from a checkpoint's init_args; keys this version no longer has (an older
        checkpoint's) are dropped with a warning, so existing checkpoints keep loading."""
        known = cls.init_arg_names()
        retired = sorted(set(args) - known)
        if retired:
            log.warning("model %s: ignoring checkpoint argument(s) %s (not used by this version)", cls.name, retired)
        return cls(**{k: v for k, v in args.items() if k in known})


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
