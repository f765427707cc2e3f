"""deeprec-train: compose data + model + trainer, fit, evaluate on the test split, save.

Writes into run_dir: checkpoints/last.ckpt and best.ckpt, TensorBoard events (tensorboard/),
metrics.json (the shared evaluation of the test split, overall and per user segment),
id_maps/{users,items}.parquet, groups.parquet (each user's segment) and segments.md (the
per-segment table), and features.json when the data has side features.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from deeprec.atomic import link_atomic, write_json_atomic, write_parquet_atomic, write_text_atomic
from deeprec.cli.common import (
    CONFIG_PATH,
    TrainerConfig,
    build_model,
    data_config,
    data_inputs,
    load_data,
    model_kwargs,
    plain,
    report_user_errors,
    run_device,
)
from deeprec.config import validate_section
from deeprec.data.intake import IntakeConfig, report_data, report_evaluated
from deeprec.errors import ConfigError
from deeprec.evaluation.config import EvalConfig

log = logging.getLogger("deeprec.train")


@dataclass
class CheckpointConfig:
    every_n_epochs: int = 0  # write last.ckpt + best.ckpt every N epochs (0: not by count)
    every_seconds: float = 120.0  # ... and when this long has passed since the last write (0: not by time)

    def check(self) -> "CheckpointConfig":
        if self.every_n_epochs < 0 or self.every_seconds < 0:
            raise ConfigError("checkpoint.every_n_epochs and checkpoint.every_seconds must not be negative")
        return self


@dataclass
class RunConfig:
    """The keys of train.yaml besides data / model / trainer (compare.yaml adds its own)."""

    run_dir: str = "runs/run"
    seed: int = 0
    device: str | None = None  # cpu | cuda | cuda:N | auto; null: cuda when the trainer asks for a GPU
    resume: bool = False
    strict: bool = False  # more than max_reject_share of the rows rejected is an error, not a warning
    max_reject_share: float = 0.5
    tune: int = 0  # Optuna trials on the valid split before the run (deeprec.tuning)
    tune_timeout: float | None = None  # seconds of tuning
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


def validate_run(cfg: DictConfig) -> None:
    """Fail fast, in one line, on a bad seed / resume / eval value or a bad trainer section."""
    keys = {f.name for f in dataclasses.fields(RunConfig)}
    run = validate_section({k: v for k, v in plain(cfg).items() if k in keys}, RunConfig, "config")
    run.eval.check()
    IntakeConfig(run.strict, run.max_reject_share).check()
    run.checkpoint.check()
    trainer = validate_section(cfg.trainer, TrainerConfig, "trainer")
    if trainer.max_epochs == 0 or trainer.max_epochs < -1:
        raise ConfigError(f"trainer.max_epochs={trainer.max_epochs} trains nothing; give 1 or more (-1: until early stopping)")
    run_device(cfg)


def check_resume_matches(last: Path, model) -> None:
    """Resume only from a checkpoint of the same model and hyper-parameters (read with weights_only)."""
    from deeprec.checkpoint import read_checkpoint
    from deeprec.errors import CheckpointError

    meta = read_checkpoint(last)["deeprec"]
    want = model.init_args()
    if meta.get("model") != model.name:
        raise CheckpointError(f"resume=true: {last} holds model {meta.get('model')!r}, not {model.name!r}; "
                              "use another run_dir or resume=false")
    have = meta.get("init_args", {})
    differ = sorted(k for k in set(want) | set(have) if have.get(k) != want.get(k))
    if differ:
        detail = ", ".join(f"{k}: {have.get(k)!r} in the checkpoint, {want.get(k)!r} now" for k in differ)
        raise CheckpointError(f"resume=true: {last} was trained with other settings ({detail}); "
                              "use another run_dir or resume=false")


def write_id_maps(data, run_dir: Path) -> None:
    """id_maps/users.parquet and items.parquet: index -> the user's own id."""
    out = run_dir / "id_maps"
    out.mkdir(exist_ok=True)
    for kind, ids in (("users", data.user_ids), ("items", data.item_ids)):
        write_parquet_atomic(pd.DataFrame({"index": range(len(ids)), "id": [str(i) for i in ids]}), out / f"{kind}.parquet")


def monitored_metric(cfg: DictConfig, data) -> str | None:
    """valid/<eval.monitor>, or None when the valid split has no user (nothing to monitor)."""
    return f"valid/{cfg.eval.monitor}" if data.truth("valid").nnz else None



def make_trainer(cfg: DictConfig, data, run_dir: Path, logger, extra_callbacks=()):
    """A Lightning Trainer with the shared evaluation callback, early stopping on valid/<monitor>
    (patience, min_delta), the one-line epoch report and deeprec's checkpoints (best weights in
    memory, few disk writes: deeprec.checkpointing is the one place a fit's checkpoints are written)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping

    from deeprec.checkpointing import RunCheckpoints
    from deeprec.console import quiet_lightning
    from deeprec.evaluation.callbacks import EpochLine, FullRankingEvaluation

    quiet_lightning()
    tcfg = validate_section(cfg.trainer, TrainerConfig, "trainer")
    monitor = monitored_metric(cfg, data)
    callbacks = [FullRankingEvaluation(data, ks=cfg.eval.ks, batch_size=cfg.eval.batch_size), *extra_callbacks]
    if monitor is not None and cfg.eval.patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=cfg.eval.patience, min_delta=cfg.eval.min_delta))
    callbacks.append(EpochLine(monitor))
    schedule = validate_section(cfg.get("checkpoint") or {}, CheckpointConfig, "checkpoint").check()
    callbacks.append(RunCheckpoints(run_dir / "checkpoints", monitor, every_n_epochs=schedule.every_n_epochs,
                                    every_seconds=schedule.every_seconds))
    kwargs = {k: v for k, v in vars(tcfg).items() if v is not None}
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,  # RunCheckpoints writes best.ckpt and last.ckpt
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )


def fit_model(cfg: DictConfig, data, run_dir: Path, logger, callbacks=()):
    """Build and fit cfg.model on data; returns the best model (a Trainer's leaves fit with its best weights)."""
    from deeprec.checkpoint import save_checkpoint

    model = build_model(cfg.model, data, seed=cfg.seed)
    model.check_data(data)
    device = run_device(cfg)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if model.uses_trainer:  # the Trainer places the model on its devices itself
        trainer = make_trainer(cfg, data, run_dir, logger, callbacks)
        model.monitor = monitored_metric(cfg, data)  # what a plateau schedule follows
        resume_from = str(last) if cfg.resume and last.exists() else None
        if resume_from is not None:
            check_resume_matches(last, model)
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        from deeprec.errors import TrainingInterrupted

        try:
            model.fit(data, trainer=trainer, ckpt_path=resume_from)  # leaves fit with the best weights
        except SIGTERMException:
            raise TrainingInterrupted(f"stopped by SIGTERM; {last} holds the last finished epoch: continue with resume=true") from None
        model.cpu()
    else:
        model.to(device).fit(data)
        save_checkpoint(model, data, ckpt_dir / "best.ckpt")
        link_atomic(ckpt_dir / "best.ckpt", last)  # fitted once: best and last are one file
    return model


@dataclass
class TrainResult:
    """What one training run produced: metrics, the best model, and its test top-k lists."""

    metrics: dict[str, float]
    valid_metrics: dict[str, float]
    model: object
    data: object
    test_users: np.ndarray
    test_topk: "torch.Tensor"  # noqa: F821  [U_test, max(ks)] item indices


# every file a run writes: by name, or by a name pattern (TensorBoard's files; the autoencoder's projector)
RUN_FILES = ("config.yaml", "metrics.json", "valid_metrics.json", "rejects.parquet", "checkpoints/best.ckpt",
             "checkpoints/last.ckpt", "id_maps/users.parquet", "id_maps/items.parquet", "embeddings/users.parquet",
             "embeddings/items.parquet", "tensorboard/hparams.yaml", "tensorboard/projector_config.pbtxt",
             "groups.parquet", "segments.md", "features.json")
RUN_PATTERNS = ("tensorboard/[0-9][0-9][0-9][0-9][0-9]/*_embeddings/*",)


def write_segments(data, mode: str, metrics: dict[str, float], run_dir: Path) -> None:
    """groups.parquet (user_id, segment, n_train[, ability]) and segments.md (the test metrics per segment)."""
    from deeprec.evaluation.report import segment_table
    from deeprec.evaluation.segments import user_segments

    table = user_segments(data, mode)
    if table is None:
        return
    groups = table.assign(user_id=[str(u) for u in data.user_ids])
    write_parquet_atomic(groups[["user_id", *table.columns]], run_dir / "groups.parquet")
    text = segment_table(metrics)
    if text:
        write_text_atomic(run_dir / "segments.md", text)


def run_inputs(data: DictConfig, model: DictConfig) -> list:
    """The files a run of `model` on `data` reads (an output may not hold them or lie inside them)."""
    return [*data_inputs(data), model.get("feature_path")]


def run_training(cfg: DictConfig, data=None, callbacks=(), test: bool = True) -> TrainResult:
    """The whole job; writes checkpoints, TensorBoard events and metrics.json into cfg.run_dir, a
    folder deeprec owns (deeprec.outputs): a fresh run replaces only what deeprec wrote there.

    `callbacks`: extra Lightning callbacks (a tuning trial's pruner); test=false (a tuning trial)
    evaluates the valid split only, so nothing chosen from it has seen the test split. With tune=N,
    N trials on the valid split choose the model's values first (run_dir/tuning/<model>.json)."""
    from pytorch_lightning.utilities import rank_zero_only

    from deeprec.outputs import claim_output

    validate_run(cfg)
    model_kwargs(cfg.model)  # a bad model or data key fails here, before run_dir is touched
    data_cfg = data_config(cfg.data) if data is None else None
    if rank_zero_only.rank != 0:  # DDP workers: rank 0 holds run_dir and writes its files
        return train_into(None, cfg, data, data_cfg, callbacks, test)
    with claim_output(cfg.run_dir, "deeprec-train", key="run_dir", inputs=run_inputs(cfg.data, cfg.model)) as out:
        return train_into(out, cfg, data, data_cfg, callbacks, test)


def tuned_config(out, cfg: DictConfig, data, run_dir: Path) -> DictConfig:
    """cfg with the model values cfg.tune Optuna trials on the valid split chose (deeprec.tuning);
    the study's record run_dir/tuning/<model>.json is one of the run's files."""
    from deeprec.tuning import tune_model

    name = cfg.model.name
    if out is not None:
        out.own([f"tuning/{name}.json"])
        out.make_folders("tuning")
    chosen = tune_model(cfg, name, cfg.model, data, int(cfg.tune), cfg.get("tune_timeout"), run_dir)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = OmegaConf.merge(cfg.model, chosen)
    return cfg


def train_into(out, cfg: DictConfig, data, data_cfg, callbacks=(), test: bool = True) -> TrainResult:
    """run_training's work in the claimed run_dir `out` (None on DDP worker ranks)."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    from deeprec.evaluation.evaluator import evaluate_recommender
    from deeprec.outputs import data_fingerprint, event_file_pattern

    run_dir = Path(cfg.run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if data is None:
        data = load_data(data_cfg)
        report_data(data, IntakeConfig(bool(cfg.get("strict", False)), float(cfg.get("max_reject_share", 0.5))))
    if out is not None:  # the data is read and checked: now the earlier run's files may go
        fingerprint = {"data": data_fingerprint(data), "model": plain(cfg.model), "seed": int(cfg.seed)}
        if cfg.get("tune"):  # the untuned model and the tuning budget: the same trials choose the same values
            fingerprint["tune"] = [int(cfg.tune), cfg.get("tune_timeout")]
        if cfg.resume:
            out.check_fingerprint("train", fingerprint, "resume=true", fix="resume=false to start afresh")
            if not (run_dir / "checkpoints" / "last.ckpt").exists():
                log.info("resume=true: nothing to resume in %s (no checkpoints/last.ckpt); training from the start", run_dir)
        gone = out.prepare(RUN_FILES, [*RUN_PATTERNS, event_file_pattern("tensorboard")],
                           ("checkpoints", "id_maps", "tensorboard"), fresh=not cfg.resume)
        if gone:
            log.info("resume=false: replacing the earlier run's %d files in %s", len(gone), run_dir)
        out.set_fingerprint("train", fingerprint)
    if cfg.get("tune"):
        cfg = tuned_config(out, cfg, data, run_dir)
    if out is not None:
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    model = fit_model(cfg, data, run_dir, logger, callbacks)
    if out is None:
        # DDP worker processes end after fit: rank 0 alone evaluates and writes the run's files
        # (two ranks writing id_maps/ through the same temporary name made one of them crash).
        return TrainResult({}, {}, model, data, np.zeros(0, np.int64), torch.zeros(0, 0, dtype=torch.int64))
    model.to(run_device(cfg)).eval()
    valid = {}
    segments = cfg.eval.get("segments", "auto")
    if (data.frame["split"] == "valid").any():
        valid = evaluate_recommender(model, data, "valid", ks=cfg.eval.ks, batch_size=cfg.eval.batch_size, segments=segments)
    if not test:
        write_json_atomic(valid, run_dir / "valid_metrics.json")
        logger.finalize("success")
        return TrainResult({}, valid, model, data, np.zeros(0, np.int64), torch.zeros(0, 0, dtype=torch.int64))
    metrics, test_users, test_topk = evaluate_recommender(
        model, data, "test", ks=cfg.eval.ks, batch_size=cfg.eval.batch_size, return_topk=True, segments=segments
    )
    scalar_hparams = {
        f"model.{k}": v for k, v in plain(cfg.model).items() if isinstance(v, (int, float, str, bool))
    }
    logger.log_hyperparams(
        {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed, **scalar_hparams},
        {f"test/{k}": v for k, v in metrics.items() if "@" in k},
    )
    logger.log_metrics({f"test/{k}": v for k, v in metrics.items()}, step=0)
    logger.finalize("success")
    write_id_maps(data, run_dir)
    write_segments(data, segments, metrics, run_dir)
    if data.extras.get("feature_reports"):
        write_json_atomic({"reports": data.extras["feature_reports"]}, run_dir / "features.json")
    rejects = data.extras.get("rejects")
    if rejects is not None and len(rejects):
        write_parquet_atomic(rejects.astype(str), run_dir / "rejects.parquet")
    if valid:
        write_json_atomic(valid, run_dir / "valid_metrics.json")
    write_json_atomic(metrics, run_dir / "metrics.json")
    out.forget_missing()
    report_evaluated(metrics, data)
    log.info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if k.endswith("@10") and "/" not in k})
    return TrainResult(metrics, valid, model, data, test_users, test_topk)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
@report_user_errors("deeprec-train")
def main(cfg: DictConfig) -> float:
    """Returns the validation metric (cfg.eval.monitor) so Optuna sweeps optimise on valid, not test.
    With tune=N, N trials on the valid split choose the model's values first (recorded in
    run_dir/tuning/<model>.json and in config.yaml)."""
    result = run_training(cfg)
    return float(result.valid_metrics.get(cfg.eval.monitor, float("nan")))


def train(cfg: DictConfig) -> dict[str, float]:
    """Programmatic entry (tests, notebooks): run the job and return the test metrics."""
    return run_training(cfg).metrics


if __name__ == "__main__":
    main()
