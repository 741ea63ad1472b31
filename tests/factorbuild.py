"""A small real build of within-class factors (issue 28) whose every factor can be read off its
frames exactly: videos drawn here with numpy, encoded losslessly (FFV1), with a ROOT/factors.csv
of the ``factors`` preset, built by `s2i-data build` like any folder of videos.

- baby: a grey disc on a dark ground; its radius grows with ``baby_size`` (8 + 28 u px, drawn whole
  in the frame) and its grey level with ``baby_loudness`` (90 + 160 u); the sound, a tone whose
  pitch falls as the baby grows, louder with ``baby_loudness``.
- fireworks: ``fireworks_count`` yellow dots (one per third of the frame's height) whose radius grows
  with ``fireworks_size`` (4 + 8 u px); the sound, that many clicks a second.

Each video's values are evenly spaced over the factor's range and dealt to the videos in a seeded
random order (so the split says nothing of them); the disc and the dots drift across the video,
so the two 1 s segments of a video show it at two places. `oracle` reads every factor from a
frame by counting pixels: what a perfect reader reads.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from s2i_data import factors as defs

from conftest import encode_frames

S, FPS, SR = 96, 25, 16000
GROUND = (20, 30, 40)
CLASSES = ("baby", "fireworks")
FACTORS = defs.of_classes("factors", CLASSES)  # baby_size, baby_loudness, fireworks_count, fireworks_size


def values(videos: int, seed: int) -> dict[str, list[dict[str, float]]]:
    """Per class, each video's factor values (``{name: value}``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cls in CLASSES:
        rows = [{} for _ in range(videos)]
        for f in defs.of_class("factors", cls):
            if f.kind == defs.COUNT:
                levels = np.resize(np.arange(int(f.low), int(f.high) + 1, dtype=float), videos)
            else:
                levels = np.linspace(0.0, 1.0, videos)
            for row, v in zip(rows, rng.permutation(levels)):
                row[f.name] = float(v)
        out[cls] = rows
    return out


def _disc(frame: np.ndarray, cy: float, cx: float, r: float, colour) -> None:
    yy, xx = np.mgrid[0:S, 0:S]
    frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour


def frames_of(cls: str, v: dict[str, float], n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, S, S, 3), np.uint8)
    out[:] = GROUND
    if cls == "baby":
        r = 8 + 28 * v["baby_size"]
        grey = int(round(90 + 160 * v["baby_loudness"]))
        lo, hi = r + 1, S - 2 - r
        (y0, x0), (y1, x1) = rng.uniform(lo, hi, 2), rng.uniform(lo, hi, 2)
        for i in range(n):
            t = i / max(n - 1, 1)
            _disc(out[i], y0 + t * (y1 - y0), x0 + t * (x1 - x0), r, (grey, grey, grey))
    else:
        r = 4 + 8 * v["fireworks_size"]
        k = int(v["fireworks_count"])
        starts = rng.uniform(r + 1, S - 2 - r, (k, 2))
        ends = rng.uniform(r + 1, S - 2 - r, (k, 2))
        for i in range(n):
            t = i / max(n - 1, 1)
            for j in range(k):  # dot j stays in its own third of the height: the dots never touch
                y = 16 + 32 * j + (t - 0.5) * 4
                x = starts[j, 1] + t * (ends[j, 1] - starts[j, 1])
                _disc(out[i], y, x, r, (255, 230, 60))
    return out


def sound_of(cls: str, v: dict[str, float], seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if cls == "baby":
        level, pitch = 0.1 + 0.8 * v["baby_loudness"], 650 - 300 * v["baby_size"]
        return (level * np.sin(2 * np.pi * pitch * t)).astype(np.float32)
    k = int(v["fireworks_count"])
    out = np.zeros_like(t)
    for b in np.arange(0, seconds, 1 / k):
        i = int(b * SR)
        bang = np.random.default_rng(i).standard_normal(len(out[i:i + 400]))
        out[i:i + 400] += (0.2 + 0.7 * v["fireworks_size"]) * bang
    return np.clip(out, -1, 1).astype(np.float32)


def make_videos(root: Path, videos: int = 80, seconds: float = 2.2, seed: int = 0) -> Path:
    """ROOT/<class>/<class>_NNN.mkv and ROOT/factors.csv."""
    rng = np.random.default_rng(seed + 1)
    vals = values(videos, seed)
    rows = []
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, v in enumerate(vals[cls]):
            name = f"{cls}_{i:03d}.mkv"
            encode_frames(root / cls / name, frames_of(cls, v, int(seconds * FPS), rng), FPS,
                          audio=sound_of(cls, v, seconds), sr=SR)
            rows.append({"preset": "factors", "class": cls, "video": name,
                         **{f.column: "" for f in defs.preset("factors")},
                         **{defs.COLUMN_PREFIX + k: repr(x) for k, x in v.items()}})
    with open(root / defs.SIDECAR, "w", newline="") as f:
        w = csv.DictWriter(f, ["preset", "class", "video"] + defs.columns("factors"))
        w.writeheader()
        w.writerows(rows)
    return root


def build(root: Path, out: Path, splits: str = "0.5,0.1,0.4") -> Path:
    done = subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root), "--classes",
                           ",".join(CLASSES), "--out", str(out), "--splits", splits, "--workers", "2",
                           "--no-progress"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


# ---- reading the factors off a frame, exactly ---------------------------------------------------

def oracle(frame: np.ndarray, cls: str) -> dict[str, float]:
    """The factors of a frame ([3, S, S] in [-1, 1], or uint8 [S, S, 3]) of this module's drawing,
    from its pixels: the disc's radius from its area, its grey level from its mean; the dots'
    count from the thirds of the height they lie in, their radius from their area."""
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        f = np.round((f.transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
    lit = np.abs(f.astype(int) - np.array(GROUND)).sum(-1) > 30
    area = float(lit.sum())
    if cls == "baby":
        r = np.sqrt(area / np.pi)
        grey = float(f[lit].mean()) if area else 90.0
        return {"baby_size": (r - 8) / 28, "baby_loudness": (grey - 90) / 160}
    k = max(1, sum(bool(lit[32 * j:32 * j + 32].any()) for j in range(3)))
    r = np.sqrt(area / k / np.pi)
    return {"fireworks_count": float(k), "fireworks_size": (r - 4) / 8}


def factor_build_at(base: Path) -> Path:
    """The build (made once under ``base``, the session's temporary folder, and reused)."""
    out = base / "factor-build" / "shards"
    if not (out / "stats.json").is_file():
        build(make_videos(base / "factor-build" / "videos"), out)
    return out
