"""AIVAE and AIVAEGAN (Żelaszczyk & Mańdziuk, paper 002; SPEC 6.1): a VAE whose encoder hears a
sound and whose decoder draws the paired picture, and its adversarial variant.

The paper's tables are for a 48×48 mel image and a 28×28×1 digit; ours are a 128×100 log-mel
(mel as height, time as width, [-1, 1]) and a 96×96×3 frame. Every adaptation is a row marked
``extra`` or a kernel noted below, and docs/models.md gives the reasons. Each net is built in a
loop from its table, one row per layer, like the S2I nets; the width multiplier scales every
hidden channel and hidden FC width (`scaled`), never the latent, the 3 output channels or a score.

Outputs are logits: the paper's sigmoid is applied by the loss (Bernoulli likelihood,
``binary_cross_entropy_with_logits``) and, for pictures, rescaled to the project's [-1, 1]:
2·sigmoid(x) − 1 = tanh(x / 2) (`to_picture`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from s2i_model.nets.blocks import scaled, xavier_init

LATENT = 64  # the paper's latent size in every experiment

# ---- AIVAE (paper Table 1). Convolutions: (out channels, kernel, stride, padding, extra?).
# The paper's two stride-2 convs take 48×48 to 12×12; two extra ones take our 128×100 to 8×6, so
# the first FC reads 128·8·6 = 6144 values (the paper's reads 128·12·12 = 18432) instead of the
# 102400 two convs would leave (a 105M-weight FC).
AIVAE_ENCODER_CONV = (
    (64, 4, 2, 1, False),   # 128×100 → 64×50
    (128, 4, 2, 1, False),  # → 32×25
    (128, 4, 2, 1, True),   # → 16×12 (extra)
    (128, 4, 2, 1, True),   # → 8×6 (extra)
)
AIVAE_ENCODER_MAP = (8, 6)
AIVAE_ENCODER_FC = (1024, 512)  # then μ and log σ²: FC LATENT each
# Decoder: FC 512 → FC 1024 → FC to a C×6×6 map (the paper's 7×7×128), then stride-2 upconvs
# (out channels, kernel, stride, padding, extra?) doubling 6 → 12 → 24 → 48 → 96; the last draws
# RGB (the paper's 1 grey channel) as logits.
AIVAE_DECODER_FC = (512, 1024)
AIVAE_DECODER_MAP = (128, 6, 6)
AIVAE_DECODER_UP = (
    (128, 4, 2, 1, True),   # 6 → 12 (extra)
    (128, 4, 2, 1, True),   # → 24 (extra)
    (64, 4, 2, 1, False),   # → 48
    (3, 4, 2, 1, False),    # → 96, logits of RGB
)

# ---- AIVAEGAN (paper Table 2): no padding anywhere, BatchNorm, LeakyReLU(0.2) in the encoder and
# D, ReLU in the decoder. Encoder convs (out, kernel, stride, extra?): 128×100 → 63×49 → 30×23 →
# 14×10 → 6×4; μ and log σ² from one conv over the whole 6×4 map (the paper's last conv, kernel 4
# over its 4×4 map, is also a whole-map conv to 1×1).
AIVAEGAN_ENCODER = (
    (128, 4, 2, False),
    (256, 4, 2, False),
    (512, 4, 2, False),
    (512, 4, 2, True),
)
AIVAEGAN_ENCODER_MAP = (6, 4)
# Decoder upconvs (out, kernel, stride, extra?) from the 1×1 latent: 1 → 3 → 6 → 12 → 24 → 48 →
# 96. The paper's 1 → 3 → 7 → 14 → 28 has kernels 3, 3, 2, 2; the second kernel here is 2 so that
# every later stage doubles to exactly 96 = 3·2⁵.
AIVAEGAN_DECODER = (
    (512, 3, 2, False),
    (256, 2, 2, False),
    (128, 2, 2, False),
    (128, 2, 2, True),
    (64, 2, 2, True),
    (3, 2, 2, False),  # logits of RGB
)
# Discriminator convs (out, kernel, stride, extra?): 96 → 47 → 22 → 10 → 4 → 1, then the paper's
# 1×1 conv to one logit (its sigmoid is in the loss). Unconditional: it sees the picture alone.
AIVAEGAN_DISCRIMINATOR = (
    (128, 4, 2, False),
    (256, 4, 2, False),
    (512, 4, 2, False),
    (512, 4, 2, True),
    (512, 4, 2, True),
)


def to_picture(logits: torch.Tensor) -> torch.Tensor:
    """The paper's sigmoid output, rescaled to the project's [-1, 1] pictures."""
    return torch.tanh(logits / 2)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """f = μ + σ ⊙ ε, ε ~ N(0, I) (paper eq. 3, the reparameterisation trick)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(f|a) || N(0, I)) summed over the latent, mean over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


class _VAE(nn.Module):
    """What both models share: sound → (μ, log σ²) → f → picture logits."""

    latent: int

    def encode(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(picture logits [B, 3, 96, 96], μ, log σ²) with f sampled from q(f|a)."""
        mu, logvar = self.encode(mel)
        return self.decode(reparameterise(mu, logvar)), mu, logvar

    def pictures(self, mel: torch.Tensor) -> torch.Tensor:
        """One picture per sound in [-1, 1], each with its own draw of f (n pictures of one sound:
        repeat it n times)."""
        mu, logvar = self.encode(mel)
        return to_picture(self.decode(reparameterise(mu, logvar)))


class AivaeEncoder(nn.Module):
    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], 1
        for i, (cout, k, s, p, _) in enumerate(AIVAE_ENCODER_CONV):
            cout = scaled(cout, width)
            layers += [(f"conv{i + 1}", nn.Conv2d(cin, cout, k, s, p)), (f"relu{i + 1}", nn.ReLU(inplace=True))]
            cin = cout
        layers.append(("flatten", nn.Flatten()))
        cin *= AIVAE_ENCODER_MAP[0] * AIVAE_ENCODER_MAP[1]
        for i, cout in enumerate(AIVAE_ENCODER_FC):
            cout = scaled(cout, width)
            layers += [(f"fc{i + 1}", nn.Linear(cin, cout)), (f"fc_relu{i + 1}", nn.ReLU(inplace=True))]
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))
        # The paper lists a ReLU after μ, σ; a ReLU would make every μ ≥ 0 and σ a hinge: both are
        # linear here, σ as log σ² (the usual VAE parameterisation).
        self.mu, self.logvar = nn.Linear(cin, latent), nn.Linear(cin, latent)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.layers(mel)
        return self.mu(h), self.logvar(h)


class AivaeDecoder(nn.Module):
    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], latent
        for i, cout in enumerate(AIVAE_DECODER_FC):
            cout = scaled(cout, width)
            layers += [(f"fc{i + 1}", nn.Linear(cin, cout)), (f"fc_relu{i + 1}", nn.ReLU(inplace=True))]
            cin = cout
        c, h, w = AIVAE_DECODER_MAP
        c = scaled(c, width)
        layers += [(f"fc{len(AIVAE_DECODER_FC) + 1}", nn.Linear(cin, c * h * w)),
                   (f"fc_relu{len(AIVAE_DECODER_FC) + 1}", nn.ReLU(inplace=True)),
                   ("unflatten", nn.Unflatten(1, (c, h, w)))]
        cin = c
        for i, (cout, k, s, p, _) in enumerate(AIVAE_DECODER_UP):
            last = i == len(AIVAE_DECODER_UP) - 1
            cout = cout if last else scaled(cout, width)
            layers.append((f"upconv{i + 1}", nn.ConvTranspose2d(cin, cout, k, s, p)))
            if not last:
                layers.append((f"relu{i + 1}", nn.ReLU(inplace=True)))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.layers(f)


class Aivae(_VAE):
    """AIVAE (paper Table 1, eq. 3)."""

    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = AivaeEncoder(latent, width)
        self.decoder = AivaeDecoder(latent, width)
        xavier_init(self)

    def encode(self, mel):
        return self.encoder(mel)

    def decode(self, f):
        return self.decoder(f)


def _unit(conv: nn.Module, cout: int, act: str) -> nn.Sequential:
    """conv → BatchNorm → activation, the unit every AIVAEGAN hidden layer is."""
    return nn.Sequential(conv, nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True) if act == "leaky" else nn.ReLU(inplace=True))


class AivaeganEncoder(nn.Module):
    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], 1
        for i, (cout, k, s, _) in enumerate(AIVAEGAN_ENCODER):
            cout = scaled(cout, width)
            layers.append((f"conv{i + 1}", _unit(nn.Conv2d(cin, cout, k, s), cout, "leaky")))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))
        # μ and log σ² as the 2·latent channels of the paper's last conv ("OUTPUT 2x64"), linear
        self.stats = nn.Conv2d(cin, 2 * latent, AIVAEGAN_ENCODER_MAP)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.stats(self.layers(mel)).flatten(1).chunk(2, 1)
        return mu, logvar


class AivaeganDecoder(nn.Module):
    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], latent
        for i, (cout, k, s, _) in enumerate(AIVAEGAN_DECODER):
            last = i == len(AIVAEGAN_DECODER) - 1
            conv = nn.ConvTranspose2d(cin, cout if last else scaled(cout, width), k, s)
            cout = cout if last else scaled(cout, width)
            layers.append((f"upconv{i + 1}", conv if last else _unit(conv, cout, "relu")))
            cin = cout
        self.layers = nn.Sequential(OrderedDict(layers))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.layers(f[:, :, None, None])


class Aivaegan(_VAE):
    """AIVAEGAN's generator (paper Table 2, eq. 4): the deeper encoder and decoder."""

    def __init__(self, latent: int = LATENT, width: float = 1.0) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = AivaeganEncoder(latent, width)
        self.decoder = AivaeganDecoder(latent, width)
        xavier_init(self)

    def encode(self, mel):
        return self.encoder(mel)

    def decode(self, f):
        return self.decoder(f)


class ImageDiscriminator(nn.Module):
    """AIVAEGAN's unconditional discriminator: picture in [-1, 1] → one logit (sigmoid in the loss)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        layers, cin = [], 3
        for i, (cout, k, s, _) in enumerate(AIVAEGAN_DISCRIMINATOR):
            cout = scaled(cout, width)
            layers.append((f"conv{i + 1}", _unit(nn.Conv2d(cin, cout, k, s), cout, "leaky")))
            cin = cout
        layers.append((f"conv{len(AIVAEGAN_DISCRIMINATOR) + 1}", nn.Conv2d(cin, 1, 1, 1)))
        self.layers = nn.Sequential(OrderedDict(layers))
        xavier_init(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image).flatten()  # [B] logits


MODELS = {"aivae": Aivae, "aivaegan": Aivaegan}


def networks(model: str, latent: int = LATENT, width: float = 1.0) -> dict[str, nn.Module]:
    """Every network of ``model`` by name (for describe and the tests)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    vae = MODELS[model](latent, width)
    nets = {f"{model}.encoder": vae.encoder, f"{model}.decoder": vae.decoder}
    if model == "aivaegan":
        nets["aivaegan.discriminator"] = ImageDiscriminator(width)
    return nets


def describe(model: str = "aivae", latent: int = LATENT, width: float = 1.0, flops: bool = False, **_) -> dict:
    """`s2i-model describe --model aivae|aivaegan`: each network's layers (docs/models.md)."""
    from s2i_model.nets.blocks import described

    if flops:
        raise ValueError("--flops counts the S2I networks only")
    if latent < 1 or width <= 0:
        raise ValueError("--latent must be at least 1 and --width above 0")
    return described(networks(model, latent, width))
