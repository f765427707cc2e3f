"""The LinUCB paper's reproduction (SPEC 2.5) as one command: it runs both protocols for the three
explorations and the three baselines, on a generated table and on the real Coursera table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from deeprec.cli.linucb_paper import run_from_config
from deeprec.errors import ConfigError

MODELS = ("LinUCB α_s", "LinUCB α=1", "LinUCB α=0.5", "Popular", "user-CF", "item-CF")


def compose_app(overrides: list[str]):
    with initialize_config_module(config_module="deeprec.conf", version_base="1.3"):
        return compose(config_name="linucb_paper", overrides=overrides)


def behaviour_table(path, n_students: int = 90, n_videos: int = 15, seed: int = 3):
    """A Coursera-shaped table: a few heavy watchers and many light ones, random completion and quiz."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_students):
        watched = rng.choice(n_videos, 2 + (12 if s % 9 == 0 else rng.integers(0, 4)), replace=False)
        for v in watched:
            rows.append({"userID": f"s{s}", "VidID": f"v{v}", "fracSpent": rng.uniform(0.2, 2), "fracComp": rng.uniform(0, 1),
                         "fracPlayed": 1.0, "fracPaused": 0.0, "numPauses": 0, "avgPBR": 1.0, "stdPBR": 0.0,
                         "numRWs": int(rng.integers(0, 5)), "numFFs": 0, "s": int(rng.integers(0, 2))})
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return len(rows)


def run(tmp_path, name: str, table: str, *extra: str) -> dict:
    out = tmp_path / name
    run_from_config(compose_app([f"data.path={table}", "simulated_events=20000", f"out_dir={out}", *extra]))
    assert (out / "linucb_paper.md").is_file() and (out / "linucb_replay_simulated.png").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    return json.loads((out / "linucb_paper.json").read_text())


def test_the_command_reports_both_protocols_for_every_model(tmp_path):
    table = tmp_path / "behavior.tsv"
    behaviour_table(table)
    results = run(tmp_path, "a", str(table))
    assert sum(g["students"] for g in results["groups"]) == 90  # every student in exactly one group
    for protocol in ("paper", "holdout"):
        assert set(results[protocol]) == set(MODELS)
        for by_group in results[protocol].values():
            assert set(by_group) == {"active", "potential", "inactive", "all"}
            assert by_group["all"]["students"] == 90
            for key in ("precision@5", "recall@5", "f1@5", "hit_ratio@5", "personalization@10"):
                assert 0.0 <= by_group["all"][key] <= 1.0
    assert set(results["shared_metrics_holdout"]) == set(MODELS)
    assert run(tmp_path, "b", str(table)) == results  # seeded: the same run twice gives the same results
    with pytest.raises(ConfigError, match="simulated_events"):
        run_from_config(compose_app([f"data.path={table}", "simulated_events=0", f"out_dir={tmp_path / 'c'}"]))


@pytest.mark.shared_data
def test_the_real_table_gives_the_documented_groups(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPREC_SHARED_DATA", str(shared_data))
    results = run(tmp_path, "real", str(shared_data / "coursera-video-behavior"))
    sizes = {g["group"]: g["students"] for g in results["groups"]}
    assert sizes == {"active": 168, "potential": 2403, "inactive": 1274}  # README: 3,845 students after cleaning
    text = (tmp_path / "real" / "linucb_paper.md").read_text()
    assert "26646 rows kept, 2658 rejected" in text
