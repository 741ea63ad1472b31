from __future__ import annotations

from dataclasses import dataclass

from s2i_model.config import Runtime


@dataclass
class TinyConfig(Runtime):
    data: str = "data/vegas5"
    run: str = "runs/tiny"
    side: int = 12
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-2
