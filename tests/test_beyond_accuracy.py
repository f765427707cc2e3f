"""Intra-list diversity, adaptivity and per-segment metrics in the shared evaluation (hand-worked
values and brute-force references), and their place in metrics.json and the leaderboard."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from deeprec.data.interactions import from_frame
from deeprec.evaluation import evaluate_topk
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.evaluation.metrics import adaptivity, intra_list_diversity
from deeprec.evaluation.segments import history_segments, user_segments


def test_intra_list_diversity_hand_worked():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    # list 1: items 0, 1 (orthogonal, distance 1); list 2: 0, 2 (cos 1/sqrt 2); list 3: 3 and a pad
    # (one item: not counted); list 4: 0, 1, 2 -> pairs (1, 1 - 1/sqrt2, 1 - 1/sqrt2)
    topk = torch.tensor([[0, 1, -1], [0, 2, -1], [3, -1, -1], [0, 1, 2]])
    expected = np.mean([1.0, 1 - 2**-0.5, (1 + 2 * (1 - 2**-0.5)) / 3])
    assert intra_list_diversity(topk, 3, vectors) == pytest.approx(expected)
    assert intra_list_diversity(topk, 1, vectors) != intra_list_diversity(topk, 1, vectors)  # NaN: no pair at k=1


def test_intra_list_diversity_equals_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 5))
    topk = torch.from_numpy(np.argsort(rng.random((50, 30)), axis=1)[:, :6])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = np.mean([np.mean([1 - unit[a] @ unit[b] for a, b in itertools.combinations(row, 2)]) for row in topk.numpy()])
    assert intra_list_diversity(topk, 6, vectors, chunk=7) == pytest.approx(brute)


def test_adaptivity_hand_worked():
    dif = np.array([0.1, 0.5, 0.9])
    known = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32))
    topk = torch.tensor([[1, 2], [0, -1], [1, 2]])  # user 3 knows nothing: skipped
    assert adaptivity(topk, 2, dif, known) == pytest.approx(((0.7 - 0.1) + (0.1 - 0.7)) / 2)


def test_history_segments_are_tertiles_named_by_range():
    labels = history_segments(np.array([0, 1, 1, 2, 3, 4, 5, 6, 9, 12]))
    assert labels[0] == "no_history"
    assert list(labels[1:]) == ["history_1-2"] * 3 + ["history_3-5"] * 3 + ["history_6+"] * 3
    assert set(history_segments(np.array([2, 2, 2, 2]))) == {"history_1+"}  # all equal: one segment


class Fixed:
    """A recommender with fixed scores (the evaluator only calls observe and score)."""

    device = torch.device("cpu")

    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def observe(self, data, splits):
        pass

    def score(self, users):
        return self.scores[users]


def test_segment_metrics_are_the_metrics_of_each_segment():
    rng = np.random.default_rng(3)
    rows = []
    for u in range(60):
        n = 1 + u % 7
        items = rng.choice(20, n + 2, replace=False)
        rows += [(u, i, "train") for i in items[:n]] + [(u, i, "test") for i in items[n:]]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "split"])
    features = pd.DataFrame(rng.random((20, 3)), index=[str(i) for i in range(20)])
    data = from_frame(frame.astype({"user_id": str, "item_id": str}), "seg", item_features=features)
    model = Fixed(rng.random((data.n_users, data.n_items)))
    metrics, users, topk = evaluate_recommender(model, data, "test", ks=(5,), return_topk=True, segments="history")
    labels = user_segments(data, "history")["segment"].to_numpy()[users]
    truth = data.truth("test")[users]
    assert {k.split("/")[1] for k in metrics if k.startswith("segment/")} == set(labels)
    for name in set(labels):
        rows = labels == name
        alone = evaluate_topk(topk[torch.from_numpy(rows)], truth[rows], ks=(5,), n_items=data.n_items)
        assert metrics[f"segment/{name}/n_users"] == rows.sum()
        for key in ("precision@5", "ndcg@5", "coverage@5"):
            assert metrics[f"segment/{name}/{key}"] == pytest.approx(alone[key])
    assert 0 < metrics["ild@5"] < 2


def test_compare_leaderboard_has_diversity_and_segments(tmp_path):
    from hydra import compose, initialize_config_module

    from deeprec.cli.compare import compare

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"user_id": rng.integers(0, 80, 1500), "item_id": (rng.zipf(1.5, 1500) % 40),
                          "timestamp": rng.integers(0, 10**6, 1500)}).drop_duplicates(["user_id", "item_id"])
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("compare", overrides=["data=interactions", f"data.path={path}", "models=[pop,itemknn,hybrid]",
                                            "+model_overrides.hybrid.members=[pop,itemknn]", f"out_dir={tmp_path / 'cmp'}"])
    table = compare(cfg)
    assert "ild@10" in table and any(c.startswith("segment/") for c in table.columns)
    assert table.loc["hybrid", "vs_single"] in ("pop", "itemknn")
    text = (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "ndcg@10 per user segment" in text and "hybrid vs the best single model" in text


def test_across_seeds_tests_the_hybrid_against_the_best_single_model_in_every_seed():
    """The across-seed leaderboard compares an ensemble with the single model of the best mean over
    seeds (a deep model here, not only baselines), by scipy's paired Wilcoxon x the Bonferroni factor."""
    from scipy.stats import wilcoxon

    from deeprec.evaluation.report import across_seeds, across_seeds_markdown

    rng = np.random.default_rng(3)
    per_seed, tables = {}, {}
    for seed in (1, 2, 3):
        base = rng.random(400) * 0.5
        values = {
            "ease": base,
            "lstm": base + 0.05 + rng.normal(0, 0.01, 400),  # the best single model in every seed
            "pop": base - 0.2,
            "hybrid": base + 0.05 + (0.1 if seed != 2 else 0.0) + rng.normal(0, 0.01, 400),  # ties lstm in seed 2
        }
        per_seed[seed] = {m: {"ndcg@10": v} for m, v in values.items()}
        tables[seed] = pd.DataFrame({"ndcg@10": {m: v.mean() for m, v in values.items()},
                                     "coverage@10": {m: 0.1 * seed for m in values}})
    summary = across_seeds(per_seed, tables, ("ease", "pop"), "ndcg@10", ensembles=("hybrid",))
    assert summary.loc["hybrid", "vs_single"] == "lstm"
    assert summary.loc["hybrid", "single_verdict"] == "not consistent"  # not significant in seed 2
    expected = max(min(1.0, 3 * wilcoxon(per_seed[s]["hybrid"]["ndcg@10"], per_seed[s]["lstm"]["ndcg@10"]).pvalue)
                   for s in (1, 2, 3))
    assert summary.loc["hybrid", "single_max_p_bonferroni"] == pytest.approx(expected)
    assert summary.loc["ease", "coverage@10"] == pytest.approx(0.2)  # beside: the mean over seeds
    assert "hybrid vs the best single model over seeds (lstm)" in across_seeds_markdown(summary, "ndcg@10", "t")

    for seed in (1, 2, 3):  # better in every seed once seed 2 has its margin too
        per_seed[seed]["hybrid"]["ndcg@10"] = per_seed[seed]["lstm"]["ndcg@10"] + 0.1 + rng.normal(0, 0.01, 400)
    summary = across_seeds(per_seed, tables, ("ease", "pop"), "ndcg@10", ensembles=("hybrid",))
    assert summary.loc["hybrid", "single_verdict"] == "better"
