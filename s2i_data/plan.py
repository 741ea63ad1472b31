"""Plan: probed videos → segments, video-disjoint splits, class balance, shard work units.

Everything here is a pure function of (items, probes, config), so a plan is reproducible on any
machine and in any file order: orderings come from SHA-1 of (seed, video id) and a 64-bit mix of
that with the segment index, never from Python's salted hash or from the order of the inputs.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from .config import BuildConfig
from .factors import COLUMN_PREFIX

SPLITS = ("train", "val", "test")

# videos.parquet, as SPEC 2.6 names it; the probe table behind it has more (window, streams).
VIDEO_COLUMNS = ["video_id", "source", "class", "split", "status", "reason", "duration_s", "fps",
                 "width", "height", "audio_rate", "audio_channels", "segments"]
SAMPLE_COLUMNS = ["key", "split", "shard", "class", "class_index", "video_id", "segment_index",
                  "start_s", "end_s", "source"]


def factor_columns(table: pd.DataFrame) -> list[str]:
    """The within-class factor columns (``factor_<name>``, issue 28) a probe or videos table holds:
    a sample carries its video's, after the contract's columns."""
    return [c for c in table.columns if isinstance(c, str) and c.startswith(COLUMN_PREFIX)]


def video_hash(video_ids: pd.Series, seed: int, salt: str = "") -> np.ndarray:
    """Stable 63-bit hashes of video ids (identical on every machine and Python run)."""
    out = np.empty(len(video_ids), dtype=np.int64)
    for i, vid in enumerate(video_ids):
        digest = hashlib.sha1(f"{seed}:{salt}:{vid}".encode("utf-8")).digest()
        out[i] = int.from_bytes(digest[:8], "big") >> 1
    return out


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser of a ^ b·φ: cheap, vectorised, platform-independent.
    with np.errstate(over="ignore"):
        z = a.astype(np.uint64) ^ (b.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


def split_counts(n: int, proportions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Videos per split for a class of n videos; with n >= 3 every non-empty split gets one."""
    val = int(round(n * proportions[1]))
    test = int(round(n * proportions[2]))
    if n >= 3:
        val = max(val, 1) if proportions[1] > 0 else 0
        test = max(test, 1) if proportions[2] > 0 else 0
    if proportions[0] > 0:
        while val + test > n - 1 and (val > 0 or test > 0):
            if test >= val:
                test -= 1
            else:
                val -= 1
    return n - val - test, val, test


def assign_splits(videos: pd.DataFrame, cfg: BuildConfig) -> pd.Series:
    """Video-disjoint, stratified split: per class, videos ordered by hash and cut by proportion."""
    split = pd.Series("", index=videos.index, dtype=object)
    usable = videos[videos["status"] == "ok"]
    if "official_split" in videos.columns:  # a corpus with its own test split (VGGSound)
        return _official_splits(videos, usable, split, cfg)
    for _, group in usable.groupby("class", sort=True):
        order = group.index[np.argsort(video_hash(group["video_id"], cfg.seed, "split"), kind="stable")]
        n_train, n_val, _ = split_counts(len(order), cfg.splits)
        split.loc[order[:n_train]] = "train"
        split.loc[order[n_train : n_train + n_val]] = "val"
        split.loc[order[n_train + n_val :]] = "test"
    return split


def _official_splits(videos: pd.DataFrame, usable: pd.DataFrame, split: pd.Series, cfg: BuildConfig) -> pd.Series:
    """The corpus's test rows stay test; its train rows are cut into train and val as above, in
    the proportions train : val of ``cfg.splits``, by groups (``split_group``: one source video,
    whose windows must not straddle splits). A group with any test row is test as a whole."""
    group = usable["split_group"] if "split_group" in usable.columns else usable["video_id"]
    test_groups = set(group[usable["official_split"] == "test"])
    is_test = group.isin(test_groups)
    split.loc[usable.index[is_test.to_numpy()]] = "test"
    train_share = cfg.splits[0] + cfg.splits[1]
    proportions = (cfg.splits[0] / train_share, cfg.splits[1] / train_share, 0.0) if train_share > 0 else (1.0, 0.0, 0.0)
    rest = usable[~is_test.to_numpy()]
    rest_group = group[~is_test.to_numpy()]
    assigned: dict[str, str] = {}  # a video listed under two classes keeps its first class's split
    for _, part in rest.groupby("class", sort=True):
        names = pd.Series([g for g in rest_group.loc[part.index].unique() if g not in assigned], dtype=object)
        order = names.iloc[np.argsort(video_hash(names, cfg.seed, "split"), kind="stable")].tolist()
        n_train, _, _ = split_counts(len(order), proportions)
        assigned.update({g: "train" if i < n_train else "val" for i, g in enumerate(order)})
        split.loc[part.index] = [assigned[g] for g in rest_group.loc[part.index]]
    return split


def count_segments(videos: pd.DataFrame, seconds: float) -> pd.Series:
    span = (videos["window_end_s"] - videos["window_start_s"]).clip(lower=0)
    # A hair of tolerance: a 3.000 s clip whose last packet ends at 2.99999 still has 3 segments.
    return np.floor(span / seconds + 1e-4).fillna(0).astype(int)


def plan(videos: pd.DataFrame, cfg: BuildConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Place segments in splits and shards.

    ``videos`` has one row per input with at least video_id, source, class, status, reason,
    window_start_s, window_end_s. Returns (videos with split/segments filled, samples, balance
    report). Samples hold every selected segment with its shard, and the factor columns of its
    video when ``videos`` has them (`factor_columns`); shards contain whole videos.
    """
    videos = videos.copy()
    videos["segments"] = 0
    candidates = count_segments(videos, cfg.segment_seconds)
    short = (videos["status"] == "ok") & (candidates < 1)
    videos.loc[short, "status"] = "skipped"
    videos.loc[short, "reason"] = [
        f"shorter than one {cfg.segment_seconds:g} s segment ({d:.2f} s usable)"
        for d in (videos.loc[short, "window_end_s"] - videos.loc[short, "window_start_s"])
    ]
    videos["split"] = assign_splits(videos, cfg)
    ok = videos[videos["status"] == "ok"]
    n = candidates[ok.index].to_numpy()
    seg = pd.DataFrame({
        "row": np.repeat(ok.index.to_numpy(), n),
        "segment_index": np.concatenate([np.arange(k) for k in n]) if len(n) else np.zeros(0, int),
    })
    vh = video_hash(ok["video_id"], cfg.seed, "segment")
    seg["vhash"] = np.repeat(vh, n)
    # Rank of each segment inside its video (by hash): round-robin over videos takes every
    # video's rank-0 segment before any video's rank-1 one, so no video gives more than its
    # fair share while others still have unused segments.
    seg["shash"] = _mix(seg["vhash"].to_numpy(), seg["segment_index"].to_numpy())
    seg = seg.sort_values(["row", "shash"], kind="stable")
    seg["rank"] = seg.groupby("row").cumcount()
    seg["split"] = videos.loc[seg["row"], "split"].to_numpy()
    seg["class"] = videos.loc[seg["row"], "class"].to_numpy()

    available = seg.groupby(["split", "class"]).size()
    report: dict = {"target": {}, "available": {}}
    chosen = []
    for split in SPLITS:
        per_class = {c: int(available.get((split, c), 0)) for c in cfg.classes}
        report["available"][split] = per_class
        target = min(per_class.values()) if per_class else 0
        if cfg.per_class is not None:
            target = min(target, cfg.per_class)
        report["target"][split] = target
        if target == 0:
            continue
        part = seg[seg["split"] == split].sort_values(["class", "rank", "vhash", "segment_index"], kind="stable")
        chosen.append(part.groupby("class", sort=False).head(target))
    if not chosen:  # nothing usable in some split: an empty, well-typed plan
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in SAMPLE_COLUMNS})
        for c in ("class_index", "segment_index"):
            empty[c] = empty[c].astype(np.int64)
        for c in ("start_s", "end_s"):
            empty[c] = empty[c].astype(np.float64)
        for c in factor_columns(videos):
            empty[c] = pd.Series(dtype=np.float64)
        return videos, empty, report
    picked = pd.concat(chosen)

    rows = videos.loc[picked["row"]]
    samples = pd.DataFrame({
        "video_id": rows["video_id"].to_numpy(),
        "segment_index": picked["segment_index"].to_numpy().astype(np.int64),
        "split": picked["split"].to_numpy(),
        "class": picked["class"].to_numpy(),
        "source": rows["source"].to_numpy(),
    })
    class_index = {c: i for i, c in enumerate(cfg.classes)}
    samples["class_index"] = samples["class"].map(class_index).astype(np.int64)
    samples["start_s"] = rows["window_start_s"].to_numpy() + samples["segment_index"] * cfg.segment_seconds
    samples["end_s"] = samples["start_s"] + cfg.segment_seconds
    samples["key"] = samples["video_id"] + "_" + samples["segment_index"].map("{:04d}".format)
    samples["shard"] = _assign_shards(samples, cfg)
    factors = factor_columns(videos)
    for c in factors:  # a video's factor values, on each of its samples (NaN: another class's factor)
        samples[c] = rows[c].to_numpy(np.float64)
    # Inside a shard, samples are written in a hashed order so classes and videos interleave.
    samples["order"] = _mix(video_hash(samples["key"], cfg.seed, "order"), np.zeros(len(samples), np.int64))
    samples = samples.sort_values(["split", "shard", "order"], kind="stable").drop(columns="order")
    samples = samples[SAMPLE_COLUMNS + factors].reset_index(drop=True)

    used = samples.groupby("video_id").size()
    videos["segments"] = videos["video_id"].map(used).fillna(0).astype(int)
    return videos, samples, report


def _assign_shards(samples: pd.DataFrame, cfg: BuildConfig) -> pd.Series:
    """Shard names: whole videos, about shard_size samples each, every shard mixing classes.

    A video never straddles two shards, so each video is decoded exactly once by one worker.
    Videos are interleaved across classes (each class's videos, in hashed order, spread evenly
    over the sequence), then the sequence is cut into shards of equal sample counts.
    """
    shard = pd.Series("", index=samples.index, dtype=object)
    for split, part in samples.groupby("split", sort=False):
        per_video = part.groupby(["class", "video_id"]).size().reset_index(name="n")
        per_video["h"] = video_hash(per_video["video_id"], cfg.seed, "shard")
        per_video = per_video.sort_values(["class", "h"], kind="stable")
        rank = per_video.groupby("class").cumcount()
        size = per_video.groupby("class")["n"].transform("size")
        per_video["pos"] = (rank + 0.5) / size
        per_video = per_video.sort_values(["pos", "h"], kind="stable")
        counts = per_video["n"].to_numpy()
        total = int(counts.sum())
        before = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n_shards = max(1, math.ceil(total / cfg.shard_size))
        index = np.minimum(before * n_shards // total, n_shards - 1)
        names = pd.Series([f"{split}/{split}-{i:06d}.tar" for i in index], index=per_video["video_id"].to_numpy())
        shard.loc[part.index] = part["video_id"].map(names).to_numpy()
    return shard
