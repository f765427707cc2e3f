"""User segments for per-segment metrics: the activity groups of the LinUCB paper (active / potential /
inactive, SPEC 2.2) or quantiles of the train-history length, for any data. Data-level only (the
train split and the data's own signals), so every model is cut into the same segments.

- `ability`: K-means (k = 3) on standardised (ability, items in train), named as SPEC 2.2 names the
  clusters; ability from the Coursera behaviour table (fracComp, quiz s) where the data has it, else
  from the ratings (participation, mean rating / max, share of maximal ratings).
- `history`: tertiles of the number of train items, labelled by their range (`history_1-2`,
  `history_3-5`, `history_6+`); ties merge segments when lengths repeat a lot.
- `auto`: ability on data with the behaviour table (coursera), history elsewhere; `none`: no segments.
Users without a train item are `no_history`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deeprec.config import check_choice

SEGMENT_MODES = ("auto", "ability", "history", "none")
NO_HISTORY = "no_history"


def history_segments(lengths: np.ndarray) -> np.ndarray:
    """Labels [U] by tertiles of the history lengths [U] of the users with a history (range labels)."""
    lengths = np.asarray(lengths, np.int64)
    labels = np.full(len(lengths), NO_HISTORY, dtype=object)
    active = lengths > 0
    if not active.any():
        return labels.astype(str)
    edges = np.unique(np.floor(np.quantile(lengths[active], [1 / 3, 2 / 3])).astype(np.int64))
    edges = edges[edges < lengths[active].max()]
    bounds = [1, *(edges + 1).tolist()]  # first length of each segment
    last = int(lengths[active].max())
    for i, low in enumerate(bounds):
        high = bounds[i + 1] - 1 if i + 1 < len(bounds) else None
        name = f"history_{low}+" if high is None else (f"history_{low}" if high == low else f"history_{low}-{high}")
        mask = active & (lengths >= low) & (lengths <= (last if high is None else high))
        labels[mask] = name
    return labels.astype(str)


def ability_table(data) -> pd.DataFrame:
    """Per user: ability and n (train items), from the behaviour table (Coursera) or the ratings."""
    from deeprec.bandits.ability import student_ability
    from deeprec.bandits.features import rating_signal

    table = data.extras.get("video_behaviour")
    train = data.rows("train")
    if table is not None:
        in_train = data.frame["split"].to_numpy() == "train"
        behaviour = table[in_train] if len(table) == len(data.frame) else None
        if behaviour is not None:
            ability, n = student_ability(train["user"].to_numpy(), behaviour["fracComp"].to_numpy(),
                                         behaviour["s"].to_numpy(), data.n_users, data.n_items)
            return pd.DataFrame({"ability": ability, "n_train": n})
    ratings = train["rating"].to_numpy(np.float64)
    completion, success = rating_signal(ratings, float(ratings.max()) if len(ratings) else 1.0)
    ability, n = student_ability(train["user"].to_numpy(), completion, success, data.n_users, data.n_items)
    return pd.DataFrame({"ability": ability, "n_train": n})


def user_segments(data, mode: str = "auto", seed: int = 0) -> pd.DataFrame | None:
    """One row per user (index = user index): `segment` label, `n_train`, and `ability` for ability
    segments; None for mode none. Cached in data.extras per mode."""
    from deeprec.bandits.ability import ability_groups

    check_choice(mode, SEGMENT_MODES, "eval.segments")
    if mode == "auto":
        mode = "ability" if data.extras.get("video_behaviour") is not None else "history"
    if mode == "none":
        return None
    key = f"segments:{mode}:{seed}"
    if key in data.extras:
        return data.extras[key]
    train = data.matrix("train", binary=True)
    lengths = np.diff(train.indptr)
    if mode == "history":
        table = pd.DataFrame({"segment": history_segments(lengths), "n_train": lengths})
    else:
        table = ability_table(data)
        labels = np.full(data.n_users, NO_HISTORY, dtype=object)
        active = table["n_train"].to_numpy() > 0
        if active.sum() >= 3:
            labels[active] = ability_groups(table["ability"].to_numpy()[active], table["n_train"].to_numpy()[active], seed)
        table.insert(0, "segment", labels.astype(str))
    data.extras[key] = table
    return table
