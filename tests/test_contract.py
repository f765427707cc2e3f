"""The Recommender contract, run over every name in the model registry (as implicit's
RecommenderBaseTestMixin and LensKit's ScorerTests do): a new model, one file plus one YAML in
conf/model/, is covered here without editing this file.

For each model on a tiny dataset: the declared interface (typed config = the YAML's keys, init_args,
the run's seed, eval/train, the optional capabilities), check_data, fit, score shape and dtype, seen items
excluded from recommend() against a brute-force ranking, the checkpoint round trip, the shared
evaluation and batch scoring through the interface, and seed determinism.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml
from omegaconf import OmegaConf

from deeprec.checkpoint import load_recommender, read_checkpoint, save_checkpoint
from deeprec.cli.common import build_model
from deeprec.data.interactions import from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.recommender import ModelConfig, Recommender
from deeprec.registry import MODELS, model_class
from deeprec.scoring.batch import ScoreConfig, score_users

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
K = 4
# Settings a model needs on generic data (interactions + item features), on top of its YAML.
NEEDS = {"linucb": {"features": "item_features", "reward": "rating"}}


def tiny_data(n_users: int = 24, n_items: int = 14, seed: int = 0):
    """Every user 6 time-ordered items (ratings 1..5): 4 train, 1 valid, 1 test; 3 numeric item features."""
    rng = np.random.default_rng(seed)
    items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :6]
    users = np.repeat(np.arange(n_users), 6)
    frame = pd.DataFrame({
        "user_id": [f"u{u:03d}" for u in users],
        "item_id": [f"i{i:03d}" for i in items.ravel()],
        "rating": rng.integers(1, 6, users.size).astype(float),
        "timestamp": np.tile(np.arange(6) * 3600.0, n_users) + users * 10.0,
        "split": np.tile(["train"] * 4 + ["valid", "test"], n_users),
    })
    features = pd.DataFrame(rng.random((n_items, 3)), index=[f"i{i:03d}" for i in range(n_items)],
                            columns=["f0", "f1", "f2"])
    return from_frame(frame, "contract", item_features=features)


def section(name: str):
    """conf/model/<name>.yaml plus what the model needs on this data."""
    return OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), NEEDS.get(name, {}))


def fitted(name: str, data, seed: int = 3) -> Recommender:
    """As deeprec-train builds it: the global RNG seeded with the run's seed, then the model with it."""
    pl.seed_everything(seed, verbose=False)
    model = build_model(section(name), data, seed=seed)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=True) if model.uses_trainer else None
    return model.fit(data, trainer=trainer).eval()


@pytest.fixture(scope="module")
def data():
    return tiny_data()


@pytest.fixture(scope="module")
def models(data):
    torch.set_num_threads(1)
    return {name: fitted(name, data) for name in MODELS}


def brute_force_topk(scores: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """Top-k score values per user by sorting each row in Python, seen items removed, -inf padded."""
    out = np.full((len(scores), k), -np.inf)
    for u, row in enumerate(scores):
        values = sorted((float(v) for v, s in zip(row, seen[u]) if not s), reverse=True)[:k]
        out[u, : len(values)] = values
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declares_the_interface(name, data):
    cls = model_class(name)
    assert issubclass(cls, Recommender) and cls.name == name
    assert issubclass(cls.config_class, ModelConfig) and cls.config_class().name == name
    keys = set(yaml.safe_load((CONF / f"{name}.yaml").read_text()))
    assert keys == {f.name for f in dataclasses.fields(cls.config_class)}  # the YAML is the schema
    model = build_model(section(name), data, seed=11)
    assert isinstance(model.config, cls.config_class) and model.seed == 11  # the run's seed reaches the model
    args = model.init_args()
    assert args["seed"] == 11 and (args["n_users"], args["n_items"]) == (data.n_users, data.n_items)
    assert json.loads(json.dumps(args)) == args  # plain, JSON-able values only
    assert cls.from_init_args({**args, "retired_key": 1}).init_args() == args  # an older checkpoint's key is dropped
    assert model.eval() is model and model.train() is model
    assert isinstance(model.uses_trainer, bool)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_check_data_accepts_the_data_fit_trains_and_changes_nothing(name, data):
    # deeprec-train and deeprec-compare call check_data on every model before any of them trains
    model = build_model(section(name), data, seed=3)
    before = model.init_args()
    assert model.check_data(data) is None and model.init_args() == before


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_and_excludes_seen_items(name, models, data):
    model = models[name]
    users = torch.arange(data.n_users)
    scores = model.score(users)
    assert scores.shape == (data.n_users, data.n_items) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    seen = data.matrix(("train", "valid"), binary=True)
    values, items = model.recommend(users.numpy(), K, exclude=seen, batch_size=7)
    assert items.shape == (data.n_users, K) and items.dtype == torch.int64
    dense_seen = seen.toarray() > 0
    assert not dense_seen[np.arange(data.n_users)[:, None], items.numpy()].any()  # no seen item recommended
    # recommend() scores users in chunks of 7: a model may round differently per batch (attention trims
    # histories to the batch's longest), so values agree to float32 rounding, not bit for bit
    np.testing.assert_allclose(values.numpy(), brute_force_topk(scores.numpy(), dense_seen, K), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.numpy()[np.arange(data.n_users)[:, None], items.numpy()], values.numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checkpoint_round_trip_scores_equal(name, models, data, tmp_path):
    model = models[name]
    save_checkpoint(model, data, tmp_path / "model.ckpt")
    loaded, meta = load_recommender(tmp_path / "model.ckpt", expect_model=name)
    assert type(loaded) is type(model) and meta["init_args"] == model.init_args()
    assert loaded.config == model.config and loaded.seed == model.seed
    users = torch.arange(data.n_users)
    assert torch.equal(loaded.eval().score(users), model.score(users))
    assert read_checkpoint(tmp_path / "model.ckpt")["deeprec"]["model"] == name
    embeddings = loaded.item_embeddings()
    assert embeddings is None or (embeddings.dim() == 2 and embeddings.shape[0] == data.n_items)
    explained = loaded.explain(users[:3], torch.tensor([0, 1, 2]), top=2)
    if explained is not None:
        history, weights = explained
        assert history.shape == weights.shape == (3, 2) and history.dtype == torch.int64


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluation_and_batch_scoring_through_the_interface(name, models, data, tmp_path):
    model = models[name]
    save_checkpoint(model, data, tmp_path / "model.ckpt")
    copy, _ = load_recommender(tmp_path / "model.ckpt")  # evaluation observes train + valid: not the shared model
    metrics = evaluate_recommender(copy.eval(), data, "test", ks=(2, K))
    assert metrics["n_users_evaluated"] == data.n_users and metrics["n_users_skipped"] == 0
    for key in ("precision@2", f"recall@{K}", f"ndcg@{K}", f"hit@{K}", f"coverage@{K}"):
        assert 0.0 <= metrics[key] <= 1.0
    out = tmp_path / "scores.parquet"
    summary = score_users(ScoreConfig(ckpt=str(tmp_path / "model.ckpt"), output=str(out), k=K, progress=False))
    assert summary["users_scored_by_model"] == data.n_users
    written = pd.read_parquet(out)
    seen = data.matrix(("train", "valid", "test"), binary=True)  # a checkpoint excludes everything it saw
    _, items = model.recommend(np.arange(data.n_users), K, exclude=seen)
    want = {(str(data.user_ids[u]), r + 1): str(data.item_ids[i]) for u, row in enumerate(items.tolist())
            for r, i in enumerate(row) if i >= 0}
    assert dict(zip(zip(written["user_id"], written["rank"]), written["item_id"])) == want


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_same_seed_gives_the_same_model(name, data):
    users = torch.arange(data.n_users)
    assert torch.equal(fitted(name, data, seed=5).score(users), fitted(name, data, seed=5).score(users))
