"""The multimodal-feature GAN (paper 004, "Generating images from sounds using multimodal features
and GANs"; SPEC 6.3), built from scratch at 96 px: docs/models.md has the paper beside this.

Three stages, every net from a table with one row per layer, like the S2I nets:

- A, features (paper 5.1): a frame encoder (stands in for VGG-16 fc6) and a sound encoder (stands
  in for SoundNet pool5), each a small CNN with a class head, trained on the build's train split
  with the build's class labels (the paper's nets were pretrained elsewhere; there are no
  pretrained weights here).
- B, multimodal layers (paper 5.3): input layers for each modality into one hidden layer, an
  output classification layer; the multimodal feature of a sound is the hidden layer *before*
  its activation (the paper's choice).
- C, two stacked pix2pix U-Net cGANs (paper 5.2, 5.4): the sound's multimodal feature as a square
  map → the frame encoder's feature as a square map → the 96×96 picture, each with a PatchGAN D.

The width multiplier scales every hidden channel and hidden FC width (`scaled`), never the
feature vectors the stages hand each other (they are the paper's 4096-d vectors, here 24² = 576),
the RGB output or D's score.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from s2i_model.nets.blocks import ConvUnit, StochasticDropout2d, scaled, xavier_init

# The feature vectors are squares so that a cGAN can read them as pictures: the paper's 4096 =
# 64², read as 64×64 and upsampled to its 128 px; here 576 = 24², upsampled ×4 to our 96 px.
FEATURE_SIDE = 24
FEATURE = FEATURE_SIDE ** 2
SOUND_FEATURE = 512  # the sound encoder's feature (SoundNet pool5 is 256 channels × time)
IMAGE_SIZE = 96

# ---- stage A. Convs (out channels, kernel, stride, padding) → BatchNorm → ReLU, then an FC to the
# feature (ReLU, as VGG's fc6 is read after its ReLU) and an FC class head.
FRAME_ENCODER = (
    (32, 4, 2, 1),   # 96 → 48
    (64, 4, 2, 1),   # → 24
    (128, 4, 2, 1),  # → 12
    (256, 4, 2, 1),  # → 6
)
FRAME_MAP = (6, 6)
SOUND_ENCODER = (
    (32, 4, 2, 1),   # 128×100 → 64×50
    (64, 4, 2, 1),   # → 32×25
    (128, 4, 2, 1),  # → 16×12
    (256, 4, 2, 1),  # → 8×6
)
SOUND_MAP = (8, 6)

# ---- stage C. pix2pix's U-Net (Isola et al.), five stride-2 levels for 96 = 3·2⁵: encoder rows
# (out channels, BatchNorm?), LeakyReLU 0.2; decoder rows (out channels, dropout), ReLU, each
# concatenated with the encoder level of its size; the last upconv draws the output.
UNET_DOWN = (
    (64, False),   # 96 → 48 (pix2pix: no BatchNorm on the first layer)
    (128, True),   # → 24
    (256, True),   # → 12
    (512, True),   # → 6
    (512, False),  # → 3, the bottleneck (pix2pix: no BatchNorm innermost)
)
UNET_UP = (
    (512, 0.5),  # 3 → 6, pix2pix's dropout (its noise), kept on at test time
    (256, 0.5),  # → 12
    (128, 0.5),  # → 24
    (64, 0.0),   # → 48
)                # then the output upconv → 96
# PatchGAN D (pix2pix's 70×70 one): (out channels, stride, BatchNorm?), LeakyReLU 0.2, then a
# 4×4 conv to one logit per patch (96 → 48 → 24 → 12 → 11 → 10×10 patches).
PATCH_D = (
    (64, 2, False),
    (128, 2, True),
    (256, 2, True),
    (512, 1, True),
)


def feature_map(v: torch.Tensor) -> torch.Tensor:
    """A feature vector [B, 576] as the one-channel 96×96 map the cGANs read: the paper's reshape
    to a square, then its upsampling "for the ensemble effect" (nearest, ×4)."""
    return F.interpolate(v.reshape(-1, 1, FEATURE_SIDE, FEATURE_SIDE), size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")


class _Encoder(nn.Module):
    """Convs from a table, then the feature FC (ReLU) and a class head."""

    def __init__(self, table, cin: int, spatial: tuple[int, int], feature: int, n_classes: int, width: float) -> None:
        super().__init__()
        layers = []
        for i, (cout, k, s, p) in enumerate(table):
            cout = scaled(cout, width)
            layers.append((f"conv{i + 1}", ConvUnit(cin, cout, k, s, p)))
            cin = cout
        layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(cin * spatial[0] * spatial[1], feature)),
                   ("fc_relu", nn.ReLU(inplace=True))]
        self.layers = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(feature, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature, class logits)."""
        f = self.layers(x)
        return f, self.head(f)


class FrameEncoder(_Encoder):
    """Frame [B, 3, 96, 96] → the image feature [B, 576] (VGG-16 fc6's place) and class logits."""

    def __init__(self, n_classes: int, width: float = 1.0) -> None:
        super().__init__(FRAME_ENCODER, 3, FRAME_MAP, FEATURE, n_classes, width)


class SoundEncoder(_Encoder):
    """Log-mel [B, 1, 128, 100] → the sound feature [B, 512] (SoundNet pool5's place) and class logits."""

    def __init__(self, n_classes: int, width: float = 1.0) -> None:
        super().__init__(SOUND_ENCODER, 1, SOUND_MAP, SOUND_FEATURE, n_classes, width)


class MultimodalLayers(nn.Module):
    """The paper's multimodal layers (5.3, Figure 4): an input layer per modality into one hidden
    layer (their sum; halved when both are given, so that B matches I and S once they agree), ReLU,
    and an output classification layer. Its hidden size is the multimodal feature (576)."""

    def __init__(self, n_classes: int, image_dim: int = FEATURE, sound_dim: int = SOUND_FEATURE,
                 hidden: int = FEATURE) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_dim, hidden)
        self.sound_in = nn.Linear(sound_dim, hidden)
        self.out = nn.Linear(hidden, n_classes)

    def hidden(self, image: torch.Tensor | None, sound: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(before, after the activation) for image-only, sound-only or both (halved) inputs."""
        parts = [layer(x) for layer, x in ((self.image_in, image), (self.sound_in, sound)) if x is not None]
        pre = parts[0] if len(parts) == 1 else (parts[0] + parts[1]) / 2
        return pre, F.relu(pre)

    def forward(self, image: torch.Tensor | None, sound: torch.Tensor | None):
        """(hidden before activation, after, class logits)."""
        pre, post = self.hidden(image, sound)
        return pre, post, self.out(post)


class UNet(nn.Module):
    """pix2pix's U-Net generator at 96 px: ``cin`` channels → ``cout`` (tanh for pictures, linear
    for a feature map, whose values are not bounded)."""

    def __init__(self, cin: int, cout: int, width: float = 1.0, out_act: str = "tanh") -> None:
        super().__init__()
        self.down = nn.ModuleList()
        skips, c = [], cin
        for i, (co, bn) in enumerate(UNET_DOWN):
            co = scaled(co, width)
            layers = [nn.Conv2d(c, co, 4, 2, 1, bias=not bn)] + ([nn.BatchNorm2d(co)] if bn else [])
            if i < len(UNET_DOWN) - 1:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            else:  # the bottleneck feeds the decoder's ReLU
                layers.append(nn.ReLU(inplace=True))
            self.down.append(nn.Sequential(*layers))
            skips.append(co)
            c = co
        self.up = nn.ModuleList()
        for i, (co, p) in enumerate(UNET_UP):
            co = scaled(co, width)
            cin_up = c if i == 0 else c + skips[-1 - i]
            layers = [nn.ConvTranspose2d(cin_up, co, 4, 2, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]
            if p:
                layers.append(StochasticDropout2d(p, always=True))
            self.up.append(nn.Sequential(*layers))
            c = co
        self.out = nn.ConvTranspose2d(c + skips[0], cout, 4, 2, 1)
        self.out_act = out_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = skips.pop()
        for i, layer in enumerate(self.up):
            x = layer(x if i == 0 else torch.cat([x, skips.pop()], 1))
        x = self.out(torch.cat([x, skips.pop()], 1))
        return torch.tanh(x) if self.out_act == "tanh" else x


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN: (condition, output) concatenated → a logit per patch."""

    def __init__(self, cin: int, width: float = 1.0) -> None:
        super().__init__()
        layers, c = [], cin
        for i, (co, s, bn) in enumerate(PATCH_D):
            co = scaled(co, width)
            layers.append((f"conv{i + 1}", nn.Sequential(*([nn.Conv2d(c, co, 4, s, 1, bias=not bn)]
                                                        + ([nn.BatchNorm2d(co)] if bn else [])
                                                        + [nn.LeakyReLU(0.2, inplace=True)]))))
            c = co
        layers.append((f"conv{len(PATCH_D) + 1}", nn.Conv2d(c, 1, 4, 1, 1)))
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, condition: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([condition, output], 1))  # [B, 1, 10, 10] logits


class StackedGenerators(nn.Module):
    """Stage C's two generators, trained side by side in one forward (one DDP module): G1 maps the
    sound's multimodal feature map to the image feature map; G2 maps an image feature map to the
    picture (trained on the real frame's, paper 5.2; fed G1's at inference, 5.4)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.feature = UNet(1, 1, width, out_act="linear")
        self.image = UNet(1, 3, width, out_act="tanh")

    def forward(self, mm_map: torch.Tensor, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feature(mm_map), self.image(feature)


class StackedDiscriminators(nn.Module):
    """D1 on (multimodal map, image feature map), D2 on (image feature map, picture)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.feature = PatchDiscriminator(2, width)
        self.image = PatchDiscriminator(4, width)

    def forward(self, mm_map, feature, feature_cond, image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feature(mm_map, feature), self.image(feature_cond, image)


class MmGan(nn.Module):
    """Every network of the model; ``pictures`` is the paper's inference path (Figure 1):
    sound → sound feature → multimodal feature (before activation) → G1 → G2 → picture."""

    def __init__(self, n_classes: int, width: float = 1.0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.frame_encoder = FrameEncoder(n_classes, width)
        self.sound_encoder = SoundEncoder(n_classes, width)
        self.multimodal = MultimodalLayers(n_classes)
        self.generators = StackedGenerators(width)
        self.discriminators = StackedDiscriminators(width)
        xavier_init(self)

    def sound_feature(self, mel: torch.Tensor) -> torch.Tensor:
        """The multimodal feature of sounds [B, 576]: the hidden layer before its activation."""
        return self.multimodal.hidden(None, self.sound_encoder(mel)[0])[0]

    def image_feature(self, image: torch.Tensor) -> torch.Tensor:
        return self.frame_encoder(image)[0]

    def pictures(self, mel: torch.Tensor) -> torch.Tensor:
        """One picture per sound in [-1, 1]; G's test-time dropout makes repeats differ."""
        return self.generators.image(self.generators.feature(feature_map(self.sound_feature(mel))))


def networks(n_classes: int = 5, width: float = 1.0) -> dict[str, nn.Module]:
    """Every network by name (for describe and the tests)."""
    m = MmGan(n_classes, width)
    return {"mmgan.frame_encoder": m.frame_encoder, "mmgan.sound_encoder": m.sound_encoder,
            "mmgan.multimodal": m.multimodal, "mmgan.g_feature": m.generators.feature,
            "mmgan.g_image": m.generators.image, "mmgan.d_feature": m.discriminators.feature,
            "mmgan.d_image": m.discriminators.image}


def describe(width: float = 1.0, flops: bool = False, **_) -> dict:
    """`s2i-model describe --model mmgan`: each network's layers, class heads sized for the five
    classes of the built-in data."""
    from s2i_model.nets.blocks import described

    if flops:
        raise ValueError("--flops counts the S2I networks only")
    if width <= 0:
        raise ValueError("--width must be above 0")
    return described(networks(5, width))
