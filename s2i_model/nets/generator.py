"""Dense generator (SPEC 3.2): embedding → 3x96x96 through six dense blocks, torchvision-style.

Each block: x1 = f(x), x2 = f(x1), x3 = f(concat(x1, x2)); its transition reads
concat(x1, x2, x3). Dropout2d after transitions 0-5 stays on at test time, so one sound gives
many different pictures.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .blocks import ConvUnit, scaled, xavier_init

START = (512, 2, 0.15)  # transition 0, E x 1 x 1 → 512 x 2 x 2: channels, kernel, dropout
# One row per stage: the dense block's three layer widths, then the transition after it (out
# channels, kernel, stride, padding, dropout): 2→4→6, then doubling 6→12→24→48→96. The last
# transition draws the 3 RGB channels (tanh), never scaled by the width.
STAGES = (
    ((512, 512, 512), (512, 3, 1, 0, 0.13)),
    ((512, 416, 352), (352, 3, 1, 0, 0.11)),
    ((304, 256, 224), (224, 4, 2, 1, 0.09)),
    ((192, 176, 160), (160, 4, 2, 1, 0.07)),
    ((144, 128, 112), (112, 4, 2, 1, 0.05)),
    ((96, 80, 64), (3, 4, 2, 1, 0.0)),
)


class _DenseBlock(nn.Module):
    def __init__(self, cin: int, chans: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = chans
        self.layer1 = ConvUnit(cin, c1, 3, 1, 1, transposed=True)
        self.layer2 = ConvUnit(c1, c2, 3, 1, 1, transposed=True)
        self.layer3 = ConvUnit(c1 + c2, c3, 3, 1, 1, transposed=True)
        self.out_channels = c1 + c2 + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(torch.cat([x1, x2], 1))
        return torch.cat([x1, x2, x3], 1)


class DenseGenerator(nn.Module):
    def __init__(self, emb: int = 512, width: float = 1.0, test_time_dropout: bool = True) -> None:
        super().__init__()
        c0, k0, p0 = START
        c0 = scaled(c0, width)
        layers = [("transition0", ConvUnit(emb, c0, k0, transposed=True, dropout=p0, always_dropout=test_time_dropout))]
        cin = c0
        for i, (chans, (cout, k, s, p, dropout)) in enumerate(STAGES):
            block = _DenseBlock(cin, tuple(scaled(c, width) for c in chans))
            last = i == len(STAGES) - 1
            cout = cout if last else scaled(cout, width)
            layers.append((f"denseblock{i + 1}", block))
            layers.append((f"transition{i + 1}", ConvUnit(
                block.out_channels, cout, k, s, p, transposed=True, act="tanh" if last else "relu",
                dropout=dropout, always_dropout=test_time_dropout)))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))
        xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])  # [B, 3, 96, 96] in [-1, 1]
