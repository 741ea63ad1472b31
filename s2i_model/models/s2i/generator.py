"""Dense generator (SPEC 3.2): embedding → 3x96x96 through six dense blocks, torchvision-style.

Each block: x1 = f(x), x2 = f(x1), x3 = f(concat(x1, x2)); its transition reads
concat(x1, x2, x3). Dropout2d after transitions 0-5 stays on at test time, so one sound gives
many different pictures.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from s2i_model.nets.blocks import ConvUnit, scaled, xavier_init

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


def narrow_dropout(p: float, width: float) -> float:
    """The Dropout2d rate whose noise in a layer ``width`` times as wide matches p's at width 1.0.

    Dropout2d removes whole channels; at width 1/16 a transition has 8-32 channels instead of
    112-512, and the same p makes each layer's output about √16 = 4 times as noisy relative to its
    signal. Matching the odds of a channel being dropped to the width, p'/(1-p') = w·p/(1-p),
    keeps the paper's noise per unit of signal (0.15 → 0.011 at width 1/16)."""
    if p <= 0 or width >= 1.0:
        return p
    odds = width * p / (1 - p)
    return odds / (1 + odds)


class DenseGenerator(nn.Module):
    """``narrow``: the two adaptations for widths below the paper's (None: on exactly when width < 1;
    docs/training.md, "The generator below width 1"): every dropout rate scaled by
    `narrow_dropout`, and no BatchNorm before the RGB tanh. At width 1.0 the network is the
    paper's code (SPEC 3.2), parameter for parameter. A checkpoint records which it was."""

    def __init__(self, emb: int = 512, width: float = 1.0, test_time_dropout: bool = True,
                 narrow: bool | None = None) -> None:
        super().__init__()
        self.narrow = width < 1.0 if narrow is None else bool(narrow)

        def drop(p: float) -> float:
            return narrow_dropout(p, width) if self.narrow else p

        c0, k0, p0 = START
        c0 = scaled(c0, width)
        layers = [("transition0", ConvUnit(emb, c0, k0, transposed=True, dropout=drop(p0),
                                           always_dropout=test_time_dropout))]
        cin = c0
        for i, (chans, (cout, k, s, p, dropout)) in enumerate(STAGES):
            block = _DenseBlock(cin, tuple(scaled(c, width) for c in chans))
            last = i == len(STAGES) - 1
            cout = cout if last else scaled(cout, width)
            layers.append((f"denseblock{i + 1}", block))
            layers.append((f"transition{i + 1}", ConvUnit(
                block.out_channels, cout, k, s, p, transposed=True, act="tanh" if last else "relu",
                dropout=drop(dropout), always_dropout=test_time_dropout, norm=not (last and self.narrow))))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))
        xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])  # [B, 3, 96, 96] in [-1, 1]
