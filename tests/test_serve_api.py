"""deeprec-serve's HTTP contract in process: the bad-input catalogue (4xx, one line, counted, nothing
applied), idempotent retries, read-your-writes against a numpy LinUCB, the fallback, the token,
propensities with exploration, and the export that deeprec-train and the off-policy estimators read."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.checkpoint import load_recommender
from serving_helpers import app_client, event, linucb_checkpoint, linucb_reference, read_snapshot, tiny_data, ucb_scores


@pytest.fixture(scope="module")
def linucb_ckpt(tmp_path_factory):
    return linucb_checkpoint(tmp_path_factory.mktemp("ckpt") / "linucb.ckpt")


@pytest.fixture
def served(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "state") as (client, service):
        yield client, service


def initial_bandit(ckpt):
    model, meta = load_recommender(ckpt)
    return (model.bandit.A.double().numpy(), model.bandit.b.double().numpy(), model.arm_features.double().numpy(),
            model.config.alpha, meta)


# -- bad input: each a 4xx with one line, counted, never a 500, never partly applied -----------------
BAD_RECOMMEND = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b'{"user_id": true}', 422, "user_id"),
    (b'{"user_id": "u000", "k": "10"}', 422, "k"),
    (b'{"user_id": "u000", "k": 2.5}', 422, "k"),
    (b'{"user_id": "u000", "exclude_seen": "yes"}', 422, "exclude_seen"),
    (b'{"user_id": "u000", "colour": "red"}', 422, "unknown field colour"),
    (b'{"k": 3}', 422, "missing field user_id"),
    (b'{"user_id": "u000", "k": 0}', 422, "k=0 is out of range"),
    (b'{"user_id": "u000", "k": 101}', 422, "k=101 is out of range"),
    (b'{"user_id": "u000", "k": -3}', 422, "out of range"),
    (b'{"user_id": ""}', 422, "user_id"),
]


@pytest.mark.parametrize("body, status, words", BAD_RECOMMEND)
def test_bad_recommend_requests_get_a_one_line_4xx(served, body, status, words):
    client, service = served
    before = service.stats()["requests_rejected"]
    answer = client.post("/recommend", content=body)
    assert answer.status_code == status
    reason = answer.json()["error"]
    assert words in reason and "\n" not in reason
    assert service.stats()["requests_rejected"] == before + 1


GOOD = event("ok-1", "u001", "i002")
BAD_FEEDBACK = [
    (b'{"event_id": "a", ', 400, "not valid JSON"),
    (json.dumps({**GOOD, "reward": "1"}), 422, "reward"),
    (b'{"event_id": "a", "user_id": "u001", "item_id": "i002", "reward": NaN, "timestamp": 1}', 422, "finite"),
    (b'{"event_id": "a", "user_id": "u001", "item_id": "i002", "reward": Infinity, "timestamp": 1}', 422, "finite"),
    (b'{"event_id": "a", "user_id": "u001", "item_id": "i002", "reward": 1e999, "timestamp": 1}', 422, "finite"),
    (json.dumps({**GOOD, "item_id": "no-such-item"}), 422, "is not an item of the checkpoint"),
    (json.dumps({**GOOD, "extra": 1}), 422, "unknown field extra"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "event_id"}), 422, "missing field event_id"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "timestamp"}), 422, "missing field timestamp"),
    (json.dumps({**GOOD, "timestamp": "yesterday"}), 422, "ISO-8601"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "reward"}), 422, "exactly one of"),
    (json.dumps({**GOOD, "event": "click"}), 422, "exactly one of"),
    (json.dumps({**{k: v for k, v in GOOD.items() if k != "reward"}, "event": "teleport"}), 422, "not a known event"),
    (json.dumps({**GOOD, "user_id": ["u1"]}), 422, "user_id"),
    (json.dumps({**GOOD, "event_id": "x" * 300}), 422, "1..256 characters"),
    (b"[]", 422, "no event"),
    (b'"hello"', 422, "an event object"),
    (json.dumps({"events": [GOOD], "also": 1}), 422, "no other field"),
    (json.dumps([GOOD, {**GOOD, "event_id": "ok-2", "reward": None, "event": None}]), 422, "events[1]"),
    (json.dumps({"events": [GOOD, {**GOOD, "event_id": "ok-3", "item_id": "zzz"}]}), 422, "events[1].item_id"),
]


@pytest.mark.parametrize("body, status, words", BAD_FEEDBACK)
def test_bad_feedback_is_refused_whole_and_counted(served, body, status, words):
    client, service = served
    before = service.stats()
    answer = client.post("/feedback", content=body)
    assert answer.status_code == status, answer.text
    reason = answer.json()["error"]
    assert words in reason and "\n" not in reason
    after = service.stats()
    assert after["requests_rejected"] == before["requests_rejected"] + 1
    assert after["events_rejected"] > before["events_rejected"] or body in (b"[]",)
    assert after["events_applied"] == before["events_applied"] == 0  # no event of the batch was applied
    assert service.wal.last_seq() == 0
    # the good events of a refused batch were not consumed: they are new when sent alone
    assert client.post("/feedback", json=GOOD).json()["accepted"] == 1


def test_body_size_limit_with_and_without_content_length(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "s", limits={"max_body_bytes": 2000, "max_batch_events": 3}) as (client, service):
        big = json.dumps([event(f"e{n}", "u001", "i001") for n in range(40)])
        answer = client.post("/feedback", content=big)
        assert answer.status_code == 413 and "max_body_bytes=2000" in answer.json()["error"]

        def chunks():  # no Content-Length: the limit is counted while reading
            for _ in range(10):
                yield b" " * 500

        answer = client.post("/recommend", content=chunks())
        assert answer.status_code == 413
        answer = client.post("/feedback", json=[event(f"e{n}", "u001", "i001") for n in range(4)])
        assert answer.status_code == 413 and "max_batch_events=3" in answer.json()["error"]
        assert service.stats()["rejected_by_reason"] == {"body_too_large": 2, "batch_too_large": 1}
        assert service.stats()["events_applied"] == 0


def test_wrong_routes_and_methods_are_4xx(served):
    client, service = served
    assert client.get("/recommend").status_code == 405
    assert client.post("/nowhere", json={}).status_code == 404
    assert "routes:" in client.get("/nowhere").json()["error"]
    assert service.stats()["requests_rejected"] == 3


def test_writes_need_the_bearer_token_when_one_is_set(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "s", token="s3cret") as (client, service):
        assert client.post("/feedback", json=GOOD).status_code == 401
        answer = client.post("/feedback", json=GOOD, headers={"Authorization": "Bearer wrong"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert client.post("/admin/snapshot", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert service.stats()["events_applied"] == 0
        assert client.post("/feedback", json=GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/recommend", json={"user_id": "u001"}).status_code == 200  # reads need no token
        assert client.post("/admin/snapshot", headers={"Authorization": "Bearer s3cret"}).json()["snapshot_seq"] == 1


def test_behind_a_proxy_the_route_key_must_match_the_body(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "s", route_key=True) as (client, _):
        assert client.post("/recommend?user_id=u001", json={"user_id": "u001"}).status_code == 200
        assert client.post("/recommend?user_id=u002", json={"user_id": "u001"}).status_code == 421
        assert client.post("/recommend", json={"user_id": "u001"}).status_code == 421
        mixed = [event("a", "u001", "i001"), event("b", "u002", "i001")]
        answer = client.post("/feedback?user_id=u001", json=mixed)
        assert answer.status_code == 421 and "one user" in answer.json()["error"]


# -- idempotency ---------------------------------------------------------------------------------
def test_a_retried_event_is_applied_once(served, linucb_ckpt):
    client, service = served
    A0, b0, features, _, meta = initial_bandit(linucb_ckpt)
    user, item = meta["user_ids"].index("u003"), meta["item_ids"].index("i004")
    first = client.post("/feedback", json=event("once", "u003", "i004", reward=2.0)).json()
    again = client.post("/feedback", json=event("once", "u003", "i004", reward=2.0)).json()
    batch = client.post("/feedback", json=[event("once", "u003", "i004", 2.0), event("twice", "u003", "i004", 1.0),
                                           event("twice", "u003", "i004", 1.0)]).json()
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 1)
    assert [e["status"] for e in batch["events"]] == ["duplicate", "new", "duplicate"]
    stats = service.stats()
    assert (stats["events_applied"], stats["events_duplicate"]) == (2, 3)
    A, b = linucb_reference(A0, b0, features, [user, user], [item, item], [2.0, 1.0])
    bandit = service.state.model.bandit
    np.testing.assert_allclose(bandit.A.numpy(), A, atol=1e-9)
    np.testing.assert_allclose(bandit.b.numpy(), b, atol=1e-9)


def test_concurrent_retries_of_one_event_apply_it_once(served):
    client, service = served
    answers = []

    def send():
        answers.append(client.post("/feedback", json=event("race", "u005", "i006")).json())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["accepted"] for a in answers) == [0] * 7 + [1]
    assert service.stats()["events_applied"] == 1


# -- read-your-writes ------------------------------------------------------------------------------
def test_linucb_feedback_is_in_the_next_recommendation(served, linucb_ckpt):
    client, service = served
    A0, b0, features, alpha, meta = initial_bandit(linucb_ckpt)
    user = meta["user_ids"].index("u007")
    picks = [("i001", 5.0), ("i009", 0.0), ("i001", 4.0)]
    for n, (item, reward) in enumerate(picks):
        assert client.post("/feedback", json=event(f"ryw{n}", "u007", item, reward)).status_code == 200
        A, b = linucb_reference(A0, b0, features, [user] * (n + 1), [meta["item_ids"].index(i) for i, _ in picks[: n + 1]],
                                [r for _, r in picks[: n + 1]])
        expected = ucb_scores(A[user], b[user], features, alpha)
        answer = client.post("/recommend", json={"user_id": "u007", "k": 25, "exclude_seen": False}).json()
        got = {row["item_id"]: row["score"] for row in answer["items"]}
        for item_id, score in got.items():
            assert score == pytest.approx(expected[meta["item_ids"].index(item_id)], rel=1e-5)
        assert list(got) == [meta["item_ids"][j] for j in np.argsort(-expected, kind="stable")[:25]]


def test_the_seen_filter_follows_feedback_at_once(served, linucb_ckpt):
    client, _ = served
    top = [row["item_id"] for row in client.post("/recommend", json={"user_id": "u008", "k": 3}).json()["items"]]
    client.post("/feedback", json=[event(f"seen{n}", "u008", item) for n, item in enumerate(top[:2])])
    after = [row["item_id"] for row in client.post("/recommend", json={"user_id": "u008", "k": 25}).json()["items"]]
    assert not set(top[:2]) & set(after)
    data = tiny_data()
    trained = set(data.frame.loc[data.frame["user"] == list(data.user_ids).index("u008"), "item"].map(lambda i: data.item_ids[i]))
    assert not trained & set(after)  # the checkpoint's seen items stay excluded
    unfiltered = [r["item_id"] for r in client.post("/recommend", json={"user_id": "u008", "k": 25, "exclude_seen": False}).json()["items"]]
    assert set(top[:2]) <= set(unfiltered)


def test_unknown_users_get_popularity_and_new_users_get_state(served, linucb_ckpt):
    client, service = served
    _, _, features, alpha, meta = initial_bandit(linucb_ckpt)
    data = tiny_data()
    counts = (data.matrix(("train", "valid", "test"), binary=True) > 0).sum(axis=0).A1
    answer = client.post("/recommend", json={"user_id": "stranger", "k": 5}).json()
    assert answer["fallback"] == "popularity"
    assert [r["score"] for r in answer["items"]] == sorted(counts, reverse=True)[:5]
    client.post("/feedback", json=event("new-1", "stranger", "i010", reward=3.0))
    answer = client.post("/recommend", json={"user_id": "stranger", "k": 25}).json()
    assert answer["fallback"] is None and "i010" not in [r["item_id"] for r in answer["items"]]
    lam = service.state.model.config.lam
    A, b = linucb_reference(lam * np.eye(features.shape[1])[None], np.zeros((1, features.shape[1])), features,
                            [0], [meta["item_ids"].index("i010")], [3.0])
    expected = ucb_scores(A[0], b[0], features, alpha)
    for row in answer["items"]:
        assert row["score"] == pytest.approx(expected[meta["item_ids"].index(row["item_id"])], rel=1e-5)
    assert service.stats()["users_online_new"] == 1


def test_the_fallback_is_deeprec_scores_popularity_list_ties_included(served, linucb_ckpt):
    from deeprec.checkpoint import seen_matrix
    from deeprec.scoring.batch import popularity_topk

    client, _ = served
    _, meta = load_recommender(linucb_ckpt)
    seen = seen_matrix(meta)
    counts = np.asarray((seen > 0).sum(axis=0)).ravel()
    n_items = len(meta["item_ids"])
    assert len(set(counts.tolist())) < n_items  # ties to break: the order among them is what is checked
    answer = client.post("/recommend", json={"user_id": "stranger", "k": n_items}).json()
    served_items = [r["item_id"] for r in answer["items"]]
    values, items = popularity_topk(seen, n_items)
    assert served_items == [meta["item_ids"][i] for i in items]
    by_hand = sorted(range(n_items), key=lambda i: (-counts[i], i))  # most users first, then the lower index
    assert served_items == [meta["item_ids"][i] for i in by_hand]
    assert [r["score"] for r in answer["items"]] == values.tolist()


# -- exploration and propensities -----------------------------------------------------------------
def test_epsilon_exploration_logs_the_probability_of_each_position(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "s", exploration={"epsilon": 0.5, "seed": 3}) as (client, service):
        n_items = service.state.n_items
        greedy_service = service.state
        for _ in range(20):
            answer = client.post("/recommend", json={"user_id": "u010", "k": 4}).json()
            scores, _, _ = greedy_service.score_row("u010", True)
            eligible = int(torch.isfinite(scores).sum())
            order = [service.state.item_ids[j] for j in torch.argsort(scores, descending=True, stable=True).tolist()]
            taken = []
            for slot, row in enumerate(answer["items"]):
                best = next(item for item in order if item not in taken)
                expected = 0.5 * (row["item_id"] == best) + 0.5 / (eligible - slot)
                assert row["propensity"] == pytest.approx(expected)
                taken.append(row["item_id"])
        assert n_items == 25


def test_popularity_fallback_and_deterministic_models_have_propensity_one(served):
    client, _ = served
    for user in ("u001", "somebody-new"):
        answer = client.post("/recommend", json={"user_id": user, "k": 5}).json()
        assert [r["propensity"] for r in answer["items"]] == [1.0] * 5


# -- the log as tables ----------------------------------------------------------------------------
def test_export_feeds_deeprec_train_and_off_policy_estimators(linucb_ckpt, tmp_path, monkeypatch, capsys):
    from deeprec.bandits.offpolicy import ips
    from deeprec.serving.export import export_log
    from inprocess_cli import run_cli

    with app_client(linucb_ckpt, tmp_path / "s", exploration={"epsilon": 0.3}) as (client, service):
        rng = np.random.default_rng(0)
        for n in range(60):
            user = f"u{rng.integers(40):03d}"
            answer = client.post("/recommend", json={"user_id": user, "k": 3}).json()
            chosen = answer["items"][rng.integers(3)]
            client.post("/feedback", json=event(f"x{n}", user, chosen["item_id"], float(rng.integers(0, 2)),
                                                1.7e9 + n, decision_id=answer["decision_id"]))
        client.post("/feedback", json=event("no-decision", "u001", "i001"))
    summary = export_log(tmp_path / "s", tmp_path / "export")
    events = pd.read_parquet(tmp_path / "export" / "events.parquet")
    decisions = pd.read_parquet(tmp_path / "export" / "decisions.parquet")
    assert summary["events"] == 61 and summary["events_with_decision"] == 60 and len(decisions) == 180
    assert events["propensity"].notna().sum() == 60 and events["propensity"].dropna().between(0, 1).all()
    joined = events.dropna(subset=["decision_id"]).merge(decisions, on=["decision_id", "item_id"], suffixes=("", "_d"))
    assert (joined["rank"] == joined["rank_d"]).all() and np.allclose(joined["propensity"], joined["propensity_d"])
    # IPS of "play what was logged" with the logged propensities is the weighted mean reward (a known identity)
    logged = events.dropna(subset=["propensity"])
    arms = torch.tensor(logged["item_id"].str[1:].astype(int).to_numpy())
    value = ips(torch.tensor(logged["rating"].to_numpy()), arms, arms, torch.tensor(logged["propensity"].to_numpy()))
    assert value == pytest.approx(float((logged["rating"] / logged["propensity"]).mean()))
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={tmp_path / 'export' / 'events.parquet'}",
                                              "model=pop", f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("not deeprec's")
    with pytest.raises(Exception, match="holds files deeprec did not create"):
        export_log(tmp_path / "s", tmp_path / "other")
    assert (tmp_path / "other" / "mine.txt").read_text() == "not deeprec's"
    export_log(tmp_path / "s", tmp_path / "export")  # an earlier export is refreshed


def test_snapshot_restores_the_same_state(linucb_ckpt, tmp_path):
    with app_client(linucb_ckpt, tmp_path / "s") as (client, service):
        client.post("/feedback", json=[event(f"s{n}", f"u{n % 7:03d}", f"i{n % 11:03d}", n / 10) for n in range(30)])
        client.post("/feedback", json=event("fresh", "brand-new", "i003"))
        before = {k: v.clone() for k, v in service.state.model.state_tensors().items()}
        seen_before = service.state.seen_items(service.state.user_slot["brand-new"])
    snapshot = read_snapshot(tmp_path / "s")  # written at shutdown
    assert snapshot["seq"] == 31 and snapshot["online_user_ids"] == ["brand-new"]
    with app_client(linucb_ckpt, tmp_path / "s") as (client, service):
        assert service.recovery == {"snapshot_seq": 31, "events_replayed": 0, "seconds": service.recovery["seconds"]}
        after = service.state.model.state_tensors()
        for key in ("bandit.A", "bandit.b"):
            torch.testing.assert_close(after[key][: len(before[key])], before[key], rtol=0, atol=1e-12)
        assert list(service.state.seen_items(service.state.user_slot["brand-new"])) == list(seen_before)
        assert client.post("/feedback", json=event("fresh", "brand-new", "i003")).json()["duplicates"] == 1


def test_an_unwritable_log_is_a_503_and_nothing_is_applied(served, monkeypatch):
    import sqlite3

    client, service = served
    real_commit = service.wal.commit

    def disk_error(events, decisions):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(service.wal, "commit", disk_error)
    answer = client.post("/feedback", json=GOOD)
    assert answer.status_code == 503 and "could not be written" in answer.json()["error"]
    assert answer.headers["retry-after"] == "1"
    assert service.stats()["events_applied"] == 0
    monkeypatch.setattr(service.wal, "commit", real_commit)
    assert client.post("/feedback", json=GOOD).json()["accepted"] == 1  # the client's retry is the first write
    assert client.get("/health").status_code == 200


def test_stats_and_prometheus_metrics_count_what_happened(served):
    client, _ = served
    client.post("/recommend", json={"user_id": "u001"})
    client.post("/recommend", json={"user_id": "u001", "k": 0})
    client.post("/feedback", json=[GOOD, GOOD])
    stats = client.get("/stats").json()
    assert (stats["decisions"], stats["events_received"], stats["events_applied"], stats["events_duplicate"]) == (1, 2, 1, 1)
    assert [key for key in stats if "applied" in key] == ["events_applied"]  # one key says "applied"
    text = client.get("/metrics").text
    for line in ('deeprec_requests_total{endpoint="recommend",status="200"} 1.0',
                 'deeprec_requests_total{endpoint="recommend",status="422"} 1.0',
                 'deeprec_feedback_events_total{outcome="new"} 1.0', 'deeprec_feedback_events_total{outcome="duplicate"} 1.0'):
        assert line in text
    assert 'deeprec_request_seconds_count{endpoint="feedback"} 1.0' in text


def test_a_damaged_snapshot_is_skipped_and_the_log_replays(linucb_ckpt, tmp_path):
    from deeprec.serving.snapshot import snapshot_files

    with app_client(linucb_ckpt, tmp_path / "s") as (client, service):
        client.post("/feedback", json=[event(f"d{n}", "u002", f"i{n:03d}", 1.0) for n in range(5)])
        client.post("/admin/snapshot")
        client.post("/feedback", json=[event(f"d{n}", "u003", f"i{n:03d}", 2.0) for n in range(5, 9)])
        expected = {k: v.clone() for k, v in service.state.model.state_tensors().items()}
    (seq_new, newest), (seq_old, _) = snapshot_files(tmp_path / "s" / "snapshots")[:2]
    assert (seq_new, seq_old) == (9, 5)
    newest.write_bytes(newest.read_bytes()[:100])  # a torn file (deeprec renames whole files; a disk can still fail)
    with app_client(linucb_ckpt, tmp_path / "s") as (client, service):
        assert service.recovery["snapshot_seq"] == 5 and service.recovery["events_replayed"] == 4
        for key in ("bandit.A", "bandit.b"):
            torch.testing.assert_close(service.state.model.state_tensors()[key], expected[key], rtol=0, atol=1e-9)
