"""Classic baselines against brute-force references written here with plain numpy loops."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from deeprec.baselines.ease import EASE
from deeprec.baselines.knn import ItemKNN, UserKNN
from deeprec.baselines.mf import ALS, implicit_loss
from deeprec.baselines.pop import Popularity
from deeprec.checkpoint import load_recommender, save_checkpoint
from deeprec.data.interactions import InteractionData
from deeprec.errors import ConfigError
from deeprec.evaluation.evaluator import evaluate_recommender

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def make_data(ratings: np.ndarray, splits: np.ndarray | None = None) -> InteractionData:
    """InteractionData of a dense [U, I] rating matrix (0 = no interaction); splits: [U, I] labels."""
    users, items = np.nonzero(ratings)
    frame = pd.DataFrame(
        {
            "user": users.astype(np.int64),
            "item": items.astype(np.int64),
            "rating": ratings[users, items].astype(np.float32),
            "timestamp": np.nan,
            "split": "train" if splits is None else splits[users, items],
        }
    )
    n_users, n_items = ratings.shape
    return InteractionData(frame, np.array([f"u{u}" for u in range(n_users)]), np.array([f"i{i}" for i in range(n_items)]))


def random_ratings(rng, n_users: int, n_items: int, density: float) -> np.ndarray:
    """Continuous ratings in [0.5, 5) (no ties among similarities) on a random pattern, exact in float32
    (InteractionData stores ratings as float32)."""
    mask = rng.random((n_users, n_items)) < density
    return np.where(mask, rng.uniform(0.5, 5.0, (n_users, n_items)), 0.0).astype(np.float32).astype(np.float64)


def all_scores(model, n_users: int) -> np.ndarray:
    return model.score(torch.arange(n_users)).double().numpy()


# -- naive references ----------------------------------------------------------------------------
def naive_cosine(vectors: np.ndarray, min_similarity: float) -> np.ndarray:
    """sim[n, m] for rows of `vectors`, one pair at a time; self = 0; below the cut = 0."""
    n = len(vectors)
    sim = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            na, nb = np.sqrt((vectors[a] ** 2).sum()), np.sqrt((vectors[b] ** 2).sum())
            if a != b and na > 0 and nb > 0:
                s = (vectors[a] * vectors[b]).sum() / (na * nb)
                sim[a, b] = s if s >= min_similarity else 0.0
    return sim


def keep_nearest(sim: np.ndarray, neighbours: int) -> np.ndarray:
    """Each row keeps its `neighbours` largest entries (by sorting that row)."""
    pruned = np.zeros_like(sim)
    for a in range(len(sim)):
        for b in sorted(range(len(sim)), key=lambda c: -sim[a, c])[:neighbours]:
            pruned[a, b] = sim[a, b]
    return pruned


def naive_itemknn(ratings: np.ndarray, neighbours: int, min_similarity: float) -> np.ndarray:
    """SPEC 1.11 literally: score(u, j) = sum_{i in train(u)} sim(i, j) r_ui / |train(u)|."""
    sim = keep_nearest(naive_cosine(ratings.T, min_similarity), neighbours)
    n_users, n_items = ratings.shape
    scores = np.zeros((n_users, n_items))
    for u in range(n_users):
        train = [i for i in range(n_items) if ratings[u, i] != 0]
        for j in range(n_items):
            if train:
                scores[u, j] = sum(sim[i, j] * ratings[u, i] for i in train) / len(train)
    return scores


def naive_userknn(ratings: np.ndarray, neighbours: int, min_similarity: float) -> np.ndarray:
    """score(u, j) = sum_{v in N(u)} sim(u, v) r_vj / sum_{v in N(u)} |sim(u, v)|."""
    sim = keep_nearest(naive_cosine(ratings, min_similarity), neighbours)
    n_users, n_items = ratings.shape
    scores = np.zeros((n_users, n_items))
    for u in range(n_users):
        weight = np.abs(sim[u]).sum()
        for j in range(n_items):
            if weight > 0:
                scores[u, j] = sum(sim[u, v] * ratings[v, j] for v in range(n_users)) / weight
    return scores


# -- ItemKNN -------------------------------------------------------------------------------------
def test_itemknn_equals_spec_1_11_with_default_64_neighbours_and_cut(rng):
    ratings = random_ratings(rng, 40, 90, 0.35)
    # item 89: a tiny overlap with user 0's items and a large rating of a user with nothing else,
    # so its similarities fall under the 0.001 cut
    ratings[:, 89] = 0.0
    ratings[1, :] = 0.0
    ratings[0, 89], ratings[1, 89] = 0.01, 50.0
    reference = naive_itemknn(ratings, 64, 0.001)
    uncut = naive_cosine(ratings.T, 0.0)
    assert ((uncut > 0) & (uncut < 0.001)).any(), "the 0.001 cut must matter on this data"
    assert ((uncut > 0).sum(1) > 64).any(), "the 64-neighbour truncation must matter on this data"
    assert not np.allclose(reference, naive_itemknn(ratings, 1000, 0.0))

    model = ItemKNN(40, 90).fit(make_data(ratings))
    np.testing.assert_allclose(all_scores(model, 40), reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("neighbours, chunk_size", [(5, 7), (12, 1000)])
def test_itemknn_small_neighbourhoods_any_chunking(rng, neighbours, chunk_size):
    ratings = random_ratings(rng, 25, 30, 0.3)
    model = ItemKNN(25, 30, neighbours=neighbours, chunk_size=chunk_size).fit(make_data(ratings))
    np.testing.assert_allclose(all_scores(model, 25), naive_itemknn(ratings, neighbours, 0.001), rtol=1e-5, atol=1e-7)


def test_itemknn_binary_and_similarity_normalisation(rng):
    ratings = random_ratings(rng, 20, 15, 0.4)
    binary = (ratings > 0).astype(float)
    sim = naive_cosine(binary.T, 0.001)  # binary data has tied similarities: no truncation here
    expected = np.zeros((20, 15))
    for u in range(20):
        for j in range(15):
            weight = sum(abs(sim[i, j]) for i in range(15) if binary[u, i])
            if weight > 0:
                expected[u, j] = sum(sim[i, j] for i in range(15) if binary[u, i]) / weight
    model = ItemKNN(20, 15, neighbours=64, binary=True, normalization="similarity").fit(make_data(ratings))
    np.testing.assert_allclose(all_scores(model, 20), expected, rtol=1e-5, atol=1e-7)


def test_itemknn_shrink_adds_to_the_cosine_denominator(rng):
    ratings = random_ratings(rng, 20, 15, 0.4)
    norms = np.sqrt((ratings**2).sum(0))
    sim = ratings.T @ ratings / (np.outer(norms, norms) + 5.0)
    np.fill_diagonal(sim, 0.0)
    sim = keep_nearest(np.where(sim >= 0.001, sim, 0.0), 6)
    expected = ratings @ sim / np.maximum((ratings != 0).sum(1, keepdims=True), 1)
    model = ItemKNN(20, 15, neighbours=6, shrink=5.0).fit(make_data(ratings))
    np.testing.assert_allclose(all_scores(model, 20), expected, rtol=1e-5, atol=1e-7)


def test_itemknn_target_pruning_keeps_the_scored_items_neighbours(rng):
    ratings = random_ratings(rng, 20, 15, 0.4)
    sim = keep_nearest(naive_cosine(ratings.T, 0.001), 3).T  # column j = j's 3 nearest items i
    counts = (ratings != 0).sum(1, keepdims=True)
    expected = ratings @ sim / np.maximum(counts, 1)
    model = ItemKNN(20, 15, neighbours=3, prune="target").fit(make_data(ratings))
    np.testing.assert_allclose(all_scores(model, 20), expected, rtol=1e-5, atol=1e-7)


def test_itemknn_observe_scores_from_train_plus_valid_history(rng):
    ratings = random_ratings(rng, 20, 15, 0.4)
    splits = np.where(rng.random(ratings.shape) < 0.7, "train", "valid")
    data = make_data(ratings, splits)
    train = np.where(splits == "train", ratings, 0.0)
    model = ItemKNN(20, 15, neighbours=6).fit(data)
    np.testing.assert_allclose(all_scores(model, 20), naive_itemknn(train, 6, 0.001), rtol=1e-5, atol=1e-7)
    model.observe(data, ("train", "valid"))
    sim = keep_nearest(naive_cosine(train.T, 0.001), 6)  # similarity still from train only
    expected = ratings @ sim / np.maximum((ratings != 0).sum(1, keepdims=True), 1)
    np.testing.assert_allclose(all_scores(model, 20), expected, rtol=1e-5, atol=1e-7)


# -- UserKNN -------------------------------------------------------------------------------------
@pytest.mark.parametrize("neighbours, min_similarity", [(5, 0.0), (64, 0.05)])
def test_userknn_equals_naive(rng, neighbours, min_similarity):
    ratings = random_ratings(rng, 30, 25, 0.25)
    ratings[3] = 0.0  # a user without history scores 0 everywhere
    model = UserKNN(30, 25, neighbours=neighbours, min_similarity=min_similarity, chunk_size=8).fit(make_data(ratings))
    scores = all_scores(model, 30)
    np.testing.assert_allclose(scores, naive_userknn(ratings, neighbours, min_similarity), rtol=1e-5, atol=1e-7)
    assert np.all(scores[3] == 0)


# -- EASE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 2e-4)])
def test_ease_equals_closed_form(rng, dtype, tol):
    ratings = random_ratings(rng, 60, 25, 0.3)
    x = (ratings > 0).astype(float)
    l2 = 7.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(25))
    b = np.eye(25) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    model = EASE(60, 25, l2=l2, dtype=dtype, chunk_size=7).fit(make_data(ratings))
    np.testing.assert_allclose(model.weights.double().numpy(), b, atol=tol)
    np.testing.assert_allclose(all_scores(model, 60), x @ b, atol=tol * 10)
    assert np.all(np.diag(model.weights.numpy()) == 0)


def test_ease_refuses_beyond_memory_budget(rng):
    data = make_data(random_ratings(rng, 10, 2000, 0.01))
    with pytest.raises(ConfigError, match="max_dense_gb"):
        EASE(10, 2000, max_dense_gb=0.01).fit(data)  # 3 x 2000^2 x 4 bytes = 0.048 GB


# -- ALS -----------------------------------------------------------------------------------------
def dense_loss(r: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float, reg: float) -> float:
    p = (r > 0).astype(float)
    c = 1.0 + alpha * r
    return float((c * (p - x @ y.T) ** 2).sum() + reg * ((x**2).sum() + (y**2).sum()))


def test_als_loss_decreases_and_user_factors_solve_their_normal_equations(rng):
    ratings = random_ratings(rng, 40, 30, 0.2)
    alpha, reg = 2.0, 0.1
    model = ALS(40, 30, factors=6, iterations=6, alpha=alpha, regularization=reg, dtype="float64", batch_size=7,
                max_chunk_entries=20, track_loss=True).fit(
        make_data(ratings)
    )
    loss = np.array(model.loss_history)
    assert len(loss) == 13 and np.all(np.diff(loss) <= 1e-9 * loss[0]), loss
    assert loss[-1] < 0.7 * loss[0]
    x, y = model.user_factors.numpy(), model.item_factors.numpy()
    for u in range(40):  # gradient of the full loss in x_u, item by item
        grad = 2 * reg * x[u]
        for i in range(30):
            p, c = float(ratings[u, i] > 0), 1.0 + alpha * ratings[u, i]
            grad += 2 * c * (x[u] @ y[i] - p) * y[i]
        assert np.abs(grad).max() < 1e-10
    # the loss used inside fit agrees with the dense formula
    got = implicit_loss(model.history, model.user_factors, model.item_factors, alpha, reg)
    assert got == pytest.approx(dense_loss(ratings, x, y, alpha, reg), rel=1e-10)


def planted_data(rng, n_users=400, n_items=120, n_groups=4):
    """Users of group g interact mostly with items of group g; 20% of each user's items go to test."""
    user_group = rng.integers(0, n_groups, n_users)
    item_group = np.arange(n_items) % n_groups
    prob = np.where(user_group[:, None] == item_group[None, :], 0.25, 0.01)
    prob = prob * np.linspace(1.5, 0.5, n_items)[None, :]  # mild popularity skew, same for all groups
    ratings = (rng.random((n_users, n_items)) < prob).astype(float)
    splits = np.where(rng.random(ratings.shape) < 0.8, "train", "test")
    return make_data(ratings, splits)


def test_als_recovers_planted_groups_far_above_pop(rng):
    data = planted_data(rng)
    als = ALS(data.n_users, data.n_items, factors=8, iterations=8, regularization=0.1).fit(data)
    pop = Popularity(data.n_users, data.n_items).fit(data)
    als_ndcg = evaluate_recommender(als, data, "test")["ndcg@10"]
    pop_ndcg = evaluate_recommender(pop, data, "test")["ndcg@10"]
    assert als_ndcg > 2 * pop_ndcg, (als_ndcg, pop_ndcg)


def test_all_neighbourhood_and_linear_baselines_beat_pop_on_planted_groups(rng):
    data = planted_data(rng)
    pop_ndcg = evaluate_recommender(Popularity(data.n_users, data.n_items).fit(data), data, "test")["ndcg@10"]
    for cls in (ItemKNN, UserKNN, EASE):
        ndcg = evaluate_recommender(cls(data.n_users, data.n_items).fit(data), data, "test")["ndcg@10"]
        assert ndcg > 1.5 * pop_ndcg, (cls.name, ndcg, pop_ndcg)


# -- persistence, configs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, kwargs",
    [(ItemKNN, {"neighbours": 5}), (UserKNN, {"neighbours": 5}), (ALS, {"factors": 4, "iterations": 2}), (EASE, {"l2": 3.0})],
)
def test_checkpoint_round_trip_gives_identical_scores(rng, tmp_path, cls, kwargs):
    ratings = random_ratings(rng, 30, 20, 0.3)
    data = make_data(ratings)
    model = cls(30, 20, **kwargs).fit(data)
    save_checkpoint(model, data, tmp_path / "model.ckpt")
    loaded, meta = load_recommender(tmp_path / "model.ckpt", expect_model=cls.name)
    assert meta["model"] == cls.name
    users = torch.arange(30)
    assert torch.equal(model.score(users), loaded.score(users))
    assert torch.equal(model.score(users), loaded.to("cpu").score(users))  # the path a GPU move takes


@pytest.mark.parametrize("cls", [ItemKNN, UserKNN, ALS, EASE])
def test_yaml_keys_are_exactly_the_config_fields(cls):
    keys = set(yaml.safe_load((CONF / f"{cls.name}.yaml").read_text()))
    assert keys == {f.name for f in dataclasses.fields(cls.config_class)}
    assert cls.config_class().name == cls.name


def test_invalid_choices_are_config_errors():
    with pytest.raises(ConfigError, match="normalization"):
        ItemKNN(3, 3, normalization="mean")
    with pytest.raises(ConfigError, match="dtype"):
        ALS(3, 3, dtype="float16")
    with pytest.raises(ConfigError, match="device='tpu'"):  # the run's device, which the baselines fit on
        EASE(3, 3).to("tpu").fit(make_data(np.eye(3)))


def test_the_run_seed_reaches_als():
    """deeprec-train seed=N model=mf: the run's seed draws ALS's initial item factors (a different
    seed gives other factors, the same seed the same ones), as build_model passes it."""
    from omegaconf import OmegaConf

    from deeprec.cli.common import build_model

    rng = np.random.default_rng(4)
    data = make_data((rng.random((30, 12)) < 0.4) * rng.integers(1, 6, (30, 12)).astype(float))
    section = OmegaConf.create({"name": "mf", "factors": 4, "iterations": 2})
    factors = {seed: build_model(section, data, seed=seed).fit(data).item_factors for seed in (5, 6)}
    assert build_model(section, data, seed=5).seed == 5
    assert not torch.allclose(factors[5], factors[6])
    assert torch.equal(build_model(section, data, seed=5).fit(data).item_factors, factors[5])
