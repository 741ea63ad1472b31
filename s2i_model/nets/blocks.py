"""Small shared pieces: conv → BatchNorm → activation (→ dropout), width scaling, init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def scaled(channels: int, width: float) -> int:
    """Hidden channel count under the width multiplier (SPEC 4): rounded, at least 8."""
    return channels if width == 1.0 else max(8, int(round(channels * width)))


class StochasticDropout2d(nn.Module):
    """Dropout2d that stays on at test time when ``always`` (the generator's source of diversity)."""

    def __init__(self, p: float, always: bool = False) -> None:
        super().__init__()
        self.p = p
        self.always = always

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, training=self.training or self.always)

    def extra_repr(self) -> str:
        return f"p={self.p}, always={self.always}"


class ConvUnit(nn.Sequential):
    """(Transposed) convolution → BatchNorm (unless ``norm`` is off) → ReLU or tanh → optional Dropout2d."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, *, transposed: bool = False,
                 bias: bool = True, act: str = "relu", dropout: float = 0.0, always_dropout: bool = False,
                 norm: bool = True):
        conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers: list[nn.Module] = [conv_cls(cin, cout, kernel, stride, padding, bias=bias)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True) if act == "relu" else nn.Tanh())
        if dropout:
            layers.append(StochasticDropout2d(dropout, always_dropout))
        super().__init__(*layers)


def xavier_init(module: nn.Module) -> None:
    """Xavier (Glorot) uniform weights, zero biases, unit BatchNorm (paper)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_layers(module: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in module.modules())


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layer_table(net: nn.Module) -> list[dict]:
    """Each weighted layer of ``net`` in order: its name, kind, shape and parameters (describe)."""
    rows = []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            rows.append({"layer": name, "kind": "upconv" if isinstance(m, nn.ConvTranspose2d) else "conv",
                         "in": m.in_channels, "out": m.out_channels, "kernel": list(m.kernel_size),
                         "stride": list(m.stride), "padding": list(m.padding),
                         "params": sum(p.numel() for p in m.parameters())})
        elif isinstance(m, nn.Linear):
            rows.append({"layer": name, "kind": "fc", "in": m.in_features, "out": m.out_features,
                         "params": sum(p.numel() for p in m.parameters())})
        elif isinstance(m, nn.BatchNorm2d):
            rows.append({"layer": name, "kind": "batchnorm", "params": sum(p.numel() for p in m.parameters())})
    return rows


def described(nets: dict) -> dict:
    """`s2i-model describe`'s JSON for a model's networks: conv layers, parameters, each weighted layer."""
    return {k: {"conv_layers": conv_layers(m), "params": n_params(m), "layers": layer_table(m)} for k, m in nets.items()}
