"""The service's settings (conf/serve.yaml), validated by these dataclasses so a typo fails at start."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from deeprec.config import check_at_least, check_choice
from deeprec.errors import ConfigError

WAL_SYNC = ("full", "normal")
FALLBACKS = ("popularity",)
UNSET = ("", "???", None)  # a path key left empty, or at conf/serve.yaml's ??? (Hydra's missing value)


def default_event_rewards() -> dict[str, float]:
    return {"view": 1.0, "click": 1.0, "enroll": 1.0, "complete": 1.0, "like": 1.0, "skip": 0.0, "dismiss": 0.0}


@dataclass
class ExplorationConfig:
    epsilon: float = 0.0  # per position: a uniform random eligible item with this probability (0: the ranking as is)
    seed: int = 0  # seeds the exploration draws


@dataclass
class WalConfig:
    sync: str = "full"  # full: fsync every group commit (survives power loss) | normal: survives kill -9 only
    group_max_events: int = 20000  # events written in one transaction at most


@dataclass
class SnapshotConfig:
    every_events: int = 200000  # snapshot after this many applied events ...
    every_seconds: float = 300.0  # ... or this long after the last one, whichever comes first (when events arrived)
    keep: int = 2  # snapshots kept in state_dir/snapshots (the newest ones)


@dataclass
class LimitsConfig:
    max_body_bytes: int = 1048576  # a larger request body is refused with 413
    max_batch_events: int = 5000  # events in one /feedback request
    max_k: int = 100  # /recommend k must be within 1..max_k
    max_id_length: int = 256  # characters of an event, user, item or decision id


@dataclass
class ServeConfig:
    ckpt: str = ""  # a deeprec checkpoint of any model, loaded with weights_only=True
    state_dir: str = ""  # the write-ahead log (events.sqlite) and snapshots/ of this process
    host: str = "127.0.0.1"  # loopback by default; another address only when asked for
    port: int = 8080
    token: str | None = None  # bearer token required by /feedback and /admin/*; null: $DEEPREC_SERVE_TOKEN or none
    export: str | None = None  # a folder: write the log as events.parquet + decisions.parquet and exit
    route_key: bool = False  # behind a sharding proxy: requests carry ?user_id=, which must match the body
    threads: int = 1  # torch intra-op threads of the scoring / update code
    replay_batch: int = 50000  # events per learn_online call when replaying the log at start
    fallback: str = "popularity"  # what users without state get: the checkpoint's most popular unseen items
    event_rewards: dict[str, float] = field(default_factory=default_event_rewards)  # "event" name -> reward
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    wal: WalConfig = field(default_factory=WalConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log_level: str = "info"

    def check(self) -> "ServeConfig":
        """Values the types cannot check, one sentence each naming the key (export=DIR needs state_dir only)."""
        if self.state_dir in UNSET:
            raise ConfigError("deeprec-serve needs state_dir=DIR (and ckpt=PATH to serve)")
        if self.export is not None:
            return self  # the export reads the log in state_dir; nothing is served
        if self.ckpt in UNSET:
            raise ConfigError("deeprec-serve needs ckpt=PATH")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port={self.port} is not valid; give 0..65535")
        if not 0.0 <= self.exploration.epsilon <= 1.0:
            raise ConfigError(f"exploration.epsilon={self.exploration.epsilon} is not valid; give a probability in [0, 1]")
        check_choice(self.wal.sync, WAL_SYNC, "wal.sync")
        check_choice(self.fallback, FALLBACKS, "fallback")
        for key in ("threads", "replay_batch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1")
        check_at_least(self.wal, ("group_max_events",), prefix="wal")
        check_at_least(self.snapshot, ("every_events", "keep"), prefix="snapshot")
        check_at_least(self.limits, ("max_body_bytes", "max_batch_events", "max_k", "max_id_length"), prefix="limits")
        if not self.snapshot.every_seconds > 0:
            raise ConfigError(f"snapshot.every_seconds={self.snapshot.every_seconds} is not valid; give seconds > 0")
        bad = {name: value for name, value in self.event_rewards.items() if not math.isfinite(value)}
        if bad:
            raise ConfigError(f"event_rewards: {bad} are not finite numbers")
        return self
