"""Side features for any data (deeprec.data.features), the learner features the ratings pipeline
derives from a log, and the models that read them (ncf, lstm, attention) - against hand-worked
encodings and properties."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.data.features import SideFeaturesConfig, attach_side_features, encode_table
from deeprec.data.interactions import from_frame
from deeprec.errors import ConfigError, DataError
from inprocess_cli import run_cli


def tiny_data():
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3", "u3", "u3"], "item_id": ["a", "b", "a", "b", "c", "d"],
                          "split": ["train", "test", "train", "train", "train", "test"]})
    return from_frame(frame, "tiny")


def test_encoding_hand_worked():
    # items a, b, c, d; the table knows a, b, c and an id the data has not (z)
    table = pd.DataFrame({"item_id": ["a", "b", "c", "z"], "price": [1.0, np.nan, 5.0, 9.0],
                          "level": ["easy", "hard", None, "easy"], "free": [True, False, True, False]})
    encoded = encode_table(table, "item_id", np.array(["a", "b", "c", "d"]), "items.csv")
    frame = encoded.frame
    # price: mean of the known rows a, c = 3 fills b and d; the indicator marks them
    np.testing.assert_allclose(frame["price"], [1.0, 3.0, 5.0, 3.0])
    np.testing.assert_allclose(frame["price=missing"], [0, 1, 0, 1])  # d has no row, so no price either
    np.testing.assert_allclose(frame["level=easy"], [1, 0, 0, 0])
    np.testing.assert_allclose(frame["level=hard"], [0, 1, 0, 0])
    np.testing.assert_allclose(frame["level=<missing>"], [0, 0, 1, 1])
    np.testing.assert_allclose(frame["free"], [1, 0, 1, 2 / 3], rtol=1e-6)  # bool as 0/1, d gets the mean of a, b, c
    np.testing.assert_allclose(frame["has_features"], [1, 1, 1, 0])
    report = encoded.report
    assert report["ids_unknown"] == 1 and report["unknown_examples"] == ["z"]
    assert report["ids_without_features"] == 1 and report["missing_values"] == {"price": 1, "level": 1}
    assert report["categorical"] == {"level": 2} and set(report["numeric"]) == {"price", "free"}


def test_rare_categories_share_other_and_forced_categorical():
    table = pd.DataFrame({"user_id": list("pqrst"), "code": [7, 7, 7, 3, 5]})
    encoded = encode_table(table, "user_id", np.array(list("pqrst")), "u.csv", categorical=["code"], max_categories=1)
    assert list(encoded.frame.columns) == ["code=7", "code=<other>", "code=<missing>", "has_features"]
    np.testing.assert_allclose(encoded.frame["code=<other>"], [0, 0, 0, 1, 1])


def test_bad_tables_name_the_key_or_column(tmp_path):
    with pytest.raises(DataError, match="key column 'item_id' is missing.*'id'"):
        encode_table(pd.DataFrame({"id": ["a"], "x": [1]}), "item_id", np.array(["a"]), "items.csv")
    with pytest.raises(DataError, match="none of its 1 item_id values"):
        encode_table(pd.DataFrame({"item_id": ["zz"], "x": [1]}), "item_id", np.array(["a"]), "items.csv")
    data = tiny_data()
    path = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["a"], "x": [1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="categorical_columns.*'colour'"):
        attach_side_features(data, SideFeaturesConfig(item_features=str(path), categorical_columns=["colour"]))


def test_repeated_and_blank_keys_are_reported_not_fatal():
    table = pd.DataFrame({"user_id": ["u1", "u1", "", "u3"], "x": [1.0, 2.0, 3.0, 4.0]})
    encoded = encode_table(table, "user_id", np.array(["u1", "u2", "u3"]), "u.csv")
    np.testing.assert_allclose(encoded.frame["x"], [1.0, 2.5, 4.0])  # first row of u1 kept; u2 gets the mean
    assert encoded.report["rows_repeated_key"] == 1 and encoded.report["rows_blank_key"] == 1


def learner_log(tmp_path):
    """Two learners, three courses each (2 train + 1 test by SPEC 1.9); times in seconds."""
    day = 86_400
    rows = []
    for user, offset in (("ann", 0), ("bob", 10 * day)):
        for course, start in (("c/one", 0), ("c/two", 14 * day), ("c/three", 30 * day)):
            for lesson in range(3 if user == "ann" else 1):
                t = offset + start + lesson * 100
                rows.append((user, t, f"/{course}/l{lesson}"))
            rows.append((user, offset + start + 1000, "/home"))  # ends the last lesson's time
    path = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["user_id", "timestamp", "url"]).to_csv(path, index=False)
    return path


def test_learner_features_hand_worked(tmp_path):
    from deeprec.data.ratings import RatingsConfig, rate_log

    result = rate_log(learner_log(tmp_path), RatingsConfig())
    features = result.user_features.set_index("user_id")
    ann, bob = features.loc["ann"], features.loc["bob"]
    # ann: train = c/one, c/two (3 lessons each, 100 s, 100 s, 800 s); study days 0 and 14 -> 15-day span
    assert ann["train_courses"] == 2 and ann["activity_lessons"] == 6 and ann["study_days"] == 2
    assert ann["mean_lesson_seconds"] == pytest.approx(1000 / 3)
    assert ann["study_frequency"] == pytest.approx(2 / (15 / 7))
    assert ann["completion_share"] == pytest.approx(1.0)
    # bob: one lesson of three per course seen (lessons_in = 3), 1000 s each
    assert bob["activity_lessons"] == 2 and bob["mean_lesson_seconds"] == pytest.approx(1000.0)
    assert bob["completion_share"] == pytest.approx(1 / 3)


def test_learner_features_out_of_core_equal_in_memory(tmp_path):
    from deeprec.data.ratings import RatingsConfig, rate_event_files, rate_events, read_events
    from test_ratings_reference import edge_case_log

    events = edge_case_log(3, n=2000, users=40)
    log = tmp_path / "log.csv"
    events.to_csv(log, index=False)
    cfg = RatingsConfig(min_courses=2, batch_rows=300)
    in_memory = rate_events(read_events(log), cfg, source=str(log)).user_features
    streamed = rate_event_files(log, cfg, work_dir=tmp_path, tables_on_disk=True)
    pd.testing.assert_frame_equal(streamed.user_features, in_memory, check_exact=False, rtol=1e-12)


def test_ratings_folder_has_user_features(tmp_path, monkeypatch, capsys):
    code, err = run_cli("deeprec.cli.ratings", [f"input={learner_log(tmp_path)}", f"output={tmp_path / 'out'}"],
                        monkeypatch, capsys)
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "out" / "user_features.parquet")
    assert sorted(table["user_id"]) == ["ann", "bob"] and "completion_share" in table


def test_events_data_has_learner_features_and_a_given_item_table(tmp_path):
    from deeprec.data.adapters.events import EventsDataConfig, load

    items = tmp_path / "courses.parquet"
    pd.DataFrame({"item_id": ["c/one", "c/two", "nope"], "topic": ["math", "art", "x"]}).to_parquet(items)
    data = load(EventsDataConfig(path=str(learner_log(tmp_path)), item_features=str(items), valid_share=0.0))
    assert data.user_features.shape[0] == data.n_users and "study_frequency" in data.user_features
    assert list(data.item_features.columns[:2]) == ["topic=art", "topic=math"]
    row = list(data.item_ids).index("c/three")  # not in the table: no topic, has_features 0
    assert data.item_features.loc[row, "has_features"] == 0 and data.item_features.loc[row, "topic=<missing>"] == 1
    reports = {r["side"]: r for r in data.extras["feature_reports"]}
    assert reports["item"]["ids_unknown"] == 1 and reports["user"]["ids_matched"] == 2


def feature_table(tmp_path):
    rng = np.random.default_rng(4)
    n = 900
    frame = pd.DataFrame({"user_id": rng.integers(0, 60, n), "item_id": rng.integers(0, 40, n),
                          "timestamp": rng.integers(0, 10**6, n)}).drop_duplicates(["user_id", "item_id"])
    interactions = tmp_path / "ratings.csv"
    frame.to_csv(interactions, index=False)
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": np.arange(40), "genre": rng.choice(["a", "b", "c"], 40), "length": rng.random(40)}).to_csv(items, index=False)
    users = tmp_path / "users.csv"
    pd.DataFrame({"user_id": np.arange(60), "age": rng.integers(18, 70, 60)}).to_csv(users, index=False)
    return interactions, items, users


@pytest.mark.parametrize("name", ["ncf", "lstm", "attention"])
def test_deep_models_read_user_features_and_keep_them_in_checkpoints(name, tmp_path):
    import pytorch_lightning as pl

    from deeprec.checkpoint import load_recommender, save_checkpoint
    from deeprec.data.adapters.interactions import InteractionsDataConfig, load
    from deeprec.registry import model_class

    interactions, items, users = feature_table(tmp_path)
    data = load(InteractionsDataConfig(path=str(interactions), item_features=str(items), user_features=str(users)))
    small = {"ncf": {"gmf_dim": 4, "mlp_dim": 4, "mlp_layers": [8], "use_features": True},  # on request (opt-in)
             "lstm": {"embedding_dim": 8, "hidden_dim": 8}, "attention": {"embedding_dim": 8}}[name]
    small["use_user_features"] = True
    model = model_class(name)(data.n_users, data.n_items, seed=0, **small)
    model.fit(data, trainer=pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                       enable_model_summary=False))
    assert model.n_user_features == data.user_features.shape[1] and model.n_features == data.item_features.shape[1]
    model.eval()
    users_idx = torch.arange(data.n_users)
    scores = model.score(users_idx)
    if name == "attention":  # the batched full-catalogue path adds the user vector as the training path does
        with torch.no_grad():
            reference = model.candidate_scores(model.history_of(users_idx), torch.arange(data.n_items), users_idx)
        torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-5)
    save_checkpoint(model, data, tmp_path / "m.ckpt")
    loaded, meta = load_recommender(tmp_path / "m.ckpt")
    assert meta["init_args"]["n_user_features"] == data.user_features.shape[1]
    torch.testing.assert_close(loaded.eval().score(users_idx), scores)
    # the user features reach the scores: shifting one user's features changes only that user's row
    model.user_content.values[3] += 2.0
    changed = (model.score(users_idx) - scores).abs().amax(1) > 1e-6
    assert changed[3] and changed.sum() == 1


def test_train_cli_with_feature_tables_and_a_wrong_key(tmp_path, monkeypatch, capsys):
    interactions, items, users = feature_table(tmp_path)
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={interactions}", f"data.item_features={items}",
                                              f"data.user_features={users}", "model=ncf", "model.mlp_layers=[8]",
                                              "trainer.max_epochs=1", f"run_dir={tmp_path / 'run'}"], monkeypatch, capsys)
    assert code == 0, err
    reports = json.loads((tmp_path / "run" / "features.json").read_text())["reports"]
    assert {r["side"] for r in reports} == {"item", "user"}
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"course": [1], "x": [2]}).to_csv(wrong, index=False)
    code, err = run_cli("deeprec.cli.train", ["data=interactions", f"data.path={interactions}", f"data.item_features={wrong}",
                                              "model=pop", f"run_dir={tmp_path / 'run2'}"], monkeypatch, capsys)
    assert code == 2 and "wrong.csv: the key column 'item_id' is missing" in err and err.count("\n") == 1


def test_epm_log_gives_learner_features(shared_data):
    from deeprec.data.adapters.epm import EpmDataConfig, load

    data = load(EpmDataConfig(path=str(shared_data / "epm-deeds-clickstream")))
    features = data.user_features
    assert features.shape[0] == data.n_users and (features["has_features"] == 1).all()
    assert (features["mean_lesson_seconds"] > 0).all() and features["completion_share"].between(0, 1).all()
