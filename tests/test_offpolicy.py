"""Off-policy estimators on simulated logs with a known truth; the paper's metrics on hand-worked lists."""

import numpy as np
import scipy.sparse as sp
import torch

from deeprec.bandits.linucb import BatchedLinUCB
from deeprec.bandits.offpolicy import (FixedPolicy, LinUCBPolicy, doubly_robust, empirical_propensities, ips, replay,
                                       save_curves)
from deeprec.evaluation.metrics import personalization
from deeprec.experiments.linucb_paper import adaptivity, holdout_mask, paper_metrics
from deeprec.bandits.simulate import make_world, uniform_logs


def test_replay_recovers_true_value_of_known_policies():
    world = make_world(n_users=40, n_arms=8, dim=4, noise=0.2, seed=1)
    logs = uniform_logs(world, 200_000, seed=2)
    for arms in (world.best_arms(), torch.randint(8, (40,), generator=torch.Generator().manual_seed(5))):
        result = replay(FixedPolicy(arms), logs, batch_size=len(logs["user"]))
        # replay keeps ~1/n_arms of the events; its mean reward estimates the policy's value
        assert abs(len(result.rewards) / 200_000 - 1 / 8) < 0.005
        expected = world.expected_rewards()[logs["user"][result.kept_positions], arms[logs["user"][result.kept_positions]]]
        stderr = float(torch.sqrt(expected.var() / len(expected) + 0.2**2 / len(expected)))
        assert abs(result.value - world.policy_value(arms)) < 4 * stderr
        # IPS with the logged (true) propensities estimates the same value
        target = arms[logs["user"]]
        assert abs(ips(logs["reward"], logs["arm"], target, logs["propensity"]) - world.policy_value(arms)) < 0.05


def test_replay_batched_equals_sequential_for_a_fixed_policy():
    world = make_world(10, 5, 3, seed=0)
    logs = uniform_logs(world, 2_000, seed=0)
    arms = world.best_arms()
    a, b = replay(FixedPolicy(arms), logs, batch_size=1), replay(FixedPolicy(arms), logs, batch_size=333)
    assert torch.equal(a.kept_positions, b.kept_positions)
    # hand check: kept events are exactly those whose logged arm is the policy's
    assert torch.equal(a.kept_positions, torch.nonzero(logs["arm"] == arms[logs["user"]]).squeeze(1))


def test_online_linucb_beats_random_and_approaches_best_under_replay():
    world = make_world(n_users=20, n_arms=10, dim=4, noise=0.1, seed=3)
    logs = uniform_logs(world, 40_000, seed=4)
    policy = LinUCBPolicy(BatchedLinUCB(20, 4, alpha=0.5, dtype=torch.float64), world.arm_features)
    result = replay(policy, logs, batch_size=40)
    best = world.policy_value(world.best_arms())
    mean_random = float(world.expected_rewards().mean())
    assert result.value > mean_random + 0.7 * (best - mean_random)


def test_doubly_robust_with_exact_reward_model_is_exact():
    world = make_world(30, 6, 3, noise=0.5, seed=7)
    logs = uniform_logs(world, 5_000, seed=8)
    arms = world.best_arms()
    target = arms[logs["user"]]
    expected = world.expected_rewards()[logs["user"]]
    # with the true expected reward as the model, DR = mean over events of E[r | u, π(u)] + zero-mean noise terms
    dr = doubly_robust(logs["reward"], logs["arm"], target, logs["propensity"],
                       expected.gather(1, target[:, None])[:, 0], expected.gather(1, logs["arm"][:, None])[:, 0])
    direct = float(expected.gather(1, target[:, None]).mean())
    assert abs(dr - direct) < 4 * 0.5 * np.sqrt(6 / 5_000)


def test_empirical_propensities_hand_worked():
    arms = torch.tensor([0, 0, 1, 2, 2, 2])
    groups = torch.tensor([0, 0, 0, 1, 1, 0])
    # group 0 has arms [0, 0, 1, 2]; group 1 has [2, 2]
    np.testing.assert_allclose(empirical_propensities(arms, 3, groups).numpy(), [0.5, 0.5, 0.25, 1.0, 1.0, 0.25])
    np.testing.assert_allclose(empirical_propensities(arms, 3).numpy(), [2 / 6, 2 / 6, 1 / 6, 3 / 6, 3 / 6, 3 / 6])


def test_save_curves_writes_png_and_tensorboard(tmp_path):
    save_curves({"a": torch.arange(10.0).cumsum(0), "b": torch.ones(3).cumsum(0)}, tmp_path / "c.png", tmp_path / "tb")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_paper_metrics_hand_worked():
    topk = torch.tensor([[0, 1, -1], [1, 2, 3]])
    truth = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    watched = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=np.float32))
    dif = np.array([0.1, 0.2, 0.6, 0.4])
    m = paper_metrics(topk, truth, dif, watched, ks=(2,))
    # student 0: R@2 = {0, 1}, T = {0, 3}: P = 1/2, R = 1/2, hit; student 1 has no T (skipped)
    assert (m["precision@2"], m["recall@2"], m["hit_ratio@2"], m["students_with_truth"]) == (0.5, 0.5, 1.0, 1.0)
    # adaptivity: s0 mean dif rec (0.1+0.2)/2 - watched (0.1+0.4)/2 = -0.1; s1 (0.2+0.6)/2 - 0.2 = 0.2 -> mean 0.05
    assert abs(adaptivity(topk, 2, dif, watched) - 0.05) < 1e-12
    # personalization@2: one pair sharing item 1 -> 1 - 1/2
    assert abs(personalization(topk, 2) - 0.5) < 1e-12


def test_holdout_mask_hides_a_share_per_student():
    student = np.repeat(np.arange(4), [1, 2, 5, 10])
    hidden = holdout_mask(student, share=0.2, seed=0)
    # floor(0.2 m), at least 1 when m >= 2, none when m == 1
    np.testing.assert_array_equal(np.bincount(student, weights=hidden).astype(int), [0, 1, 1, 2])
