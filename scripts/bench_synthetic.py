"""Benchmark of deeprec.data.synthetic: events per second and peak memory, against a plain per-learner
Python loop of the same model measured in the same run.

    python scripts/bench_synthetic.py                      # 1M and 10M in memory, 20M written in parts
    python scripts/bench_synthetic.py --sizes 1000000 --write 0

Each measurement runs in its own process so that its peak resident memory (VmHWM) is its own.
Prints a table; saves bench_results/bench_synthetic.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import PEAK_PRELUDE

ROOT = Path(__file__).resolve().parents[1]

LOOP_REFERENCE = r'''
import math, random, time
import numpy as np
from deeprec.data.synthetic import SyntheticConfig, course_catalogue

def loop_events(n_events, seed=0):
    """The generator's model, one learner, one course, one lesson, one event at a time."""
    cfg = SyntheticConfig(seed=seed)
    cat = course_catalogue(cfg)
    topics = cfg.topic_labels()
    topic_of = [topics.index(t) for t in cat["topic"]]
    rnd = random.Random(seed)
    rows, user = [], 0
    while len(rows) < n_events:
        interest = [rnd.gammavariate(cfg.interest_concentration, 1.0) for _ in topics]
        total = sum(interest) or 1.0
        interest = [x / total for x in interest]
        ability = rnd.betavariate(*cfg.ability_beta)
        k = min(1 + np.random.default_rng(user).poisson(cfg.mean_courses_per_user - 1), cfg.n_courses)
        weights = [p * (interest[t] + 1e-3) for p, t in zip(cat["popularity"], topic_of)]
        chosen = []
        for _ in range(k):  # without replacement, one draw at a time
            c = rnd.choices(range(cfg.n_courses), weights=[0 if i in chosen else w for i, w in enumerate(weights)])[0]
            chosen.append(c)
        t = rnd.random() * cfg.span_days * 86400
        for c in chosen:
            hazard = min(1.0, cfg.dropout_rate * math.exp(cfg.difficulty_effect * (cat["difficulty"][c] - ability)))
            for lesson in range(int(cat["n_lessons"][c])):
                if lesson and rnd.random() < 1 / cfg.lessons_per_session:
                    t += cfg.min_session_break_minutes * 60 + rnd.lognormvariate(math.log(cfg.session_break_days * 86400), 1)
                url = f"/{cat['course_id'][c]}/lesson-{lesson + 1:02d}"
                rows.append((user, int(t), url, "pageview"))
                t += min(rnd.lognormvariate(math.log(cfg.view_seconds_median), cfg.gap_sigma), 1500)
                while rnd.random() < cfg.non_view_share:
                    rows.append((user, int(t), url, rnd.choice(cfg.non_view_events)))
                    t += min(rnd.lognormvariate(math.log(cfg.event_seconds_median), cfg.gap_sigma), 1500)
                if rnd.random() < hazard:
                    break
        user += 1
    return rows[:n_events]

start = time.perf_counter()
rows = loop_events(N)
print("RESULT", len(rows), time.perf_counter() - start, len({r[0] for r in rows}))
'''

VECTORISED = r'''
import time
from deeprec.data.synthetic import generate_events
start = time.perf_counter()
log = generate_events(N, seed=0)
print("RESULT", len(log), time.perf_counter() - start, log["user_id"].nunique())
'''

WRITE = r'''
import time
from deeprec.data.synthetic import write_events
start = time.perf_counter()
write_events(OUT, N, seed=0, part_rows=5_000_000)
print("RESULT", N, time.perf_counter() - start, 0)
'''


def run(code: str, **values) -> dict:
    """Run `code` in a fresh interpreter; its RESULT line and its own peak memory."""
    for key, value in values.items():
        code = code.replace(key, repr(value))
    proc = subprocess.run([sys.executable, "-c", PEAK_PRELUDE + code], capture_output=True, text=True, cwd=ROOT, check=True)
    _, n, seconds, users = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()
    peak = int(next(line for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")).split()[1])
    return {"events": int(n), "seconds": float(seconds), "users": int(users), "peak_mb": peak / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-events", type=int, default=100_000, help="size for the per-learner loop")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--write", type=int, default=20_000_000, help="events written as Parquet parts (0: skip)")
    args = parser.parse_args()

    rows = []
    loop = run(LOOP_REFERENCE, N=args.loop_events)
    loop_rate = loop["events"] / loop["seconds"]
    rows.append({"what": "per-learner Python loop (baseline)", **loop})
    for n in args.sizes:
        rows.append({"what": "generate_events (vectorised)", **run(VECTORISED, N=n)})
    if args.write:
        with tempfile.TemporaryDirectory(dir=ROOT / "bench_results" if (ROOT / "bench_results").is_dir() else None) as scratch:
            out = str(Path(scratch) / "log")
            rows.append({"what": "write_events, Parquet parts of 5M", **run(WRITE, N=args.write, OUT=out)})
    for row in rows:
        row["events_per_s"] = row["events"] / row["seconds"]
        row["vs_loop"] = row["events_per_s"] / loop_rate

    header = "| what | events | learners | seconds | events/s | vs loop | peak MB |\n|---|---:|---:|---:|---:|---:|---:|\n"
    lines = [
        f"| {r['what']} | {r['events']:,} | {r['users']:,} | {r['seconds']:.2f} | {r['events_per_s']:,.0f} | "
        f"{r['vs_loop']:.0f}x | {r['peak_mb']:,.0f} |"
        for r in rows
    ]
    machine = f"{os.cpu_count()} CPU cores visible, load average {os.getloadavg()[0]:.1f} at the end"
    table = header + "\n".join(lines) + f"\n\nMachine: {machine}.\n"
    print(table)
    out = ROOT / "bench_results"
    out.mkdir(exist_ok=True)
    (out / "bench_synthetic.md").write_text(table)
    (out / "bench_synthetic.json").write_text(json.dumps({"rows": rows, "machine": machine}, indent=2))


if __name__ == "__main__":
    main()
