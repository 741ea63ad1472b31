"""What every picture-drawing trainer shares: a discriminator frozen for the generator's update, and
the image grids of fixed validation sounds drawn as training goes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from s2i_data.readers import Build

from s2i_model.config import Grids
from s2i_model.data import Normalizer, ShardStream, tensor_to_image
from s2i_model.grid import save_grid
from s2i_model.model import seeded_pictures


@contextlib.contextmanager
def frozen(D: torch.nn.Module):
    """D as Algorithm 1 has it for G's update ("with discriminator D frozen"): its weights take no
    gradient, and it runs in evaluation mode (BatchNorm with running statistics, no dropout).

    In training mode D's last layer, conv → BatchNorm(1 channel) → tanh, would normalise the
    scores over the batch of G's pictures alone: their pre-tanh mean is then β whatever G draws,
    and the adversarial term could only reshuffle scores within a batch, never raise them."""
    was_training = D.training
    flags = [p.requires_grad for p in D.parameters()]
    D.eval()
    for p in D.parameters():
        p.requires_grad_(False)
    try:
        yield D
    finally:
        D.train(was_training)
        for p, f in zip(D.parameters(), flags):
            p.requires_grad_(f)


def grid_sounds(cfg: Grids, build: Build, norm: Normalizer) -> list[tuple]:
    """The first few validation sounds of each class (by key): (key, frame, mel, class)."""
    per: dict[int, list[tuple]] = {}
    for mel, img, c, key in sorted(ShardStream(build, "val", norm, shuffle=False), key=lambda s: s[3]):
        if len(per.setdefault(c, [])) < cfg.grid_sounds_per_class:
            per[c].append((key, img, mel, c))
    return [r for c in sorted(per) for r in per[c]]


@torch.no_grad()
def draw_grid(G, rows: list[tuple], k: int, device, path: Path) -> Path:
    was_training = G.training
    G.eval()  # BatchNorm in inference mode; dropout stays on by design
    out = []
    # the same dropout noise at every epoch, and the training RNG left untouched (resume)
    with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
        z = torch.stack([z for _, _, z, _ in rows]).to(device)
        pictures = seeded_pictures(G, z, k, seed=0, per_call=k)
        for (key, real, _, _), gen in zip(rows, pictures):
            out.append((key, tensor_to_image(real) if real is not None else None, list(gen[0].cpu())))
    G.train(was_training)
    return save_grid(out, path)
