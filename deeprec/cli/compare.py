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

from deeprec.cli.common import CONFIG_PATH, data_config, ensure_writable_dir, load_data, model_kwargs, report_user_errors
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


def compare(cfg: DictConfig) -> "pd.DataFrame":  # noqa: F821
    from deeprec.atomic import write_text_atomic
    from deeprec.cli.train import run_training
    from deeprec.evaluation.metrics import PER_USER_METRICS
    from deeprec.evaluation.report import leaderboard, plot, to_markdown
    from deeprec.registry import BASELINES

    sections = validated_model_sections(cfg)
    data_cfg = data_config(cfg.data)
    out_dir = ensure_writable_dir(cfg.out_dir)
    data = load_data(data_cfg)
    per_user, set_metrics = {}, {}
    for name in cfg.models:
        run_cfg = copy.deepcopy(cfg)
        with open_dict(run_cfg):
            run_cfg.model = sections[name]
            run_cfg.run_dir = str(out_dir / name)
        log.info("training %s on %s", name, data.name)
        result = run_training(run_cfg, data=data)
        truth = data.truth("test")[result.test_users]
        per_user[name] = per_user_values(result.test_topk, truth, cfg.eval.ks)
        set_metrics[name] = {k: v for k, v in result.metrics.items() if k.split("@")[0] not in PER_USER_METRICS}
    table = leaderboard(per_user, set_metrics, BASELINES, cfg.report.test_metric)
    title = f"{data.name}: {data.n_users} users, {data.n_items} items, seed {cfg.seed}"
    write_text_atomic(out_dir / "leaderboard.csv", table.to_csv())
    write_text_atomic(out_dir / "leaderboard.md", to_markdown(table, cfg.report.metrics, cfg.report.test_metric, title))
    plot(table, cfg.report.plot_metrics, out_dir / "leaderboard.png", title)
    print((out_dir / "leaderboard.md").read_text())
    return table


@hydra.main(config_path=CONFIG_PATH, config_name="compare", version_base="1.3")
@report_user_errors("deeprec-compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
