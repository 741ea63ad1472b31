"""tiny's network, trainer and loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_model import checkpoint, run as run_folder
from s2i_model.data import Normalizer, ShardStream
from s2i_model.device import pick_device
from s2i_model.train.metrics import MetricsLog
from s2i_model.train.runtime import seed_everything, sole_writer

from s2i_tiny import MODEL
from s2i_tiny.config import TinyConfig


class Tiny(torch.nn.Module):
    def __init__(self, side: int, size: int) -> None:
        super().__init__()
        self.side, self.size = side, size
        self.linear = torch.nn.Linear(128, 3 * side * side)

    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        return mels.mean(dim=-1).flatten(1)  # [B, 1, 128, frames] → [B, 128]

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        small = torch.tanh(self.linear(self.embed(mels))).view(-1, 3, self.side, self.side)
        return F.interpolate(small, size=self.size, mode="bilinear", align_corners=False)


@sole_writer
def train(cfg: TinyConfig, log=print) -> dict:
    run = Path(cfg.run)
    path = run / MODEL.checkpoint
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    build = run_folder.open_build(cfg)
    norm = Normalizer.from_build(build)
    net = Tiny(cfg.side, build.record()["image_size"]).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    state = checkpoint.load(path, device) or {}
    start = int(state.get("epoch", 0))
    if state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    if start >= cfg.epochs:
        log(f"tiny already trained for {start} epochs in {run}: nothing to do")
        return state
    metrics = MetricsLog(run, "tiny", start)
    stream = ShardStream(build, "train", norm, cfg.seed)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers)
    for epoch in range(start, cfg.epochs):
        stream.set_epoch(epoch)
        total, n = 0.0, 0
        for mel, img, _, _ in loader:
            loss = F.mse_loss(net(mel.to(device)), img.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(mel), n + len(mel)
        state = {"model": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                 "config": dataclasses.asdict(cfg), "normalizer": norm.to_dict(), "build": build.record()}
        checkpoint.save(path, state)
        metrics.write({"epoch": epoch + 1, "mse": total / max(n, 1), "samples": n, "seconds": 0.0})
        log(f"tiny epoch {epoch + 1}/{cfg.epochs}: mse {total / max(n, 1):.4f}")
    metrics.close()
    return state


class TinyModel:
    """tiny as s2i's `model.SoundToImage`: every picture of a sound is the same (no noise)."""

    def __init__(self, net: Tiny, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.net, self.norm, self.device, self.build = net, norm, device, build

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        return self.net.embed(mels.to(self.device))

    @torch.no_grad()
    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        x = self.net(mels.to(self.device))
        return x[:, None].expand(-1, n, -1, -1, -1)


def load(run: run_folder.Run, device: torch.device) -> TinyModel:
    state = run.final(device)  # epoch and config checked by s2i
    from s2i_data import untrusted

    side = untrusted.number(state["config"].get("side"), f"{run.file}: config.side", lo=1, hi=96, integer=True)
    build = run_folder.build_record(state)
    net = checkpoint.build(lambda: Tiny(side, int(build["image_size"])), state.get("model"), f"{run.file}: model")
    norm = Normalizer(**untrusted.normaliser(state.get("normalizer"), f"{run.file}: normalizer"))
    return TinyModel(net.to(device).eval(), norm, device, build)
