"""95 % intervals (issue 27): a stratified bootstrap over the judged split's videos, and over seeds.

A replicate draws, class by class, as many videos as the class has, with replacement; a metric is
measured again on the sounds of the drawn videos (a video drawn twice counts twice) and averaged
over classes as the point value is. The draws depend only on the videos and classes of the split
and a fixed seed, never on the model: every row of a comparison is measured on the same draws, so
their replicates are paired. Over seeds, replicate b of the mean of s seeds' runs averages the
replicate-b values of s runs drawn with replacement: the interval holds both sources of variation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

REPLICATES = 200
SEED = 0  # the draws are the same for every model and every evaluation of one split
LEVEL = 0.95


def video_draws(video: np.ndarray, cls: np.ndarray, replicates: int = REPLICATES, seed: int = SEED) -> list[np.ndarray]:
    """For sounds of videos ``video`` [S] and classes ``cls`` [S]: per replicate, the index of every
    sound taken (with repeats), its videos drawn with replacement within each class."""
    rng = np.random.default_rng(seed)
    by_class = {c: sorted(set(video[cls == c].tolist())) for c in sorted(set(cls.tolist()))}
    sounds_of = {v: np.flatnonzero(video == v) for v in set(video.tolist())}
    out = []
    for _ in range(replicates):
        taken = [sounds_of[v] for c, vids in by_class.items() for v in (vids[i] for i in rng.integers(0, len(vids), len(vids)))]
        out.append(np.concatenate(taken) if taken else np.zeros(0, int))
    return out


def class_mean(values: np.ndarray, cls: np.ndarray) -> float | None:
    """The mean over classes of the per-class mean of ``values`` (NaN values left out)."""
    means = []
    for c in np.unique(cls):
        v = values[cls == c]
        v = v[~np.isnan(v)]
        if len(v):
            means.append(float(v.mean()))
    return float(np.mean(means)) if means else None


def replicate(values: np.ndarray, cls: np.ndarray, draws: list[np.ndarray]) -> list[float | None]:
    """`class_mean` of per-sound ``values`` on every replicate's sounds."""
    return [class_mean(values[d], cls[d]) for d in draws]


def replicate_with(measure: Callable[[np.ndarray], float | None], draws: list[np.ndarray]) -> list[float | None]:
    """``measure(sounds)`` on every replicate's sounds (a metric that is not a mean over sounds)."""
    return [measure(d) for d in draws]


def interval(values: Sequence[float | None]) -> list[float] | None:
    """The central 95 % of the replicates (None where too few could be measured)."""
    v = np.array([x for x in values if x is not None], float)
    if len(v) < max(10, len(values) // 2):
        return None
    lo, hi = np.quantile(v, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def over_seeds(points: Sequence[float], replicates: Sequence[Sequence[float | None]],
               seed: int = SEED) -> tuple[float, list[float] | None]:
    """The mean of several seeds' values and its 95 % interval: replicate b averages the b-th
    replicate of seeds drawn with replacement (one seed: its own interval)."""
    points = [p for p in points if p is not None]
    if not points:
        return None, None
    reps = [list(r) for r in replicates if r]
    if not reps or len({len(r) for r in reps}) != 1:
        return float(np.mean(points)), None
    rng = np.random.default_rng(seed)
    s, b = len(reps), len(reps[0])
    combined = []
    for i in range(b):
        picked = [reps[j][i] for j in rng.integers(0, s, s)] if s > 1 else [reps[0][i]]
        combined.append(None if any(p is None for p in picked) else float(np.mean(picked)))
    return float(np.mean(points)), interval(combined)


def separable(a: list[float] | None, b: list[float] | None) -> bool:
    """Whether two intervals do not overlap (an order may be stated between their rows)."""
    return a is not None and b is not None and (a[0] > b[1] or b[0] > a[1])
