"""The shared evaluation against an independent, loop-based computation of every SPEC section 3 metric."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.data.interactions import InteractionData
from deeprec.evaluation import evaluate_topk
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.ranking import full_ranking_topk
from deeprec.recommender import Recommender

KS = (1, 3, 5, 8)


def naive_metrics(topk, truth, ks, n_items, popularity=None, n_pop_users=None) -> dict[str, float]:
    """Every metric one user and one list at a time, straight from the SPEC section 3 prose."""
    evaluated = [u for u in range(len(truth)) if len(set(truth[u])) > 0]
    out = {"n_users_evaluated": float(len(evaluated)), "n_users_skipped": float(len(truth) - len(evaluated))}
    n_pop_users = len(truth) if n_pop_users is None else n_pop_users
    for k in ks:
        sums = dict.fromkeys(("precision", "recall", "f1", "hit", "ndcg", "map", "mrr"), 0.0)
        lists = []
        for u in evaluated:
            relevant = set(int(i) for i in truth[u])
            ranked = [int(i) for i in topk[u][:k]]
            lists.append([i for i in ranked if i >= 0])
            hits = [1 if i >= 0 and i in relevant else 0 for i in ranked]
            n_hit = sum(hits)
            p, r = n_hit / k, n_hit / len(relevant)
            sums["precision"] += p
            sums["recall"] += r
            sums["f1"] += 2 * p * r / (p + r) if p + r > 0 else 0.0
            sums["hit"] += 1.0 if n_hit else 0.0
            dcg = sum(h / math.log2(rank + 2) for rank, h in enumerate(hits))
            ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
            sums["ndcg"] += dcg / ideal
            precision_at = [sum(hits[: rank + 1]) / (rank + 1) for rank in range(k)]
            sums["map"] += sum(precision_at[rank] * hits[rank] for rank in range(k)) / min(len(relevant), k)
            first = next((rank for rank, h in enumerate(hits) if h), None)
            sums["mrr"] += 1.0 / (first + 1) if first is not None else 0.0
        for name, total in sums.items():
            out[f"{name}@{k}"] = total / len(evaluated)
        out[f"coverage@{k}"] = len(set(i for lst in lists for i in lst)) / n_items
        pairs = [(a, b) for a in range(len(lists)) for b in range(a + 1, len(lists))]
        overlap = sum(len(set(lists[a]) & set(lists[b])) / k for a, b in pairs) / len(pairs)
        out[f"personalization@{k}"] = 1.0 - overlap
        if popularity is not None:
            recommended = [i for lst in lists for i in lst]
            out[f"novelty@{k}"] = sum(-math.log2(max(popularity[i], 1) / n_pop_users) for i in recommended) / len(recommended)
    return out


def assert_same_metrics(got: dict, expected: dict) -> None:
    assert set(expected) <= set(got), sorted(set(expected) - set(got))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def random_case(rng, n_users=40, n_items=30, width=8):
    """Random top-k lists (distinct items, some -1 pads at the end), truths with duplicates and empties."""
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    n_pads = rng.integers(0, 4, n_users) * (rng.random(n_users) < 0.3)
    for u in range(n_users):
        if n_pads[u]:
            topk[u, width - n_pads[u] :] = -1
    truth = []
    for u in range(n_users):
        size = int(rng.integers(0, 6))
        items = list(rng.choice(n_items, size, replace=True))  # repeats allowed: truth is a set
        if size and rng.random() < 0.5:
            items.append(int(topk[u, 0]) if topk[u, 0] >= 0 else items[0])  # make hits at rank 1 common
            items.append(items[-1])
        truth.append(items)
    truth[0] = []
    truth[5] = [int(topk[5, 2])] * 3  # one relevant item, given three times, hit at rank 3
    return topk, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_topk_equals_loop_reference_for_every_metric_and_k(seed):
    rng = np.random.default_rng(seed)
    topk, truth = random_case(rng)
    popularity = rng.integers(0, 50, 30)
    got = evaluate_topk(topk, truth, ks=KS, n_items=30, item_popularity=popularity, n_popularity_users=60)
    expected = naive_metrics(topk, truth, KS, 30, popularity, 60)
    assert expected["n_users_skipped"] >= 1
    for name in ("precision", "recall", "f1", "hit", "ndcg", "map", "mrr", "coverage", "personalization", "novelty"):
        assert all(f"{name}@{k}" in expected for k in KS)
    assert_same_metrics(got, expected)
    # a torch tensor input gives the same numbers
    assert_same_metrics(evaluate_topk(torch.from_numpy(topk), truth, ks=KS, n_items=30), naive_metrics(topk, truth, KS, 30))


def test_evaluate_topk_hand_worked_example():
    # user 0: truth {1, 2}, list [1, 5, 2] -> hits at ranks 1 and 3
    # user 1: truth {7}, list [3, 4, -1] -> no hit; user 2: empty truth -> skipped
    got = evaluate_topk([[1, 5, 2], [3, 4, -1], [0, 1, 2]], [[1, 2, 2], [7], []], ks=(3,), n_items=10)
    assert got["n_users_skipped"] == 1 and got["n_users_evaluated"] == 2
    assert got["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["recall@3"] == pytest.approx((1 + 0) / 2)
    assert got["hit@3"] == pytest.approx(0.5)
    ndcg0 = (1 + 1 / 2) / (1 + 1 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert got["map@3"] == pytest.approx((1 + 2 / 3) / 2 / 2)
    assert got["mrr@3"] == pytest.approx(0.5)
    assert got["coverage@3"] == pytest.approx(5 / 10)  # items 1, 5, 2, 3, 4
    assert got["personalization@3"] == pytest.approx(1.0)


class FixedScores(Recommender):
    """A recommender whose scores are a given dense matrix (to test the evaluator alone)."""

    name = "fixed"

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__(*scores.shape)
        self.scores = torch.from_numpy(scores.astype(np.float32))
        self.observed = None

    def fit(self, data, trainer=None):
        return self

    def observe(self, data, splits):
        self.observed = splits

    def score(self, users):
        return self.scores[users]

    def state_tensors(self):
        return {"scores": self.scores}

    def load_state_tensors(self, state):
        self.scores = state["scores"]


def split_data(rng, n_users=37, n_items=25) -> InteractionData:
    rows = [(u, i) for u in range(n_users) for i in range(n_items) if rng.random() < 0.3]
    users, items = np.array(rows).T
    split = rng.choice(["train", "valid", "test"], len(rows), p=[0.6, 0.2, 0.2])
    split[users == 0] = "train"  # user 0 has nothing to evaluate
    frame = pd.DataFrame({"user": users, "item": items, "rating": np.float32(1), "timestamp": np.nan, "split": split})
    return InteractionData(frame, np.arange(n_users).astype(str), np.arange(n_items).astype(str))


def brute_force_topk(scores, frame, split, excluded_splits, k):
    """Per user: drop the items of earlier splits, sort all the rest by score, keep k (-1 when short)."""
    topk, truth, users = [], [], []
    for u in range(scores.shape[0]):
        rows = frame[frame["user"] == u]
        relevant = rows.loc[rows["split"] == split, "item"].tolist()
        if not relevant:
            continue
        seen = set(rows.loc[rows["split"].isin(excluded_splits), "item"])
        ranked = sorted((i for i in range(scores.shape[1]) if i not in seen), key=lambda i: -scores[u, i])[:k]
        topk.append(ranked + [-1] * (k - len(ranked)))
        truth.append(relevant)
        users.append(u)
    return np.array(topk), truth, np.array(users)


@pytest.mark.parametrize("split, excluded", [("test", ("train", "valid")), ("valid", ("train",))])
@pytest.mark.parametrize("batch_size", [5, 1000])
def test_evaluate_recommender_equals_brute_force_ranking(rng, split, excluded, batch_size):
    data = split_data(rng)
    scores = rng.random((data.n_users, data.n_items))
    model = FixedScores(scores)
    got, users, items = evaluate_recommender(model, data, split, ks=(5, 10), batch_size=batch_size, return_topk=True)
    topk, truth, expected_users = brute_force_topk(scores, data.frame, split, excluded, 10)
    assert model.observed == excluded
    np.testing.assert_array_equal(users, expected_users)
    np.testing.assert_array_equal(items.numpy(), topk)
    train = data.frame[data.frame["split"] == "train"]
    popularity = np.bincount(train.drop_duplicates(["user", "item"])["item"], minlength=data.n_items)
    expected = naive_metrics(topk, truth, (5, 10), data.n_items, popularity, train["user"].nunique())
    expected["n_users_skipped"] = float(data.n_users - len(expected_users))
    assert expected["n_users_skipped"] >= 1
    assert_same_metrics(got, expected)


def test_full_ranking_topk_pads_when_fewer_items_remain_and_ignores_batch_size(rng):
    import scipy.sparse as sp

    scores = rng.random((9, 6)).astype(np.float32)
    seen = np.zeros((9, 6), np.float32)
    seen[2, :4] = 1  # user 2 has only 2 unseen items left
    seen[4, :] = 1  # user 4 has none
    exclude = sp.csr_matrix(seen)
    users = np.array([4, 2, 0, 8, 1])
    results = [full_ranking_topk(lambda u: torch.from_numpy(scores)[u], users, 4, exclude, batch_size=b) for b in (1, 2, 100)]
    for u_pos, u in enumerate(users):
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if not seen[u, i]][:4]
        expected = ranked + [-1] * (4 - len(ranked))
        for _, items in results:
            assert items[u_pos].tolist() == expected
    for values, items in results[1:]:
        assert torch.equal(items, results[0][1]) and torch.equal(values, results[0][0])


def test_paired_test_one_sided_matches_the_exact_signed_rank_distribution_and_scipy(rng):
    from scipy.stats import wilcoxon

    from deeprec.evaluation.stats import paired_test

    # a beats b on all 5 users by distinct margins: W+ = 15 is the largest of the 2^5 equally
    # likely sign patterns, so the exact one-sided p is 1/32, two-sided 2/32, "less" 1
    b = np.zeros(5)
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert paired_test(a, b, alternative="greater") == pytest.approx(1 / 32)
    assert paired_test(a, b) == pytest.approx(2 / 32)
    assert paired_test(a, b, alternative="less") == pytest.approx(1.0)
    # random paired values (some ties at zero difference): scipy's own one-sided p
    x, y = rng.random(40), rng.random(40)
    y[:5] = x[:5]
    for alternative in ("greater", "less", "two-sided"):
        expected = wilcoxon(x, y, zero_method="wilcox", alternative=alternative).pvalue
        assert paired_test(x, y, alternative=alternative) == pytest.approx(expected)
    assert paired_test(x, x, alternative="greater") == 1.0
    with pytest.raises(ValueError, match="alternative"):
        paired_test(x, y, alternative="more")
