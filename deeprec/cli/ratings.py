"""deeprec-ratings: an event log -> the SPEC 1.10 folder (ratings, lesson durations, rejects, summary)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from deeprec.cli.common import CONFIG_PATH, report_user_errors
from deeprec.config import validate_section
from deeprec.errors import ConfigError

log = logging.getLogger("deeprec.ratings")


def run_ratings(cfg: DictConfig):
    """Validate the config, claim the output folder, rate the log (in memory or out-of-core), write
    the folder, and say what was read; no rating at all is an error naming the cause."""
    from deeprec.data.intake import IntakeConfig, report_ratings
    from deeprec.data.ratings import RatingsConfig, rate_log, write_outputs
    from deeprec.outputs import claim_output

    for key in ("input", "output"):
        if cfg.get(key) in (None, "???", ""):
            raise ConfigError(f"{key}= is required: deeprec-ratings input=LOG output=DIR")
    rcfg = validate_section(cfg.ratings, RatingsConfig, "ratings").check()
    intake = validate_section({k: cfg.get(k) for k in ("strict", "max_reject_share") if k in cfg}, IntakeConfig,
                              "config").check()
    mode = str(cfg.get("out_of_core", "auto")).lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"out_of_core={mode!r} is not valid; choose auto, true or false")
    with claim_output(cfg.output, "deeprec-ratings", key="output", inputs=[cfg.input, rcfg.catalogue]) as out:
        result = rate_log(cfg.input, rcfg, out_of_core={"auto": None, "true": True, "false": False}[mode])
        write_outputs(result, out)
    report_ratings(result.summary, intake, where=str(out.path))
    return result


def check_override_keys(argv: list[str]) -> None:
    """A misspelt `ratings.<key>=` fails in one line naming the valid keys (Hydra's own is 5 lines)."""
    import dataclasses

    from deeprec.data.ratings import RatingsConfig

    valid = sorted(f.name for f in dataclasses.fields(RatingsConfig))
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        name = key.split(".")[1] if key.startswith("ratings.") else None  # ratings.spark.master: checked by SparkConfig
        if name is not None and name not in valid:
            raise ConfigError(f"ratings: unknown key {name!r}; valid keys: {valid}")


@hydra.main(config_path=CONFIG_PATH, config_name="ratings_app", version_base="1.3")
@report_user_errors("deeprec-ratings")
def _hydra_main(cfg: DictConfig) -> None:
    run_ratings(cfg)


def main() -> None:
    """Console entry: check override keys, then run the Hydra app."""
    import sys

    report_user_errors("deeprec-ratings")(check_override_keys)(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
