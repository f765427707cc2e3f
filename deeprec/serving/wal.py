"""The write-ahead log: every accepted event and every decision, in SQLite (WAL journal mode).

An event is committed here before it is applied and before /feedback answers, so a kill -9 never
loses an acknowledged event. `seq` (the rowid) is the order events are applied in; `event_id` is
unique, so a retried event is stored, and therefore applied, once. Concurrent requests share one
transaction (group commit, see committer.py). The log is kept whole: it is the service's record of
what it showed and what happened, exported as tables by export.py.

state_dir follows deeprec's output rule (deeprec.outputs): it is a folder deeprec-serve created
(new or empty when first given), held by one process at a time (its lock), and deeprec writes and
removes there only the files its manifest lists: the log (events.sqlite and SQLite's -wal / -shm
beside it) and snapshots/snapshot-<seq>.pt with their temporaries. Anything else put there stays.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from deeprec.errors import ConfigError
from deeprec.outputs import claim_output

#: what deeprec-serve writes in a state_dir (the manifest lists them; nothing else there is touched)
STATE_FILES = ("events.sqlite", "events.sqlite-wal", "events.sqlite-shm", "events.sqlite-journal")
STATE_PATTERNS = ("snapshots/snapshot-*.pt", "snapshots/.snapshot-*.deeprec-*.tmp")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,          -- order of application
    event_id TEXT NOT NULL UNIQUE,    -- idempotency key
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    reward REAL NOT NULL,             -- the event's reward, or event_rewards[event]
    event TEXT,                       -- the event name when one was given
    timestamp REAL NOT NULL,          -- epoch seconds, as sent
    decision_id TEXT,                 -- the /recommend answer the event responds to, if given
    received REAL NOT NULL            -- server clock when accepted
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    created REAL NOT NULL,
    model_version TEXT NOT NULL,
    state_seq INTEGER NOT NULL,       -- the last event applied to the state the list was ranked from
    fallback INTEGER NOT NULL,        -- 1 when the popularity fallback ranked the list
    epsilon REAL NOT NULL,            -- exploration probability per position
    items TEXT NOT NULL,              -- JSON lists, position order
    scores TEXT NOT NULL,
    propensities TEXT NOT NULL
);
"""

EVENT_COLUMNS = ("event_id", "user_id", "item_id", "reward", "event", "timestamp", "decision_id", "received")
DECISION_COLUMNS = ("decision_id", "user_id", "created", "model_version", "state_seq", "fallback", "epsilon",
                    "items", "scores", "propensities")


@dataclass
class EventRows:
    """A block of logged events in seq order, as arrays."""

    seq: np.ndarray  # [E] int64
    user_id: list[str]
    item_id: list[str]
    reward: np.ndarray  # [E] float64
    timestamp: np.ndarray  # [E] float64

    def __len__(self) -> int:
        return len(self.seq)


class EventLog:
    """events.sqlite in state_dir, held by one process at a time (an exclusive lock file)."""

    def __init__(self, state_dir: str | Path, model_version: str, sync: str = "full", inputs=()) -> None:
        self.folder = Path(state_dir)
        self.path = self.folder / "events.sqlite"
        self._claim = contextlib.ExitStack()  # the folder's lock, held until close()
        out = self._claim.enter_context(claim_output(state_dir, "deeprec-serve", key="state_dir", inputs=inputs, lock="serve"))
        try:
            out.own(STATE_FILES, STATE_PATTERNS)
            out.remove_temporaries(["snapshots/snapshot-*.pt"])  # a snapshot a kill -9 cut short
            out.make_folders("snapshots")
            self._open(state_dir, model_version, sync)
        except BaseException:
            self._claim.close()
            raise

    def _open(self, state_dir, model_version: str, sync: str) -> None:
        self.db = connect(self.path, sync)
        self.db.executescript(SCHEMA)
        stored = self.meta("model_version")
        if stored is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('model_version', ?)", (model_version,))
        elif stored != model_version:
            self.db.close()
            raise ConfigError(
                f"state_dir={state_dir} holds the log of checkpoint {stored}, not of {model_version}; give a new "
                "state_dir (export the old log with export=DIR to train on it)"
            )

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def commit(self, events: list[tuple], decisions: list[tuple]) -> list[int | None]:
        """Write decisions and events (tuples in DECISION_COLUMNS / EVENT_COLUMNS order) in one transaction.

        Returns, per event, its seq, or None when its event_id is already in the log (a retry).
        Nothing is written when anything fails.
        """
        seqs: list[int | None] = []
        cursor = self.db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            if decisions:
                cursor.executemany(
                    f"INSERT OR IGNORE INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({', '.join('?' * len(DECISION_COLUMNS))})",
                    decisions,
                )
            insert = f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
            for row in events:
                cursor.execute(insert, row)
                seqs.append(cursor.lastrowid if cursor.rowcount == 1 else None)
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        return seqs

    def events_after(self, seq: int, batch: int) -> Iterator[EventRows]:
        """The logged events with seq > `seq`, in seq order, `batch` rows at a time."""
        last = seq
        while True:
            rows = self.db.execute(
                "SELECT seq, user_id, item_id, reward, timestamp FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, batch),
            ).fetchall()
            if not rows:
                return
            seqs, users, items, rewards, times = zip(*rows)
            last = seqs[-1]
            yield EventRows(np.array(seqs, np.int64), list(users), list(items), np.array(rewards, np.float64),
                            np.array(times, np.float64))

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def close(self) -> None:
        self.db.close()
        self._claim.close()


def connect(path: str | Path, sync: str = "full") -> sqlite3.Connection:
    """A connection in WAL journal mode; `sync` full fsyncs every commit, normal only at checkpoints."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync.upper()}")
    return db


def decision_row(decision_id: str, user_id: str, created: float, model_version: str, state_seq: int,
                 fallback: bool, epsilon: float, items: list[str], scores: list[float], propensities: list[float]) -> tuple:
    """A decisions row in DECISION_COLUMNS order (lists as JSON)."""
    return (decision_id, user_id, created, model_version, state_seq, int(fallback), epsilon,
            json.dumps(items), json.dumps(scores), json.dumps(propensities))
