"""Mult-DAE / Mult-VAE: CSR densification, planted-block ranking, history observed per split, KL
annealing, the multinomial loss by hand, embeddings (export, projector, group structure),
checkpoints with data-sized buffers, deeprec-train round trip and exact resume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import scipy.sparse as sp
import torch

from deeprec.baselines.pop import Popularity
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.models.autoencoder import AutoencoderRecommender, dense_rows

sys.path.insert(0, str(Path(__file__).parent))
from test_ncf import block_share, check_round_trip_and_resume, one_thread, planted_blocks, quiet_trainer  # noqa: E402,F401

SMALL = dict(hidden_dims=[32], latent_dim=8, dropout=0.3, lr=0.01, batch_size=16, total_anneal_steps=20)


@pytest.fixture(scope="module")
def blocks():
    return from_frame(planted_blocks(), "planted-blocks")


@pytest.fixture(scope="module", params=["dae", "vae"])
def trained(request, blocks):
    pl.seed_everything(0, verbose=False)
    model = AutoencoderRecommender(blocks.n_users, blocks.n_items, seed=0, variant=request.param, **SMALL)
    model.fit(blocks, trainer=quiet_trainer(30))
    return model.eval()


def test_dense_rows_match_scipy():
    matrix = sp.random(9, 13, density=0.3, format="csr", random_state=1, dtype=np.float32)
    matrix.sort_indices()
    users = torch.tensor([4, 0, 8, 4, 2])
    got = dense_rows(users, torch.from_numpy(matrix.indptr.astype(np.int64)),
                     torch.from_numpy(matrix.indices.astype(np.int64)), torch.from_numpy(matrix.data), 13)
    assert np.allclose(got.numpy(), matrix.toarray()[users.numpy()])


def test_learns_planted_blocks_far_above_pop(trained, blocks):
    assert block_share(trained, blocks) > 0.9
    assert block_share(Popularity(blocks.n_users, blocks.n_items).fit(blocks), blocks) < 0.75
    ae = evaluate_recommender(trained, blocks, "test")["ndcg@10"]
    pop = evaluate_recommender(Popularity(blocks.n_users, blocks.n_items).fit(blocks), blocks, "test")["ndcg@10"]
    assert ae > 0.3 and ae > pop + 0.1  # perfect block knowledge, random order inside: ~0.38


def test_scores_come_from_the_observed_history(trained, blocks):
    users = torch.arange(blocks.n_users)
    trained.observe(blocks, ("train", "valid"))
    assert np.array_equal(trained.history_rows(users).numpy(), blocks.matrix(("train", "valid"), binary=True).toarray())
    with_valid = trained.score(users)
    trained.observe(blocks, "train")
    assert np.array_equal(trained.history_rows(users).numpy(), blocks.matrix("train", binary=True).toarray())
    assert not torch.allclose(trained.score(users), with_valid)
    # score = decoder(encoder mean) of the row, computed here by hand through the layers.
    rows = blocks.matrix("train", binary=True).toarray().astype(np.float32)
    hidden = torch.nn.functional.normalize(torch.from_numpy(rows), dim=1)
    with torch.no_grad():
        for layer in [*trained.encoder, *trained.decoder]:
            hidden = layer(hidden)
            if trained.config.variant == "vae" and layer is trained.encoder[-1]:
                hidden = hidden[:, : trained.config.latent_dim]  # the mean half
            elif layer is not trained.decoder[-1] and not (trained.config.variant == "vae" and layer is trained.encoder[-1]):
                hidden = torch.tanh(hidden)
    assert torch.allclose(trained.score(users), hidden, atol=1e-5)


def test_kl_weight_anneals_linearly_to_the_cap(monkeypatch):
    model = AutoencoderRecommender(3, 5, variant="vae", anneal_cap=0.2, total_anneal_steps=100)
    for step, beta in {0: 0.0, 10: 0.1, 20: 0.2, 50: 0.2, 1000: 0.2}.items():
        monkeypatch.setattr(AutoencoderRecommender, "global_step", property(lambda self, s=step: s))
        assert model.kl_weight() == pytest.approx(beta)
    assert AutoencoderRecommender(3, 5, anneal_cap=0.3, total_anneal_steps=0).kl_weight() == 0.3


def test_dae_loss_is_the_multinomial_log_likelihood(blocks):
    model = AutoencoderRecommender(blocks.n_users, blocks.n_items, seed=0, variant="dae", **SMALL).eval()
    model.prepare(blocks)
    batch = next(iter(model.train_dataloader_for(blocks)))
    (users,) = model.rows_of(batch)
    rows = blocks.matrix("train", binary=True).toarray()[users.numpy()]
    logits = model.score(users).numpy()  # eval: no input dropout, as in the loss here
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -(log_softmax * rows).sum(1).mean()
    assert float(model.training_step(batch, 0)) == pytest.approx(want, rel=1e-5)


def test_one_step_reaches_every_parameter(blocks):
    model = AutoencoderRecommender(blocks.n_users, blocks.n_items, seed=0, variant="vae", **SMALL)
    model.prepare(blocks)
    model.training_step(next(iter(model.train_dataloader_for(blocks))), 0).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_user_embeddings_separate_the_planted_groups(trained, blocks):
    trained.observe(blocks, "train")
    z = trained.user_embeddings()
    assert z.shape == (blocks.n_users, trained.config.latent_dim)
    assert trained.item_embeddings().shape == (blocks.n_items, 32)
    assert torch.allclose(trained.user_embeddings(torch.tensor([5, 2])), z[[5, 2]])
    group = torch.from_numpy(blocks.user_ids.astype(int) % 2)
    centred = torch.nn.functional.normalize(z - z.mean(0), dim=1)
    cosine = centred @ centred.T
    same = group[:, None] == group[None, :]
    assert cosine[same].mean() > 0.5 and cosine[~same].mean() < -0.3


def test_export_writes_parquet_and_projector(trained, blocks, tmp_path):
    trained.observe(blocks, "train")
    out = trained.export_embeddings(tmp_path, user_ids=blocks.user_ids, item_ids=blocks.item_ids)
    users = pd.read_parquet(out / "users.parquet")
    items = pd.read_parquet(out / "items.parquet")
    assert list(users.columns) == ["user_id"] + [f"e{k}" for k in range(trained.config.latent_dim)]
    assert users["user_id"].tolist() == [str(u) for u in blocks.user_ids]
    assert np.allclose(users.iloc[:, 1:].to_numpy(), trained.user_embeddings().numpy())
    assert np.allclose(items.iloc[:, 1:].to_numpy(), trained.item_embeddings().numpy())
    projector = (tmp_path / "tensorboard" / "projector_config.pbtxt").read_text()
    assert "user_embeddings" in projector and "item_embeddings" in projector
    assert not list(out.glob(".*tmp"))


def test_state_round_trip_with_a_different_history_size(trained, blocks):
    trained.observe(blocks, ("train", "valid"))
    fresh = AutoencoderRecommender(**trained.init_args())  # empty history buffers
    fresh.load_state_tensors(trained.state_tensors())
    fresh.eval()
    users = torch.arange(blocks.n_users)
    assert torch.equal(fresh.score(users), trained.score(users))
    assert fresh.history_indices.shape == trained.history_indices.shape


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.variant='gan'"):
        AutoencoderRecommender(3, 4, variant="gan")
    with pytest.raises(ConfigError, match="dropout"):
        AutoencoderRecommender(3, 4, dropout=1.0)


AE_SMALL_OVERRIDES = ("model.hidden_dims=[32]", "model.latent_dim=8", "model.batch_size=16", "model.lr=0.01",
                      "model.total_anneal_steps=10")


def test_deeprec_train_round_trip_exact_resume_and_exported_embeddings(tmp_path):
    from deeprec.cli.common import load_data

    run_dir, cfg, best = check_round_trip_and_resume(tmp_path, "autoencoder", AutoencoderRecommender, AE_SMALL_OVERRIDES)
    data = load_data(cfg.data)
    # Embeddings of the best model (its own train history), with the data's own ids, and the projector.
    exported = pd.read_parquet(run_dir / "embeddings" / "users.parquet")
    assert exported["user_id"].tolist() == [str(u) for u in data.user_ids]
    assert np.allclose(exported.iloc[:, 1:].to_numpy(), best.user_embeddings().numpy(), atol=1e-6)
    items = pd.read_parquet(run_dir / "embeddings" / "items.parquet")
    assert items["item_id"].tolist() == [str(i) for i in data.item_ids]
    assert not (run_dir / "tensorboard" / "projector_config.pbtxt").exists()  # export_projector=false (default)
