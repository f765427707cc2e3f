"""The hybrid's members: registered models trained inside its fit (with their default config and
the hybrid's `member_overrides`), or trained checkpoints; and the first stage over them (each
member's full-catalogue scores, their top-M candidates, the union).

A member trained by Lightning (ncf, lstm, autoencoder, attention) is fitted here with the shared
full-ranking callback on the valid split, early stopping and the best epoch's weights kept in
memory, so a member is as good as the same model trained alone by deeprec-train.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from deeprec.config import validate_section
from deeprec.errors import ConfigError, DataError

log = logging.getLogger("deeprec.hybrid")


def is_checkpoint(spec: str) -> bool:
    """A member given as a path (a trained deeprec checkpoint) rather than a registered name."""
    return spec.endswith(".ckpt") or "/" in spec or Path(spec).suffix != ""


def member_config(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The checked hyper-parameters (without `name`) of registered model `name` with the overrides."""
    from deeprec.registry import model_class

    cls = model_class(name)
    if getattr(cls, "name", "") == "hybrid":
        raise ConfigError("model.members: a hybrid cannot be a member of a hybrid")
    section = {"name": name, **dict(overrides or {})}
    hp = dataclasses.asdict(validate_section(section, cls.config_class, f"model.member_overrides.{name}").check())
    hp.pop("name", None)
    return hp


def check_members(members: list[str], overrides: dict[str, dict[str, Any]]) -> None:
    """Fail fast: at least one member, known names, overrides only for listed names, valid keys."""
    if not members:
        raise ConfigError("model.members is empty; list registered models (e.g. [ease, itemknn]) or checkpoint paths")
    names = [m for m in members if not is_checkpoint(m)]
    if len(set(members)) != len(members):
        raise ConfigError(f"model.members={members} lists a member twice")
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise ConfigError(f"model.member_overrides: {stray} not among the named members {names}")
    for name in names:
        member_config(name, overrides.get(name))


class KeepBestState(pl.Callback):
    """Keeps the module's state of the epoch with the best `monitor` value (in memory, no file)."""

    def __init__(self, monitor: str) -> None:
        self.monitor, self.best, self.state = monitor, -float("inf"), None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def fit_lightning_member(model, data, max_epochs: int, patience: int, device: torch.device, eval_batch: int = 1024):
    """Fit a LightningRecommender like deeprec-train does: valid NDCG@10 each epoch (the shared
    evaluation callback), early stopping after `patience` epochs without gain, the best epoch kept."""
    from pytorch_lightning.callbacks import EarlyStopping

    from deeprec.evaluation.callbacks import FullRankingEvaluation

    has_valid = bool((data.frame["split"] == "valid").any())
    callbacks = []
    keep = None
    if has_valid:
        keep = KeepBestState("valid/ndcg@10")
        # the callback order matters: evaluate, then keep the state, then decide whether to stop
        callbacks = [FullRankingEvaluation(data, ks=(10,), batch_size=eval_batch), keep]
        if patience:
            callbacks.append(EarlyStopping(monitor="valid/ndcg@10", mode="max", patience=patience))
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=callbacks, deterministic=device.type != "cuda",
    )
    with warnings.catch_warnings():  # the shared callback logs to a trainer that has no logger here
        warnings.filterwarnings("ignore", message=".*but have no logger configured.*")
        model.fit(data, trainer=trainer)
    if keep is not None and keep.state is not None:
        model.load_state_dict(keep.state)
    return model.cpu().to(device) if device.type != "cpu" else model.cpu()


@dataclass
class Member:
    """One member: its display name (the registry name, or the checkpoint's model), the recommender,
    and where it came from (a registered name trained here, or a checkpoint path)."""

    name: str
    model: Any
    source: str

    def spec(self) -> dict[str, Any]:
        """What rebuilds it from a hybrid checkpoint: the model name and its init_args."""
        return {"label": self.name, "model": self.model.name, "init_args": self.model.init_args(), "source": self.source}


def load_checkpoint_member(path: str, data) -> Any:
    """A trained checkpoint's recommender, which must have been trained on the same users and items."""
    from deeprec.checkpoint import id_arrays, load_recommender

    model, meta = load_recommender(path)
    users, items = id_arrays(meta)
    same = len(users) == data.n_users and len(items) == data.n_items
    if not same or not (np.asarray(users).astype(str) == np.asarray(data.user_ids).astype(str)).all() or not (
            np.asarray(items).astype(str) == np.asarray(data.item_ids).astype(str)).all():
        raise DataError(f"model.members: checkpoint {path} was trained on other users or items "
                        f"({len(users)} x {len(items)}, data has {data.n_users} x {data.n_items}); "
                        "train it on this data, or name the model instead")
    return model


def build_members(members: list[str], overrides: dict, data, seed: int, device: torch.device,
                  max_epochs: int, patience: int) -> list[Member]:
    """Every member fitted on data's train split (a checkpoint member as trained)."""
    from deeprec.registry import model_class

    out = []
    for position, spec in enumerate(members):
        if is_checkpoint(spec):
            model = load_checkpoint_member(spec, data).to(device)
            label = model.name if all(model.name != m.name for m in out) else f"{model.name}_{position}"
            out.append(Member(label, model, spec))
            continue
        cls = model_class(spec)
        model = cls(n_users=data.n_users, n_items=data.n_items, seed=seed + position, **member_config(spec, overrides.get(spec)))
        log.info("hybrid: fitting member %s", spec)
        if model.uses_trainer:
            model = fit_lightning_member(model, data, max_epochs, patience, device)
        else:
            model.to(device).fit(data)
        out.append(Member(spec, model, "trained"))
    return out


def rebuild_members(specs: list[dict[str, Any]]) -> list[Member]:
    """Empty members from a checkpoint's member specs (their states follow from load_state_tensors)."""
    from deeprec.registry import model_class

    return [Member(s["label"], model_class(s["model"]).from_init_args(s["init_args"]), s.get("source", "trained"))
            for s in specs]


def member_states(members: list[Member]) -> dict[str, torch.Tensor]:
    """All members' tensors under `member.<position>.<key>`."""
    state = {}
    for position, member in enumerate(members):
        state.update({f"member.{position}.{k}": v for k, v in member.model.state_tensors().items()})
    return state


def load_member_states(members: list[Member], state: dict[str, torch.Tensor]) -> None:
    for position, member in enumerate(members):
        prefix = f"member.{position}."
        member.model.load_state_tensors({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


# -- the first stage ----------------------------------------------------------------------------
@torch.no_grad()
def member_scores(members: list[Member], users: torch.Tensor) -> list[torch.Tensor]:
    """Each member's scores [B, I] float32 of users [B] (-inf and NaN scores made finite)."""
    out = []
    for member in members:
        scores = member.model.score(users).float()
        out.append(torch.nan_to_num(scores, nan=-1e30, neginf=-1e30, posinf=1e30))
    return out


def union_candidates(scores: list[torch.Tensor], n_candidates: int, excluded: torch.Tensor | None,
                     first_stage: int | None = None) -> torch.Tensor:
    """candidates [B, C] int64 (-1 pads): the union of each member's top-M (or member `first_stage`'s
    top-M alone), items in `excluded` [B, I] bool never included; each row's ids distinct, ascending.

    The members' top-M ids (unsorted topk) are joined into [B, members x M], sorted, and repeats and
    excluded ids (-inf after the mask) replaced by a sentinel that a second sort moves to the end: the
    work after the topk is over members x M columns, not the catalogue."""
    chosen = scores if first_stage is None else [scores[first_stage]]
    batch, n_items = chosen[0].shape
    m = min(n_candidates, n_items)
    tops = []
    for s in chosen:
        masked = s if excluded is None else s.masked_fill(excluded, -float("inf"))
        values, items = torch.topk(masked, m, dim=1, sorted=False)
        tops.append(items.masked_fill_(~torch.isfinite(values), n_items))  # an excluded item: the sentinel
    joined = torch.cat(tops, 1).sort(1).values
    repeat = torch.zeros_like(joined, dtype=torch.bool)
    repeat[:, 1:] = joined[:, 1:] == joined[:, :-1]
    joined = joined.masked_fill_(repeat, n_items).sort(1).values
    width = max(int((joined < n_items).sum(1).max()) if batch else 0, 1)
    out = joined[:, :width]
    return out.masked_fill_(out == n_items, -1)
