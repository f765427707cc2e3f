"""The ratings paper's experiment (SPEC 1.11) as a Hydra app: rate an event log of conf/data, run the
10 strategies x item-kNN protocol, write the tables and figures into out_dir.

    python -m deeprec.cli.ratings_paper +experiment=ratings_paper_synthetic
    python -m deeprec.cli.ratings_paper +experiment=ratings_paper_epm [data.ratings.<key>=...] [protocol.<key>=...]
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from deeprec.cli.common import CONFIG_PATH, data_config, data_inputs, report_user_errors
from deeprec.config import validate_section

log = logging.getLogger("deeprec.ratings_paper")


def run_from_config(cfg: DictConfig) -> Path:
    """Validate the composed config (data, protocol), claim out_dir (deeprec.outputs: a folder of
    this experiment's, never one holding other files or an input), rate the log, run the experiment,
    and replace the earlier run's files there."""
    from deeprec.experiments.ratings_paper import RESULT_FILES, PaperProtocol, run_experiment, write_results
    from deeprec.outputs import claim_output
    from deeprec.registry import log_rater

    rate = log_rater(cfg.data.get("name"))
    data_cfg = data_config(cfg.data)
    data_cfg.ratings.check()
    protocol = validate_section(cfg.protocol, PaperProtocol, "protocol").check()
    with claim_output(cfg.out_dir, "ratings_paper", key="out_dir", inputs=data_inputs(cfg.data)) as out:
        started = time.perf_counter()
        result = rate(data_cfg)
        rated = time.perf_counter()
        log.info("rated %s in %.1f s: %s users, %s courses", result.summary["source"], rated - started,
                 result.summary["users"], result.summary["courses"])
        results = run_experiment(result, protocol)
        results.facts["data_config"] = dataclasses.asdict(data_cfg)
        results.facts["seconds"] = {"rating": round(rated - started, 2), **results.facts["seconds"],
                                    "total": round(time.perf_counter() - started, 2)}
        out.prepare(RESULT_FILES)
        write_results(results, protocol, out.path)
    log.info("%s\nwritten to %s (%.1f s)", results.facts["resampling"], cfg.out_dir, time.perf_counter() - started)
    return out.path


@hydra.main(config_path=CONFIG_PATH, config_name="ratings_paper", version_base="1.3")
@report_user_errors("ratings_paper")
def main(cfg: DictConfig) -> None:
    """python -m deeprec.cli.ratings_paper [+experiment=ratings_paper_epm] [key=value ...]"""
    run_from_config(cfg)


if __name__ == "__main__":
    main()
