"""AIVAEGAN's settings (paper 002): AIVAE's, with the discriminator's rate and α."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from s2i_model.models.aivae.config import AivaeConfig


@dataclass
class AivaeganConfig(AivaeConfig):
    """AIVAEGAN: Adam 2e-4 for the generator and D, α = 2 (the paper's best, Table 5)."""

    model: ClassVar[str] = "aivaegan"
    run: str = "runs/aivaegan"
    lr: float = 2e-4
    lr_d: float = 2e-4
    alpha: float = 2.0  # weight of the reconstruction term; the paper tries 0.2, 0.5, 1, 2
