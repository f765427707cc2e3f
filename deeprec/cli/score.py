"""deeprec-score: top-k items per user from any checkpoint, to Parquet (see deeprec.scoring.batch)."""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from deeprec.cli.common import CONFIG_PATH, plain, report_user_errors
from deeprec.config import validate_section
from deeprec.errors import ConfigError

log = logging.getLogger("deeprec.score")


@hydra.main(config_path=CONFIG_PATH, config_name="score", version_base="1.3")
@report_user_errors("deeprec-score")
def main(cfg: DictConfig) -> None:
    from deeprec.scoring.batch import ScoreConfig, score_users

    raw = plain(cfg) if all(cfg.get(key) != "???" for key in ("ckpt", "output")) else None
    if raw is None:
        missing = [key for key in ("ckpt", "output") if cfg._get_node(key)._is_missing()]
        raise ConfigError(f"deeprec-score needs {' and '.join(f'{key}=PATH' for key in missing)}")
    summary = score_users(validate_section(raw, ScoreConfig, "deeprec-score"))
    print(json.dumps({key: value for key, value in summary.items() if key != "config"}, sort_keys=True))


if __name__ == "__main__":
    main()
