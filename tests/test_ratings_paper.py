"""The ratings paper's experiment (SPEC 1.11): precision at the per-user k, the item-kNN scorer, the
resampling, the rank-sum tests and the one command, each against an independent reference."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hydra import compose, initialize_config_module
from scipy import stats

from deeprec.baselines.knn import item_similarity, itemknn_scores
from deeprec.cli.ratings_paper import run_from_config
from deeprec.data.ratings.rating import rated_matrices
from deeprec.errors import ConfigError
from deeprec.evaluation.metrics import precision_at_user_k, random_precision
from deeprec.experiments.ratings_paper import (
    PaperProtocol,
    resample_plan,
    significance_tests,
    strategy_name,
    strategy_precision,
)
from deeprec.ranking import ranking_keys
REPO = Path(__file__).resolve().parents[1]


def brute_force_precision(scores, exclude, truth, k, tie_rank):
    """Per-user loop: rank the non-excluded items by (-score, tie_rank), precision in the top k_u."""
    out = []
    for u in range(scores.shape[0]):
        n_test = int(truth[u].sum())
        if n_test == 0:
            out.append(math.nan)
            continue
        candidates = [j for j in range(scores.shape[1]) if not exclude[u, j]]
        candidates.sort(key=lambda j: (-scores[u, j], tie_rank[j]))
        k_u = min(k, n_test)
        out.append(sum(truth[u, j] for j in candidates[:k_u]) / k_u)
    return np.array(out)


def dense_itemknn(ratings: np.ndarray, n_train: np.ndarray, neighbours: int, min_similarity: float) -> np.ndarray:
    """SPEC 1.11 in dense numpy: cosine of the item columns, self and < min_similarity dropped, each
    row i keeps its `neighbours` largest, score = R @ S / |train(u)|."""
    norms = np.linalg.norm(ratings, axis=0)
    sim = ratings.T @ ratings / np.where(np.outer(norms, norms) > 0, np.outer(norms, norms), 1.0)
    np.fill_diagonal(sim, 0.0)
    sim[sim < min_similarity] = 0.0
    for i in range(sim.shape[0]):
        weakest = np.argsort(-sim[i])[neighbours:]
        sim[i, weakest] = 0.0
    return ratings @ sim / np.maximum(n_train, 1)[:, None]


def test_precision_at_user_k_matches_a_per_user_loop(rng):
    users, items, k = 60, 9, 5
    scores = rng.integers(0, 4, size=(users, items)).astype(np.float32)  # many ties
    exclude = rng.random((users, items)) < 0.4
    truth = (rng.random((users, items)) < 0.3) & ~exclude
    truth[0] = False  # a user without a test course
    exclude[1], truth[1] = True, False
    exclude[1, :2] = False  # two candidates, one of them relevant
    truth[1, 0] = True
    tie_rank = rng.permutation(items)
    got = precision_at_user_k(torch.from_numpy(scores), torch.from_numpy(exclude), torch.from_numpy(truth), k,
                              torch.from_numpy(tie_rank)).numpy()
    want = brute_force_precision(scores, exclude, truth, k, tie_rank)
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert math.isnan(got[0])


def test_ranking_keys_order_by_score_then_tie_rank(rng):
    values = rng.choice([-np.inf, -2.5, -1e-20, -0.0, 0.0, 1e-20, 0.25, 3.0, np.inf], size=(30, 9)).astype(np.float32)
    tie_rank = rng.permutation(9)
    keys = ranking_keys(torch.from_numpy(values), torch.from_numpy(tie_rank)).numpy()
    for row, key in zip(values, keys):
        want = np.lexsort((tie_rank, -row.astype(np.float64)))  # score descending, then tie_rank ascending
        np.testing.assert_array_equal(np.argsort(-key, kind="stable"), want)


def test_precision_at_user_k_by_hand():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1, 0.0]])
    exclude = torch.tensor([[True, False, False, False, False]])
    truth = torch.tensor([[False, False, True, True, False]])
    # k_u = min(5, 2) = 2; candidates by score 1, 2 (tie: item 2 first by tie_rank), 3, 4 -> top 2 = {2, 1}: 1 hit
    p = precision_at_user_k(scores, exclude, truth, 5, torch.tensor([4, 1, 0, 2, 3]))
    assert p.item() == pytest.approx(0.5)
    # with item 1 first among the ties the top 2 = {1, 2} as well: still 1 hit; with k = 1 it decides
    assert precision_at_user_k(scores, exclude, truth, 1, torch.tensor([4, 1, 0, 2, 3])).item() == 1.0
    assert precision_at_user_k(scores, exclude, truth, 1, torch.tensor([4, 0, 1, 2, 3])).item() == 0.0


def test_itemknn_scores_match_a_dense_reference(rng):
    users, items = 40, 12
    train = rng.random((users, items)) < 0.35
    ratings = np.where(train, rng.uniform(0.5, 5.0, (users, items)), 0.0)
    ratings[train & (rng.random((users, items)) < 0.2)] = 0.0  # step-penalty zeros stay train courses
    n_train = train.sum(1)
    sim = item_similarity(sp.csr_matrix(ratings.astype(np.float32)), neighbours=4, min_similarity=0.001)
    got = itemknn_scores(sp.csr_matrix(ratings.astype(np.float32)), n_train, sim)
    want = dense_itemknn(ratings, n_train, neighbours=4, min_similarity=0.001)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (np.count_nonzero(sim.toarray(), axis=1) <= 4).all()


def test_scores_equal_the_itemknn_baseline_when_no_train_rating_is_zero(rng):
    from deeprec.baselines.knn import ItemKNN
    from deeprec.data.interactions import InteractionData

    users, items = 30, 10
    train = rng.random((users, items)) < 0.4
    u, i = np.nonzero(train)
    frame = pd.DataFrame({"user": u, "item": i, "rating": rng.uniform(0.5, 5, len(u)).astype(np.float32),
                          "timestamp": np.nan, "split": "train"})
    data = InteractionData(frame, np.arange(users), np.arange(items))
    baseline = ItemKNN(users, items, neighbours=3).fit(data)
    ratings = data.matrix("train")
    ours = itemknn_scores(ratings, train.sum(1), item_similarity(ratings, 3, 0.001))
    np.testing.assert_allclose(baseline.score(torch.arange(users)).numpy(), ours, rtol=1e-5, atol=1e-6)


def tiny_ratings() -> pd.DataFrame:
    """Three users with hand-set shares: u1's per-user threshold is 0.6, the global one 0.5."""
    return pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u2", "u3", "u3", "u3"],
        "course_id": ["a", "b", "c", "a", "b", "d", "b", "c", "d"],
        "pct_viewed": [0.2, 0.6, 1.0, 0.5, 0.3, 0.4, 0.5, 0.4, 0.1],
        "split": ["train", "train", "test", "train", "train", "test", "train", "train", "test"],
    })


def test_rated_matrices_rate_each_strategy_by_spec_1_8():
    m = rated_matrices(tiny_ratings(), [("per_user", "sqrt"), ("global", "step"), ("global", "quadratic")])
    a, b = 0, 1  # courses in id order a, b, c, d; u1 is row 0
    pu_sqrt = m.ratings[("per_user", "sqrt")].toarray()
    assert pu_sqrt[0, a] == pytest.approx(5 * math.sqrt(0.2 / 0.6))
    assert pu_sqrt[0, b] == pytest.approx(5.0)  # x = 1
    global_t = np.mean([0.2, 0.6, 1.0, 0.5, 0.3, 0.4, 0.5, 0.4, 0.1])
    assert m.ratings[("global", "quadratic")].toarray()[1, b] == pytest.approx(5 * (0.3 / global_t) ** 2)
    step = m.ratings[("global", "step")]
    assert step.toarray()[0, a] == 0.0 and step.toarray()[0, b] == 5.0
    assert m.train.toarray()[0].tolist() == [1, 1, 0, 0] and m.test.toarray()[0].tolist() == [0, 0, 1, 0]
    assert step.shape == m.train.shape and step.nnz == m.train.nnz  # zero ratings kept as train courses


def test_strategy_precision_matches_the_dense_pipeline(rng):
    users, items = 80, 15
    counts = rng.integers(3, 8, users)
    rows = [(u, c) for u in range(users) for c in rng.choice(items, counts[u], replace=False)]
    frame = pd.DataFrame(rows, columns=["u", "c"])
    frame["user_id"] = "u" + frame["u"].astype(str).str.zfill(3)
    frame["course_id"] = "c" + frame["c"].astype(str).str.zfill(2)
    frame["pct_viewed"] = rng.uniform(0.05, 1.0, len(frame))
    position = frame.groupby("u").cumcount().to_numpy()
    frame["split"] = np.where(position < np.minimum(np.maximum(np.floor(0.7 * counts[frame["u"]]), 1), counts[frame["u"]] - 1),
                              "train", "test")
    protocol = PaperProtocol(neighbours=5, tie_break="index", batch_users=17).check()
    m = rated_matrices(frame, [("per_user", "log")])
    got = strategy_precision(m.ratings[("per_user", "log")], m.train, m.test, protocol, np.arange(items))
    train, test = m.train.toarray() > 0, m.test.toarray() > 0
    scores = dense_itemknn(m.ratings[("per_user", "log")].toarray().astype(np.float64), train.sum(1), 5, 0.001)
    want = brute_force_precision(np.round(scores, 5), train, test, 5, np.arange(items))
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_random_precision_by_hand():
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]]))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]))
    assert random_precision(train, test, 5) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_resample_plan_without_replacement_and_the_small_data_fallback():
    protocol = PaperProtocol(n_resamples=20, sample_users=300, seed=3).check()
    plan = resample_plan(1000, protocol)
    assert plan.samples.shape == (20, 300)
    assert all(len(np.unique(s)) == 300 for s in plan.samples) and plan.samples.max() < 1000
    assert len({tuple(s) for s in plan.samples}) == 20
    np.testing.assert_array_equal(plan.samples, resample_plan(1000, protocol).samples)  # seeded
    small = resample_plan(77, protocol)
    assert small.samples.shape == (20, 61) and "61" in small.note and "77" in small.note  # floor(0.8 * 77)
    assert len({tuple(s) for s in small.samples}) > 1


def test_significance_tests_against_scipy_and_the_papers_extreme_p(rng):
    strategies = PaperProtocol().strategies()
    resampled = pd.DataFrame({strategy_name(*s): rng.normal(0.2, 0.01, 100) for s in strategies})
    resampled[strategy_name("per_user", "sqrt")] += 0.005
    resampled[strategy_name("per_user", "step")] = np.linspace(0.30, 0.31, 100)  # fully above GPC step
    resampled[strategy_name("global", "step")] = np.linspace(0.01, 0.02, 100)
    tests = significance_tests(resampled, PaperProtocol().check())
    assert list(tests["family"]) == ["threshold"] * 5 + ["penalty"] * 4
    for _, row in tests.iterrows():
        a, b = (resampled[name.strip()].to_numpy() for name in row["test"].split(">"))
        # the normal approximation of the rank sum, by hand
        ranks = stats.rankdata(np.concatenate([a, b]))
        z = (ranks[:100].sum() - 100 * 201 / 2) / math.sqrt(100 * 100 * 201 / 12)
        assert row["statistic"] == pytest.approx(z)
        assert row["p_value"] == pytest.approx(stats.norm.sf(z), rel=1e-9)
        m = 5 if row["family"] == "threshold" else 4
        assert row["p_bonferroni"] == pytest.approx(min(1.0, row["p_value"] * m))
    step = tests.set_index("test").loc["PU step > GPC step"]
    assert step["p_value"] == pytest.approx(1.261e-34, rel=1e-3)  # the paper's smallest printed p
    assert bool(step["significant"])
    everything = significance_tests(resampled, PaperProtocol(bonferroni="all").check())
    np.testing.assert_allclose(everything["p_bonferroni"], np.minimum(everything["p_value"] * 9, 1.0))


def test_protocol_errors_name_the_key():
    with pytest.raises(ConfigError, match="protocol.tie_break"):
        PaperProtocol(tie_break="first").check()
    with pytest.raises(ConfigError, match="protocol.penalties"):
        PaperProtocol(penalties=["cubic"]).check()
    with pytest.raises(ConfigError, match="reference"):
        PaperProtocol(penalties=["linear", "log"]).check()


def compose_app(overrides: list[str]):
    with initialize_config_module(config_module="deeprec.conf", version_base="1.3"):
        return compose(config_name="ratings_paper", overrides=overrides)


def test_experiment_configs_compose():
    epm = compose_app(["+experiment=ratings_paper_epm"])
    assert epm.data.name == "epm" and epm.out_dir == "runs/ratings-paper-epm"
    assert epm.data.ratings.min_courses == 3 and epm.protocol.n_resamples == 100 and epm.protocol.sample_users == 3000
    synthetic = compose_app(["+experiment=ratings_paper_synthetic"])
    assert synthetic.data.name == "synthetic" and synthetic.data.generator.n_courses == 230
    with pytest.raises(ConfigError, match="unknown key"):
        run_from_config(compose_app(["+protocol.neighbors=10"]))


def test_the_command_writes_the_tables_and_figures(tmp_path):
    out = tmp_path / "run"
    cfg = compose_app([
        "data.n_events=40000", "data.generator.n_courses=40", "protocol.n_resamples=4",
        "protocol.sample_users=300", "protocol.min_lesson_seconds_grid=[0,60,600]", f"out_dir={out}",
    ])
    run_from_config(cfg)
    names = {p.name for p in out.iterdir()}
    assert {"table.md", "table.csv", "tests.csv", "resamples.csv", "durations.csv", "summary.json",
            "figure3_precision_vs_duration.png", "figure4_users_vs_duration.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 10 and set(table["threshold"]) == {"PU", "GPC"}
    assert table["precision"].between(0, 1).all() and (table["n_users"] > 300).all()
    assert len(pd.read_csv(out / "tests.csv")) == 9 and pd.read_csv(out / "resamples.csv").shape == (4, 11)
    durations = pd.read_csv(out / "durations.csv")
    users = durations.drop_duplicates("min_lesson_seconds")["n_users"].to_numpy()
    assert (np.diff(users) <= 0).all()  # a stricter duration filter never adds users
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sample_size"] == 300 and summary["users"] == table["n_users"].iloc[0]


@pytest.mark.shared_data
def test_epm_command_runs_with_the_small_data_fallback(shared_data, tmp_path):
    out = tmp_path / "epm"
    done = subprocess.run(
        [sys.executable, "-m", "deeprec.experiments.ratings_paper", "+experiment=ratings_paper_epm",
         "protocol.n_resamples=10", "protocol.min_lesson_seconds_grid=[0,60]", f"out_dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DEEPREC_SHARED_DATA": str(shared_data)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["courses"] == 6 and summary["users"] < 3000
    assert summary["sample_size"] == math.floor(0.8 * summary["users"])
    assert len(pd.read_csv(out / "table.csv")) == 10
