"""Sound2Scene (paper 003, Sung-Bin et al., CVPR 2023; SPEC 6.2), built from scratch at 96 px:
docs/models.md has the paper beside this.

The paper's idea is kept: a visual feature space and a generator that paints from it are learnt
from images alone and frozen; an audio encoder is then taught to land in that space, and at test
time its feature goes to the generator. The paper's frozen parts were pretrained on ImageNet
(SwAV ResNet-50, IC-GAN's BigGAN); nothing can be downloaded here, so each is trained on the
build's train frames first. Every net is built in loops from one table, like the S2I nets:

- `FrameEncoder` (the paper's SwAV ResNet-50): a ResNet of `RESNET` basic blocks on the frame, the
  pooled feature, and a SimCLR projection head used only while it learns.
- `Generator` (IC-GAN's BigGAN): noise + instance feature → 3×3 map, `GEN_BLOCKS` up-sampling
  residual blocks with conditional BatchNorm (gain and bias from [noise, projected feature]),
  spectral norm on every weight, tanh.
- `Discriminator` (BigGAN's, with IC-GAN's projection of the instance feature): `DISC_BLOCKS`
  down-sampling residual blocks, sum pooling, a linear score plus ⟨embedded feature, pooled⟩.
- `AudioEncoder` (the paper's ResNet-18): the same `RESNET` table on the 1×128×frames log-mel,
  adaptive average pooling, one linear layer to the feature size.

The width multiplier scales every hidden channel count (`scaled`); the feature size is the frame
encoder's last stage, so it scales too (512 at width 1.0; the paper's 2048 is ResNet-50's).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from s2i_model.nets.blocks import scaled

IMAGE_SIZE = 96
NOISE = 120  # BigGAN's dim_z
SHARED = 128  # BigGAN's shared embedding: here the projected instance feature (IC-GAN)
PROJECTION = 128  # SimCLR's projection head output

# ResNet-18 stages: (channels, stride of the first block, basic blocks). Stem: 7×7 conv stride 2
# and a 3×3 max pool stride 2 (96 px → 24; a 128×100 log-mel → 32×25).
STEM = 64
RESNET = (
    (64, 1, 2),
    (128, 2, 2),
    (256, 2, 2),
    (512, 2, 2),
)
# Generator: channels of the 3×3 start, then of each up-sampling block (3 → 6 → 12 → 24 → 48 → 96).
GEN_START = 512
GEN_BLOCKS = (512, 256, 128, 64, 32)
# Discriminator: (channels, down-sample?) per block (96 → 48 → 24 → 12 → 6 → 3, then one at 3×3).
DISC_BLOCKS = (
    (32, True),
    (64, True),
    (128, True),
    (256, True),
    (512, True),
    (512, False),
)


# ---- ResNets (frame and audio encoders)
class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


def _resnet(cin: int, width: float) -> tuple[nn.Sequential, int]:
    """The ResNet trunk of `RESNET` and its output channels."""
    stem = scaled(STEM, width)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(nn.Conv2d(cin, stem, 7, 2, 3, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True),
                           nn.MaxPool2d(3, 2, 1)))
    c = stem
    for s, (channels, stride, blocks) in enumerate(RESNET, 1):
        out = scaled(channels, width)
        for b in range(blocks):
            layers[f"layer{s}_{b}"] = _BasicBlock(c, out, stride if b == 0 else 1)
            c = out
    layers["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(layers), c


def feature_size(width: float) -> int:
    return scaled(RESNET[-1][0], width)


class FrameEncoder(nn.Module):
    """f_V: a frame in [-1, 1] → its feature (unit norm, as the paper compares features); ``project``
    maps a feature to SimCLR's contrastive space (training only)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.trunk, c = _resnet(3, width)
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, PROJECTION))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x).float(), dim=1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AudioEncoder(nn.Module):
    """f_A: a normalised log-mel [B, 1, 128, frames] → its feature (unit norm), ResNet-18, pooled,
    one linear layer (paper 3.2)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.trunk, c = _resnet(1, width)
        self.fc = nn.Linear(c, feature_size(width))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(self.trunk(mel)).float(), dim=1)


# ---- IC-GAN / BigGAN
# torch's spectral norm runs 15 power iterations when it is registered. On the meta device
# (checkpoint.check_net builds every loaded run's nets there to compare shapes) they compute
# nothing, cost ~60 ms a layer and import torch's reference kernels (~2 s, sympy among them): ~3 s
# a Sound2Scene load against ~0.2 s on the CPU. There only the state's names and shapes matter.
class _SpectralNormShapes(nn.Module):
    """torch's `_SpectralNorm` state (buffers `_u`: out, `_v`: in) with no arithmetic: meta only."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("_u", weight.new_empty(weight.shape[0]))
        self.register_buffer("_v", weight.new_empty(math.prod(weight.shape[1:])))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - meta nets never run
        return weight


def spectral_norm(module: nn.Module) -> nn.Module:
    """torch's `spectral_norm` (dim 0: no transposed convolutions here); on the meta device, a
    parametrization of the same state-dict names and shapes that computes nothing."""
    if not module.weight.is_meta:
        return parametrizations.spectral_norm(module)
    parametrize.register_parametrization(module, "weight", _SpectralNormShapes(module.weight), unsafe=True)
    return module


class _CondBatchNorm(nn.Module):
    """BatchNorm without its own affine; gain 1 + γ(c) and bias β(c) from the condition (BigGAN)."""

    def __init__(self, channels: int, cond: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = spectral_norm(nn.Linear(cond, channels, bias=False))
        self.bias = spectral_norm(nn.Linear(cond, channels, bias=False))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


class _GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = _CondBatchNorm(cin, cond), _CondBatchNorm(cout, cond)
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)
        y = self.conv2(F.relu(self.bn2(self.conv1(y), c)))
        return y + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    """G(noise, feature) → a 96×96 picture in [-1, 1]. The condition of every block is [noise,
    W·feature] (IC-GAN's instance feature in place of BigGAN's class embedding; BigGAN's
    hierarchical split of the noise over blocks is not kept: every block sees all of it)."""

    def __init__(self, feature: int, width: float = 1.0) -> None:
        super().__init__()
        cond = NOISE + SHARED
        self.embed = spectral_norm(nn.Linear(feature, SHARED, bias=False))
        self.start_channels = scaled(GEN_START, width)
        self.start = spectral_norm(nn.Linear(NOISE, self.start_channels * 9))
        blocks, c = [], self.start_channels
        for channels in GEN_BLOCKS:
            out = scaled(channels, width)
            blocks.append(_GBlock(c, out, cond))
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), spectral_norm(nn.Conv2d(c, 3, 3, 1, 1)),
                                 nn.Tanh())

    def forward(self, noise: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        c = torch.cat([noise, self.embed(feature)], 1)
        x = self.start(noise).view(-1, self.start_channels, 3, 3)
        for block in self.blocks:
            x = block(x, c)
        return self.out(x)


class _DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, first: bool) -> None:
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1)) if cin != cout or down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.down:
            y = F.avg_pool2d(y, 2)
        s = self.skip(x) if self.skip is not None else x
        if self.down:
            s = F.avg_pool2d(s, 2)
        return y + s


class Discriminator(nn.Module):
    """D(picture, feature) → an unbounded score (hinge loss): linear on the pooled map plus the
    projection ⟨W·feature, pooled⟩ (IC-GAN conditions BigGAN's projection D on the instance)."""

    def __init__(self, feature: int, width: float = 1.0) -> None:
        super().__init__()
        blocks, c = [], 3
        for i, (channels, down) in enumerate(DISC_BLOCKS):
            out = scaled(channels, width)
            blocks.append(_DBlock(c, out, down, i == 0))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Linear(feature, c, bias=False))

    def forward(self, x: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum((2, 3))
        return (self.linear(h) + (self.embed(feature) * h).sum(1, keepdim=True)).squeeze(1)


class Sound2Scene(nn.Module):
    """The four nets of one run; `pictures` is the paper's inference: G(noise, f_A(sound))."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        f = feature_size(width)
        self.frame_encoder = FrameEncoder(width)
        self.generator = Generator(f, width)
        self.discriminator = Discriminator(f, width)
        self.audio_encoder = AudioEncoder(width)

    def pictures(self, mel: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(mel.shape[0], NOISE, device=mel.device)
        return self.generator(noise, self.audio_encoder(mel))


def networks(width: float = 1.0) -> dict[str, nn.Module]:
    """For `s2i-model describe --model sound2scene`."""
    m = Sound2Scene(width)
    return {"frame_encoder": m.frame_encoder, "generator": m.generator, "discriminator": m.discriminator,
            "audio_encoder": m.audio_encoder}


def describe(width: float = 1.0, flops: bool = False, **_) -> dict:
    """`s2i-model describe --model sound2scene`: each network's layers."""
    from s2i_model.nets.blocks import described

    if flops:
        raise ValueError("--flops counts the S2I networks only")
    if width <= 0:
        raise ValueError("--width must be above 0")
    return described(networks(width))
