"""AIVAE's settings (paper 002, section 5.2): typed defaults saved in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from s2i_model.config import Grids, Runtime

BALANCES = ("paper", "sum")  # AivaeConfig.balance; a checkpoint without the field: "sum"


@dataclass
class AivaeConfig(Runtime, Grids):
    """AIVAE with the paper's settings (section 5.2): latent 64, Adam 1e-3, batch 128, 100 epochs."""

    model: ClassVar[str] = "aivae"
    data: str = "data/vegas5"
    run: str = "runs/aivae"
    latent: int = 64
    width: float = 1.0  # channel multiplier (1.0: the paper's widths)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    beta1: float = 0.9  # Adam's default: the paper names Adam and no betas
    grid_every: int = 10  # epochs between image grids of fixed validation sounds (ours)
    # reconstruction : KL (: α·GAN) weighting (docs/models.md, "Balance"): "paper" scales the
    # per-picture sum of −log p(i|f) by 784/(C·H·W), the paper's 28×28 sum, so the terms keep the
    # paper's ratios; "sum" sums every value (35× the weight on 96×96×3; every run before the option)
    balance: str = "paper"

    def check(self) -> None:
        """Settings a command line can get wrong, refused before anything trains (one line)."""
        if self.balance not in BALANCES:
            raise ValueError(f"--balance must be {' or '.join(BALANCES)}, not {self.balance!r}")

    def to_dict(self) -> dict:
        return {"model": self.model, **dataclasses.asdict(self)}
