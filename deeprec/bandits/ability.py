"""Student ability and the active / potential / inactive groups (SPEC 2.2).

K-means is written here in NumPy (vectorised distances, k-means++ seeding, best of n_init seeded
restarts) rather than scipy.cluster.vq.kmeans2, which has no restarts and only a global-RNG seed in
older SciPy versions: the groups must be reproducible from the config's seed alone.
"""

from __future__ import annotations

import numpy as np

GROUPS = ("active", "potential", "inactive")


def student_ability(
    student: np.ndarray, frac_comp: np.ndarray, correct: np.ndarray, n_students: int, n_videos: int,
    w_p: float = 1 / 3, w_c: float = 1 / 3, w_q: float = 1 / 3,
) -> tuple[np.ndarray, np.ndarray]:
    """(ability [S], N [S]) with ability_s = w_p N_s / n_videos + w_c mean fracComp + w_q mean s.

    Rows are (student index, fracComp, s) per watched video; a student with no row gets 0.
    """
    n = np.bincount(student, minlength=n_students).astype(np.float64)
    denom = np.maximum(n, 1.0)
    mean_comp = np.bincount(student, weights=np.asarray(frac_comp, np.float64), minlength=n_students) / denom
    mean_correct = np.bincount(student, weights=np.asarray(correct, np.float64), minlength=n_students) / denom
    ability = w_p * n / max(n_videos, 1) + w_c * mean_comp + w_q * mean_correct
    return ability, n


def kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k initial centres [k, F] by k-means++ (each next centre drawn ∝ squared distance to the nearest)."""
    centres = [points[rng.integers(len(points))]]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(1))
    return np.stack(centres)


def kmeans(
    points: np.ndarray, k: int = 3, seed: int = 0, n_init: int = 10, max_iter: int = 300, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, float]:
    """(labels [N], centres [k, F], inertia) of Lloyd's K-means, best of n_init k-means++ starts."""
    points = np.asarray(points, np.float64)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        centres = kmeans_plus_plus(points, k, rng)
        for _ in range(max_iter):
            dist = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(2)
            labels = dist.argmin(1)
            sums = np.zeros_like(centres)
            np.add.at(sums, labels, points)
            sizes = np.bincount(labels, minlength=k)[:, None]
            moved = np.where(sizes > 0, sums / np.maximum(sizes, 1), centres)
            shift = ((moved - centres) ** 2).sum()
            centres = moved
            if shift <= tol:
                break
        dist = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(2)
        labels = dist.argmin(1)
        inertia = float(dist[np.arange(len(points)), labels].sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centres, inertia)
    return best


def name_clusters(labels: np.ndarray, ability: np.ndarray, n_watched: np.ndarray, k: int = 3) -> np.ndarray:
    """Group names [N]: the cluster with the highest mean N is active; of the other two the higher
    mean ability is potential, the lower inactive (SPEC 2.2)."""
    sizes = np.maximum(np.bincount(labels, minlength=k), 1)
    mean_n = np.bincount(labels, weights=n_watched, minlength=k) / sizes
    mean_ability = np.bincount(labels, weights=ability, minlength=k) / sizes
    active = int(np.argmax(mean_n))
    others = [c for c in range(k) if c != active]
    potential, inactive = sorted(others, key=lambda c: -mean_ability[c])
    names = np.empty(k, dtype=object)
    names[[active, potential, inactive]] = GROUPS
    return names[labels].astype(str)


def ability_groups(ability: np.ndarray, n_watched: np.ndarray, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Group name per student: K-means (k = 3) on standardised (ability, N_s), named by name_clusters."""
    features = np.stack([ability, n_watched], axis=1).astype(np.float64)
    scale = features.std(0)
    standardised = (features - features.mean(0)) / np.where(scale > 0, scale, 1.0)
    labels, _, _ = kmeans(standardised, k=3, seed=seed, n_init=n_init)
    return name_clusters(labels, ability, n_watched)


def group_summary(groups: np.ndarray, ability: np.ndarray, n_watched: np.ndarray) -> list[dict]:
    """Per group: students, mean N, mean ability (the table the paper reports)."""
    rows = []
    for name in GROUPS:
        mask = groups == name
        rows.append(
            {
                "group": name,
                "students": int(mask.sum()),
                "mean_N": float(n_watched[mask].mean()) if mask.any() else float("nan"),
                "mean_ability": float(ability[mask].mean()) if mask.any() else float("nan"),
            }
        )
    return rows
