"""LinUCBRecommender: the ability-aware LinUCB of SPEC 2.4 behind the Recommender interface (`model=linucb`).

Arms are the items; arm features X [n_items, d] come from the Coursera video statistics (SPEC 2.3),
the data's item_features, a feature table (item_id + numeric columns), or the item embeddings of a
trained deep model's checkpoint (neural-linear mode). Each user's ridge model is fit on the items
of their known history with the configured reward column as payoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.bandits.ability import student_ability
from deeprec.bandits.features import VIDEO_FEATURES, attention, video_features, watched_matrix
from deeprec.bandits.linucb import INVERSE_METHODS, BatchedLinUCB, PreparedArms
from deeprec.config import DTYPES, check_choice, resolve_device, resolve_dtype
from deeprec.errors import ConfigError, DataError
from deeprec.recommender import ModelConfig, Recommender, csr_to_tensors, tensors_to_csr

log = logging.getLogger("deeprec.bandits")

FEATURE_SOURCES = ("video_stats", "item_features", "table", "embeddings")
ALPHA_MODES = ("fixed", "personalised")


@dataclass
class LinUCBConfig(ModelConfig):
    name: str = "linucb"
    alpha_mode: str = "fixed"  # fixed: α for everyone | personalised: α_s = ability_s · S_s (SPEC 2.4)
    alpha: float = 1.0  # the fixed exploration weight
    lam: float = 1.0  # ridge λ: A = λI + DᵀD
    w_p: float = 1 / 3  # ability weight of participation N_s / N_videos
    w_c: float = 1 / 3  # ability weight of mean fracComp
    w_q: float = 1 / 3  # ability weight of mean quiz correctness s
    p: float = 0.5  # dif weight of (1 − fracCorrect)
    q: float = 0.5  # dif weight of fracnumRWs
    max_rewinds: float = 60.0  # numRWs is capped here and divided by it for fracnumRWs
    features: str = "video_stats"  # video_stats | item_features | table | embeddings
    feature_path: str = ""  # table: Parquet/CSV item_id + numeric columns; embeddings: a deeprec checkpoint
    standardize_features: bool = False  # z-score each feature column (the paper uses raw 0..1 features)
    reward: str = "fracComp"  # payoff column of data.extras["video_behaviour"]; "rating" uses data.frame
    dtype: str = "float32"  # float32 | float64
    reinvert_every: int = 64  # rank-1 updates of a user before A⁻¹ is recomputed from A
    chunk_elements: int = 16777216  # user x arm scores held at once while scoring
    inverse_method: str = "auto"  # auto | lapack | columns (batched Cholesky, see linucb.py)

    def check(self) -> "LinUCBConfig":
        check_choice(self.alpha_mode, ALPHA_MODES, "model.alpha_mode")
        check_choice(self.features, FEATURE_SOURCES, "model.features")
        check_choice(self.dtype, DTYPES, "model.dtype")
        check_choice(self.inverse_method, INVERSE_METHODS, "model.inverse_method")
        if self.features in ("table", "embeddings") and not self.feature_path:
            raise ConfigError(f"model.features={self.features} needs model.feature_path=PATH")
        return self


def behaviour_rows(data, splits: tuple[str, ...]) -> pd.DataFrame | None:
    """The rows of data.extras["video_behaviour"] in `splits`, with integer columns user and item.

    Rows are matched to InteractionData by (userID, VidID) as strings; None when the data has no table.
    """
    table = data.extras.get("video_behaviour")
    if table is None:
        return None
    user = pd.Index(np.asarray(data.user_ids).astype(str)).get_indexer(table["userID"].astype(str))
    item = pd.Index(np.asarray(data.item_ids).astype(str)).get_indexer(table["VidID"].astype(str))
    rows = table.assign(user=user, item=item)
    rows = rows[(rows["user"] >= 0) & (rows["item"] >= 0)]
    known = data.rows(splits)
    keys = known["user"].to_numpy(np.int64) * data.n_items + known["item"].to_numpy(np.int64)
    in_splits = np.isin(rows["user"].to_numpy(np.int64) * data.n_items + rows["item"].to_numpy(np.int64), keys)
    return rows[in_splits].reset_index(drop=True)


def read_feature_table(path: str, item_ids: np.ndarray) -> np.ndarray:
    """[n_items, F] float64 from a Parquet/CSV table item_id + numeric columns, aligned to item_ids."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"model.feature_path={path} does not exist; give a Parquet/CSV table item_id + numeric columns")
    from deeprec.data.tables import read_table

    table = read_table(file, dtype={"item_id": str})
    if "item_id" not in table.columns:
        raise DataError(f"{path}: required column 'item_id' is missing (columns: {list(table.columns)})")
    numeric = table.drop(columns=["item_id"]).select_dtypes("number")
    if numeric.shape[1] == 0:
        raise DataError(f"{path}: no numeric feature column besides item_id")
    numeric.index = table["item_id"].astype(str)
    check_feature_values(numeric.to_numpy(np.float64), list(numeric.columns), numeric.index.to_numpy(), path)
    return aligned_rows(numeric.to_numpy(np.float64), numeric.index.to_numpy(), item_ids, path)


MAX_FEATURE = 1e6  # |x| above this loses the float32 precision of A = λI + DᵀD (sums of squares of x)


def check_feature_values(x: np.ndarray, columns: list, ids: np.ndarray, source: str) -> None:
    """x [n, d]: every arm feature finite and at most MAX_FEATURE in size, else one line naming the
    column and the item."""
    bad = ~np.isfinite(x) | (np.abs(np.nan_to_num(x, nan=0.0, posinf=np.inf, neginf=np.inf)) > MAX_FEATURE)
    if not bad.any():
        return
    row, col = (int(i[0]) for i in np.nonzero(bad))
    value = x[row, col]
    why = ("is not a finite number" if not np.isfinite(value) else
           f"is larger than {MAX_FEATURE:g} (LinUCB's sums of squares would lose precision; rescale it "
           "or set model.standardize_features=true)")
    raise DataError(f"{source}: feature column {columns[col]} of item {str(ids[row])!r} is {value!r}, which {why}; "
                    f"{int(bad.sum())} value(s) like it")


def aligned_rows(values: np.ndarray, ids: np.ndarray, item_ids: np.ndarray, source: str) -> np.ndarray:
    """Rows of `values` (one per id) reordered to item_ids; unknown items get zeros, none known is an error."""
    position = pd.Index(np.asarray(ids).astype(str)).get_indexer(np.asarray(item_ids).astype(str))
    if (position < 0).all():
        raise DataError(f"{source}: none of its item ids matches an item of the data (e.g. {item_ids[:3].tolist()})")
    if (position < 0).any():
        log.warning("%s: %d of %d items have no features; they get zeros", source, int((position < 0).sum()), len(item_ids))
    out = np.zeros((len(item_ids), values.shape[1]))
    out[position >= 0] = values[position[position >= 0]]
    return out


def checkpoint_embeddings(path: str, item_ids: np.ndarray) -> np.ndarray:
    """[n_items, d] item embeddings of a deeprec checkpoint whose model has item_embeddings(), aligned to item_ids."""
    from deeprec.checkpoint import id_arrays, load_recommender

    model, meta = load_recommender(path)
    with torch.no_grad():
        emb = model.item_embeddings()
    if emb is None:
        raise ConfigError(f"model.feature_path={path} holds model {meta['model']!r}, which has no item_embeddings()")
    emb = emb.detach().cpu().double().numpy()
    _, ckpt_items = id_arrays(meta)
    return aligned_rows(emb, ckpt_items, item_ids, path)


class LinUCBRecommender(Recommender):
    """score(u, j) = x_jᵀθ_u + α_uj sqrt(x_jᵀ A_u⁻¹ x_j) over all items j (SPEC 2.4), batched over users."""

    name = "linucb"
    config_class = LinUCBConfig

    def __init__(self, n_users: int = 0, n_items: int = 0, seed: int = 0, **config) -> None:
        super().__init__(n_users, n_items, seed, **config)
        self.arm_features = torch.zeros(self.n_items, 0, dtype=torch.float64)
        self.bandit: BatchedLinUCB | None = None
        self.ability = torch.zeros(self.n_users, dtype=torch.float64)
        self.dif = torch.zeros(self.n_items, dtype=torch.float64)
        self.watched = sp.csr_matrix((self.n_users, self.n_items), dtype=np.float32)
        self._prepared: tuple | None = None  # ((device, dtype), PreparedArms); reset when the arms change

    # -- fitting --------------------------------------------------------------------------------
    def check_data(self, data) -> None:
        """What the configured arm features, exploration and reward need from the data, before any training."""
        c = self.config
        behaviour = data.extras.get("video_behaviour") is not None
        if c.features == "video_stats" and not behaviour:
            raise DataError(
                f"model=linucb: model.features=video_stats needs the Coursera behaviour table (data=coursera); "
                f"data={data.name} has none: use model.features=item_features, table or embeddings"
            )
        if c.features == "item_features" and data.item_features is None:
            raise DataError(f"model=linucb: model.features=item_features but data={data.name} has no item features")
        if c.features in ("table", "embeddings") and not Path(c.feature_path).is_file():
            raise DataError(f"model=linucb: model.feature_path={c.feature_path} does not exist (model.features={c.features})")
        if c.alpha_mode == "personalised" and c.features != "video_stats":
            raise ConfigError("model=linucb: model.alpha_mode=personalised needs the video difficulty: use model.features=video_stats")
        if c.reward != "rating" and not behaviour and c.reward != "fracComp":
            raise DataError(f"model=linucb: model.reward={c.reward!r} needs the Coursera behaviour table; data={data.name} has none")

    def _arm_features(self, data, rows: pd.DataFrame | None) -> np.ndarray:
        c = self.config
        self.check_data(data)
        if c.features == "video_stats":
            x = video_features(rows, rows["user"].to_numpy(), rows["item"].to_numpy(), data.n_users, data.n_items,
                               c.p, c.q, c.max_rewinds)
        elif c.features == "item_features":
            if data.item_features is None:
                raise DataError(f"model.features=item_features but data={data.name} has no item features")
            x = data.item_features.to_numpy(np.float64)
        elif c.features == "table":
            x = read_feature_table(c.feature_path, data.item_ids)
        else:
            x = checkpoint_embeddings(c.feature_path, data.item_ids)
        if c.standardize_features:
            scale = x.std(0)
            x = (x - x.mean(0)) / np.where(scale > 0, scale, 1.0)
        check_feature_values(x, [f"{c.features}[{j}]" for j in range(x.shape[1])], np.asarray(data.item_ids), f"model.features={c.features}")
        return np.array(x, dtype=np.float64)  # a writable copy (a read-only frame view would make torch warn)

    def report_cost(self, dim: int) -> None:
        """What d features cost: one d x d ridge matrix per user in every checkpoint, A and A⁻¹ in memory."""
        per_matrix = self.n_users * dim * dim * torch.finfo(resolve_dtype(self.config.dtype)).bits / 8 / 2**20
        line = (f"linucb: {dim} features per arm: {self.n_users} users x {dim} x {dim} ridge matrices "
                f"({self.config.dtype}) = {per_matrix:,.1f} MB in each checkpoint, about {2 * per_matrix:,.1f} MB in memory")
        (log.warning if per_matrix > 1024 else log.info)(("WARNING: " if per_matrix > 1024 else "") + line)

    def _history(self, data, splits: tuple[str, ...]):
        """(rows with user/item/reward, behaviour rows or None) of the known history in `splits`."""
        rows = behaviour_rows(data, splits)
        if self.config.reward == "rating" or rows is None:
            if self.config.reward != "rating" and self.config.reward not in ("fracComp",):
                raise DataError(f"model.reward={self.config.reward!r} needs the Coursera behaviour table; data={data.name} has none")
            frame = data.rows(splits)
            return frame.assign(reward=frame["rating"].astype(np.float64)), rows
        if self.config.reward not in rows.columns:
            raise DataError(f"model.reward={self.config.reward!r} is not a column of the behaviour table; columns: {list(rows.columns)}")
        return rows.assign(reward=rows[self.config.reward].astype(np.float64)), rows

    def _fit_users(self, data, splits: tuple[str, ...]) -> None:
        """Per-user ridge models, watched matrix and ability from the known history (no loop over users)."""
        history, rows = self._history(data, splits)
        users = np.array(history["user"], dtype=np.int64)
        items = np.array(history["item"], dtype=np.int64)
        x = self.arm_features.to(self.bandit.dtype)
        self.bandit.fit(torch.from_numpy(users), x[torch.from_numpy(items)], torch.from_numpy(np.array(history["reward"], dtype=np.float64)))
        self.watched = watched_matrix(users, items, data.n_users, data.n_items)
        if self.config.alpha_mode == "personalised":
            if rows is None:
                raise DataError(f"model.alpha_mode=personalised needs the Coursera behaviour table (quiz column s); data={data.name} has none")
            ability, _ = student_ability(rows["user"].to_numpy(), rows["fracComp"].to_numpy(), rows["s"].to_numpy(),
                                         data.n_users, data.n_items, self.config.w_p, self.config.w_c, self.config.w_q)
            self.ability = torch.from_numpy(ability)

    def fit(self, data, trainer=None, ckpt_path=None) -> "LinUCBRecommender":
        self.n_users, self.n_items = data.n_users, data.n_items
        rows = behaviour_rows(data, ("train",))
        x = self._arm_features(data, rows)
        self.arm_features = torch.from_numpy(np.array(x, dtype=np.float64))
        self._prepared = None
        if self.config.features == "video_stats":
            self.dif = torch.from_numpy(x[:, VIDEO_FEATURES.index("dif")].copy())
        elif self.config.alpha_mode == "personalised":
            raise ConfigError("model.alpha_mode=personalised needs the video difficulty: use model.features=video_stats")
        self.report_cost(x.shape[1])
        self.bandit = self._new_bandit(x.shape[1])
        self._fit_users(data, ("train",))
        return self

    def observe(self, data, splits: tuple[str, ...]) -> None:
        """Refit the users' ridge models on their known history (the evaluator's earlier splits)."""
        if self.bandit is not None and tuple(splits) != ("train",):
            self._fit_users(data, tuple(splits))

    # -- online learning --------------------------------------------------------------------
    def add_users(self, count: int) -> bool:
        """New users start at the ridge prior; their ability is the mean ability (personalised α)."""
        if self.bandit is None:
            return False
        self.bandit.add_users(count)
        mean_ability = float(self.ability.mean()) if len(self.ability) else 0.0
        self.ability = torch.cat([self.ability, torch.full((count,), mean_ability, dtype=self.ability.dtype)])
        self.watched = sp.vstack([self.watched, sp.csr_matrix((count, self.n_items), dtype=np.float32)]).tocsr()
        self.n_users += count
        return True

    def learn_online(self, users, items, rewards, timestamps) -> None:
        """Rank-1 updates of each user's ridge model on the played item's features and its reward
        (batched: BatchedLinUCB.update); the watched matrix, which only the personalised α reads,
        gains the items. A and b are sums, so the result does not depend on how events are batched."""
        if self.bandit is None or len(users) == 0:
            return
        x = self.scoring_arms().xt.T  # the arm features already on the bandit's device and dtype
        self.bandit.update(users, x[items.to(self.bandit.device)], rewards)
        if self.config.alpha_mode == "personalised":
            new = watched_matrix(users.cpu().numpy(), items.cpu().numpy(), self.n_users, self.n_items)
            self.watched = ((self.watched + new) > 0).astype(np.float32).tocsr()

    def _new_bandit(self, dim: int) -> BatchedLinUCB:
        return BatchedLinUCB(
            self.n_users, dim, alpha=self.config.alpha, lam=self.config.lam, device=self.device, dtype=resolve_dtype(self.config.dtype),
            reinvert_every=self.config.reinvert_every, chunk_elements=self.config.chunk_elements,
            inverse_method=self.config.inverse_method,
            # a user with several events in one update is re-inverted from A (one Cholesky) rather than
            # by one Sherman-Morrison round per event: measured 2x faster for online batches and replays
            max_sherman_morrison_rounds=1,
        )

    # -- scoring --------------------------------------------------------------------------------
    def exploration(self, users: torch.Tensor) -> float | torch.Tensor:
        """α for a batch of users: the fixed float, or [B, n_items] ability_s · S_s (SPEC 2.4)."""
        if self.config.alpha_mode == "fixed":
            return self.config.alpha
        rows = users.detach().cpu().numpy()
        scores = attention(self.watched, self.dif.cpu().numpy(), rows)
        return (self.ability[rows].unsqueeze(1) * scores).to(self.device)

    def scoring_arms(self) -> PreparedArms:
        """The arm features prepared for scoring once per bandit, device and dtype (not once per call)."""
        key = (self.bandit.device, self.bandit.dtype)
        if self._prepared is None or self._prepared[0] != key:
            self._prepared = (key, self.bandit.prepare_arms(self.arm_features.to(self.device)))
        return self._prepared[1]

    @torch.no_grad()
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """scores: [B, n_items] upper confidence bounds for users [B]."""
        users = users.to(self.device)
        return self.bandit.ucb(self.scoring_arms(), users, alpha=self.exploration(users)).float()

    def to(self, device) -> "LinUCBRecommender":
        self.device = resolve_device(device)
        if self.bandit is not None:
            self.bandit.to(self.device)
        return self

    # -- persistence ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        state = {"arm_features": self.arm_features, "ability": self.ability, "dif": self.dif,
                 **csr_to_tensors(self.watched, "watched")}
        if self.bandit is not None:
            state.update({f"bandit.{k}": v for k, v in self.bandit.state_dict().items()})
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.arm_features = state["arm_features"].cpu().double()
        self._prepared = None
        self.ability = state["ability"].cpu().double()
        self.dif = state["dif"].cpu().double()
        self.watched = tensors_to_csr(state, "watched")
        self.n_users, self.n_items = self.watched.shape
        self.bandit = self._new_bandit(self.arm_features.shape[1])
        self.bandit.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("bandit.")})
