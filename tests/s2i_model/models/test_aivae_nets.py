"""nets/aivae.py: the AIVAE and AIVAEGAN tables give the paper's layers adapted to 128×100 → 96×96×3
(docs/models.md), at every width and latent size, and describe prints them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from s2i_model.models.aivae.nets import Aivae, Aivaegan, ImageDiscriminator, kl_divergence, networks, to_picture
from s2i_model.nets.blocks import conv_layers, n_params


def conv(cin, cout, k):
    return cin * cout * k * k + cout


def fc(cin, cout):
    return cin * cout + cout


def test_aivae_counts_follow_the_table():
    # encoder: the paper's conv 64, conv 128 (+ two extra 128s), FC 1024, FC 512, μ and σ FC 64
    enc = conv(1, 64, 4) + conv(64, 128, 4) + 2 * conv(128, 128, 4) + fc(128 * 8 * 6, 1024) + fc(1024, 512) + 2 * fc(512, 64)
    # decoder: FC 512, FC 1024, FC 6×6×128, upconvs 128, 128 (extra), 64, 3
    dec = fc(64, 512) + fc(512, 1024) + fc(1024, 128 * 36) + 2 * conv(128, 128, 4) + conv(128, 64, 4) + conv(64, 3, 4)
    nets = networks("aivae")
    assert n_params(nets["aivae.encoder"]) == enc == 7_539_776
    assert n_params(nets["aivae.decoder"]) == dec == 5_940_547
    assert conv_layers(nets["aivae.encoder"]) == 4 and conv_layers(nets["aivae.decoder"]) == 4


def test_aivaegan_counts_follow_the_table():
    bn = lambda c: 2 * c  # noqa: E731
    enc = (conv(1, 128, 4) + bn(128) + conv(128, 256, 4) + bn(256) + conv(256, 512, 4) + bn(512)
           + conv(512, 512, 4) + bn(512) + (512 * 128 * 6 * 4 + 128))
    dec = (conv(64, 512, 3) + bn(512) + conv(512, 256, 2) + bn(256) + conv(256, 128, 2) + bn(128)
           + conv(128, 128, 2) + bn(128) + conv(128, 64, 2) + bn(64) + conv(64, 3, 2))
    disc = (conv(3, 128, 4) + bn(128) + conv(128, 256, 4) + bn(256) + conv(256, 512, 4) + bn(512)
            + 2 * (conv(512, 512, 4) + bn(512)) + conv(512, 1, 1))
    nets = networks("aivaegan")
    assert n_params(nets["aivaegan.encoder"]) == enc == 8_395_008
    assert n_params(nets["aivaegan.decoder"]) == dec == 1_052_611
    assert n_params(nets["aivaegan.discriminator"]) == disc == 11_022_465


@pytest.mark.parametrize("cls", [Aivae, Aivaegan])
@pytest.mark.parametrize("latent,width", [(64, 1.0), (16, 0.0625), (128, 0.25)])
def test_shapes_and_ranges(cls, latent, width):
    torch.manual_seed(0)
    vae = cls(latent, width)
    x = torch.rand(3, 1, 128, 100) * 2 - 1
    logits, mu, logvar = vae(x)
    assert logits.shape == (3, 3, 96, 96) and mu.shape == logvar.shape == (3, latent)
    pics = vae.pictures(x)
    assert pics.shape == (3, 3, 96, 96) and pics.abs().max() <= 1
    assert float(kl_divergence(mu, logvar).detach()) >= 0
    assert ImageDiscriminator(width)(pics).shape == (3,)


def test_pictures_differ_by_the_latent_draw():
    torch.manual_seed(0)
    vae = Aivae(64, 0.0625).eval()
    x = (torch.rand(1, 1, 128, 100) * 2 - 1).repeat(2, 1, 1, 1)
    a = vae.pictures(x)
    assert not torch.equal(a[0], a[1])  # one sound, two draws of f
    assert torch.allclose(to_picture(torch.zeros(1)), torch.zeros(1))  # sigmoid 0.5 is grey, 0


def test_describe_prints_each_layer():
    out = subprocess.run([sys.executable, "-m", "s2i_model.cli", "describe", "--model", "aivaegan", "--width", "0.0625"],
                         capture_output=True, text=True, check=True).stdout
    nets = json.loads(out)
    assert list(nets) == ["aivaegan.encoder", "aivaegan.decoder", "aivaegan.discriminator"]
    d = nets["aivaegan.discriminator"]
    assert d["params"] == sum(r["params"] for r in d["layers"])
    assert [r["out"] for r in d["layers"] if r["kind"] == "conv"] == [8, 16, 32, 32, 32, 1]
    bad = subprocess.run([sys.executable, "-m", "s2i_model.cli", "describe", "--model", "vqvae"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
