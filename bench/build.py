"""Build throughput, three ways on the same synthetic corpus, in one run (ratios, not absolutes).

(a) ``s2i-data build`` (the library call, 1 worker, then all cores);
(b) a naive per-segment pipeline: one ffmpeg call for the audio and one for the frame of every
    segment, then the same features and the same tar writing — what research scripts usually do;
(c) the floor: ffmpeg alone decoding each file's audio track and the needed frames (the same
    single decode call the builder makes), no features, no writing.
Also: peak RSS per worker for a corpus and for one twice its size (it must not grow).

And the whole ``s2i-data build`` command (a fresh process: imports, probing, worker start,
manifests), one worker, against the floor measured on the same corpus in the same run: at 600
segments (60 VEGAS-like 10 s clips, or ``--corpus``), at the margin (600 vs 300 segments), and
its fixed start-up (the command on one video, less that video's decode).

    python bench/build.py [--videos-per-class 12] [--out bench/out] [--only whole] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from s2i_data import features, media, shards
from s2i_data.build import build
from s2i_data.config import BuildConfig
from s2i_data.executors import default_workers
from s2i_data.synth import synth

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def run_build(root: Path, out: Path, workers: int, shard_size: int) -> tuple[float, int, float]:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    build(BuildConfig(root=str(root), classes=list(CLASSES), out=str(out), workers=workers,
                      shard_size=shard_size, progress=False))
    dt = time.perf_counter() - t
    n = len(pd.read_parquet(out / "manifest.parquet"))
    rss = max(json.loads(p.read_text())["peak_rss_mb"] for p in (out / "_build" / "shards").glob("*.json"))
    return dt, n, rss


def naive(plan_rows: pd.DataFrame, out: Path) -> float:
    """Per segment: ffmpeg -ss for 1 s of audio, ffmpeg -ss for one frame; same features/tar."""
    ff = media.ffmpeg_exe()
    t = time.perf_counter()
    with tarfile.open(out, "w") as tf:
        for r in plan_rows.itertuples():
            audio = subprocess.run([ff, "-nostdin", "-loglevel", "error", "-ss", f"{max(r.start_s - 0.05, 0):.3f}",
                                    "-i", r.source, "-t", "1.1", "-vn", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
                                   capture_output=True, check=True).stdout
            frame = subprocess.run([ff, "-nostdin", "-loglevel", "error", "-ss", f"{r.start_s + 0.5:.3f}",
                                    "-i", r.source, "-frames:v", "1", "-vf",
                                    "crop=w='min(iw,ih)':h='min(iw,ih)',scale=96:96:flags=area,format=rgb24",
                                    "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
            a = np.frombuffer(audio, "<f4")
            mel = features.log_mel_segments(a, max(r.start_s - 0.05, 0), [r.start_s])[0]
            img = np.frombuffer(frame, np.uint8).reshape(96, 96, 3)
            for name, data in ((f"{r.key}.mel.npy", shards.encode_npy(mel)),
                               (f"{r.key}.png", shards.encode_image(img, "png"))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return time.perf_counter() - t


def floor(plan_rows: pd.DataFrame, probes: pd.DataFrame) -> float:
    """Only the decode the builder itself makes: one ffmpeg call per video."""
    t = time.perf_counter()
    for vid, g in plan_rows.groupby("video_id"):
        pr = media.Probe.from_row(probes.loc[vid])
        first, last = g["start_s"].min(), g["start_s"].max()
        media.decode(g["source"].iloc[0], pr, (first, last + 1.0), first_frame_s=first + 0.5,
                     n_frames=int(round(last - first)) + 1)
    return time.perf_counter() - t


def vegas_like(root: Path, per_class: int, seconds: float = 10.0) -> Path:
    """Clips shaped like VEGAS downloads: 10 s, 640x360 at 30 fps H.264, 44.1 kHz stereo AAC."""
    ff = media.ffmpeg_exe()
    for ci, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / cls / f"{cls}_{i:03d}.mp4"
            if path.exists():
                continue
            subprocess.run([ff, "-nostdin", "-loglevel", "error", "-y",
                            "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=30:d={seconds}",
                            "-f", "lavfi", "-i", f"sine=f={200 + 150 * ci + 20 * i}:r=44100:d={seconds}",
                            "-ac", "2", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                            "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    return root


def compare(label: str, root: Path, out: Path) -> None:
    cores = default_workers()
    a1, n, rss1 = run_build(root, out / "a1", 1, 64)
    plan_rows = pd.read_parquet(out / "a1" / "manifest.parquet")
    probes = pd.read_parquet(out / "a1" / "_build" / "probe.parquet").set_index("video_id", drop=False)
    an, _, _ = run_build(root, out / "an", cores, 64)
    c = floor(plan_rows, probes)
    b = naive(plan_rows, out / "naive.tar")
    rows = [("(a) s2i-data build, 1 worker", a1), (f"(a) s2i-data build, {cores} workers", an),
            ("(b) naive per-segment ffmpeg, 1 process", b), ("(c) floor: decode only, 1 process", c)]
    print(f"\n## {label}: {plan_rows['video_id'].nunique()} videos, {n} segments")
    print(f"{'pipeline':45s} {'seconds':>8s} {'seg/s':>8s}")
    for name, secs in rows:
        print(f"{name:45s} {secs:8.2f} {n / secs:8.1f}")
    print(f"(a) vs (b): {b / a1:.1f}x faster per core (target >= 5x)")
    print(f"(a) vs (c): {a1 / c:.2f}x the floor per core (target <= 1.5x)")
    print(f"(a) {cores} workers vs 1 worker: {a1 / an:.2f}x")
    print(f"peak RSS of a worker: {rss1:.0f} MB")


def command(root: Path, out: Path, workers: int = 1) -> float:
    """Seconds of the whole ``s2i-data build`` command over ``root`` (classes: its folders)."""
    shutil.rmtree(out, ignore_errors=True)
    classes = ",".join(sorted(p.name for p in root.iterdir() if p.is_dir()))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root), "--classes", classes,
                    "--out", str(out), "--workers", str(workers), "--no-progress"], check=True, capture_output=True)
    return time.perf_counter() - t


def subset(root: Path, dest: Path, per_class: int, classes: list[str] | None = None) -> Path:
    """``dest`` holding links to the first ``per_class`` videos of each class of ``root``."""
    shutil.rmtree(dest, ignore_errors=True)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if classes and folder.name not in classes:
            continue
        (dest / folder.name).mkdir(parents=True)
        for video in sorted(p for p in folder.iterdir() if p.is_file())[:per_class]:
            (dest / folder.name / video.name).symlink_to(video.resolve())
    return dest


def whole_command(root: Path, out: Path, repeat: int) -> dict:
    """The command at 1 worker against the floor: whole corpus, half of it, one video. Each
    round times the command and then the floor on the same corpus, so both see about the same
    machine load; the figures are the medians over ``repeat`` rounds of each round's ratios."""
    import statistics

    per_class = min(len([p for p in d.iterdir() if p.is_file()]) for d in root.iterdir() if d.is_dir())
    first_class = sorted(p.name for p in root.iterdir() if p.is_dir())[0]
    corpora = {"full": root, "half": subset(root, out / "half-corpus", max(1, per_class // 2)),
               "one": subset(root, out / "one-corpus", 1, [first_class])}
    rounds: list[dict[str, tuple[float, float]]] = []  # per round: corpus -> (command s, floor s)
    segments = {}
    for _ in range(repeat):
        got = {}
        for name, corpus in corpora.items():
            built = out / f"built-{name}"
            secs = command(corpus, built)
            rows = pd.read_parquet(built / "manifest.parquet")
            probes = pd.read_parquet(built / "_build" / "probe.parquet").set_index("video_id", drop=False)
            got[name] = (secs, floor(rows, probes))
            segments[name] = len(rows)
        rounds.append(got)
    med = statistics.median
    result = {
        "segments": segments, "rounds": rounds,
        "ratio": med(r["full"][1] / r["full"][0] for r in rounds),
        "marginal": med((r["full"][1] - r["half"][1]) / (r["full"][0] - r["half"][0]) for r in rounds),
        "startup_s": med(r["one"][0] - r["one"][1] for r in rounds),
    }
    print(f"\n## whole `s2i-data build` command, 1 worker ({repeat} rounds: command s / floor s)")
    for name in corpora:
        cells = "  ".join(f"{r[name][0]:6.2f} / {r[name][1]:5.2f}" for r in rounds)
        print(f"{name:5s} {segments[name]:4d} segments: {cells}")
    print(f"floor/command at {segments['full']} segments: {result['ratio']:.2f} (median; goal >= 0.8)")
    print(f"at the margin ({segments['half']} -> {segments['full']} segments): {result['marginal']:.2f} (median)")
    print(f"fixed start-up (one-video command less its decode): {result['startup_s']:.2f} s (median; goal < 1 s)")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos-per-class", type=int, default=12)
    ap.add_argument("--vegas-per-class", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--only", choices=["compare", "whole", "memory"], action="append",
                    help="run only these parts (repeatable; default: all)")
    ap.add_argument("--whole-per-class", type=int, default=12,
                    help="VEGAS-like clips per class for the whole-command part (12: 60 clips, 600 segments)")
    ap.add_argument("--corpus", type=Path, help="ROOT/<class>/<video> to time the whole command on instead")
    ap.add_argument("--repeat", type=int, default=5, help="whole command: rounds (medians are reported)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    parts = set(args.only or ["compare", "whole", "memory"])
    print(f"machine: {os.cpu_count()} cores, {sys.platform}; ffmpeg: {media.ffmpeg_exe()}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "whole" in parts:
        root = args.corpus or vegas_like(out / f"vegas-like-{args.whole_per_class}", args.whole_per_class)
        whole_command(root, out / "whole", args.repeat)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if parts <= {"whole"}:
        return
    root = out / f"videos-{args.videos_per_class}"
    t = time.perf_counter()
    synth(root, videos_per_class=args.videos_per_class, seed=0, min_seconds=4.0, max_seconds=10.0)
    print(f"corpus: {args.videos_per_class * len(CLASSES)} videos (4-10 s), made in {time.perf_counter() - t:.1f} s")
    if "compare" in parts:
        compare("built-in synthetic corpus (160x120, 4-10 s)", root, out / "synth")
        vroot = vegas_like(out / "vegas-like", args.vegas_per_class)
        compare("VEGAS-like clips (640x360 30 fps, 10 s)", vroot, out / "vegas")
    if "memory" not in parts:
        return

    # Memory per worker must not grow with the corpus: twice the videos, same peak.
    root2 = out / f"videos-{2 * args.videos_per_class}"
    synth(root2, videos_per_class=2 * args.videos_per_class, seed=0, min_seconds=4.0, max_seconds=10.0)
    _, n1, rss1 = run_build(root, out / "m1", 1, 64)
    _, n2, rss2 = run_build(root2, out / "m2", 1, 64)
    print(f"\npeak RSS per worker: {rss1:.0f} MB for {n1} segments, {rss2:.0f} MB for {n2} segments")


if __name__ == "__main__":
    main()
