"""s2i-model live: latency, dropped windows and memory of the live loop on this CPU.

For each width (1.0, the paper's network, and the CPU-size widths) at E = 512, a run folder with
untrained networks in the trainers' checkpoint format (latency does not depend on the weights) is
loaded through `run.load_model`, and the whole live path runs on a paced stream (`ArraySource`
with ``realtime``: chunks of 20 ms released by the clock, as a microphone delivers them; pink
noise with a slow swell, so no window is quiet): incremental log-mel, encoder, generator, PNG
encoding, the page's event, a real SSE client on loopback reading it. Per width:

- latency from the moment a window's last audio arrived to its picture being handed to the page:
  median and p95 (``--seconds`` of stream, default 60: 119 windows at hop 0.5 s);
- the share of windows dropped as stale at hop 0.5 s, and at a hop of 0.1 s (more windows than
  width 1.0 can make: the drop-stale rule at work, latency still bounded);
- the baseline in the same process: the model call alone (normalise + encoder + generator for one
  window), back to back and after 0.5 s idle as between hops, so latency / model shows what the
  live machinery adds;
- the front end: computing one hop's new frames incrementally against the whole window's log-mel.

Torch runs on ``--threads`` threads (default 1, as `s2i-model live`; 2 to compare).

``--minutes M`` adds one M-minute stream at width 1.0 and hop 0.5 s with the process RSS sampled
every 10 s (start after warm-up, max, end). Prints a table and writes bench/out/live.json.

    python bench/live.py [--seconds 60] [--widths 1.0,0.25,0.0625] [--minutes 10]
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


def random_run(folder: Path, emb: int, width: float) -> Path:
    import torch

    from s2i_model import checkpoint
    from s2i_model.models.s2i.config import AutoencoderConfig
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
    from s2i_model.models.s2i import AUTOENCODER, TRANSLATOR
    torch.manual_seed(0)
    cfg = AutoencoderConfig(data="unused", run=str(folder), emb=emb, width=width, epochs=1)
    checkpoint.save(folder / AUTOENCODER, {"model": AudioAutoencoder(emb, width).state_dict(), "epoch": 1,
                                           "config": cfg.to_dict(), "normalizer": {"lo": -13.8, "hi": 4.0}})
    checkpoint.save(folder / TRANSLATOR, {"G": DenseGenerator(emb, width).state_dict(), "epoch": 1, "config": {},
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

    mel = np.log(np.abs(pink(1.0)[:100 * 128].reshape(100, 128)) + 1e-6).astype(np.float32)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="stream length per width")
    ap.add_argument("--widths", default="1.0,0.25,0.0625")
    ap.add_argument("--emb", type=int, default=512)
    ap.add_argument("--minutes", type=float, default=0.0, help="also an RSS run this long at width 1.0 (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, as s2i-model live --threads (default 1)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from s2i_model.run import load_model

    res = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg_start": os.getloadavg(),
           "emb": args.emb, "front_end": front_end(), "widths": {}}
    print(f"front end, one hop of new frames: {res['front_end']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for w in [float(x) for x in args.widths.split(",") if x.strip()]:  # --widths "": the --minutes run alone
            model = load_model(random_run(Path(tmp) / f"w{w}", args.emb, w), "cpu")
            row = {"model_alone": model_alone(model), "model_after_hop_idle": model_alone(model, 20, 0.5),
                   "hop_0.5": stream(model, args.seconds, 0.5), "hop_0.1": stream(model, min(args.seconds, 20.0), 0.1)}
            row["latency_over_model"] = round(row["hop_0.5"]["latency_median_ms"] / row["model_alone"]["median_ms"], 2)
            row["latency_over_model_after_idle"] = round(row["hop_0.5"]["latency_median_ms"]
                                                         / row["model_after_hop_idle"]["median_ms"], 2)
            res["widths"][str(w)] = row
            h = row["hop_0.5"]
            print(f"width {w:<6} E {args.emb}: latency median {h['latency_median_ms']} ms, p95 {h['latency_p95_ms']} ms "
                  f"(model alone {row['model_alone']['median_ms']} ms back to back, x{row['latency_over_model']}; "
                  f"{row['model_after_hop_idle']['median_ms']} ms after 0.5 s idle, x{row['latency_over_model_after_idle']}); dropped at hop "
                  f"0.5 s {h['dropped']}/{h['windows']}, at hop 0.1 s {row['hop_0.1']['dropped']}/{row['hop_0.1']['windows']} "
                  f"(p95 {row['hop_0.1']['latency_p95_ms']} ms)", flush=True)
            del model
        if args.minutes > 0:
            model = load_model(random_run(Path(tmp) / "long", args.emb, 1.0), "cpu")
            long = stream(model, args.minutes * 60, 0.5, rss_every=10.0)
            mem = [m for _, m in long["rss_mb"]]
            long["rss_start_mb"], long["rss_max_mb"], long["rss_end_mb"] = mem[0], max(mem), mem[-1]
            res["long"] = long
            print(f"{args.minutes:g} min at width 1.0: RSS {mem[0]:.0f} MB at start, {max(mem):.0f} MB max, "
                  f"{mem[-1]:.0f} MB at the end; dropped {long['dropped']}/{long['windows']}; latency p95 "
                  f"{long['latency_p95_ms']} ms", flush=True)
    res["load_avg_end"] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2))
    print(OUT)


if __name__ == "__main__":
    main()
