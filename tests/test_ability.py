"""Ability, groups, video features and personalised exploration (SPEC 2.1-2.4) against hand-worked values."""

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.bandits.ability import ability_groups, group_summary, kmeans, name_clusters, student_ability
from deeprec.bandits.features import attention, clean_video_behaviour, read_video_behaviour, video_features
from deeprec.experiments.linucb_paper import coursera_interactions
from deeprec.bandits.recommender import LinUCBRecommender

# students A, B, C; videos 0, 1, 2 (hand-worked values below)
TINY = pd.DataFrame({
    "userID": ["A", "A", "B", "C", "C"],
    "VidID": ["0", "1", "0", "1", "2"],
    "fracSpent": [1.0, 1.0, 1.0, 1.0, 1.0],
    "fracComp": [1.0, 0.5, 0.8, 0.2, 0.6],
    "numRWs": [0, 30, 90, 0, 6],
    "s": [1, 0, 1, 0, 1],
})
ABILITY = np.array([(2 / 3 + 0.75 + 0.5) / 3, (1 / 3 + 0.8 + 1.0) / 3, (2 / 3 + 0.4 + 0.5) / 3])
FEATURES = np.array([  # fracStudy, avgfracComp, fracnumRWs (numRWs capped at 60), fracCorrect, dif
    [2 / 3, 0.9, 0.5, 1.0, 0.25],
    [2 / 3, 0.35, 0.25, 0.0, 0.625],
    [1 / 3, 0.6, 0.1, 1.0, 0.05],
])
ATTENTION = np.array([  # mean |dif_j - dif_m| over each student's watched m
    [0.1875, 0.1875, 0.3875],
    [0.0, 0.375, 0.2],
    [0.2875, 0.2875, 0.2875],
])


def tiny_indices():
    return TINY["userID"].map({"A": 0, "B": 1, "C": 2}).to_numpy(), TINY["VidID"].astype(int).to_numpy()


def test_ability_hand_worked():
    student, _ = tiny_indices()
    ability, n = student_ability(student, TINY["fracComp"].to_numpy(), TINY["s"].to_numpy(), 3, 3)
    np.testing.assert_allclose(ability, ABILITY)
    np.testing.assert_array_equal(n, [2, 1, 2])


def test_video_features_and_attention_hand_worked():
    student, video = tiny_indices()
    x = video_features(TINY, student, video, 3, 3, p=0.5, q=0.5)
    np.testing.assert_allclose(x, FEATURES)
    watched = np.zeros((3, 3))
    watched[student, video] = 1
    import scipy.sparse as sp

    np.testing.assert_allclose(attention(sp.csr_matrix(watched), x[:, 4]).numpy(), ATTENTION)


def test_recommender_personalised_alpha_is_ability_times_attention():
    data = coursera_interactions(TINY, "paper")
    model = LinUCBRecommender(data.n_users, data.n_items, alpha_mode="personalised", dtype="float64").fit(data)
    np.testing.assert_allclose(model.arm_features.numpy(), FEATURES)
    alpha = model.exploration(torch.arange(3))
    np.testing.assert_allclose(alpha.numpy(), ABILITY[:, None] * ATTENTION)
    # the scores use that alpha: x θ + α sqrt(x A⁻¹ x) with a per-student loop
    scores = model.score(torch.arange(3)).double().numpy()
    rows = data.frame
    for u in range(3):
        d_u = FEATURES[rows["item"][rows["user"] == u].to_numpy()]
        r_u = rows["rating"][rows["user"] == u].to_numpy(np.float64)
        inv = np.linalg.inv(np.eye(5) + d_u.T @ d_u)
        theta = inv @ d_u.T @ r_u
        expected = FEATURES @ theta + ABILITY[u] * ATTENTION[u] * np.sqrt(np.einsum("ji,ik,jk->j", FEATURES, inv, FEATURES))
        np.testing.assert_allclose(scores[u], expected, atol=1e-5)


def test_cleaning_rejects_with_reasons():
    raw = pd.DataFrame({
        "userID": list("abcdefg"), "VidID": ["1"] * 7,
        "fracSpent": [0.0, 1, 1, 1, 1, 1, 150], "fracComp": [0.5, 1.2, 0.5, 0.5, 0.5, 0.5, 0.5],
        "numRWs": [0, 0, 61, 0, 0, 0, 0], "numFFs": [0, 0, 0, 70, 0, 0, 0],
        "fracPaused": [0, 0, 0, 0, 101, 0, 0], "s": [1] * 7,
    })
    kept, rejects = clean_video_behaviour(raw)
    assert kept["userID"].tolist() == ["f"]
    assert dict(zip(rejects["userID"], rejects["reason"])) == {
        "a": "empty_record", "b": "fracComp_above_1", "c": "numRWs_above_60", "d": "numFFs_above_60",
        "e": "fracPaused_above_100", "g": "fracSpent_above_100",
    }
    assert len(kept) + len(rejects) == len(raw)


def test_group_naming_rule():
    # cluster 0: most videos -> active; of clusters 1 (ability .2) and 2 (ability .6): 2 potential, 1 inactive
    labels = np.array([0, 0, 1, 1, 2, 2])
    ability = np.array([0.5, 0.5, 0.2, 0.2, 0.6, 0.6])
    n = np.array([50, 40, 3, 4, 5, 6])
    assert name_clusters(labels, ability, n).tolist() == ["active"] * 2 + ["inactive"] * 2 + ["potential"] * 2
    # the rule is about means, not label numbers: permuting cluster ids changes nothing
    assert name_clusters(np.array([2, 2, 0, 0, 1, 1]), ability, n).tolist() == name_clusters(labels, ability, n).tolist()


def test_kmeans_recovers_separated_blobs_deterministically(rng):
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 40)
    points = centres[truth] + rng.normal(scale=0.5, size=(120, 2))
    labels, found, _ = kmeans(points, k=3, seed=3)
    # same partition up to renaming: each true blob maps to exactly one label
    assert all(len(set(labels[truth == c])) == 1 for c in range(3)) and len(set(labels)) == 3
    np.testing.assert_allclose(np.sort(found[:, 0] + 2 * found[:, 1]), np.sort(centres[:, 0] + 2 * centres[:, 1]), atol=0.5)
    np.testing.assert_array_equal(kmeans(points, k=3, seed=3)[0], labels)


def test_ability_groups_on_three_obvious_populations(rng):
    n = np.concatenate([rng.integers(40, 60, 30), rng.integers(3, 8, 60), rng.integers(2, 5, 60)])
    ability = np.concatenate([rng.uniform(0.6, 0.7, 30), rng.uniform(0.55, 0.65, 60), rng.uniform(0.2, 0.35, 60)])
    groups = ability_groups(ability, n, seed=0)
    expected = np.array(["active"] * 30 + ["potential"] * 60 + ["inactive"] * 60)
    assert (groups == expected).mean() > 0.95


@pytest.mark.shared_data
def test_real_groups_in_spec_ballpark(shared_data):
    behaviour, rejects = read_video_behaviour(shared_data / "coursera-video-behavior" / "behavior-performance.tsv")
    assert (rejects["reason"] == "empty_record").sum() == 549  # the paper's 549 empty records
    students = np.unique(behaviour["userID"])
    student = np.searchsorted(students, behaviour["userID"])
    ability, n = student_ability(student, behaviour["fracComp"].to_numpy(), behaviour["s"].to_numpy(), len(students),
                                 behaviour["VidID"].nunique())
    summary = {r["group"]: r for r in group_summary(ability_groups(ability, n, seed=0), ability, n)}
    # SPEC 2.2: mean N about 53 / 6 / 3, mean ability about .67 / .59 / .33
    for group, (mean_n, mean_ability) in {"active": (53, 0.67), "potential": (6, 0.59), "inactive": (3, 0.33)}.items():
        assert abs(summary[group]["mean_N"] - mean_n) < 0.15 * mean_n + 0.5
        assert abs(summary[group]["mean_ability"] - mean_ability) < 0.04
    assert 100 <= summary["active"]["students"] <= 300
