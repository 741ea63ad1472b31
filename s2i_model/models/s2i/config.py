"""S2I's settings: typed defaults with the paper's values (SPEC 4), saved in every checkpoint.
Settings the paper leaves open are marked (ours)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from s2i_model.config import Grids, Runtime


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

    def check(self) -> None:
        """Settings a command line can get wrong, refused before anything trains (one line)."""
        if self.d_schedule not in ("step", "epoch"):
            raise ValueError(f"--d-schedule must be step or epoch, not {self.d_schedule!r}")
        if self.informativity and not os.path.isfile(os.path.join(self.informativity, "informativity.pt")):
            raise ValueError(f"{self.informativity} holds no informativity classifiers: "
                             "run s2i-model train-informativity first")
