"""Hostile or broken checkpoints (issue 14 class 7): metadata is checked against what the file's
tensors hold before anything is allocated, an archive that expands far beyond its size is refused
unread, every wrong key, type or shape is one CheckpointError line, and a file that is not a
checkpoint says so.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.checkpoint import load_recommender, read_checkpoint, save_checkpoint
from deeprec.data.interactions import from_frame
from deeprec.errors import CheckpointError
from inprocess_cli import run_cli


def small_data():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(12), 4)
    items = np.concatenate([rng.choice(9, 4, replace=False) for _ in range(12)])
    frame = pd.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                          "split": rng.choice(["train", "train", "test"], len(users))})
    return from_frame(frame, "small")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A fitted EASE and an (unfitted, tiny) NCF checkpoint."""
    from deeprec.baselines.ease import EASE
    from deeprec.models.ncf import NCF

    root = tmp_path_factory.mktemp("ckpts")
    data = small_data()
    save_checkpoint(EASE(data.n_users, data.n_items).fit(data), data, root / "ease.ckpt")
    ncf = NCF(n_users=data.n_users, n_items=data.n_items, gmf_dim=4, mlp_dim=4, mlp_layers=[8])
    save_checkpoint(ncf, data, root / "ncf.ckpt")
    return {"ease": root / "ease.ckpt", "ncf": root / "ncf.ckpt"}


def crafted(source: Path, target: Path, change) -> Path:
    """A copy of a checkpoint whose loaded dict `change(ckpt)` edited (plain torch.save, no pickled objects)."""
    ckpt = torch.load(source, weights_only=True)
    change(ckpt)
    torch.save(ckpt, target)
    return target


def test_a_crafted_item_count_is_refused_before_allocating(checkpoints, tmp_path):
    # case: ckpt-crafted-size: EASE would allocate n_items x n_items (4 TB here) on construction
    path = crafted(checkpoints["ease"], tmp_path / "big.ckpt", lambda c: c["deeprec"]["init_args"].update(n_items=10**6))
    with pytest.raises(CheckpointError, match=r"n_items=1000000.*9 item ids"):
        load_recommender(path)


def test_a_crafted_layer_width_is_refused_by_what_the_file_holds(checkpoints, tmp_path):
    # case: ckpt-crafted-size (any hyper-parameter): NCF with 2^40-wide embeddings would allocate
    # without limit; the model is first built without memory and its size compared with the file's tensors
    path = crafted(checkpoints["ncf"], tmp_path / "wide.ckpt", lambda c: c["deeprec"]["init_args"].update(gmf_dim=2**40))
    with pytest.raises(CheckpointError, match=r"tensors of other shapes|elements"):
        load_recommender(path)


def test_ease_does_not_allocate_its_item_matrix_before_its_memory_check():
    # case: ease-memory-check-first: 10 users x 1M items is refused by model.max_dense_gb, not by the allocator
    from deeprec.baselines.ease import EASE
    from deeprec.errors import ConfigError

    model = EASE(n_users=10, n_items=10**6)
    assert model.weights.numel() == 0
    frame = pd.DataFrame({"user_id": [f"u{u}" for u in range(10)], "item_id": [f"i{i:07d}" for i in range(10)], "split": "train"})
    data = from_frame(frame, "wide")
    data.item_ids = np.asarray([f"i{i:07d}" for i in range(10**6)], dtype=object)  # a catalogue of 1M items
    with pytest.raises(ConfigError, match="max_dense_gb"):
        model.fit(data)


def deflated_copy(source: Path, target: Path) -> Path:
    """The same archive with every entry deflated (torch reads it; a bomb of zeros is tiny on disk)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
    return target


def test_an_archive_that_expands_far_beyond_its_size_is_refused_unread(checkpoints, tmp_path):
    # case: ckpt-zip-bomb: 64 MB of zeros deflated into a file of about 100 KB
    plain = crafted(checkpoints["ease"], tmp_path / "padded.ckpt",
                    lambda c: c["state_dict"].update(padding=torch.zeros(16 * 2**20)))
    bomb = deflated_copy(plain, tmp_path / "bomb.ckpt")
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match=r"expands to 64(\.\d)? MB"):
        read_checkpoint(bomb)


def _set(path: list, value):
    def change(ckpt):
        node = ckpt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _drop(path: list):
    def change(ckpt):
        node = ckpt
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


MALFORMED = [
    ("meta-not-a-dict", _set(["deeprec"], [1, 2]), r"'deeprec' entry"),
    ("unknown-model", _set(["deeprec", "model"], "mystery"), r"model 'mystery'"),
    ("no-init-args", _drop(["deeprec", "init_args"]), r"init_args"),
    ("unknown-init-arg", _set(["deeprec", "init_args", "l3"], 1.0), r"l3"),
    ("init-arg-of-wrong-type", _set(["deeprec", "init_args", "n_items"], "nine"), r"n_items"),
    ("user-ids-not-a-list", _set(["deeprec", "user_ids"], torch.arange(12)), r"user_ids"),
    ("user-ids-of-another-length", _set(["deeprec", "user_ids"], ["u1", "u2"]), r"n_users=12 but the checkpoint has 2 user ids"),
    ("seen-of-another-shape", _set(["deeprec", "seen.shape"], torch.tensor([12, 5])), r"seen"),
    ("weights-of-another-shape", _set(["state_dict", "weights"], torch.zeros(9, 10)), r"weights"),
    ("weights-missing", _drop(["state_dict", "weights"]), r"weights"),
    ("tensor-that-is-a-list", _set(["state_dict", "weights"], [[0.0] * 9] * 9), r"weights"),
]


@pytest.mark.parametrize("case, change, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_malformed_entry_is_one_checkpoint_error(case, change, message, checkpoints, tmp_path):
    # cases: ckpt-malformed-* (a wrong key, type or shape)
    path = crafted(checkpoints["ease"], tmp_path / f"{case}.ckpt", change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_recommender(path)
    assert len(str(info.value).splitlines()) == 1


def test_a_checkpoint_of_an_earlier_deeprec_still_loads(checkpoints, tmp_path, caplog):
    # an older checkpoint's retired setting (fit_device, replaced by the run's `device`) is dropped
    # with a warning, unlike an unknown one (unknown-init-arg above), and the model scores as before
    path = crafted(checkpoints["ease"], tmp_path / "older.ckpt", _set(["deeprec", "init_args", "fit_device"], "cpu"))
    model, meta = load_recommender(path)
    reference, _ = load_recommender(checkpoints["ease"])
    assert "fit_device" in caplog.text and "fit_device" not in model.init_args()
    users = torch.arange(meta["init_args"]["n_users"])
    assert torch.equal(model.score(users), reference.score(users))


NOT_CHECKPOINTS = [
    ("text", b"user_id,item_id\na,b\n"),
    ("random-bytes", np.random.default_rng(1).bytes(4096)),
    ("empty", b""),
    ("zip-of-csv", None),
    ("plain-tensor", None),
]


@pytest.mark.parametrize("case, content", NOT_CHECKPOINTS, ids=[c[0] for c in NOT_CHECKPOINTS])
def test_a_file_that_is_not_a_checkpoint_says_so(case, content, tmp_path):
    # case: not-a-checkpoint: never "could run code" for a file that holds no code
    path = tmp_path / f"{case}.ckpt"
    if case == "zip-of-csv":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("data/t.csv", "a,b\n1,2\n")
        content = buffer.getvalue()
    elif case == "plain-tensor":
        torch.save(torch.ones(3), path)
        content = path.read_bytes()
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a (deeprec )?checkpoint") as info:
        read_checkpoint(path)
    assert "run code" not in str(info.value)


def test_deeprec_score_with_a_crafted_checkpoint_is_one_line(checkpoints, tmp_path, monkeypatch, capsys):
    # case: ckpt-crafted-size through the CLI
    path = crafted(checkpoints["ease"], tmp_path / "big.ckpt", lambda c: c["deeprec"]["init_args"].update(n_items=10**6))
    code, err = run_cli("deeprec.cli.score", [f"ckpt={path}", f"output={tmp_path / 's'}", "progress=false"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "n_items" in err, err
