"""deeprec-score's inputs and cold start: users= / items= in every accepted form, fallback=content
against an independent least-squares computation, and explain=true on models that can or cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deeprec.checkpoint import save_checkpoint
from deeprec.data.features import SideFeaturesConfig, attach_side_features
from deeprec.errors import ConfigError, DataError
from deeprec.scoring.batch import ScoreConfig, read_id_list, score_users
from deeprec.scoring.content import ContentFallback
from test_scoring import make_data

IDS = ["u7", "007", "x y", "u7"]


@pytest.mark.parametrize("name, content", [
    ("plain.txt", "u7\n007\n\nx y\nu7\n"),
    ("header.txt", "user_id\nu7\n007\nx y\n"),
    ("one_column.csv", "user_id\r\nu7\r\n007\r\nx y\r\n"),  # the case that crashed
    ("bom.csv", "\ufeffuser_id\nu7\n007\nx y\n"),
    ("two_columns.csv", "segment,user_id\na,u7\nb,007\nc,x y\n"),
    ("tabs.tsv", "user_id\tsegment\nu7\ta\n007\tb\nx y\tc\n"),
    ("quoted.csv", '"user_id"\n"u7"\n"007"\n"x y"\n'),
])
def test_user_lists_in_every_form(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert read_id_list(str(path), "user_id").tolist() == ["u7", "007", "x y"]


def test_parquet_lists_with_the_column_or_a_single_one(tmp_path):
    pd.DataFrame({"user_id": IDS, "other": 1}).to_parquet(tmp_path / "named.parquet")
    pd.DataFrame({"whatever": IDS}).to_parquet(tmp_path / "single.parquet")
    for name in ("named.parquet", "single.parquet"):
        assert read_id_list(str(tmp_path / name), "user_id").tolist() == ["u7", "007", "x y"]
    pd.DataFrame({"a": IDS, "b": IDS}).to_parquet(tmp_path / "two.parquet")
    with pytest.raises(DataError, match="no column user_id"):
        read_id_list(str(tmp_path / "two.parquet"), "user_id")
    (tmp_path / "wrong.csv").write_text("id,segment\nu7,a\n")
    with pytest.raises(DataError, match="no column user_id in the header"):
        read_id_list(str(tmp_path / "wrong.csv"), "user_id")


def test_content_fallback_equals_an_independent_ridge():
    rng = np.random.default_rng(0)
    seen = (rng.random((30, 12)) < 0.3).astype(np.float64)
    seen[0] = 0  # a user without history
    features = rng.normal(size=(30, 3))
    content = ContentFallback(sp.csr_matrix(seen), features, None, lam=0.5)
    active = seen.sum(1) > 0
    z = (features[active] - features[active].mean(0)) / features[active].std(0)
    x = seen[active]
    weights = np.linalg.solve(z.T @ z + 0.5 * len(z) / 3 * np.eye(3), z.T @ x)
    query = (features[:1] - features[active].mean(0)) / features[active].std(0)
    scores, kind = content.scores(features[:1], np.array([True]))
    np.testing.assert_allclose(scores[0], (x.mean(0) + query @ weights)[0], rtol=1e-5)
    assert kind.tolist() == ["user_features"]
    popular, kind = content.scores(None, np.array([False]))
    np.testing.assert_allclose(popular[0], seen.sum(0))
    assert kind.tolist() == ["popularity"]


def test_content_fallback_through_deeprec_score(tmp_path):
    data = make_data(n_users=40, n_items=15, per_user=4, seed=2, with_features=True)
    users_table = tmp_path / "users.csv"
    pd.DataFrame({"user_id": list(data.user_ids) + ["new-1"], "level": ["a", "b"] * 20 + ["b"]}).to_csv(users_table, index=False)
    attach_side_features(data, SideFeaturesConfig(user_features=str(users_table)))
    from deeprec.baselines.ease import EASE

    model = EASE(data.n_users, data.n_items).fit(data)
    save_checkpoint(model, data, tmp_path / "ease.ckpt")
    (tmp_path / "ask.txt").write_text("new-1\nnew-2\n")
    summary = score_users(ScoreConfig(ckpt=str(tmp_path / "ease.ckpt"), output=str(tmp_path / "out"), k=3, progress=False,
                                      users=str(tmp_path / "ask.txt"), fallback="content", user_features=str(users_table)))
    assert summary["users_fallback_by"] == {"popularity": 0, "user_features": 1, "item_features": 1}
    frame = pd.read_parquet(tmp_path / "out")
    # new-1 has level b: the items that b-learners took, by the ridge (computed independently above for a similar case)
    b_learners = [u for u in range(data.n_users) if u % 2 == 1]
    seen = data.matrix(("train", "valid", "test"), binary=True).toarray()
    top_b = set(np.argsort(-seen[b_learners].mean(0) + 1e-9 * np.arange(data.n_items))[:3])
    assert {list(data.item_ids).index(i) for i in frame[frame["user_id"] == "new-1"]["item_id"]} & top_b
    assert len(frame[frame["user_id"] == "new-2"]) == 3
    with pytest.raises(ConfigError, match="only read with fallback=content"):
        score_users(ScoreConfig(ckpt=str(tmp_path / "ease.ckpt"), output=str(tmp_path / "x"), user_features=str(users_table)))


def test_explain_refuses_a_model_that_cannot_say(tmp_path):
    data = make_data(n_users=20, n_items=10, per_user=3, seed=4)
    from deeprec.baselines.pop import Popularity

    save_checkpoint(Popularity(data.n_users, data.n_items).fit(data), data, tmp_path / "pop.ckpt")
    with pytest.raises(ConfigError, match="explain=true: model 'pop' cannot explain"):
        score_users(ScoreConfig(ckpt=str(tmp_path / "pop.ckpt"), output=str(tmp_path / "o"), explain=True, progress=False))


def test_explain_columns_of_an_item_item_model_are_its_contributions(tmp_path):
    data = make_data(n_users=25, n_items=12, per_user=5, seed=6)
    from deeprec.baselines.ease import EASE

    model = EASE(data.n_users, data.n_items, l2=5.0).fit(data)
    save_checkpoint(model, data, tmp_path / "ease.ckpt")
    score_users(ScoreConfig(ckpt=str(tmp_path / "ease.ckpt"), output=str(tmp_path / "o.parquet"), k=2, explain=True,
                            explain_top=2, progress=False))
    frame = pd.read_parquet(tmp_path / "o.parquet")
    history = data.matrix("train", binary=True).toarray()
    weights = model.weights.numpy()
    row = frame.iloc[0]
    u, j = list(data.user_ids).index(row["user_id"]), list(data.item_ids).index(row["item_id"])
    parts = np.clip(history[u] * weights[:, j], 0, None)
    best = np.argsort(-parts)[:2]
    assert [list(data.item_ids).index(i) for i in row["because_items"]] == [b for b in best if parts[b] > 0]
    np.testing.assert_allclose(row["because_weights"], parts[best][parts[best] > 0] / parts.sum(), rtol=1e-5)
