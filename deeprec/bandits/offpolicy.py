"""Off-policy evaluation of bandit policies from logs: replay, IPS, self-normalised IPS, doubly robust.

Replay (Li et al. 2011) is unbiased only on logs of a uniform-random logging policy (simulate.py).
On logs like Coursera's, where students chose their videos, the logging propensities are unknown:
IPS / DR here use *estimated* propensities (empirical per-arm frequencies, optionally per user
group) and are labelled as such; they inherit any error of that estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deeprec.atomic import write_bytes_atomic
from deeprec.bandits.linucb import BatchedLinUCB


class FixedPolicy:
    """A policy that always plays arms[u] for user u (learns nothing)."""

    def __init__(self, arms: torch.Tensor) -> None:
        self.arms = torch.as_tensor(arms, dtype=torch.int64)

    def choose(self, users: torch.Tensor) -> torch.Tensor:
        return self.arms[users]

    def learn(self, users: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor) -> None:
        return None


class LinUCBPolicy:
    """BatchedLinUCB as an online policy: play the top-UCB arm, learn from the rewards it is shown."""

    def __init__(self, bandit: BatchedLinUCB, arm_features: torch.Tensor, alpha: float | None = None) -> None:
        self.bandit = bandit
        self.arm_features = torch.as_tensor(arm_features).to(bandit.device, bandit.dtype)
        self.alpha = alpha

    def choose(self, users: torch.Tensor) -> torch.Tensor:
        return self.bandit.recommend(self.arm_features, 1, users=users, alpha=self.alpha)[:, 0].cpu()

    def learn(self, users: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor) -> None:
        self.bandit.update(users, self.arm_features[arms.to(self.bandit.device)], rewards)


@dataclass
class ReplayResult:
    """What replay saw: the logged positions it kept, their rewards, and the estimate."""

    kept_positions: torch.Tensor  # [M] indices into the log of the matched events
    rewards: torch.Tensor  # [M] the logged rewards of those events
    n_events: int = 0
    curve: dict = field(default_factory=dict)

    @property
    def value(self) -> float:
        """Estimated per-step reward of the policy (mean reward over matched events)."""
        return float(self.rewards.mean()) if len(self.rewards) else float("nan")

    @property
    def cumulative_reward(self) -> torch.Tensor:
        """[M] cumulative reward over the matched events (the x axis is the matched count)."""
        return torch.cumsum(self.rewards, 0)


def replay(policy, logs: dict[str, torch.Tensor], batch_size: int = 1) -> ReplayResult:
    """Li et al. (2011) replay: walk the log in order; keep an event when the policy picks the logged arm,
    then let the policy learn from it. batch_size > 1 lets the policy choose for a block of events with
    the state at the block's start (delayed updates); batch_size = 1 is the exact algorithm.
    """
    users, arms, rewards = logs["user"], logs["arm"], logs["reward"]
    kept = []
    for start in range(0, len(users), batch_size):
        block = slice(start, start + batch_size)
        u, a, r = users[block], arms[block], rewards[block]
        match = policy.choose(u) == a
        if match.any():
            policy.learn(u[match], a[match], r[match])
            kept.append(torch.nonzero(match).squeeze(1) + start)
    positions = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.int64)
    return ReplayResult(positions, rewards[positions], len(users))


def empirical_propensities(
    arms: torch.Tensor, n_arms: int, groups: torch.Tensor | None = None, floor: float = 1e-3
) -> torch.Tensor:
    """p̂(a_t | g_t): [N] share of the logged events of g_t's group that chose arm a_t (ESTIMATED, not logged).

    groups: [N] integer group per event (e.g. ability group), None = one group. Clipped below at `floor`.
    """
    arms = torch.as_tensor(arms, dtype=torch.int64)
    groups = torch.zeros_like(arms) if groups is None else torch.as_tensor(groups, dtype=torch.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 1
    counts = torch.bincount(groups * n_arms + arms, minlength=n_groups * n_arms).double()
    per_group = torch.bincount(groups, minlength=n_groups).double().clamp(min=1)
    return (counts[groups * n_arms + arms] / per_group[groups]).clamp(min=floor)


def ips(rewards: torch.Tensor, logged_arms: torch.Tensor, target_arms: torch.Tensor, propensity: torch.Tensor,
        self_normalised: bool = False) -> float:
    """Inverse-propensity estimate of a deterministic target policy's per-step reward (target_arms [N])."""
    weight = (logged_arms == target_arms).double() / propensity.double()
    if self_normalised:
        total = weight.sum()
        return float((weight * rewards).sum() / total) if total > 0 else float("nan")
    return float((weight * rewards.double()).mean())


def doubly_robust(rewards: torch.Tensor, logged_arms: torch.Tensor, target_arms: torch.Tensor,
                  propensity: torch.Tensor, predicted_target: torch.Tensor, predicted_logged: torch.Tensor) -> float:
    """Doubly-robust estimate: mean(r̂(u, π(u)) + 1[a = π(u)] (r − r̂(u, a)) / p̂(a|u)), per step.

    predicted_target / predicted_logged: [N] the reward model at the target arm and at the logged arm.
    """
    match = (logged_arms == target_arms).double()
    correction = match * (rewards.double() - predicted_logged.double()) / propensity.double()
    return float((predicted_target.double() + correction).mean())


def curve_points(values: torch.Tensor, max_points: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a cumulative curve thinned to at most max_points, always keeping the last point."""
    y = values.detach().cpu().double().numpy()
    if len(y) == 0:
        return np.zeros(0, np.int64), y
    x = np.unique(np.linspace(0, len(y) - 1, min(max_points, len(y))).round().astype(np.int64))
    return x + 1, y[x]


def save_curves(curves: dict[str, torch.Tensor], png_path: str | Path, log_dir: str | Path | None = None,
                title: str = "cumulative reward (replay)", xlabel: str = "matched events") -> None:
    """Cumulative-reward curves as a PNG (matplotlib) and, when log_dir is given, TensorBoard scalars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        x, y = curve_points(values)
        ax.plot(x, y, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cumulative reward")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    write_bytes_atomic(png_path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    plt.close(fig)
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(log_dir)) as writer:
            for name, values in curves.items():
                x, y = curve_points(values)
                for step, value in zip(x.tolist(), y.tolist()):  # the points of one curve, not users
                    writer.add_scalar(f"offpolicy/{name}/cumulative_reward", value, step)
