"""Typed config validation: a misspelt key fails at once with the list of valid keys; the checks of
values every config shares (a choice, a lower bound, a dtype, a device), each in one place."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from deeprec.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a dtype or device is resolved, not by every app
    import torch


def validate_section(section: DictConfig | dict, schema: type, where: str) -> Any:
    """Merge a config section into its dataclass schema; unknown keys and bad types are errors.

    Returns the dataclass instance. `where` names the section in messages (e.g. "model=ease").
    """
    raw = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else dict(section)
    names = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:  # a "???" left in the YAML: where "data=events" -> data.<key>=...
        prefix = where.split("=")[0] + "." if "=" in where else ""
        raise ConfigError(f"{where}: no value for {exc.full_key}; give {prefix}{exc.full_key}=... on the command line") from None
    except Exception as exc:  # omegaconf ValidationError carries the key and the bad value
        key = getattr(exc, "full_key", None)
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {key}: {first}" if key and key not in first else f"{where}: {first}") from None


def to_plain(obj: Any) -> Any:
    """A dataclass or DictConfig as plain dicts / lists / scalars (JSON- and checkpoint-safe)."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def check_choice(value: Any, valid, key: str) -> None:
    """ConfigError naming `key` (e.g. "model.loss") when `value` is not one of `valid`."""
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(valid)}")


def check_at_least(section: Any, keys, minimum: int = 1, prefix: str = "model") -> None:
    """ConfigError naming the first of `keys` whose value in `section` (a dataclass) is below `minimum`."""
    for key in keys:
        value = getattr(section, key)
        if value < minimum:
            raise ConfigError(f"{prefix}.{key}={value} must be at least {minimum}")


#: The floating-point types a config may name (`dtype: float32 | float64`), as torch attribute names.
DTYPES = ("float32", "float64")


def resolve_dtype(name: str, key: str = "model.dtype") -> "torch.dtype":
    """float32 | float64 as a torch dtype; anything else is a ConfigError naming `key`."""
    import torch

    check_choice(name, DTYPES, key)
    return getattr(torch, name)


def resolve_device(name: "str | torch.device", key: str = "device", allow_auto: bool = True) -> "torch.device":
    """cpu | cuda | cuda:N (| auto: cuda when available) as a torch.device; a device that is not valid,
    or cuda on a machine without one, is a ConfigError naming `key`."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if allow_auto and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not re.fullmatch(r"cuda:\d+", name):
        choices = "cpu, cuda (cuda:N) or auto" if allow_auto else "cpu or cuda (cuda:N)"
        raise ConfigError(f"{key}={name!r} is not valid; choose {choices}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA device is available; use {key}=cpu")
    return torch.device(name)
