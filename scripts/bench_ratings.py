"""The cost curve of deeprec-ratings (events/s, peak RSS) and the engine comparison behind its design.

1. Cost curve: `deeprec-ratings` as a subprocess on generated CSV logs of --sizes events (default
   1M, 10M in memory; 50M through the out-of-core path), peak RSS of the child (its VmHWM).
   Out-of-core runs repeat for each --batch-rows (ratings.batch_rows: rows read at a time and
   events per user-hash partition), to show that their peak follows the chunk, not the input;
   --also-out-of-core adds out-of-core runs of sizes that otherwise run in memory (e.g. 10M).
   --engine spark adds `deeprec-ratings engine=spark` (local mode, one JVM) on the same logs, each
   size run right after the pandas engine (--spark-baseline DIR: an earlier source tree's Spark
   engine too, for a before/after in the same run); peak memory is the Python driver's VmHWM and the JVM's
   (sampled from /proc every 0.2 s: its VmHWM), and the output is checked equal to the pandas one.
2. Engines at --engine-size events (default 1M): the heavy core of SPEC 1.1-1.4 (read the CSV,
   lessons from URLs, sort by user and time, sessions, time to the next event, sum per user,
   course and lesson) in deeprec's pandas/numpy code, in Polars and in DuckDB, --engine-rounds
   interleaved rounds (deeprec, polars, duckdb, deeprec, ...); each ratio is against deeprec in the
   same round, and the per-lesson sums are checked to agree. Polars and DuckDB are benchmark-only
   dependencies (pip install polars duckdb), not deeprec's.

Logs come from deeprec.data.synthetic.write_events when it exists, else from the small
generator below (users with sessions of page views over courses/lessons, non-lesson pages,
non-view events, epoch-second timestamps).

    python scripts/bench_ratings.py [--sizes 1000000 10000000 50000000] [--engine-size 1000000]
        [--also-out-of-core 10000000] [--batch-rows 2000000 500000] [--engine spark] [--engine-rounds 3]
Writes bench_results/bench_ratings{--tag}.{json,md}; --engine-size 0 skips the engine comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import PEAK_PRELUDE

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench_results"


def fallback_events(n_events: int, seed: int):
    """A log of n_events rows: ~20 events per session, 40 courses x 12 lessons, 10% other pages."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_users = max(n_events // 200, 10)
    user = np.sort(rng.integers(0, n_users, n_events))
    step = rng.exponential(90.0, n_events).astype(np.int64) + 1
    new_session = rng.random(n_events) < 0.05
    step[new_session] += rng.integers(1800, 86400 * 7, int(new_session.sum()))
    clock = np.cumsum(step)
    first_of_user = np.searchsorted(user, user)  # each user's clock starts at its own offset
    offset = 1_600_000_000 + rng.integers(0, 86400 * 365, n_users)
    ts = offset[user] + clock - clock[first_of_user]
    course = (rng.integers(0, 40, n_users)[user] + rng.integers(0, 6, n_events)) % 40  # ~6 courses a user
    lesson = rng.integers(0, 12, n_events)
    urls = np.array([f"/en/course{c}/lesson{l}" for c in range(40) for l in range(12)] + ["/home", "/search?q=x"])
    pick = course * 12 + lesson
    other = rng.random(n_events) < 0.1
    pick[other] = 480 + rng.integers(0, 2, int(other.sum()))
    event = np.array(["pageview", "click"])[(rng.random(n_events) < 0.15).astype(int)]
    order = rng.permutation(n_events)  # logs arrive unsorted
    return pd.DataFrame({
        "user_id": (user[order] + 10_000).astype(str),
        "timestamp": ts[order],
        "url": urls[pick[order]],
        "event": event[order],
    })


def write_log(path: Path, n_events: int, seed: int, chunk: int = 5_000_000) -> str:
    """A CSV log of n_events rows; returns the generator's name."""
    try:
        from deeprec.data.synthetic import write_events

        write_events(path, n_events, seed)
        return "deeprec.data.synthetic.write_events"
    except ImportError:
        pass
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, "wb") as fh:
        writer = None
        for k, start in enumerate(range(0, n_events, chunk)):
            frame = fallback_events(min(chunk, n_events - start), seed + k)
            frame["user_id"] = frame["user_id"] + f"-{k}"  # chunks are different users
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pacsv.CSVWriter(fh, table.schema)
            writer.write_table(table)
        writer.close()
    return "fallback generator in scripts/bench_ratings.py"



def peak_mb(stderr: str) -> float:
    return [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("PEAK_KB")][-1] / 1024


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from the parent ids in /proc/*/stat)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier}
        found += sorted(frontier)
    return found


def _hwm_kb(pid: int) -> int:
    """The peak RSS (VmHWM) of a running process in KB, 0 once it is gone."""
    try:
        return int([line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM:")][0])
    except (OSError, IndexError, ValueError):
        return 0


def run_cli(log: Path, out: Path, out_of_core: bool, batch_rows: int | None = None, extra: list[str] = (),
            source: str | None = None) -> dict:
    """deeprec-ratings in a child process: wall seconds, the child's peak RSS and that of its
    children (the JVM of engine=spark), sampled from /proc while it runs. source: a folder holding
    another deeprec package (e.g. an earlier commit's), imported instead of this one."""
    import threading

    code = PEAK_PRELUDE + "from deeprec.cli.ratings import main; main()"
    args = [sys.executable, "-c", code, f"input={log}", f"output={out}", f"out_of_core={str(out_of_core).lower()}", *extra]
    if batch_rows:
        args.append(f"ratings.batch_rows={batch_rows}")
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))} if source else None
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peaks: dict[int, int] = {}

    def sample():
        while proc.poll() is None:
            for child in _descendants(proc.pid):
                peaks[child] = max(peaks.get(child, 0), _hwm_kb(child))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if proc.returncode:
        raise RuntimeError(stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_mb": peak_mb(stderr), "children_peak_mb": max(peaks.values(), default=0) / 1024,
            "summary": summary}


def identical_outputs(a: Path, b: Path, atol: float = 0.0) -> bool:
    """The two output folders hold the same tables (values and order; floats within atol) and summaries (but the config)."""
    import pandas as pd

    for name in ("ratings", "lesson_durations", "rejects"):
        x, y = pd.read_parquet(a / f"{name}.parquet"), pd.read_parquet(b / f"{name}.parquet")
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=atol == 0, atol=atol, rtol=0)
        except AssertionError:
            return False
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("config"), sb.pop("config")
    return sa == sb


# -- engine comparison: the heavy core of SPEC 1.1-1.4 in three engines ----------------------------
PATTERN = r"^/?(?P<course>[^/?#]+/[^/?#]+)/(?P<lesson>[^/?#]+)"


def core_deeprec(log: Path):
    from deeprec.data.ratings import RatingsConfig, aggregate_events, read_events, validate_events

    cfg = RatingsConfig()
    views = aggregate_events(validate_events(read_events(log), cfg, str(log)), cfg).views
    return views.groupby(["course_id", "lesson_id"])["observed_us"].sum().div(1e6).sort_index()


def core_polars(log: Path):
    import polars as pl

    gap = 30 * 60
    frame = (
        pl.scan_csv(log, schema_overrides={"user_id": pl.String, "timestamp": pl.Int64, "url": pl.String, "event": pl.String})
        .with_row_index("row")
        .with_columns(pl.col("url").str.extract_groups(PATTERN).alias("m"))
        .with_columns(pl.col("m").struct.field("course").alias("course"), pl.col("m").struct.field("lesson").alias("lesson"))
        .unique(subset=["user_id", "timestamp", "url", "event"], keep="first", maintain_order=True)
        .sort(["user_id", "timestamp", "row"])
        .with_columns(
            nxt=pl.col("timestamp").shift(-1).over("user_id"),
        )
        .with_columns(d=pl.when((pl.col("nxt") - pl.col("timestamp")) <= gap).then(pl.col("nxt") - pl.col("timestamp")))
        .filter(pl.col("lesson").is_not_null() & pl.col("event").is_in(["pageview", "page_view", "PageView"]))
        .group_by(["user_id", "course", "lesson"])
        .agg(pl.col("d").sum(), pl.col("d").count().alias("n_obs"), pl.len().alias("views"))
        .group_by(["course", "lesson"])
        .agg(pl.col("d").sum())
        .collect()
    )
    return frame.to_pandas().set_index(["course", "lesson"])["d"].sort_index().astype(float)


def core_duckdb(log: Path):
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # its bar on stdout broke the parent's JSON line
    con.execute("SET threads TO 2")
    sql = f"""
    WITH raw AS (
      SELECT row_number() OVER () AS row, CAST(user_id AS VARCHAR) AS user_id, CAST(timestamp AS BIGINT) AS ts, url, event,
             regexp_extract(url, '^/?([^/?#]+/[^/?#]+)/([^/?#]+)', 1) AS course,
             regexp_extract(url, '^/?([^/?#]+/[^/?#]+)/([^/?#]+)', 2) AS lesson
      FROM read_csv('{log}', header=true, columns={{'user_id':'VARCHAR','timestamp':'BIGINT','url':'VARCHAR','event':'VARCHAR'}})),
    dedup AS (SELECT * FROM raw QUALIFY row_number() OVER (PARTITION BY user_id, ts, url, event ORDER BY row) = 1),
    timed AS (SELECT *, lead(ts) OVER (PARTITION BY user_id ORDER BY ts, row) AS nxt FROM dedup),
    views AS (SELECT course, lesson, CASE WHEN nxt - ts <= 1800 THEN nxt - ts END AS d FROM timed
              WHERE course <> '' AND event IN ('pageview', 'page_view', 'PageView'))
    SELECT course, lesson, sum(d) AS d FROM views GROUP BY course, lesson
    """
    frame = con.execute(sql).df()
    return frame.set_index(["course", "lesson"])["d"].sort_index().astype(float)


def run_engine(name: str, log: Path) -> dict:
    """One engine in a child process (its own peak RSS)."""
    code = PEAK_PRELUDE + (
        "import time, json; sys.path.insert(0, %r); import bench_ratings as b; from pathlib import Path\n"
        "t = time.perf_counter(); s = getattr(b, 'core_' + %r)(Path(%r)); w = time.perf_counter() - t\n"
        "print(%r + json.dumps({'wall_s': w, 'total_s': float(s.sum()), 'lessons': int(len(s))}), flush=True)"
    ) % (str(Path(__file__).parent), name, str(log), RESULT_TAG)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    return {**tagged_result(proc.stdout), "peak_rss_mb": peak_mb(proc.stderr)}


RESULT_TAG = "BENCH_RESULT "  # the child's result line; anything else an engine prints on stdout is ignored


def tagged_result(stdout: str) -> dict:
    """The JSON after RESULT_TAG on the child's stdout (a progress bar may share the line)."""
    lines = [line.split(RESULT_TAG, 1)[1] for line in stdout.splitlines() if RESULT_TAG in line]
    if not lines:
        raise RuntimeError(f"no {RESULT_TAG.strip()} line in the engine's output: {stdout[-500:]!r}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000])
    parser.add_argument("--out-of-core-from", type=int, default=20_000_000, help="sizes >= this run out-of-core")
    parser.add_argument("--engine-size", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--tag", default="", help="suffix of the result files (bench_ratings<tag>.json/md)")
    parser.add_argument("--also-out-of-core", type=int, nargs="*", default=[], help="sizes also run out-of-core")
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[2_000_000],
                        help="ratings.batch_rows of the out-of-core runs (one run each)")
    parser.add_argument("--engine", choices=["pandas", "spark"], default="pandas",
                        help="spark: also run deeprec-ratings engine=spark on every size, right after the pandas engine")
    parser.add_argument("--spark-driver-memory", default="4g", help="ratings.spark.driver_memory of the Spark runs")
    parser.add_argument("--spark-baseline", default=None,
                        help="a folder with an earlier deeprec source tree (git worktree add DIR COMMIT): its engine=spark "
                             "also runs on every size, right before this one's, for a before/after in the same run")
    parser.add_argument("--slow-tests", action="store_true",
                        help="also run the heavier Spark equality tests (pytest -m slow tests/test_ratings_spark.py)")
    parser.add_argument("--engine-rounds", type=int, default=1, help="interleaved rounds of the engine comparison")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
               "curve": [], "engines": []}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        elog = tmp / f"engine-{args.engine_size}.csv"
        results["generator"] = write_log(elog, max(args.engine_size, 1), args.seed)
        base = None
        for round_no in range(args.engine_rounds if args.engine_size else 0):  # --engine-size 0 skips
            for engine in ("deeprec", "polars", "duckdb"):
                row = {"engine": engine, "events": args.engine_size, "round": round_no, **run_engine(engine, elog)}
                if engine == "deeprec":
                    base = row
                if "wall_s" in row and base and "wall_s" in base:
                    row["time_vs_deeprec"] = row["wall_s"] / base["wall_s"]
                    row["same_total"] = abs(row["total_s"] - base["total_s"]) < 1e-6 * max(1.0, base["total_s"])
                results["engines"].append(row)
                print(row, flush=True)
        elog.unlink()
        for n in args.sizes:
            log = tmp / f"log-{n}.csv"
            t0 = time.perf_counter()
            write_log(log, n, args.seed)
            gen = time.perf_counter() - t0
            runs = [(False, None)] if n < args.out_of_core_from else []
            if n >= args.out_of_core_from or n in args.also_out_of_core:
                runs += [(True, rows) for rows in args.batch_rows]
            if args.engine == "spark":
                runs += [("spark-baseline", None)] if args.spark_baseline else []
                runs.append(("spark", None))
            for ooc, batch_rows in runs:
                out = tmp / f"out-{n}-{ooc}-{batch_rows}"
                spark = str(ooc).startswith("spark")
                extra = ["engine=spark", f"spark.driver_memory={args.spark_driver_memory}"] if spark else []
                source = args.spark_baseline if ooc == "spark-baseline" else None
                run = run_cli(log, out, bool(ooc) and not spark, batch_rows, extra, source)
                s = run.pop("summary")
                mode = ("spark baseline (local[*])" if source else "spark (local[*])") if spark else "out-of-core" if ooc else "in-memory"
                row = {"events": n, "mode": mode, "batch_rows": batch_rows,
                       "csv_mb": log.stat().st_size / 2**20, "generate_s": gen, **run, "events_per_s": n / run["wall_s"],
                       "ratings": s["ratings"], "users": s["users"], "rejected": sum(s["rows_rejected"].values())}
                results["curve"].append(row)
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                first = next((tmp / f"out-{n}-{m}-{b}" for m, b in runs if (tmp / f"out-{n}-{m}-{b}").exists()), None)
                if first is not None and first != out:  # against the first (pandas) run of this size
                    same = identical_outputs(first, out, atol=1e-6 if spark else 0.0)
                    row["same_as_pandas"] = same
                    print(f"  {mode} output equal to {first.name}: {same}", flush=True)
            for out in tmp.glob(f"out-{n}-*"):
                shutil.rmtree(out)
            log.unlink()
    if args.slow_tests:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow",
                               str(Path(__file__).parents[1] / "tests" / "test_ratings_spark.py")], capture_output=True, text=True)
        results["slow_tests"] = {"passed": proc.returncode == 0, "wall_s": time.perf_counter() - t0,
                                 "tail": proc.stdout.strip().splitlines()[-1:]}
        print(results["slow_tests"], flush=True)
    (OUT / f"bench_ratings{args.tag}.json").write_text(json.dumps(results, indent=2))
    lines = [f"Machine: {results['machine']}. Logs: {results['generator']}.", "",
             "| events | mode | batch_rows | CSV MB | wall s | events/s | peak RSS MB (Python) | peak RSS MB (JVM) | ratings | = pandas |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["curve"]:
        lines.append(f"| {r['events']:,} | {r['mode']} | {r['batch_rows'] or ''} | {r['csv_mb']:.0f} | {r['wall_s']:.1f} | "
                     f"{r['events_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['children_peak_mb']:.0f} | {r['ratings']:,} | "
                     f"{r.get('same_as_pandas', '')} |")
    if results["engines"]:
        lines += ["", "| engine (SPEC 1.1-1.4 core) | round | events | wall s | x deeprec (same round) | peak RSS MB | same sums |",
                  "|---|---|---|---|---|---|---|"]
    for r in results["engines"]:
        if "error" in r:
            lines.append(f"| {r['engine']} | {r['round']} | {r['events']:,} | error: {r['error']} | | | |")
        else:
            lines.append(f"| {r['engine']} | {r['round']} | {r['events']:,} | {r['wall_s']:.2f} | {r.get('time_vs_deeprec', 1):.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r.get('same_total', True)} |")
    (OUT / f"bench_ratings{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
