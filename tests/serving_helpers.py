"""Helpers of the deeprec-serve tests: tiny checkpoints, an in-process app, a server subprocess."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeprec.checkpoint import save_checkpoint
from deeprec.data.interactions import from_frame
from deeprec.serving import launch


def tiny_data(n_users: int = 40, n_items: int = 25, per_user: int = 5, seed: int = 0, n_features: int = 4):
    """Random interactions with timestamps, ratings 1..5, item features, random splits."""
    rng = np.random.default_rng(seed)
    items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :per_user]
    users = np.repeat(np.arange(n_users), per_user)
    frame = pd.DataFrame({
        "user_id": [f"u{u:03d}" for u in users],
        "item_id": [f"i{i:03d}" for i in items.ravel()],
        "rating": rng.integers(1, 6, size=users.size).astype(float),
        "timestamp": np.tile(np.arange(per_user, dtype=float), n_users) * 60.0 + 1e9,
        "split": rng.choice(["train", "train", "train", "valid", "test"], size=users.size),
    })
    features = pd.DataFrame(rng.random((n_items, n_features)), index=[f"i{i:03d}" for i in range(n_items)])
    return from_frame(frame, "tiny", item_features=features)


def linucb_checkpoint(path: Path, data=None, **config) -> Path:
    """A fitted LinUCB head (float64, item features as arms, ratings as rewards) saved at path."""
    from deeprec.bandits.recommender import LinUCBRecommender

    data = data or tiny_data()
    settings = {"features": "item_features", "reward": "rating", "dtype": "float64", **config}
    model = LinUCBRecommender(n_users=data.n_users, n_items=data.n_items, **settings).fit(data)
    save_checkpoint(model, data, path)
    return path


def serve_config(ckpt: Path, state_dir: Path, **overrides):
    """A checked ServeConfig (dotted keys as nested dicts: {"limits": {"max_k": 5}})."""
    from deeprec.config import validate_section
    from deeprec.serving.config import ServeConfig

    raw = {"ckpt": str(ckpt), "state_dir": str(state_dir), "port": 0, **overrides}
    return validate_section(raw, ServeConfig, "deeprec-serve").check()


@contextmanager
def app_client(ckpt: Path, state_dir: Path, **overrides):
    """(TestClient, Service) of an in-process app: its lifespan (committer, last snapshot) runs."""
    from starlette.testclient import TestClient

    from deeprec.serving.app import create_app
    from deeprec.serving.service import Service

    service = Service(serve_config(ckpt, state_dir, **overrides))
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client, service


def ServerProcess(ckpt: Path, state_dir: Path, *overrides: str, port: int = 0, timeout: float = 90.0):
    """deeprec-serve in a subprocess on `port` (0: a free one), ready when it returns."""
    return launch.ServerProcess.serve(ckpt, state_dir, *overrides, port=port, timeout=timeout)


def free_port() -> int:
    """A port nothing listens on now (the OS's choice for port 0)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def event(event_id, user_id, item_id, reward=1.0, timestamp=1.7e9, **extra) -> dict:
    return {"event_id": str(event_id), "user_id": str(user_id), "item_id": str(item_id), "reward": reward,
            "timestamp": timestamp, **extra}


def linucb_reference(A0: np.ndarray, b0: np.ndarray, features: np.ndarray, users, items, rewards):
    """Per-user ridge sums from scratch: A_u = A0_u + sum x xᵀ, b_u = b0_u + sum r x (float64, a plain loop)."""
    A, b = A0.astype(np.float64).copy(), b0.astype(np.float64).copy()
    for user, item, reward in zip(users, items, rewards):
        x = features[item]
        A[user] += np.outer(x, x)
        b[user] += reward * x
    return A, b


def ucb_scores(A: np.ndarray, b: np.ndarray, features: np.ndarray, alpha: float) -> np.ndarray:
    """x_jᵀθ + α sqrt(x_jᵀ A⁻¹ x_j) for every item j of one user (numpy, float64)."""
    inv = np.linalg.inv(A)
    return features @ (inv @ b) + alpha * np.sqrt(np.einsum("jd,de,je->j", features, inv, features))


def read_snapshot(state_dir: Path) -> dict:
    from deeprec.serving.snapshot import snapshot_files

    seq, path = snapshot_files(Path(state_dir) / "snapshots")[0]
    return torch.load(path, map_location="cpu", weights_only=True)
