"""Training samples/s on a GPU, per stage: streamed vs held on the device, fp32 vs bf16, eager vs
torch.compile, all in one run, with ratios against the fp32 streamed eager baseline of the stage.

    python bench/gpu.py [--data BUILD] [--width 1.0] [--emb 512] [--batch 64] [--steps 50]

Stage 1 is the autoencoder's training step; stage 2 a generator update (D frozen for its
adversarial term) with a discriminator update every n_gd = 5th step, as the trainers run them
(their `update`, `autocast`, `prepare_model`, `adversarial_loss`, resident data and stream).
Without --data it makes its own data: `s2i-data synth` + `s2i-data build` into a temporary
folder. Each configuration runs --warmup steps (torch.compile compiles there), then --steps
timed steps between two `torch.cuda.synchronize()`. The model TFLOP/s column is samples/s times
the counted multiply-adds of a training sample (`s2i-model describe --flops`) times 2.

On a machine without a GPU it runs on the CPU, to check the script (`--width 0.0625 --steps 5`);
torch.compile is skipped there. Writes bench/out/gpu.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data.readers import read_build_json, read_build_parquet
from s2i_model.train import resident
from s2i_model.models.s2i.config import TranslatorConfig
from s2i_model.data import Normalizer, ShardStream
from s2i_model.models.s2i.flops import training_macs
from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator, Discriminator
from s2i_model.device import pick_device
from s2i_model.train.runtime import autocast, grad_scaler, make_optimizer, prepare_model, update
from s2i_model.models.s2i.train_translator import adversarial_loss

REPO = Path(__file__).resolve().parents[1]
CLASSES = "baby,dog,rail,fireworks,water"
TRAIN = TranslatorConfig()  # n_gd, λ and the SGD settings of stage 2 are the trainer's defaults
COMPILE = {"both": (False, True), "eager": (False,), "only": (True,)}
WHERE = {"both": ("stream", "device"), "stream": ("stream",), "device": ("device",)}
VEGAS_TRAIN = 39_200  # 80 % of VEGAS's 49k pairs: the epoch the docs size things by


def make_build(tmp: Path, videos_per_class: int, workers: int) -> Path:
    def run(*args):
        r = subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"error: s2i-data {args[0]} failed: {(r.stderr or r.stdout).strip().splitlines()[-1]}")

    run("synth", str(tmp / "videos"), "--videos-per-class", str(videos_per_class), "--workers", str(workers))
    # small shards, so that every loader worker gets some
    run("build", "--root", str(tmp / "videos"), "--classes", CLASSES, "--out", str(tmp / "shards"),
        "--shard-size", "16", "--no-progress", "--workers", str(workers))
    return tmp / "shards"


def full_batches(ds: ShardStream, held, batch: int, workers: int):
    """Endless batches of exactly ``batch`` samples, epoch after epoch, streamed or from device
    memory as the trainers draw them. Each loader worker's last batch of an epoch is short; those
    are joined up, so every timed step has one shape (torch.compile compiles again for each new
    batch size) and no sample is dropped. Streaming restarts its workers every epoch, as the
    trainers do: on a small set that weighs more than on a real one."""
    carry = None
    for epoch in itertools.count():
        ds.set_epoch(epoch)
        for mel, img, _, keys in resident.batches(ds, held, batch, workers):
            part = (mel, img, list(keys))
            if carry is None and len(part[2]) == batch:
                yield part
                continue
            carry = part if carry is None else (
                *(None if a is None else torch.cat([a, b]) for a, b in zip(carry[:2], part[:2])), carry[2] + part[2])
            while carry is not None and len(carry[2]) >= batch:
                yield (*(None if a is None else a[:batch] for a in carry[:2]), carry[2][:batch])
                rest = carry[2][batch:]
                carry = (*(None if a is None else a[batch:] for a in carry[:2]), rest) if rest else None


def contiguous_if(compiled: bool, model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile gets the default layout: on torch 2.11 + CUDA 13 (H200, 2026-11-30) inductor's
    backward of the channels_last convolutions fails its own stride check (``assert_size_stride``
    on the weight gradient of a 2×2 / 3×3 convolution), for both stages."""
    return model.to(memory_format=torch.contiguous_format) if compiled else model


def stage1(emb: int, width: float, device, precision: str, compiled: bool, **_):
    """train_autoencoder's step."""
    model = contiguous_if(compiled, prepare_model(AudioAutoencoder(emb, width), device)).train()
    opt = make_optimizer(model.parameters(), "sgd", 0.05, 0.9, 1e-3)
    scaler = grad_scaler(device, precision)
    run = torch.compile(model) if compiled else model
    steps = itertools.count()

    def step(b) -> int:
        mel = b[0].to(device, non_blocking=True)
        with autocast(device, precision):
            recon, _ = run(mel)
            loss = F.mse_loss(recon.float(), mel)
        update(opt, loss, "autoencoder", 0, next(steps), None, scaler)
        loss.item()  # the trainer's running loss: one host sync a step, as there
        return mel.shape[0]

    return step


def stage2(emb: int, width: float, device, precision: str, compiled: bool, table: torch.Tensor,
           index: dict[str, int], **_):
    """train_translator's step: a G update, D frozen; every n_gd-th step a D update."""
    G = contiguous_if(compiled, prepare_model(DenseGenerator(emb, width), device)).train()
    D = contiguous_if(compiled, prepare_model(Discriminator(emb, width), device)).train()
    opt_g = make_optimizer(G.parameters(), "sgd", TRAIN.lr_g, TRAIN.momentum_g, TRAIN.adam_lr)
    opt_d = make_optimizer(D.parameters(), "sgd", TRAIN.lr_d, TRAIN.momentum_d, TRAIN.adam_lr)
    scaler_g, scaler_d = grad_scaler(device, precision), grad_scaler(device, precision)
    G, D = (torch.compile(G), torch.compile(D)) if compiled else (G, D)
    g_steps = itertools.count(1)

    def step(b) -> int:
        _, real, keys = b
        z = table[[index[k] for k in keys]]
        real = real.to(device, non_blocking=True)
        with autocast(device, precision):
            fake = G(z)
            pixel = F.mse_loss(fake.float(), real)
            adv = adversarial_loss(D, fake, z)
        loss_g = pixel + TRAIN.lam * adv  # L_ma's history carries no gradient: the batch term's cost
        n = next(g_steps)
        update(opt_g, loss_g, "generator", 0, n, None, scaler_g)
        if n % TRAIN.n_gd == 0:
            with autocast(device, precision):
                d_real, d_fake = D(torch.cat([real, fake.detach()]), torch.cat([z, z])).float().chunk(2)
                loss_d = F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, -torch.ones_like(d_fake))
            update(opt_d, loss_d, "discriminator", 0, n, None, scaler_d)
            loss_d.item()
        pixel.item(), adv.item(), loss_g.item()  # the trainer's running sums
        return real.shape[0]

    return step


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, batches, warmup: int, steps: int, device) -> tuple[float, float]:
    """samples/s and ms a step over ``steps`` steps after ``warmup``."""
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        n += step(next(batches))
    sync(device)
    seconds = time.perf_counter() - t
    return n / seconds, 1000 * seconds / steps


def skip_reason(device, precision: str, compiled: bool) -> str | None:
    if compiled and device.type != "cuda":
        return "torch.compile on a CPU: inductor builds C++ kernels for minutes and tells nothing about a GPU"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"bf16 on {torch.cuda.get_device_name(device)}: not supported (Ampere or newer)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="an s2i-data build (e.g. VEGAS); default: a synthetic one made here")
    ap.add_argument("--videos-per-class", type=int, default=16, help="size of the synthetic set")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--emb", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="timed steps (stage 2: rounded up to a multiple of n_gd)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (stage 2: a multiple of n_gd)")
    ap.add_argument("--workers", type=int, default=4, help="loader worker processes when streaming")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--stages", default="1,2")
    ap.add_argument("--compile", choices=list(COMPILE), default="both", help="eager, compiled or both")
    ap.add_argument("--where", choices=list(WHERE), default="both", help="streamed, held on the device or both")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "gpu.json")
    args = ap.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU")
    stages = [int(s) if s.strip() in ("1", "2") else 0 for s in args.stages.split(",")]
    if not stages or 0 in stages:
        sys.exit(f"error: --stages takes 1, 2 or 1,2, not {args.stages!r}")
    if device.type != "cuda":
        print("no GPU: running on the CPU to check the script; these figures say nothing about a GPU")
    tmp = Path(tempfile.mkdtemp(prefix="s2i-bench-gpu-"))
    try:
        if args.data:
            data = args.data
            try:
                read_build_json(data)
            except (OSError, ValueError):
                sys.exit(f"error: {data} holds no s2i-data build (no stats.json)")
        else:
            t = time.perf_counter()
            data = str(make_build(tmp, args.videos_per_class, max(1, min(args.workers, 8))))
            print(f"synthetic build ({args.videos_per_class} videos a class) in {time.perf_counter() - t:.0f} s")
        results = run_all(args, device, data, stages)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written: {args.out}")


def run_all(args, device, data: str, stages: list[int]) -> dict:
    norm = Normalizer.from_build(data)
    ds = ShardStream(data, "train", norm, shuffle=True)
    man = read_build_parquet(data, columns=["key", "split"])
    keys = [k for k, s in zip(man["key"], man["split"]) if s == "train"]
    index = {k: i for i, k in enumerate(keys)}
    # stage 2 reads cached embeddings by key: random ones cost the same as the encoder's
    table = (torch.rand(len(keys), args.emb) * 2 - 1).to(device)
    macs = training_macs(args.emb, args.width, TRAIN.n_gd, TRAIN.lam)
    per_sample = {1: macs["stage1_autoencoder"]["counted_macs"], 2: macs["stage2_translator"]["counted_macs"]}
    n_gd = TRAIN.n_gd
    head = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            # PyTorch's default: cuDNN convolutions in "fp32" run on TF32 tensor cores (Ampere+)
            "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
            "cpu_threads": torch.get_num_threads(),
            "settings": {"data": data if args.data else f"synthetic, {args.videos_per_class} videos a class",
                         "train_samples": len(keys), "batch": args.batch, "batches_per_epoch": len(keys) / args.batch,
                         "width": args.width, "emb": args.emb, "warmup": args.warmup, "steps": args.steps,
                         "loader_workers": args.workers, "n_gd": n_gd},
            "macs_per_training_sample": {"stage1": per_sample[1], "stage2": per_sample[2]}}
    print(f"device {head['device']}, torch {torch.__version__}, width {args.width}, E {args.emb}, batch {args.batch}, "
          f"{len(keys)} train samples ({len(keys) / args.batch:.1f} batches an epoch), {args.workers} loader workers")
    if device.type == "cuda":
        print(f"fp32 convolutions on TF32 tensor cores: {torch.backends.cudnn.allow_tf32} (cudnn.allow_tf32)")
    if len(keys) < 20 * args.batch:
        print(f"note: streaming restarts its loader workers every epoch (every {len(keys) / args.batch:.1f} steps "
              f"here, every ~{VEGAS_TRAIN // args.batch} on VEGAS): give --data BUILD of a real set for streamed "
              "figures that carry over")
    rows = []
    for stage in stages:
        make = stage1 if stage == 1 else stage2
        warmup, steps = args.warmup, args.steps
        if stage == 2:  # whole D cycles, so every timed window holds steps / n_gd D updates
            warmup = max(n_gd, -(-warmup // n_gd) * n_gd)
            steps = -(-steps // n_gd) * n_gd
        log = []
        held = resident.hold("on", {"train": ds}, device, mel=stage == 1, image=stage == 2, workers=args.workers,
                             log=log.append)["train"]
        for line in log:
            print(f"stage {stage}: {line}")
        for compiled, precision in itertools.product(COMPILE[args.compile], ("fp32", "bf16")):
            reason = skip_reason(device, precision, compiled)
            if reason:
                print(f"stage {stage} {precision} {'compile' if compiled else 'eager'}: skipped: {reason}")
            step = None
            for where in WHERE[args.where]:
                row = {"stage": stage, "data": where, "precision": precision, "compile": compiled}
                if reason is None:
                    batches = full_batches(ds, held if where == "device" else None, args.batch, args.workers)
                    try:
                        step = step or make(args.emb, args.width, device, precision, compiled, table=table, index=index)
                        row["samples_per_s"], row["ms_per_step"] = timed(step, batches, warmup, steps, device)
                        row["model_tflops"] = row["samples_per_s"] * per_sample[stage] * 2 / 1e12
                    except Exception as e:  # one configuration that cannot run here (compile bugs included)
                        row["skipped"] = f"{type(e).__name__}: " + (str(e).strip().splitlines() or [""])[0][:200]
                    finally:
                        batches.close()  # a streamed loader's workers end here
                else:
                    row["skipped"] = reason
                base = baseline(rows + [row], stage)
                if base and "samples_per_s" in row:
                    row["vs_baseline"] = row["samples_per_s"] / base
                rows.append(row)
                if reason is None:
                    print_row(row)
        del held
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows)
    return {**head, "results": rows}


def baseline(rows: list[dict], stage: int) -> float | None:
    """The stage's fp32 eager streamed row; with --where device, its fp32 eager device row."""
    for where in ("stream", "device"):
        for r in rows:
            if (r["stage"], r["data"], r["precision"], r["compile"]) == (stage, where, "fp32", False):
                return r.get("samples_per_s")
    return None


def print_row(row: dict) -> None:
    name = f"stage {row['stage']} {row['data']:<6} {row['precision']} {'compile' if row['compile'] else 'eager  '}"
    if "skipped" in row:
        print(f"{name}: skipped: {row['skipped']}", flush=True)
        return
    print(f"{name}: {row['samples_per_s']:8.1f} samples/s, {row['ms_per_step']:.1f} ms a step", flush=True)


def print_table(rows: list[dict]) -> None:
    print()
    print("| stage | data | precision | compile | samples/s | ms/step | model TFLOP/s | vs fp32 stream eager |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['stage']} | {r['data']} | {r['precision']} | {'yes' if r['compile'] else 'no'} "
                  f"| skipped | | | |")
            continue
        ratio = f"{r['vs_baseline']:.2f}×" if r.get("vs_baseline") else "–"
        print(f"| {r['stage']} | {r['data']} | {r['precision']} | {'yes' if r['compile'] else 'no'} "
              f"| {r['samples_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['model_tflops']:.3g} | {ratio} |")


if __name__ == "__main__":
    main()
