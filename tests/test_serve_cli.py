"""deeprec-serve's start-up mistakes: each one line on stderr and exit 2, before anything is served."""

from __future__ import annotations

import socket

import pytest

from deeprec.serving.wal import EventLog
from inprocess_cli import run_cli
from serving_helpers import app_client, event, linucb_checkpoint


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
    assert code == 2 and "is in use by another deeprec run (command deeprec-serve" in err


def test_a_state_dir_of_another_checkpoint_is_refused(ckpt, tmp_path, monkeypatch, capsys):
    EventLog(tmp_path / "other", "ease-0123456789ab").close()
    code, err = serve([f"ckpt={ckpt}", f"state_dir={tmp_path / 'other'}", "port=0"], monkeypatch, capsys)
    assert code == 2 and "holds the log of checkpoint ease-0123456789ab" in err


def test_export_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    EventLog(tmp_path / "s", "linucb-x").close()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    code, err = serve([f"state_dir={tmp_path / 's'}", f"export={tmp_path / 'theirs'}"], monkeypatch, capsys)
    assert code == 2 and "holds files deeprec did not create (e.g. notes.txt)" in err
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep me"
    code, err = serve([f"state_dir={tmp_path / 's'}", f"export={tmp_path / 'mine'}"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "mine" / "events.parquet").is_file()
    code, err = serve([f"state_dir={tmp_path / 'none'}", f"export={tmp_path / 'x'}"], monkeypatch, capsys)
    assert code == 2 and "holds no event log" in err


def test_state_dir_follows_the_ownership_rule(ckpt, tmp_path, monkeypatch, capsys):
    """deeprec-serve writes only into a state_dir it created (or an empty one), and there replaces or
    removes only its own log and snapshots: a user's files beside them stay, byte for byte."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "events.sqlite").write_bytes(b"someone else's database")
    code, err = serve([f"ckpt={ckpt}", f"state_dir={theirs}", "port=0"], monkeypatch, capsys)
    assert code == 2 and "holds files deeprec did not create (e.g. events.sqlite)" in err
    assert (theirs / "events.sqlite").read_bytes() == b"someone else's database" and len(list(theirs.iterdir())) == 1
    code, err = serve([f"ckpt={ckpt}", f"state_dir={ckpt.parent}", "port=0"], monkeypatch, capsys)
    assert code == 2 and "holds the input" in err
    mine = tmp_path / "mine"
    with app_client(ckpt, mine, snapshot={"keep": 1}) as (client, _):
        (mine / "notes.txt").write_text("keep me")
        (mine / "snapshots" / "my-copy.pt").write_bytes(b"not a snapshot")
        for n in range(3):
            assert client.post("/feedback", json=event(f"o{n}", "u001", "i002")).status_code == 200
            assert client.post("/admin/snapshot").status_code == 200
    with app_client(ckpt, mine) as (client, service):  # a restart on its own folder
        assert service.recovery["snapshot_seq"] == 3
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (mine / "snapshots" / "my-copy.pt").read_bytes() == b"not a snapshot"
    assert sorted(p.name for p in (mine / "snapshots").iterdir()) == ["my-copy.pt", "snapshot-000000000003.pt"]
