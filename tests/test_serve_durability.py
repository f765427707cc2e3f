"""kill -9 under load: every acknowledged event is in the log exactly once, and the restarted state
(last snapshot + replayed tail) equals a from-scratch numpy replay of the log and an uninterrupted run."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pandas as pd
import torch

from deeprec.checkpoint import load_recommender
from deeprec.serving.export import read_log
from serving_helpers import ServerProcess, app_client, event, linucb_checkpoint, linucb_reference, read_snapshot


async def load_then_kill(server: ServerProcess, events: list[dict], rng: np.random.Generator, workers: int = 6):
    """Send `events` in random batches from several clients (with retries of acknowledged batches);
    kill -9 the server at a random moment. Returns (acknowledged ids, sent ids, duplicates seen)."""
    acked, sent, duplicates = set(), set(), 0
    position = 0
    kill_after = float(rng.uniform(0.4, 1.6))  # seconds after the first acknowledgement
    first_ack = asyncio.Event()
    done_batches: list[list[dict]] = []

    async def client(worker_rng: np.random.Generator):
        nonlocal position, duplicates
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            while position < len(events):
                if done_batches and worker_rng.random() < 0.1:  # a client retrying an answered batch
                    batch = done_batches[int(worker_rng.integers(len(done_batches)))]
                else:
                    size = int(worker_rng.integers(1, 17))
                    batch, position = events[position : position + size], position + size
                sent.update(e["event_id"] for e in batch)
                try:
                    answer = await http.post("/feedback", json=batch)
                except httpx.TransportError:
                    return  # the server is gone
                assert answer.status_code == 200, answer.text
                body = answer.json()
                acked.update(e["event_id"] for e in body["events"])
                duplicates += body["duplicates"]
                done_batches.append(batch)
                first_ack.set()

    async def killer():
        await first_ack.wait()
        await asyncio.sleep(kill_after)
        server.kill9()

    tasks = [asyncio.create_task(client(np.random.default_rng(rng.integers(1 << 30)))) for _ in range(workers)]
    await asyncio.gather(killer(), *tasks)
    return acked, sent, duplicates, position


def test_kill9_under_load_loses_no_acknowledged_event_and_replays_exactly(tmp_path):
    ckpt = linucb_checkpoint(tmp_path / "linucb.ckpt")
    model, meta = load_recommender(ckpt)
    features = model.arm_features.double().numpy()
    rng = np.random.default_rng(20240601)
    users = [*meta["user_ids"], *(f"new{n}" for n in range(12))]  # some learners the checkpoint never saw
    n_events = 40000
    events = [event(f"ev{n}", users[u], meta["item_ids"][i], float(r), 1.7e9 + n)
              for n, (u, i, r) in enumerate(zip(rng.integers(len(users), size=n_events),
                                                  rng.integers(len(meta["item_ids"]), size=n_events),
                                                  rng.integers(0, 6, size=n_events)))]
    state = tmp_path / "state"
    server = ServerProcess(ckpt, state, "snapshot.every_events=500")
    acked, sent, duplicates, position = asyncio.run(load_then_kill(server, events, rng))
    assert server.proc.returncode == -9
    assert 0 < len(acked) and position < n_events, "the kill must land while the load is running"
    assert duplicates > 0  # retried batches were answered as duplicates

    restarted = ServerProcess(ckpt, state)
    try:
        logged, _ = read_log(state)
        assert logged["event_id"].is_unique
        assert acked <= set(logged["event_id"]), "an acknowledged event was lost"
        assert set(logged["event_id"]) <= sent
        assert list(logged["seq"]) == list(range(1, len(logged) + 1))
        recovery = restarted.info["recovery"]
        assert recovery["snapshot_seq"] > 0  # a snapshot was taken under load, and the log after it replayed:
        # group commits end anywhere, so the snapshot may be at any seq, the last one included (nothing to replay)
        assert recovery["snapshot_seq"] + recovery["events_replayed"] == len(logged)
        stats = httpx.get(f"{restarted.url}/stats").json()
        assert stats["events_applied"] == len(logged)
        httpx.post(f"{restarted.url}/admin/snapshot")
        recovered = read_snapshot(state)
        uninterrupted_scores = {}
        probes = ["u000", "u013", "new3", "new7"]
        # the same events, in log order, into a service that never stopped
        with app_client(ckpt, tmp_path / "uninterrupted") as (client, _):
            rows = logged.to_dict("records")
            for start in range(0, len(rows), 5000):
                batch = [event(r["event_id"], r["user_id"], r["item_id"], r["reward"], r["timestamp"]) for r in rows[start : start + 5000]]
                assert client.post("/feedback", json=batch).json()["accepted"] == len(batch)
            for user in probes:
                uninterrupted_scores[user] = client.post("/recommend", json={"user_id": user, "k": 25}).json()["items"]
            client.post("/admin/snapshot")
        straight = read_snapshot(tmp_path / "uninterrupted")
        for user in probes:
            got = httpx.post(f"{restarted.url}/recommend", json={"user_id": user, "k": 25}).json()["items"]
            assert [r["item_id"] for r in got] == [r["item_id"] for r in uninterrupted_scores[user]]
            np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in uninterrupted_scores[user]], atol=1e-6)
    finally:
        restarted.stop()

    # an independent replay: per-user sums of x xᵀ and r x over the logged events, in numpy
    slots = {user: n for n, user in enumerate([*meta["user_ids"], *recovered["online_user_ids"]])}
    n_slots = recovered["model_state"]["bandit.A"].shape[0]
    dim = features.shape[1]
    A0 = np.tile(np.eye(dim) * model.config.lam, (n_slots, 1, 1))
    b0 = np.zeros((n_slots, dim))
    A0[: len(meta["user_ids"])] = model.bandit.A.double().numpy()
    b0[: len(meta["user_ids"])] = model.bandit.b.double().numpy()
    item_index = {item: n for n, item in enumerate(meta["item_ids"])}
    A, b = linucb_reference(A0, b0, features, logged["user_id"].map(slots), logged["item_id"].map(item_index), logged["reward"])
    assert sorted(recovered["online_user_ids"]) == sorted(set(logged["user_id"]) - set(meta["user_ids"]))
    for snapshot in (recovered, straight):
        n = len(meta["user_ids"]) + len(snapshot["online_user_ids"])
        order = [slots[u] for u in [*meta["user_ids"], *snapshot["online_user_ids"]]]
        np.testing.assert_allclose(snapshot["model_state"]["bandit.A"][:n].numpy(), A[order], atol=1e-6)
        np.testing.assert_allclose(snapshot["model_state"]["bandit.b"][:n].numpy(), b[order], atol=1e-6)
    seen = pd.DataFrame(recovered["online_seen"].numpy(), columns=["slot", "item"]).drop_duplicates()
    expected_seen = pd.DataFrame({"slot": logged["user_id"].map(slots), "item": logged["item_id"].map(item_index)}).drop_duplicates()
    assert len(seen.merge(expected_seen)) == len(seen) == len(expected_seen)
    assert torch.equal(recovered["model_state"]["arm_features"], model.arm_features)
