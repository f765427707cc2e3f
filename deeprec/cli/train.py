"""deeprec-train: compose data + model + trainer, fit, evaluate on the test split, save.

Writes into run_dir: checkpoints/last.ckpt and best.ckpt, TensorBoard events (tensorboard/),
metrics.json (the shared evaluation of the test split) and id_maps/{users,items}.parquet.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from deeprec.atomic import write_json_atomic, write_parquet_atomic, write_text_atomic
from deeprec.cli.common import (
    CONFIG_PATH,
    TrainerConfig,
    build_model,
    data_config,
    ensure_writable_dir,
    load_data,
    model_kwargs,
    plain,
    report_user_errors,
    run_device,
)
from deeprec.config import validate_section
from deeprec.evaluation.config import EvalConfig

log = logging.getLogger("deeprec.train")


@dataclass
class RunConfig:
    """The keys of train.yaml besides data / model / trainer (compare.yaml adds its own)."""

    run_dir: str = "runs/run"
    seed: int = 0
    device: str | None = None  # cpu | cuda | cuda:N | auto; null: cuda when the trainer asks for a GPU
    resume: bool = False
    eval: EvalConfig = field(default_factory=EvalConfig)


def validate_run(cfg: DictConfig) -> None:
    """Fail fast, in one line, on a bad seed / resume / eval value or a bad trainer section."""
    keys = {f.name for f in dataclasses.fields(RunConfig)}
    validate_section({k: v for k, v in plain(cfg).items() if k in keys}, RunConfig, "config").eval.check()
    validate_section(cfg.trainer, TrainerConfig, "trainer")
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


def make_trainer(cfg: DictConfig, data, run_dir: Path, logger):
    """A Lightning Trainer with the shared evaluation callback, checkpoints and early stopping."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from deeprec.evaluation.callbacks import FullRankingEvaluation

    tcfg = validate_section(cfg.trainer, TrainerConfig, "trainer")
    monitor = f"valid/{cfg.eval.monitor}"
    has_valid = (data.frame["split"] == "valid").any()
    callbacks = [
        FullRankingEvaluation(data, ks=cfg.eval.ks, batch_size=cfg.eval.batch_size),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=monitor if has_valid else None,
            mode="max",
            save_top_k=1,
            enable_version_counter=False,
        ),
        # Lightning's save_last only rewrites last.ckpt together with a new best; resume needs
        # the latest epoch, so a second unmonitored checkpoint overwrites it every epoch.
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            monitor=None,
            save_top_k=1,
            every_n_epochs=1,
            enable_version_counter=False,
        ),
    ]
    if has_valid and cfg.eval.patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=cfg.eval.patience))
    kwargs = {k: v for k, v in vars(tcfg).items() if v is not None}
    return pl.Trainer(
        default_root_dir=str(run_dir),
        logger=logger,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )


def fit_model(cfg: DictConfig, data, run_dir: Path, logger):
    """Build and fit cfg.model on data; returns the best model (a Trainer's is reloaded from its checkpoint)."""
    from deeprec.checkpoint import load_recommender, save_checkpoint

    model = build_model(cfg.model, data, seed=cfg.seed)
    device = run_device(cfg)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if model.uses_trainer:  # the Trainer places the model on its devices itself
        trainer = make_trainer(cfg, data, run_dir, logger)
        resume_from = str(last) if cfg.resume and last.exists() else None
        if resume_from is not None:
            check_resume_matches(last, model)
        model.fit(data, trainer=trainer, ckpt_path=resume_from)
        best = ckpt_dir / "best.ckpt"
        model, _ = load_recommender(best if best.exists() else last)
    else:
        model.to(device).fit(data)
        save_checkpoint(model, data, last)
        save_checkpoint(model, data, ckpt_dir / "best.ckpt")
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


RUN_OUTPUTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.json", "valid_metrics.json", "rejects.parquet")


def clear_previous_run(run_dir: Path) -> None:
    """A fresh run (resume=false) replaces what an earlier run left in run_dir, so that its
    TensorBoard events, checkpoints and metrics never mix with the new ones. Nothing else is touched."""
    stale = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    events = run_dir / "tensorboard"  # deeprec's own folder: events, hparams, projector steps
    if stale or events.exists():
        log.info("resume=false: replacing the earlier run's outputs in %s", run_dir)
    for path in stale:
        path.unlink()
    shutil.rmtree(events, ignore_errors=True)


def run_training(cfg: DictConfig, data=None) -> TrainResult:
    """The whole job; writes checkpoints, TensorBoard events and metrics.json into cfg.run_dir."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger
    from pytorch_lightning.utilities import rank_zero_only

    from deeprec.evaluation.evaluator import evaluate_recommender

    validate_run(cfg)
    model_kwargs(cfg.model)  # a bad model or data key fails here, before run_dir is touched
    data_cfg = data_config(cfg.data) if data is None else None
    run_dir = ensure_writable_dir(cfg.run_dir)
    if rank_zero_only.rank == 0:
        if not cfg.resume:
            clear_previous_run(run_dir)
        write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if data is None:
        data = load_data(data_cfg)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    model = fit_model(cfg, data, run_dir, logger)
    if rank_zero_only.rank != 0:
        # DDP worker processes end after fit: rank 0 alone evaluates and writes the run's files
        # (two ranks writing id_maps/ through the same temporary name made one of them crash).
        return TrainResult({}, {}, model, data, np.zeros(0, np.int64), torch.zeros(0, 0, dtype=torch.int64))
    model.to(run_device(cfg)).eval()
    valid = {}
    if (data.frame["split"] == "valid").any():
        valid = evaluate_recommender(model, data, "valid", ks=cfg.eval.ks, batch_size=cfg.eval.batch_size)
    metrics, test_users, test_topk = evaluate_recommender(
        model, data, "test", ks=cfg.eval.ks, batch_size=cfg.eval.batch_size, return_topk=True
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
    rejects = data.extras.get("rejects")
    if rejects is not None and len(rejects):
        write_parquet_atomic(rejects.astype(str), run_dir / "rejects.parquet")
    if valid:
        write_json_atomic(valid, run_dir / "valid_metrics.json")
    write_json_atomic(metrics, run_dir / "metrics.json")
    log.info("test metrics: %s", {k: round(v, 4) for k, v in metrics.items() if k.endswith("@10")})
    return TrainResult(metrics, valid, model, data, test_users, test_topk)


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
@report_user_errors("deeprec-train")
def main(cfg: DictConfig) -> float:
    """Returns the validation metric (cfg.eval.monitor) so Optuna sweeps optimise on valid, not test."""
    result = run_training(cfg)
    return float(result.valid_metrics.get(cfg.eval.monitor, float("nan")))


def train(cfg: DictConfig) -> dict[str, float]:
    """Programmatic entry (tests, notebooks): run the job and return the test metrics."""
    return run_training(cfg).metrics


if __name__ == "__main__":
    main()
