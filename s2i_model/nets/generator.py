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

BLOCKS = ((512, 512, 512), (512, 416, 352), (304, 256, 224), (192, 176, 160), (144, 128, 112), (96, 80, 64))
# Transition after each block: (kernel, stride, padding); 2→4→6 then doubling 6→12→24→48→96.
TRANSITIONS = ((3, 1, 0), (3, 1, 0), (4, 2, 1), (4, 2, 1), (4, 2, 1), (4, 2, 1))
TRANSITION_DROPOUT = (0.13, 0.11, 0.09, 0.07, 0.05)  # after transitions 1-5
START = (512, 2, 0.15)  # transition 0: channels, kernel, dropout


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
        for i, (chans, (k, s, p)) in enumerate(zip(BLOCKS, TRANSITIONS)):
            block = _DenseBlock(cin, tuple(scaled(c, width) for c in chans))
            last = i == len(BLOCKS) - 1
            cout = 3 if last else scaled(chans[2], width)
            layers.append((f"denseblock{i + 1}", block))
            layers.append((f"transition{i + 1}", ConvUnit(
                block.out_channels, cout, k, s, p, transposed=True, act="tanh" if last else "relu",
                dropout=0.0 if last else TRANSITION_DROPOUT[i], always_dropout=test_time_dropout)))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))
        xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])  # [B, 3, 96, 96] in [-1, 1]
