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

from deeprec.data.adapters.coursera import clean_behaviour, read_behaviour

VIDEO_FEATURES = ("fracStudy", "avgfracComp", "fracnumRWs", "fracCorrect", "dif")
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


def video_features(
    behaviour: pd.DataFrame, student: np.ndarray, video: np.ndarray, n_students: int, n_videos: int,
    p: float = 0.5, q: float = 0.5, max_rewinds: float = 60.0,
) -> np.ndarray:
    """X: [n_videos, 5] float64 columns VIDEO_FEATURES (SPEC 2.3), over the students who watched each video.

    student/video: the row's integer indices. fracStudy = M_j / n_students; avgfracComp = mean fracComp;
    fracnumRWs = mean(min(numRWs, 60)) / 60; fracCorrect = mean s; dif = p(1 − fracCorrect) + q·fracnumRWs.
    A video nobody watched gets zeros (and dif = p).
    """
    watchers = np.bincount(video, minlength=n_videos).astype(np.float64)
    denom = np.maximum(watchers, 1.0)

    def mean_per_video(values: np.ndarray) -> np.ndarray:
        return np.bincount(video, weights=values.astype(np.float64), minlength=n_videos) / denom

    frac_study = watchers / max(n_students, 1)
    avg_comp = mean_per_video(behaviour["fracComp"].to_numpy())
    frac_rws = mean_per_video(np.minimum(behaviour["numRWs"].to_numpy(np.float64), max_rewinds)) / max_rewinds
    frac_correct = mean_per_video(behaviour["s"].to_numpy())
    dif = p * (1.0 - frac_correct) + q * frac_rws
    return np.stack([frac_study, avg_comp, frac_rws, frac_correct, dif], axis=1)


def attention(watched: sp.csr_matrix, dif: np.ndarray | torch.Tensor, users=None) -> torch.Tensor:
    """S: [U, n_videos] float64, S[s, j] = mean over the videos m that s watched of |dif_j − dif_m| (SPEC 2.4).

    All students at once: S = W @ |dif_j − dif_m| / m_s; a student with no video gets S = 0.
    `users` (optional index array) selects rows of W.
    """
    dif = torch.as_tensor(np.asarray(dif), dtype=torch.float64)
    gaps = (dif.unsqueeze(0) - dif.unsqueeze(1)).abs()  # [n_videos (m), n_videos (j)]
    rows = watched if users is None else watched[np.asarray(users)]
    w = torch.from_numpy(np.asarray(rows.todense(), dtype=np.float64))
    m = w.sum(1, keepdim=True).clamp(min=1.0)
    return (w @ gaps) / m


def personalised_alpha(ability: np.ndarray | torch.Tensor, attention_scores: torch.Tensor) -> torch.Tensor:
    """α: [U, n_videos] = ability_s · S_s[j] (SPEC 2.4): less exploration for weak students and watched-like videos."""
    ability = torch.as_tensor(np.asarray(ability), dtype=attention_scores.dtype, device=attention_scores.device)
    return ability.unsqueeze(1) * attention_scores
