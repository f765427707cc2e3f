"""Reports: leaderboards (mean and 95% CI per metric and model, significance against the best
baseline, Markdown + CSV, a PNG bar plot), and the Markdown tables, number formats and line plots
the paper experiments write."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deeprec.atomic import write_bytes_atomic
from deeprec.evaluation.stats import bonferroni, mean_ci, paired_test


def leaderboard(
    per_user: dict[str, dict[str, np.ndarray]],
    set_metrics: dict[str, dict[str, float]],
    baselines: Sequence[str],
    test_metric: str,
) -> pd.DataFrame:
    """One row per model: <metric>, <metric>_lo, <metric>_hi for per-user metrics, the list-set
    metrics as values, and p-values (raw and Bonferroni) of a paired Wilcoxon test on
    `test_metric` against the best baseline."""
    rows = []
    for model, metrics in per_user.items():
        row = {"model": model}
        for name, values in metrics.items():
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = mean_ci(values)
        row.update(set_metrics.get(model, {}))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    candidates = [m for m in baselines if m in table.index]
    best = table.loc[candidates, test_metric].idxmax() if candidates else table[test_metric].idxmax()
    others = [m for m in table.index if m != best]
    raw = [paired_test(per_user[m][test_metric], per_user[best][test_metric]) for m in others]
    table["vs"] = best
    table["p_value"] = np.nan
    table["p_bonferroni"] = np.nan
    if others:
        table.loc[others, "p_value"] = raw
        table.loc[others, "p_bonferroni"] = bonferroni(raw)
    return table.sort_values(test_metric, ascending=False)


def markdown_table(cells: pd.DataFrame) -> str:
    """A GitHub Markdown table of a frame of strings: its columns are the header row. Lines are
    built column by column with vectorised string concatenation, not row by row."""
    line = "| " + cells.iloc[:, 0].astype(str)
    for column in cells.columns[1:]:
        line = line + " | " + cells[column].astype(str)
    header = ["| " + " | ".join(map(str, cells.columns)) + " |", "|" + "---|" * cells.shape[1]]
    return "\n".join(header + (line + " |").tolist())


def format_number(value, digits: int = 4) -> str:
    """A readable cell: "–" for None/NaN, yes/no for booleans, thousands separators for integers,
    scientific notation below 1e-3, else `digits` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:.3e}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"


def number_table(frame: pd.DataFrame, headers: dict[str, str]) -> str:
    """A Markdown table of frame[list(headers)] titled by headers' values; numbers by format_number."""
    cells = pd.DataFrame({title: frame[key].map(lambda v: v if isinstance(v, str) else format_number(v))
                          for key, title in headers.items()})
    return markdown_table(cells)


def json_default(value):
    """json.dumps(default=...) for numpy scalars (and anything else as its text)."""
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def plot_lines(lines: Sequence[tuple[str, Sequence[float], Sequence[float], bool]], path: Path, xlabel: str,
               ylabel: str, symlog_x: float | None = None) -> Path:
    """One PNG of (label, x, y, bold) lines, written atomically; symlog_x: a symmetric-log x axis linear below it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, x, y, bold in lines:
        ax.plot(x, y, marker="o", linewidth=2.5 if bold else 1.0, label=label)
    if symlog_x is not None:
        ax.set_xscale("symlog", linthresh=symlog_x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_bytes_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
    return path


def _fixed(values: pd.Series) -> pd.Series:
    return values.map("{:.4f}".format)


def to_markdown(table: pd.DataFrame, metrics: Sequence[str], test_metric: str, title: str) -> str:
    """A Markdown leaderboard: mean [95% CI] per metric; significance marks vs the best baseline."""
    best = table["vs"].iloc[0]
    cells = pd.DataFrame({"model": table.index.astype(str)}, index=table.index)
    for m in metrics:
        if m not in table:
            cells[m] = "-"
        elif f"{m}_lo" in table:  # per-user metrics carry a CI; list-set metrics (coverage, ...) do not
            with_ci = _fixed(table[m]) + " [" + _fixed(table[f"{m}_lo"]) + ", " + _fixed(table[f"{m}_hi"]) + "]"
            cells[m] = with_ci.where(table[f"{m}_lo"].notna(), _fixed(table[m]))
        else:
            cells[m] = _fixed(table[m])
    p = table["p_bonferroni"]
    marks = p.map("{:.2g}".format) + np.where(p < 0.05, " *", "")
    cells[f"p vs {best} ({test_metric}, Bonferroni)"] = marks.where(table.index != best, "(reference)")
    lines = [f"### {title}", "", markdown_table(cells), "",
             "Mean over test users with a 95% t-interval; * = significant at 0.05 after Bonferroni."]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, metrics: Sequence[str], path: Path, title: str) -> None:
    """Grouped bars of the main metrics with 95% CI whiskers, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(table.index)
    width = 0.8 / max(len(metrics), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) + 2), 4))
    x = np.arange(len(models))
    for i, m in enumerate(metrics):
        vals = table[m].to_numpy(float)
        if f"{m}_lo" in table:
            err = np.vstack([vals - table[f"{m}_lo"].to_numpy(float), table[f"{m}_hi"].to_numpy(float) - vals])
            err = np.nan_to_num(err)
        else:
            err = None
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_bytes_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)


def across_seeds(
    per_seed: dict[int, dict[str, dict[str, np.ndarray]]],
    tables: dict[int, pd.DataFrame],
    baselines: Sequence[str],
    test_metric: str,
) -> pd.DataFrame:
    """One row per model over several seeds: the mean of `test_metric` over seeds with a Student-t
    interval over the seed means, each seed's mean, and the comparison with one reference (the
    baseline with the best mean over seeds): a paired Wilcoxon test per seed on the per-user values,
    Bonferroni-corrected over the models. `verdict` is better / worse only when every seed is
    significant (p < 0.05) in the same direction; otherwise `not consistent`."""
    seeds = sorted(per_seed)
    models = list(tables[seeds[0]].index)
    means = pd.DataFrame({seed: tables[seed][test_metric].reindex(models) for seed in seeds})
    candidates = [m for m in baselines if m in means.index]
    reference = means.loc[candidates].mean(axis=1).idxmax() if candidates else means.mean(axis=1).idxmax()
    others = [m for m in models if m != reference]
    p_per_seed, sign_per_seed = {}, {}
    for seed in seeds:
        ref = per_seed[seed][reference][test_metric]
        raw = [paired_test(per_seed[seed][m][test_metric], ref) for m in others]
        p_per_seed[seed] = pd.Series(bonferroni(raw), index=others, dtype=float)
        sign_per_seed[seed] = pd.Series([np.sign(per_seed[seed][m][test_metric].mean() - ref.mean()) for m in others],
                                        index=others)
    rows = []
    for model in models:
        mean, lo, hi = mean_ci(means.loc[model].to_numpy(float))
        row = {"model": model, test_metric: mean, f"{test_metric}_lo": lo, f"{test_metric}_hi": hi,
               **{f"seed{seed}": means.loc[model, seed] for seed in seeds}, "vs": reference}
        if model == reference:
            row.update({"max_p_bonferroni": np.nan, "verdict": "(reference)"})
        else:
            p = np.array([p_per_seed[seed][model] for seed in seeds])
            signs = {int(sign_per_seed[seed][model]) for seed in seeds}
            consistent = bool((p < 0.05).all()) and len(signs) == 1 and 0 not in signs
            verdict = ("better" if signs == {1} else "worse") if consistent else "not consistent"
            row.update({"max_p_bonferroni": float(p.max()), "verdict": verdict})
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    table["share_of_reference"] = table[test_metric] / table.loc[reference, test_metric]
    return table.sort_values(test_metric, ascending=False)


def across_seeds_markdown(table: pd.DataFrame, test_metric: str, title: str) -> str:
    """The across-seed leaderboard as Markdown: mean [t-interval over seeds], the seeds, the verdict."""
    seed_columns = [c for c in table.columns if c.startswith("seed")]
    reference = table["vs"].iloc[0]
    cells = pd.DataFrame({"model": table.index.astype(str)}, index=table.index)
    interval = _fixed(table[test_metric]) + " [" + _fixed(table[f"{test_metric}_lo"]) + ", " + _fixed(table[f"{test_metric}_hi"]) + "]"
    cells[f"{test_metric} over seeds [95% t]"] = interval
    for column in seed_columns:
        cells[column] = _fixed(table[column])
    cells[f"÷ {reference}"] = (100 * table["share_of_reference"]).map("{:.0f}%".format)
    p = table["max_p_bonferroni"].map(lambda v: "" if np.isnan(v) else f" (max p {v:.2g})")
    cells[f"vs {reference} in every seed"] = table["verdict"] + p
    lines = [f"### {title}", "", markdown_table(cells), "",
             f"Mean over seeds with a 95% t-interval over the seed means. A difference from {reference} (the best "
             "baseline over seeds) is called better / worse only when the paired Wilcoxon test on the per-user "
             f"{test_metric}, Bonferroni-corrected over the models, gives p < 0.05 in every seed, in the same direction."]
    return "\n".join(lines) + "\n"
