"""Uncertainty and significance for leaderboards: per-user confidence intervals, paired tests,
Bonferroni correction (scipy.stats does the tests; nothing here re-implements them)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of per-user values."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return mean, mean - float(half), mean + float(half)


def paired_test(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p-value for paired per-user values (1.0 when all equal). alternative:
    "two-sided" (a differs from b), "greater" (a beats b) or "less", as scipy.stats.wilcoxon."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same users: {a.shape} vs {b.shape}")
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox", alternative=alternative).pvalue)


def rank_sum_greater(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Wilcoxon rank-sum p-value that `a` tends to exceed `b` (independent samples)."""
    return float(stats.ranksums(a, b, alternative="greater").pvalue)


def bonferroni(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Bonferroni-corrected p-values: p · m, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(p * max(len(p), 1), 1.0)
