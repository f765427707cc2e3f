"""deeprec-compare: train every listed model on one dataset, evaluate them with the one shared
evaluation, and write a leaderboard (Markdown + CSV) with 95% CIs and paired significance against
the best baseline, a PNG plot, and one TensorBoard run per model under out_dir/<model>/."""

from __future__ import annotations

import copy
import logging
from importlib import resources

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from pathlib import Path

from deeprec.cli.common import CONFIG_PATH, build_model, data_config, load_data, model_kwargs, report_user_errors
from deeprec.errors import ConfigError

log = logging.getLogger("deeprec.compare")

def model_section(name: str, overrides: DictConfig | None) -> DictConfig:
    """conf/model/<name>.yaml (from the installed package) merged with the user's overrides."""
    from deeprec.registry import MODELS

    if name not in MODELS:
        raise ConfigError(f"models: unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    text = resources.files("deeprec.conf").joinpath("model", f"{name}.yaml").read_text()
    section = OmegaConf.create(text)
    if overrides is not None and name in overrides:
        section = OmegaConf.merge(section, overrides[name])
    return section


def validated_model_sections(cfg: DictConfig) -> dict[str, DictConfig]:
    """Every model's section, checked before any training: unknown model names, overrides for a
    model not in `models`, and bad hyper-parameter keys or values all fail at once."""
    overrides = cfg.get("model_overrides") or {}
    stray = sorted(set(overrides) - set(cfg.models))
    if stray:
        raise ConfigError(f"model_overrides: {', '.join(stray)} not in models={list(cfg.models)}")
    sections = {name: model_section(name, overrides) for name in cfg.models}
    for section in sections.values():
        model_kwargs(section)
    return sections


def per_user_values(topk, truth, ks) -> dict[str, np.ndarray]:
    """Per-user metric vectors (keys like ndcg@10) for the paired tests and the CIs."""
    from deeprec.evaluation.metrics import PER_USER_METRICS, per_user_metric

    return {f"{m}@{k}": per_user_metric(topk, truth, m, k) for k in ks for m in PER_USER_METRICS}


LEADERBOARD_FILES = ("leaderboard.csv", "leaderboard.md", "leaderboard.png")


def compare(cfg: DictConfig) -> "pd.DataFrame":  # noqa: F821
    """Check every model against the data, then train them one by one; the leaderboard of the models
    that finished is written even when a later one fails (the failure is re-raised after it)."""
    from deeprec.cli.train import run_inputs
    from deeprec.data.intake import IntakeConfig, report_data
    from deeprec.outputs import claim_output

    sections = validated_model_sections(cfg)
    data_cfg = data_config(cfg.data)
    inputs = [path for section in sections.values() for path in run_inputs(cfg.data, section)]
    with claim_output(cfg.out_dir, "deeprec-compare", key="out_dir", inputs=inputs) as out:
        data = load_data(data_cfg)
        report_data(data, IntakeConfig(bool(cfg.get("strict", False)), float(cfg.get("max_reject_share", 0.5))))
        for name in cfg.models:  # a model the data cannot train fails here, before any training
            build_model(sections[name], data, seed=cfg.seed).check_data(data)
        out.remove_owned(names=LEADERBOARD_FILES)
        out.own(LEADERBOARD_FILES)
        return train_and_rank(cfg, sections, data, out.path)


def train_and_rank(cfg: DictConfig, sections: dict[str, DictConfig], data, out_dir: Path) -> "pd.DataFrame":  # noqa: F821
    from deeprec.cli.train import run_training
    from deeprec.evaluation.metrics import PER_USER_METRICS

    per_user, set_metrics = {}, {}
    for name in cfg.models:
        run_cfg = copy.deepcopy(cfg)
        with open_dict(run_cfg):
            run_cfg.model = sections[name]
            run_cfg.run_dir = str(out_dir / name)
        log.info("training %s on %s", name, data.name)
        try:
            result = run_training(run_cfg, data=data)
        except BaseException as exc:
            if per_user:
                write_leaderboard(cfg, data, per_user, set_metrics, out_dir, failed=(name, exc))
            raise
        truth = data.truth("test")[result.test_users]
        per_user[name] = per_user_values(result.test_topk, truth, cfg.eval.ks)
        set_metrics[name] = {k: v for k, v in result.metrics.items() if k.split("@")[0] not in PER_USER_METRICS}
    table = write_leaderboard(cfg, data, per_user, set_metrics, out_dir)
    print((out_dir / "leaderboard.md").read_text())
    return table


def write_leaderboard(cfg, data, per_user, set_metrics, out_dir: Path, failed=None) -> "pd.DataFrame":  # noqa: F821
    """leaderboard.{csv,md,png} of the models in per_user; `failed` = (model, exception) notes the one that stopped."""
    from deeprec.atomic import write_text_atomic
    from deeprec.evaluation.report import leaderboard, plot, to_markdown
    from deeprec.registry import BASELINES

    table = leaderboard(per_user, set_metrics, BASELINES, cfg.report.test_metric)
    title = f"{data.name}: {data.n_users} users, {data.n_items} items, seed {cfg.seed}"
    markdown = to_markdown(table, cfg.report.metrics, cfg.report.test_metric, title)
    if failed is not None:
        name, exc = failed
        markdown += (f"\n\n**Incomplete:** {name} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                     f"the models after it in models={list(cfg.models)} did not run.\n")
        log.warning("WARNING: %s failed; the leaderboard in %s has the %d models that finished", name, out_dir, len(per_user))
    write_text_atomic(out_dir / "leaderboard.csv", table.to_csv())
    write_text_atomic(out_dir / "leaderboard.md", markdown)
    plot(table, cfg.report.plot_metrics, out_dir / "leaderboard.png", title)
    return table


@hydra.main(config_path=CONFIG_PATH, config_name="compare", version_base="1.3")
@report_user_errors("deeprec-compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
