"""BatchedLinUCB against an independent per-user float64 loop; LinUCBRecommender in table mode and end to end."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from deeprec.bandits import BatchedLinUCB
from deeprec.bandits.linucb import batched_spd_inverse
from deeprec.bandits.recommender import LinUCBRecommender
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError, DataError


def loop_reference(users, contexts, rewards, n_users, dim, lam):
    """Per user: A = λI + Σ x xᵀ, b = Σ r x, A⁻¹ by np.linalg.inv — one user at a time, float64."""
    inv = np.zeros((n_users, dim, dim))
    theta = np.zeros((n_users, dim))
    for u in range(n_users):
        rows = users == u
        d_u = contexts[rows]
        a = lam * np.eye(dim) + d_u.T @ d_u
        inv[u] = np.linalg.inv(a)
        theta[u] = inv[u] @ (d_u.T @ rewards[rows])
    return inv, theta


def loop_ucb(inv, theta, arms, alpha):
    """p[u, j] = x_jᵀθ_u + α[u, j] sqrt(x_jᵀ A_u⁻¹ x_j), a double loop."""
    n_users, n_arms = theta.shape[0], arms.shape[0]
    alpha = np.broadcast_to(alpha, (n_users, n_arms))
    out = np.zeros((n_users, n_arms))
    for u in range(n_users):
        for j in range(n_arms):
            x = arms[j]
            out[u, j] = x @ theta[u] + alpha[u, j] * np.sqrt(x @ inv[u] @ x)
    return out


@pytest.fixture
def problem(rng):
    n_users, dim, n_arms, n = 23, 4, 17, 300
    users = rng.integers(0, n_users - 3, n)  # the last 3 users have no data (prior only)
    contexts = rng.normal(size=(n, dim))
    rewards = rng.normal(size=n)
    arms = rng.normal(size=(n_arms, dim))
    return n_users, dim, users, contexts, rewards, arms


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_fit_and_ucb_equal_per_user_loop_fixed_alpha(problem, dtype, tol):
    n_users, dim, users, contexts, rewards, arms = problem
    model = BatchedLinUCB(n_users, dim, alpha=0.7, lam=1.5, dtype=dtype).fit(users, contexts, rewards)
    inv, theta = loop_reference(users, contexts, rewards, n_users, dim, 1.5)
    np.testing.assert_allclose(model.A_inv.double().numpy(), inv, atol=tol)
    np.testing.assert_allclose(model.theta.double().numpy(), theta, atol=tol * 10)
    expected = loop_ucb(inv, theta, arms, 0.7)
    np.testing.assert_allclose(model.ucb(torch.from_numpy(arms)).double().numpy(), expected, atol=tol * 10)
    # a float alpha argument overrides the default
    np.testing.assert_allclose(model.ucb(arms, alpha=2.0).double().numpy(), loop_ucb(inv, theta, arms, 2.0), atol=tol * 10)


@pytest.mark.parametrize("chunk_elements", [1, 200, 1 << 24])
def test_fit_with_skewed_counts_and_small_chunks_equals_loop(rng, chunk_elements):
    # 1 to 300 rows per user (every padded length from 1 to 512), users in random order, chunks from
    # one user at a time to everything at once: the Gram blocks must add up to the plain per-user sums.
    n_users, dim = 40, 3
    counts = np.r_[np.arange(1, 9), rng.integers(1, 300, n_users - 10), [0, 0]]
    users = rng.permutation(np.repeat(np.arange(n_users), counts))
    contexts, rewards = rng.normal(size=(len(users), dim)), rng.normal(size=len(users))
    model = BatchedLinUCB(n_users, dim, lam=0.5, dtype=torch.float64, chunk_elements=chunk_elements)
    model.fit(users, contexts, rewards)
    inv, theta = loop_reference(users, contexts, rewards, n_users, dim, 0.5)
    np.testing.assert_allclose(model.A_inv.numpy(), inv, atol=1e-10)
    np.testing.assert_allclose(model.theta.numpy(), theta, atol=1e-9)


def test_per_user_arm_alpha_and_user_subset(problem, rng):
    n_users, dim, users, contexts, rewards, arms = problem
    model = BatchedLinUCB(n_users, dim, dtype=torch.float64, chunk_elements=40).fit(users, contexts, rewards)
    inv, theta = loop_reference(users, contexts, rewards, n_users, dim, 1.0)
    alpha = rng.uniform(0, 2, size=(n_users, len(arms)))
    np.testing.assert_allclose(model.ucb(arms, alpha=torch.from_numpy(alpha)).numpy(), loop_ucb(inv, theta, arms, alpha),
                               atol=1e-10)
    subset = np.array([5, 0, 19, 5])
    got = model.ucb(arms, users=torch.from_numpy(subset), alpha=torch.from_numpy(alpha[subset])).numpy()
    np.testing.assert_allclose(got, loop_ucb(inv[subset], theta[subset], arms, alpha[subset]), atol=1e-10)


@pytest.mark.parametrize("max_rounds", [None, 2])
def test_batched_updates_with_repeated_users_equal_loop(problem, rng, max_rounds):
    n_users, dim, users, contexts, rewards, arms = problem
    model = BatchedLinUCB(n_users, dim, dtype=torch.float64, reinvert_every=10**9,
                          max_sherman_morrison_rounds=max_rounds).fit(users, contexts, rewards)
    all_users, all_x, all_r = [users], [contexts], [rewards]
    for _ in range(4):
        batch_users = np.concatenate([rng.integers(0, n_users, 30), np.full(7, 3), [22, 22]])  # user 3 seven times
        rng.shuffle(batch_users)
        x, r = rng.normal(size=(len(batch_users), dim)), rng.normal(size=len(batch_users))
        model.update(torch.from_numpy(batch_users), torch.from_numpy(x), torch.from_numpy(r))
        all_users.append(batch_users), all_x.append(x), all_r.append(r)
    inv, theta = loop_reference(np.concatenate(all_users), np.concatenate(all_x), np.concatenate(all_r), n_users, dim, 1.0)
    np.testing.assert_allclose(model.A_inv.numpy(), inv, atol=1e-10)
    np.testing.assert_allclose(model.theta.numpy(), theta, atol=1e-10)
    np.testing.assert_allclose(model.ucb(arms).numpy(), loop_ucb(inv, theta, arms, 1.0), atol=1e-10)


def test_update_from_prior_equals_fit(problem):
    n_users, dim, users, contexts, rewards, arms = problem
    fitted = BatchedLinUCB(n_users, dim, dtype=torch.float64).fit(users, contexts, rewards)
    online = BatchedLinUCB(n_users, dim, dtype=torch.float64, reinvert_every=5)
    for s in range(0, len(users), 37):
        online.update(users[s : s + 37], contexts[s : s + 37], rewards[s : s + 37])
    np.testing.assert_allclose(online.ucb(arms).numpy(), fitted.ucb(arms).numpy(), atol=1e-10)


def test_recommend_with_exclusions(problem, rng):
    n_users, dim, users, contexts, rewards, arms = problem
    model = BatchedLinUCB(n_users, dim, dtype=torch.float64, chunk_elements=50).fit(users, contexts, rewards)
    inv, theta = loop_reference(users, contexts, rewards, n_users, dim, 1.0)
    scores = loop_ucb(inv, theta, arms, 1.0)
    mask = rng.random(scores.shape) < 0.4
    mask[2] = True  # user 2: every arm excluded -> all pads
    mask[4, :-2] = True  # user 4: only 2 arms allowed -> 2 items then pads
    expected = np.full((n_users, 5), -1)
    for u in range(n_users):
        allowed = [j for j in np.argsort(-scores[u], kind="stable") if not mask[u, j]]
        expected[u, : min(5, len(allowed))] = allowed[:5]
    for exclude in (torch.from_numpy(mask), sp.csr_matrix(mask)):
        got = model.recommend(arms, 5, exclude=exclude).numpy()
        np.testing.assert_array_equal(got, expected)
    plain = model.recommend(arms, 3).numpy()
    np.testing.assert_array_equal(plain, np.argsort(-scores, axis=1, kind="stable")[:, :3])


def test_state_dict_round_trip(problem):
    n_users, dim, users, contexts, rewards, arms = problem
    model = BatchedLinUCB(n_users, dim, alpha=0.3, lam=2.0, dtype=torch.float64).fit(users, contexts, rewards)
    other = BatchedLinUCB(1, 1, dtype=torch.float64)
    other.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    assert (other.alpha, other.lam) == (0.3, 2.0)
    np.testing.assert_allclose(other.ucb(arms).numpy(), model.ucb(arms).numpy(), atol=1e-12)


def test_spd_inverse_methods_agree(rng):
    a = rng.normal(size=(40, 6, 6))
    a = torch.from_numpy(a @ a.transpose(0, 2, 1) + 0.5 * np.eye(6))
    for method in ("columns", "lapack"):
        np.testing.assert_allclose(batched_spd_inverse(a, method).numpy(), np.linalg.inv(a.numpy()), atol=1e-9)


def drift(n_updates: int, batch: int, seed: int = 0) -> tuple[float, float]:
    """(max relative error of float32 A⁻¹, max abs error of float32 UCB) vs float64 after n_updates."""
    gen = torch.Generator().manual_seed(seed)
    n_users, dim = 200, 8
    models = [BatchedLinUCB(n_users, dim, dtype=t, reinvert_every=256) for t in (torch.float32, torch.float64)]
    arms = torch.randn(30, dim, generator=gen, dtype=torch.float64) / dim**0.5
    for _ in range(n_updates // batch):
        u = torch.randint(n_users, (batch,), generator=gen)
        x = torch.randn(batch, dim, generator=gen, dtype=torch.float64) / dim**0.5
        r = x.sum(1) + 0.1 * torch.randn(batch, generator=gen, dtype=torch.float64)
        for m in models:
            m.update(u, x, r)
    f32, f64 = models
    rel = ((f32.A_inv.double() - f64.A_inv).abs().amax((1, 2)) / f64.A_inv.abs().amax((1, 2))).max().item()
    return rel, (f32.ucb(arms).double() - f64.ucb(arms)).abs().max().item()


def test_float32_drift_after_20k_updates():
    rel, score_err = drift(20_000, 500)
    assert rel < 1e-4 and score_err < 1e-4


@pytest.mark.slow
def test_float32_drift_after_a_million_updates():
    rel, score_err = drift(1_000_000, 5_000)
    assert rel < 1e-4 and score_err < 1e-4


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="lam"):
        BatchedLinUCB(3, 2, lam=0.0)
    model = BatchedLinUCB(3, 2)
    with pytest.raises(ConfigError, match="expected \\[B, 2\\]"):
        model.update([0], torch.zeros(1, 3), [1.0])
    with pytest.raises(ConfigError, match="out of range"):
        model.update([3], torch.zeros(1, 2), [1.0])


# -- LinUCBRecommender --------------------------------------------------------------------------


@pytest.fixture
def table_data(tmp_path, rng):
    """A tiny interactions table and an item feature table (neural-linear mode with a table)."""
    n = 200
    frame = pd.DataFrame({"user_id": rng.integers(0, 12, n), "item_id": rng.integers(0, 9, n), "rating": rng.random(n)})
    frame = frame.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    frame["split"] = np.where(rng.random(len(frame)) < 0.75, "train", "test")
    features = pd.DataFrame({"item_id": [str(i) for i in range(9)], "f0": rng.normal(size=9), "f1": rng.normal(size=9),
                             "f2": rng.normal(size=9), "label": list("abcdefghi")})
    path = tmp_path / "items.csv"
    features.to_csv(path, index=False)
    return from_frame(frame, "t", name="tiny"), features, path


def test_recommender_table_mode_equals_loop(table_data, tmp_path):
    from deeprec.checkpoint import load_recommender, save_checkpoint

    data, features, path = table_data
    model = LinUCBRecommender(data.n_users, data.n_items, features="table", feature_path=str(path), alpha=0.5,
                              dtype="float64", reward="rating").fit(data)
    arms = features.set_index("item_id").loc[data.item_ids.astype(str), ["f0", "f1", "f2"]].to_numpy()
    train = data.rows("train")
    inv, theta = loop_reference(train["user"].to_numpy(), arms[train["item"].to_numpy()],
                                train["rating"].to_numpy(np.float64), data.n_users, 3, 1.0)
    expected = loop_ucb(inv, theta, arms, 0.5)
    got = model.score(torch.arange(data.n_users)).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)  # score() returns float32
    save_checkpoint(model, data, tmp_path / "linucb.ckpt")
    loaded, _ = load_recommender(tmp_path / "linucb.ckpt", expect_model="linucb")
    np.testing.assert_allclose(loaded.score(torch.arange(data.n_users)).numpy(), got, atol=1e-6)


def test_recommender_config_errors(table_data):
    data, _, _ = table_data
    with pytest.raises(ConfigError, match="alpha_mode"):
        LinUCBRecommender(3, 3, alpha_mode="sometimes")
    with pytest.raises(ConfigError, match="feature_path"):
        LinUCBRecommender(3, 3, features="table")
    with pytest.raises(DataError, match="video_stats"):
        LinUCBRecommender(data.n_users, data.n_items, features="video_stats").fit(data)
    with pytest.raises(DataError, match="reward='fracComp'.*auto or rating"):
        LinUCBRecommender(data.n_users, data.n_items, reward="fracComp").fit(data)


def test_deeprec_train_coursera_linucb(tmp_path, shared_data):
    from hydra import compose, initialize_config_module

    from deeprec.cli.train import train

    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=coursera", "model=linucb", f"run_dir={tmp_path / 'run'}", "seed=1",
                                          "model.alpha_mode=personalised"])
    metrics = train(cfg)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "run" / "metrics.json").exists()
    assert 0.0 < metrics["recall@10"] <= 1.0
