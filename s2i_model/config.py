"""Training configuration: typed defaults with the paper's values (SPEC 4), saved in every
checkpoint. Settings the paper leaves open are marked (ours)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(kw_only=True)
class Runtime:
    """How a run reads its data and uses the machine (ours), the same for every trainer. Keyword-only:
    a config is built by name, so these never take the place of a model setting given by position."""

    seed: int = 0
    workers: int = 2  # DataLoader worker processes reading shards
    shuffle_buffer: int = 1000  # samples
    shard_url: str = ""  # open shards through this template, e.g. "pipe:curl -s https://host/b/{shard}"
    cache_dir: str = ""  # keep remote shards here after their first read
    skip_bad_samples: bool = False  # count, log and skip damaged samples/shards instead of stopping
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 (the papers) | bf16 | fp16 (autocast; fp16 with loss scaling, GPU only)
    sync_bn: bool = True  # under DDP on GPUs, BatchNorm statistics over the global batch, as in one process
    data_on_device: str = "auto"  # auto | on | off: a split that fits the budget is held in device memory
    max_steps: int = 0  # stop an epoch after this many batches (0: all); for smoke tests

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class Grids:
    """The image grids of fixed validation sounds a picture-drawing trainer saves (ours); each trainer
    sets its own grid_every, whose epochs differ by model."""

    grid_sounds_per_class: int = 2
    grid_images: int = 4  # generated images per sound in the grid


def from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
