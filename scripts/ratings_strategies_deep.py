"""How the ratings paper's strategies (per-user / global threshold x 5 penalties, SPEC 1.11) change
each deep model's test NDCG@10 when the model weights its loss by the rating (rating_weights=true).

python scripts/ratings_strategies_deep.py --data epm
python scripts/ratings_strategies_deep.py --data synthetic --override data.n_events=100000
-> bench_results/ratings_strategies_<data>.{md,csv}

Every strategy rates the same log, so the users, items and splits are the same and only the rating
values differ; EASE (binary, unaffected by the ratings) is the reference row. Zero ratings follow each
model's zero_rating rule (default weak, weight 0.1). Hyper-parameters: the defaults (valid only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

from deeprec.atomic import write_text_atomic
from deeprec.cli.compare import compare
from deeprec.evaluation.report import markdown_table
from deeprec.registry import DEEP_MODELS

THRESHOLDS = {"PU": "per_user", "GPC": "global"}
PENALTIES = ("quadratic", "linear", "log", "sqrt", "step")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="epm", choices=("epm", "synthetic", "events"))
    parser.add_argument("--models", default=",".join(DEEP_MODELS))
    parser.add_argument("--override", action="append", default=[], help="extra Hydra overrides, e.g. trainer.max_epochs=50")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args()
    models = args.models.split(",")
    rows = []
    started = time.time()
    for short, threshold in THRESHOLDS.items():
        for penalty in PENALTIES:
            out_dir = Path("runs") / f"ratings-strategies-{args.data}" / f"{short}-{penalty}"
            overrides = [f"data={args.data}", f"data.ratings.threshold={threshold}", f"data.ratings.penalty={penalty}",
                         f"models=[ease,{','.join(models)}]", f"out_dir={out_dir}",
                         *[f"+model_overrides.{m}.rating_weights=true" for m in models], *args.override]
            with initialize_config_module("deeprec.conf", version_base="1.3"):
                cfg = compose("compare", overrides=overrides)
            table = compare(cfg)
            rows.append({"threshold": short, "penalty": penalty, **{m: float(table.loc[m, "ndcg@10"]) for m in ["ease", *models]}})
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"ratings_strategies_{args.data}.csv", frame.to_csv(index=False))
    cells = frame.copy()
    for m in ["ease", *models]:
        best = frame[m].max()
        cells[m] = frame[m].map("{:.4f}".format).where(frame[m] < best, "**" + frame[m].map("{:.4f}".format) + "**")
    text = (f"Test NDCG@10 per strategy ({args.data}; deep models with rating_weights=true; ease binary; "
            f"{time.time() - started:.0f} s; overrides {args.override or 'none'})\n\n" + markdown_table(cells) + "\n")
    write_text_atomic(out / f"ratings_strategies_{args.data}.md", text)
    print(text)


if __name__ == "__main__":
    main()
