"""The ratings paper's experiment (SPEC 1.11, seed 002): 10 rating strategies x item-kNN, precision at a
per-user k, resampled significance tests, and the lesson-duration curves of its Figures 3-4.

    python -m deeprec.cli.ratings_paper +experiment=ratings_paper_synthetic   (the Hydra app: deeprec.cli)
    python -m deeprec.experiments.ratings_paper +experiment=ratings_paper_epm  (the same app)

The log comes from the data registry (an event log of conf/data: synthetic, epm, events) and is rated
once (sessions and durations); every strategy is then a re-rating of the same (user, course) pairs,
and every resample a row subset of the same sparse matrices. The item-kNN is baselines.knn's, the
metric evaluation.metrics' precision@k_u, the tables and figures evaluation.report's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy import stats

from deeprec.atomic import write_text_atomic
from deeprec.baselines.knn import item_similarity, itemknn_scores
from deeprec.config import check_at_least, check_choice, resolve_device
from deeprec.data.ratings import RatingsResult
from deeprec.data.ratings.config import PENALTIES, THRESHOLDS
from deeprec.data.ratings.rating import RatedMatrices, rated_matrices
from deeprec.errors import ConfigError, DataError
from deeprec.evaluation.metrics import precision_at_user_k, random_precision
from deeprec.evaluation.report import json_default, number_table, plot_lines
from deeprec.evaluation.stats import bonferroni, rank_sum_greater
from deeprec.ranking import TIE_ORDERS, random_item_rank, tie_ranks

THRESHOLD_LABELS = {"per_user": "PU", "global": "GPC"}
PENALTY_LABELS = {"quadratic": "F1 quadratic", "linear": "F2 linear", "log": "F3 log", "sqrt": "F4 sqrt", "step": "F5 step"}

# The paper's reported numbers (GCFGlobal, 7,071 users, 230 courses), shown beside ours.
PAPER_PRECISION = {  # Table 2: precision@k_u on the whole data set
    ("per_user", "quadratic"): 0.3928, ("global", "quadratic"): 0.3923,
    ("per_user", "linear"): 0.3759, ("global", "linear"): 0.3711,
    ("per_user", "log"): 0.3783, ("global", "log"): 0.3753,
    ("per_user", "sqrt"): 0.3911, ("global", "sqrt"): 0.3824,
    ("per_user", "step"): 0.1677, ("global", "step"): 0.0526,
}
PAPER_RESAMPLED = {  # Table 5: mean precision over 100 samples of 3,000 users
    ("per_user", "quadratic"): 0.225, ("global", "quadratic"): 0.225,
    ("per_user", "linear"): 0.239, ("global", "linear"): 0.214,
    ("per_user", "log"): 0.241, ("global", "log"): 0.218,
    ("per_user", "sqrt"): 0.246, ("global", "sqrt"): 0.223,
    ("per_user", "step"): 0.09, ("global", "step"): 0.03,
}
# Tables 3-4: the p-values as printed (uncorrected: 1.261e-34 is the smallest one-sided rank-sum p of
# 100 vs 100 fully separated values, and it appears in both tables).
PAPER_P_THRESHOLD = {"quadratic": 0.448, "linear": 5.273e-32, "log": 9.649e-32, "sqrt": 5.750e-32, "step": 1.261e-34}
PAPER_P_PENALTY = {"quadratic": 0.033, "linear": 7.837e-09, "log": 8.400e-05, "step": 1.261e-34}


# ----------------------------------------------------------------------------- configuration


@dataclass
class PaperProtocol:
    """SPEC 1.11: the strategies, the item-kNN, the metric, the resampling and the tests."""

    thresholds: list[str] = field(default_factory=lambda: list(THRESHOLDS))
    penalties: list[str] = field(default_factory=lambda: list(PENALTIES))
    k: int = 5  # precision at k_u = min(k, |test(u)|)
    neighbours: int = 64  # each item keeps its nearest items
    min_similarity: float = 0.001  # similarities below this are set to 0
    n_resamples: int = 100
    sample_users: int = 3000  # users per resample, drawn without replacement
    small_sample_share: float = 0.8  # fewer users than sample_users: each resample draws this share of them
    seed: int = 0  # resampling and the random tie order
    tie_break: str = "random"  # equal scores: random (a seeded item order) | index (course id order) | popularity
    reference_threshold: str = "per_user"  # the penalty tests compare reference_penalty with the others under it
    reference_penalty: str = "sqrt"
    bonferroni: str = "per_table"  # per_table: 5 threshold tests, 4 penalty tests | all: the 9 together
    alpha: float = 0.05
    min_lesson_seconds_grid: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0])
    duration_thresholds: list[str] = field(default_factory=lambda: ["per_user"])  # Figures 3-4: PU, one line per penalty
    duration_penalties: list[str] = field(default_factory=lambda: list(PENALTIES))
    batch_users: int = 4096  # users scored at once (memory ~ batch_users x n_courses)
    device: str = "cpu"  # cpu | cuda: where the ranking runs
    cpu_threads: int = 1  # torch threads while ranking on CPU (small blocks: 1 is fastest); 0 = torch's default

    def check(self) -> "PaperProtocol":
        """Raise ConfigError naming the protocol key when a value is outside its valid set."""
        for key, valid in (("thresholds", THRESHOLDS), ("penalties", PENALTIES),
                           ("duration_thresholds", THRESHOLDS), ("duration_penalties", PENALTIES)):
            bad = [v for v in getattr(self, key) if v not in valid]
            if bad or not getattr(self, key):
                raise ConfigError(f"protocol.{key}={getattr(self, key)} must be a non-empty list of {list(valid)}")
        if self.reference_threshold not in self.thresholds or self.reference_penalty not in self.penalties:
            raise ConfigError(
                f"protocol.reference_threshold/reference_penalty={self.reference_threshold}/{self.reference_penalty} "
                f"must be among protocol.thresholds {self.thresholds} and protocol.penalties {self.penalties}"
            )
        check_choice(self.tie_break, TIE_ORDERS, "protocol.tie_break")
        check_choice(self.bonferroni, ("per_table", "all"), "protocol.bonferroni")
        if self.cpu_threads < 0:
            raise ConfigError(f"protocol.cpu_threads={self.cpu_threads} must be >= 0 (0: torch's default)")
        check_at_least(self, ("k", "neighbours", "sample_users", "batch_users"), prefix="protocol")
        if self.n_resamples < 2:
            raise ConfigError(f"protocol.n_resamples={self.n_resamples} must be >= 2 (the tests compare samples)")
        if not 0 < self.small_sample_share < 1:
            raise ConfigError(f"protocol.small_sample_share={self.small_sample_share} must be between 0 and 1 (exclusive)")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"protocol.alpha={self.alpha} must be between 0 and 1 (exclusive)")
        if any(s < 0 for s in self.min_lesson_seconds_grid):
            raise ConfigError(f"protocol.min_lesson_seconds_grid={self.min_lesson_seconds_grid} must hold values >= 0")
        resolve_device(self.device, "protocol.device", allow_auto=False)
        return self

    def strategies(self) -> list[tuple[str, str]]:
        """(threshold, penalty) pairs, PU first, penalties in the paper's order F1..F5."""
        return [(t, p) for t in self.thresholds for p in self.penalties]


# ----------------------------------------------------------------------------- the item-kNN per strategy


def strategy_precision(
    train_ratings: sp.csr_matrix, train: sp.csr_matrix, test: sp.csr_matrix, protocol: PaperProtocol, random_rank: np.ndarray
) -> np.ndarray:
    """precision@k_u: [U] float64 of item-kNN built on these users' train ratings (NaN: no test course)."""
    similarity = item_similarity(train_ratings, protocol.neighbours, protocol.min_similarity)
    n_train = np.diff(train.indptr)
    device = torch.device(protocol.device)
    tie_rank = tie_ranks(protocol.tie_break, train, random_rank).to(device)
    out = []
    for start in range(0, train.shape[0], protocol.batch_users):  # chunks of users, not single users
        rows = slice(start, start + protocol.batch_users)
        scores = torch.from_numpy(itemknn_scores(train_ratings[rows], n_train[rows], similarity)).to(device)
        exclude = torch.from_numpy(train[rows].toarray() > 0).to(device)
        truth = torch.from_numpy(test[rows].toarray() > 0).to(device)
        out.append(precision_at_user_k(scores, exclude, truth, protocol.k, tie_rank).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


# ----------------------------------------------------------------------------- the experiment


@dataclass
class ResamplePlan:
    """samples: [R, m] user rows, each row drawn without replacement; note says how m was chosen."""

    samples: np.ndarray
    note: str


def resample_plan(n_users: int, protocol: PaperProtocol) -> ResamplePlan:
    """R samples of min(sample_users, n) users; with fewer users than sample_users every such sample
    would be all users, so each draws floor(small_sample_share * n) of them instead."""
    rng = np.random.default_rng(protocol.seed)
    if n_users >= protocol.sample_users:
        size = protocol.sample_users
        note = f"{protocol.n_resamples} samples of {size:,} of {n_users:,} users, without replacement within a sample"
    else:
        size = max(1, math.floor(protocol.small_sample_share * n_users))
        note = (
            f"only {n_users:,} users (< protocol.sample_users={protocol.sample_users:,}): a sample of all of them would be "
            f"the same every time, so each of the {protocol.n_resamples} samples draws {size:,} users "
            f"(protocol.small_sample_share={protocol.small_sample_share}) without replacement"
        )
    samples = np.stack([rng.choice(n_users, size, replace=False) for _ in range(protocol.n_resamples)])
    return ResamplePlan(np.sort(samples, axis=1), note)


def full_data_precision(matrices: RatedMatrices, protocol: PaperProtocol) -> dict[tuple[str, str], float]:
    """Table 2: precision@k_u averaged over every user with a test course, per strategy."""
    rank = random_item_rank(len(matrices.course_ids), protocol.seed)
    return {
        s: float(np.nanmean(strategy_precision(r, matrices.train, matrices.test, protocol, rank)))
        for s, r in matrices.ratings.items()
    }


def resampled_precision(matrices: RatedMatrices, plan: ResamplePlan, protocol: PaperProtocol) -> pd.DataFrame:
    """Table 5's samples: [R rows, one column per strategy] mean precision@k_u of each resample, the
    item-kNN rebuilt on the sample's train ratings; every strategy sees the same samples."""
    rank = random_item_rank(len(matrices.course_ids), protocol.seed)
    columns = {s: np.empty(len(plan.samples)) for s in matrices.ratings}
    for r, users in enumerate(plan.samples):  # a loop over resamples; each one is vectorised
        train, test = matrices.train[users], matrices.test[users]
        for s, ratings in matrices.ratings.items():
            columns[s][r] = np.nanmean(strategy_precision(ratings[users], train, test, protocol, rank))
    frame = pd.DataFrame({strategy_name(*s): v for s, v in columns.items()})
    frame.index.name = "resample"
    return frame


def strategy_name(threshold: str, penalty: str) -> str:
    return f"{THRESHOLD_LABELS[threshold]} {penalty}"


def significance_tests(resampled: pd.DataFrame, protocol: PaperProtocol) -> pd.DataFrame:
    """Tables 3-4: one-sided Wilcoxon rank-sum of the resample means, PU > GPC per penalty and the
    reference penalty > each other penalty under the reference threshold, Bonferroni-corrected."""
    pairs = []
    if {"per_user", "global"} <= set(protocol.thresholds):
        pairs += [("threshold", ("per_user", p), ("global", p), PAPER_P_THRESHOLD.get(p)) for p in protocol.penalties]
    ref = (protocol.reference_threshold, protocol.reference_penalty)
    pairs += [
        ("penalty", ref, (ref[0], p), PAPER_P_PENALTY.get(p) if ref == ("per_user", "sqrt") else None)
        for p in protocol.penalties
        if p != ref[1]
    ]
    rows = []
    for family, a, b, paper_p in pairs:
        x, y = resampled[strategy_name(*a)].to_numpy(), resampled[strategy_name(*b)].to_numpy()
        rows.append({
            "family": family,
            "test": f"{strategy_name(*a)} > {strategy_name(*b)}",
            "statistic": float(stats.ranksums(x, y, alternative="greater").statistic),
            "p_value": rank_sum_greater(x, y),
            "paper_p_value": paper_p,
        })
    tests = pd.DataFrame(rows, columns=["family", "test", "statistic", "p_value", "paper_p_value"])
    if protocol.bonferroni == "all":
        tests["p_bonferroni"] = bonferroni(tests["p_value"].to_numpy())
    else:
        tests["p_bonferroni"] = np.nan
        for family, idx in tests.groupby("family").groups.items():
            tests.loc[idx, "p_bonferroni"] = bonferroni(tests.loc[idx, "p_value"].to_numpy())
    tests["significant"] = tests["p_bonferroni"] < protocol.alpha
    return tests


def duration_curve(result: RatingsResult, protocol: PaperProtocol) -> pd.DataFrame:
    """Figures 3-4: precision@k_u on all users and the number of users, per min_lesson_seconds and strategy."""
    strategies = [(t, p) for t in protocol.duration_thresholds for p in protocol.duration_penalties]
    rows = []
    for seconds in protocol.min_lesson_seconds_grid:  # a loop over the grid; one rating pass each
        ratings = result.rerate(min_lesson_seconds=float(seconds))
        matrices = rated_matrices(ratings, strategies) if len(ratings) else None
        precision = full_data_precision(matrices, protocol) if matrices is not None else {}
        for s in strategies:
            rows.append({
                "min_lesson_seconds": float(seconds), "threshold": s[0], "penalty": s[1],
                "precision": precision.get(s, float("nan")),
                "n_users": int(ratings["user_id"].nunique()), "n_ratings": int(len(ratings)),
            })
    return pd.DataFrame(rows)


@dataclass
class PaperResults:
    """Everything the writers need: the tables, the curves and the run's facts."""

    table: pd.DataFrame
    tests: pd.DataFrame
    resampled: pd.DataFrame
    durations: pd.DataFrame
    facts: dict


def run_experiment(result: RatingsResult, protocol: PaperProtocol) -> PaperResults:
    """SPEC 1.11 on a rated log: Tables 2-5 and the curves of Figures 3-4."""
    protocol = protocol.check()
    threads = torch.get_num_threads()
    if protocol.cpu_threads:
        torch.set_num_threads(protocol.cpu_threads)
    try:
        return _run_experiment(result, protocol)
    finally:
        torch.set_num_threads(threads)


def _run_experiment(result: RatingsResult, protocol: PaperProtocol) -> PaperResults:
    started = time.perf_counter()
    strategies = protocol.strategies()
    base = result.rerate()  # the run's own ratings config; threshold and penalty are re-rated below
    if base["user_id"].nunique() < 2:
        raise DataError(
            f"{result.summary.get('source', 'the log')}: {base['user_id'].nunique()} user(s) left after the SPEC 1.6 "
            f"filters; the experiment needs at least 2 (lower ratings.min_courses or ratings.min_sessions)"
        )
    matrices = rated_matrices(base, strategies)
    full = full_data_precision(matrices, protocol)
    t_full = time.perf_counter()
    plan = resample_plan(matrices.n_users, protocol)
    resampled = resampled_precision(matrices, plan, protocol)
    t_resampled = time.perf_counter()
    tests = significance_tests(resampled, protocol)
    durations = duration_curve(result, protocol)
    table = pd.DataFrame([
        {
            "threshold": THRESHOLD_LABELS[t], "penalty": PENALTY_LABELS[p],
            "precision": full[(t, p)], "paper_precision": PAPER_PRECISION[(t, p)],
            "resampled_mean": resampled[strategy_name(t, p)].mean(), "resampled_std": resampled[strategy_name(t, p)].std(ddof=1),
            "paper_resampled_mean": PAPER_RESAMPLED[(t, p)],
            "n_users": matrices.n_users, "n_ratings": int(base.shape[0]),
        }
        for t, p in strategies
    ])
    n_test = np.diff(matrices.test.indptr)
    facts = {
        "source": result.summary.get("source"),
        "users": matrices.n_users,
        "courses": int(len(matrices.course_ids)),
        "ratings": int(len(base)),
        "train_ratings": int(matrices.train.nnz),
        "test_ratings": int(matrices.test.nnz),
        "users_with_test_course": int((n_test > 0).sum()),
        "mean_courses_per_user": float(len(base) / max(matrices.n_users, 1)),
        "random_ranking_precision": random_precision(matrices.train, matrices.test, protocol.k),
        "sample_size": int(plan.samples.shape[1]),
        "resampling": plan.note,
        "seconds": {
            "full_data": round(t_full - started, 2),
            "resampling": round(t_resampled - t_full, 2),
            "duration_curve": round(time.perf_counter() - t_resampled, 2),
        },
        "protocol": dataclasses.asdict(protocol),
        "ratings_config": dataclasses.asdict(result.cfg),
        "ratings_summary": {k: v for k, v in result.summary.items() if k != "config"},
    }
    return PaperResults(table, tests, resampled, durations, facts)


# ----------------------------------------------------------------------------- writers


def report_markdown(results: PaperResults, protocol: PaperProtocol) -> str:
    """table.md: Tables 2+5 side by side with the paper's, then Tables 3-4."""
    f = results.facts
    table = results.table.assign(
        resampled=[f"{m:.4f} ± {s:.4f}" for m, s in zip(results.table["resampled_mean"], results.table["resampled_std"])]
    )
    strategies = number_table(table, {
        "threshold": "Threshold", "penalty": "Penalty", "precision": f"P@k_u (k={protocol.k})",
        "paper_precision": "paper (Table 2)", "resampled": "resampled mean ± std",
        "paper_resampled_mean": "paper (Table 5)", "n_users": "users", "n_ratings": "ratings",
    })
    tests = number_table(results.tests, {
        "test": "one-sided rank-sum", "statistic": "z", "p_value": "p", "p_bonferroni": "p Bonferroni",
        "significant": f"significant (α={protocol.alpha})", "paper_p_value": "paper p (Tables 3-4)",
    })
    return "\n".join([
        f"# Ratings paper experiment (SPEC 1.11) — {f['source']}",
        "",
        f"{f['users']:,} users, {f['courses']:,} courses, {f['ratings']:,} ratings "
        f"({f['mean_courses_per_user']:.2f} courses per user; {f['train_ratings']:,} train / {f['test_ratings']:,} test). "
        f"Item-kNN: cosine on train ratings, {protocol.neighbours} neighbours, similarities < {protocol.min_similarity} → 0; "
        f"ties ordered by `{protocol.tie_break}`. A random ranking would score P@k_u = {f['random_ranking_precision']:.4f}.",
        "",
        f"Resampling: {f['resampling']}.",
        "",
        strategies,
        "",
        f"Bonferroni: `{protocol.bonferroni}` (the paper's printed p-values are uncorrected).",
        "",
        tests,
        "",
    ])


def plot_duration_curves(durations: pd.DataFrame, folder: Path, highlight: tuple[str, str]) -> list[Path]:
    """Figure 3 (precision, one line per strategy) and Figure 4 (users) against min_lesson_seconds."""
    strategies = [(f"{THRESHOLD_LABELS[t]} {PENALTY_LABELS[p]}", curve["min_lesson_seconds"], curve["precision"],
                   (t, p) == highlight) for (t, p), curve in durations.groupby(["threshold", "penalty"], sort=False)]
    users = durations.drop_duplicates("min_lesson_seconds")  # the same users for every strategy: one line
    x = "minimum lesson duration (s)"
    return [
        plot_lines(strategies, folder / "figure3_precision_vs_duration.png", x, "precision@k_u", symlog_x=10),
        plot_lines([("all strategies", users["min_lesson_seconds"], users["n_users"], True)],
                   folder / "figure4_users_vs_duration.png", x, "users (>= min_courses)", symlog_x=10),
    ]


RESULT_FILES = ("table.md", "table.csv", "tests.csv", "resamples.csv", "durations.csv",
                "figure3_precision_vs_duration.png", "figure4_users_vs_duration.png", "summary.json")


def write_results(results: PaperResults, protocol: PaperProtocol, out_dir: str | Path) -> Path:
    """RESULT_FILES into the folder out_dir, each atomically (temporary file + rename), summary.json last."""
    out = Path(out_dir)
    write_text_atomic(out / "table.md", report_markdown(results, protocol))
    for name, frame in (("table", results.table), ("tests", results.tests),
                        ("resamples", results.resampled.reset_index()), ("durations", results.durations)):
        write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    figures = plot_duration_curves(results.durations, out, (protocol.reference_threshold, protocol.reference_penalty))
    summary = {**results.facts, "table": results.table.to_dict(orient="records"),
               "tests": results.tests.to_dict(orient="records"), "figures": [p.name for p in figures]}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=json_default))
    return out


if __name__ == "__main__":  # python -m deeprec.experiments.ratings_paper: the Hydra app of deeprec.cli
    from deeprec.cli.ratings_paper import main

    main()
