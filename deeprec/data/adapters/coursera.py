"""`data=coursera`: the Coursera video-behaviour table (SPEC 2.1), one row per (student, video).

Cleaning (SPEC 2.1): rows with fracSpent == 0 (`empty_record`) and error records above
`error_limits` (`fracComp_above_1`, ...) go to data.extras["rejects"] with the reason, as do rows with
no student (`missing_user`), a non-number in a numeric column (`bad_value`) and repeated
(student, video) pairs (`duplicate`); rows_in == accepted + rejected. item = video, rating =
fracComp (or `s`, or 1.0 for `binary`). No timestamps, so the split is a random per-student hold-out
(`holdout_share` of each student's videos test, SPEC 2.5) with a valid share of the rest.
data.extras["video_behaviour"]: the cleaned table with its original column names (all splits).
item_features: fracStudy, avgfracComp, fracCorrect per video over the train rows only (no test leak);
extras["item_difficulty"]: SPEC 2.3's dif over the same rows (adaptivity@N in the shared evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deeprec.config import check_choice
from deeprec.data.adapters.shared_data import dataset_path
from deeprec.data.features import SideFeaturesConfig, attach_side_features
from deeprec.data.interactions import InteractionData, from_frame
from deeprec.data.splits import SplitConfig, assign_splits
from deeprec.data.tables import read_table
from deeprec.errors import ConfigError, DataError

FOLDER = "coursera-video-behavior"
FILE = "behavior-performance.tsv"
ID_COLUMNS = ("userID", "VidID")
NUMERIC_COLUMNS = ("fracSpent", "fracComp", "fracPlayed", "fracPaused", "numPauses", "avgPBR", "stdPBR",
                   "numRWs", "numFFs", "s")
REQUIRED = ("userID", "VidID", "fracSpent", "fracComp", "s")
RATINGS = ("fracComp", "s", "binary")
VIDEO_FEATURES = ("fracStudy", "avgfracComp", "fracnumRWs", "fracCorrect", "dif")
ITEM_FEATURES = ("fracStudy", "avgfracComp", "fracCorrect")  # data.item_features: the VIDEO_FEATURES of the train rows


def _default_limits() -> dict[str, float]:
    return {"fracComp": 1.0, "numRWs": 60.0, "numFFs": 60.0, "fracPaused": 100.0, "fracSpent": 100.0}


@dataclass
class CourseraDataConfig(SideFeaturesConfig):
    name: str = "coursera"
    path: str | None = None  # the TSV or its folder; default ../shared/data/coursera-video-behavior
    rating: str = "fracComp"  # fracComp | s | binary
    drop_empty: bool = True  # fracSpent == 0 -> rejects (empty_record; the paper's 549 empty records)
    error_limits: dict[str, float] = field(default_factory=_default_limits)  # column > limit -> rejects
    holdout_share: float = 0.2  # share of each student's videos held out as test (SPEC 2.5 holdout)
    valid_share: float = 0.1  # share of the remaining (train) videos used as valid
    seed: int = 0  # the random hold-out


CONFIG = CourseraDataConfig


def read_behaviour(path: Path) -> pd.DataFrame:
    """The raw table (a .tsv/.txt tab-separated, or .csv/.parquet; header row); ids as text."""
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise DataError(f"{path}: the Coursera video-behaviour table does not exist (expected {FILE})")
    dtype = {c: str for c in ID_COLUMNS}
    if path.suffix.lower() == ".txt":  # the source repository's name for the same tab-separated file
        raw = pd.read_csv(path, sep="\t", dtype=dtype) if path.stat().st_size else read_table(path)
    else:
        raw = read_table(path, dtype=dtype)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: required column(s) {missing} missing; found {list(raw.columns)}")
    if len(raw) == 0:
        raise DataError(f"{path}: no rows (a header but no student-video records)")
    return raw


def clean_behaviour(raw: pd.DataFrame, drop_empty: bool = True, error_limits: dict[str, float] | None = None,
                    source: str = "coursera") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted rows with numeric columns as float64, rejects with `reason`), by SPEC 2.1 and 1.2.

    Reasons, first match wins: missing_user, missing_video, bad_value, duplicate, empty_record,
    <column>_above_<limit>.
    """
    limits = _default_limits() if error_limits is None else dict(error_limits)
    unknown = sorted(set(limits) - set(raw.columns))
    if unknown:
        raise ConfigError(f"data.error_limits names column(s) {unknown} that {source} does not have; columns: {list(raw.columns)}")
    reason = pd.Series(pd.NA, index=raw.index, dtype="object")

    def mark(mask, why: str) -> None:
        nonlocal reason
        reason = reason.mask(reason.isna() & np.asarray(mask, bool), why)

    for col, why in (("userID", "missing_user"), ("VidID", "missing_video")):
        ids = raw[col].astype("string").str.strip()
        mark((ids.isna() | (ids == "")).to_numpy(), why)
    numeric = {c: pd.to_numeric(raw[c], errors="coerce") for c in NUMERIC_COLUMNS if c in raw.columns}
    for col, values in numeric.items():
        mark((values.isna() | ~np.isfinite(values.astype(float))).to_numpy(), "bad_value")
    mark(raw.duplicated(subset=list(ID_COLUMNS), keep="first").to_numpy(), "duplicate")
    if drop_empty:
        mark((numeric["fracSpent"] == 0).to_numpy(), "empty_record")
    for col, limit in limits.items():
        values = numeric[col] if col in numeric else pd.to_numeric(raw[col], errors="coerce")
        mark((values > limit).to_numpy(), f"{col}_above_{limit:g}")
    rejects = raw[reason.notna()].assign(reason=reason[reason.notna()])
    accepted = raw[reason.isna()].copy()
    for col, values in numeric.items():
        accepted[col] = values[reason.isna()].astype(np.float64)
    for col in ID_COLUMNS:
        accepted[col] = accepted[col].astype(str).str.strip()
    return accepted.reset_index(drop=True), rejects


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


def load(cfg: CourseraDataConfig) -> InteractionData:
    check_choice(cfg.rating, RATINGS, "data.rating")
    if not 0 < cfg.holdout_share < 1:
        raise ConfigError(f"data.holdout_share={cfg.holdout_share} must be between 0 and 1 (exclusive)")
    if not 0 <= cfg.valid_share < 1:
        raise ConfigError(f"data.valid_share={cfg.valid_share} must be in [0, 1)")
    path = dataset_path(cfg.path, FOLDER, "coursera")
    raw = read_behaviour(path)
    behaviour, rejects = clean_behaviour(raw, cfg.drop_empty, cfg.error_limits, str(path))
    if len(behaviour) == 0:
        raise DataError(f"{path}: every row was rejected ({rejects['reason'].value_counts().to_dict()})")
    rating = {"fracComp": behaviour["fracComp"], "s": behaviour["s"], "binary": pd.Series(1.0, index=behaviour.index)}
    table = pd.DataFrame({
        "user_id": behaviour["userID"].to_numpy(),
        "item_id": behaviour["VidID"].to_numpy(),
        "rating": rating[cfg.rating].to_numpy(np.float32),
    })
    data = from_frame(table, str(path), name=cfg.name)
    rule = SplitConfig(strategy="random", train_share=1.0 - cfg.holdout_share, valid_share=cfg.valid_share, seed=cfg.seed)
    data.frame["split"] = assign_splits(data.frame, rule).to_numpy()
    in_train = data.frame["split"].to_numpy() == "train"
    videos = video_features(behaviour[in_train], data.frame["user"].to_numpy()[in_train],
                            data.frame["item"].to_numpy()[in_train], data.n_users, data.n_items)  # SPEC 2.3 over the train rows
    data.item_features = pd.DataFrame(videos[:, [VIDEO_FEATURES.index(c) for c in ITEM_FEATURES]].astype(np.float32),
                                      columns=list(ITEM_FEATURES))
    data.extras["item_difficulty"] = videos[:, VIDEO_FEATURES.index("dif")]
    data.extras.update(rejects=rejects, rows_in=len(raw), video_behaviour=behaviour)
    return attach_side_features(data, cfg)
