"""Group commit: concurrent /feedback batches share one SQLite transaction, then are applied in log order.

One task on the event loop owns the cycle: take every waiting batch (and the decisions logged since the
last cycle), commit them in the writer thread, apply the new events to the state, answer each batch.
While one transaction commits, the next batches gather, so under load a transaction carries many
requests and the cost of a commit is shared. Decisions are not waited for: they go with the next
commit, at most `flush_seconds` later. Snapshots are taken here too, between two commits (the copy
runs in a thread while /recommend keeps being served), so a snapshot is the state after exactly the
events up to its seq.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeprec.serving.snapshot import write_snapshot
from deeprec.serving.state import ServingState
from deeprec.serving.wal import EventLog

log = logging.getLogger("deeprec.serve")


class Unavailable(Exception):
    """The log could not be written (disk full, I/O error) or the state is broken: answer 503."""


@dataclass
class PendingBatch:
    """One validated /feedback request waiting for its commit."""

    rows: list[tuple]  # WAL rows, EVENT_COLUMNS order
    user_ids: list[str]
    items: np.ndarray  # [E] int64
    rewards: np.ndarray  # [E] float64
    timestamps: np.ndarray  # [E] float64
    future: asyncio.Future = field(default=None)


@dataclass
class CommitStats:
    group_commits: int = 0
    events_committed: int = 0
    events_duplicate: int = 0
    decisions_logged: int = 0
    decisions_lost: int = 0
    snapshot_seq: int = 0
    snapshot_time: float = field(default_factory=time.time)
    snapshots_written: int = 0


def answer(batch: PendingBatch, seqs: list | None = None, error: Exception | None = None) -> None:
    """Resolve a batch's future, unless its request is gone (a cancelled future takes no result)."""
    if batch.future.done():
        return
    if error is not None:
        batch.future.set_exception(error)
    else:
        batch.future.set_result(seqs)


class GroupCommitter:
    def __init__(self, wal: EventLog, state: ServingState, snapshot_dir: Path, group_max_events: int,
                 snapshot_every_events: int, snapshot_every_seconds: float, snapshot_keep: int,
                 snapshot_seq: int = 0, flush_seconds: float = 0.05) -> None:
        self.wal, self.state = wal, state
        self.snapshot_dir = snapshot_dir
        self.group_max_events = group_max_events
        self.snapshot_every_events, self.snapshot_every_seconds = snapshot_every_events, snapshot_every_seconds
        self.snapshot_keep = snapshot_keep
        self.flush_seconds = flush_seconds
        self.pending: deque[PendingBatch] = deque()
        self.decisions: list[tuple] = []
        self.stats = CommitStats(snapshot_seq=snapshot_seq)  # the newest snapshot on disk
        self.failure: str | None = None  # set when the state can no longer follow the log
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="deeprec-wal")
        self._snapshotter = ThreadPoolExecutor(1, thread_name_prefix="deeprec-snapshot")
        self._snapshot_task: asyncio.Future | None = None  # the snapshot being written
        self._snapshot_requests: list[asyncio.Future] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    # -- producers ------------------------------------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def submit(self, batch: PendingBatch) -> list[int | None]:
        """Per event of the batch, its seq once committed and applied, or None for a repeated event_id."""
        if self.failure is not None:
            raise Unavailable(self.failure)
        batch.future = asyncio.get_running_loop().create_future()
        self.pending.append(batch)
        self._wake.set()
        return await batch.future

    def record_decision(self, row: tuple) -> None:
        self.decisions.append(row)

    # -- the cycle ------------------------------------------------------------------------
    def take(self) -> list[PendingBatch]:
        """Whole batches, oldest first, up to group_max_events events (at least one batch)."""
        taken, size = [], 0
        while self.pending and (not taken or size + len(self.pending[0].rows) <= self.group_max_events):
            batch = self.pending.popleft()
            taken.append(batch)
            size += len(batch.rows)
        return taken

    async def run(self) -> None:
        try:
            await self.cycle()
        except Exception as exc:  # a bug: no request may wait forever for a cycle that will not come
            log.exception("the commit loop stopped")
            self.failure = f"the commit loop stopped ({type(exc).__name__}: {exc}); restart the service"
            while self.pending:
                answer(self.pending.popleft(), error=Unavailable(self.failure))

    async def cycle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending and not self._snapshot_requests:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            batches, decisions = self.take(), self.decisions
            self.decisions = []
            if batches or decisions:
                await self.commit_and_apply(loop, batches, decisions)
            await self.snapshots(loop)
            if self._closing and not self.pending and not self.decisions:
                return

    async def commit_and_apply(self, loop, batches: list[PendingBatch], decisions: list[tuple]) -> None:
        rows = [row for batch in batches for row in batch.rows]
        try:
            seqs = await loop.run_in_executor(self._writer, self.wal.commit, rows, decisions)
        except Exception as exc:  # the disk's problem: nothing was written, nobody is told "applied"
            log.error("the event log could not be written: %s", exc)
            self.stats.decisions_lost += len(decisions)
            for batch in batches:
                answer(batch, error=Unavailable(f"the event log could not be written ({exc}); retry later"))
            return
        self.stats.group_commits += 1
        self.stats.decisions_logged += len(decisions)
        new = np.array([n for n, seq in enumerate(seqs) if seq is not None], np.int64)
        self.stats.events_committed += len(new)
        self.stats.events_duplicate += len(seqs) - len(new)
        if len(new):
            try:
                users = [user for batch in batches for user in batch.user_ids]
                self.state.apply(
                    np.array([seqs[n] for n in new], np.int64), [users[n] for n in new],
                    np.concatenate([b.items for b in batches])[new], np.concatenate([b.rewards for b in batches])[new],
                    np.concatenate([b.timestamps for b in batches])[new],
                )
            except Exception as exc:  # a bug: the log holds events the state does not; stop taking writes
                log.exception("applying committed events failed; the service stops accepting feedback")
                self.failure = f"applying events failed ({type(exc).__name__}: {exc}); restart the service to replay the log"
                for batch in batches:
                    answer(batch, error=Unavailable(self.failure))
                return
        start = 0
        for batch in batches:
            answer(batch, seqs[start : start + len(batch.rows)])
            start += len(batch.rows)

    # -- snapshots ------------------------------------------------------------------------
    def snapshot_due(self) -> bool:
        behind = self.state.applied_seq - self.stats.snapshot_seq
        if behind <= 0:
            return False
        return behind >= self.snapshot_every_events or time.time() - self.stats.snapshot_time >= self.snapshot_every_seconds

    def request_snapshot(self) -> asyncio.Future:
        """Ask the cycle for a snapshot of the state as it is now; the future gets its seq once written."""
        future = asyncio.get_running_loop().create_future()
        self._snapshot_requests.append(future)
        self._wake.set()
        return future

    async def snapshot_now(self) -> int:
        """Write a snapshot of the current state; returns its seq (POST /admin/snapshot)."""
        return await self.request_snapshot()

    async def snapshot_step(self, loop, force: bool = False) -> asyncio.Future | None:
        """Called by the cycle between two commits, so nothing is applied meanwhile: copy the state in a
        thread (/recommend keeps being served), then write it in the background. Returns the write."""
        if self._snapshot_task is not None and not self._snapshot_task.done():
            if not force:
                return None
            await asyncio.wait([self._snapshot_task])
        if self.failure is not None or not (self.snapshot_due() or (force and self.state.applied_seq > self.stats.snapshot_seq)):
            return None
        payload = await loop.run_in_executor(None, self.state.snapshot)  # exactly the state after payload["seq"]
        seq = payload["seq"]

        def written(future: asyncio.Future) -> None:
            if future.cancelled() or future.exception() is not None:
                log.error("snapshot of seq %d failed: %s (the log still holds every event)", seq,
                          "cancelled" if future.cancelled() else future.exception())
                return
            self.stats.snapshot_seq, self.stats.snapshot_time = seq, time.time()
            self.stats.snapshots_written += 1

        self._snapshot_task = loop.run_in_executor(
            self._snapshotter, write_snapshot, self.snapshot_dir, seq, payload, self.snapshot_keep
        )
        self._snapshot_task.add_done_callback(written)
        return self._snapshot_task

    async def snapshots(self, loop) -> None:
        """The cycle's snapshot step: the requested ones (answered once written), else one if due."""
        if not self._snapshot_requests:
            await self.snapshot_step(loop)
            return
        requests, self._snapshot_requests = self._snapshot_requests, []
        try:
            task = await self.snapshot_step(loop, force=True)
        except Exception as exc:
            for request in requests:
                if not request.done():
                    request.set_exception(exc)
            return

        def resolve(future: asyncio.Future | None = None) -> None:
            failed = future is not None and (future.cancelled() or future.exception() is not None)
            for request in requests:
                if request.done():
                    continue
                if failed:
                    request.set_exception(future.exception() or RuntimeError("snapshot cancelled"))
                else:
                    request.set_result(self.stats.snapshot_seq)

        if task is None:
            resolve()
        else:
            task.add_done_callback(resolve)

    async def close(self) -> None:
        """Drain what is queued, write a last snapshot, stop the threads."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
        if self.failure is None:  # the cycle is over: nothing else changes the state now
            try:
                task = await self.snapshot_step(asyncio.get_running_loop(), force=True)
                if task is not None:
                    await task
            except Exception as exc:
                log.error("the last snapshot failed: %s", exc)
        for request in self._snapshot_requests:
            if not request.done():
                request.set_result(self.stats.snapshot_seq)
        self._writer.shutdown(wait=True)
        self._snapshotter.shutdown(wait=True)
