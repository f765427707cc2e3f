"""Typed config validation: a misspelt key fails at once with the list of valid keys."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from deeprec.errors import ConfigError


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
