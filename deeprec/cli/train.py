"""deeprec-train: compose data + model + trainer, fit, evaluate on the test split, save.

Writes into run_dir: checkpoints/last.ckpt and best.ckpt, TensorBoard events (tensorboard/),
metrics.json (the shared evaluation of the test split) and id_maps/{users,items}.parquet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import hydra
import pandas as pd
from omegaconf import DictConfig

from deeprec.cli.common import (
    CONFIG_PATH,
    TrainerConfig,
    build_model,
    ensure_writable_dir,
    load_data,
    plain,
    report_user_errors,
    write_json_atomic,
)
from deeprec.config import validate_section

log = logging.getLogger("deeprec.train")


def write_id_maps(data, run_dir: Path) -> None:
    """id_maps/users.parquet and items.parquet: index -> the user's own id."""
    out = run_dir / "id_maps"
    out.mkdir(exist_ok=True)
    for kind, ids in (("users", data.user_ids), ("items", data.item_ids)):
        tmp = out / f".{kind}.parquet.tmp"
        pd.DataFrame({"index": range(len(ids)), "id": [str(i) for i in ids]}).to_parquet(tmp, index=False)
        tmp.replace(out / f"{kind}.parquet")


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
    """Build and fit cfg.model on data; returns the best model (reloaded from its checkpoint)."""
    from deeprec.checkpoint import load_recommender, save_checkpoint

    model = build_model(cfg.model, data, seed=cfg.seed)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if getattr(model, "uses_trainer", False):
        trainer = make_trainer(cfg, data, run_dir, logger)
        resume_from = str(last) if cfg.resume and last.exists() else None
        model.fit(data, trainer=trainer, ckpt_path=resume_from)
        best = ckpt_dir / "best.ckpt"
        model, _ = load_recommender(best if best.exists() else last)
    else:
        model.fit(data)
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


def run_training(cfg: DictConfig, data=None) -> TrainResult:
    """The whole job; writes checkpoints, TensorBoard events and metrics.json into cfg.run_dir."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger
    from pytorch_lightning.utilities import rank_zero_only

    from deeprec.evaluation.evaluator import evaluate_recommender

    run_dir = ensure_writable_dir(cfg.run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if data is None:
        data = load_data(cfg.data)
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    model = fit_model(cfg, data, run_dir, logger)
    if rank_zero_only.rank != 0:
        # DDP worker processes end after fit: rank 0 alone evaluates and writes the run's files
        # (two ranks writing id_maps/ through the same temporary name made one of them crash).
        return TrainResult({}, {}, model, data, np.zeros(0, np.int64), torch.zeros(0, 0, dtype=torch.int64))
    if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        model.to("cuda")
    if hasattr(model, "eval"):
        model.eval()
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
        tmp = run_dir / ".rejects.parquet.tmp"
        rejects.astype(str).to_parquet(tmp, index=False)
        tmp.replace(run_dir / "rejects.parquet")
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
