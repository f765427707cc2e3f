"""model=linucb on any data (features=auto), personalised exploration from a course log's ratings,
and the factored alpha against dense references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from deeprec.bandits.features import PersonalisedAlpha, attention, course_difficulty, rating_signal
from deeprec.bandits.linucb import BatchedLinUCB
from deeprec.bandits.recommender import LinUCBRecommender
from deeprec.data.interactions import from_frame
from inprocess_cli import run_cli


def course_log(seed: int = 0, with_features: bool = False):
    rng = np.random.default_rng(seed)
    n = 400
    frame = pd.DataFrame({"user_id": rng.integers(0, 40, n), "item_id": rng.integers(0, 15, n),
                          "rating": rng.choice([1.0, 2.5, 5.0], n)}).drop_duplicates(["user_id", "item_id"])
    frame["split"] = np.where(rng.random(len(frame)) < 0.8, "train", "test")
    features = None
    if with_features:
        features = pd.DataFrame({"difficulty": rng.random(15), "length": rng.integers(1, 9, 15).astype(float)},
                                index=[str(i) for i in range(15)])
    return from_frame(frame, "log", item_features=features)


def test_attention_by_cumulative_sums_equals_the_pairwise_mean():
    rng = np.random.default_rng(1)
    watched = sp.csr_matrix((rng.random((30, 50)) < 0.2).astype(np.float32))
    dif = np.round(rng.random(50), 1)  # many ties
    w = watched.toarray()
    brute = np.array([[np.mean(np.abs(dif[j] - dif[w[s] > 0])) if w[s].any() else 0.0 for j in range(50)] for s in range(30)])
    np.testing.assert_allclose(attention(watched, dif).numpy(), brute, atol=1e-12)


def test_factored_alpha_scores_equal_a_dense_alpha():
    rng = np.random.default_rng(2)
    n_users, n_arms, d = 25, 40, 4
    bandit = BatchedLinUCB(n_users, d, dtype=torch.float64, chunk_elements=200)  # several chunks
    users = rng.integers(0, n_users, 300)
    arms = rng.normal(size=(n_arms, d))
    bandit.fit(users, arms[rng.integers(0, n_arms, 300)], rng.random(300))
    watched = sp.csr_matrix((rng.random((n_users, n_arms)) < 0.3).astype(np.float32))
    ability, dif = torch.from_numpy(rng.random(n_users)), torch.from_numpy(rng.random(n_arms))
    dense = ability.unsqueeze(1) * attention(watched, dif)
    expected = bandit.ucb(arms, alpha=dense)
    got = bandit.ucb(arms, alpha=PersonalisedAlpha(ability, watched, dif))
    torch.testing.assert_close(got, expected)
    some = torch.tensor([3, 17, 3, 0])
    torch.testing.assert_close(bandit.ucb(arms, users=some, alpha=PersonalisedAlpha(ability, watched, dif)), expected[some])


def test_auto_features_resolve_by_what_the_data_has():
    plain, rich = course_log(0), course_log(0, with_features=True)
    factors = LinUCBRecommender(plain.n_users, plain.n_items, factor_dim=4).fit(plain)
    assert factors.feature_source(plain, None) == "factors" and factors.arm_features.shape == (plain.n_items, 4)
    featured = LinUCBRecommender(rich.n_users, rich.n_items).fit(rich)
    x = rich.item_features.to_numpy(np.float64)
    np.testing.assert_allclose(featured.arm_features.numpy(), (x - x.mean(0)) / x.std(0))  # z-scored by default
    scores = featured.score(torch.arange(rich.n_users))
    assert scores.shape == (rich.n_users, rich.n_items) and torch.isfinite(scores).all()


def test_personalised_exploration_on_a_course_log_hand_checked():
    data = course_log(3, with_features=True)
    model = LinUCBRecommender(data.n_users, data.n_items, alpha_mode="personalised", dtype="float64").fit(data)
    train = data.rows("train")
    r = train["rating"].to_numpy() / 5.0
    for u in (0, 7, 21):
        mine = train["user"].to_numpy() == u
        expected = mine.sum() / data.n_items / 3 + r[mine].mean() / 3 + (r[mine] >= 1).mean() / 3
        assert float(model.ability[u]) == pytest.approx(expected)
    difficulty = data.item_features["difficulty"].to_numpy(np.float64)
    scaled = (difficulty - difficulty.min()) / (difficulty.max() - difficulty.min())
    np.testing.assert_allclose(model.dif.numpy(), scaled, rtol=1e-12)  # the difficulty column, scaled to 0..1
    alpha = model.exploration(torch.arange(data.n_users)).numpy()
    watched = model.watched.toarray() > 0
    u = 7
    manual = model.ability[u].item() * np.abs(scaled[:, None] - scaled[watched[u]][None, :]).mean(1)
    np.testing.assert_allclose(alpha[u], manual, atol=1e-12)


def test_difficulty_from_ratings_without_a_feature():
    items = np.array([0, 0, 1, 1, 1])
    completion, success = rating_signal(np.array([5.0, 2.5, 5.0, 5.0, 1.0]), 5.0)
    np.testing.assert_allclose(course_difficulty(items, completion, success, 3), [
        0.5 * (1 - 0.5) + 0.5 * (1 - 0.75),
        0.5 * (1 - 2 / 3) + 0.5 * (1 - 11 / 15),
        1.0,  # nobody took item 2
    ])


def test_train_linucb_on_an_interactions_table_with_no_option(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, 700), "item_id": rng.integers(0, 30, 700),
                          "timestamp": rng.integers(0, 10**6, 700)}).drop_duplicates(["user_id", "item_id"])
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={path}", "model=linucb",
                                              f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "ndcg@10" in metrics and "ild@10" in metrics
    assert any(k.startswith("segment/") and k.endswith("/ndcg@10") for k in metrics)
    groups = pd.read_parquet(tmp_path / "run" / "groups.parquet")
    assert set(groups.columns) >= {"user_id", "segment", "n_train"} and groups["segment"].str.startswith("history_").any()


def test_coursera_linucb_writes_the_paper_groups(tmp_path, shared_data, monkeypatch, capsys):
    code, err = run_cli("deeprec.cli.train", ["data=coursera", "model=linucb", "model.alpha_mode=personalised",
                                              f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    groups = pd.read_parquet(tmp_path / "run" / "groups.parquet")
    assert set(groups["segment"]) == {"active", "potential", "inactive"}
    means = groups.groupby("segment")[["n_train", "ability"]].mean()
    assert means.loc["active", "n_train"] > means.loc["potential", "n_train"] > 0
    assert means.loc["potential", "ability"] > means.loc["inactive", "ability"]
    for group in ("active", "potential", "inactive"):
        assert 0 <= metrics[f"segment/{group}/precision@5"] <= 1
        assert np.isfinite(metrics[f"segment/{group}/adaptivity@5"])
    assert np.isfinite(metrics["adaptivity@10"]) and "| active |" in (tmp_path / "run" / "segments.md").read_text()
