"""imagine on long recordings: peak memory and time of the streamed front end against a minute.

Makes a one-minute and a one-hour recording (pink noise with a slow swell, 44.1 kHz stereo MP3 at
128 kb/s: what people have) and runs, each in a fresh process so that the peak RSS (VmHWM) is its
own:

- ``stream``: `sound_windows`, the streamed decode + shared log-mel of the 60 kept windows;
- ``imagine``: the same plus a randomly initialised network (``--width``, default 1/16; 1.0 is the
  paper's) painting 8 pictures per window (8 per generator call) and writing the grid: the whole of
  ``s2i-model imagine`` but for loading trained weights, on the eager networks (today's path);
- ``fast``: the same on the fast path `s2i-model imagine` now takes (`fast.accelerate`, auto
  backend, imagine's default precision fp32; ``--precision bf16`` to time that);
- ``whole``: the decode imagine used before (the whole file as one float32 array) + the log-mel of
  the same windows, for comparison (``--no-whole`` to skip it on a small machine: about 0.8 GB).

Memory is reported as the peak over the RSS after the imports (torch alone is ~300 MB), time as
wall seconds, and both as ratios hour / minute. Figures go to docs/performance.md by hand.

    python bench/imagine.py [--format mp3|flac] [--no-whole] [--keep DIR] [--width 1.0] [--precision bf16]
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

MODES = ("stream", "imagine", "fast", "whole")


def make_recording(path: Path, seconds: int, fmt: str) -> Path:
    from s2i_data.media import ffmpeg_exe

    codec = ["-c:a", "libmp3lame", "-b:a", "128k"] if fmt == "mp3" else ["-c:a", "flac"]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"anoisesrc=d={seconds}:c=pink:r=44100:a=0.2:seed=1",
                    "-af", "volume='0.5+0.5*sin(2*PI*t/7)':eval=frame", "-ac", "2", *codec, str(path)], check=True)
    return path


def random_run(folder: Path, width: float = 0.0625) -> Path:
    """A run folder in the trainers' checkpoint format, with untrained networks of ``width``."""
    import torch

    from s2i_model import checkpoint
    from s2i_model.models.s2i.config import AutoencoderConfig
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
    from s2i_model.models.s2i import AUTOENCODER as AE_CKPT
    from s2i_model.models.s2i import TRANSLATOR as GAN_CKPT
    torch.manual_seed(0)
    cfg = AutoencoderConfig(data="unused", run=str(folder), emb=128 if width < 1 else 512, width=width, epochs=1)
    checkpoint.save(folder / AE_CKPT, {"model": AudioAutoencoder(cfg.emb, cfg.width).state_dict(), "epoch": 1,
                                       "config": cfg.to_dict(), "normalizer": {"lo": -13.8, "hi": 4.0}})
    checkpoint.save(folder / GAN_CKPT, {"G": DenseGenerator(cfg.emb, cfg.width).state_dict(), "epoch": 1,
                                        "config": {}, "autoencoder": cfg.to_dict()})
    return folder


def _kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def child(mode: str, path: Path, run: Path | None, out: Path, precision: str = "fp32") -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import resource

    from s2i_data import features, media
    from s2i_model.imagine import _picked, imagine_file, sound_windows
    from s2i_model.models.s2i.load import Translator

    tr = Translator.load(run, "cpu") if mode in ("imagine", "fast") else None
    if mode == "fast":
        from s2i_model import fast

        tr = fast.accelerate(tr, "auto", precision, 0, log=lambda s: print(s, file=sys.stderr))
    base = _kb("VmRSS:")
    t0 = time.perf_counter()
    if mode == "stream":
        sound_windows(path)
    elif mode in ("imagine", "fast"):
        imagine_file(tr, path, 8, out / f"{path.stem}-{mode}.png")
    else:  # the whole-file decode imagine used before streaming
        audio = media.decode_audio(str(path), features.SAMPLE_RATE, timeout=1e6)
        keep = _picked(int(len(audio) / features.SAMPLE_RATE), 60)
        features.log_mel_segments(audio, 0.0, [float(i) for i in keep])
    wall = time.perf_counter() - t0
    ffmpeg_cpu = sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), k) for k in ("ru_utime", "ru_stime"))
    print(json.dumps({"mode": mode, "base_mb": base / 1024, "peak_mb": _kb("VmHWM:") / 1024,
                      "wall_s": wall, "ffmpeg_cpu_s": ffmpeg_cpu}))


def measure(mode: str, path: Path, run: Path, out: Path, precision: str = "fp32") -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(path), "--run", str(run), "--out", str(out),
                        "--precision", precision], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{mode} {path.name} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", choices=("mp3", "flac"), default="mp3")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-file decode (needs ~0.8 GB for the hour)")
    ap.add_argument("--keep", type=Path, help="make the recordings here (and keep them) instead of a temp folder")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=float, default=0.0625, help="the networks' width (1.0: the paper's)")
    ap.add_argument("--precision", default="fp32", help="the fast mode's precision (fp32, imagine's default, or bf16)")
    a = ap.parse_args()
    if a.child:
        child(a.child[0], Path(a.child[1]), a.run, a.out, a.precision)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = a.keep or tmp
        folder.mkdir(parents=True, exist_ok=True)
        files = {}
        for label, seconds in (("1 min", 60), ("1 h", 3600)):
            t = time.perf_counter()
            files[label] = make_recording(folder / f"{seconds}s.{a.format}", seconds, a.format)
            size_mb = files[label].stat().st_size / 1e6
            print(f"made {label} {a.format}: {size_mb:.1f} MB in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        run = random_run(tmp / "run", a.width)
        (tmp / "out").mkdir()
        modes = [m for m in MODES if not (m == "whole" and a.no_whole)]
        res = {(m, label): measure(m, p, run, tmp / "out", a.precision) for m in modes for label, p in files.items()}

    print(f"\nimagine, {a.format} 44.1 kHz stereo, 60 windows kept, width {a.width:g}, fast path at {a.precision} "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})\n")
    print(f"| {'mode':<8} | {'file':<6} | {'RSS after imports':>17} | {'peak RSS':>9} | {'peak - imports':>14} "
          f"| {'wall':>7} | {'ffmpeg CPU':>10} |")
    print(f"|{'-' * 10}|{'-' * 8}|{'-' * 19}|{'-' * 11}|{'-' * 16}|{'-' * 9}|{'-' * 12}|")
    for (m, label), r in res.items():
        print(f"| {m:<8} | {label:<6} | {r['base_mb']:>14.0f} MB | {r['peak_mb']:>6.0f} MB "
              f"| {r['peak_mb'] - r['base_mb']:>11.0f} MB | {r['wall_s']:>5.1f} s | {r['ffmpeg_cpu_s']:>8.1f} s |")
    print("\nhour / minute:")
    for m in modes:
        h, mi = res[(m, "1 h")], res[(m, "1 min")]
        grow = (h["peak_mb"] - h["base_mb"]) / max(mi["peak_mb"] - mi["base_mb"], 1e-9)
        print(f"  {m:<8} peak RSS x{h['peak_mb'] / mi['peak_mb']:.2f} (growth over imports x{grow:.1f}), "
              f"wall x{h['wall_s'] / mi['wall_s']:.1f}")
    for label in files:
        e, f = res[("imagine", label)], res[("fast", label)]
        print(f"  {label}: fast path / eager networks, wall x{f['wall_s'] / e['wall_s']:.3f} "
              f"(speed-up x{e['wall_s'] / f['wall_s']:.2f}), peak RSS x{f['peak_mb'] / e['peak_mb']:.2f}")
    if "whole" in modes:
        s, w = res[("stream", "1 h")], res[("whole", "1 h")]
        print(f"  one hour, streamed / whole-file: peak RSS x{s['peak_mb'] / w['peak_mb']:.2f}, "
              f"wall x{s['wall_s'] / w['wall_s']:.2f}")


if __name__ == "__main__":
    main()
