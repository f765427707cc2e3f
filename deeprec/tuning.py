"""A built-in tuning budget: `tune=N` runs N Optuna trials per model on the VALID split only.

Each model's search space is conf/tuning/<model>.yaml (every key a field of the model's config):

    lr: {low: 0.0003, high: 0.01, log: true}      # float (int when low and high are ints)
    dropout: {low: 0.0, high: 0.7}
    variant: {choices: [dae, vae]}                  # categorical

A trial trains the model with the sampled values (the run's first seed) and reports valid/<monitor>
after every epoch; Optuna's median pruner stops trials that trail the earlier ones. The study is seeded
by the run's seed (TPE), bounded by `n_trials` and `timeout` seconds, and never sees the test split.
Each model first restricts the space to what the data can take (Recommender.tuning_space: the
attention ranker drops use_ids=false without item features). A trial that still raises a
ConfigError is recorded as FAIL with its reason and the study goes on, unless it is trial 0 (the
untuned config, already checked against the data): then the error is the run's, and it is raised.
The chosen values are written to <out_dir>/tuning/<model>.json (every trial) and become the model's
overrides, so each final run's config.yaml holds them.

Optuna is a dependency (not an extra) because `tune=N` is a flag of deeprec-train and deeprec-compare.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from deeprec.atomic import write_text_atomic
from deeprec.errors import ConfigError

log = logging.getLogger("deeprec.tuning")


def search_space(name: str) -> dict[str, dict[str, Any]]:
    """conf/tuning/<name>.yaml as {key: spec}; {} when the model has no search space. Each spec is
    {choices: [...]} or {low, high[, log]}; a key that is not a field of the model is a ConfigError."""
    import dataclasses

    from deeprec.registry import model_class

    path = resources.files("deeprec.conf").joinpath("tuning", f"{name}.yaml")
    if not path.is_file():
        return {}
    space = OmegaConf.to_container(OmegaConf.create(path.read_text())) or {}
    fields = {f.name for f in dataclasses.fields(model_class(name).config_class)}
    for key, spec in space.items():
        if key not in fields:
            raise ConfigError(f"conf/tuning/{name}.yaml: {key!r} is not a field of model={name}; valid keys: {sorted(fields)}")
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ConfigError(f"conf/tuning/{name}.yaml: {key} needs {{choices: [...]}} or {{low: .., high: ..}}")
    return space


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's values for every key of `space` (Optuna's suggest_* calls)."""
    values = {}
    for key, spec in space.items():
        if "choices" in spec:
            choices = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in spec["choices"]]
            picked = trial.suggest_categorical(key, choices)
            values[key] = json.loads(picked) if isinstance(picked, str) and picked[:1] in "[{" else picked
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("float", False):
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log", False)))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    return values


class OptunaPruning(pl.Callback):
    """Report valid/<monitor> to the trial after every epoch; stop the fit when Optuna prunes it."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def tune_model(cfg: DictConfig, name: str, section: DictConfig, data, n_trials: int, timeout: float | None,
               out_dir: Path) -> dict[str, Any]:
    """Tune model `name` (its merged config `section`) on data's valid split. Returns the best
    values (possibly {} when no trial beat the untuned config or the model has no search space)
    and writes out_dir/tuning/<name>.json."""
    import optuna

    from deeprec.cli.train import run_training

    from deeprec.registry import model_class

    space = model_class(name).tuning_space(search_space(name), section, data)
    if not space or n_trials < 1:
        return {}
    monitor = f"valid/{cfg.eval.monitor}"
    trials_dir = out_dir / "tuning" / name
    sampler = optuna.samplers.TPESampler(seed=int(cfg.seed))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    untuned = {k: json.dumps(v) if isinstance(v, (list, dict)) else v  # categorical lists travel as JSON text
               for k, v in OmegaConf.to_container(section).items() if k in space}
    study.enqueue_trial(untuned, skip_if_exists=True)  # the untuned config is the first trial
    started = time.monotonic()

    def objective(trial) -> float:
        values = suggest(trial, space)
        run_cfg = copy.deepcopy(cfg)
        with open_dict(run_cfg):
            run_cfg.model = OmegaConf.merge(section, values)
            run_cfg.run_dir = str(trials_dir / f"trial-{trial.number:03d}")
            run_cfg.resume = False
            run_cfg.tune = 0  # a trial is one plain run
        pruning = OptunaPruning(trial, monitor)
        try:
            result = run_training(run_cfg, data=data, callbacks=[pruning], test=False)
        except ConfigError as error:  # a combination this data cannot take (e.g. use_ids=false, no item features)
            trial.set_user_attr("error", str(error))
            log.warning("%s trial %d skipped (recorded as FAIL): %s", name, trial.number, error)
            raise
        value = float(result.valid_metrics.get(cfg.eval.monitor, float("nan")))
        if pruning.pruned:
            raise optuna.TrialPruned()
        return value if math.isfinite(value) else 0.0

    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(FloatingPointError, ConfigError))
    first = study.trials[0] if study.trials else None
    if first is not None and first.state == optuna.trial.TrialState.FAIL and "error" in first.user_attrs:
        # the untuned config passed check_data, so its failure is the run's (a folder, a setting), not the values'
        raise ConfigError(f"tune: model={name}'s untuned config failed its trial: {first.user_attrs['error']}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if finished else None
    chosen = {} if best is None else suggest(optuna.trial.FixedTrial(best.params), space)
    record = {
        "model": name, "monitor": monitor, "n_trials": n_trials, "timeout_s": timeout,
        "seconds": round(time.monotonic() - started, 1), "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number, "chosen": chosen,
        "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                    **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {})} for t in study.trials],
    }
    out = out_dir / "tuning" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(record, indent=2, default=str))
    log.info("tuned %s: valid %s = %s with %s (%d trials, %.0f s)", name, cfg.eval.monitor,
             record["best_value"], chosen, len(study.trials), record["seconds"])
    return chosen
