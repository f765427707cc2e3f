"""deeprec-serve on the public datasets: the held-out events of Coursera's video log fed back online to
the paper's LinUCB head (its ridge sums equal a numpy replay, the seen filter follows), and MovieLens's
later ratings folded into matrix factorisation (the exact fold-in, solved here with numpy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deeprec.checkpoint import load_recommender, save_checkpoint
from deeprec.registry import dataset_loader
from serving_helpers import app_client, event, linucb_reference

pytestmark = pytest.mark.shared_data


def without_test(data):
    """The same data with the test split removed: what the checkpoint knows; the test rows arrive online."""
    return dataclasses.replace(data, frame=data.frame[data.frame["split"] != "test"].reset_index(drop=True))


def feedback_of(data, rows, prefix: str) -> list[dict]:
    times = np.nan_to_num(rows["timestamp"].to_numpy(np.float64), nan=1.7e9)
    return [event(f"{prefix}{n}", data.user_ids[u], data.item_ids[i], float(r), float(t))
            for n, (u, i, r, t) in enumerate(zip(rows["user"], rows["item"], rows["rating"], times))]


def coursera_linucb(shared_data, ckpt, **config):
    """(data, the paper's LinUCB head fitted on its train split and saved at ckpt without the test rows)."""
    from deeprec.bandits.recommender import LinUCBRecommender
    from deeprec.data.adapters.coursera import CourseraDataConfig

    data = dataset_loader("coursera")(CourseraDataConfig(path=str(shared_data / "coursera-video-behavior")))
    model = LinUCBRecommender(n_users=data.n_users, n_items=data.n_items, features="video_stats", reward="fracComp",
                              **config).fit(data)
    save_checkpoint(model, without_test(data), ckpt)
    return data, model


def test_coursera_heldout_events_update_the_linucb_head(shared_data, tmp_path):
    data, _ = coursera_linucb(shared_data, tmp_path / "linucb.ckpt", dtype="float64")
    test = data.rows("test")
    events = feedback_of(data, test, "c")
    assert len(events) > 5000
    with app_client(tmp_path / "linucb.ckpt", tmp_path / "state") as (client, service):
        for start in range(0, len(events), 2000):
            assert client.post("/feedback", json=events[start : start + 2000]).json()["accepted"] == len(events[start : start + 2000])
        assert service.stats()["events_applied"] == len(events)
        bandit = service.state.model.bandit
        ckpt_model, _ = load_recommender(tmp_path / "linucb.ckpt")
        A, b = linucb_reference(ckpt_model.bandit.A.numpy(), ckpt_model.bandit.b.numpy(), ckpt_model.arm_features.numpy(),
                                test["user"], test["item"], test["rating"])
        np.testing.assert_allclose(bandit.A.numpy(), A, atol=1e-8)
        np.testing.assert_allclose(bandit.b.numpy(), b, atol=1e-8)
        user = int(test["user"].iloc[0])
        watched = set(data.item_ids[data.rows(("train", "valid", "test")).query("user == @user")["item"]])
        served = {r["item_id"] for r in client.post("/recommend", json={"user_id": data.user_ids[user], "k": 50}).json()["items"]}
        assert not served & watched and served  # held-out videos, now fed back, are no longer offered


def test_movielens_later_ratings_fold_into_mf(shared_data, tmp_path):
    from deeprec.baselines.mf import ALS
    from deeprec.data.adapters.movielens import MovieLensDataConfig

    data = dataset_loader("movielens")(MovieLensDataConfig(path=str(shared_data / "ml-latest-small")))
    model = ALS(n_users=data.n_users, n_items=data.n_items, factors=16, iterations=4, dtype="float64").fit(data)
    known = without_test(data)
    model.observe(known, ("train", "valid"))  # the checkpoint's history: everything before the test period
    save_checkpoint(model, known, tmp_path / "mf.ckpt")
    test = data.rows("test").sort_values("timestamp", kind="stable")
    users = test["user"].drop_duplicates().to_numpy()[:40]
    test = test[test["user"].isin(users)]
    with app_client(tmp_path / "mf.ckpt", tmp_path / "state") as (client, _):
        answer = client.post("/feedback", json=feedback_of(data, test, "m"))
        assert answer.json()["accepted"] == len(test)
        Y = model.item_factors.double().numpy()
        for u in users[:5]:
            history = model.history.toarray()[u].astype(np.float64)
            mine = test[test["user"] == u]
            history[mine["item"].to_numpy()] = mine["rating"].to_numpy()
            c = 1.0 + model.config.alpha * history
            x = np.linalg.solve((Y.T * c) @ Y + model.config.regularization * np.eye(Y.shape[1]), (Y.T * c) @ (history > 0))
            expected = Y @ x
            got = client.post("/recommend", json={"user_id": data.user_ids[u], "k": 20}).json()["items"]
            index = {item: n for n, item in enumerate(data.item_ids)}
            for row in got:
                assert row["score"] == pytest.approx(expected[index[row["item_id"]]], rel=1e-4, abs=1e-6)
                assert history[index[row["item_id"]]] == 0  # nothing the learner rated, before or online


def test_coursera_personalised_exploration_follows_the_watched_videos(shared_data, tmp_path):
    from deeprec.bandits.features import attention

    data, model = coursera_linucb(shared_data, tmp_path / "linucb.ckpt", alpha_mode="personalised")
    test = data.rows("test")
    user = int(test["user"].value_counts().index[0])
    mine = test[test["user"] == user]
    with app_client(tmp_path / "linucb.ckpt", tmp_path / "state") as (client, service):
        client.post("/feedback", json=feedback_of(data, mine, "p"))
        served = service.state.model
        assert set(served.watched[user].indices) == set(model.watched[user].indices) | set(mine["item"])
        # alpha_s = ability_s x attention S_s over the watched videos (SPEC 2.4), now with the new ones
        expected = served.ability[user] * attention(served.watched, served.dif.numpy(), np.array([user]))[0]
        np.testing.assert_allclose(served.exploration(torch.tensor([user]))[0].numpy(), expected, rtol=1e-6)


def test_coursera_served_log_exports_to_deeprec_train_and_ips(shared_data, tmp_path, monkeypatch, capsys):
    """The loop on Coursera: epsilon-greedy lists for held-out learners, each learner plays the first listed
    video with its held-out fracComp as the reward (0 when unwatched); the exported log trains a model and
    gives IPS the logged propensities (checked against numpy on the exported table)."""
    import pandas as pd

    from deeprec.bandits.offpolicy import ips
    from deeprec.serving.export import export_log
    from inprocess_cli import run_cli

    data, _ = coursera_linucb(shared_data, tmp_path / "linucb.ckpt", dtype="float64")
    test = data.rows("test")
    reward_of = {(int(u), int(i)): float(r) for u, i, r in zip(test["user"], test["item"], test["rating"])}
    users = test["user"].drop_duplicates().to_numpy()[:80]
    rounds = 4  # each learner comes back: the exported table then has a history and a later event per learner
    index = {item: n for n, item in enumerate(data.item_ids)}
    epsilon = 0.3
    with app_client(tmp_path / "linucb.ckpt", tmp_path / "state", exploration={"epsilon": epsilon, "seed": 1}) as (client, _):
        for n, user in enumerate([u for _ in range(rounds) for u in users]):
            answer = client.post("/recommend", json={"user_id": data.user_ids[user], "k": 5}).json()
            played = answer["items"][0]["item_id"]
            reward = reward_of.get((int(user), index[played]), 0.0)
            ack = client.post("/feedback", json=event(f"c{n}", data.user_ids[user], played, reward, 1.7e9 + n,
                                                      decision_id=answer["decision_id"])).json()
            assert ack["accepted"] == 1
    summary = export_log(tmp_path / "state", tmp_path / "export")
    events = pd.read_parquet(tmp_path / "export" / "events.parquet")
    decisions = pd.read_parquet(tmp_path / "export" / "decisions.parquet")
    assert summary["events"] == rounds * len(users) == summary["events_with_decision"] == len(events)
    assert len(decisions) == 5 * len(events)
    assert (events["rank"] == 1).all()
    first = decisions[decisions["rank"] == 1].set_index("decision_id")
    np.testing.assert_allclose(events["propensity"], first.loc[events["decision_id"], "propensity"].to_numpy())
    # slot 1's propensity: (1 - eps) + eps / m when the greedy item was kept, eps / m when explored,
    # with m the eligible (unseen) videos: more than the catalogue minus any learner's history
    m_low = data.n_items - int(np.diff(data.matrix(("train", "valid", "test"), binary=True).indptr).max())
    p = events["propensity"].to_numpy()
    greedy = p > 0.5
    assert np.all((p[greedy] >= 1 - epsilon) & (p[greedy] <= 1 - epsilon + epsilon / m_low))
    assert np.all((p[~greedy] > 0) & (p[~greedy] <= epsilon / m_low)) and 0 < (~greedy).sum() < len(p)
    # IPS of "always the most played video" from the exported table, by numpy and by deeprec.bandits.offpolicy
    target = events["item_id"].value_counts().index[0]
    hit = (events["item_id"] == target).to_numpy()
    expected = float(np.mean(events["rating"].to_numpy() * hit / p))
    logged = torch.tensor(events["item_id"].map(index).to_numpy())
    value = ips(torch.tensor(events["rating"].to_numpy()), logged, torch.full_like(logged, index[target]),
                torch.tensor(p))
    assert float(value) == pytest.approx(expected, rel=1e-9)
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={tmp_path / 'export' / 'events.parquet'}",
                                              "model=pop", f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
