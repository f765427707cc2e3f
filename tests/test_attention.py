"""AttentionRanker: learns a content rule from features alone, attention weights, explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from deeprec.baselines.pop import Popularity
from deeprec.data.interactions import from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.models.attention import AttentionRanker, prefix_histories
from test_lstm import RandomScores, quiet_trainer

N_TOPICS, PER_TOPIC, WARM = 4, 12, 8
SMALL = dict(embedding_dim=16, attention_hidden=8, mlp_hidden=16, dropout=0.0, max_len=8, lr=0.01, batch_size=64)


def topic_data(n_users=120, seed=0, with_features=True):
    """Each learner sticks to one topic. Items 0..7 of a topic are 'warm' (train/valid), items 8..11
    'cold': they appear only in test, so an id can say nothing about them, only the topic feature can.
    Features: topic one-hot plus a pure-noise column."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, N_TOPICS, n_users)
    # Vectorised per user: random distinct warm items (6 = train 5 + valid 1) and 2 distinct cold ones.
    warm = np.argsort(rng.random((n_users, WARM)), axis=1)[:, :6]
    cold = WARM + np.argsort(rng.random((n_users, PER_TOPIC - WARM)), axis=1)[:, :2]
    local = np.concatenate([warm, cold], axis=1)  # [U, 8]
    items = topic[:, None] * PER_TOPIC + local
    split = np.array(["train"] * 5 + ["valid"] + ["test"] * 2)
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(n_users), 8),
        "item_id": items.ravel(),
        "timestamp": 1e9 + 600.0 * np.tile(np.arange(8), n_users),
        "split": np.tile(split, n_users),
    })
    features = None
    if with_features:
        all_items = np.arange(N_TOPICS * PER_TOPIC)
        features = pd.DataFrame(np.eye(N_TOPICS)[all_items // PER_TOPIC], columns=[f"topic{t}" for t in range(N_TOPICS)])
        features["noise"] = rng.random(len(all_items))
        features.index = all_items.astype(str)
    return from_frame(frame, "planted-topics", item_features=features)




def fitted(data, epochs=15, **hp):
    pl.seed_everything(0, verbose=False)
    model = AttentionRanker(data.n_users, data.n_items, seed=0, **{**SMALL, **hp})
    model.fit(data, trainer=quiet_trainer(epochs))
    return model.eval()


@pytest.fixture(scope="module")
def topics():
    """The content-only ranker (use_ids=false): test items are cold, so only features can rank them."""
    data = topic_data()
    return data, fitted(data, epochs=40, use_ids=False)


def test_learns_a_content_rule_only_features_can_carry(topics):
    data, model = topics
    content = evaluate_recommender(model, data, "test")["ndcg@10"]
    ids_only = evaluate_recommender(fitted(data, epochs=40, use_features=False), data, "test")["ndcg@10"]
    pop = evaluate_recommender(Popularity(data.n_users, data.n_items).fit(data), data, "test")["ndcg@10"]
    rand = evaluate_recommender(RandomScores(data.n_items), data, "test")["ndcg@10"]
    # Only the 6 unseen items of the learner's topic match; 2 of them are the (cold) truth: ideal
    # rankings put them in the top 6, which gives NDCG@10 >= 0.39 (hits at ranks 5 and 6).
    assert content > 0.39
    assert content > rand + 0.25 and content > pop + 0.25 and content > ids_only + 0.25


def test_ids_and_features_learn_the_warm_valid_items():
    data = topic_data()
    both = evaluate_recommender(fitted(data, epochs=15), data, "valid")["ndcg@10"]
    rand = evaluate_recommender(RandomScores(data.n_items), data, "valid")["ndcg@10"]
    # The valid item is one of the 3 unseen warm items of the learner's topic.
    assert both > 0.6 and both > rand + 0.4


def test_scores_rank_same_topic_cold_items_above_other_topics(topics):
    data, model = topics
    users = torch.arange(data.n_users)
    scores = model.score(users)
    item_topic = np.array([int(i) // PER_TOPIC for i in data.item_ids])
    train = data.rows("train")
    user_topic = np.zeros(data.n_users, int)
    user_topic[train["user"].to_numpy()] = item_topic[train["item"].to_numpy()]
    cold = np.array([int(i) % PER_TOPIC >= WARM for i in data.item_ids])
    same = (item_topic[None, :] == user_topic[:, None]) & cold[None, :]
    other = (item_topic[None, :] != user_topic[:, None]) & cold[None, :]
    s = scores.numpy()
    # For most users the weakest same-topic cold item beats the strongest other-topic cold item.
    best_other = np.where(other, s, -np.inf).max(1)
    worst_same = np.where(same, s, np.inf).min(1)
    assert (worst_same > best_other).mean() > 0.9


def naive_weights(model, history_items, length, candidate):
    """Reference: the activation unit on the concatenation [h, c, h-c, h*c], softmax over valid h."""
    vectors = model.item_vectors()
    h = vectors[history_items[:length]]
    c = vectors[candidate].expand_as(h)
    hidden = F.relu(model.activation_unit(torch.cat([h, c, h - c, h * c], dim=1)))
    return torch.softmax(model.activation_out(hidden).squeeze(1), dim=0)


def test_attention_weights_sum_to_one_over_valid_history_and_ignore_padding(topics):
    data, model = topics
    users = torch.arange(8)
    # Give users histories of lengths 0..7 by hand (pad index = n_items).
    model.observe(data, ("train",))
    saved = (model.history_items.clone(), model.history_lengths.clone())
    try:
        model.history_lengths[users] = users
        model.history_items[users] = model.n_items
        for u in range(8):
            model.history_items[u, :u] = torch.arange(u) * 5 % model.n_items
        history = model.history_items[users]
        valid = history != model.n_items
        vectors = model.item_vectors()
        with torch.no_grad():
            weights = model.attention_weights(vectors[history], valid, vectors[:10])  # [8, L, 10]
            sums = weights.sum(1)
            assert torch.allclose(sums[1:], torch.ones(7, 10), atol=1e-6)  # every user with history
            assert torch.equal(sums[0], torch.zeros(10))  # no history: attends to nothing
            assert torch.all(weights[~valid] == 0)  # padding positions get exactly 0
            for u in (1, 3, 7):
                for c in (0, 9):
                    assert torch.allclose(weights[u, :u, c], naive_weights(model, history[u], u, c), atol=1e-6)
            # Whatever sits in the padding (here: real items) changes nothing once lengths say so.
            before = model.score(users)
            garbage = torch.where(valid, history, torch.full_like(history, 3))
            after_weights = model.attention_weights(vectors[garbage], valid, vectors[:10])
            assert torch.allclose(after_weights, weights, atol=1e-7)
            assert torch.allclose(model.score(users), before)
    finally:
        model.history_items.copy_(saved[0])
        model.history_lengths.copy_(saved[1])


def test_scoring_all_items_equals_per_candidate_scoring_and_chunking(topics):
    data, model = topics
    users = torch.arange(6)
    full = model.score(users)
    history = model.history_of(users)
    per_row = torch.stack([model.candidate_scores(history, torch.full((6, 1), j))[:, 0] for j in range(data.n_items)], 1)
    assert torch.allclose(full, per_row, atol=1e-5)
    model.config.score_chunk_elements = 1  # one item per chunk
    try:
        assert torch.allclose(model.score(users), full, atol=1e-6)
    finally:
        model.config.score_chunk_elements = SMALL.get("score_chunk_elements", 16_777_216)


def brute_force_scores(model, history_items):
    """Reference [B, I]: the activation unit and the scoring MLP run as written, on the explicit
    concatenations [h, c, h - c, h * c] and [interest, c, interest * c], one user and candidate at a time."""
    vectors = model.item_vectors()
    out = torch.zeros(len(history_items), model.n_items)
    for b, row in enumerate(history_items):
        h = vectors[row[row != model.n_items]]  # [l, d]
        for c in range(model.n_items):
            cand = vectors[c].expand_as(h)
            unit = model.activation_out(F.relu(model.activation_unit(torch.cat([h, cand, h - cand, h * cand], 1))))
            weights = torch.softmax(unit[:, 0], 0) if len(h) else unit[:, 0]
            interest = weights @ h if len(h) else torch.zeros_like(vectors[c])
            features = torch.cat([interest, vectors[c], interest * vectors[c]])
            out[b, c] = model.score_mlp(features)[0] + model.item_bias[c]
    return out


def test_full_catalogue_scores_equal_the_brute_force_unit_under_any_chunking():
    """The per-distinct-item logit table (score) equals the unit run on every (user, position, candidate)
    triple, with repeated history items, an empty history, several candidate chunks and user blocks."""
    data = topic_data(n_users=30, seed=3)
    torch.manual_seed(0)
    model = AttentionRanker(data.n_users, data.n_items, seed=0, **{**SMALL, "dropout": 0.0})
    model.prepare(data)
    with torch.no_grad():  # untrained weights are tiny: make every layer matter
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    model.eval()
    users = torch.arange(6)
    model.observe(data, ("train",))
    model.history_lengths[0] = 0
    model.history_items[0] = model.n_items  # user 0: no history
    model.history_items[1, :5] = torch.tensor([3, 3, 7, 3, 7])  # repeats
    with torch.no_grad():
        want = brute_force_scores(model, model.history_of(users))
        for elements in (16_777_216, 97, 1):  # one chunk; several candidate chunks and user blocks; one item each
            model.config.score_chunk_elements = elements
            assert torch.allclose(model.score(users), want, atol=1e-5), elements
    assert model.score(torch.arange(0)).shape == (0, data.n_items)


def test_explain_returns_the_most_weighted_history_items(topics):
    data, model = topics
    model.observe(data, ("train",))
    users = torch.arange(5)
    items = torch.tensor([0, 13, 26, 39, 47])
    top_items, top_weights = model.explain(users, items, top=3)
    assert top_items.shape == (5, 3) and top_weights.shape == (5, 3)
    for b in range(5):
        length = int(model.history_lengths[b])
        weights = naive_weights(model, model.history_items[b], length, int(items[b])).detach()
        order = torch.argsort(weights, descending=True)[:3]
        assert top_weights[b].tolist() == pytest.approx(weights[order].tolist(), abs=1e-6)
        assert set(top_items[b].tolist()) == set(model.history_items[b, order].tolist())
    # A history shorter than `top` pads with -1 / 0.
    model.history_lengths[0] = 2
    model.history_items[0, 2:] = model.n_items
    short_items, short_weights = model.explain(users[:1], items[:1], top=4)
    assert short_items[0, 2:].tolist() == [-1, -1] and short_weights[0, 2:].tolist() == [0.0, 0.0]
    assert short_weights[0, :2].sum().item() == pytest.approx(1.0, abs=1e-6)
    model.observe(data, ("train", "valid"))
    model.observe(data, ("train",))


def test_recommend_with_explanations_frame(topics):
    data, model = topics
    model.observe(data, ("train",))
    frame = model.recommend_with_explanations([0, 1, 2], k=5, user_ids=data.user_ids, item_ids=data.item_ids)
    assert list(frame.columns) == ["user", "rank", "item", "score", "because_item", "because_weight"]
    assert len(frame) == 15 and frame.groupby("user")["rank"].apply(list).tolist() == [[1, 2, 3, 4, 5]] * 3
    train = data.rows("train")
    for u in range(3):
        rows = frame[frame["user"] == data.user_ids[u]]
        seen = set(data.item_ids[train[train["user"] == u]["item"]])
        assert not (set(rows["item"]) & seen)  # history items are not recommended
        assert set(rows["because_item"]) <= seen  # explanations come from the history
        assert rows["score"].is_monotonic_decreasing
        assert ((rows["because_weight"] > 0) & (rows["because_weight"] <= 1)).all()


def test_prefix_histories_are_the_events_before_each_event():
    items = np.array([4, 5, 6, 7, 9])
    starts = np.array([0, 4, 5])
    got = prefix_histories(items, starts, max_len=2, pad=-1)
    assert got.tolist() == [[-1, -1], [4, -1], [4, 5], [5, 6], [-1, -1]]


def test_sampled_softmax_and_log_uniform_train(topics):
    data, _ = topics
    model = fitted(data, epochs=8, loss="sampled_softmax", negative_sampler="log_uniform", n_negatives=8)
    ndcg = evaluate_recommender(model, data, "test")["ndcg@10"]
    rand = evaluate_recommender(RandomScores(data.n_items), data, "test")["ndcg@10"]
    assert ndcg > rand + 0.2


def test_ids_only_without_features_is_a_clear_error():
    from deeprec.errors import ConfigError

    data = topic_data(n_users=10, with_features=False)
    model = AttentionRanker(data.n_users, data.n_items, use_ids=False, **{k: v for k, v in SMALL.items()})
    with pytest.raises(ConfigError, match="use_ids=false needs item features"):
        model.prepare(data)


def test_state_round_trip_keeps_features_and_scores(topics):
    data, model = topics
    rebuilt = AttentionRanker(**model.init_args())
    rebuilt.load_state_tensors(model.state_tensors())
    rebuilt.eval()
    users = torch.arange(data.n_users)
    assert model.init_args()["n_features"] == N_TOPICS + 1
    assert torch.equal(rebuilt.score(users), model.score(users))
