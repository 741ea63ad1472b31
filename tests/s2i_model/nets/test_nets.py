"""nets: the layer tables give exactly the paper's networks (SPEC 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator, Discriminator
from s2i_model.nets import InformativityClassifier
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


def dropout_rates(net: torch.nn.Module) -> list[float]:
    from s2i_model.nets.blocks import StochasticDropout2d

    return [m.p for m in net.modules() if isinstance(m, (StochasticDropout2d, torch.nn.Dropout2d))]


def test_below_width_one_dropout_follows_the_width_and_the_rgb_output_has_no_batchnorm():
    from s2i_model.models.s2i.generator import START, STAGES, narrow_dropout

    assert narrow_dropout(0.15, 1.0) == 0.15 and narrow_dropout(0.0, 0.0625) == 0.0
    assert narrow_dropout(0.15, 0.0625) == pytest.approx(0.0109, abs=1e-4)  # odds 0.15/0.85 × 1/16
    paper = [p for p in [START[2]] + [s[1][4] for s in STAGES] if p]
    with torch.device("meta"):  # width 1.0 is 38M parameters: the layers are what is checked
        full = DenseGenerator(512)
    assert not full.narrow and dropout_rates(full) == paper
    assert isinstance(full.layers.transition6[1], torch.nn.BatchNorm2d)  # the paper's code
    narrow = DenseGenerator(128, 0.0625)
    assert narrow.narrow and dropout_rates(narrow) == [narrow_dropout(p, 0.0625) for p in paper]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in narrow.layers.transition6)
    # off: the paper's layers at a narrow width, as runs from before the adaptations were trained
    as_paper = DenseGenerator(128, 0.0625, narrow=False)
    assert dropout_rates(as_paper) == paper and isinstance(as_paper.layers.transition6[1], torch.nn.BatchNorm2d)


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


def test_flop_counter_counts_one_layer_as_by_hand():
    from torch import nn

    from s2i_model.models.s2i.flops import count_macs

    # Cout·Cin·kh·kw·Hout·Wout for a convolution; a transposed one scatters each input pixel
    # through its kernel, so Cin·Cout·kh·kw·Hin·Win
    conv = nn.Conv2d(3, 5, (7, 5), stride=2)
    x = torch.rand(2, 3, 31, 24)  # → 13 x 10
    assert conv(x).shape[2:] == (13, 10)
    deconv = nn.ConvTranspose2d(4, 6, (5, 4), stride=2)
    y = torch.rand(2, 4, 9, 7)
    with torch.no_grad():
        assert count_macs(lambda: conv(x)) == 5 * 3 * 7 * 5 * 13 * 10
        assert count_macs(lambda: deconv(y)) == 4 * 6 * 5 * 4 * 9 * 7
    # the encoder's first layer at full width: 80 channels, 7x5, stride 2, 1x128x100 → 61x48
    with torch.device("meta"):  # shapes only: no 33 M weights to initialise
        first, mel = AudioAutoencoder(512).encoder.layers.conv1[0], torch.rand(2, 1, 128, 100)
    with torch.no_grad():
        assert count_macs(lambda: first(mel)) == 80 * 1 * 7 * 5 * 61 * 48


def test_counted_macs_match_spec_and_the_training_formulas():
    from s2i_model.models.s2i.flops import net_macs, training_macs

    macs = net_macs(512, 1.0)
    # SPEC 4: per sample the autoencoder is ≈ 3.7 GMAC forward and the generator ≈ 2.1 GMAC
    assert abs(macs["autoencoder.encoder"] + macs["autoencoder.decoder"] - 3.7e9) < 0.04 * 3.7e9
    # the counter also counts the transposed convolutions' products that land in the cropped
    # padding (what a GPU computes); without them the generator is 2.05 GMAC: +9 % at most
    assert 2.1e9 < macs["generator"] < 1.09 * 2.1e9
    assert macs["autoencoder.encoder"] > macs["discriminator"] > macs["informativity_classifier"]
    train = training_macs(512, 1.0)
    for stage in ("stage1_autoencoder", "stage2_translator"):  # the formulas hold within 1 %
        s = train[stage]
        assert abs(s["counted_macs"] - s["formula_macs"]) < 0.01 * s["formula_macs"]
    assert train["stage1_autoencoder"]["formula_macs"] == 3 * (macs["autoencoder.encoder"] + macs["autoencoder.decoder"])


def test_meta_device_counts_what_a_cpu_pass_counts():
    from s2i_model.models.s2i.flops import net_macs

    assert net_macs(128, 0.125, "meta") == net_macs(128, 0.125, "cpu")


def test_describe_flops_adds_macs_only_when_asked():
    from typer.testing import CliRunner

    from s2i_model.cli import app

    plain = json.loads(CliRunner().invoke(app, ["describe", "--emb", "128", "--width", "0.125"]).stdout)
    r = CliRunner().invoke(app, ["describe", "--emb", "128", "--width", "0.125", "--flops"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "training_macs_per_sample" not in plain and "macs_per_sample" not in plain["generator"]
    assert out["generator"]["macs_per_sample"] > 0 and out["generator"]["params"] == plain["generator"]["params"]
    assert set(out["training_macs_per_sample"]) >= {"stage1_autoencoder", "stage2_translator"}
