"""Audio autoencoder (SPEC 3.1): 13 conv layers down to an E-dim tanh embedding, 13 back up.

Input and output: [B, 1, 128, 100] (mel as height, time as width), values in [-1, 1].
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from s2i_model.nets.blocks import ConvUnit, scaled, xavier_init

# (out channels, kernel (h, w), stride) of encoder layers 1-12; layer 13 maps to E with 3x3.
ENCODER = (
    (80, (7, 5), 2), (176, (5, 3), 2),
    (192, (5, 3), 1), (224, (5, 3), 1), (272, (5, 3), 1),
    (304, (3, 3), 1), (352, (3, 3), 1), (416, (3, 3), 1),
    (512, (3, 3), 1), (512, (3, 3), 1), (512, (3, 3), 1), (512, (3, 3), 1),
)
EMBED_KERNEL = (3, 3)
# (out channels, kernel (h, w), stride, dropout) of decoder layers 1-13: the encoder's channels
# mirrored, its kernels too except the two stride-2 layers, whose kernels make 128x100 exact; the
# last layer is the 1-channel spectrogram (tanh), never scaled by the width.
DECODER = (
    (512, (3, 3), 1, 0.15), (512, (3, 3), 1, 0.14), (512, (3, 3), 1, 0.13), (512, (3, 3), 1, 0.12),
    (416, (3, 3), 1, 0.11), (352, (3, 3), 1, 0.10), (304, (3, 3), 1, 0.10), (272, (3, 3), 1, 0.09),
    (224, (5, 3), 1, 0.08), (192, (5, 3), 1, 0.07), (176, (5, 3), 1, 0.06),
    (80, (5, 4), 2, 0.05), (1, (8, 6), 2, 0.0),
)


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
        layers, cin = [], emb
        for i, (cout, kernel, stride, dropout) in enumerate(DECODER):
            last = i == len(DECODER) - 1
            cout = cout if last else scaled(cout, width)
            layers.append((f"deconv{i + 1}", ConvUnit(
                cin, cout, kernel, stride, transposed=True, act="tanh" if last else "relu", dropout=dropout)))
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
