"""Informativity classifier (SPEC 3.4): one binary classifier per class, 96x96 image → log p."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .blocks import ConvUnit, xavier_init

# (out channels, kernel, dropout), all stride 2: 96 → 46 → 22 → 10 → 4 → 1
LAYERS = ((12, 5, 0.1), (32, 3, 0.2), (32, 3, 0.3), (32, 3, 0.4), (32, 3, 0.5))


class InformativityClassifier(nn.Module):
    """Binary by default (SPEC 3.4); with ``classes`` = the data set's classes the same network is
    the real-frame classifier behind the proxy metrics."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        layers, cin = [], 3
        for i, (cout, k, p) in enumerate(LAYERS):
            layers.append((f"conv{i + 1}", ConvUnit(cin, cout, k, 2, dropout=p)))
            cin = cout
        self.features = nn.Sequential(OrderedDict(layers))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                                  nn.Dropout(0.5), nn.Linear(32, classes), nn.LogSoftmax(dim=1))
        xavier_init(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))
