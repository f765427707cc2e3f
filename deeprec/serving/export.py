"""The log as tables: `deeprec-serve export=DIR state_dir=S` writes DIR/events.parquet and DIR/decisions.parquet.

events.parquet is an interactions table (`user_id, item_id, rating, timestamp`, rating = the event's
reward) that `deeprec-train data=interactions data.path=DIR/events.parquet` reads as is, plus
event_id, event, decision_id, seq, received, and `rank` / `propensity`: where the item stood in the
decision the event answers and the probability the policy put it there (null when the event names
no decision or the item was not in it) - what deeprec.bandits.offpolicy.ips needs.
decisions.parquet holds one row per served item: decision_id, user_id, created, model_version,
state_seq, fallback, epsilon, rank, item_id, score, propensity.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from deeprec.atomic import write_parquet_atomic
from deeprec.errors import DataError
from deeprec.outputs import claim_output

EXPORT_FILES = ("events.parquet", "decisions.parquet")


def read_log(state_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, decisions) of state_dir's log, read-only (a running service may keep writing)."""
    path = Path(state_dir) / "events.sqlite"
    if not path.is_file():
        raise DataError(f"state_dir={state_dir} holds no event log (events.sqlite)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        with db:  # one read transaction: events and decisions of the same moment
            events = pd.read_sql_query("SELECT * FROM events ORDER BY seq", db)
            decisions = pd.read_sql_query("SELECT * FROM decisions ORDER BY seq", db)
    finally:
        db.close()
    return events, decisions


def served_items(decisions: pd.DataFrame) -> pd.DataFrame:
    """Decisions in long form: one row per (decision, rank)."""
    lists = {col: [json.loads(text) for text in decisions[col]] for col in ("items", "scores", "propensities")}
    lengths = np.array([len(items) for items in lists["items"]], np.int64)
    rows = decisions.drop(columns=["items", "scores", "propensities", "seq"]).loc[np.repeat(decisions.index, lengths)]
    rows = rows.reset_index(drop=True)
    rows["rank"] = np.concatenate([np.arange(1, n + 1) for n in lengths]) if lengths.sum() else np.zeros(0, np.int64)
    rows["item_id"] = pd.Series([item for items in lists["items"] for item in items], dtype=object)
    rows["score"] = np.array([s for scores in lists["scores"] for s in scores], np.float64)
    rows["propensity"] = np.array([p for ps in lists["propensities"] for p in ps], np.float64)
    rows["fallback"] = rows["fallback"].astype(bool)
    return rows


def export_log(state_dir: str | Path, out_dir: str | Path) -> dict:
    """Write events.parquet and decisions.parquet into out_dir: a new or empty folder, or an earlier
    export (deeprec's output rule: only the files of that export are replaced)."""
    if not (Path(state_dir) / "events.sqlite").is_file():
        raise DataError(f"state_dir={state_dir} holds no event log (events.sqlite)")
    with claim_output(out_dir, "deeprec-serve export", key="export", inputs=[state_dir]) as out:
        out.prepare(EXPORT_FILES)
        return write_export(state_dir, out.path)


def write_export(state_dir: str | Path, out: Path) -> dict:
    events, decisions = read_log(state_dir)
    events = events.astype({"user_id": object, "item_id": object, "decision_id": object})  # also when empty
    served = served_items(decisions)
    position = served[["decision_id", "item_id", "rank", "propensity"]].drop_duplicates(["decision_id", "item_id"])
    table = events.rename(columns={"reward": "rating"}).merge(position, on=["decision_id", "item_id"], how="left")
    table["rank"] = table["rank"].astype("Int64")
    columns = ["user_id", "item_id", "rating", "timestamp", "event_id", "event", "decision_id", "rank", "propensity",
               "seq", "received"]
    write_parquet_atomic(table[columns], out / "events.parquet")
    write_parquet_atomic(served, out / "decisions.parquet")
    return {"state_dir": str(state_dir), "events": len(table), "decisions": len(decisions),
            "served_items": len(served), "events_with_decision": int(table["rank"].notna().sum())}
