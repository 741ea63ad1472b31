"""Scale-out, in one run (ratios, not absolutes): build on a process pool vs Dask, DDP 1 vs 2 processes.

Build: the same synthetic corpus through `s2i-data build` with the local executor (1 and 2
workers), with ``--executor dask --workers 2`` (a LocalCluster the tool starts and stops), and
through an already-running LocalCluster (``--scheduler tcp://...``, started here once), which
separates the cluster's start-up from the per-shard overhead. Every build is a fresh output
folder and the whole command is timed (interpreter start, probe, plan, shards, manifests).

Training: ``torchrun --standalone --nproc-per-node N`` of train-autoencoder then
train-translator on that corpus's shards, N = 1 and 2, with the same total CPU threads
(OMP_NUM_THREADS = 2 for N = 1, 1 each for N = 2); samples/s of the last epoch from
metrics.jsonl (the global rate: samples of all ranks over rank 0's epoch time).

Configurations are interleaved within each repetition (so drift of a shared machine hits all
alike) and the best (fastest) repetition of each is reported. Figures go to OUT/scale.json.

    python bench/scale.py [--videos-per-class 24] [--repeats 2] [--train-repeats 2] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from s2i_data.synth import synth  # noqa: E402

CLASSES = "baby,dog,rail,fireworks,water"
SHARD_SIZE = 64  # a dozen shards for ~700 segments: enough units for 2 workers to share
TIMEOUT = 300


def env_with(**kw) -> dict:
    env = dict(os.environ)
    # the code of this checkout, whatever the venv's editable install points at
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in kw.items()})
    return env


def run(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env or env_with(), capture_output=True, text=True, timeout=TIMEOUT)
    dt = time.perf_counter() - t
    if p.returncode:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd[:6])} ...\n{tail}")
    return dt


# --------------------------------------------------------------------------- build


def build_once(root: Path, out: Path, workers: int, executor: str = "local", scheduler: str | None = None,
               limit: int = 0, shard_size: int = SHARD_SIZE) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root), "--classes", CLASSES,
           "--out", str(out), "--no-progress", "--shard-size", str(shard_size), "--workers", str(workers),
           "--executor", executor]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    if limit:
        cmd += ["--limit", str(limit)]
    secs = run(cmd)
    stats = json.loads((out / "stats.json").read_text())
    shard_secs = sum(json.loads(p.read_text())["seconds"] for p in (out / "_build" / "shards").glob("*.json"))
    if not stats["complete"]:
        raise RuntimeError(f"{out}: build incomplete, pending {stats['pending_shards']}")
    return {"seconds": round(secs, 3), "segments": stats["samples"], "shard_seconds": round(shard_secs, 3),
            "shards": sum(len(v) for v in stats["shards"].values())}


def bench_build(root: Path, work: Path, repeats: int) -> tuple[dict, dict]:
    from distributed import Client, LocalCluster

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           host="127.0.0.1")
    Client(cluster).close()  # connected: the scheduler and both workers are up
    cluster_start = time.perf_counter() - t
    configs = {
        "local-1": dict(workers=1),
        "local-2": dict(workers=2),
        "dask-2": dict(workers=2, executor="dask"),
        "dask-2-running": dict(workers=2, executor="dask", scheduler=cluster.scheduler_address),
    }
    runs: dict[str, list] = {k: [] for k in configs}
    try:
        for rep in range(repeats):
            for name, kw in configs.items():
                try:
                    r = build_once(root, work / name, **kw)
                except Exception as e:  # noqa: BLE001 - reported, the other figures still count
                    r = {"error": str(e)}
                    print(f"  build {name} #{rep + 1}: FAILED\n{e}", flush=True)
                else:
                    print(f"  build {name:15s} #{rep + 1}: {r['seconds']:6.2f} s, {r['segments']} segments, "
                          f"{r['segments'] / r['seconds']:6.1f} seg/s", flush=True)
                runs[name].append(r)
    finally:
        cluster.close()
    return runs, {"cluster_start_s": round(cluster_start, 3), "address": cluster.scheduler_address}


def best(rows: list[dict], key: str, largest: bool = False) -> dict | None:
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    return (max if largest else min)(ok, key=lambda r: r[key])


# --------------------------------------------------------------------------- training


def last_rate(run_dir: Path, stage: str) -> dict:
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if r["stage"] == stage]
    r = rows[-1]
    return {"samples_per_s": round(r["samples_per_s"], 2), "samples": r["samples"], "seconds": r["seconds"],
            "epoch": r["epoch"]}


def train_once(data: Path, run_dir: Path, nproc: int, epochs: int) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    threads = max(1, 2 // nproc)
    env = env_with(OMP_NUM_THREADS=threads)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                "-m", "s2i_model.cli"]
    common = ["--data", str(data), "--run-dir", str(run_dir), "--epochs", str(epochs), "--batch-size", "16",
              "--workers", "1", "--device", "cpu", "--optimizer", "adam"]
    out = {"nproc": nproc, "omp_threads_per_process": threads}
    out["autoencoder_wall_s"] = round(run(torchrun + ["train-autoencoder", *common, "--emb", "128", "--width", "0.0625"],
                                          env), 2)
    out["autoencoder"] = last_rate(run_dir, "autoencoder")
    out["translator_wall_s"] = round(run(torchrun + ["train-translator", *common], env), 2)
    out["translator"] = last_rate(run_dir, "translator")
    return out


def bench_train(data: Path, work: Path, repeats: int, epochs: int) -> dict:
    runs: dict[str, list] = {"ddp-1": [], "ddp-2": []}
    for rep in range(repeats):
        for n in (1, 2):
            try:
                r = train_once(data, work / f"run-{n}", n, epochs)
            except Exception as e:  # noqa: BLE001
                r = {"error": str(e)}
                print(f"  train N={n} #{rep + 1}: FAILED\n{e}", flush=True)
            else:
                print(f"  train N={n} #{rep + 1}: autoencoder {r['autoencoder']['samples_per_s']:6.1f} samples/s, "
                      f"translator {r['translator']['samples_per_s']:6.1f} samples/s", flush=True)
            runs[f"ddp-{n}"].append(r)
    return runs


def best_stage(rows: list[dict], stage: str) -> dict | None:
    ok = [r for r in rows if "error" not in r]
    return max((r[stage] for r in ok), key=lambda s: s["samples_per_s"]) if ok else None


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos-per-class", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2, help="repetitions of every build configuration")
    ap.add_argument("--train-repeats", type=int, default=2, help="repetitions of every training configuration")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-videos-per-class", type=int, default=12, help="videos per class in the training data")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    out = args.out.resolve()
    work = out / "scale"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = env_with()["PYTHONPATH"]  # for the Dask workers started here

    t0 = time.perf_counter()
    root = out / f"videos-{args.videos_per_class}"  # the same corpus bench/build.py makes (and reuses)
    synth(root, videos_per_class=args.videos_per_class, seed=0, min_seconds=4.0, max_seconds=10.0)
    n_videos = args.videos_per_class * len(CLASSES.split(","))
    print(f"corpus: {n_videos} videos (160x120, 4-10 s) in {root}, ready in {time.perf_counter() - t0:.1f} s; "
          f"machine: {os.cpu_count()} cores", flush=True)

    print(f"build: {args.repeats} repetitions of each configuration, shard size {SHARD_SIZE}", flush=True)
    bruns, cluster = bench_build(root, work / "build", args.repeats)
    print(f"  (the running LocalCluster took {cluster['cluster_start_s']:.2f} s to start)", flush=True)

    # training data: the same corpus, the first --train-videos-per-class videos of each class (a
    # smaller train split keeps the 8 training commands within the time budget), shards of 16
    data = work / "data"
    build_once(root, data, 2, limit=args.train_videos_per_class, shard_size=16)
    n_train = json.loads((data / "stats.json").read_text())["counts"]["train"]
    print(f"training: {args.train_repeats} repetitions, {args.epochs} epochs each, batch 16, width 0.0625, E 128, "
          f"1 loader worker per process, {sum(n_train.values())} train samples "
          f"({args.train_videos_per_class} videos per class)", flush=True)
    truns = bench_train(data, work / "train", args.train_repeats, args.epochs)

    # ---- summary
    b = {k: best(v, "seconds") for k, v in bruns.items()}
    summary: dict = {"build": {}, "train": {}}
    for k, r in b.items():
        if r:
            summary["build"][k] = {"seconds": r["seconds"], "segments": r["segments"],
                                   "segments_per_s": round(r["segments"] / r["seconds"], 2),
                                   "segments_per_shard_second": round(r["segments"] / r["shard_seconds"], 2)}
    sb = summary["build"]
    if "local-2" in sb:
        for k, label in (("dask-2", "dask_overhead_incl_startup_pct"), ("dask-2-running", "dask_overhead_excl_startup_pct")):
            if k in sb:
                summary[label] = round(100 * (sb[k]["seconds"] / sb["local-2"]["seconds"] - 1), 1)
    if "local-1" in sb and "local-2" in sb:
        summary["local_2_vs_1_speedup"] = round(sb["local-1"]["seconds"] / sb["local-2"]["seconds"], 3)
    if "dask-2" in sb and "dask-2-running" in sb:
        summary["dask_startup_in_build_s"] = round(sb["dask-2"]["seconds"] - sb["dask-2-running"]["seconds"], 2)
    for stage in ("autoencoder", "translator"):
        r1, r2 = best_stage(truns["ddp-1"], stage), best_stage(truns["ddp-2"], stage)
        summary["train"][stage] = {"ddp-1": r1, "ddp-2": r2}
        if r1 and r2:
            summary["train"][stage]["speedup_2_over_1"] = round(r2["samples_per_s"] / r1["samples_per_s"], 3)

    print(f"\n## build ({sb.get('local-2', {}).get('segments', '?')} segments, best of {args.repeats})")
    print(f"{'configuration':42s} {'seconds':>8s} {'seg/s':>8s} {'vs local-2':>11s}")
    names = {"local-1": "local executor, --workers 1", "local-2": "local executor, --workers 2",
             "dask-2": "dask, --workers 2 (LocalCluster per build)",
             "dask-2-running": "dask, --scheduler (running LocalCluster)"}
    for k, label in names.items():
        if k in sb:
            rel = f"{100 * (sb[k]['seconds'] / sb['local-2']['seconds'] - 1):+.1f} %" if "local-2" in sb else ""
            print(f"{label:42s} {sb[k]['seconds']:8.2f} {sb[k]['segments_per_s']:8.1f} {rel:>11s}")
        else:
            print(f"{label:42s} FAILED")
    print(f"Dask overhead over local-2: {summary.get('dask_overhead_incl_startup_pct', 'n/a')} % incl. cluster "
          f"start-up, {summary.get('dask_overhead_excl_startup_pct', 'n/a')} % excl. (target < 15 %); "
          f"a LocalCluster alone starts in {cluster['cluster_start_s']:.2f} s")
    print(f"\n## DDP training on CPU (samples/s of the last epoch, best of {args.train_repeats}; "
          f"total threads 2: N=1 x 2 threads, N=2 x 1 thread)")
    print(f"{'stage':14s} {'N=1':>8s} {'N=2':>8s} {'speed-up':>9s}")
    for stage, r in summary["train"].items():
        a = f"{r['ddp-1']['samples_per_s']:8.1f}" if r["ddp-1"] else "  FAILED"
        c = f"{r['ddp-2']['samples_per_s']:8.1f}" if r["ddp-2"] else "  FAILED"
        s = f"{r['speedup_2_over_1']:8.2f}x" if "speedup_2_over_1" in r else "      n/a"
        print(f"{stage:14s} {a} {c} {s}")

    total = time.perf_counter() - t0
    failed = [f"build {k}" for k, v in bruns.items() if any("error" in r for r in v)]
    failed += [f"train {k}" for k, v in truns.items() if any("error" in r for r in v)]
    result = {"machine": {"cpus": os.cpu_count(), "platform": sys.platform, "python": sys.version.split()[0]},
              "corpus": {"root": str(root), "videos": n_videos, "videos_per_class": args.videos_per_class},
              "settings": {"repeats": args.repeats, "train_repeats": args.train_repeats, "shard_size": SHARD_SIZE,
                           "epochs": args.epochs, "batch_size": 16, "train_videos_per_class": args.train_videos_per_class,
                           "train_samples": sum(n_train.values()), "width": 0.0625, "emb": 128,
                           "statistic": "best (fastest) repetition"},
              "cluster": cluster, "summary": summary, "build_runs": bruns, "train_runs": truns,
              "failed": failed, "total_seconds": round(total, 1)}
    (out / "scale.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out / 'scale.json'}; total {total:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
