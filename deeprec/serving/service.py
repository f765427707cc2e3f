"""The service without HTTP: open a state_dir (checkpoint, last snapshot, log replay), then the
recommend / feedback operations the routes in app.py call, and the counters /stats reports."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from deeprec.checkpoint import load_recommender
from deeprec.errors import DataError
from deeprec.scoring.output import file_sha256
from deeprec.serving.committer import GroupCommitter, PendingBatch, Unavailable
from deeprec.serving.config import ServeConfig
from deeprec.serving.policy import choose
from deeprec.serving.schema import BadRequest, FeedbackEvent, RecommendRequest
from deeprec.serving.snapshot import read_latest
from deeprec.serving.state import ServingState
from deeprec.serving.wal import EventLog, decision_row

log = logging.getLogger("deeprec.serve")


def model_version(ckpt: str | Path, model_name: str) -> str:
    """`<model>-<first 12 hex of the checkpoint's SHA-256>`: names the model a state belongs to."""
    return f"{model_name}-{file_sha256(ckpt)[:12]}"


class Service:
    """One process's share of the learners: their state, its log, the counters."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.started = time.time()
        torch.set_num_threads(cfg.threads)
        model, meta = load_recommender(cfg.ckpt)
        model.eval()  # dropout off, as deeprec-score scores
        self.model_name = meta["model"]
        self.version = model_version(cfg.ckpt, self.model_name)
        self.state = ServingState(model, meta, self.version)
        self.wal = EventLog(cfg.state_dir, self.version, cfg.wal.sync, inputs=[cfg.ckpt])
        self.snapshot_dir = Path(cfg.state_dir) / "snapshots"
        self.recovery = self.recover()
        self.committer = GroupCommitter(
            self.wal, self.state, self.snapshot_dir, cfg.wal.group_max_events, cfg.snapshot.every_events,
            cfg.snapshot.every_seconds, cfg.snapshot.keep, snapshot_seq=self.recovery["snapshot_seq"],
        )
        self.rng = np.random.default_rng(cfg.exploration.seed)
        self.counts: Counter = Counter()
        self.rejected_by_reason: Counter = Counter()

    # -- start ------------------------------------------------------------------------------
    def recover(self) -> dict:
        """Load the newest snapshot of this checkpoint, then replay the log after it."""
        started = time.perf_counter()
        last = self.wal.last_seq()
        payload = read_latest(self.snapshot_dir, self.version, last)
        if payload is not None:
            self.state.restore(payload)
        from_seq = self.state.applied_seq
        replayed = 0
        for block in self.wal.events_after(from_seq, self.cfg.replay_batch):
            items = self.state.item_slots(block.item_id)
            if (items < 0).any():
                raise DataError(f"{self.wal.path}: logged item {block.item_id[int(np.argmax(items < 0))]!r} is not in checkpoint {self.cfg.ckpt}")
            self.state.apply(block.seq, block.user_id, items, block.reward, block.timestamp)
            replayed += len(block)
        seconds = time.perf_counter() - started
        log.info("recovered %s: snapshot at seq %d, %d events replayed in %.2f s", self.cfg.state_dir, from_seq, replayed, seconds)
        return {"snapshot_seq": from_seq, "events_replayed": replayed, "seconds": round(seconds, 3)}

    async def start(self) -> None:
        self.committer.start()
        if self.recovery["events_replayed"]:  # the next crash then replays from here
            self.committer.request_snapshot()

    async def stop(self) -> None:
        await self.committer.close()
        self.wal.close()

    # -- requests ---------------------------------------------------------------------------
    def check_id(self, value, where: str) -> str:
        text = str(value)
        if not text or len(text) > self.cfg.limits.max_id_length:
            raise BadRequest(422, f"{where}: ids must be 1..{self.cfg.limits.max_id_length} characters (got {len(text)})", "bad_id")
        return text

    def recommend(self, req: RecommendRequest) -> dict:
        """The list for one user, logged as a decision (with its propensities) for off-policy evaluation."""
        if not 1 <= req.k <= self.cfg.limits.max_k:
            raise BadRequest(422, f"k={req.k} is out of range; give 1..{self.cfg.limits.max_k}", "k_out_of_range")
        user_id = self.check_id(req.user_id, "user_id")
        scores, fallback, slot = self.state.score_row(user_id, req.exclude_seen)
        order = self.state.popularity_order if fallback else None
        items, propensities = choose(scores, req.k, self.cfg.exploration.epsilon, self.rng, order)
        values = scores[torch.from_numpy(items)].tolist() if len(items) else []
        because = self.state.because(slot, items) if req.explain and not fallback and len(items) else [[] for _ in items]
        decision_id = uuid.uuid4().hex
        item_ids = [str(self.state.item_ids[i]) for i in items.tolist()]
        self.committer.record_decision(decision_row(
            decision_id, user_id, time.time(), self.version, self.state.applied_seq, fallback,
            self.cfg.exploration.epsilon, item_ids, values, propensities.tolist(),
        ))
        self.counts["decisions"] += 1
        return {
            "decision_id": decision_id,
            "model_version": self.version,
            "user_id": user_id,
            "fallback": "popularity" if fallback else None,
            "items": [
                {"item_id": item, "score": float(score), "propensity": float(p), "because": why}
                for item, score, p, why in zip(item_ids, values, propensities.tolist(), because)
            ],
        }

    def validate_events(self, events: list[FeedbackEvent]) -> PendingBatch:
        """Everything about a batch that needs the state: ids, catalogue, event names. All or nothing."""
        def where(n: int, key: str) -> str:
            return f"events[{n}].{key}" if len(events) > 1 else key

        user_ids = [self.check_id(e.user_id, where(n, "user_id")) for n, e in enumerate(events)]
        for n, e in enumerate(events):
            self.check_id(e.event_id, where(n, "event_id"))
        items = self.state.item_slots([e.item_id for e in events])
        if (items < 0).any():
            n = int(np.argmax(items < 0))
            example = ", ".join(repr(str(i)) for i in self.state.item_ids[:3])
            raise BadRequest(422, f"{where(n, 'item_id')}={str(events[n].item_id)!r} is not an item of the checkpoint "
                                  f"({self.state.n_items} items, e.g. {example})", "unknown_item", len(events))
        rewards = np.empty(len(events), np.float64)
        table = self.cfg.event_rewards
        for n, e in enumerate(events):
            if e.reward is not None:
                rewards[n] = e.reward
            elif e.event in table:
                rewards[n] = table[e.event]
            else:
                raise BadRequest(422, f"{where(n, 'event')}={e.event!r} is not a known event; valid: {sorted(table)} "
                                      "(or send a numeric reward)", "unknown_event", len(events))
        received = time.time()
        rows = [(str(e.event_id), user, str(e.item_id), float(r), e.event, float(e.timestamp), e.decision_id, received)
                for e, user, r in zip(events, user_ids, rewards.tolist())]
        times = np.array([float(e.timestamp) for e in events], np.float64)
        return PendingBatch(rows, user_ids, items, rewards, times)

    async def feedback(self, events: list[FeedbackEvent]) -> dict:
        """Durable, then applied, then answered: the user's next /recommend reflects these events."""
        batch = self.validate_events(events)
        self.counts["events_received"] += len(events)
        seqs = await self.committer.submit(batch)
        applied = sum(seq is not None for seq in seqs)
        self.counts["events_applied_here"] += applied
        self.counts["events_duplicate"] += len(seqs) - applied
        return {
            "accepted": applied,
            "duplicates": len(seqs) - applied,
            "state_seq": self.state.applied_seq,
            "events": [{"event_id": row[0], "status": "duplicate" if seq is None else "new", "seq": seq}
                       for row, seq in zip(batch.rows, seqs)],
        }

    def rejected(self, exc: BadRequest, endpoint: str) -> None:
        self.counts["requests_rejected"] += 1
        if endpoint == "feedback":
            self.counts["events_rejected"] += exc.events
            self.counts["events_received"] += exc.events
        self.rejected_by_reason[exc.kind] += 1

    # -- reports ----------------------------------------------------------------------------
    def stats(self) -> dict:
        c, cs = self.counts, self.committer.stats
        return {
            "model": self.model_name,
            "model_version": self.version,
            "users_checkpoint": self.state.n_checkpoint_users,
            "users_online_new": len(self.state.user_ids) - self.state.n_checkpoint_users,
            "items": self.state.n_items,
            "decisions": c["decisions"],
            "decisions_logged": cs.decisions_logged,
            "events_received": c["events_received"],
            "events_applied": self.state.events_applied,
            "events_new_since_start": c["events_applied_here"],
            "events_duplicate": c["events_duplicate"],
            "events_rejected": c["events_rejected"],
            "requests_rejected": c["requests_rejected"],
            "rejected_by_reason": dict(self.rejected_by_reason),
            "state_seq": self.state.applied_seq,
            "group_commits": cs.group_commits,
            "snapshot_seq": cs.snapshot_seq,
            "snapshot_age_seconds": round(time.time() - cs.snapshot_time, 3),
            "snapshots_written": cs.snapshots_written,
            "recovery": self.recovery,
            "uptime_seconds": round(time.time() - self.started, 3),
            "failure": self.committer.failure,
        }


__all__ = ["Service", "Unavailable", "model_version"]
