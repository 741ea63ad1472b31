"""Training throughput: stage 1 and stage 2 samples/s, and the shard loader on its own.

The loader must deliver far more than one training process consumes (target: 10x on this CPU),
so that data never starves the model; on a GPU the per-worker rate tells how many workers a GPU
needs. Runs on the built-in synthetic data (made and built here unless --data is given).

    python bench/train.py [--data BUILD] [--width 0.25] [--emb 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_model.data import Normalizer, ShardStream, loader
from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator, Discriminator
from s2i_model.device import pick_device


def toy_build(tmp: Path) -> Path:
    from s2i_data.synth import synth

    synth(tmp / "videos", videos_per_class=12, seed=0)
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(tmp / "videos"), "--classes",
                    "baby,dog,rail,fireworks,water", "--out", str(tmp / "shards"), "--shard-size", "16",
                    "--no-progress"], check=True, capture_output=True)
    return tmp / "shards"


def loader_rate(data: Path, workers: int, batch: int, epochs: int = 3) -> float:
    ds = ShardStream(data, "train", Normalizer.from_build(data), buffer=256)
    n, t = 0, time.perf_counter()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for mel, _, _, _ in loader(ds, batch, workers):
            n += mel.shape[0]
    return n / (time.perf_counter() - t)


def step_rate(fn, batch: int, steps: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--emb", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s2i-bench-train-"))
    try:
        data = args.data or toy_build(tmp)
        dev = pick_device("auto")
        torch.manual_seed(0)
        b = args.batch
        mel = torch.rand(b, 1, 128, 100, device=dev) * 2 - 1
        img = torch.rand(b, 3, 96, 96, device=dev) * 2 - 1
        ae = AudioAutoencoder(args.emb, args.width).to(dev)
        opt = torch.optim.SGD(ae.parameters(), lr=0.05, momentum=0.9)

        def ae_step():
            loss = F.mse_loss(ae(mel)[0], mel)
            opt.zero_grad()
            loss.backward()
            opt.step()

        G, D = DenseGenerator(args.emb, args.width).to(dev), Discriminator(args.emb, args.width).to(dev)
        og, od = torch.optim.SGD(G.parameters(), lr=0.1, momentum=0.5), torch.optim.SGD(D.parameters(), lr=0.1, momentum=0.5)
        z = torch.rand(b, args.emb, device=dev) * 2 - 1

        def gan_step():  # one G update plus a fifth of a D update, as with n_gd = 5
            fake = G(z)
            loss = F.mse_loss(fake, img) + 0.1 * torch.mean((1 - D(fake, z)) ** 2)
            og.zero_grad()
            loss.backward()
            og.step()
            gan_step.n += 1
            if gan_step.n % 5 == 0:
                ld = F.mse_loss(D(img, z), torch.ones(b, device=dev)) + F.mse_loss(D(fake.detach(), z), -torch.ones(b, device=dev))
                od.zero_grad()
                ld.backward()
                od.step()
        gan_step.n = 0

        stage1 = step_rate(ae_step, b, args.steps)
        stage2 = step_rate(gan_step, b, args.steps)
        per_worker = loader_rate(data, 0, b)
        two = loader_rate(data, 2, b)
        print(f"device {dev}, torch threads {torch.get_num_threads()}, width {args.width}, E {args.emb}, batch {b}")
        print(f"stage 1 (autoencoder) training: {stage1:8.1f} samples/s")
        print(f"stage 2 (G + D/5) training:     {stage2:8.1f} samples/s")
        print(f"loader, in-process (1 worker):  {per_worker:8.1f} samples/s")
        print(f"loader, 2 worker processes:     {two:8.1f} samples/s")
        need = max(stage1, stage2)
        print(f"loader / fastest stage: {two / need:.1f}x with 2 workers (target >= 10x); "
              f"workers a trainer at this rate needs: {need / per_worker:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
