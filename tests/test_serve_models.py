"""Every registered model's checkpoint serves, learns online through the Recommender interface, and
holds a state that depends only on the sequence of events (one block or one event at a time alike);
read-your-writes against independent references for a history baseline (EASE), matrix factorisation
(an exact fold-in solved here with numpy) and a sequence model (the LSTM fed the extended history)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeprec.checkpoint import load_recommender, save_checkpoint
from deeprec.registry import MODELS, model_class
from serving_helpers import app_client, event, tiny_data

CONFIGS = {"linucb": {"features": "item_features", "reward": "rating", "dtype": "float64"},
           "mf": {"dtype": "float64", "iterations": 3, "regularization": 0.5}}
LEARN_NOTHING_PER_USER = {"pop", "ncf"}  # scores that only fit() changes: the seen filter still follows feedback


@pytest.fixture(scope="module")
def data():
    return tiny_data(n_users=30, n_items=20, per_user=5, seed=4)


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for name in sorted(MODELS):  # the registry: a new model is covered without editing this test
        model = model_class(name)(n_users=data.n_users, n_items=data.n_items, **CONFIGS.get(name, {}))
        model.fit(data)
        paths[name] = folder / f"{name}.ckpt"
        save_checkpoint(model, data, paths[name])
    return paths


def loaded(ckpt):
    model, meta = load_recommender(ckpt)
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model, meta


def stream(data, n: int = 60, seed: int = 0) -> list[dict]:
    """Events on known and new learners, some pairs repeated, rewards 0..3, increasing timestamps."""
    rng = np.random.default_rng(seed)
    users = [*data.user_ids[:8], "fresh-a", "fresh-b"]
    return [event(f"e{n}", users[u], data.item_ids[i], float(r), 2e9 + 60 * n)
            for n, (u, i, r) in enumerate(zip(rng.integers(len(users), size=n), rng.integers(data.n_items, size=n),
                                              rng.integers(0, 4, size=n)))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_serves_its_checkpoint_ranking(name, checkpoints, data, tmp_path):
    model, meta = loaded(checkpoints[name])
    seen = data.matrix(("train", "valid", "test"), binary=True).toarray() > 0
    with torch.no_grad():
        scores = model.score(torch.arange(data.n_users)).float().numpy()
    with app_client(checkpoints[name], tmp_path / "s") as (client, service):
        assert client.get("/health").json()["model"] == name
        for user in range(0, data.n_users, 7):
            answer = client.post("/recommend", json={"user_id": data.user_ids[user], "k": 5}).json()
            assert answer["fallback"] is None and answer["model_version"].startswith(name)
            unseen = sorted((float(scores[user, j]) for j in range(data.n_items) if not seen[user, j]), reverse=True)[:5]
            got = answer["items"]
            np.testing.assert_allclose([r["score"] for r in got], unseen, rtol=1e-5, atol=1e-5)
            for row in got:
                j = list(data.item_ids).index(row["item_id"])
                assert not seen[user, j] and row["score"] == pytest.approx(float(scores[user, j]), rel=1e-5, abs=1e-5)
                assert row["propensity"] == 1.0
        explained = client.post("/recommend", json={"user_id": data.user_ids[1], "k": 3, "explain": True}).json()
        for row in explained["items"]:
            assert all(b["item_id"] in set(data.item_ids) and 0 <= b["weight"] <= 1 for b in row["because"])
        if name == "attention":  # the model that can explain says which history items weighed
            assert all(row["because"] for row in explained["items"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_online_state_depends_on_the_events_not_on_their_batching(name, checkpoints, data, tmp_path):
    events = stream(data)
    answers = {}
    states = {}
    for mode in ("one_by_one", "one_block"):
        with app_client(checkpoints[name], tmp_path / mode) as (client, service):
            if mode == "one_by_one":
                for e in events:
                    assert client.post("/feedback", json=e).status_code == 200
            else:
                assert client.post("/feedback", json=events).json()["accepted"] == len(events)
            answers[mode] = {u: client.post("/recommend", json={"user_id": u, "k": 20}).json()
                             for u in [*data.user_ids[:8], "fresh-a", "fresh-b"]}
            states[mode] = {k: v.clone() for k, v in service.state.model.state_tensors().items()}
            seen = {u: set(service.state.seen_items(service.state.user_slot[u]).tolist()) for u in ("fresh-a", data.user_ids[0])}
    for key in states["one_by_one"]:
        torch.testing.assert_close(states["one_by_one"][key].double(), states["one_block"][key].double(), rtol=1e-6, atol=1e-6,
                                   equal_nan=True, msg=lambda m: f"{key}: {m}")
    for user, answer in answers["one_by_one"].items():
        other = answers["one_block"][user]
        assert [r["item_id"] for r in answer["items"]] == [r["item_id"] for r in other["items"]]
        np.testing.assert_allclose([r["score"] for r in answer["items"]], [r["score"] for r in other["items"]], rtol=1e-5, atol=1e-6)
        served = {r["item_id"] for r in answer["items"]}
        fed = {e["item_id"] for e in events if e["user_id"] == user}
        assert not served & fed  # the seen filter follows every model's feedback
    new_user_ranked_by_model = answers["one_block"]["fresh-a"]["fallback"] is None
    assert new_user_ranked_by_model == (name != "ncf")  # ncf has no embedding for a new learner: popularity
    assert seen["fresh-a"] == {list(data.item_ids).index(e["item_id"]) for e in events if e["user_id"] == "fresh-a"}


@pytest.mark.parametrize("name", sorted(set(MODELS) - LEARN_NOTHING_PER_USER))
def test_feedback_changes_the_learners_next_scores(name, checkpoints, data, tmp_path):
    user = data.user_ids[2]
    with app_client(checkpoints[name], tmp_path / "s") as (client, _):
        before = client.post("/recommend", json={"user_id": user, "k": 20, "exclude_seen": False}).json()["items"]
        client.post("/feedback", json=[event(f"c{n}", user, data.item_ids[j], 3.0, 2e9 + n) for n, j in enumerate([3, 7, 11])])
        after = client.post("/recommend", json={"user_id": user, "k": 20, "exclude_seen": False}).json()["items"]
    b = {r["item_id"]: r["score"] for r in before}
    a = {r["item_id"]: r["score"] for r in after}
    assert any(abs(a[i] - b[i]) > 1e-6 for i in a)


def test_ease_reads_the_new_history_row(checkpoints, data, tmp_path):
    model, _ = loaded(checkpoints["ease"])
    u = 4
    row = model.history.toarray()[u].astype(np.float64)
    row[[1, 5]] = [1.0, 1.0] if model.config.binary else [4.0, 2.0]  # binary EASE (the default) reads 0/1
    expected = row @ model.weights.double().numpy()  # score = x_u B with x_u the updated history row
    with app_client(checkpoints["ease"], tmp_path / "s") as (client, _):
        client.post("/feedback", json=[event("a", data.user_ids[u], data.item_ids[1], 4.0), event("b", data.user_ids[u], data.item_ids[5], 2.0)])
        got = client.post("/recommend", json={"user_id": data.user_ids[u], "k": 20, "exclude_seen": False}).json()["items"]
    for r in got:
        assert r["score"] == pytest.approx(expected[list(data.item_ids).index(r["item_id"])], rel=1e-5, abs=1e-6)


def test_mf_folds_in_the_exact_user_factor(checkpoints, data, tmp_path):
    model, _ = loaded(checkpoints["mf"])
    u = 6
    hp = model.config
    history = model.history.toarray()[u].astype(np.float64)
    history[[2, 9]] = [3.0, 1.0]
    Y = model.item_factors.double().numpy()
    c = 1.0 + hp.alpha * history  # implicit ALS: confidence 1 + alpha r, preference 1 where r > 0
    p = (history > 0).astype(np.float64)
    x = np.linalg.solve((Y.T * c) @ Y + hp.regularization * np.eye(Y.shape[1]), (Y.T * c) @ p)
    expected = Y @ x
    with app_client(checkpoints["mf"], tmp_path / "s") as (client, _):
        client.post("/feedback", json=[event("a", data.user_ids[u], data.item_ids[2], 3.0), event("b", data.user_ids[u], data.item_ids[9], 1.0)])
        got = client.post("/recommend", json={"user_id": data.user_ids[u], "k": 20, "exclude_seen": False}).json()["items"]
    for r in got:
        assert r["score"] == pytest.approx(expected[list(data.item_ids).index(r["item_id"])], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["lstm", "attention"])
def test_sequence_models_read_the_advanced_history(name, checkpoints, data, tmp_path):
    model, _ = loaded(checkpoints[name])
    u = 3
    length = int(model.history_lengths[u])
    items = model.history_items[u, :length].tolist() + [8, 12]  # reward 0 for item 4: not an interest event
    expected_history = torch.tensor([items[-model.history_items.shape[1]:]])
    with torch.no_grad():
        if name == "lstm":
            gaps = torch.cat([model.history_gaps[u, :length], torch.tensor([60.0, 60.0])]).unsqueeze(0)
            last = float(model.last_time[u])
            if np.isfinite(last):
                gaps[0, length] = max(2e9 - last, 0.0)
            else:
                gaps[0, length] = 0.0
            expected = model(expected_history, gaps, torch.tensor([len(items)]))[0].numpy()
        else:
            expected = model.candidate_scores(expected_history, torch.arange(data.n_items))[0].numpy()
    with app_client(checkpoints[name], tmp_path / "s") as (client, _):
        user = data.user_ids[u]
        client.post("/feedback", json=[event("a", user, data.item_ids[8], 1.0, 2e9), event("z", user, data.item_ids[4], 0.0, 2e9 + 30),
                                       event("b", user, data.item_ids[12], 2.0, 2e9 + 60)])
        got = client.post("/recommend", json={"user_id": user, "k": 20, "exclude_seen": False}).json()["items"]
    for r in got:
        assert r["score"] == pytest.approx(float(expected[list(data.item_ids).index(r["item_id"])]), rel=1e-4, abs=1e-5)
