"""The serving state: a checkpoint's model, the id maps, each user's seen items and the online changes.

Every change goes through apply(), in log order, so the state is a function of (checkpoint, events
applied): after a crash, the last snapshot plus a replay of the log tail gives the same state as a
run never interrupted. The model is used only through the Recommender interface (score,
learn_online, add_users, explain, state_tensors).

Who gets the model's ranking: a user known to the checkpoint with at least one seen item, or a
user met online once the model can hold them (add_users). Everyone else gets the fallback: the
checkpoint's most popular items (number of its users who had the item), the user's seen items left
out - the same fallback as deeprec-score.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from deeprec.checkpoint import id_arrays, seen_matrix
from deeprec.recommender import Recommender
from deeprec.scoring.batch import popularity_topk

GROWTH = 8  # when the model must grow, it grows by at least 1/GROWTH of its users (amortised)
MIN_GROWTH = 64


class ServingState:
    """What /recommend reads and /feedback changes (owned by the event loop: no locks)."""

    def __init__(self, model: Recommender, meta: dict, model_version: str) -> None:
        self.model = model
        self.model_version = model_version
        user_ids, item_ids = id_arrays(meta)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.item_slot = {str(item): n for n, item in enumerate(self.item_ids)}
        self.user_ids: list[str] = [str(user) for user in user_ids]
        self.user_slot = {user: n for n, user in enumerate(self.user_ids)}
        self.n_checkpoint_users = len(self.user_ids)
        self.base_seen = seen_matrix(meta).tocsr()
        self.base_has_history = np.diff(self.base_seen.indptr) > 0
        self.online_seen: dict[int, set[int]] = {}  # slot -> items seen since the checkpoint
        self.model_users = int(model.n_users)  # slots below this are users the model can score
        self.scores_new_users: bool | None = None  # unknown until the first new user
        # the fallback: every item by popularity, ties in deeprec-score's order (its popularity_topk)
        counts, order = popularity_topk(self.base_seen, self.n_items)
        self.popularity_order = torch.from_numpy(order)  # [I] items, most popular first
        self.popularity = torch.zeros(self.n_items).index_put_((self.popularity_order,), torch.from_numpy(counts))
        self.applied_seq = 0
        self.events_applied = 0

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # -- feedback ---------------------------------------------------------------------------
    def item_slots(self, item_ids) -> np.ndarray:
        """Item indices of ids, -1 for ids not in the catalogue."""
        # dict lookups: a pandas get_indexer costs ~0.4 ms a call to build its index of the ids asked for
        return np.fromiter((self.item_slot.get(str(item), -1) for item in item_ids), np.int64, len(item_ids))

    def user_slots(self, user_ids: list[str]) -> np.ndarray:
        """Slots of user ids; ids met for the first time get new slots in the order given."""
        slots = np.empty(len(user_ids), np.int64)
        for n, user in enumerate(user_ids):  # dict lookups, one per event
            slot = self.user_slot.get(user)
            if slot is None:
                slot = self.user_slot[user] = len(self.user_ids)
                self.user_ids.append(user)
            slots[n] = slot
        if len(self.user_ids) > self.model_users and self.scores_new_users is not False:
            self.grow_model(len(self.user_ids))
        return slots

    def grow_model(self, needed: int) -> None:
        """Make the model hold `needed` users, growing geometrically so that growth is amortised."""
        count = max(needed - self.model_users, self.model_users // GROWTH, MIN_GROWTH)
        self.scores_new_users = bool(self.model.add_users(count))
        if self.scores_new_users:
            self.model_users += count

    @torch.no_grad()
    def apply(self, seq: np.ndarray, user_ids: list[str], items: np.ndarray, rewards: np.ndarray,
              timestamps: np.ndarray) -> None:
        """Apply events (seq order, all items known) to the seen items and the model."""
        if len(seq) == 0:
            return
        slots = self.user_slots(user_ids)
        self.add_seen(slots, items)
        by_model = slots < self.model_users
        if by_model.any():
            self.model.learn_online(
                torch.from_numpy(slots[by_model]), torch.from_numpy(items[by_model]),
                torch.from_numpy(np.asarray(rewards, np.float64)[by_model]),
                torch.from_numpy(np.asarray(timestamps, np.float64)[by_model]),
            )
        self.applied_seq = int(seq[-1])
        self.events_applied += len(seq)

    def add_seen(self, slots: np.ndarray, items: np.ndarray) -> None:
        for slot, item in zip(slots.tolist(), items.tolist()):  # set insertions, one per event
            self.online_seen.setdefault(slot, set()).add(item)

    # -- recommend --------------------------------------------------------------------------
    def seen_parts(self, slot: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(the checkpoint's items of user `slot`, the items since) as int64 indices; they may overlap."""
        empty = np.zeros(0, np.int64)
        if slot is None:
            return empty, empty
        base = self.base_seen.indices[self.base_seen.indptr[slot]: self.base_seen.indptr[slot + 1]].astype(np.int64) \
            if slot < self.n_checkpoint_users else empty
        online = self.online_seen.get(slot)
        return base, (np.fromiter(online, np.int64, len(online)) if online else empty)

    def seen_items(self, slot: int | None) -> np.ndarray:
        """The items user `slot` had in the checkpoint or since (distinct indices, ascending)."""
        return np.union1d(*self.seen_parts(slot))

    def ranked_by_model(self, slot: int | None) -> bool:
        """Whether the model ranks for this user (else the popularity fallback)."""
        if slot is None or slot >= self.model_users:
            return False
        has_history = (slot < self.n_checkpoint_users and self.base_has_history[slot]) or slot in self.online_seen
        return bool(has_history)

    @torch.no_grad()
    def score_row(self, user_id: str, exclude_seen: bool) -> tuple[torch.Tensor, bool, int | None]:
        """(scores [I] float32 with -inf on excluded items, whether it is the fallback, the user's slot)."""
        slot = self.user_slot.get(user_id)
        by_model = self.ranked_by_model(slot)
        if by_model:
            scores = self.model.score(torch.tensor([slot]))[0].float().cpu().clone()
        else:
            scores = self.popularity.clone()
        if exclude_seen and slot is not None:
            for part in self.seen_parts(slot):  # two index assignments, no union
                scores[torch.from_numpy(part)] = -torch.inf
        return scores, not by_model, slot

    @torch.no_grad()
    def because(self, slot: int, items: np.ndarray, top: int = 3) -> list[list[dict]]:
        """Per served item, the history items and weights the model's explain() gives ([] when it has none)."""
        explained = self.model.explain(torch.full((len(items),), slot, dtype=torch.int64), torch.from_numpy(items), top)
        if explained is None:  # a model that cannot say
            return [[] for _ in items]
        history, weights = explained
        out = []
        for row_items, row_weights in zip(history.tolist(), weights.tolist()):
            out.append([{"item_id": str(self.item_ids[i]), "weight": round(float(w), 6)}
                        for i, w in zip(row_items, row_weights) if i >= 0])
        return out

    # -- persistence ------------------------------------------------------------------------
    def online_pairs(self) -> np.ndarray:
        """[n, 2] int64 (slot, item): each item seen online, once per user (online_seen as an array)."""
        slots = np.fromiter(self.online_seen, np.int64, len(self.online_seen))
        counts = np.fromiter(map(len, self.online_seen.values()), np.int64, len(slots))
        items = np.fromiter(itertools.chain.from_iterable(self.online_seen.values()), np.int64, int(counts.sum()))
        return np.stack([np.repeat(slots, counts), items], 1)

    def snapshot(self) -> dict:
        """The state as tensors and plain values (a copy: the live state keeps changing)."""
        return {
            "model_version": self.model_version,
            "seq": self.applied_seq,
            "events_applied": self.events_applied,
            "model_users": self.model_users,
            "scores_new_users": self.scores_new_users,
            "online_user_ids": self.user_ids[self.n_checkpoint_users:],
            "online_seen": torch.from_numpy(self.online_pairs()),
            "model_state": {key: value.detach().clone().cpu() for key, value in self.model.state_tensors().items()},
        }

    def restore(self, payload: dict) -> None:
        """Inverse of snapshot(), on a state freshly built from the same checkpoint."""
        grow = int(payload["model_users"]) - self.model_users
        if grow > 0:
            self.model.add_users(grow)
            self.model_users += grow
        self.model.load_state_tensors(payload["model_state"])
        self.scores_new_users = payload["scores_new_users"]
        for user in payload["online_user_ids"]:
            self.user_slot[user] = len(self.user_ids)
            self.user_ids.append(user)
        self.online_seen = {}
        pairs = payload["online_seen"].numpy()
        self.add_seen(pairs[:, 0], pairs[:, 1])
        self.applied_seq = int(payload["seq"])
        self.events_applied = int(payload["events_applied"])
