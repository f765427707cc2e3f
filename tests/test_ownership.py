"""Outputs are deeprec's only when deeprec made them (README "Bad input, faults and security", issue 14
classes 1-2): every command refuses a folder it did not create, keeps the files others put in a folder
it did create, never writes over or inside an input, and one run at a time holds an output.

The four commands run in-process (sys.argv + SystemExit). Each test plants files and checks them
byte for byte afterwards, plus that nothing was added where the command was refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_random_table
from inprocess_cli import one_line_error, run_cli, run_cli_output

COMMANDS = ("ratings", "train", "compare", "score")
KEYS = {"ratings": "output", "train": "run_dir", "compare": "out_dir", "score": "output"}
MODULES = {c: f"deeprec.cli.{c}" for c in COMMANDS}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """An event log, an interactions table and a checkpoint, in a folder of their own."""
    from deeprec.baselines.pop import Popularity
    from deeprec.checkpoint import save_checkpoint
    from deeprec.data.adapters.interactions import InteractionsDataConfig, load
    from deeprec.data.splits import SplitConfig

    root = tmp_path_factory.mktemp("inputs")
    rows = [f"u{u},{10 * t + 100 * u},/c/k{t % 3}/l{t}" for u in range(4) for t in range(6)]
    (root / "log.csv").write_text("user_id,timestamp,url\n" + "\n".join(rows) + "\n")
    table = write_random_table(root / "table.csv", seed=3, n=400, n_users=20, n_items=15)
    data = load(InteractionsDataConfig(path=str(table), split=SplitConfig(strategy="random", valid_share=0.0)))
    save_checkpoint(Popularity(data.n_users, data.n_items).fit(data), data, root / "pop.ckpt")
    return {"log": root / "log.csv", "table": table, "ckpt": root / "pop.ckpt"}


def argv(command: str, out: Path, inputs: dict[str, Path], *extra: str) -> list[str]:
    base = {
        "ratings": [f"input={inputs['log']}", "ratings.min_courses=1"],
        "train": ["data=interactions", f"data.path={inputs['table']}", "model=pop"],
        "compare": ["data=interactions", f"data.path={inputs['table']}", "models=[pop]"],
        "score": [f"ckpt={inputs['ckpt']}", "progress=false"],
    }[command]
    return [*base, f"{KEYS[command]}={out}", *extra]


def snapshot(folder: Path, marker: bool = True) -> dict[str, bytes | None]:
    """Every entry under `folder` (hidden ones included): file bytes, or None for a folder.
    marker=False leaves out deeprec's own .deeprec/ (its lock file names the last run)."""
    entries = sorted(p for p in folder.rglob("*") if marker or ".deeprec" not in p.relative_to(folder).parts)
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in entries}


def plant_foreign_files(folder: Path) -> None:
    """What a user or another tool leaves in a folder: notes, another tool's Parquet parts and
    TensorBoard events, files with the names deeprec writes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    pd.DataFrame({"user_id": ["x"], "score": [1.0]}).to_parquet(folder / "part-00000.parquet")  # e.g. Spark's
    (folder / "tensorboard").mkdir(exist_ok=True)
    (folder / "tensorboard" / "events.out.tfevents.123.other-tool").write_bytes(b"\x00other")
    (folder / "rejects.parquet").write_bytes(b"the user's own rejects")
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "best.ckpt").write_bytes(np.random.default_rng(0).bytes(64))




@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_deeprec_did_not_create_is_refused_and_left_as_it_was(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-foreign-folder (all four commands)
    out = tmp_path / "theirs"
    plant_foreign_files(out)
    before = snapshot(out)
    code, err = run_cli(MODULES[command], argv(command, out, inputs), monkeypatch, capsys)
    one_line_error(code, err, f"{KEYS[command]}={out}", "deeprec did not create")
    assert snapshot(out) == before  # byte-identical, and nothing added (not even a lock file)


OWN_RUN_EXTRA = {"ratings": [], "train": [], "compare": [], "score": ["resume=false"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_files_others_put_in_a_deeprec_folder_survive_a_rerun(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-foreign-files-in-own-folder: a fresh rerun replaces only what deeprec wrote
    out = tmp_path / "mine"
    code, err = run_cli(MODULES[command], argv(command, out, inputs), monkeypatch, capsys)
    assert code == 0, err
    planted = {
        "notes.txt": b"my notes\n",
        "tensorboard/events.out.tfevents.123.other-tool": b"\x00other",  # train's TensorBoard folder
        "pop/tensorboard/events.out.tfevents.123.other-tool": b"\x00other",  # compare's run folder
        "part-09999.parquet": b"another tool's part",  # score's parts
        "checkpoints/mine.ckpt": b"a checkpoint of mine",
    }
    for name, content in planted.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    code, err = run_cli(MODULES[command], argv(command, out, inputs, *OWN_RUN_EXTRA[command]), monkeypatch, capsys)
    assert code == 0, err
    for name, content in planted.items():
        assert (out / name).read_bytes() == content, name


@pytest.mark.parametrize("command", COMMANDS)
def test_an_existing_file_as_output_is_refused(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-is-a-file
    out = tmp_path / "report.txt"
    out.write_text("keep me")
    code, err = run_cli(MODULES[command], argv(command, out, inputs), monkeypatch, capsys)
    one_line_error(code, err, f"{KEYS[command]}={out}", "is a file")
    assert out.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


@pytest.mark.parametrize("command", COMMANDS)
def test_the_current_folder_is_refused(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-current-folder: output=. names the folder the user works in (today's input log was in it)
    work = tmp_path / "work"
    work.mkdir()
    (work / "weblog.csv").write_text(inputs["log"].read_text())
    monkeypatch.chdir(work)
    before = snapshot(work)
    code, err = run_cli(MODULES[command], argv(command, Path("."), inputs), monkeypatch, capsys)
    one_line_error(code, err, f"{KEYS[command]}=.", "current folder")
    assert snapshot(work) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_the_root_folder_is_refused_before_any_work(command, inputs, monkeypatch, capsys):
    # case: output-root-folder. The work functions are replaced by ones that fail the test, so a
    # refusal that came too late could not write anything at the root either.
    import deeprec.cli.compare
    import deeprec.cli.ratings  # noqa: F401
    import deeprec.cli.train
    import deeprec.data.ratings
    import deeprec.scoring.batch

    def too_late(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(deeprec.data.ratings, "rate_log", too_late)
    monkeypatch.setattr(deeprec.cli.train, "load_data", too_late)
    monkeypatch.setattr(deeprec.cli.compare, "load_data", too_late)
    monkeypatch.setattr(deeprec.scoring.batch, "load_recommender", too_late)
    code, err = run_cli(MODULES[command], argv(command, Path("/"), inputs), monkeypatch, capsys)
    one_line_error(code, err, f"{KEYS[command]}=/")


def test_ratings_output_inside_or_around_its_input_is_refused(inputs, tmp_path, monkeypatch, capsys):
    # case: output-overlaps-input (deeprec-ratings): inside the input folder, or a folder holding the input
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.csv").write_text(inputs["log"].read_text())
    before = snapshot(tmp_path)
    for args in ([f"input={logs}", f"output={logs / 'ratings'}"], [f"input={logs / 'a.csv'}", f"output={logs}"],
                 [f"input={logs}", f"output={logs}"]):
        code, err = run_cli(MODULES["ratings"], [*args, "ratings.min_courses=1"], monkeypatch, capsys)
        one_line_error(code, err, "input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "compare", "score"])
def test_an_output_holding_an_input_is_refused(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-overlaps-input (deeprec-train's data.path, deeprec-compare's data.path, deeprec-score's ckpt)
    folder = tmp_path / "project"
    folder.mkdir()
    local = {key: folder / path.name for key, path in inputs.items()}
    for key, path in inputs.items():
        local[key].write_bytes(path.read_bytes())
    before = snapshot(folder)
    code, err = run_cli(MODULES[command], argv(command, folder, local), monkeypatch, capsys)
    one_line_error(code, err, f"{KEYS[command]}={folder}", "input")
    assert snapshot(folder) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_run_on_the_same_output_fails_at_once(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-concurrent-runs: the first run holds the output's lock; the second stops in one line
    from deeprec.outputs import claim_output

    out = tmp_path / "busy"
    with claim_output(out, f"deeprec-{command}", key=KEYS[command]):
        code, err = run_cli(MODULES[command], argv(command, out, inputs), monkeypatch, capsys)
        one_line_error(code, err, f"{KEYS[command]}={out}", "in use by another deeprec run")
    code, err = run_cli(MODULES[command], argv(command, out, inputs), monkeypatch, capsys)  # free again
    assert code == 0, err


def test_an_output_of_another_command_is_refused(inputs, tmp_path, monkeypatch, capsys):
    # case: output-of-another-command: deeprec-score into a deeprec-train run_dir
    run_dir = tmp_path / "run"
    assert run_cli(MODULES["train"], argv("train", run_dir, inputs), monkeypatch, capsys)[0] == 0
    before = snapshot(run_dir)
    code, err = run_cli(MODULES["score"], argv("score", run_dir, inputs), monkeypatch, capsys)
    one_line_error(code, err, f"output={run_dir}", "deeprec-train")
    assert snapshot(run_dir) == before  # refused before anything, the marker included


# -- resume ------------------------------------------------------------------------------------------
NCF_TINY = ["model=ncf", "model.gmf_dim=4", "model.mlp_dim=4", "model.mlp_layers=[8]", "model.batch_size=64",
            "eval.patience=0", "trainer.max_epochs=1"]


def test_resume_with_other_data_is_refused(inputs, tmp_path, monkeypatch, capsys):
    # case: train-resume-other-data: same users, items and model, other interactions
    run_dir = tmp_path / "run"
    table = pd.read_csv(inputs["table"])
    other = tmp_path / "other.csv"
    table.assign(timestamp=table["timestamp"].to_numpy()[::-1]).to_csv(other, index=False)
    base = ["data=interactions", *NCF_TINY, f"run_dir={run_dir}"]
    assert run_cli(MODULES["train"], [*base, f"data.path={inputs['table']}"], monkeypatch, capsys)[0] == 0
    before = snapshot(run_dir, marker=False)
    code, err = run_cli(MODULES["train"], [*base, f"data.path={other}", "resume=true"], monkeypatch, capsys)
    one_line_error(code, err, "resume=true", "other data")
    assert snapshot(run_dir, marker=False) == before
    code, err = run_cli(MODULES["train"], [*base, f"data.path={inputs['table']}", "resume=true", "seed=7"],
                        monkeypatch, capsys)
    one_line_error(code, err, "resume=true", "seed")


def test_resume_with_nothing_to_resume_says_so(inputs, tmp_path, monkeypatch, capsys):
    # case: train-resume-nothing: resume=true on a new run_dir starts from epoch 0 and says so
    run_dir = tmp_path / "new"
    args = ["data=interactions", f"data.path={inputs['table']}", *NCF_TINY, f"run_dir={run_dir}", "resume=true"]
    code, out, err = run_cli_output(MODULES["train"], args, monkeypatch, capsys)
    assert code == 0, err
    assert "resume=true: nothing to resume" in out + err
    assert (run_dir / "metrics.json").is_file()


def test_one_parquet_file_of_scores_replaces_only_its_own(inputs, tmp_path, monkeypatch, capsys):
    # case: output-is-a-file (deeprec-score output=FILE.parquet): another tool's file stays; deeprec's is redone
    theirs = tmp_path / "theirs.parquet"
    pd.DataFrame({"user_id": ["x"], "rank": [1]}).to_parquet(theirs)
    before = theirs.read_bytes()
    code, err = run_cli(MODULES["score"], argv("score", theirs, inputs), monkeypatch, capsys)
    one_line_error(code, err, f"output={theirs}", "deeprec did not write")
    assert theirs.read_bytes() == before
    mine = tmp_path / "mine.parquet"
    for _ in range(2):
        code, err = run_cli(MODULES["score"], argv("score", mine, inputs), monkeypatch, capsys)
        assert code == 0, err
    assert len(pd.read_parquet(mine)) > 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or temporary left


@pytest.mark.parametrize("command", ("train", "compare"))
def test_seed_and_tuning_outputs_are_the_commands_own(command, inputs, tmp_path, monkeypatch, capsys):
    # case: output-seeds-and-tuning: compare's out_dir/seed<k>/ and tuning/, train's run_dir/tuning/ are listed in
    # the manifest, replaced by a rerun, and files a user put beside them stay
    import json

    out = tmp_path / "mine"
    extra = ["model=ease", "tune=2"] if command == "train" else ["models=[pop,ease]", "seeds=[1,2]", "tune=2"]
    code, err = run_cli(MODULES[command], argv(command, out, inputs, *extra), monkeypatch, capsys)
    assert code == 0, err
    manifest = json.loads((out / ".deeprec" / "manifest.json").read_text())
    ours = ["tuning/ease.json"] + (["seed1/leaderboard.md", "seed2/leaderboard.csv", "tuning/chosen.yaml"]
                                   if command == "compare" else [])
    for name in ours:
        assert (out / name).is_file() and name in manifest["files"], name
    trial = out / "tuning" / "ease" / "trial-000"  # each trial: a deeprec-train folder of its own
    assert json.loads((trial / ".deeprec" / "manifest.json").read_text())["command"] == "deeprec-train"
    planted = {"tuning/notes.txt": b"mine", **({"seed1/notes.txt": b"mine too"} if command == "compare" else {})}
    for name, content in planted.items():
        (out / name).write_bytes(content)
    (out / ours[0]).write_text("{}")  # deeprec's own file: the rerun writes it again
    code, err = run_cli(MODULES[command], argv(command, out, inputs, *extra), monkeypatch, capsys)
    assert code == 0, err
    for name, content in planted.items():
        assert (out / name).read_bytes() == content, name
    assert len(json.loads((out / ours[0]).read_text())["trials"]) == 2


def test_only_temporaries_deeprec_tagged_are_cleaned_and_a_failed_claim_deletes_nothing_else(tmp_path):
    """A killed run's `.NAME.deeprec-*.tmp` goes; a user's look-alike without the tag stays. A claim that
    created its folder and then failed removes only its marker and the empty folder, never recursively."""
    from deeprec.atomic import make_temp
    from deeprec.outputs import claim_output, remove_created_folder

    out = tmp_path / "ratings"
    with claim_output(out, "deeprec-ratings") as folder:
        ours = make_temp(out, "ratings.parquet")
        users = out / ".ratings.parquet.mine.tmp"
        users.write_text("a user's file")
        folder.remove_temporaries(["ratings.parquet"])
    assert ours.name.startswith(".ratings.parquet.deeprec-") and not ours.exists()
    assert users.read_text() == "a user's file"

    created = tmp_path / "fresh"
    (created / ".deeprec").mkdir(parents=True)
    (created / ".deeprec" / "manifest.json").write_text("{}")
    (created / ".deeprec" / "run.lock").write_text("")
    remove_created_folder(created, "run")
    assert not created.exists()
    kept = tmp_path / "kept"
    (kept / ".deeprec").mkdir(parents=True)
    (kept / ".deeprec" / "notes.txt").write_text("not a name deeprec writes")
    (kept / "late.txt").write_text("appeared after the check")
    remove_created_folder(kept, "run")
    assert (kept / "late.txt").read_text() == "appeared after the check"
    assert (kept / ".deeprec" / "notes.txt").read_text() == "not a name deeprec writes"


def test_deeprec_deletes_a_file_only_where_its_name_or_folder_proves_deeprec_made_it(tmp_path):
    from deeprec.atomic import MARKER, make_temp, make_temp_folder, remove_deeprec_file

    user = tmp_path / "notes.deeprec-draft.tmp"  # a user's file: not hidden, so not a tagged temporary
    user.write_text("mine")
    with pytest.raises(RuntimeError, match="refuses to delete"):
        remove_deeprec_file(user)
    assert user.read_text() == "mine"
    tagged = make_temp(tmp_path, "scores.parquet")
    scratch = make_temp_folder(tmp_path, "events.parquet")
    (scratch / "part-00000.parquet").write_text("x")
    (tmp_path / MARKER).mkdir()
    (tmp_path / MARKER / "run.lock").write_text("")
    for path in (tagged, scratch / "part-00000.parquet", tmp_path / MARKER / "run.lock"):
        remove_deeprec_file(path)
        assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MARKER, scratch.name, user.name])


def test_deeprec_deletes_a_folder_only_when_it_made_it(tmp_path):
    from deeprec.atomic import make_temp_folder, remove_deeprec_folder

    user = tmp_path / "deeprec-ratings-mine"  # the old scratch prefix: a user may have such a folder
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "keep.csv").write_text("mine")
    for path in (user, user / "sub"):
        with pytest.raises(RuntimeError, match="refuses to delete"):
            remove_deeprec_folder(path)
    assert (user / "sub" / "keep.csv").read_text() == "mine"
    scratch = make_temp_folder(tmp_path, "ratings")
    (scratch / "part-0000").mkdir()
    (scratch / "part-0000" / "views.arrow").write_text("x")
    remove_deeprec_folder(scratch / "part-0000")
    assert scratch.is_dir() and not (scratch / "part-0000").exists()
    remove_deeprec_folder(scratch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [user.name]
