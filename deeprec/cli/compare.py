"""deeprec-compare: train every listed model on one dataset, evaluate them with the one shared
evaluation, and write a leaderboard (Markdown + CSV) with 95% CIs and paired significance against
the best baseline, a PNG plot, and one TensorBoard run per model under out_dir/<model>/.

`seeds=[1,2,3]` trains every model once per seed (runs in out_dir/<model>/seed<k>/, per-seed
leaderboards in out_dir/seed<k>/) and writes the across-seed leaderboard: the mean over seeds with a
t-interval, and a difference marked real only when it holds in every seed. `resplit=true` also draws
another random hold-out per seed (data with a random split). `tune=N` first runs N Optuna trials per
model on the valid split (deeprec.tuning, `tune_timeout` seconds each) and trains with the values chosen.
"""

from __future__ import annotations

import copy
import logging
from importlib import resources
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

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


def per_user_values(topk, truth, ks, segments: np.ndarray | None = None, segment_metric: str = "ndcg@10") -> dict[str, np.ndarray]:
    """Per-user metric vectors (keys like ndcg@10) for the paired tests and the CIs; with `segments`
    (a label per row of topk) also `segment/<name>/<segment_metric>` over each segment's users."""
    from deeprec.evaluation.metrics import PER_USER_METRICS, per_user_metric

    values = {f"{m}@{k}": per_user_metric(topk, truth, m, k) for k in ks for m in PER_USER_METRICS}
    if segments is not None and segment_metric in values:
        for name in np.unique(segments):  # a handful of segments
            values[f"segment/{name}/{segment_metric}"] = values[segment_metric][segments == name]
    return values


def run_seeds(cfg: DictConfig) -> list[int]:
    """The seeds to train with: `seeds` when given, else [seed]; checked with tune / tune_timeout."""
    seeds = list(cfg.get("seeds") or [cfg.seed])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds} must be a list of distinct integers, e.g. seeds=[1,2,3]")
    if int(cfg.get("tune") or 0) < 0:
        raise ConfigError(f"tune={cfg.tune} must be 0 (no tuning) or the number of trials per model")
    timeout = cfg.get("tune_timeout")
    if timeout is not None and float(timeout) <= 0:
        raise ConfigError(f"tune_timeout={timeout} must be a positive number of seconds per model, or null")
    return seeds


def data_for_seed(cfg: DictConfig, seed: int):
    """The data config of one seed's run: with resplit=true, a random hold-out drawn with that seed
    (the adapter's `seed`, or `split.seed` of a random split); a temporal split has nothing to redraw."""
    section = copy.deepcopy(cfg.data)
    if cfg.get("resplit"):
        with open_dict(section):
            if "split" in section and section.split.get("strategy") == "random":
                section.split.seed = seed
            elif "seed" in section and "holdout_share" in section:
                section.seed = seed
    return data_config(section)


LEADERBOARD_FILES = ("leaderboard.csv", "leaderboard.md", "leaderboard.png")


def compare_files(cfg: DictConfig, seeds: list[int]) -> list[str]:
    """Every file of out_dir the compare itself writes (the runs' folders are deeprec-train's own)."""
    files = list(LEADERBOARD_FILES)
    if len(seeds) > 1:
        files += [f"seed{seed}/leaderboard.{kind}" for seed in seeds for kind in ("csv", "md")]
    if cfg.get("tune"):
        files += [f"tuning/{name}.json" for name in cfg.models] + ["tuning/chosen.yaml"]
    return files


def compare(cfg: DictConfig) -> "pd.DataFrame":  # noqa: F821
    """Check every model against the data, then train them one by one (per seed, after tuning); the
    leaderboard of the models that finished is written even when a later one fails (the failure is
    re-raised after it)."""
    from deeprec.cli.train import run_inputs
    from deeprec.data.intake import IntakeConfig, report_data
    from deeprec.outputs import claim_output

    sections = validated_model_sections(cfg)
    seeds = run_seeds(cfg)
    data_cfgs = {seed: data_for_seed(cfg, seed) for seed in seeds}
    inputs = [path for section in sections.values() for path in run_inputs(cfg.data, section)]
    with claim_output(cfg.out_dir, "deeprec-compare", key="out_dir", inputs=inputs) as out:
        loaded = {}

        def data_of(seed):
            key = repr(data_cfgs[seed])
            if key not in loaded:
                loaded.clear()  # one dataset in memory at a time
                loaded[key] = load_data(data_cfgs[seed])
            return loaded[key]

        data = data_of(seeds[0])
        report_data(data, IntakeConfig(bool(cfg.get("strict", False)), float(cfg.get("max_reject_share", 0.5))))
        for name in cfg.models:  # a model the data cannot train fails here, before any training
            build_model(sections[name], data, seed=seeds[0]).check_data(data)
        files = compare_files(cfg, seeds)
        out.remove_owned(names=files)
        out.own(files)
        if len(seeds) > 1:
            out.make_folders(*[f"seed{seed}" for seed in seeds])
        if cfg.get("tune"):
            out.make_folders("tuning")
        return train_and_rank(cfg, sections, seeds, data_of, out.path, data_cfgs)


def train_and_rank(cfg: DictConfig, sections: dict[str, DictConfig], seeds: list[int], data_of,
                   out_dir: Path, data_cfgs: dict) -> "pd.DataFrame":  # noqa: F821
    """Tune (tune=N), train every model for every seed (data_cfgs: each seed's data config, from
    data_for_seed), write the leaderboards; returns the last one."""
    from deeprec.atomic import write_text_atomic
    from deeprec.cli.train import run_training, tuned_config
    from deeprec.evaluation.metrics import PER_USER_METRICS
    from deeprec.evaluation.report import across_seeds, across_seeds_markdown, plot
    from deeprec.evaluation.segments import user_segments
    from deeprec.registry import BASELINES, ENSEMBLES

    multi = len(seeds) > 1
    if cfg.get("tune"):  # deeprec-train's tuning, once per model on the first seed (compare_files owns tuning/)
        tune_cfg = copy.deepcopy(cfg)
        for name in cfg.models:
            with open_dict(tune_cfg):
                tune_cfg.seed = seeds[0]
                tune_cfg.model = sections[name]
            sections[name] = tuned_config(None, tune_cfg, data_of(seeds[0]), out_dir).model
        write_text_atomic(out_dir / "tuning" / "chosen.yaml",
                          OmegaConf.to_yaml(OmegaConf.create({n: OmegaConf.to_container(sections[n]) for n in cfg.models})))
    segment_metric = cfg.report.get("segment_metric", "ndcg@10")
    per_seed, tables = {}, {}
    for seed in seeds:
        data = data_of(seed)
        seed_dir = out_dir / f"seed{seed}" if multi else out_dir
        per_user, set_metrics = {}, {}
        data_section = OmegaConf.structured(data_cfgs[seed]) if cfg.get("resplit") else cfg.data
        for name in cfg.models:
            run_cfg = copy.deepcopy(cfg)
            with open_dict(run_cfg):
                run_cfg.model = sections[name]
                run_cfg.seed = seed
                run_cfg.tune = 0  # tuned above, once for every seed
                run_cfg.data = data_section
                run_cfg.run_dir = str(out_dir / name / f"seed{seed}") if multi else str(out_dir / name)
            log.info("training %s on %s (seed %d)", name, data.name, seed)
            try:
                result = run_training(run_cfg, data=data)
            except BaseException as exc:
                if per_user:
                    write_leaderboard(cfg, data, per_user, set_metrics, seed_dir, seed, failed=(name, exc), with_plot=not multi)
                raise
            truth = data.truth("test")[result.test_users]
            segments = user_segments(data, cfg.eval.get("segments", "auto"))
            labels = None if segments is None else segments["segment"].to_numpy()[result.test_users]
            per_user[name] = per_user_values(result.test_topk, truth, cfg.eval.ks, labels, segment_metric)
            set_metrics[name] = {k: v for k, v in result.metrics.items()
                                 if k.split("/")[-1].split("@")[0] not in PER_USER_METRICS and not k.endswith("/n_users")}
        table = write_leaderboard(cfg, data, per_user, set_metrics, seed_dir, seed, with_plot=not multi)
        if not multi:
            print((out_dir / "leaderboard.md").read_text())
            return table
        per_seed[seed], tables[seed] = per_user, table
    summary = across_seeds(per_seed, tables, BASELINES, cfg.report.test_metric, ENSEMBLES)
    title = f"{data.name}: {data.n_users} users, {data.n_items} items, seeds {seeds}" + (f", tune={cfg.tune}" if cfg.get("tune") else "")
    write_text_atomic(out_dir / "leaderboard.csv", summary.to_csv())
    write_text_atomic(out_dir / "leaderboard.md", across_seeds_markdown(summary, cfg.report.test_metric, title))
    plot(summary, [cfg.report.test_metric], out_dir / "leaderboard.png", title)
    print((out_dir / "leaderboard.md").read_text())
    return summary


def write_leaderboard(cfg, data, per_user, set_metrics, out_dir: Path, seed: int, failed=None,
                      with_plot: bool = True) -> "pd.DataFrame":  # noqa: F821
    """leaderboard.{csv,md[,png]} of the models in per_user; `failed` = (model, exception) notes the one that stopped."""
    from deeprec.atomic import write_text_atomic
    from deeprec.evaluation.report import leaderboard, plot, to_markdown
    from deeprec.registry import BASELINES, ENSEMBLES

    table = leaderboard(per_user, set_metrics, BASELINES, cfg.report.test_metric, ENSEMBLES)
    title = f"{data.name}: {data.n_users} users, {data.n_items} items, seed {seed}"
    markdown = to_markdown(table, cfg.report.metrics, cfg.report.test_metric, title, cfg.report.get("segment_metric", "ndcg@10"))
    if failed is not None:
        name, exc = failed
        markdown += (f"\n\n**Incomplete:** {name} failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                     f"the models after it in models={list(cfg.models)} did not run.\n")
        log.warning("WARNING: %s failed; the leaderboard in %s has the %d models that finished", name, out_dir, len(per_user))
    write_text_atomic(out_dir / "leaderboard.csv", table.to_csv())
    write_text_atomic(out_dir / "leaderboard.md", markdown)
    if with_plot:
        plot(table, cfg.report.plot_metrics, out_dir / "leaderboard.png", title)
    return table


@hydra.main(config_path=CONFIG_PATH, config_name="compare", version_base="1.3")
@report_user_errors("deeprec-compare")
def main(cfg: DictConfig) -> None:
    compare(cfg)


if __name__ == "__main__":
    main()
