"""Sound2Scene's settings (paper 003): typed defaults saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from s2i_model.config import Grids, Runtime


@dataclass
class Sound2SceneConfig(Runtime, Grids):
    """Stage 3 keeps the paper's settings. The paper's frozen parts were trained by others (SwAV,
    IC-GAN) with settings that do not carry to a few thousand 96 px frames: SimCLR's NT-Xent at
    τ = 0.5 with Adam 1e-3 stands in for SwAV's LARS schedule, and IC-GAN's k = 50 neighbours
    (of 1.2 M ImageNet images) is a setting."""

    model: ClassVar[str] = "sound2scene"
    data: str = "data/vegas5"
    run: str = "runs/sound2scene"
    width: float = 1.0  # channel multiplier (1.0: the widths in nets/sound2scene.py)
    epochs_visual: int = 100
    epochs_generator: int = 100
    epochs: int = 50  # stage 3, the audio encoder (the paper's 50, with early stopping)
    batch_size: int = 64  # every stage (the paper's 64 for the audio encoder)
    lr_visual: float = 1e-3
    temperature: float = 0.5  # NT-Xent's τ (SimCLR's for small batches)
    crop_scale: float = 0.35  # smallest area of the random resized crop
    lr_g: float = 1e-4  # BigGAN / IC-GAN
    lr_d: float = 4e-4
    d_steps: int = 2  # D updates per G update (BigGAN)
    neighbours: int = 50  # IC-GAN's k
    lr: float = 1e-3  # stage 3 (paper)
    weight_decay: float = 1e-5  # stage 3 (paper)
    patience: int = 10  # stage 3: epochs without a better validation loss before it stops
    grid_every: int = 10  # epochs of stages 2 and 3 between image grids of fixed validation samples

    def to_dict(self) -> dict:
        return {"model": self.model, **dataclasses.asdict(self)}

    def stage_epochs(self, stage: str) -> int:
        return {"visual": self.epochs_visual, "generator": self.epochs_generator, "audio": self.epochs}[stage]
