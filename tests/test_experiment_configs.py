"""The leaderboard experiments (conf/experiment/compare_*.yaml) compose, and every tuned value in their
model_overrides is a valid, well-typed field of that model's config_class, so a typo fails CI."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from deeprec.cli.common import data_config, model_kwargs
from deeprec.cli.compare import model_section
from deeprec.config import validate_section
from deeprec.errors import ConfigError
from deeprec.registry import BASELINES, DEEP_MODELS, model_class

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("synthetic", "coursera", "movielens", "epm")


def compose_experiment(name: str, overrides: tuple[str, ...] = ()):
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        return compose("compare", overrides=[f"+experiment=compare_{name}", *overrides])


def invalid_override_keys(cfg) -> list[str]:
    """'model.key' for every model_overrides key that is not a field of the model's config_class."""
    bad = []
    for name, section in cfg.model_overrides.items():
        fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
        bad += [f"{name}.{key}" for key in section if key not in fields]
    return bad


@pytest.mark.parametrize("data", EXPERIMENTS)
def test_experiment_composes_with_its_data_and_out_dir(data):
    cfg = compose_experiment(data)
    assert cfg.data.name == data
    assert cfg.out_dir == f"runs/leaderboard-{data}"
    assert cfg.seed == 1
    data_config(cfg.data)  # the data section validates against its adapter's schema


@pytest.mark.parametrize("data", EXPERIMENTS)
def test_experiment_lists_every_baseline_and_deep_model(data):
    models = list(compose_experiment(data).models)
    assert len(models) == len(set(models))
    assert set(BASELINES) | set(DEEP_MODELS) <= set(models)


def test_linucb_is_on_its_home_dataset():
    assert "linucb" in compose_experiment("coursera").models


@pytest.mark.parametrize("data", EXPERIMENTS)
def test_tuned_overrides_are_valid_fields_with_valid_types(data):
    cfg = compose_experiment(data)
    assert invalid_override_keys(cfg) == []
    for name in cfg.models:
        merged = model_section(name, cfg.model_overrides)
        assert merged.name == name
        model_kwargs(merged)  # raises ConfigError on a bad type or value kind
        for key, value in cfg.model_overrides.get(name, {}).items():
            assert merged[key] == value  # the tuned value reaches the model section
    assert set(cfg.model_overrides) <= set(cfg.models)


def test_a_misspelt_tuned_key_is_caught():
    cfg = compose_experiment("coursera", ("+model_overrides.ncf.lrr=0.01",))
    assert invalid_override_keys(cfg) == ["ncf.lrr"]
    with pytest.raises(ConfigError, match="lrr"):
        model_kwargs(model_section("ncf", cfg.model_overrides))


def test_a_badly_typed_tuned_value_is_caught():
    section = OmegaConf.create({"name": "ease", "l2": "two hundred"})
    with pytest.raises(ConfigError, match="two hundred"):
        validate_section(section, model_class("ease").config_class, "model=ease")


def test_run_script_is_valid_bash_and_runs_every_experiment():
    script = REPO / "scripts" / "run_leaderboards.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for data in EXPERIMENTS:
        assert data in text
