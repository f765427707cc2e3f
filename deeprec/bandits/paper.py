"""The paper's evaluation (SPEC 2.5): protocols `paper` and `holdout`, metrics per ability group.

T(s) = videos s watched AND answered correctly (s == 1). `paper` ranks every video, watched ones
included, and takes T over all of s's rows (in-sample, as the paper did); `holdout` hides a share of
each student's videos, ranks the videos not visible in training, and takes T = hidden ∩ correct.
Precision, recall, F1 and hit ratio are the shared definitions (deeprec.evaluation.evaluate_topk,
over students with a non-empty T); adaptivity and personalization are over every student of a group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.bandits.ability import GROUPS
from deeprec.data.interactions import InteractionData, from_frame
from deeprec.config import check_choice
from deeprec.ranking import full_ranking_topk
from deeprec.evaluation.metrics import _set_metrics, adaptivity, evaluate_topk

PROTOCOLS = ("paper", "holdout")
PAPER_KS = (5, 8, 10)


def holdout_mask(student: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """hidden: [N] bool, a random `share` of each student's rows (floor, at least 1 when m_s >= 2, none when m_s = 1)."""
    rng = np.random.default_rng(seed)
    key = rng.random(len(student))
    order = np.lexsort((key, student))
    counts = np.bincount(student)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(student), np.int64)
    rank[order] = np.arange(len(student)) - starts[student[order]]
    n_hide = np.where(counts >= 2, np.maximum(np.floor(share * counts), 1), 0).astype(np.int64)
    return rank < n_hide[student]


def coursera_interactions(behaviour: pd.DataFrame, protocol: str = "paper", holdout_share: float = 0.2,
                          seed: int = 0) -> InteractionData:
    """InteractionData (item = video, rating = fracComp) with extras["video_behaviour"] = the cleaned table.

    paper: every row is train; holdout: the hidden rows are test.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    student = pd.Index(np.unique(behaviour["userID"].astype(str))).get_indexer(behaviour["userID"].astype(str))
    hidden = holdout_mask(student, holdout_share, seed) if protocol == "holdout" else np.zeros(len(student), bool)
    frame = pd.DataFrame({
        "user_id": behaviour["userID"].astype(str).to_numpy(),
        "item_id": behaviour["VidID"].astype(str).to_numpy(),
        "rating": behaviour["fracComp"].to_numpy(np.float32),
        "split": np.where(hidden, "test", "train"),
    })
    data = from_frame(frame, "coursera video behaviour", name="coursera")
    data.extras["video_behaviour"] = behaviour
    data.extras["correct"] = behaviour["s"].to_numpy()
    return data


def correct_truth(data: InteractionData, protocol: str) -> sp.csr_matrix:
    """T: [U, n_items] binary CSR of watched-and-correct videos (all rows for paper, test rows for holdout)."""
    frame = data.frame
    rows = (data.extras["correct"] == 1) & (frame["split"].to_numpy() == ("test" if protocol == "holdout" else "train"))
    t = sp.csr_matrix((np.ones(int(rows.sum()), np.float32), (frame["user"].to_numpy()[rows], frame["item"].to_numpy()[rows])),
                      shape=(data.n_users, data.n_items))
    t.sum_duplicates()
    t.data[:] = 1.0
    return t


def rank_videos(model, data: InteractionData, protocol: str, k: int, batch_size: int = 4096) -> torch.Tensor:
    """topk: [U, k] for every student; holdout excludes the videos visible in training, paper excludes none."""
    exclude = data.matrix("train", binary=True) if protocol == "holdout" else None
    _, items = full_ranking_topk(model.score, np.arange(data.n_users), k, exclude=exclude, batch_size=batch_size,
                                 device=model.device)
    return items


def personalization(topk: torch.Tensor, k: int, n_items: int) -> float:
    """1 − mean over student pairs of |R(s1) ∩ R(s2)| / k (the shared definition, over every list)."""
    return _set_metrics(topk, k, n_items, None, 0)[f"personalization@{k}"]


def paper_metrics(topk: torch.Tensor, truth: sp.csr_matrix, dif: np.ndarray, watched: sp.csr_matrix,
                  ks=PAPER_KS) -> dict[str, float]:
    """precision, recall, f1, hit_ratio, adaptivity, personalization @ each N for one set of students."""
    shared = evaluate_topk(topk, truth, ks=ks, n_items=truth.shape[1])
    out = {"students": float(topk.shape[0]), "students_with_truth": shared["n_users_evaluated"]}
    for k in ks:
        for name, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1"), ("hit_ratio", "hit")):
            out[f"{name}@{k}"] = shared.get(f"{key}@{k}", float("nan"))
        out[f"adaptivity@{k}"] = adaptivity(topk, k, dif, watched)
        out[f"personalization@{k}"] = personalization(topk, k, truth.shape[1])
    return out


def metrics_by_group(topk: torch.Tensor, truth: sp.csr_matrix, dif: np.ndarray, watched: sp.csr_matrix,
                     groups: np.ndarray, ks=PAPER_KS) -> dict[str, dict[str, float]]:
    """{group: paper_metrics} for active, potential, inactive and all students."""
    out = {}
    for name in (*GROUPS, "all"):  # three groups and the total, not a loop over students
        rows = np.ones(len(groups), bool) if name == "all" else groups == name
        out[name] = paper_metrics(topk[torch.from_numpy(rows)], truth[rows], dif, watched[rows], ks)
    return out
