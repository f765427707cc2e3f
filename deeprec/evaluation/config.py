"""The evaluation settings a run shares (conf/eval/default.yaml): the cut-offs, the users scored at
once, and the validation metric that drives checkpoints and early stopping."""

from __future__ import annotations

from dataclasses import dataclass, field

from deeprec.errors import ConfigError
from deeprec.evaluation.metrics import METRICS


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])  # cut-offs of every metric
    batch_size: int = 1024  # users scored at once
    monitor: str = "ndcg@10"  # valid/<monitor> drives checkpoints and early stopping
    patience: int = 10  # epochs without a rise of more than min_delta before early stopping (0: off)
    min_delta: float = 0.0001  # the smallest rise of valid/<monitor> that counts as an improvement

    def check(self) -> "EvalConfig":
        """ConfigError naming the key when a value cannot work."""
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"eval.ks={self.ks} must list cut-offs of at least 1")
        if self.batch_size < 1 or self.patience < 0 or self.min_delta < 0:
            raise ConfigError(f"eval.batch_size={self.batch_size} must be >= 1, eval.patience={self.patience} >= 0 "
                              f"and eval.min_delta={self.min_delta} >= 0")
        name, _, k = self.monitor.partition("@")
        if name not in METRICS or not k.isdigit():
            raise ConfigError(f"eval.monitor={self.monitor!r} is not a metric@k such as ndcg@10 (metrics: {', '.join(METRICS)})")
        if int(k) not in self.ks:
            raise ConfigError(f"eval.monitor={self.monitor}: {k} is not one of eval.ks={self.ks}; "
                              f"monitor one of them or add {k} to eval.ks")
        return self
