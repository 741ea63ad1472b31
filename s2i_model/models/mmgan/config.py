"""The multimodal-feature GAN's settings (paper 004, pix2pix's where the paper is silent)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from s2i_model.config import Grids, Runtime


@dataclass
class MmganConfig(Runtime, Grids):
    """The paper names Adam for the multimodal layers and pix2pix for the cGANs, a D loss weight of
    0.001, and no epoch counts, batch size or rates: pix2pix's (Adam 2e-4, β1 0.5, λ_L1 100, 200
    epochs) are used for the cGANs, Adam's defaults (1e-3, 0.9) for stages 1-2."""

    model: ClassVar[str] = "mmgan"
    data: str = "data/vegas5"
    run: str = "runs/mmgan"
    width: float = 1.0  # channel multiplier (1.0: the widths in nets/mmgan.py)
    epochs_features: int = 30
    epochs_multimodal: int = 30
    epochs: int = 200  # the cGAN stage (pix2pix's 200)
    batch_size: int = 64
    lr_features: float = 1e-3
    lr_multimodal: float = 1e-3
    lr: float = 2e-4  # both cGANs' G and D (pix2pix)
    beta1: float = 0.5  # pix2pix's, for the cGANs
    d_weight: float = 0.001  # the paper's "penalty of 0.001 on the discriminator loss"
    l1_weight: float = 100.0  # pix2pix's λ
    grid_every: int = 10  # cGAN epochs between image grids of fixed validation sounds (ours)

    def to_dict(self) -> dict:
        return {"model": self.model, **dataclasses.asdict(self)}

    def stage_epochs(self, stage: str) -> int:
        return {"features": self.epochs_features, "multimodal": self.epochs_multimodal, "gan": self.epochs}[stage]
