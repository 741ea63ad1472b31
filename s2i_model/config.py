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


@dataclass
class AutoencoderConfig(Runtime):
    data: str = "data/vegas5"  # an s2i-data build
    run: str = "runs/emb512"
    emb: int = 512  # embedding size E
    width: float = 1.0  # channel multiplier (1.0: the paper's network)
    epochs: int = 1000  # the authors' code ran 1,000-2,000
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    optimizer: str = "sgd"  # sgd (paper) | adam (ours: short CPU runs)
    adam_lr: float = 1e-3  # (ours) used when optimizer == "adam"


@dataclass
class TranslatorConfig(Runtime, Grids):
    data: str = "data/vegas5"
    run: str = "runs/emb512"  # must hold a finished autoencoder
    epochs: int = 4000  # the paper reports epochs 500-4000
    batch_size: int = 64
    lr_g: float = 0.1
    momentum_g: float = 0.5
    lr_d: float = 0.1
    momentum_d: float = 0.5
    optimizer: str = "sgd"  # sgd (paper) | adam (ours: short CPU runs)
    adam_lr: float = 1e-3  # (ours) used when optimizer == "adam", for G and D
    n_gd: int = 5  # generator updates per discriminator update
    d_schedule: str = "step"  # step: D once every n_gd G steps | epoch: D through every n_gd-th epoch (ours)
    lam: float = 0.1  # weight of the moving-average adversarial loss
    ma_k: int = 10  # epochs in the moving average (ours: the paper does not give k)
    grid_every: int = 10  # epochs between image grids of fixed validation sounds
    informativity: str = ""  # folder of informativity classifiers: informativity per epoch (optional)
    informativity_every: int = 1  # epochs between informativity measurements
    informativity_samples: int = 4  # pictures per test sound for it
    # below width 1: auto/on: the generator's dropout scaled to the width and no BatchNorm before
    # the RGB tanh (nets/generator.py, docs/training.md); off: the paper's network at every width
    narrow_generator: str = "auto"


def from_dict(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
