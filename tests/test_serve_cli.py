"""deeprec-serve's start-up mistakes: each one line on stderr and exit 2, before anything is served."""

from __future__ import annotations

import socket

import pytest

from deeprec.serving.wal import EventLog
from inprocess_cli import run_cli
from serving_helpers import linucb_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return linucb_checkpoint(tmp_path_factory.mktemp("cli") / "linucb.ckpt")


def serve(argv, monkeypatch, capsys):
    return run_cli("deeprec.cli.serve", argv, monkeypatch, capsys)


@pytest.mark.parametrize("argv, words", [
    ([], "needs state_dir=DIR"),
    (["state_dir=S"], "needs ckpt=PATH"),
    (["ckpt=nowhere.ckpt", "state_dir=S"], "does not exist"),
    (["ckpt=C", "state_dir=S", "+colour=red"], "unknown key(s) ['colour']"),
    (["ckpt=C", "state_dir=S", "exploration.epsilon=2"], "exploration.epsilon=2.0 is not valid"),
    (["ckpt=C", "state_dir=S", "wal.sync=sometimes"], "wal.sync='sometimes' is not valid"),
    (["ckpt=C", "state_dir=S", "limits.max_k=0"], "limits.max_k=0 must be at least 1"),
    (["ckpt=C", "state_dir=S", "port=70000"], "port=70000 is not valid"),
])
def test_config_mistakes_are_one_line(argv, words, ckpt, tmp_path, monkeypatch, capsys):
    argv = [a.replace("=C", f"={ckpt}").replace("=S", f"={tmp_path / 'state'}") for a in argv]
    code, err = serve(argv, monkeypatch, capsys)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_a_busy_port_and_a_held_state_dir_are_refused(ckpt, tmp_path, monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, err = serve([f"ckpt={ckpt}", f"state_dir={tmp_path / 's'}", f"port={busy.getsockname()[1]}"], monkeypatch, capsys)
    assert code == 2 and "cannot listen on 127.0.0.1" in err
    held = EventLog(tmp_path / "held", "linucb-x")
    try:
        code, err = serve([f"ckpt={ckpt}", f"state_dir={tmp_path / 'held'}", "port=0"], monkeypatch, capsys)
    finally:
        held.close()
    assert code == 2 and "in use by another deeprec-serve process" in err


def test_a_state_dir_of_another_checkpoint_is_refused(ckpt, tmp_path, monkeypatch, capsys):
    EventLog(tmp_path / "other", "ease-0123456789ab").close()
    code, err = serve([f"ckpt={ckpt}", f"state_dir={tmp_path / 'other'}", "port=0"], monkeypatch, capsys)
    assert code == 2 and "holds the log of checkpoint ease-0123456789ab" in err


def test_export_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    EventLog(tmp_path / "s", "linucb-x").close()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    code, err = serve([f"state_dir={tmp_path / 's'}", f"export={tmp_path / 'theirs'}"], monkeypatch, capsys)
    assert code == 2 and "not an earlier deeprec-serve export" in err
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep me"
    code, err = serve([f"state_dir={tmp_path / 's'}", f"export={tmp_path / 'mine'}"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "mine" / "events.parquet").is_file()
    code, err = serve([f"state_dir={tmp_path / 'none'}", f"export={tmp_path / 'x'}"], monkeypatch, capsys)
    assert code == 2 and "holds no event log" in err
