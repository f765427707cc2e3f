"""A linear-reward simulator: logs of a uniform-random logging policy with a known best policy.

reward(u, a) = x_aᵀ θ*_u + ε, ε ~ N(0, noise²). The true value of any policy is computable, so
replay's estimate (offpolicy.replay) can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LinearBanditWorld:
    """The hidden truth: arm features X [n_arms, d] and user parameters θ* [U, d]."""

    arm_features: torch.Tensor
    user_theta: torch.Tensor
    noise: float = 0.1

    @property
    def n_users(self) -> int:
        return self.user_theta.shape[0]

    @property
    def n_arms(self) -> int:
        return self.arm_features.shape[0]

    def expected_rewards(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """E[r]: [U, n_arms] = θ*_u · x_a."""
        theta = self.user_theta if users is None else self.user_theta[users]
        return theta @ self.arm_features.t()

    def policy_value(self, arms: torch.Tensor) -> float:
        """True value of a fixed policy arms [U] (one arm per user) under uniform user arrivals."""
        expected = self.expected_rewards()
        return float(expected[torch.arange(self.n_users), arms].mean())

    def best_arms(self) -> torch.Tensor:
        """The optimal fixed policy: [U] argmax_a θ*_u · x_a."""
        return self.expected_rewards().argmax(1)


def make_world(n_users: int, n_arms: int, dim: int, noise: float = 0.1, seed: int = 0) -> LinearBanditWorld:
    """Random arms and users: features and parameters ~ N(0, 1/d), so expected rewards are O(1)."""
    gen = torch.Generator().manual_seed(seed)
    scale = dim ** -0.5
    arms = torch.randn(n_arms, dim, generator=gen, dtype=torch.float64) * scale
    theta = torch.randn(n_users, dim, generator=gen, dtype=torch.float64)
    return LinearBanditWorld(arms, theta, noise)


def uniform_logs(world: LinearBanditWorld, n_events: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Logs of a uniform-random logging policy: user [N], arm [N], reward [N], propensity [N] (= 1/n_arms)."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(world.n_users, (n_events,), generator=gen)
    arms = torch.randint(world.n_arms, (n_events,), generator=gen)
    mean = (world.user_theta[users] * world.arm_features[arms]).sum(1)
    rewards = mean + world.noise * torch.randn(n_events, generator=gen, dtype=torch.float64)
    return {
        "user": users,
        "arm": arms,
        "reward": rewards,
        "propensity": torch.full((n_events,), 1.0 / world.n_arms, dtype=torch.float64),
    }
