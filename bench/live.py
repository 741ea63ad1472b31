"""s2i-model live: latency, dropped windows and memory of the live loop on this CPU, today's
eager networks beside the fast path (`s2i_model.fast`) in the same run.

Each case is a width and a hop (default: the goals of issue 29, width 1.0, the paper's network, at
hop 0.05 s, twenty pictures a second, and width 0.25 at hop 0.02 s). For each, a run folder with
untrained networks at E = 512 in the trainers' checkpoint format is loaded through
`run.load_model` (latency does not depend on the weights), and each path in ``--paths`` runs the
whole live loop on a paced stream (`ArraySource` with ``realtime``: chunks of 20 ms released by
the clock, as a microphone delivers them; pink noise with a slow swell, so no window is quiet):
incremental log-mel, encoder, generator, PNG encoding, the page's event, a real SSE client on
loopback reading it. Per case and path:

- latency from the moment a window's last audio arrived to its picture being handed to the page:
  median and p95 over ``--seconds`` of stream (default 60), and the windows dropped as stale;
- the model call alone (normalise + encoder + generator for one window), back to back and after a
  hop of idle, as in the loop;
- the ratios fast / eager of the p95 latency and of the model call.

A path is ``NAME:THREADS``: ``eager`` is today's path (the networks as trained, torch on THREADS
threads: 1 is `s2i-model live`'s default before the fast path); ``auto``, ``openvino`` or
``torch`` is `fast.accelerate` with that backend, at ``--precision``.

``--pixels`` adds the pixel difference of each fast path (fp32 and bf16) against the eager
networks, in grey levels of 0-255, on 16 windows x 4 pictures: for width 1.0 with its BatchNorm
statistics set by pink-noise windows (untrained networks with the textbook BN statistics saturate
the tanh, which hides any difference), and for ``--run`` (a trained run) when given.
``--minutes M`` adds one M-minute stream at width 1.0 with the process RSS sampled every 10 s.
The front end (one hop of new log-mel frames against the whole window's) is timed too. Prints a
table and writes bench/out/live.json.

    python bench/live.py [--seconds 60] [--cases 1.0:0.05,0.25:0.02] [--paths eager:1,auto:2]
                         [--pixels] [--run RUN] [--minutes 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SR = 16000
OUT = Path(__file__).resolve().parent / "out" / "live.json"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pink(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[1:] /= np.sqrt(np.arange(1, spec.size))
    x = np.fft.irfft(spec, n)
    x *= 0.2 / (np.abs(x).max() + 1e-9)
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * np.arange(n) / SR / 7))).astype(np.float32)


def window_mel(seed: int) -> np.ndarray:
    """The log-mel [100, 128] of one second of the bench's pink noise."""
    from s2i_data import features

    return features.log_mel_segments(pink(1.0, seed), 0.0, [0.0])[0].astype(np.float32)


def NORM(mel: np.ndarray):
    from s2i_model.data import Normalizer

    return Normalizer(-13.8, 4.0)(mel)


def random_run(folder: Path, emb: int, width: float, calibrate: bool = False) -> Path:
    """A run folder with untrained networks; ``calibrate``: their BatchNorm statistics set by a pass
    over pink-noise windows in training mode (cumulative averages), so that activations have the
    scale a trained network's have instead of saturating the tanh."""
    import torch

    from s2i_model import checkpoint
    from s2i_model.models.s2i.config import AutoencoderConfig
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
    from s2i_model.models.s2i import AUTOENCODER, TRANSLATOR
    torch.manual_seed(0)
    cfg = AutoencoderConfig(data="unused", run=str(folder), emb=emb, width=width, epochs=1)
    ae, G = AudioAutoencoder(emb, width), DenseGenerator(emb, width)
    if calibrate:
        for m in [*ae.modules(), *G.modules()]:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # cumulative: the statistics of every batch seen
        mels = torch.stack([NORM(window_mel(i)) for i in range(32)])
        with torch.no_grad():
            ae.train()(mels)
            G.train()(ae.encoder.eval()(mels))
    checkpoint.save(folder / AUTOENCODER, {"model": ae.state_dict(), "epoch": 1,
                                           "config": cfg.to_dict(), "normalizer": {"lo": -13.8, "hi": 4.0}})
    checkpoint.save(folder / TRANSLATOR, {"G": G.state_dict(), "epoch": 1, "config": {},
                                          "autoencoder": cfg.to_dict()})
    return folder


def sse_reader(server, stop: threading.Event) -> threading.Thread:
    """A page's connection: reads every event the server writes (bytes discarded)."""
    def read() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"/events?token={server.token}")
        r = conn.getresponse()
        while not stop.is_set() and r.fp.readline():
            pass
        conn.close()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def stream(model, seconds: float, hop: float, rss_every: float | None = None) -> dict:
    from s2i_model.live import loop
    from s2i_model.live.server import Hub, start_server
    from s2i_model.live.sources import ArraySource
    from s2i_model.live.window import Windower

    hub = Hub(8, model.norm)
    server = start_server(hub, "127.0.0.1", 0)
    stop = threading.Event()
    client = sse_reader(server, stop)
    time.sleep(0.2)
    imaginer = loop.Imaginer(model, 1)
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def on_result(res) -> None:
        hub.count_dropped(res)
        if rss_every and (not rss or time.monotonic() - t0 - rss[-1][0] >= rss_every):
            rss.append((round(time.monotonic() - t0, 1), round(rss_mb(), 1)))

    summary = loop.run(ArraySource(pink(seconds), SR, realtime=True), Windower(1.0, SR, hop), imaginer,
                       hub.publish, on_result=on_result)
    hub.end("bench over")
    stop.set()
    server.shutdown()
    server.server_close()
    client.join(timeout=5)
    lat = sorted(summary.latencies_ms)
    out = {"hop_s": hop, "seconds": seconds, "windows": summary.windows, "made": summary.made,
           "dropped": summary.dropped, "dropped_share": round(summary.dropped / max(summary.windows, 1), 4),
           "latency_median_ms": round(statistics.median(lat), 1),
           "latency_p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
           "latency_max_ms": round(lat[-1], 1)}
    if rss_every:
        out["rss_mb"] = rss
    return out


def model_alone(model, repeats: int = 40, gap: float = 0.0) -> dict:
    """The model call for one window, back to back (``gap`` 0) or after ``gap`` seconds idle, as
    in the live loop between hops (caches and clocks go cold: ~1.5x slower on this machine)."""
    import torch

    mel = window_mel(0)
    ts = []
    with torch.no_grad():
        for i in range(repeats + 3):
            time.sleep(gap)
            t = time.perf_counter()
            model.sound_pictures(model.norm(mel)[None], 1, None)
            if i >= 3:
                ts.append((time.perf_counter() - t) * 1000)
    ts.sort()
    return {"median_ms": round(statistics.median(ts), 1), "p95_ms": round(ts[int(0.95 * len(ts))], 1)}


def front_end(repeats: int = 200) -> dict:
    """One hop (0.5 s) of new audio: its frames incrementally vs the whole window's log-mel."""
    from s2i_data import features

    audio = pink(2.0)
    inc, whole = [], []
    for _ in range(repeats):
        s = features.LogMelStream(SR)
        s.push(audio[:SR])
        t = time.perf_counter()
        s.push(audio[SR:SR + SR // 2])
        inc.append(time.perf_counter() - t)
        t = time.perf_counter()
        features.log_mel_segments(audio, 0.0, [0.5])
        whole.append(time.perf_counter() - t)
    a, b = statistics.median(inc) * 1000, statistics.median(whole) * 1000
    return {"incremental_ms": round(a, 3), "whole_window_ms": round(b, 3), "ratio": round(a / b, 3)}


def load(folder: Path, path: str, threads: int, precision: str, log=print):
    """The model of ``folder`` on ``path`` (eager or a fast backend), torch on ``threads`` threads."""
    import torch

    from s2i_model import fast
    from s2i_model.run import load_model

    torch.set_num_threads(threads)
    model = load_model(folder, "cpu")
    return model if path == "eager" else fast.accelerate(model, path, precision, threads, log=log)


def pixels(folder: Path, label: str, threads: int) -> dict:
    """Largest, p99.9 and mean difference in grey levels (0-255) between each fast path's pictures and
    the eager networks' (16 windows x 4 pictures, one seed), and the share of bytes that differ."""
    import torch

    from s2i_model import fast
    from s2i_model.run import load_model

    torch.set_num_threads(threads)
    model = load_model(folder, "cpu")
    mels = torch.stack([NORM(window_mel(100 + i)) for i in range(16)])
    as_bytes = lambda x: x.float().clamp(-1, 1).add(1).mul(127.5).round()  # noqa: E731 - as live and imagine do
    eager = as_bytes(model.sound_pictures(mels, 4, 0))
    out = {}
    for backend in ("openvino", "torch"):
        for precision in ("fp32", "bf16"):
            m = fast.accelerate(model, backend, precision, threads, log=lambda _s: None)
            if m is model:
                continue
            d = (as_bytes(m.sound_pictures(mels, 4, 0)) - eager).abs().flatten()
            out[f"{backend} {precision}"] = {"max": float(d.max()), "p99.9": float(d.quantile(0.999)),
                                             "mean": round(float(d.mean()), 4),
                                             "bytes_differing": round(float((d > 0).float().mean()), 4)}
            print(f"pixels, {label}, {backend} {precision}: {out[f'{backend} {precision}']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="stream length per case and path")
    ap.add_argument("--cases", default="1.0:0.05,0.25:0.02", help="WIDTH:HOP,...")
    ap.add_argument("--paths", default="eager:1,auto:2", help="PATH:THREADS,... (eager: today's path)")
    ap.add_argument("--precision", default="auto", help="the fast paths' precision (auto | fp32 | bf16)")
    ap.add_argument("--emb", type=int, default=512)
    ap.add_argument("--pixels", action="store_true", help="also the fast paths' pixel difference against eager")
    ap.add_argument("--run", type=Path, help="with --pixels: a trained run to measure it on too")
    ap.add_argument("--minutes", type=float, default=0.0, help="also an RSS run this long at width 1.0 (0: none)")
    args = ap.parse_args()

    cases = [(float(w), float(h)) for w, h in (c.split(":") for c in args.cases.split(",") if c.strip())]
    paths = [(p, int(t)) for p, t in (c.split(":") for c in args.paths.split(",") if c.strip())]
    res = {"cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "emb": args.emb,
           "precision": args.precision, "front_end": front_end(), "cases": {}}
    print(f"front end, one hop of new frames: {res['front_end']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.pixels:
            res["pixels"] = {"width 1.0, BN statistics from pink noise":
                             pixels(random_run(Path(tmp) / "calibrated", args.emb, 1.0, calibrate=True), "width 1.0", 2)}
            if args.run:
                res["pixels"][str(args.run)] = pixels(args.run, str(args.run), 2)
        for w, hop in cases:
            folder = random_run(Path(tmp) / f"w{w}", args.emb, w)
            rows = {}
            for path, threads in paths:
                said: list[str] = []
                model = load(folder, path, threads, args.precision, log=said.append)
                row = {"fast_path": said[0] if said else "eager networks", "threads": threads,
                       "model_alone": model_alone(model), "model_after_hop_idle": model_alone(model, 20, hop),
                       "stream": stream(model, args.seconds, hop), "load_avg": os.getloadavg()}
                rows[f"{path}:{threads}"] = row
                st = row["stream"]
                print(f"width {w:<6} hop {hop:<5} {path}:{threads:<2} ({row['fast_path']}): dropped {st['dropped']}/"
                      f"{st['windows']}, latency median {st['latency_median_ms']} ms, p95 {st['latency_p95_ms']} ms, "
                      f"max {st['latency_max_ms']} ms; model alone {row['model_alone']['median_ms']} ms "
                      f"(after {hop} s idle {row['model_after_hop_idle']['median_ms']} ms); load {row['load_avg'][0]:.2f}",
                      flush=True)
                del model
            base = rows[f"{paths[0][0]}:{paths[0][1]}"]
            for key, row in list(rows.items())[1:]:
                row["p95_over_baseline"] = round(row["stream"]["latency_p95_ms"] / base["stream"]["latency_p95_ms"], 3)
                row["model_over_baseline"] = round(row["model_alone"]["median_ms"] / base["model_alone"]["median_ms"], 3)
                print(f"  {key} / {paths[0][0]}:{paths[0][1]}: p95 latency x{row['p95_over_baseline']}, "
                      f"model call x{row['model_over_baseline']}", flush=True)
            res["cases"][f"{w}:{hop}"] = rows
        if args.minutes > 0:
            path, threads = paths[-1]
            model = load(random_run(Path(tmp) / "long", args.emb, 1.0), path, threads, args.precision)
            long = stream(model, args.minutes * 60, 0.5, rss_every=10.0)
            mem = [m for _, m in long["rss_mb"]]
            long["rss_start_mb"], long["rss_max_mb"], long["rss_end_mb"] = mem[0], max(mem), mem[-1]
            res["long"] = long
            print(f"{args.minutes:g} min at width 1.0 ({path}:{threads}): RSS {mem[0]:.0f} MB at start, {max(mem):.0f} MB "
                  f"max, {mem[-1]:.0f} MB at the end; dropped {long['dropped']}/{long['windows']}; latency p95 "
                  f"{long['latency_p95_ms']} ms", flush=True)
    res["load_avg_end"] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(OUT)


if __name__ == "__main__":
    main()
