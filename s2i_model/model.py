"""What a sound-to-image model offers the rest of s2i, so that evaluate, imagine, sample and report
take any model that offers it (every registered model's loader returns one: `s2i_model.models`).

- `SoundToImage`: a batch of sound windows (normalised log-mels) → n pictures each.
- `Trainer`: a config (with its build and run folder) → a run folder holding the trained model.
- `seeded_pictures`: n pictures per input drawn with a fixed seed, the one way every caller does it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SoundToImage(Protocol):
    device: torch.device
    build: dict  # the build it learnt from (`run.build_record`): its windows are the ones it hears

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """Normalised log-mels [B, 1, 128, frames] (on ``device``) → [B, n, 3, H, W] in [-1, 1]."""
        ...


class Trainer(Protocol):
    def __call__(self, cfg, log: Callable[[str], None] = print) -> dict:
        """Train (or resume) the run folder ``cfg.run`` from the build ``cfg.data``; the last state."""
        ...


def seeded_pictures(draw: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, n: int,
                    seed: int | None = 0, per_call: int | None = None) -> Iterator[torch.Tensor]:
    """n pictures per input, [k, n, ...] chunks of whole inputs in order.

    Each input is repeated n times and drawn (the generator's test-time dropout makes the copies
    differ); torch is seeded once with ``seed`` first (None: the caller's RNG goes on), so the same
    inputs, n and seed give the same pictures. ``per_call`` bounds the pictures per ``draw`` call
    (at least one whole input); None draws everything at once.
    """
    if seed is not None:
        torch.manual_seed(seed)
    step = len(inputs) if per_call is None else max(1, per_call // max(n, 1))
    for i in range(0, len(inputs), max(step, 1)):
        x = draw(inputs[i:i + step].repeat_interleave(n, 0))
        yield x.reshape(-1, n, *x.shape[1:])
