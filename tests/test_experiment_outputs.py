"""The paper experiments' out_dir follows the ownership rule of the four commands (deeprec.outputs,
docs/outputs.md): a folder deeprec did not create, one holding the input, one another command owns
and one in use are refused in one line and left as they were; a rerun replaces the earlier run's
files (TensorBoard events included) and keeps what others put there.

The experiments run in-process (sys.argv + SystemExit) on small generated inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inprocess_cli import one_line_error, run_cli
from test_linucb_paper import behaviour_table
from test_ownership import plant_foreign_files, snapshot

EXPERIMENTS = ("ratings_paper", "linucb_paper")
MODULES = {e: f"deeprec.cli.{e}" for e in EXPERIMENTS}
RATINGS_SMALL = ["data.n_events=40000", "data.generator.n_courses=40", "protocol.n_resamples=4",
                 "protocol.sample_users=300", "protocol.min_lesson_seconds_grid=[0,60]"]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """A Coursera-shaped behaviour table in a folder of its own."""
    path = tmp_path_factory.mktemp("inputs") / "behavior.tsv"
    behaviour_table(path, n_students=40)
    return path


def argv(experiment: str, out: Path, table: Path, *extra: str) -> list[str]:
    base = RATINGS_SMALL if experiment == "ratings_paper" else [f"data.path={table}", "simulated_events=5000"]
    return [*base, f"out_dir={out}", *extra]


def refused_untouched(experiment: str, out: Path, args: list[str], monkeypatch, capsys, why: str) -> None:
    """The experiment stops in one line naming out_dir and `why`; out stays byte for byte, nothing added."""
    before = snapshot(out)
    code, err = run_cli(MODULES[experiment], args, monkeypatch, capsys)
    one_line_error(code, err, f"out_dir={out}", why)
    assert snapshot(out) == before  # not even a lock file


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_folder_deeprec_did_not_create_is_refused_and_left_as_it_was(experiment, table, tmp_path, monkeypatch, capsys):
    # case: experiment-output-foreign-folder
    plant_foreign_files(tmp_path / "theirs")
    refused_untouched(experiment, tmp_path / "theirs", argv(experiment, tmp_path / "theirs", table), monkeypatch, capsys,
                      "deeprec did not create")


def tensorboard_events(out: Path) -> list[Path]:
    return sorted(out.rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_rerun_replaces_its_own_files_and_keeps_the_others(experiment, table, tmp_path, monkeypatch, capsys):
    # case: experiment-output-rerun
    out = tmp_path / "mine"
    code, err = run_cli(MODULES[experiment], argv(experiment, out, table), monkeypatch, capsys)
    assert code == 0, err
    report = out / ("summary.json" if experiment == "ratings_paper" else "linucb_paper.json")
    first = report.read_bytes()
    ours = tensorboard_events(out)
    assert len(ours) == (1 if experiment == "linucb_paper" else 0)
    planted = {"notes.txt": b"my notes\n", "linucb_tensorboard/simulated/events.out.tfevents.1.other-tool": b"\x00other",
               "figures/mine.png": b"a figure of mine"}
    for name, content in planted.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    report.write_bytes(b"stale")  # deeprec's own file: the rerun writes it again
    code, err = run_cli(MODULES[experiment], argv(experiment, out, table), monkeypatch, capsys)
    assert code == 0, err
    for name, content in planted.items():
        assert (out / name).read_bytes() == content, name
    if experiment == "linucb_paper":
        assert report.read_bytes() == first  # seeded: the same results again
    else:
        assert report.read_bytes() not in (b"stale", b"")
    # the earlier run's event file went (no doubled curves in TensorBoard); the other tool's stayed
    events = [p for p in tensorboard_events(out) if "other-tool" not in p.name]
    assert len(events) == len(ours) and not set(events) & set(ours)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_out_dir_holding_the_input_is_refused(experiment, table, tmp_path, monkeypatch, capsys):
    # case: experiment-output-holds-input
    folder = tmp_path / "data"
    folder.mkdir()
    log = folder / "log.csv"
    log.write_text("user_id,timestamp,url\nu1,0,/c/k/l1\n")
    local = folder / "behavior.tsv"
    local.write_bytes(table.read_bytes())
    args = ["data=events", f"data.path={log}"] if experiment == "ratings_paper" else [f"data.path={local}"]
    refused_untouched(experiment, folder, [*args, f"out_dir={folder}"], monkeypatch, capsys, "holds the input")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_second_run_on_the_same_out_dir_fails_at_once(experiment, table, tmp_path, monkeypatch, capsys):
    # case: experiment-output-concurrent-runs
    from deeprec.outputs import claim_output

    out = tmp_path / "busy"
    with claim_output(out, experiment, key="out_dir"):
        code, err = run_cli(MODULES[experiment], argv(experiment, out, table), monkeypatch, capsys)
        one_line_error(code, err, f"out_dir={out}", "in use by another deeprec run")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_an_out_dir_of_another_command_is_refused(experiment, table, tmp_path, monkeypatch, capsys):
    # case: experiment-output-of-another-command: an experiment into a deeprec-train run_dir
    from deeprec.outputs import claim_output

    run_dir = tmp_path / "run"
    with claim_output(run_dir, "deeprec-train", key="run_dir") as folder:
        folder.own(["metrics.json"])
        (run_dir / "metrics.json").write_text("{}")
    refused_untouched(experiment, run_dir, argv(experiment, run_dir, table), monkeypatch, capsys, "deeprec-train")
