"""inspect: the counts of a build and a contact sheet to look at (spectrogram beside frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .plan import SPLITS
from .readers import Build, SampleError, decode_sample, iter_raw

# A perceptual dark-to-bright ramp (black → purple → orange → pale yellow, like "magma").
_RAMP = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]], float)


def colorize(mel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[time, mel] log-mel → RGB image with low frequencies at the bottom, time to the right."""
    x = np.clip((mel.T[::-1] - lo) / max(hi - lo, 1e-9), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(x.astype(int), len(_RAMP) - 2)
    f = (x - i)[..., None]
    return (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f).astype(np.uint8)


def summary(build: Build | str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    build = Build.open(build)
    manifest = build.manifest()
    videos = build.manifest(name="videos.parquet")
    classes = build.classes
    counts = (manifest.groupby(["split", "class"]).size().unstack(fill_value=0)
              .reindex(index=list(SPLITS), columns=classes, fill_value=0))
    return counts, videos[videos["status"] != "ok"]


def _decoded(build: Build, split: str, report):
    """(key, sample) of every readable sample of a split's shards; damage goes to ``report``."""
    shards = build.shards(split)
    for raw in iter_raw([u for _, u in shards], build.cache_dir, on_shard_error=report,
                        names={u: name for name, u in shards}, contract=build.contract):
        try:
            yield raw["__key__"], decode_sample(raw, build.contract)
        except SampleError as e:
            report(e)


def colour_judge(build: Build | str | Path, learn: str = "train", judge: str = "test") -> dict:
    """How far a frame's mean colour alone names its class: each ``judge`` frame given the class
    whose ``learn`` frames' mean colour is nearest (RGB). Near chance means the class must be told
    by shape and texture (the factors preset asks <= 35 % with five classes); far above it, a
    model can score class agreement by painting the class's colour."""
    build = Build.open(build)
    cls_of = dict(build.manifest(["key", "class"]).itertuples(index=False, name=None))

    def means(split: str) -> tuple[np.ndarray, list[str]]:
        x, y = [], []
        for key, sample in _decoded(build, split, lambda e: None):
            if key in cls_of:
                x.append(sample["image"].reshape(-1, 3).astype(np.float64).mean(0) / 255.0)
                y.append(cls_of[key])
        return np.array(x).reshape(-1, 3), y

    (xl, yl), (xj, yj) = means(learn), means(judge)
    classes = [c for c in build.classes if c in set(yl)]
    if not classes or not yj:
        raise ValueError(f"{build}: no readable frames in the {learn} or {judge} split")
    centre = np.stack([xl[np.array(yl) == c].mean(0) for c in classes])
    picked = np.argmin(((xj[:, None] - centre[None]) ** 2).sum(-1), 1)
    accuracy = float(np.mean([classes[p] == y for p, y in zip(picked, yj)]))
    return {"accuracy": accuracy, "chance": 1.0 / len(build.classes), "frames": len(yj)}


def contact_sheet(build: Build | str | Path, png: Path, per_class: int = 6, split: str = "train",
                  shard_url: str | None = None, cache_dir: str | None = None,
                  problems: list[str] | None = None) -> Path:
    """A row per class: ``per_class`` pairs of (spectrogram | frame), read back from the shards.

    A damaged shard or sample is appended to ``problems`` (one line naming shard and key) and
    left out of the sheet; without ``problems`` it raises `SampleError`."""
    from PIL import Image, ImageDraw

    build = Build.open(build).with_access(shard_url, cache_dir)
    manifest = build.manifest()
    classes = build.classes
    part = manifest[manifest["split"] == split]
    if part.empty:
        raise ValueError(f"split {split!r} of {build} has no samples")
    # A spread of videos per class: the first segment of each of the first videos (by key).
    chosen = (part.sort_values("key").groupby("video_id").head(1).groupby("class").head(per_class))
    wanted = set(chosen["key"])
    got: dict[str, dict] = {}
    needed = set(chosen["shard"])
    name_of = {u: name for name, u in build.shards(split) if name in needed}
    contract = build.contract

    def report(e: SampleError) -> None:
        if problems is None:
            raise e
        problems.append(str(e))

    # every sample of the shards read is decoded (and its damage reported), not only those drawn
    for raw in iter_raw(list(name_of), build.cache_dir, on_shard_error=report, names=name_of, contract=contract):
        try:
            sample = decode_sample(raw, contract)
        except SampleError as e:
            report(e)
            continue
        if raw["__key__"] in wanted:
            got[raw["__key__"]] = sample
    chosen = chosen[chosen["key"].isin(got)]
    if not got:
        raise ValueError(f"no sample of the {split} split could be read for the sheet")
    mels = np.stack([s["mel"] for s in got.values()])
    lo, hi = np.percentile(mels, 1), np.percentile(mels, 99.5)

    cell_h, label_w, gap = 128, 110, 6
    spec_w = got[next(iter(got))]["mel"].shape[0]
    cell_w = spec_w + cell_h + gap
    sheet = Image.new("RGB", (label_w + per_class * cell_w, len(classes) * (cell_h + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, cls in enumerate(classes):
        y = gap + r * (cell_h + gap)
        draw.text((6, y + cell_h // 2 - 6), cls[:16], fill=(0, 0, 0))
        keys = chosen[chosen["class"] == cls]["key"].tolist()
        for c, key in enumerate(keys):
            s = got[key]
            x = label_w + c * cell_w
            sheet.paste(Image.fromarray(colorize(s["mel"], lo, hi)), (x, y))
            sheet.paste(Image.fromarray(s["image"]).resize((cell_h, cell_h), Image.Resampling.NEAREST), (x + spec_w, y))
    png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(png)
    return png
