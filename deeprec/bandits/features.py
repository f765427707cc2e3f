"""Video features and personalised exploration for the Coursera video-behaviour logs (SPEC 2.1, 2.3, 2.4).

The behaviour table has one row per (student, video) with the original columns userID, VidID,
fracSpent, fracComp, fracPlayed, fracPaused, numPauses, avgPBR, stdPBR, numRWs, numFFs, s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.bandits.linucb import FactoredAlpha
from deeprec.data.adapters.coursera import VIDEO_FEATURES, clean_behaviour, read_behaviour, video_features

__all__ = ["VIDEO_FEATURES", "PersonalisedAlpha", "attention", "clean_video_behaviour", "course_difficulty", "personalised_alpha",
           "rating_signal", "read_video_behaviour", "video_features", "watched_matrix"]


def clean_video_behaviour(raw: pd.DataFrame, source: str = "behaviour table") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows, rejects with `reason`) by SPEC 2.1 with the default limits: the coursera
    data adapter's cleaning (empty records, error records, missing ids, bad values, duplicates)."""
    return clean_behaviour(raw, source=source)


def read_video_behaviour(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cleaned behaviour table of a TSV/CSV file (or its folder) and its rejects (SPEC 2.1)."""
    return clean_video_behaviour(read_behaviour(Path(path)), str(path))


def watched_matrix(student: np.ndarray, video: np.ndarray, n_students: int, n_videos: int) -> sp.csr_matrix:
    """W: [n_students, n_videos] binary CSR of the videos each student watched."""
    w = sp.csr_matrix(
        (np.ones(len(student), np.float32), (student, video)), shape=(n_students, n_videos), dtype=np.float32
    )
    w.sum_duplicates()
    w.data[:] = 1.0
    return w


def attention(watched: sp.csr_matrix, dif: np.ndarray | torch.Tensor, users=None,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """S: [U, n_videos], S[s, j] = mean over the videos m that s watched of |dif_j − dif_m| (SPEC 2.4).

    With the videos sorted by difficulty x, S_s(x_k) = (x_k (2 C_k − m_s) + T_s − 2 P_k) / m_s, where
    C_k and P_k count and sum the watched difficulties before position k and T_s sums all of them:
    two cumulative sums per user, O(U · n) instead of the O(U · n²) product with |x_j − x_m|.
    A student with no video gets S = 0. `users` (optional index array) selects rows of W.
    """
    dif = torch.as_tensor(np.asarray(dif), dtype=torch.float64)
    order = torch.argsort(dif, stable=True)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))
    x = dif[order].to(dtype)
    rows = sp.csr_matrix(watched if users is None else watched[np.asarray(users)])
    # the watched matrix with its columns in difficulty order, made dense once
    in_order = sp.csr_matrix((rows.data, position.numpy()[rows.indices], rows.indptr), shape=rows.shape)
    w = torch.from_numpy(in_order.toarray()).to(dtype).clamp_(max=1.0)
    m = w.sum(1, keepdim=True)
    weighted = w * x
    total = weighted.sum(1, keepdim=True)  # T_s
    before = torch.cumsum(w, 1).sub_(w)  # C_k: watched videos strictly before position k
    before_sum = torch.cumsum(weighted, 1).sub_(weighted)  # P_k
    scores = before.mul_(2).sub_(m).mul_(x).add_(total).sub_(before_sum.mul_(2)).div_(m.clamp(min=1.0))
    return scores[:, position]


class PersonalisedAlpha(FactoredAlpha):
    """α_s[j] = ability_s · S_s[j] (SPEC 2.4) as its factors: ability [U], and the attention S computed
    for a chunk of users at a time from the watched matrix and the difficulties (never [U, n] at once)."""

    def __init__(self, ability: torch.Tensor, watched: sp.csr_matrix, dif: torch.Tensor,
                 dtype: torch.dtype = torch.float64) -> None:
        self.ability = torch.as_tensor(ability, dtype=torch.float64)
        self.watched = sp.csr_matrix(watched)
        self.dif = torch.as_tensor(dif, dtype=torch.float64).cpu()
        self.dtype = dtype

    def factors(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = users.detach().cpu().numpy()
        return self.ability[rows].to(self.dtype), attention(self.watched, self.dif, rows, self.dtype)


def rating_signal(ratings: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(completion [N] = rating / scale in 0..1, success [N] = 1 where the rating is the maximum): what
    fracComp and the quiz answer s are on Coursera, read from a course log's ratings (SPEC 1.8: 5 = the
    learner viewed at least their usual share of the course)."""
    scale = scale if scale > 0 else 1.0
    completion = np.clip(np.asarray(ratings, np.float64) / scale, 0.0, 1.0)
    return completion, (completion >= 1.0 - 1e-9).astype(np.float64)


def course_difficulty(items: np.ndarray, completion: np.ndarray, success: np.ndarray, n_items: int,
                      p: float = 0.5, q: float = 0.5) -> np.ndarray:
    """dif [n_items] = p (1 − mean success) + q (1 − mean completion) over the rows of each item (SPEC 2.3's
    form, with the completion signal in place of rewinds); an item without rows gets p + q."""
    count = np.bincount(items, minlength=n_items).astype(np.float64)
    denom = np.maximum(count, 1.0)
    mean_success = np.bincount(items, weights=success, minlength=n_items) / denom
    mean_completion = np.bincount(items, weights=completion, minlength=n_items) / denom
    return np.where(count > 0, p * (1 - mean_success) + q * (1 - mean_completion), p + q)


def personalised_alpha(ability: np.ndarray | torch.Tensor, attention_scores: torch.Tensor) -> torch.Tensor:
    """α: [U, n_videos] = ability_s · S_s[j] (SPEC 2.4): less exploration for weak students and watched-like videos."""
    ability = torch.as_tensor(np.asarray(ability), dtype=attention_scores.dtype, device=attention_scores.device)
    return ability.unsqueeze(1) * attention_scores
