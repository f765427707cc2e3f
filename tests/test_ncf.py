"""NCF: exact negative sampling, scoring against a naive concat-MLP reference, planted-block ranking
for GMF / MLP / NeuMF with BCE and BPR, NeuMF pre-training, rating weights, deeprec-train round trip
and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from deeprec.baselines.pop import Popularity
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.ranking import full_ranking_topk
from deeprec.models.ncf import NCF, negative_sampling_keys, sample_negatives

SMALL = dict(gmf_dim=8, mlp_dim=8, mlp_layers=[16, 8], lr=0.02, batch_size=64, num_negatives=4)


def planted_blocks(n_users=60, n_items=40, per_user=10, seed=0):
    """Even users take items of the first half only, odd users of the second half.

    Each user has `per_user` distinct items of their block in random order: 7 train, 1 valid, rest
    test. A model that learned the structure ranks the user's own block on top.
    """
    rng = np.random.default_rng(seed)
    half = n_items // 2
    picks = np.argsort(rng.random((n_users, half)), axis=1)[:, :per_user]
    items = picks + np.where(np.arange(n_users) % 2 == 0, 0, half)[:, None]
    position = np.tile(np.arange(per_user), n_users)
    split = np.where(position < 7, "train", np.where(position < 8, "valid", "test"))
    return pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), per_user),
        "item_id": items.ravel(),
        "rating": rng.integers(1, 6, n_users * per_user).astype(float),
        "timestamp": 1e9 + 60.0 * position,
        "split": split,
    })


def quiet_trainer(epochs):
    return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, deterministic=True)


def block_share(model, data, k=10):
    """Share of each user's top-k (train items excluded) that lies in the user's own block."""
    users = np.arange(data.n_users)
    _, top = full_ranking_topk(model.score, users, k, exclude=data.matrix("train", binary=True))
    item_block = (data.item_ids.astype(int) >= data.n_items // 2)[top.numpy()]
    user_block = (data.user_ids.astype(int) % 2 == 1)[:, None]
    return float((item_block == user_block).mean())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (two threads on a busy 2-core machine ran 20x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def blocks():
    return from_frame(planted_blocks(), "planted-blocks")


def test_negative_sampler_is_uniform_over_non_positives():
    # 3 users x 6 items; user 0 has {1, 4}, user 1 has nothing, user 2 has {0, 1, 2, 3, 5}.
    positives = [[1, 4], [], [0, 1, 2, 3, 5]]
    indptr = torch.tensor([0, 2, 2, 7])
    indices = torch.tensor([1, 4, 0, 1, 2, 3, 5])
    keys = negative_sampling_keys(indptr, indices, 6)
    torch.manual_seed(0)
    users = torch.tensor([0, 1, 2]).repeat(4000)
    drawn = sample_negatives(users, 5, indptr, keys, 6)
    for u, pos in enumerate(positives):
        got = drawn[users == u].reshape(-1)
        free = [i for i in range(6) if i not in pos]  # brute-force complement
        counts = torch.bincount(got, minlength=6).double() / len(got)
        assert set(got.unique().tolist()) == set(free)
        assert torch.allclose(counts[free], torch.full((len(free),), 1.0 / len(free), dtype=torch.float64), atol=0.01)


def naive_logits(model: NCF, users, items):
    """Reference: the paper's formulas with explicit concatenation, one (user, item) pair a row."""
    parts = []
    if model.uses_gmf:
        parts.append(model.gmf_user.weight[users] * model.gmf_item.weight[items])
    if model.uses_mlp:
        hidden = torch.cat([model.mlp_user.weight[users], model.mlp_item.weight[items]], 1)
        for layer in model.mlp:
            hidden = torch.relu(hidden @ layer.weight.T + layer.bias)
        parts.append(hidden)
    return (torch.cat(parts, 1) @ model.output.weight.T + model.output.bias).squeeze(1)


@pytest.mark.parametrize("variant", ["gmf", "mlp", "neumf"])
def test_score_all_items_matches_the_naive_reference(variant):
    torch.manual_seed(1)
    model = NCF(n_users=7, n_items=11, seed=0, variant=variant, score_memory_mb=1, **SMALL).eval()
    for p in model.parameters():  # move off the tiny initialisation so every term matters
        torch.nn.init.normal_(p, std=0.5)
    users = torch.tensor([3, 0, 6, 3])
    scores = model.score(users)
    assert scores.shape == (4, 11)
    pairs_u = users.repeat_interleave(11)
    pairs_i = torch.arange(11).repeat(4)
    with torch.no_grad():
        want = naive_logits(model, pairs_u, pairs_i).view(4, 11)
    assert torch.allclose(scores, want, atol=1e-5)


def test_score_chunks_users_to_bound_memory():
    # 1 MB over [chunk, 3000 items, 64 wide] float32 activations (x2) -> 1 user a chunk: same scores.
    torch.manual_seed(0)
    small = NCF(n_users=5, n_items=3000, seed=0, variant="mlp", mlp_layers=[64], score_memory_mb=1).eval()
    large = NCF(n_users=5, n_items=3000, seed=0, variant="mlp", mlp_layers=[64], score_memory_mb=1024).eval()
    large.load_state_dict(small.state_dict())
    users = torch.arange(5)
    assert torch.allclose(small.score(users), large.score(users), atol=1e-6)
    auto = NCF(n_users=5, n_items=3000, seed=0, variant="mlp", mlp_layers=[64]).eval()  # score_memory_mb=0
    auto.load_state_dict(small.state_dict())
    assert auto.score_memory_mb(torch.device("cpu")) == 16 and auto.score_memory_mb(torch.device("cuda")) == 256
    assert torch.allclose(auto.score(users), large.score(users), atol=1e-6)
    with pytest.raises(ConfigError, match="score_memory_mb=-1"):
        NCF(n_users=5, n_items=3, score_memory_mb=-1)


@pytest.mark.parametrize("variant,loss", [("gmf", "bce"), ("mlp", "bpr"), ("neumf", "bce"), ("neumf", "bpr")])
def test_learns_planted_blocks_far_above_pop_and_random(blocks, variant, loss):
    pl.seed_everything(0, verbose=False)
    model = NCF(blocks.n_users, blocks.n_items, seed=0, variant=variant, loss=loss, **SMALL)
    model.fit(blocks, trainer=quiet_trainer(15))
    model.eval()
    # Random and pop put about half of the top 10 in the wrong block.
    assert block_share(model, blocks) > 0.9
    assert block_share(Popularity(blocks.n_users, blocks.n_items).fit(blocks), blocks) < 0.75
    ncf = evaluate_recommender(model, blocks, "test")["ndcg@10"]
    pop = evaluate_recommender(Popularity(blocks.n_users, blocks.n_items).fit(blocks), blocks, "test")["ndcg@10"]
    # Perfect block knowledge with a random order inside the 12 unseen block items gives ~0.38;
    # a random order over all 32 unseen items ~0.17.
    assert ncf > 0.3 and ncf > pop + 0.1


def test_one_step_reaches_every_parameter(blocks):
    model = NCF(blocks.n_users, blocks.n_items, seed=0, variant="neumf", **SMALL)
    model.prepare(blocks)
    batch = next(iter(model.train_dataloader_for(blocks)))
    model.training_step(batch, 0).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_rating_weights_are_ratings_over_their_mean(blocks):
    model = NCF(blocks.n_users, blocks.n_items, seed=0, rating_weights=True, **SMALL)
    model.prepare(blocks)
    users, items, weights = model.training_rows
    train = blocks.rows("train")
    lookup = {(u, i): r for u, i, r in zip(train["user"], train["item"], train["rating"])}
    want = np.array([lookup[(int(u), int(i))] for u, i in zip(users, items)]) / train["rating"].mean()
    assert np.allclose(weights.numpy(), want, rtol=1e-5)
    unweighted = NCF(blocks.n_users, blocks.n_items, seed=0, **SMALL)
    unweighted.prepare(blocks)
    assert torch.equal(unweighted.training_rows[2], torch.ones(len(users)))


def test_zero_ratings_are_weak_positives_or_negatives_by_the_rule(blocks):
    frame = planted_blocks()
    zero = (frame["split"] == "train") & (np.arange(len(frame)) % 3 == 0)
    frame.loc[zero, "rating"] = 0.0  # the step penalty's zeros: rating_weights used to refuse them
    data = from_frame(frame, "zeros")
    train = data.rows("train")
    positive_mean = train.loc[train["rating"] > 0, "rating"].mean()
    weak = NCF(data.n_users, data.n_items, seed=0, rating_weights=True, zero_weight=0.25, **SMALL)
    weak.prepare(data)
    users, items, weights = weak.training_rows
    lookup = {(u, i): r for u, i, r in zip(train["user"], train["item"], train["rating"])}
    ratings = np.array([lookup[(int(u), int(i))] for u, i in zip(users, items)])
    assert len(users) == len(train)  # every interaction stays a positive
    assert np.allclose(weights.numpy(), np.where(ratings > 0, ratings / positive_mean, 0.25), rtol=1e-5)
    negative = NCF(data.n_users, data.n_items, seed=0, rating_weights=True, zero_rating="negative", **SMALL)
    negative.prepare(data)
    users, items, weights = negative.training_rows
    assert len(users) == int((train["rating"] > 0).sum()) and (weights > 0).all()
    # A 0-rated item is no positive, so the exact sampler may draw it as the user's negative.
    zero_pairs = set(zip(train.loc[train["rating"] == 0, "user"], train.loc[train["rating"] == 0, "item"]))
    torch.manual_seed(0)
    who = torch.tensor(sorted({u for u, _ in zero_pairs}))
    drawn = sample_negatives(who.repeat_interleave(200), 1, negative._indptr, negative._keys, data.n_items)[:, 0]
    assert zero_pairs & set(zip(who.repeat_interleave(200).tolist(), drawn.tolist()))
    positives = set(zip(users.tolist(), items.tolist()))
    assert not positives & set(zip(who.repeat_interleave(200).tolist(), drawn.tolist()))


def test_bce_and_bpr_losses_match_hand_formulas(blocks):
    model = NCF(blocks.n_users, blocks.n_items, seed=0, variant="gmf", num_negatives=3, rating_weights=True,
                **{k: v for k, v in SMALL.items() if k != "num_negatives"})
    model.prepare(blocks)
    batch = next(iter(model.train_dataloader_for(blocks)))
    users, items, weights = model.rows_of(batch)
    for loss in ("bce", "bpr"):
        model.config.loss = loss
        torch.manual_seed(5)
        got = model.training_step(batch, 0)
        torch.manual_seed(5)
        negatives = sample_negatives(users, 3, model._indptr, model._keys, model.n_items)
        pos = naive_logits(model, users, items)
        neg = naive_logits(model, users.repeat_interleave(3), negatives.reshape(-1)).view(-1, 3)
        if loss == "bce":
            want = (-(weights * torch.log(torch.sigmoid(pos))) - torch.log(1 - torch.sigmoid(neg)).sum(1)) / 4
        else:
            want = -(weights[:, None] * torch.log(torch.sigmoid(pos[:, None] - neg)))
        assert torch.allclose(got, want.mean(), atol=1e-5)


def test_neumf_pretraining_starts_from_the_alpha_mix_of_its_towers(blocks):
    model = NCF(blocks.n_users, blocks.n_items, seed=0, variant="neumf", pretrain=True, pretrain_epochs=2,
                pretrain_alpha=0.3, **SMALL)
    towers = model.pretrain_towers(blocks)
    model.eval()
    users = torch.arange(blocks.n_users)
    # The logit is linear in the output layer: NeuMF = 0.3 GMF + 0.7 MLP exactly, before any NeuMF step.
    want = 0.3 * towers["gmf"].eval().score(users) + 0.7 * towers["mlp"].eval().score(users)
    assert torch.allclose(model.score(users), want, atol=1e-5)
    assert block_share(towers["gmf"], blocks) > 0.6  # the towers did train


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.variant='deep'"):
        NCF(3, 4, variant="deep")
    with pytest.raises(ConfigError, match="model.loss"):
        NCF(3, 4, loss="hinge")
    with pytest.raises(ConfigError, match="num_negatives"):
        NCF(3, 4, num_negatives=0)


NCF_SMALL_OVERRIDES = ("model.gmf_dim=8", "model.mlp_dim=8", "model.mlp_layers=[16,8]", "model.batch_size=64", "model.lr=0.01")


def train_run(tmp_path, csv, model, name, epochs, overrides, resume=False):
    """deeprec-train's programmatic entry on the CSV: (test metrics, run_dir, cfg)."""
    from hydra import compose, initialize_config_module

    from deeprec.cli.train import train

    run_dir = tmp_path / name
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=interactions", f"data.path={csv}", f"model={model}", f"run_dir={run_dir}",
                                          "seed=3", f"trainer.max_epochs={epochs}", f"resume={str(resume).lower()}", *overrides])
    return train(cfg), run_dir, cfg


def check_round_trip_and_resume(tmp_path, model, cls, overrides):
    """Train 4 epochs; best.ckpt reloads to the same metrics and scores; 2 epochs + resume to 4 gives
    the same metrics and best weights. Returns (run_dir, cfg, the loaded best model)."""
    from deeprec.checkpoint import load_recommender
    from deeprec.cli.common import load_data

    csv = tmp_path / "blocks.csv"
    planted_blocks().to_csv(csv, index=False)
    straight, run_dir, cfg = train_run(tmp_path, csv, model, "straight", 4, overrides)
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(straight)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    loaded, meta = load_recommender(run_dir / "checkpoints" / "best.ckpt")
    assert isinstance(loaded, cls) and meta["model"] == model
    loaded.eval()
    data = load_data(cfg.data)
    assert evaluate_recommender(loaded, data, "test")["ndcg@10"] == pytest.approx(straight["ndcg@10"], abs=1e-12)
    # A second load scores identically (after the evaluation, which changed the history it observes).
    twice, _ = load_recommender(run_dir / "checkpoints" / "best.ckpt")
    loaded.observe(data, "train")
    users = torch.arange(data.n_users)
    assert torch.equal(loaded.score(users), twice.eval().score(users))
    # Stopped after 2 epochs, resumed to 4: the same best weights and metrics as the straight run.
    train_run(tmp_path, csv, model, "resumed", 2, overrides)
    resumed, resumed_dir, _ = train_run(tmp_path, csv, model, "resumed", 4, overrides, resume=True)
    assert resumed == straight
    for name in ("best.ckpt", "last.ckpt"):
        a = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        b = torch.load(resumed_dir / "checkpoints" / name, weights_only=True)
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # last.ckpt is the final epoch (resume continues from there), whichever epoch was best.
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    return run_dir, cfg, twice


def test_deeprec_train_checkpoint_round_trip_and_exact_resume(tmp_path):
    check_round_trip_and_resume(tmp_path, "ncf", NCF, NCF_SMALL_OVERRIDES)
