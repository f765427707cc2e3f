"""Training throughput and time to the best valid NDCG@10: deeprec vs RecBole and cornac, same
architectures, same data, one split, one evaluator.

    /work/bench-venv/bin/python scripts/bench_training_peers.py [--runs deeprec:neumf,recbole:neumf,...]
        [--threads 2] [--epochs neumf=15,vae=100,sasrec=20]
-> bench_results/training_peers.{json,md}

The peers are installed only in the benchmark's environment (a separate venv: torch==2.13.0 first,
then recbole and cornac, then `pip install -e .` for deeprec); deeprec itself never imports them.

Protocol. ml-latest-small from ../shared/data through deeprec's movielens loader (temporal split
70/10/20); every framework trains on the same train interactions (binarised) and is evaluated after
every epoch by the same code, deeprec's evaluate_recommender on the valid split (train items
excluded), on a [users, items] table of its scores. Each run is a fresh process with `--threads`
torch threads, imports done before the clock starts.
- samples/s: training rows per second of training loop (evaluation excluded): positives for NeuMF
  (each with 4 uniform negatives, pointwise BCE), user rows reconstructed for Mult-VAE (one per user
  and epoch in all three; RecBole's user loader also counts its padding user), predicted targets for
  SASRec (every train event after a user's first).
- every run stops after the epoch at which its training time passes --budget seconds (or at the
  epoch cap), so each framework gets the same training time on the loaded machine.
- time to best: setup (converting the data into the framework's format, building the model) plus the
  training time of the epochs up to the one with the best valid NDCG@10. deeprec runs its own
  deeprec-train path (run_training: early stopping on valid NDCG@10, patience 10, checkpoints,
  embedding export); the peers run the epoch cap and the best epoch is read off the same curve.
- deeprec-train's fixed start-up (the CLI's wall time minus the in-process run of the same job) is
  measured with `--startup`.
The hyper-parameters are set equal where the frameworks share them (table in the README); each
framework keeps its own initialisation and optimiser details.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("deeprec:neumf", "recbole:neumf", "cornac:neumf", "deeprec:vae", "recbole:vae", "cornac:vae",
        "deeprec:sasrec", "recbole:sasrec")
EPOCHS = {"neumf": 15, "vae": 100, "sasrec": 20}
BUDGET_S = 120.0  # training seconds per run (evaluation excluded); set by --budget
# The shared hyper-parameters of each architecture.
NEUMF = dict(gmf_dim=16, mlp_dim=32, mlp_layers=[64, 32, 16], negatives=4, batch_size=1024, lr=0.001)
VAE = dict(hidden=600, latent=200, dropout=0.5, batch_size=128, lr=0.001, anneal_cap=0.2, anneal_steps=2000)
SASREC = dict(dim=64, blocks=2, heads=2, dropout=0.2, max_len=50, lr=0.001, batch_size=128, recbole_batch_size=2048)


def patch_numpy2() -> None:
    """RecBole 1.2.1 still uses numpy aliases numpy 2 removed; restore them for the peers only."""
    for name, value in (("float", float), ("int", int), ("bool", bool), ("long", int), ("float_", np.float64),
                        ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, name):
            setattr(np, name, value)


def movielens():
    from hydra import compose, initialize_config_module

    from deeprec.cli.common import data_config, load_data

    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=["data=movielens"])
    return load_data(data_config(cfg.data))


def valid_ndcg(data, scores) -> float:
    """deeprec's evaluate_recommender on the valid split for a [n_users, n_items] score table."""
    import torch

    from deeprec.evaluation.evaluator import evaluate_recommender
    from deeprec.recommender import Recommender

    class ScoreTable(Recommender):
        name = "peer"

        def __init__(self, table: torch.Tensor) -> None:
            super().__init__(table.shape[0], table.shape[1])
            self.table = table

        def fit(self, data, trainer=None, ckpt_path=None):
            return self

        def score(self, users: torch.Tensor) -> torch.Tensor:
            return self.table[users]

        def state_tensors(self):
            return {"table": self.table}

        def load_state_tensors(self, state) -> None:
            self.table = state["table"]

    table = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    return float(evaluate_recommender(ScoreTable(table), data, "valid", ks=(10,))["ndcg@10"])


class Curve:
    """Per-epoch training seconds and valid NDCG@10; the clock pauses while the epoch is evaluated."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.ndcg: list[float] = []
        self.setup_s = 0.0

    def result(self, samples_per_epoch: int) -> dict:
        best = int(np.argmax(self.ndcg))
        total = sum(self.train_s)
        return {
            "epochs": len(self.ndcg), "samples_per_epoch": int(samples_per_epoch),
            "samples_per_s": round(samples_per_epoch * len(self.train_s) / total, 1),
            "setup_s": round(self.setup_s, 2), "train_s": round(total, 2),
            "best_epoch": best + 1, "best_valid_ndcg@10": round(self.ndcg[best], 4),
            "time_to_best_s": round(self.setup_s + sum(self.train_s[: best + 1]), 2),
            "valid_ndcg@10_per_epoch": [round(v, 4) for v in self.ndcg],
            "train_s_per_epoch": [round(v, 3) for v in self.train_s],
        }


# -- deeprec ----------------------------------------------------------------------------------
DEEPREC_OVERRIDES = {
    "neumf": ["model=ncf", "model.variant=neumf", "model.loss=bce", f"model.num_negatives={NEUMF['negatives']}",
              f"model.gmf_dim={NEUMF['gmf_dim']}", f"model.mlp_dim={NEUMF['mlp_dim']}",
              f"model.mlp_layers={NEUMF['mlp_layers']}", f"model.batch_size={NEUMF['batch_size']}", f"model.lr={NEUMF['lr']}"],
    "vae": ["model=autoencoder", "model.variant=vae", f"model.hidden_dims=[{VAE['hidden']}]", f"model.latent_dim={VAE['latent']}",
            f"model.dropout={VAE['dropout']}", f"model.batch_size={VAE['batch_size']}", f"model.lr={VAE['lr']}",
            f"model.anneal_cap={VAE['anneal_cap']}", f"model.total_anneal_steps={VAE['anneal_steps']}"],
    "sasrec": ["model=sasrec", "model.use_features=false", f"model.embedding_dim={SASREC['dim']}",
               f"model.num_blocks={SASREC['blocks']}", f"model.num_heads={SASREC['heads']}", f"model.dropout={SASREC['dropout']}",
               f"model.max_len={SASREC['max_len']}", f"model.lr={SASREC['lr']}", f"model.batch_size={SASREC['batch_size']}"],
}


def deeprec_run(model: str, data, epochs: int, run_dir: str) -> dict:
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_module

    from deeprec.cli.train import run_training

    curve, clock = Curve(), {}

    class EpochClock(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            clock["epoch"] = time.perf_counter()
            if not curve.train_s:
                curve.setup_s = clock["epoch"] - clock["start"]

        def on_train_batch_end(self, trainer, module, *args):
            clock["batch"] = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            curve.train_s.append(clock["batch"] - clock["epoch"])
            clock["samples"] = samples_of(module)
            if sum(curve.train_s) >= BUDGET_S:
                trainer.should_stop = True

    def samples_of(module) -> int:
        rows = module.training_rows
        if model == "sasrec":  # predicted targets: positions with a positive weight
            return int((rows[2] > 0).sum())
        return len(rows[0])

    overrides = ["data=movielens", "seed=0", f"trainer.max_epochs={epochs}", f"run_dir={run_dir}", *DEEPREC_OVERRIDES[model]]
    with initialize_config_module("deeprec.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    clock["start"] = time.perf_counter()
    result = run_training(cfg, data=data, callbacks=[EpochClock()], test=False)
    wall = time.perf_counter() - clock["start"]
    metrics = Path(run_dir) / "tensorboard"
    curve.ndcg = read_valid_curve(metrics)
    out = curve.result(clock["samples"])
    out["wall_s"] = round(wall, 2)
    out["final_valid_ndcg@10"] = round(result.valid_metrics["ndcg@10"], 4)
    return out


def read_valid_curve(events_dir: Path) -> list[float]:
    """valid/ndcg@10 per epoch from the run's TensorBoard events (what deeprec's callback logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events_dir))
    acc.Reload()
    return [e.value for e in sorted(acc.Scalars("valid/ndcg@10"), key=lambda e: e.step)]


# -- RecBole -----------------------------------------------------------------------------------
def recbole_files(data, folder: Path, model: str) -> None:
    """Atomic files bench.{train,valid,test}.inter with deeprec's user / item indices as tokens;
    SASRec's rows carry their history (item_id_list, the up to max_len earlier train events)."""
    import pandas as pd

    frame = data.frame
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    time_col = frame["timestamp"].to_numpy(np.float64) if "timestamp" in frame else np.arange(len(frame), dtype=np.float64)
    order = np.lexsort((time_col, users))
    for split in ("train", "valid", "test"):
        keep = order[frame["split"].to_numpy()[order] == split]
        rows = pd.DataFrame({"user_id:token": users[keep], "item_id:token": items[keep], "timestamp:float": time_col[keep]})
        if model == "sasrec":
            rows = sequence_rows(rows, data, split)
        rows.to_csv(folder / f"bench.{split}.inter", sep="\t", index=False)


def sequence_rows(rows, data, split: str):
    """One row per target: train targets get their earlier train events, valid/test ones the whole
    train history (at most max_len, oldest first)."""
    import pandas as pd

    train = data.frame[data.frame["split"] == "train"].sort_values(["user", "timestamp"])
    history = {u: g.to_numpy() for u, g in train.groupby("user")["item"]}
    out = []
    for u, g in rows.groupby("user_id:token", sort=False):  # a loop over users in the peers' file format only
        seen = history.get(u, np.zeros(0, np.int64))
        targets = g["item_id:token"].to_numpy()
        for j, item in enumerate(targets):
            prefix = seen[:j] if split == "train" else seen
            prefix = prefix[-SASREC["max_len"]:]
            if len(prefix):
                out.append((u, " ".join(map(str, prefix)), item, float(g["timestamp:float"].iloc[j])))
    return pd.DataFrame(out, columns=["user_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float"])


def recbole_run(model: str, data, epochs: int, workdir: Path) -> dict:
    patch_numpy2()
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.model.general_recommender import MultiVAE, NeuMF
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    curve = Curve()
    start = time.perf_counter()
    os.chdir(workdir)  # RecBole's Trainer writes log_tensorboard/ (and its logs) into the working directory
    folder = workdir / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    recbole_files(data, folder, model)
    common = {"data_path": str(workdir), "benchmark_filename": ["train", "valid", "test"], "seed": 0,
              "reproducibility": True, "device": "cpu", "use_gpu": False, "show_progress": False, "epochs": epochs,
              "eval_step": 10**9, "checkpoint_dir": str(workdir / "saved"), "state": "ERROR", "worker": 0,
              "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "eval_args": {"order": "TO", "mode": "full"},
              "metrics": ["NDCG"], "topk": [10], "valid_metric": "NDCG@10", "log_wandb": False}
    if model == "neumf":
        cls = NeuMF
        params = {"mf_embedding_size": NEUMF["gmf_dim"], "mlp_embedding_size": NEUMF["mlp_dim"],
                  "mlp_hidden_size": NEUMF["mlp_layers"], "dropout_prob": 0.0, "use_pretrain": False,
                  "train_batch_size": NEUMF["batch_size"], "learning_rate": NEUMF["lr"],
                  "train_neg_sample_args": {"distribution": "uniform", "sample_num": NEUMF["negatives"]}}
    elif model == "vae":
        cls = MultiVAE
        params = {"mlp_hidden_size": [VAE["hidden"]], "latent_dimension": VAE["latent"], "dropout_prob": VAE["dropout"],
                  "anneal_cap": VAE["anneal_cap"], "total_anneal_steps": VAE["anneal_steps"],
                  "train_batch_size": VAE["batch_size"], "learning_rate": VAE["lr"], "train_neg_sample_args": None}
    else:
        cls = SASRec
        params = {"n_layers": SASREC["blocks"], "n_heads": SASREC["heads"], "hidden_size": SASREC["dim"],
                  "inner_size": SASREC["dim"], "hidden_dropout_prob": SASREC["dropout"], "attn_dropout_prob": SASREC["dropout"],
                  "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE",
                  "MAX_ITEM_LIST_LENGTH": SASREC["max_len"], "train_batch_size": SASREC["recbole_batch_size"],
                  "learning_rate": SASREC["lr"], "train_neg_sample_args": None,
                  "load_col": {"inter": ["user_id", "item_id_list", "item_id", "timestamp"]}}
    config = Config(model=cls.__name__, dataset="bench", config_dict={**common, **params})
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    net = cls(config, train_data.dataset).to("cpu")
    trainer = Trainer(config, net)
    rb_users = np.asarray(dataset.token2id("user_id", [str(u) for u in range(data.n_users)]))
    item_tokens = set(dataset.field2id_token["item_id"][1:])
    known = np.array([str(i) in item_tokens for i in range(data.n_items)])
    rb_items = np.zeros(data.n_items, np.int64)
    rb_items[known] = dataset.token2id("item_id", [str(i) for i in np.flatnonzero(known)])
    curve.setup_s = time.perf_counter() - start
    histories = user_histories(data) if model == "sasrec" else None
    for epoch in range(epochs):
        net.train()
        t0 = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        curve.train_s.append(time.perf_counter() - t0)
        net.eval()
        with torch.no_grad():
            table = np.full((data.n_users, data.n_items), -np.inf, np.float32)
            for block in np.array_split(np.arange(data.n_users), max(1, data.n_users // 128)):
                uid = torch.as_tensor(rb_users[block])
                if model == "neumf":  # NeuMF has no full_sort_predict: predict every (user, item) pair
                    items = torch.arange(dataset.item_num)
                    inter = Interaction({"user_id": uid.repeat_interleave(len(items)), "item_id": items.repeat(len(uid))})
                    full = net.predict(inter).view(len(uid), -1)
                elif model == "vae":
                    full = net.full_sort_predict(Interaction({"user_id": uid})).view(len(uid), -1)
                else:
                    seq, length = histories
                    mapped = np.where(seq[block] >= 0, rb_items[np.clip(seq[block], 0, None)], 0)
                    inter = Interaction({"user_id": uid, "item_id_list": torch.as_tensor(mapped),
                                         "item_length": torch.as_tensor(np.maximum(length[block], 1))})
                    full = net.full_sort_predict(inter).view(len(uid), -1)
                table[block[:, None], np.flatnonzero(known)[None, :]] = full[:, rb_items[known]].numpy()
        curve.ndcg.append(valid_ndcg(data, table))
        if sum(curve.train_s) >= BUDGET_S:
            break
    # rows of its train loader: positives (neumf), users (vae: RecBole's UserDataLoader), targets (sasrec)
    return curve.result(train_data.sample_size)


def user_histories(data):
    """[n_users, max_len] each user's last train items, oldest first, left-aligned, -1 pads; lengths."""
    train = data.frame[data.frame["split"] == "train"].sort_values(["user", "timestamp"])
    users, items = train["user"].to_numpy(), train["item"].to_numpy()
    starts = np.searchsorted(users, np.arange(data.n_users + 1))
    length = np.minimum(np.diff(starts), SASREC["max_len"])
    cols = np.arange(SASREC["max_len"])[None, :]
    first = starts[1:] - length
    idx = np.clip(first[:, None] + cols, 0, max(len(items) - 1, 0))
    return np.where(cols < length[:, None], items[idx], -1), length


# -- cornac ------------------------------------------------------------------------------------
class EpochHook:
    """Stands in for tqdm's trange inside cornac's training loops: after each epoch it stops the
    clock, evaluates, and restarts it."""

    def __init__(self, n: int, curve: Curve, evaluate) -> None:
        self.n, self.curve, self.evaluate = n, curve, evaluate

    def __iter__(self):
        for epoch in range(self.n):
            t0 = time.perf_counter()
            yield epoch
            self.curve.train_s.append(time.perf_counter() - t0)
            self.curve.ndcg.append(self.evaluate())
            if sum(self.curve.train_s) >= BUDGET_S:
                return

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def cornac_run(model: str, data, epochs: int) -> dict:
    import cornac
    import cornac.models.ncf.recom_ncf_base as ncf_base
    import cornac.models.vaecf.vaecf as vaecf_module
    from cornac.data import Dataset

    curve = Curve()
    start = time.perf_counter()
    train = data.frame[data.frame["split"] == "train"]
    train_set = Dataset.from_uir(list(zip(train["user"].astype(str), train["item"].astype(str), np.ones(len(train)))), seed=0)
    cols = np.array([train_set.iid_map.get(str(i), -1) for i in range(data.n_items)])
    rows = [train_set.uid_map.get(str(u), -1) for u in range(data.n_users)]
    if model == "neumf":
        net = cornac.models.NeuMF(num_factors=NEUMF["gmf_dim"], layers=[2 * NEUMF["mlp_dim"], *NEUMF["mlp_layers"]],
                                  num_epochs=epochs, batch_size=NEUMF["batch_size"], num_neg=NEUMF["negatives"], lr=NEUMF["lr"],
                                  backend="pytorch", verbose=False, seed=0)
        module, samples = ncf_base, train_set.num_ratings
    else:
        net = cornac.models.VAECF(k=VAE["latent"], autoencoder_structure=[VAE["hidden"]], act_fn="tanh", likelihood="mult",
                                  n_epochs=epochs, batch_size=VAE["batch_size"], learning_rate=VAE["lr"], beta=VAE["anneal_cap"],
                                  verbose=False, seed=0)
        module, samples = vaecf_module, train_set.num_users

    def evaluate() -> float:
        table = np.full((data.n_users, data.n_items), -np.inf, np.float32)
        for u, row in enumerate(rows):
            if row >= 0:
                scores = net.score(row)
                table[u, cols >= 0] = scores[cols[cols >= 0]]
        return valid_ndcg(data, table)

    module.trange = lambda *args, **kwargs: EpochHook(epochs, curve, evaluate)
    curve.setup_s = time.perf_counter() - start  # the model is built inside fit, at the first epoch's clock
    net.fit(train_set)
    return curve.result(samples)


# -- deeprec-train start-up --------------------------------------------------------------------
def startup(run_dir: Path) -> dict:
    """Fixed start-up of the CLI: wall of `deeprec-train` for a 1-epoch Mult-DAE (the defaults) on
    movielens minus the same job run in-process (imports done, data loaded inside the timing)."""
    exe = Path(sys.executable).with_name("deeprec-train")
    args = ["data=movielens", "model=autoencoder", "trainer.max_epochs=1", "seed=0"]
    t0 = time.perf_counter()
    subprocess.run([str(exe), *args, f"run_dir={run_dir / 'cli'}"], check=True, capture_output=True)
    cli = time.perf_counter() - t0
    inproc_args = args + [f"run_dir={run_dir / 'inproc'}"]
    code = ("import time, sys\nimport pytorch_lightning, torch\nfrom hydra import compose, initialize_config_module\n"
            "from deeprec.cli.train import run_training\n"
            "with initialize_config_module('deeprec.conf', version_base='1.3'):\n"
            f"    cfg = compose('train', overrides={inproc_args!r})\n"
            "t0 = time.perf_counter(); run_training(cfg); print(time.perf_counter() - t0)\n")
    inproc = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, pytorch_lightning"], check=True)
    imports = time.perf_counter() - t0
    return {"cli_wall_s": round(cli, 2), "in_process_job_s": round(inproc, 2), "fixed_startup_s": round(cli - inproc, 2),
            "python_torch_lightning_import_s": round(imports, 2)}


# -- driver ------------------------------------------------------------------------------------
def one(run: str, epochs: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    framework, model = run.split(":")
    data = movielens()
    with tempfile.TemporaryDirectory() as tmp:
        if framework == "deeprec":
            out = deeprec_run(model, data, epochs, str(Path(tmp) / "run"))
        elif framework == "recbole":
            out = recbole_run(model, data, epochs, Path(tmp))
        else:
            out = cornac_run(model, data, epochs)
    return {"run": run, **out}


def time_to(result: dict, target: float) -> float | None:
    """Setup plus training seconds until the first epoch whose valid NDCG@10 reaches `target`."""
    elapsed = result["setup_s"]
    for seconds, ndcg in zip(result["train_s_per_epoch"], result["valid_ndcg@10_per_epoch"]):
        elapsed += seconds
        if ndcg >= target:
            return elapsed
    return None


def table(results: list[dict]) -> list[str]:
    """Per model and framework: samples/s and its ratio to RecBole's, the best valid NDCG@10 within
    the budget, and the time to reach the common target (the lowest best NDCG@10 of the frameworks)."""
    lines = ["| model | framework | load | samples/s | vs RecBole | epochs | best valid NDCG@10 (epoch) | setup s | "
             "time to own best s | common target | time to target s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ok = [r for r in results if "error" not in r]
    by_run = {r["run"]: r for r in ok}
    for r in results:
        framework, model = r["run"].split(":")
        if "error" in r:
            lines.append(f"| {model} | {framework} | {r.get('load_average_1min', '')} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        peer = by_run.get(f"recbole:{model}")
        ratio = f"{r['samples_per_s'] / peer['samples_per_s']:.2f}x" if peer else "-"
        target = min(o["best_valid_ndcg@10"] for o in ok if o["run"].endswith(f":{model}"))
        reached = time_to(r, target)
        lines.append(f"| {model} | {framework} | {r.get('load_average_1min', '')} | {r['samples_per_s']:,.0f} | {ratio} | "
                     f"{r['epochs']} | {r['best_valid_ndcg@10']:.4f} ({r['best_epoch']}) | {r['setup_s']:.1f} | "
                     f"{r['time_to_best_s']:.1f} | {target:.4f} | {reached:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--epochs", default=",".join(f"{k}={v}" for k, v in EPOCHS.items()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="training seconds per run (after the epoch that passes it)")
    parser.add_argument("--startup", action="store_true", help="also measure deeprec-train's fixed start-up")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench_results/training_peers")
    parser.add_argument("--render", action="store_true", help="rewrite the .md table from the saved .json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.render:
        from deeprec.atomic import write_text_atomic

        lines = table(json.loads(out.with_suffix(".json").read_text())["results"])
        write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    epochs = {**EPOCHS, **{k: int(v) for k, v in (p.split("=") for p in args.epochs.split(",") if p)}}
    globals()["BUDGET_S"] = args.budget  # read by the per-epoch stops of every framework
    if args.one:
        print("RESULT " + json.dumps(one(args.one, epochs[args.one.split(":")[1]], args.threads)))
        return
    from deeprec.atomic import write_text_atomic

    results = []
    for run in args.runs.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", run, "--epochs", args.epochs, "--threads", str(args.threads),
                               "--budget", str(args.budget)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        result = json.loads(found[-1]) if found else {"run": run, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        result["load_average_1min"] = round(os.getloadavg()[0], 2)
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if not k.endswith("per_epoch")}), flush=True)
    summary = {"results": results, "threads": args.threads, "budget_s": args.budget, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.startup:
        with tempfile.TemporaryDirectory() as tmp:
            summary["startup"] = startup(Path(tmp))
        print(json.dumps(summary["startup"]))
    lines = table(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out.with_suffix(".json"), json.dumps(summary, indent=2))
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
