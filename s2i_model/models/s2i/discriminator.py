"""Conditioned discriminator (SPEC 3.3): image and audio embedding → RC-score in [-1, 1]."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from s2i_model.nets.blocks import ConvUnit, scaled, xavier_init

# (out channels, kernel, stride) of conv1-12: 96 → 46 → 22 → ... → 2
LAYERS = ((96, 5, 2), (192, 3, 2)) + tuple((c, 3, 1) for c in (192, 208, 224, 240, 256, 256, 256, 256, 256, 256))
DROPOUT = 0.5


class Discriminator(nn.Module):
    def __init__(self, emb: int = 512, width: float = 1.0) -> None:
        super().__init__()
        if emb % 4:
            raise ValueError(f"the embedding size must be a multiple of 4 (it becomes E/4 x 2 x 2), got {emb}")
        layers, cin = [], 3
        for i, (cout, k, s) in enumerate(LAYERS):
            cout = scaled(cout, width)
            layers.append((f"conv{i + 1}", ConvUnit(cin, cout, k, s, bias=False, dropout=DROPOUT)))
            cin = cout
        self.features = nn.Sequential(OrderedDict(layers))
        self.score = ConvUnit(cin + emb // 4, 1, 2, bias=False, act="tanh")  # conv13
        xavier_init(self)

    def forward(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.features(image)  # [B, 256, 2, 2]
        cond = z.reshape(z.shape[0], -1, 2, 2)  # the embedding as (E/4) x 2 x 2
        return self.score(torch.cat([h, cond], 1)).flatten()  # [B]
