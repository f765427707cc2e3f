"""The ability-aware LinUCB paper's evaluation (SPEC 2.5) on the Coursera video-behaviour table:
protocols `paper` and `holdout`, metrics per ability group, the baselines, off-policy estimates.

    python -m deeprec.cli.linucb_paper [data.path=...] [seed=0] [out_dir=runs/linucb-paper]

T(s) = videos s watched AND answered correctly (s == 1). `paper` ranks every video, watched ones
included, and takes T over all of s's rows (in-sample, as the paper did); `holdout` hides a share of
each student's videos, ranks the videos not visible in training, and takes T = hidden ∩ correct.
Precision, recall, F1 and hit ratio are the shared definitions (deeprec.evaluation.evaluate_topk,
over students with a non-empty T); adaptivity and personalization are over every student of a group.
Every model is a Recommender ranked by the shared primitive; the tables are evaluation.report's.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from deeprec.bandits.ability import GROUPS, ability_groups, group_summary, student_ability
from deeprec.bandits.features import video_features
from deeprec.bandits.linucb import BatchedLinUCB
from deeprec.bandits.offpolicy import FixedPolicy, LinUCBPolicy, doubly_robust, empirical_propensities, ips, replay, save_curves
from deeprec.bandits.recommender import LinUCBRecommender
from deeprec.bandits.simulate import make_world, uniform_logs
from deeprec.baselines.knn import ItemKNN, UserKNN
from deeprec.baselines.pop import Popularity
from deeprec.config import check_choice
from deeprec.data.interactions import InteractionData, from_frame
from deeprec.evaluation.evaluator import evaluate_recommender
from deeprec.evaluation.metrics import evaluate_topk, personalization
from deeprec.evaluation.report import markdown_table
from deeprec.ranking import full_ranking_topk

PROTOCOLS = ("paper", "holdout")
#: what reproduce() and deeprec.cli.linucb_paper write into out_dir: these files, and the replay
#: curves' TensorBoard events under TENSORBOARD/simulated/
RESULT_FILES = ("linucb_paper.md", "linucb_paper.json", "linucb_replay_simulated.png")
TENSORBOARD = "linucb_tensorboard"
PAPER_KS = (5, 8, 10)
#: the shared metrics the paper reports per group, and the paper's name where it differs
PAPER_METRICS = ("precision", "recall", "f1", "hit")
PAPER_NAMES = {"hit": "hit_ratio"}
#: the paper's groups: students / mean N / mean ability
PAPER_GROUPS = {"active": (194, 52.9, 0.65), "potential": (1265, 5.7, 0.60), "inactive": (760, 3.4, 0.26)}
#: the shared metrics (SPEC 3) reported on the holdout split
SHARED_KEYS = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit@10", "coverage@10", "personalization@10")


def holdout_mask(student: np.ndarray, share: float = 0.2, seed: int = 0) -> np.ndarray:
    """hidden: [N] bool, a random `share` of each student's rows (floor, at least 1 when m_s >= 2, none when m_s = 1)."""
    rng = np.random.default_rng(seed)
    key = rng.random(len(student))
    order = np.lexsort((key, student))
    counts = np.bincount(student)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(student), np.int64)
    rank[order] = np.arange(len(student)) - starts[student[order]]
    n_hide = np.where(counts >= 2, np.maximum(np.floor(share * counts), 1), 0).astype(np.int64)
    return rank < n_hide[student]


def coursera_interactions(behaviour: pd.DataFrame, protocol: str = "paper", holdout_share: float = 0.2,
                          seed: int = 0) -> InteractionData:
    """InteractionData (item = video, rating = fracComp) with extras["video_behaviour"] = the cleaned table.

    paper: every row is train; holdout: the hidden rows are test.
    """
    check_choice(protocol, PROTOCOLS, "protocol")
    student = pd.Index(np.unique(behaviour["userID"].astype(str))).get_indexer(behaviour["userID"].astype(str))
    hidden = holdout_mask(student, holdout_share, seed) if protocol == "holdout" else np.zeros(len(student), bool)
    frame = pd.DataFrame({
        "user_id": behaviour["userID"].astype(str).to_numpy(),
        "item_id": behaviour["VidID"].astype(str).to_numpy(),
        "rating": behaviour["fracComp"].to_numpy(np.float32),
        "split": np.where(hidden, "test", "train"),
    })
    data = from_frame(frame, "coursera video behaviour", name="coursera")
    data.extras["video_behaviour"] = behaviour
    data.extras["correct"] = behaviour["s"].to_numpy()
    return data


def correct_truth(data: InteractionData, protocol: str) -> sp.csr_matrix:
    """T: [U, n_items] binary CSR of watched-and-correct videos (all rows for paper, test rows for holdout)."""
    frame = data.frame
    rows = (data.extras["correct"] == 1) & (frame["split"].to_numpy() == ("test" if protocol == "holdout" else "train"))
    t = sp.csr_matrix((np.ones(int(rows.sum()), np.float32), (frame["user"].to_numpy()[rows], frame["item"].to_numpy()[rows])),
                      shape=(data.n_users, data.n_items))
    t.sum_duplicates()
    t.data[:] = 1.0
    return t


def rank_videos(model, data: InteractionData, protocol: str, k: int, batch_size: int = 4096) -> torch.Tensor:
    """topk: [U, k] for every student; holdout excludes the videos visible in training, paper excludes none."""
    exclude = data.matrix("train", binary=True) if protocol == "holdout" else None
    _, items = full_ranking_topk(model.score, np.arange(data.n_users), k, exclude=exclude, batch_size=batch_size,
                                 device=model.device)
    return items


def adaptivity(topk: torch.Tensor, k: int, dif: np.ndarray, watched: sp.csr_matrix) -> float:
    """mean over students of (mean dif over R(s)@k − mean dif over the videos s watched); students with neither skipped."""
    lists = topk[:, :k].numpy()
    valid = lists >= 0
    dif = np.asarray(dif, np.float64)
    rec = np.where(valid, dif[np.clip(lists, 0, None)], 0.0).sum(1) / np.maximum(valid.sum(1), 1)
    m = np.asarray(watched.sum(1)).ravel()
    seen = np.asarray(watched @ dif).ravel() / np.maximum(m, 1)
    keep = (m > 0) & valid.any(1)
    return float((rec - seen)[keep].mean()) if keep.any() else float("nan")


def paper_metrics(topk: torch.Tensor, truth: sp.csr_matrix, dif: np.ndarray, watched: sp.csr_matrix,
                  ks=PAPER_KS) -> dict[str, float]:
    """precision, recall, f1, hit_ratio (the shared `hit`), adaptivity, personalization @ each N for one set of students."""
    shared = evaluate_topk(topk, truth, ks=ks, n_items=truth.shape[1])
    out = {"students": float(topk.shape[0]), "students_with_truth": shared["n_users_evaluated"]}
    for k in ks:
        for name in PAPER_METRICS:
            out[f"{PAPER_NAMES.get(name, name)}@{k}"] = shared.get(f"{name}@{k}", float("nan"))
        out[f"adaptivity@{k}"] = adaptivity(topk, k, dif, watched)
        out[f"personalization@{k}"] = personalization(topk, k)
    return out


def metrics_by_group(topk: torch.Tensor, truth: sp.csr_matrix, dif: np.ndarray, watched: sp.csr_matrix,
                     groups: np.ndarray, ks=PAPER_KS) -> dict[str, dict[str, float]]:
    """{group: paper_metrics} for active, potential, inactive and all students."""
    out = {}
    for name in (*GROUPS, "all"):  # three groups and the total, not a loop over students
        rows = np.ones(len(groups), bool) if name == "all" else groups == name
        out[name] = paper_metrics(topk[torch.from_numpy(rows)], truth[rows], dif, watched[rows], ks)
    return out


def models(n_users: int, n_items: int) -> dict:
    """The three LinUCB explorations and the paper's baselines, all behind the Recommender interface."""
    return {
        "LinUCB α_s": LinUCBRecommender(n_users, n_items, alpha_mode="personalised"),
        "LinUCB α=1": LinUCBRecommender(n_users, n_items, alpha=1.0),
        "LinUCB α=0.5": LinUCBRecommender(n_users, n_items, alpha=0.5),
        "Popular": Popularity(n_users, n_items),
        "user-CF": UserKNN(n_users, n_items),
        "item-CF": ItemKNN(n_users, n_items),
    }


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: floats with 4 decimals, anything else as its text."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    return markdown_table(pd.DataFrame(cells, columns=range(len(header))).set_axis(header, axis=1))


def offpolicy_simulated(out: Path, seed: int, n_events: int = 1_000_000) -> tuple[str, dict]:
    """Replay on n_events uniform logs of a known linear world sized like the paper (93 arms, d = 5)."""
    world = make_world(n_users=200, n_arms=93, dim=5, noise=0.1, seed=seed)
    logs = uniform_logs(world, n_events, seed=seed + 1)
    rows, curves, result = [], {}, {}
    fixed = {"best fixed (oracle)": world.best_arms(),
             "random fixed": torch.randint(world.n_arms, (world.n_users,), generator=torch.Generator().manual_seed(seed))}
    for name, arms in fixed.items():
        r = replay(FixedPolicy(arms), logs, batch_size=len(logs["user"]))
        rows.append([name, len(r.rewards), r.value, world.policy_value(arms)])
        curves[name] = r.cumulative_reward
        result[name] = {"replay": r.value, "true": world.policy_value(arms), "matched": len(r.rewards)}
    for alpha in (1.0, 0.5, 0.0):
        policy = LinUCBPolicy(BatchedLinUCB(world.n_users, 5, alpha=alpha, dtype=torch.float64), world.arm_features)
        r = replay(policy, logs, batch_size=200)  # delayed updates per block of 200 logged events
        name = f"LinUCB α={alpha:g} (online)"
        rows.append([name, len(r.rewards), r.value, "— (learning policy)"])
        curves[name] = r.cumulative_reward
        result[name] = {"replay": r.value, "matched": len(r.rewards)}
    save_curves(curves, out / "linucb_replay_simulated.png", out / TENSORBOARD / "simulated",
                title="replay on simulated uniform logs (200 users, 93 arms, d=5)")
    md = table(["policy", "matched events", "replay value / step", "true value / step"], rows)
    return md, result


def offpolicy_coursera(fitted: dict, data, groups: np.ndarray) -> tuple[str, dict]:
    """IPS / SNIPS / DR of each model's top-1 on the Coursera holdout rows, ESTIMATED propensities."""
    test = data.frame[data.frame["split"] == "test"]
    users = torch.from_numpy(test["user"].to_numpy(np.int64, copy=True))
    arms = torch.from_numpy(test["item"].to_numpy(np.int64, copy=True))
    rewards = torch.from_numpy(test["rating"].to_numpy(np.float64))
    group_index = torch.from_numpy(np.searchsorted(np.array(GROUPS), groups[test["user"].to_numpy()],
                                                   sorter=np.argsort(GROUPS)))
    propensity = empirical_propensities(arms, data.n_items, group_index)
    reward_model = fitted["LinUCB α=1"].bandit  # DR's reward model: the ridge mean x_aᵀθ_u
    x = fitted["LinUCB α=1"].arm_features.to(reward_model.dtype)
    mean = reward_model.theta[users] @ x.t()
    rows, result = [], {}
    for name, model in fitted.items():
        top1 = rank_videos(model, data, "holdout", 1)[:, 0]
        target = top1[users]
        est = {
            "matched": int((target == arms).sum()),
            "IPS": ips(rewards, arms, target, propensity),
            "SNIPS": ips(rewards, arms, target, propensity, self_normalised=True),
            "DR": doubly_robust(rewards, arms, target, propensity, mean.gather(1, target.clamp(min=0)[:, None])[:, 0],
                                mean.gather(1, arms[:, None])[:, 0]),
        }
        result[name] = est
        rows.append([name, est["matched"], est["IPS"], est["SNIPS"], est["DR"]])
    md = table(["policy (top-1)", "matched rows", "IPS", "SNIPS", "DR"], rows)
    return md, result


def reproduce(behaviour: pd.DataFrame, rejects: pd.DataFrame, source: str, out: Path, seed: int = 0,
              holdout_share: float = 0.2, holdout_seed: int = 0, simulated_events: int = 1_000_000) -> tuple[str, dict]:
    """The whole reproduction on a cleaned behaviour table: (the Markdown report, the results as a dict).

    seed: the K-means groups and the simulated logs; holdout_seed: the hidden share of each student's
    videos. Replay curves go to out/linucb_replay_simulated.png and out/linucb_tensorboard/.
    """
    started = time.perf_counter()
    students = np.unique(behaviour["userID"].astype(str))
    student = np.searchsorted(students, behaviour["userID"].astype(str))
    n_videos = behaviour["VidID"].nunique()
    ability, n_watched = student_ability(student, behaviour["fracComp"].to_numpy(), behaviour["s"].to_numpy(),
                                         len(students), n_videos)
    groups = ability_groups(ability, n_watched, seed=seed)
    summary = group_summary(groups, ability, n_watched)
    sections = [f"Data: {source}: {len(behaviour)} rows kept, {len(rejects)} rejected "
                f"({rejects['reason'].value_counts().to_dict()}); {len(students)} students, {n_videos} videos.",
                "### Groups (K-means k=3 on standardised ability, N_s)",
                table(["group", "students", "mean N", "mean ability", "paper: students / mean N / mean ability"],
                      [[r["group"], r["students"], r["mean_N"], r["mean_ability"],
                        " / ".join(str(v) for v in PAPER_GROUPS[r["group"]])] for r in summary])]
    results = {"groups": summary}

    for protocol in PROTOCOLS:
        data = coursera_interactions(behaviour, protocol, holdout_share, holdout_seed)
        group_of = groups[np.searchsorted(students, data.user_ids.astype(str))]
        truth = correct_truth(data, protocol)
        watched = data.matrix("train", binary=True)
        train = data.frame[data.frame["split"] == "train"]
        dif = video_features(data.extras["video_behaviour"].iloc[train.index], train["user"].to_numpy(),
                             train["item"].to_numpy(), data.n_users, data.n_items)[:, 4]
        fitted, by_model = {}, {}
        for name, model in models(data.n_users, data.n_items).items():
            fitted[name] = model.fit(data)
            topk = rank_videos(model, data, protocol, max(PAPER_KS))
            by_model[name] = metrics_by_group(topk, truth, dif, watched, group_of)
        results[protocol] = by_model
        label = ("paper protocol: rank all videos, watched included; T = watched ∧ correct (in-sample)"
                 if protocol == "paper" else
                 f"holdout protocol: {holdout_share:.0%} of each student's videos hidden; T = hidden ∧ correct")
        sections.append(f"## {label}")
        header = ["group", "model"] + [f"{m}@{k}" for k in PAPER_KS for m in ("P", "R", "F1", "HR")]
        rows = [[g, name] + [by_model[name][g][f"{PAPER_NAMES.get(m, m)}@{k}"] for k in PAPER_KS for m in PAPER_METRICS]
                for g in (*GROUPS, "all") for name in by_model]
        sections += ["### precision (P), recall (R), F1, hit ratio (HR) per group", table(header, rows)]
        rows = [[g, name] + [by_model[name][g][f"adaptivity@{k}"] for k in PAPER_KS]
                for g in GROUPS for name in ("LinUCB α_s", "LinUCB α=1", "LinUCB α=0.5")]
        sections += ["### adaptivity@N (mean dif recommended − mean dif watched)",
                     table(["group", "model"] + [f"adaptivity@{k}" for k in PAPER_KS], rows)]
        rows = [[name] + [by_model[name]["all"][f"personalization@{k}"] for k in PAPER_KS]
                for name in ("LinUCB α=1", "LinUCB α=0.5", "LinUCB α_s")]
        gain = [100 * (by_model["LinUCB α_s"]["all"][f"personalization@{k}"]
                       / by_model["LinUCB α=0.5"]["all"][f"personalization@{k}"] - 1) for k in PAPER_KS]
        rows.append(["α_s vs α=0.5 (%)"] + gain)
        sections += ["### personalization@N, all students (paper: α_s +10.5 / +13.9 / +13.5 % over α=0.5)",
                     table(["exploration"] + [f"personalization@{k}" for k in PAPER_KS], rows)]
        if protocol == "holdout":
            shared = {name: evaluate_recommender(model, data, "test", ks=(5, 10, 20)) for name, model in fitted.items()}
            results["shared_metrics_holdout"] = shared
            sections += ["### shared metrics (SPEC 3) on the holdout split, truth = all hidden videos",
                         table(["model", *SHARED_KEYS], [[n] + [m[k] for k in SHARED_KEYS] for n, m in shared.items()])]
            md, est = offpolicy_coursera(fitted, data, group_of)
            results["offpolicy_coursera"] = est
            sections += ["### off-policy on Coursera holdout rows (ESTIMATED propensities: per-group empirical arm "
                         "frequencies; students chose their videos, so replay would be biased; reward = fracComp)", md]
    md, sim = offpolicy_simulated(out, seed, simulated_events)
    results["offpolicy_simulated"] = sim
    sections += [f"## Off-policy: replay on simulated uniform-random logs ({simulated_events:,} events, known linear rewards)", md,
                 f"Curves: {out / 'linucb_replay_simulated.png'}; TensorBoard: {out / TENSORBOARD}/"]
    sections.append(f"_total time {time.perf_counter() - started:.1f} s_")
    return "# LinUCB paper reproduction (SPEC 2)\n\n" + "\n\n".join(sections) + "\n", results


