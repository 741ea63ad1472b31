"""Audio autoencoder (SPEC 3.1): 13 conv layers down to an E-dim tanh embedding, 13 back up.

Input and output: [B, 1, 128, 100] (mel as height, time as width), values in [-1, 1].
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .blocks import ConvUnit, scaled, xavier_init

# (out channels, kernel (h, w), stride) of encoder layers 1-12; layer 13 maps to E with 3x3.
ENCODER = (
    (80, (7, 5), 2), (176, (5, 3), 2),
    (192, (5, 3), 1), (224, (5, 3), 1), (272, (5, 3), 1),
    (304, (3, 3), 1), (352, (3, 3), 1), (416, (3, 3), 1),
    (512, (3, 3), 1), (512, (3, 3), 1), (512, (3, 3), 1), (512, (3, 3), 1),
)
EMBED_KERNEL = (3, 3)
# Decoder: the encoder mirrored, except the two stride-2 layers whose kernels make 128x100 exact.
DECODER_KERNELS = ((3, 3),) * 8 + ((5, 3),) * 3 + ((5, 4), (8, 6))
DECODER_STRIDES = (1,) * 11 + (2, 2)
DECODER_DROPOUT = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10, 0.10, 0.09, 0.08, 0.07, 0.06, 0.05)


class Encoder(nn.Module):
    def __init__(self, emb: int = 512, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], 1
        for i, (cout, kernel, stride) in enumerate(ENCODER):
            cout = scaled(cout, width)
            layers.append((f"conv{i + 1}", ConvUnit(cin, cout, kernel, stride)))
            cin = cout
        layers.append((f"conv{len(ENCODER) + 1}", ConvUnit(cin, emb, EMBED_KERNEL, act="tanh")))
        self.layers = nn.Sequential(OrderedDict(layers))
        self.emb = emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)  # [B, E]


class Decoder(nn.Module):
    def __init__(self, emb: int = 512, width: float = 1.0) -> None:
        super().__init__()
        # Channels back through the encoder's, in reverse, to 1.
        chans = [scaled(c, width) for c, _, _ in reversed(ENCODER)] + [1]
        layers, cin = [], emb
        for i, (cout, kernel, stride) in enumerate(zip(chans, DECODER_KERNELS, DECODER_STRIDES)):
            last = i == len(chans) - 1
            layers.append((f"deconv{i + 1}", ConvUnit(
                cin, cout, kernel, stride, transposed=True, act="tanh" if last else "relu",
                dropout=0.0 if last else DECODER_DROPOUT[i])))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z[:, :, None, None])


class AudioAutoencoder(nn.Module):
    def __init__(self, emb: int = 512, width: float = 1.0) -> None:
        super().__init__()
        self.encoder = Encoder(emb, width)
        self.decoder = Decoder(emb, width)
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z
