"""deeprec-score: top-k Parquet against a brute-force ranking, resume after kill -9, shards, fallback,
unknown users, and refusal of unsafe or broken checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deeprec.checkpoint import read_checkpoint, save_checkpoint
from deeprec.data.interactions import from_frame
from deeprec.errors import CheckpointError, ConfigError
from deeprec.recommender import csr_to_tensors
from deeprec.scoring.batch import ScoreConfig, auto_batch_size, score_users

SCORE_BIN = shutil.which("deeprec-score") or str(Path(sys.executable).parent / "deeprec-score")


def make_data(n_users: int, n_items: int, per_user: int, seed: int, with_features: bool = False):
    """Random implicit interactions (each user `per_user` distinct items, ratings 1..5, random splits)."""
    rng = np.random.default_rng(seed)
    items = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :per_user]
    users = np.repeat(np.arange(n_users), per_user)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u:05d}" for u in users],
            "item_id": [f"i{i:04d}" for i in items.ravel()],
            "rating": rng.integers(1, 6, size=users.size).astype(float),
            "split": rng.choice(["train", "train", "train", "valid", "test"], size=users.size),
        }
    )
    features = None
    if with_features:
        features = pd.DataFrame(rng.random((n_items, 4)), index=[f"i{i:04d}" for i in range(n_items)])
    return from_frame(frame, "test", item_features=features)


def fitted(name: str, data):
    from deeprec.registry import model_class

    config = {"features": "item_features", "reward": "rating"} if name == "linucb" else {}
    model = model_class(name)(n_users=data.n_users, n_items=data.n_items, **config).fit(data)
    return model.eval()  # deterministic scores (no dropout), as deeprec-score uses them


def brute_force_topk(model, data, k: int, columns: np.ndarray | None = None) -> dict[str, list[tuple[str, float]]]:
    """user_id -> [(item_id, score)] by sorting each user's full score row in Python, seen items removed."""
    seen = data.matrix(("train", "valid", "test"), binary=True).toarray() > 0
    with torch.no_grad():
        scores = model.score(torch.arange(data.n_users)).float().numpy()
    columns = np.arange(data.n_items) if columns is None else columns
    out = {}
    for u in range(data.n_users):
        candidates = [(data.item_ids[j], float(scores[u, j])) for j in columns if not seen[u, j]]
        candidates.sort(key=lambda pair: -pair[1])
        out[data.user_ids[u]] = candidates[:k]
    return out


def read_scores(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.astype({"user_id": str, "item_id": str}).sort_values(["user_id", "rank"]).reset_index(drop=True)


def assert_matches_brute_force(frame: pd.DataFrame, expected: dict, seen_pairs: set, true_score: dict) -> None:
    """Tie-robust: per user, the returned score list equals the brute-force top-k scores, each returned
    item is unseen and carries its true score, and ranks run 1..k in descending score."""
    assert set(frame["user_id"]) == {u for u, lst in expected.items() if lst}
    for user, rows in frame.groupby("user_id"):
        want = expected[user]
        assert rows["rank"].tolist() == list(range(1, len(want) + 1))
        np.testing.assert_allclose(rows["score"].to_numpy(), [s for _, s in want], rtol=1e-5, atol=1e-5)
        for item, score in zip(rows["item_id"], rows["score"]):
            assert (user, item) not in seen_pairs
            assert score == pytest.approx(true_score[user, item], rel=1e-5, abs=1e-5)


def seen_pairs_of(data) -> set:
    rows = data.frame
    return set(zip(data.user_ids[rows["user"]], data.item_ids[rows["item"]]))


def true_scores(model, data) -> dict:
    with torch.no_grad():
        scores = model.score(torch.arange(data.n_users)).float().numpy()
    return {(data.user_ids[u], data.item_ids[j]): float(scores[u, j]) for u in range(data.n_users) for j in range(data.n_items)}


def available_models() -> list[str]:
    """pop, ease, linucb, plus the deep models whose module exists now."""
    import importlib

    from deeprec.registry import MODELS

    names = ["pop", "ease", "itemknn", "linucb", "hybrid"]
    for name in ("ncf", "autoencoder"):
        module = MODELS[name].split(":")[0]
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


@pytest.fixture(scope="module")
def small():
    return make_data(n_users=37, n_items=23, per_user=6, seed=3, with_features=True)


@pytest.mark.parametrize("name", available_models())
def test_parquet_equals_brute_force_topk(name, small, tmp_path):
    model = fitted(name, small)
    ckpt = tmp_path / "model.ckpt"
    save_checkpoint(model, small, ckpt)
    summary = score_users(ScoreConfig(ckpt=str(ckpt), output=str(tmp_path / "out"), k=5, batch_size=8, part_rows=40, progress=False))
    frame = read_scores(tmp_path / "out")
    assert summary["parts"] == -(-37 // 8) and summary["rows"] == len(frame)
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*.parquet")) == [f"part-{i:05d}.parquet" for i in range(5)]
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert_matches_brute_force(frame, brute_force_topk(model, small, 5), seen_pairs_of(small), true_scores(model, small))


def test_item_restriction_and_single_file(small, tmp_path):
    model = fitted("ease", small)
    ckpt = tmp_path / "model.ckpt"
    save_checkpoint(model, small, ckpt)
    columns = np.array([2, 5, 7, 11, 13, 17, 19, 22])
    (tmp_path / "items.txt").write_text("".join(f"{small.item_ids[j]}\n" for j in columns) + "not-an-item\n")
    out = tmp_path / "top.parquet"
    summary = score_users(ScoreConfig(ckpt=str(ckpt), output=str(out), k=3, items=str(tmp_path / "items.txt"), part_rows=30, progress=False))
    assert summary["items_ranked"] == 8 and summary["items_unknown"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the temporary file was renamed
    frame = read_scores(out)
    assert set(frame["item_id"]) <= {small.item_ids[j] for j in columns}
    assert_matches_brute_force(frame, brute_force_topk(model, small, 3, columns), seen_pairs_of(small), true_scores(model, small))


def test_shards_union_equals_full_output(small, tmp_path):
    model = fitted("ease", small)
    ckpt = tmp_path / "model.ckpt"
    save_checkpoint(model, small, ckpt)
    score_users(ScoreConfig(ckpt=str(ckpt), output=str(tmp_path / "full"), k=4, part_rows=20, progress=False))
    for i in range(3):
        score_users(ScoreConfig(ckpt=str(ckpt), output=str(tmp_path / "sharded"), k=4, part_rows=20, shard=f"{i}/3", progress=False))
    full, sharded = read_scores(tmp_path / "full"), read_scores(tmp_path / "sharded")
    pd.testing.assert_frame_equal(full, sharded)
    per_shard = [pd.read_parquet(tmp_path / "sharded", filters=None).shape[0]]
    assert per_shard[0] == len(full)
    shard_users = [
        set(pd.concat([pd.read_parquet(p) for p in (tmp_path / "sharded").glob(f"shard-{i:05d}-of-00003-part-*.parquet")])["user_id"])
        for i in range(3)
    ]
    assert sum(len(s) for s in shard_users) == 37 and not (shard_users[0] & shard_users[1])
    assert [len(s) for s in shard_users] == [12, 12, 13]  # contiguous blocks of floor/ceil size


def checkpoint_with_empty_user(data, model, path: Path, empty_user: int) -> None:
    """A checkpoint whose `seen` matrix has no item for `empty_user` (a user without history)."""
    save_checkpoint(model, data, path)
    ckpt = read_checkpoint(path)
    seen = data.matrix(("train", "valid", "test"), binary=True).tolil()
    seen[empty_user, :] = 0
    ckpt["deeprec"].update(csr_to_tensors(seen.tocsr(), "seen"))
    torch.save(ckpt, path)


def test_unknown_and_history_less_users_get_popularity_fallback(small, tmp_path):
    model = fitted("ease", small)
    ckpt = tmp_path / "model.ckpt"
    checkpoint_with_empty_user(small, model, ckpt, empty_user=4)
    listed = [small.user_ids[1], "ghost-1", small.user_ids[4], "ghost-2", small.user_ids[1], small.user_ids[9]]
    (tmp_path / "users.csv").write_text("user_id,segment\n" + "".join(f"{u},a\n" for u in listed))
    summary = score_users(ScoreConfig(ckpt=str(ckpt), output=str(tmp_path / "out"), k=5, users=str(tmp_path / "users.csv"), progress=False))
    assert summary["users"] == 5 and summary["users_unknown"] == 2 and summary["users_fallback"] == 3
    assert (tmp_path / "out" / "_unknown_users.txt").read_text().split() == ["ghost-1", "ghost-2"]
    frame = pd.read_parquet(tmp_path / "out")
    assert frame["user_id"].drop_duplicates().tolist() == [small.user_ids[1], "ghost-1", small.user_ids[4], "ghost-2", small.user_ids[9]]
    # popularity by hand: number of users (user 4 removed) who have each item
    counts = {}
    for u, j in zip(small.frame["user"], small.frame["item"]):
        if u != 4:
            counts.setdefault(small.item_ids[j], set()).add(u)
    popular = sorted((len(us) for us in counts.values()), reverse=True)[:5]
    for user in ("ghost-1", "ghost-2", small.user_ids[4]):
        rows = frame[frame["user_id"] == user]
        assert rows["score"].tolist() == [float(c) for c in popular]
        assert all(len(counts[i]) == s for i, s in zip(rows["item_id"], rows["score"]))
    expected = brute_force_topk(model, small, 5)[small.user_ids[9]]
    np.testing.assert_allclose(frame[frame["user_id"] == small.user_ids[9]]["score"], [s for _, s in expected], rtol=1e-5)

    skipped = score_users(
        ScoreConfig(ckpt=str(ckpt), output=str(tmp_path / "skip"), k=5, users=str(tmp_path / "users.csv"), fallback="skip", progress=False)
    )
    assert skipped["users_skipped"] == 3
    assert set(pd.read_parquet(tmp_path / "skip")["user_id"]) == {small.user_ids[1], small.user_ids[9]}


class RunsCodeWhenLoaded:
    """An object whose unpickling would create a marker file (what a malicious checkpoint does)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"deeprec": {}, "state_dict": {}, "payload": RunsCodeWhenLoaded(str(marker))}, tmp_path / "evil.ckpt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        score_users(ScoreConfig(ckpt=str(tmp_path / "evil.ckpt"), output=str(tmp_path / "out"), progress=False))
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_truncated_checkpoint_is_a_clear_error(small, tmp_path):
    save_checkpoint(fitted("pop", small), small, tmp_path / "model.ckpt")
    blob = (tmp_path / "model.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(blob[: len(blob) // 2])
    result = subprocess.run(
        [SCORE_BIN, f"ckpt={tmp_path / 'cut.ckpt'}", f"output={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "truncated" in result.stderr and "Traceback" not in result.stderr
    # hydra must not litter the working directory (no outputs/, .hydra/, score.log)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.ckpt", "model.ckpt"]


def test_bad_values_are_config_errors(small, tmp_path):
    save_checkpoint(fitted("pop", small), small, tmp_path / "model.ckpt")
    for bad, message in (({"shard": "3/3"}, "shard"), ({"k": 0}, "k=0"), ({"fallback": "random"}, "fallback"), ({"device": "tpu"}, "device")):
        with pytest.raises(ConfigError, match=message):
            score_users(ScoreConfig(ckpt=str(tmp_path / "model.ckpt"), output=str(tmp_path / "out"), progress=False, **bad))
    assert 1 <= auto_batch_size(10**9, torch.device("cpu"), ScoreConfig()) <= ScoreConfig().max_batch_size
    assert auto_batch_size(10, torch.device("cpu"), ScoreConfig(max_batch_size=77)) == 77


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    """Enough users that scoring with tiny parts takes seconds (so it can be killed mid-way)."""
    folder = tmp_path_factory.mktemp("big")
    data = make_data(n_users=12000, n_items=300, per_user=3, seed=11)
    save_checkpoint(fitted("ease", data), data, folder / "model.ckpt")
    return folder / "model.ckpt"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SCORE_BIN, *args, "progress=false"], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_kill_minus_9_then_resume_equals_uninterrupted_run(big_checkpoint, tmp_path):
    args = [f"ckpt={big_checkpoint}", "k=5", "part_rows=250", "batch_size=25"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([SCORE_BIN, *args, f"output={out}", "progress=false"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "_manifest.json"
    deadline = time.time() + 120
    finished_before = {}
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            parts = json.loads(manifest.read_text())["parts"]
            if len(parts) >= 20:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed; make the dataset bigger"
    assert not (out / "_SUCCESS").exists()
    finished_before = json.loads(manifest.read_text())["parts"]
    assert 20 <= len(finished_before) < 240
    visible = [p for p in out.iterdir() if not p.name.startswith((".", "_"))]
    for part in visible:  # every visible part is complete; partial writes are hidden dot-files
        assert part.name.startswith("part-") and pd.read_parquet(part).shape[0] == 250
    mtimes = {n: (out / f"part-{int(n):05d}.parquet").stat().st_mtime_ns for n in finished_before}

    with pytest.raises(ConfigError, match="other parameters.*k: 5 -> 7"):
        score_users(ScoreConfig(ckpt=str(big_checkpoint), output=str(out), k=7, part_rows=250, progress=False))

    resumed = run_cli(*args, f"output={out}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "_SUCCESS").exists()
    assert all((out / f"part-{int(n):05d}.parquet").stat().st_mtime_ns == t for n, t in mtimes.items())  # not redone
    score_users(ScoreConfig(ckpt=str(big_checkpoint), output=str(tmp_path / "clean"), k=5, part_rows=250, batch_size=25, progress=False))
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "clean"))
    assert len(pd.read_parquet(out)) == 12000 * 5
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("resume", [True, False])
def test_temporary_files_of_a_killed_run_are_removed_on_rerun(big_checkpoint, tmp_path, resume):
    # A run killed inside an atomic write leaves a hidden temporary file of a part, of the manifest or
    # of _SUCCESS (the kill -9 test above hits each at random); the next run removes all of them.
    out = tmp_path / "out"
    cfg = dict(ckpt=str(big_checkpoint), output=str(out), k=5, part_rows=4000, progress=False)
    score_users(ScoreConfig(**cfg))
    stale = [out / ".part-00001.parquet.deeprec-abc123.tmp", out / "._manifest.json.deeprec-def456.tmp", out / "._SUCCESS.deeprec-gh789.tmp"]
    for path in stale:
        path.write_text("half")
    score_users(ScoreConfig(**cfg, resume=resume))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "_SUCCESS").exists()
