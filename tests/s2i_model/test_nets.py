"""nets: the layer tables give exactly the paper's networks (SPEC 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from s2i_model.nets import AudioAutoencoder, DenseGenerator, Discriminator, InformativityClassifier
from s2i_model.nets.blocks import conv_layers, n_params


def test_describe_prints_the_paper_counts_for_e512():
    out = subprocess.run([sys.executable, "-m", "s2i_model.cli", "describe", "--emb", "512"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {
        "autoencoder.encoder": {"conv_layers": 13, "params": 16_672_912},
        "autoencoder.decoder": {"conv_layers": 13, "params": 16_742_819},
        "generator": {"conv_layers": 25, "params": 38_644_137},
        "discriminator": {"conv_layers": 13, "params": 5_276_450},
        "informativity_classifier": {"conv_layers": 5, "params": 33_610},
    }


@pytest.mark.parametrize("emb", [128, 256, 512, 1024, 2048])
def test_every_embedding_size_runs_end_to_end(emb):
    torch.manual_seed(0)
    ae, g, d = AudioAutoencoder(emb, 0.125), DenseGenerator(emb, 0.125), Discriminator(emb, 0.125)
    x = torch.rand(2, 1, 128, 100) * 2 - 1
    recon, z = ae(x)
    assert recon.shape == x.shape and z.shape == (2, emb)
    assert z.abs().max() <= 1 and recon.abs().max() <= 1  # tanh outputs
    img = g(z)
    assert img.shape == (2, 3, 96, 96)
    score = d(img, z)
    assert score.shape == (2,) and score.abs().max() <= 1


def test_width_scales_hidden_channels_only():
    full, quarter = DenseGenerator(512), DenseGenerator(512, 0.25)
    assert n_params(quarter) < n_params(full) / 10
    assert conv_layers(quarter) == conv_layers(full) == 25
    assert quarter.layers.transition0[0].in_channels == 512  # the embedding is unchanged
    assert quarter.layers.transition6[0].out_channels == 3


def test_generator_dropout_stays_on_at_test_time():
    g = DenseGenerator(128, 0.25).eval()
    z = torch.rand(1, 128).repeat(2, 1)
    a, b = g(z)
    assert not torch.allclose(a, b)  # one sound, two different pictures
    g_det = DenseGenerator(128, 0.25, test_time_dropout=False).eval()
    a, b = g_det(z)
    assert torch.allclose(a, b)


def test_informativity_classifier_outputs_log_probabilities():
    c = InformativityClassifier().eval()
    out = c(torch.rand(3, 3, 96, 96) * 2 - 1)
    assert out.shape == (3, 2)
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_embedding_not_divisible_by_four_is_refused():
    with pytest.raises(ValueError, match="multiple of 4"):
        Discriminator(130)
