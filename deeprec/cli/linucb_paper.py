"""The ability-aware LinUCB paper's reproduction (SPEC 2) as a Hydra app: the Coursera table of
conf/data/coursera, both protocols, the report and its curves into out_dir.

    python -m deeprec.cli.linucb_paper [data.path=TSV] [seed=0] [data.holdout_share=0.2] [out_dir=DIR]

Writes out_dir/linucb_paper.md and .json (atomically), linucb_replay_simulated.png and the replay
curves as TensorBoard scalars (linucb_tensorboard/), and prints the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from deeprec.cli.common import CONFIG_PATH, data_config, plain, report_user_errors
from deeprec.config import check_at_least, validate_section
from deeprec.errors import ConfigError


@dataclass
class LinUCBPaperConfig:
    """The keys of linucb_paper.yaml besides data."""

    seed: int = 0
    simulated_events: int = 1_000_000
    out_dir: str = "runs/linucb-paper"


def run_from_config(cfg: DictConfig) -> str:
    """Validate the config, claim out_dir (deeprec.outputs: a folder of this experiment's, never one
    holding other files or the table), read and clean the table (SPEC 2.1), run the reproduction,
    and replace the earlier run's files there."""
    from deeprec.atomic import write_text_atomic
    from deeprec.data.adapters.coursera import FOLDER, clean_behaviour, read_behaviour
    from deeprec.data.adapters.shared_data import dataset_path
    from deeprec.experiments.linucb_paper import RESULT_FILES, TENSORBOARD, reproduce
    from deeprec.outputs import claim_output, event_file_pattern

    run = validate_section({k: v for k, v in plain(cfg).items() if k != "data"}, LinUCBPaperConfig, "linucb_paper")
    check_at_least(run, ("simulated_events",), prefix="linucb_paper")
    if cfg.data.get("name") != "coursera":
        raise ConfigError(f"data={cfg.data.get('name')!r}: the LinUCB paper runs on data=coursera (the video-behaviour table)")
    data = data_config(cfg.data)
    if not 0 < data.holdout_share < 1:
        raise ConfigError(f"data.holdout_share={data.holdout_share} must be between 0 and 1 (exclusive)")
    path = dataset_path(data.path, FOLDER, "coursera")
    with claim_output(run.out_dir, "linucb_paper", key="out_dir", inputs=[path]) as out:
        behaviour, rejects = clean_behaviour(read_behaviour(path), data.drop_empty, data.error_limits, str(path))
        out.prepare(RESULT_FILES, [event_file_pattern(f"{TENSORBOARD}/simulated")], (TENSORBOARD, f"{TENSORBOARD}/simulated"))
        text, results = reproduce(behaviour, rejects, str(path), out.path, seed=run.seed, holdout_share=data.holdout_share,
                                  holdout_seed=data.seed, simulated_events=run.simulated_events)
        write_text_atomic(out.path / "linucb_paper.md", text)
        write_text_atomic(out.path / "linucb_paper.json", json.dumps(results, indent=2, default=float))
    print(text)
    return text


@hydra.main(config_path=CONFIG_PATH, config_name="linucb_paper", version_base="1.3")
@report_user_errors("linucb_paper")
def main(cfg: DictConfig) -> None:
    run_from_config(cfg)


if __name__ == "__main__":
    main()
