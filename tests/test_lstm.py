"""LSTMRecommender: learns a planted next-item chain, windows, update_state, sampling, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from deeprec.baselines.pop import Popularity
from deeprec.data.interactions import from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.models.lstm import LSTMRecommender
from deeprec.models.sequence import last_events, ordered_events, sample_items, training_windows

N_ITEMS = 40
SMALL = dict(embedding_dim=32, hidden_dim=32, dropout=0.0, max_len=8, window_stride=4, lr=0.02, batch_size=64)


def chain_frame(n_users=80, seed=0, n_items=N_ITEMS):
    """Users walk a fixed cycle of items (a -> b -> c ...): the next item is a function of the last.

    Each user starts at a random point, takes 6..9 steps one hour apart; the last event is test,
    the one before valid, the rest train.
    """
    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    lengths = rng.integers(6, 10, n_users)
    user = np.repeat(np.arange(n_users), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    start = np.repeat(rng.integers(0, n_items, n_users), lengths)
    item = cycle[(start + step) % n_items]
    pos_from_end = np.repeat(lengths, lengths) - 1 - step
    split = np.where(pos_from_end == 0, "test", np.where(pos_from_end == 1, "valid", "train"))
    frame = pd.DataFrame({"user_id": user, "item_id": item, "timestamp": 1e9 + 3600.0 * step, "split": split})
    return frame, cycle


def successor(cycle, items):
    position = np.argsort(cycle)
    return cycle[(position[np.asarray(items)] + 1) % len(cycle)]


def quiet_trainer(epochs):
    return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, deterministic=True)


class RandomScores:
    """Uniform random scores: the floor every learned model must clear."""

    device = torch.device("cpu")

    def __init__(self, n_items):
        self.n_items = n_items
        self.generator = torch.Generator().manual_seed(0)

    def score(self, users):
        return torch.rand(len(users), self.n_items, generator=self.generator)

    def observe(self, data, splits):
        pass


def fitted_on_chain(cls, params, epochs=25):
    """(data, the cycle in index space, a model of `cls` fitted `epochs` epochs) on the planted chain."""
    frame, cycle = chain_frame()
    data = from_frame(frame, "planted-chain")
    # from_frame sorts ids as strings: map the cycle into index space.
    index_of = {int(i): k for k, i in enumerate(data.item_ids)}
    cycle_idx = np.array([index_of[int(i)] for i in cycle])
    pl.seed_everything(0, verbose=False)
    model = cls(data.n_users, data.n_items, seed=0, **params)
    model.fit(data, trainer=quiet_trainer(epochs))
    model.eval()
    return data, cycle_idx, model


@pytest.fixture(scope="module")
def chain():
    return fitted_on_chain(LSTMRecommender, SMALL)


def test_learns_the_planted_chain_far_better_than_pop_and_random(chain):
    data, _, model = chain
    lstm = evaluate_recommender(model, data, "test")
    pop = evaluate_recommender(Popularity(data.n_users, data.n_items).fit(data), data, "test")
    rand = evaluate_recommender(RandomScores(data.n_items), data, "test")
    # The test item is a deterministic function of the last train+valid item: near-perfect is expected.
    assert lstm["ndcg@10"] > 0.9
    assert lstm["mrr@10"] > 0.85
    assert lstm["ndcg@10"] > pop["ndcg@10"] + 0.5
    assert lstm["ndcg@10"] > rand["ndcg@10"] + 0.5


def test_valid_uses_train_history_and_test_uses_train_plus_valid(chain):
    data, cycle, model = chain
    model.observe(data, ("train",))
    users = torch.arange(data.n_users)
    last_train = model.history_items[users, model.history_lengths[users] - 1].numpy()
    top_valid = model.score(users).argmax(1).numpy()
    assert (top_valid == successor(cycle, last_train)).mean() > 0.9
    model.observe(data, ("train", "valid"))
    last_known = model.history_items[users, model.history_lengths[users] - 1].numpy()
    assert (last_known == successor(cycle, last_train)).all()  # the valid item was appended
    assert (model.score(users).argmax(1).numpy() == successor(cycle, last_known)).mean() > 0.9


def test_update_state_changes_the_next_prediction(chain):
    data, cycle, model = chain
    model.observe(data, ("train",))
    users = torch.arange(data.n_users)
    last = model.history_items[users, model.history_lengths[users] - 1].numpy()
    before = model.score(users).argmax(1).numpy()
    # Two new events per user continuing the walk, an hour apart (as in training), given in reverse
    # time order: update_state must order them; the model must now predict the step after both.
    first, second = successor(cycle, last), successor(cycle, successor(cycle, last))
    t0 = model.last_time[users] + 3600.0
    model.update_state(torch.cat([users, users]), torch.from_numpy(np.concatenate([second, first])),
                       torch.cat([t0 + 3600.0, t0]))
    after = model.score(users).argmax(1).numpy()
    assert (after == successor(cycle, second)).mean() > 0.9
    assert (after != before).mean() > 0.9
    assert torch.equal(model.last_time[users], t0 + 3600.0)
    model.observe(data, ("train",))  # back to the train history: the old prediction returns
    assert (model.score(users).argmax(1).numpy() == before).all()


def test_update_state_equals_observing_the_same_events(chain):
    data, _, model = chain
    model.observe(data, ("train", "valid"))
    want = model.score(torch.arange(data.n_users))
    model.observe(data, ("train",))
    valid = data.rows("valid")
    model.update_state(valid["user"].to_numpy(), valid["item"].to_numpy(), valid["timestamp"].to_numpy())
    assert torch.allclose(model.score(torch.arange(data.n_users)), want, atol=1e-5)


def naive_append(history, gaps, last_time, events, max_len):
    """Reference for update_state: per-user Python lists, events appended in (time, input) order."""
    history = [list(h) for h in history]
    gaps = [list(g) for g in gaps]
    last_time = list(last_time)
    order = sorted(range(len(events)), key=lambda e: (events[e][0], math.inf if math.isnan(events[e][2]) else events[e][2], e))
    for e in order:
        user, item, time = events[e]
        previous = last_time[user]
        gap = 0.0 if (math.isnan(previous) or math.isnan(time)) else max(time - previous, 0.0)
        history[user].append(item)
        gaps[user].append(gap)
        if not math.isnan(time):
            last_time[user] = time if math.isnan(previous) else max(previous, time)
    return [h[-max_len:] for h in history], [g[-max_len:] for g in gaps], last_time


def test_update_state_matches_a_naive_per_user_append(rng):
    max_len = 4
    model = LSTMRecommender(n_users=5, n_items=9, seed=0, max_len=max_len, window_stride=2)
    start_hist = [[1, 2], [], [3, 4, 5, 6], [7], [8, 0, 1]]
    start_time = [100.0, float("nan"), 50.0, 10.0, 400.0]
    for u, h in enumerate(start_hist):
        model.history_items[u, : len(h)] = torch.tensor(h, dtype=torch.int64)
        model.history_lengths[u] = len(h)
    model.last_time.copy_(torch.tensor(start_time, dtype=torch.float64))
    events = [(0, 5, 160.0), (2, 1, 90.0), (0, 7, 130.0), (1, 2, 5.0), (3, 3, float("nan")), (2, 8, 70.0),
              (2, 0, 70.0), (4, 4, 1000.0), (2, 2, 200.0)]
    model.update_state([e[0] for e in events], [e[1] for e in events], [e[2] for e in events])
    want_hist, want_gaps, want_time = naive_append(start_hist, [[0.0] * len(h) for h in start_hist],
                                                   start_time, events, max_len)
    for u in range(5):
        n = int(model.history_lengths[u])
        assert model.history_items[u, :n].tolist() == want_hist[u]
        assert (model.history_items[u, n:] == 9).all()  # padding index = n_items
        assert model.history_gaps[u, :n].tolist() == pytest.approx(want_gaps[u])
        got = float(model.last_time[u])
        assert (math.isnan(got) and math.isnan(want_time[u])) or got == want_time[u]


def test_training_windows_make_every_position_a_target_with_its_context():
    # Two users: 7 events (items 10..16) and 1 event (no target); max_len 3.
    items = np.array([10, 11, 12, 13, 14, 15, 16, 20])
    gaps = np.arange(8, dtype=np.float32)
    starts = np.array([0, 7, 8])
    ratings = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.float32)
    for stride, want in ((3, [11, 12, 13, 14, 15, 16]), (2, [11, 12, 12, 13, 14, 14, 15, 16])):
        inputs, input_gaps, targets, weights = training_windows(items, gaps, starts, max_len=3, stride=stride, weights=ratings)
        in_loss = weights > 0
        assert (in_loss == (inputs >= 0)).all()  # every position of every window is a target
        # stride = max_len: disjoint windows, each target once; a smaller stride repeats targets
        assert sorted(targets[in_loss].tolist()) == want
        for w, c in zip(*np.nonzero(in_loss)):
            target = targets[w, c]
            assert inputs[w, c] == target - 1  # the input at the same column is the item just before
            context = inputs[w, : c + 1]
            assert list(context) == list(range(target - len(context), target))
            assert input_gaps[w, c] == gaps[target - 1 - 10]
            assert weights[w, c] == ratings[target - 10]  # the target event's weight


def test_last_events_matches_python_slicing():
    values = np.array([5, 6, 7, 8, 9, 1])
    starts = np.array([0, 4, 4, 6])  # user 0: 4 events, user 1: none, user 2: 2 events
    matrix, lengths = last_events(values, starts, 3, pad=-1)
    assert matrix.tolist() == [[6, 7, 8], [-1, -1, -1], [9, 1, -1]]
    assert lengths.tolist() == [3, 0, 2]


def test_ordered_events_gaps_are_within_user_and_zero_first():
    frame = pd.DataFrame({"user_id": [1, 1, 2, 1, 2], "item_id": [1, 2, 3, 4, 5],
                          "timestamp": [100.0, 50.0, 10.0, 400.0, np.nan], "split": ["train"] * 5})
    data = from_frame(frame, "gaps")
    items, gaps, _, starts, _, ratings = ordered_events(data, "train")
    assert starts.tolist() == [0, 3, 5]
    assert ratings.tolist() == [1.0] * 5
    assert data.item_ids[items].tolist() == ["2", "1", "4", "3", "5"]
    assert gaps.tolist() == [0.0, 50.0, 300.0, 0.0, 0.0]  # NaN time: gap 0


def test_score_shapes_and_users_without_history():
    frame, _ = chain_frame(n_users=12)
    frame = pd.concat([frame, pd.DataFrame({"user_id": [999], "item_id": [3], "timestamp": [1e9], "split": ["test"]})])
    data = from_frame(frame, "shapes")
    for time_features in ("none", "log", "bucket"):
        model = LSTMRecommender(data.n_users, data.n_items, seed=0, time_features=time_features, **SMALL)
        model.fit(data, trainer=quiet_trainer(1))
        model.eval()
        scores = model.score(torch.arange(data.n_users))
        assert scores.shape == (data.n_users, data.n_items) and torch.isfinite(scores).all()
        no_history = int(np.flatnonzero(data.user_ids == "999")[0])
        assert torch.allclose(model.score(torch.tensor([no_history]))[0], model.output_bias)


def test_content_features_round_trip_through_state_tensors():
    frame, _ = chain_frame(n_users=20)
    items = np.unique(frame["item_id"].astype(str))
    features = pd.DataFrame({"topic": np.arange(len(items)) % 3, "difficulty": np.linspace(0, 1, len(items))}, index=items)
    data = from_frame(frame, "features", item_features=features)
    model = LSTMRecommender(data.n_users, data.n_items, seed=0, **SMALL)
    model.fit(data, trainer=quiet_trainer(1))
    model.eval()
    assert model.n_features == 2 and model.init_args()["n_features"] == 2
    rebuilt = LSTMRecommender(**model.init_args())
    rebuilt.load_state_tensors(model.state_tensors())
    rebuilt.eval()
    users = torch.arange(data.n_users)
    assert torch.equal(rebuilt.score(users), model.score(users))
    # Changing a feature changes the item's input vector: the features are really used.
    before = model.item_vectors()[0].detach().clone()
    model.item_features[0] += 1.0
    assert not torch.allclose(model.item_vectors()[0], before)


def test_log_uniform_sampler_follows_its_distribution():
    frame, _ = chain_frame(n_users=30)
    data = from_frame(frame, "sampler")
    model = LSTMRecommender(data.n_users, data.n_items, seed=0, loss="sampled", n_negatives=64, **SMALL)
    model.prepare(data)
    torch.manual_seed(0)
    draws = sample_items(model.config.negative_sampler, model.items_by_rank, (200_000,))
    rank = torch.argsort(model.items_by_rank)  # rank[item]
    counts = torch.bincount(rank[draws], minlength=data.n_items).double() / len(draws)
    r = torch.arange(data.n_items, dtype=torch.float64)
    expected = torch.log((r + 2) / (r + 1)) / math.log(data.n_items + 1)  # P(rank r), worked by hand
    assert torch.allclose(counts, expected, atol=4e-3)
    assert torch.allclose(model.log_q.double().exp()[model.items_by_rank], expected, atol=1e-6)


def test_sampled_softmax_also_learns_the_chain(chain):
    data, _, _ = chain
    pl.seed_everything(0, verbose=False)
    model = LSTMRecommender(data.n_users, data.n_items, seed=0, loss="sampled", n_negatives=16,
                            negative_sampler="uniform", **SMALL)
    model.fit(data, trainer=quiet_trainer(25))
    model.eval()
    assert evaluate_recommender(model, data, "test")["ndcg@10"] > 0.8


def test_deeprec_train_checkpoint_round_trip(tmp_path):
    from hydra import compose, initialize_config_module

    from deeprec.checkpoint import load_recommender
    from deeprec.cli.common import load_data
    from deeprec.cli.train import train

    frame, _ = chain_frame(n_users=40)
    path = tmp_path / "chain.csv"
    frame.to_csv(path, index=False)
    run_dir = tmp_path / "run"
    overrides = [f"data=interactions", f"data.path={path}", "model=lstm", f"run_dir={run_dir}", "seed=3",
                 "trainer.max_epochs=3", "model.embedding_dim=16", "model.hidden_dim=16", "model.max_len=8",
                 "model.window_stride=4"]
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    assert (run_dir / "checkpoints" / "best.ckpt").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    data = load_data(cfg.data)
    loaded, meta = load_recommender(run_dir / "checkpoints" / "best.ckpt")
    assert meta["model"] == "lstm" and isinstance(loaded, LSTMRecommender)
    loaded.eval()
    # The checkpoint alone (histories in its buffers) reproduces the run's test metrics...
    again = evaluate_recommender(loaded, data, "test")
    assert again["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-12)
    # ...and its scores, with the train history it was saved with, are those of a second load.
    twice, _ = load_recommender(run_dir / "checkpoints" / "best.ckpt")
    twice.eval()
    users = torch.arange(data.n_users)
    assert not torch.equal(twice.score(users), LSTMRecommender(**meta["init_args"]).eval().score(users))
    loaded.observe(data, ("train",))
    assert torch.equal(loaded.score(users), twice.score(users))
