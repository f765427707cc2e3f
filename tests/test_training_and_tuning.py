"""Issue 17's training pieces: checkpoints written rarely but resumable, no evaluation of an empty
valid split, TensorBoard on the epoch axis, rating weights with 0 ratings in every deep model, the
tuning budget (valid only, recorded in the run) and the across-seed leaderboard's verdict rule."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import write_random_table
from deeprec.errors import ConfigError
from deeprec.registry import DEEP_MODELS, MODELS, model_class

TINY = {
    "ncf": ["model.gmf_dim=4", "model.mlp_dim=4", "model.mlp_layers=[8]", "model.batch_size=64"],
    "lstm": ["model.embedding_dim=8", "model.hidden_dim=8", "model.max_len=6", "model.batch_size=32"],
    "autoencoder": ["model.hidden_dims=[16]", "model.latent_dim=8", "model.batch_size=16", "model.export_embeddings=false"],
    "attention": ["model.embedding_dim=8", "model.max_len=6", "model.batch_size=64"],
    "sasrec": ["model.embedding_dim=8", "model.max_len=6", "model.batch_size=32", "model.num_heads=1"],
}


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_random_table(tmp_path_factory.mktemp("table") / "table.csv", seed=11, n=1200, n_users=50, n_items=30)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_cfg(overrides):
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def deep_models() -> list[str]:
    return [name for name in MODELS if name in DEEP_MODELS or name == "sasrec"]


# -- checkpoints --------------------------------------------------------------------------------------
def test_checkpoints_reach_the_disk_only_at_the_end_by_default_and_hold_the_best_epoch(table, tmp_path, monkeypatch):
    import deeprec.checkpointing as checkpointing
    from deeprec.checkpoint import load_recommender
    from deeprec.cli.train import train

    writes = []
    real = checkpointing.atomic_torch_save
    monkeypatch.setattr(checkpointing, "atomic_torch_save", lambda obj, path: (writes.append(Path(path).name), real(obj, path)))
    run = tmp_path / "run"
    metrics = train(train_cfg(["data=interactions", f"data.path={table}", "model=ncf", *TINY["ncf"], "trainer.max_epochs=6",
                               "eval.patience=0", f"run_dir={run}", "checkpoint.every_seconds=0"]))
    assert writes == ["last.ckpt", "best.ckpt"]  # 6 epochs, one write of each (was 12 of each)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert last["epoch"] == 5
    assert best["valid_score"] == pytest.approx(max(best["valid_score"], 0.0))
    # best.ckpt is the epoch with the highest valid NDCG@10, and the run's test metrics are its own
    from deeprec.cli.common import load_data
    from deeprec.evaluation.evaluator import evaluate_recommender

    model, _ = load_recommender(run / "checkpoints" / "best.ckpt")
    data = load_data(train_cfg(["data=interactions", f"data.path={table}"]).data)
    assert evaluate_recommender(model.eval(), data, "test")["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-9)
    assert evaluate_recommender(model, data, "valid")["ndcg@10"] == pytest.approx(best["valid_score"], abs=1e-6)


def test_every_n_epochs_writes_periodically(table, tmp_path, monkeypatch):
    import deeprec.checkpointing as checkpointing
    from deeprec.cli.train import train

    epochs_written = []
    real = checkpointing.atomic_torch_save

    def record(obj, path):
        if Path(path).name == "last.ckpt":
            epochs_written.append(obj["epoch"])
        real(obj, path)

    monkeypatch.setattr(checkpointing, "atomic_torch_save", record)
    train(train_cfg(["data=interactions", f"data.path={table}", "model=ncf", *TINY["ncf"], "trainer.max_epochs=7",
                     "eval.patience=0", f"run_dir={tmp_path / 'run'}", "checkpoint.every_n_epochs=3", "checkpoint.every_seconds=0"]))
    assert epochs_written == [2, 5, 6]  # after epochs 3 and 6 (0-based 2, 5), then the end


# -- validation ---------------------------------------------------------------------------------------
def test_an_empty_valid_split_is_not_evaluated(tmp_path, monkeypatch):
    import deeprec.evaluation.callbacks as callbacks
    from deeprec.cli.train import train

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 30, 400), "item_id": rng.integers(0, 20, 400)}).drop_duplicates()
    frame["split"] = np.where(rng.random(len(frame)) < 0.8, "train", "test")
    path = tmp_path / "no_valid.csv"
    frame.to_csv(path, index=False)
    calls = []
    real = callbacks.evaluate_recommender
    monkeypatch.setattr(callbacks, "evaluate_recommender", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    metrics = train(train_cfg(["data=interactions", f"data.path={path}", "model=autoencoder", *TINY["autoencoder"],
                               "trainer.max_epochs=3", f"run_dir={tmp_path / 'run'}"]))
    assert calls == [] and metrics["ndcg@10"] >= 0.0


def test_tensorboard_epoch_scalars_are_on_the_epoch_axis(table, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from deeprec.cli.train import train

    run = tmp_path / "run"
    train(train_cfg(["data=interactions", f"data.path={table}", "model=ncf", *TINY["ncf"], "trainer.max_epochs=4",
                     "eval.patience=0", f"run_dir={run}"]))
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    for tag in ("valid/ndcg@10", "train/loss"):
        assert [e.step for e in events.Scalars(tag)] == [0, 1, 2, 3], tag


# -- rating weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ["weak", "negative"])
@pytest.mark.parametrize("name", deep_models())
def test_every_deep_model_trains_on_zero_ratings_by_either_rule(name, rule, tmp_path):
    from deeprec.cli.train import train

    rng = np.random.default_rng(3)
    n = 900
    frame = pd.DataFrame({"user_id": rng.integers(0, 40, n), "item_id": rng.integers(0, 25, n),
                          "timestamp": rng.integers(0, 10**6, n)}).drop_duplicates(["user_id", "item_id"])
    frame["rating"] = rng.choice([0.0, 1.0, 2.5, 5.0], len(frame))  # a quarter are 0 (the step penalty's)
    path = tmp_path / "rated.csv"
    frame.to_csv(path, index=False)
    metrics = train(train_cfg(["data=interactions", f"data.path={path}", f"model={name}", *TINY[name], "trainer.max_epochs=2",
                               "model.rating_weights=true", f"model.zero_rating={rule}", f"run_dir={tmp_path / 'run'}"]))
    assert 0.0 <= metrics["ndcg@10"] <= 1.0


def test_rating_weights_rule_by_hand():
    from deeprec.models.base import DeepModelConfig, rating_weights

    ratings = np.array([0.0, 2.0, 4.0, 0.0, 6.0])  # positive mean 4
    assert rating_weights(ratings, DeepModelConfig()).tolist() == [1, 1, 1, 1, 1]
    weak = DeepModelConfig(rating_weights=True, zero_weight=0.2)
    assert rating_weights(ratings, weak).tolist() == pytest.approx([0.2, 0.5, 1.0, 0.2, 1.5])
    negative = DeepModelConfig(rating_weights=True, zero_rating="negative")
    assert rating_weights(ratings, negative).tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 1.5])
    with pytest.raises(ConfigError, match="zero_rating"):
        DeepModelConfig(zero_rating="ignore").check()


# -- tuning ------------------------------------------------------------------------------------------
def test_every_search_space_names_fields_of_its_model():
    from deeprec.tuning import search_space

    names = [p.name[:-5] for p in resources.files("deeprec.conf").joinpath("tuning").iterdir() if p.name.endswith(".yaml")]
    assert set(DEEP_MODELS) <= set(names)
    for name in names:
        fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
        assert set(search_space(name)) <= fields


def compare_tuned(table: Path, out: Path, monkeypatch, models: str, fail_call: int | None = None,
                  error: str = "") -> list[bool]:
    """deeprec-compare tune=3 on `table` with run_training spied on: each call's `test` flag, in order;
    call number `fail_call` (1-based) raises ConfigError(error) instead of training."""
    import deeprec.cli.train as train_module
    from deeprec.cli.compare import compare

    calls = []
    real = train_module.run_training

    def spy(cfg, data=None, callbacks=(), test=True):
        calls.append(test)
        if len(calls) == fail_call:
            raise ConfigError(error)
        return real(cfg, data=data, callbacks=callbacks, test=test)

    monkeypatch.setattr(train_module, "run_training", spy)
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("compare", overrides=["data=interactions", f"data.path={table}", f"models=[{models}]", "tune=3",
                                            f"out_dir={out}"])
    compare(cfg)
    return calls


def test_tuning_uses_valid_only_and_records_the_chosen_values(table, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    splits_seen = compare_tuned(table, out, monkeypatch, "pop,ease")
    record = json.loads((out / "tuning" / "ease.json").read_text())
    assert len(record["trials"]) == 3 and record["chosen"] and set(record["chosen"]) == {"l2", "binary"}
    assert record["trials"][0]["params"] == {"l2": 200.0, "binary": True}  # the untuned config is trial 0
    assert record["best_value"] == max(t["value"] for t in record["trials"])
    assert splits_seen == [False, False, False, True, True]  # 3 ease trials (pop has no space), then both runs
    saved = (out / "ease" / "config.yaml").read_text()
    assert f"l2: {record['chosen']['l2']}" in saved


def test_a_trial_the_data_cannot_take_is_recorded_as_failed_and_the_study_goes_on(table, tmp_path, monkeypatch):
    """A sampled combination that raises ConfigError (e.g. attention use_ids=false without item features)
    fails that trial only: it is recorded with its reason, and the best completed trial is chosen."""
    out = tmp_path / "cmp"
    calls = compare_tuned(table, out, monkeypatch, "ease", fail_call=2, error="model.l2 this data cannot take")
    record = json.loads((out / "tuning" / "ease.json").read_text())
    states = [t["state"] for t in record["trials"]]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert record["trials"][1]["error"] == "model.l2 this data cannot take"
    assert record["best_value"] == max(t["value"] for t in record["trials"] if t["state"] == "COMPLETE")
    assert calls == [False, False, False, True]  # three trials, then the final run with the test split
    assert (out / "ease" / "metrics.json").exists()


def test_an_untuned_config_that_fails_its_trial_stops_the_tuning_with_its_error(table, tmp_path, monkeypatch):
    """Trial 0 is the untuned config, already checked against the data: its ConfigError (a folder in
    use, a setting) is the run's error, never a silently untuned 'tuned' result."""
    with pytest.raises(ConfigError, match="untuned config failed its trial: run_dir is in use"):
        compare_tuned(table, tmp_path / "cmp", monkeypatch, "ease", fail_call=1, error="run_dir is in use by another run")


def test_the_attention_search_drops_use_ids_false_where_the_data_has_no_item_features():
    from omegaconf import OmegaConf

    from deeprec.tuning import search_space

    space = search_space("attention")
    assert "use_ids" in space
    cls = model_class("attention")
    plain = type("Data", (), {"item_features": None})()
    featured = type("Data", (), {"item_features": pd.DataFrame({"f": [1.0]})})()
    on, off = OmegaConf.create({"use_features": True}), OmegaConf.create({"use_features": False})
    assert "use_ids" not in cls.tuning_space(space, on, plain)
    assert "use_ids" not in cls.tuning_space(space, off, featured)
    assert cls.tuning_space(space, on, featured) == space
    assert set(cls.tuning_space(space, on, plain)) == set(space) - {"use_ids"}


# -- seeds ---------------------------------------------------------------------------------------------
def test_across_seeds_calls_a_difference_real_only_when_every_seed_agrees():
    from deeprec.evaluation.report import across_seeds

    rng = np.random.default_rng(0)
    base = {seed: rng.random(300) * 0.5 for seed in (1, 2, 3)}
    per_seed, tables = {}, {}
    for seed in (1, 2, 3):
        values = {
            "ease": base[seed],
            "good": base[seed] + 0.2,  # better in every seed
            "lucky": base[seed] + (0.2 if seed == 1 else 0.0) + rng.normal(0, 1e-3, 300),  # better in one seed only
            "pop": base[seed] - 0.3,  # a worse baseline
        }
        per_seed[seed] = {m: {"ndcg@10": v} for m, v in values.items()}
        tables[seed] = pd.DataFrame({"ndcg@10": {m: v.mean() for m, v in values.items()}})
    summary = across_seeds(per_seed, tables, ("ease", "pop"), "ndcg@10")
    assert summary.loc["ease", "verdict"] == "(reference)"
    assert summary.loc["good", "verdict"] == "better"
    assert summary.loc["lucky", "verdict"] == "not consistent"
    assert summary.loc["pop", "verdict"] == "worse"
    means = [tables[s].loc["good", "ndcg@10"] for s in (1, 2, 3)]
    assert summary.loc["good", "ndcg@10"] == pytest.approx(np.mean(means))
    half = 4.302652729911275 * np.std(means, ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert summary.loc["good", "ndcg@10_hi"] == pytest.approx(np.mean(means) + half)


def test_compare_with_seeds_and_resplit_writes_per_seed_runs(table, tmp_path):
    from deeprec.cli.compare import compare

    out = tmp_path / "cmp"
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("compare", overrides=["data=interactions", f"data.path={table}", "data.split.strategy=random",
                                            "models=[pop,itemknn]", "seeds=[1,2]", "resplit=true", f"out_dir={out}"])
    summary = compare(cfg)
    assert list(summary.columns[:5]) == ["ndcg@10", "ndcg@10_lo", "ndcg@10_hi", "seed1", "seed2"]
    for seed in (1, 2):
        assert (out / f"seed{seed}" / "leaderboard.md").exists()
        assert (out / "pop" / f"seed{seed}" / "metrics.json").exists()
    # resplit: each seed drew its own random hold-out
    split1 = (out / "pop" / "seed1" / "config.yaml").read_text()
    assert "seed: 1" in split1 and "seed: 2" in (out / "pop" / "seed2" / "config.yaml").read_text()
    assert "every seed" in (out / "leaderboard.md").read_text()


def test_bad_seed_and_tune_values_fail_fast(table, tmp_path):
    from deeprec.cli.compare import run_seeds

    with initialize_config_module("deeprec.conf", version_base="1.3"):
        for bad, match in ((["seeds=[1,1]"], "distinct"), (["tune=-1"], "tune"), (["tune_timeout=0"], "tune_timeout")):
            cfg = compose("compare", overrides=bad)
            with pytest.raises(ConfigError, match=match):
                run_seeds(cfg)


@pytest.mark.parametrize("key", ["checkpoint.every_n_epochs=-1", "checkpoint.every_seconds=-5"])
def test_a_negative_checkpoint_interval_fails_fast(table, key):
    from deeprec.cli.train import validate_run

    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=interactions", f"data.path={table}", "model=pop", key])
    with pytest.raises(ConfigError, match="must not be negative"):
        validate_run(cfg)
