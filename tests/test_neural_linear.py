"""Neural-linear LinUCB: arm features = the item embeddings of a trained deep model's checkpoint.

The head's scores are checked against a per-user float64 ridge computed here with NumPy from the
embeddings read back out of the checkpoint, and the planted structure must survive into the ranking.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deeprec.bandits.recommender import LinUCBRecommender
from deeprec.checkpoint import save_checkpoint
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError
from deeprec.models.autoencoder import AutoencoderRecommender
from deeprec.models.ncf import NCF
from test_ncf import block_share, one_thread, planted_blocks, quiet_trainer  # noqa: F401

DEEP = {
    "ncf": lambda n_users, n_items: NCF(n_users, n_items, gmf_dim=8, mlp_dim=8, mlp_layers=[16, 8], batch_size=64, lr=0.01, seed=1),
    "autoencoder": lambda n_users, n_items: AutoencoderRecommender(n_users, n_items, hidden_dims=[16], latent_dim=8,
                                                                   batch_size=16, lr=0.01, seed=1),
}


@pytest.fixture(scope="module")
def blocks():
    return from_frame(planted_blocks(), "planted blocks")


def reference_ucb(x: np.ndarray, users: np.ndarray, items: np.ndarray, reward: np.ndarray, n_users: int,
                  alpha: float, lam: float) -> np.ndarray:
    """[n_users, n_items] per-user ridge UCB in float64, one np.linalg.solve per user (the slow, plain way)."""
    out = np.zeros((n_users, len(x)))
    for u in range(n_users):
        xs, r = x[items[users == u]], reward[users == u]
        a = lam * np.eye(x.shape[1]) + xs.T @ xs
        inv = np.linalg.inv(a)
        theta = inv @ xs.T @ r
        out[u] = x @ theta + alpha * np.sqrt(np.einsum("jd,de,je->j", x, inv, x))
    return out


@pytest.mark.parametrize("name", sorted(DEEP))
def test_linucb_on_checkpoint_embeddings_equals_per_user_ridge(name, blocks, tmp_path):
    untrained = DEEP[name](blocks.n_users, blocks.n_items)
    save_checkpoint(untrained, blocks, tmp_path / "untrained.ckpt")
    deep = DEEP[name](blocks.n_users, blocks.n_items)
    deep.fit(blocks, trainer=quiet_trainer(5))
    path = tmp_path / f"{name}.ckpt"
    save_checkpoint(deep, blocks, path)
    embeddings = deep.item_embeddings().double().numpy()

    head = LinUCBRecommender(blocks.n_users, blocks.n_items, features="embeddings", feature_path=str(path),
                             reward="rating", alpha=0.5, lam=1.0, dtype="float64").fit(blocks)
    train = blocks.rows(("train",))
    want = reference_ucb(embeddings, train["user"].to_numpy(), train["item"].to_numpy(),
                         train["rating"].to_numpy(np.float64), blocks.n_users, alpha=0.5, lam=1.0)
    got = head.score(torch.arange(blocks.n_users)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # score() returns float32
    # The learned embeddings carry the planted halves into the bandit's ranking; the same head on the
    # untrained model's (random) embeddings does not.
    baseline = LinUCBRecommender(blocks.n_users, blocks.n_items, features="embeddings", reward="rating",
                                 feature_path=str(tmp_path / "untrained.ckpt"), alpha=0.5).fit(blocks)
    assert block_share(head, blocks) > block_share(baseline, blocks) + 0.1


def test_sequence_models_expose_item_embeddings():
    from deeprec.models.attention import AttentionRanker
    from deeprec.models.lstm import LSTMRecommender

    for model in (LSTMRecommender(5, 7, embedding_dim=4, hidden_dim=4), AttentionRanker(5, 7, embedding_dim=4)):
        emb = model.item_embeddings()
        assert emb.shape == (7, 4) and not emb.requires_grad


def test_embeddings_need_a_checkpoint_path():
    with pytest.raises(ConfigError, match="feature_path"):
        LinUCBRecommender(3, 4, features="embeddings")
