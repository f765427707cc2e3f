"""model=hybrid: the stages against hand-worked values (normalisation, candidates, least squares,
MMR), the Recommender contract (scores, seen items, checkpoints, checkpoint members, Lightning
members), explanations, rules, and the commands of the issue end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from deeprec.checkpoint import load_recommender, save_checkpoint
from deeprec.data.interactions import from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.hybrid.blend import CandidateFeatures, fit_lsq, fit_ndcg, labels_of, ndcg_at, reciprocal_rank, zscore
from deeprec.hybrid.members import union_candidates
from deeprec.hybrid.recommender import HybridRecommender
from deeprec.hybrid.rerank import mmr
from inprocess_cli import run_cli


def test_normalisations_hand_worked():
    values = torch.tensor([[3.0, 1.0, 2.0, 9.0]])
    valid = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(zscore(values, valid), torch.tensor([[1.5 ** 0.5, -(1.5 ** 0.5), 0.0, 0.0]]))
    torch.testing.assert_close(reciprocal_rank(values, valid, k=60.0), torch.tensor([[1 / 61, 1 / 63, 1 / 62, 0.0]]))


def test_union_of_candidates_is_distinct_and_skips_excluded_items():
    a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    excluded = torch.tensor([[True, False, False, False, False]])
    got = union_candidates([a, b], 2, excluded)
    assert sorted(got[0].tolist()) == [1, 2, 3, 4]  # a: 1, 2; b: 4, 3; item 0 excluded
    assert union_candidates([a, b], 2, excluded, first_stage=1)[0].tolist() == [3, 4]
    assert union_candidates([a, a], 9, excluded)[0].tolist() == [1, 2, 3, 4]  # M above the catalogue, repeats once



def test_union_of_candidates_equals_a_set_union_of_each_members_top_m():
    """Random rows (excluded items, rows with fewer than M allowed items): a brute-force set union."""
    gen = torch.Generator().manual_seed(3)
    scores = [torch.randn(6, 40, generator=gen) for _ in range(3)]
    excluded = torch.rand(6, 40, generator=gen) < 0.3
    excluded[2, 5:] = True  # 5 allowed items, M = 8
    for first in (None, 1):
        got = union_candidates(scores, 8, excluded, first_stage=first)
        for row in range(6):
            expected = set()
            for s in scores if first is None else [scores[first]]:
                allowed = [i for i in range(40) if not excluded[row, i]]
                expected |= set(sorted(allowed, key=lambda i: -float(s[row, i]))[:8])
            ids = [i for i in got[row].tolist() if i >= 0]
            assert ids == sorted(expected)
            assert got[row].tolist()[len(ids):] == [-1] * (got.shape[1] - len(ids))


def batch_of(features: np.ndarray) -> CandidateFeatures:
    b, c, f = features.shape
    return CandidateFeatures(torch.arange(b), torch.arange(c).repeat(b, 1), torch.ones(b, c, dtype=torch.bool),
                             torch.from_numpy(features.astype(np.float32)), [f"f{i}" for i in range(f)])


def test_least_squares_recovers_planted_weights():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 30, 3))
    labels = torch.from_numpy((0.6 * features[..., 0] + 0.4 * features[..., 2]).astype(np.float32))
    np.testing.assert_allclose(fit_lsq(batch_of(features), labels, [0, 1, 2]), [0.6, 0.0, 0.4], atol=1e-5)


def test_ndcg_ascent_never_lowers_valid_ndcg():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 20, 3))
    relevant = (features[..., 1] + 0.5 * rng.normal(size=(60, 20))) > 1.2
    batch = batch_of(features)
    truth = sp.csr_matrix(relevant.astype(np.float32))
    start = np.array([1.0, 0.0, 0.0])
    before = ndcg_at(batch.features @ torch.tensor(start, dtype=torch.float32), batch, truth)
    weights = fit_ndcg(batch, truth, [0, 1, 2], start)
    after = ndcg_at(batch.features @ torch.tensor(weights, dtype=torch.float32), batch, truth)
    assert after >= before and weights[1] > weights[0]
    assert labels_of(batch, truth).sum() == relevant.sum()


def test_mmr_order_hand_worked():
    # A and B point the same way, C is orthogonal; relevance A 1.0, B 0.9, C 0.5; diversity 0.5
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    relevance = torch.tensor([[1.0, 0.9, 0.5]])
    candidates = torch.tensor([[0, 1, 2]])
    out = mmr(relevance, candidates, torch.ones(1, 3, dtype=torch.bool), vectors, diversity=0.5, depth=3)
    # rel scaled to 1, 0.8, 0: A (0.5), then C (0 - 0) beats B (0.4 - 0.5), then B (-0.1)
    torch.testing.assert_close(out, torch.tensor([[0.5, -0.1, 0.0]]))
    assert torch.argsort(out[0], descending=True).tolist() == [0, 2, 1]


def planted(n_users: int = 80, n_items: int = 40, seed: int = 0, features: bool = True):
    """Two tastes (even / odd items) and popularity, timestamps, random train / valid / test."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        parity = u % 2
        pool = np.arange(parity, n_items, 2)
        take = rng.choice(pool, 8, replace=False, p=np.linspace(2, 1, len(pool)) / np.linspace(2, 1, len(pool)).sum())
        rows += [(f"u{u:03d}", f"i{i:03d}", float(rng.integers(1, 6)), float(t)) for t, i in enumerate(take)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame["split"] = np.where(frame["timestamp"] < 5, "train", np.where(frame["timestamp"] < 6, "valid", "test"))
    item_features = None
    if features:
        item_features = pd.DataFrame({"even": [float(i % 2 == 0) for i in range(n_items)], "size": rng.random(n_items)},
                                     index=[f"i{i:03d}" for i in range(n_items)])
    return from_frame(frame, "planted", item_features=item_features)


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def hybrid(data):
    return HybridRecommender(data.n_users, data.n_items, seed=3, members=["pop", "ease", "itemknn"], blend="lsq").fit(data)


def test_scores_rank_candidates_first_and_known_items_last(data, hybrid):
    users = torch.arange(data.n_users)
    scores = hybrid.eval().score(users)
    assert scores.shape == (data.n_users, data.n_items) and scores.dtype == torch.float32
    seen = torch.from_numpy(data.matrix("train", binary=True).toarray() > 0)
    assert torch.isfinite(scores).all()
    assert (torch.where(seen, scores, -torch.inf).max(1).values < torch.where(seen, torch.inf, scores).min(1).values).all()
    batch = hybrid.candidate_features(users)
    lowest_candidate = torch.where(batch.valid, scores.gather(1, batch.candidates.clamp(min=0)), torch.inf).min(1).values
    outside = torch.ones_like(seen)
    outside.scatter_(1, batch.candidates.clamp(min=0), False)
    outside &= ~seen
    assert (torch.where(outside, scores, -torch.inf).max(1).values < lowest_candidate).all()


def test_online_events_update_the_head_and_the_seen_filter_and_serve_a_new_user(data):
    model = HybridRecommender(data.n_users, data.n_items, seed=3, members=["pop", "ease"], blend="lsq").fit(data)
    assert model.head is not None
    lam = model.config.bandit_lam
    A0, b0 = model.head.bandit.A.double().clone(), model.head.bandit.b.double().clone()
    assert model.add_users(1)
    new = data.n_users
    users, items = torch.tensor([0, new, 0]), torch.tensor([5, 7, 9])
    rewards = torch.tensor([5.0, 2.0, 0.0], dtype=torch.float64)
    model.learn_online(users, items, rewards, torch.tensor([1e9, 1e9 + 1, 1e9 + 2], dtype=torch.float64))
    x = model.head.features.double().numpy()
    r = np.clip(rewards.numpy() / model.rating_scale, 0.0, 1.0)
    A, b = model.head.bandit.A.double().numpy(), model.head.bandit.b.double().numpy()
    np.testing.assert_allclose(A[0], A0[0].numpy() + np.outer(x[5], x[5]) + np.outer(x[9], x[9]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b[0], b0[0].numpy() + r[0] * x[5] + r[2] * x[9], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(A[new], lam * np.eye(x.shape[1]) + np.outer(x[7], x[7]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b[new], r[1] * x[7], rtol=1e-5, atol=1e-5)
    assert model.seen[0, 5] > 0 and model.seen[0, 9] > 0 and model.seen[new, 7] > 0 and model.seen[new].nnz == 1
    scores = model.eval().score(torch.tensor([0, new]))
    assert scores.shape == (2, data.n_items) and torch.isfinite(scores).all()
    for row, known in ((0, model.seen[0].indices), (1, [7])):  # the known items rank below every other item
        others = np.setdiff1d(np.arange(data.n_items), known)
        assert scores[row, list(known)].max() < scores[row, others].min()


def test_checkpoint_round_trip_and_a_checkpoint_member(data, hybrid, tmp_path):
    users = torch.arange(data.n_users)
    save_checkpoint(hybrid, data, tmp_path / "hybrid.ckpt")
    loaded, meta = load_recommender(tmp_path / "hybrid.ckpt")
    assert meta["model"] == "hybrid" and [s["label"] for s in meta["init_args"]["member_specs"]] == ["pop", "ease", "itemknn"]
    torch.testing.assert_close(loaded.eval().score(users), hybrid.score(users))
    ease = hybrid.members[1].model
    save_checkpoint(ease, data, tmp_path / "ease.ckpt")
    mixed = HybridRecommender(data.n_users, data.n_items, seed=3, members=["pop", str(tmp_path / "ease.ckpt"), "itemknn"],
                              blend="lsq").fit(data)
    torch.testing.assert_close(mixed.eval().score(users), hybrid.score(users))


def test_contributions_add_up_to_the_blend(data, hybrid):
    users = torch.arange(10)
    top = torch.topk(hybrid.score(users), 1, dim=1).indices[:, 0]
    parts, values = hybrid.contributions(users, top)
    assert parts == ["pop", "ease", "itemknn", "head"]
    batch = hybrid.candidate_features(users)
    at = (batch.candidates == top.unsqueeze(1)).float().argmax(1)
    blended = hybrid.blend(batch.features)[torch.arange(10), at]
    torch.testing.assert_close(values.sum(1), blended, atol=1e-5, rtol=1e-5)  # a linear blend: exact shares
    items, weights = hybrid.explain(users, top, top=2)
    history = data.matrix("train", binary=True)
    for b in range(10):
        known = set(history[b].indices)
        assert all(i in known for i in items[b].tolist() if i >= 0)
        assert weights[b, 0] >= weights[b, 1] >= 0


def test_score_explanations_equal_explain_and_contributions_and_score_each_user_once(data, hybrid, monkeypatch):
    from deeprec.scoring.explain import explanations

    users = np.arange(12)
    items = torch.topk(hybrid.score(torch.from_numpy(users)), 4, dim=1).indices.numpy()
    items[3, 2:] = -1  # a short list
    rows = items.reshape(-1) >= 0
    flat_users, flat_items = torch.from_numpy(np.repeat(users, 4)[rows]), torch.from_numpy(items.reshape(-1)[rows])
    because, weights = hybrid.explain(flat_users, flat_items, 2)  # the two calls, each on its own
    parts, values = hybrid.contributions(flat_users, flat_items)
    scored = []
    for member in hybrid.members:
        score = member.model.score
        monkeypatch.setattr(member.model, "score", lambda u, score=score: scored.append(len(u)) or score(u))
    got = explanations(hybrid, users, items, 2, batch_size=1000, device="cpu")
    assert scored == [len(users)] * len(hybrid.members)  # one pass of each member over the 12 distinct users
    assert np.array_equal(got["because"].reshape(-1, 2)[rows], because.numpy())
    np.testing.assert_allclose(got["because_weights"].reshape(-1, 2)[rows], weights.numpy(), rtol=1e-5, atol=1e-6)
    for n, part in enumerate(parts):
        column = got[f"contribution_{part}"].reshape(-1)
        np.testing.assert_allclose(column[rows], values[:, n].numpy(), rtol=1e-5, atol=1e-6)
        assert np.isnan(column[~rows]).all()


def test_rules_move_the_lists_the_way_they_say(data, hybrid):
    users = torch.arange(data.n_users)

    def lists(**changes):
        model = HybridRecommender(data.n_users, data.n_items, seed=3, members=["pop", "ease", "itemknn"], blend="lsq",
                                  **changes)
        model.members, model.blend, model.head = hybrid.members, hybrid.blend, hybrid.head
        model.popularity, model.first_seen, model.seen = hybrid.popularity, hybrid.first_seen, hybrid.seen
        model.diversity_vectors = hybrid.diversity_vectors
        return torch.topk(model.score(users), 5, dim=1).indices

    plain = lists()
    popularity = data.item_popularity("train")
    assert popularity[lists(popularity_penalty=2.0)].mean() < popularity[plain].mean()
    first = hybrid.first_seen
    assert first[lists(freshness=2.0)].mean() > first[plain].mean()
    from deeprec.evaluation.metrics import intra_list_diversity

    vectors = hybrid.diversity_vectors.numpy()
    assert intra_list_diversity(lists(diversity=0.7), 5, vectors) > intra_list_diversity(plain, 5, vectors)


def test_a_lightning_member_and_the_shared_evaluation(data):
    model = HybridRecommender(data.n_users, data.n_items, seed=1, members=["ease", "lstm"], member_max_epochs=2,
                              member_overrides={"lstm": {"embedding_dim": 8, "hidden_dim": 8}}).fit(data)
    metrics = evaluate_recommender(model, data, "test", ks=(5, 10), segments="history")
    assert 0 <= metrics["ndcg@10"] <= 1 and "ild@10" in metrics
    assert model.members[1].model.item_embeddings().shape == (data.n_items, 8)


def test_config_mistakes_fail_before_any_data():
    from deeprec.errors import ConfigError

    for bad, message in (({"members": []}, "members is empty"), ({"members": ["ease", "nope"]}, "nope"),
                         ({"member_overrides": {"ncf": {"lr": 0.1}}}, "not among the named members"),
                         ({"member_overrides": {"ease": {"l3": 4}}}, "l3"), ({"candidates": "ncf"}, "candidates"),
                         ({"blend": "magic"}, "blend"), ({"members": ["hybrid"]}, "a hybrid cannot")):
        with pytest.raises(ConfigError, match=message):
            HybridRecommender(3, 3, **bad)


def issue_files(tmp_path):
    data = planted(n_users=60, n_items=30, seed=5)
    frame = pd.DataFrame({"user_id": data.user_ids[data.frame["user"]], "item_id": data.item_ids[data.frame["item"]],
                          "rating": data.frame["rating"], "timestamp": data.frame["timestamp"]})
    table = tmp_path / "interactions.csv"
    frame.to_csv(table, index=False)
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": data.item_ids, "genre": ["even" if i % 2 == 0 else "odd" for i in range(30)],
                  "minutes": np.arange(30) * 3.0}).to_csv(items, index=False)
    return table, items


def test_the_issue_commands_end_to_end(tmp_path, monkeypatch, capsys):
    table, items = issue_files(tmp_path)
    run = tmp_path / "D"
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={table}", f"data.item_features={items}",
                                              "model=hybrid", "model.members=[ease,lstm]", "model.member_max_epochs=2",
                                              f"run_dir={run}", "seed=1"], monkeypatch, capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("segment" in k for k in metrics) and any("ild" in k or "diversity" in k for k in metrics)
    users = tmp_path / "users.csv"
    users.write_text("user_id\nu000\nu001\nsomebody-new\n")  # a one-column CSV with a header
    code, err = run_cli("deeprec.cli.score", [f"ckpt={run / 'checkpoints' / 'best.ckpt'}", "explain=true", "fallback=content",
                                              f"users={users}", f"output={tmp_path / 'scores'}", "k=5", "progress=false"],
                        monkeypatch, capsys)
    assert code == 0, err
    scores = pd.read_parquet(tmp_path / "scores")
    assert {"because_items", "because_weights", "contribution_ease", "contribution_lstm"} <= set(scores.columns)
    assert set(scores["user_id"]) == {"u000", "u001", "somebody-new"}
    known = scores[scores["user_id"] == "u000"]
    assert known["because_items"].map(len).max() >= 1 and known["contribution_ease"].notna().all()
    new = scores[scores["user_id"] == "somebody-new"]
    assert len(new) == 5 and new["because_items"].map(len).max() == 0  # served by the content fallback


def test_hybrid_on_coursera_is_at_least_its_members(shared_data):
    from deeprec.data.adapters.coursera import CourseraDataConfig, load

    data = load(CourseraDataConfig(path=str(shared_data / "coursera-video-behavior")))
    model = HybridRecommender(data.n_users, data.n_items, seed=1, members=["ease", "userknn"], blend="ndcg").fit(data)
    hybrid = evaluate_recommender(model, data, "test", ks=(10,))["ndcg@10"]
    singles = [evaluate_recommender(m.model, data, "test", ks=(10,))["ndcg@10"] for m in model.members]
    assert hybrid >= max(singles) - 0.005, (hybrid, singles)
    assert hybrid > min(singles)



def test_the_learned_combiner_returns_the_net_of_its_best_held_out_epoch(monkeypatch):
    """KeepBestState must read the held-out NDCG of the epoch just trained (HeldOutNDCG runs first):
    the returned net scores the held-out users at the maximum of the per-epoch values, which here is
    not the last epoch's."""
    import scipy.sparse as sp

    from deeprec.hybrid import combiner
    from deeprec.hybrid.blend import split_users, subset

    rng = np.random.default_rng(0)
    users, width, n_features, n_items = 60, 20, 4, 50
    candidates = torch.from_numpy(np.stack([rng.choice(n_items, width, replace=False) for _ in range(users)]))
    features = torch.from_numpy(rng.normal(size=(users, width, n_features)).astype(np.float32))
    batch = CandidateFeatures(torch.arange(users), candidates, torch.ones(users, width, dtype=torch.bool), features,
                              [f"f{i}" for i in range(n_features)])
    truth = np.zeros((users, n_items), np.float32)
    for b in range(users):  # relevant: feature 0 high, with noise
        truth[b, candidates[b][features[b, :, 0] + 0.5 * torch.from_numpy(rng.normal(size=width)).float() > 0.8].numpy()] = 1
    truth = sp.csr_matrix(truth)
    per_epoch = []
    log_value = combiner.HeldOutNDCG.on_train_epoch_end

    def recording(self, trainer, module):
        log_value(self, trainer, module)
        per_epoch.append(float(trainer.callback_metrics["held_ndcg"]))

    monkeypatch.setattr(combiner.HeldOutNDCG, "on_train_epoch_end", recording)
    blend = combiner.fit_combiner(batch, labels_of(batch, truth), truth, seed=1, epochs=12, patience=3)
    _, held_rows = split_users(users, 0.2, 2)  # fit_combiner's held-out users (seed + 1)
    held = subset(batch, held_rows)
    final = ndcg_at(blend.net(held.features), held, truth[held_rows])
    assert int(np.argmax(per_epoch)) < len(per_epoch) - 1, "the best epoch must not be the last for this check to bite"
    assert final == pytest.approx(max(per_epoch), abs=1e-6)
