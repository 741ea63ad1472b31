"""nets/mmgan.py: the multimodal-feature GAN's tables (paper 004 adapted to 96 px, docs/models.md)
give the counted layers at every width, the stages hand each other the right shapes, and describe
prints them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from s2i_model.nets.blocks import n_params
from s2i_model.models.mmgan.nets import FEATURE, MmGan, MultimodalLayers, feature_map, networks


def conv(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def fc(cin, cout):
    return cin * cout + cout


def bn(c):
    return 2 * c


def test_counts_follow_the_tables():
    frame = (conv(3, 32, 4) + bn(32) + conv(32, 64, 4) + bn(64) + conv(64, 128, 4) + bn(128) + conv(128, 256, 4)
             + bn(256) + fc(256 * 36, 576) + fc(576, 5))
    sound = (conv(1, 32, 4) + bn(32) + conv(32, 64, 4) + bn(64) + conv(64, 128, 4) + bn(128) + conv(128, 256, 4)
             + bn(256) + fc(256 * 48, 512) + fc(512, 5))
    mm = fc(576, 576) + fc(512, 576) + fc(576, 5)
    # U-Net: downs 64 (bias, no BN), 128, 256, 512 (BN, no bias), 512 (bias, no BN); ups with skips
    down = conv(1, 64, 4) + conv(64, 128, 4, False) + bn(128) + conv(128, 256, 4, False) + bn(256) \
        + conv(256, 512, 4, False) + bn(512) + conv(512, 512, 4)
    up = conv(512, 512, 4, False) + bn(512) + conv(1024, 256, 4, False) + bn(256) + conv(512, 128, 4, False) \
        + bn(128) + conv(256, 64, 4, False) + bn(64)
    patch = lambda cin: (conv(cin, 64, 4) + conv(64, 128, 4, False) + bn(128) + conv(128, 256, 4, False)  # noqa: E731
                         + bn(256) + conv(256, 512, 4, False) + bn(512) + conv(512, 1, 4))
    nets = networks(5)
    assert n_params(nets["mmgan.frame_encoder"]) == frame == 6_002_981
    assert n_params(nets["mmgan.sound_encoder"]) == sound == 6_984_613
    assert n_params(nets["mmgan.multimodal"]) == mm == 630_725
    assert n_params(nets["mmgan.g_feature"]) == down + up + conv(128, 1, 4) == 16_653_505
    assert n_params(nets["mmgan.g_image"]) == down + up + conv(128, 3, 4) == 16_657_603
    assert n_params(nets["mmgan.d_feature"]) == patch(2) == 2_764_609
    assert n_params(nets["mmgan.d_image"]) == patch(4) == 2_766_657


@pytest.mark.parametrize("width", [1.0, 0.0625])
def test_stages_hand_on_the_right_shapes(width):
    torch.manual_seed(0)
    m = MmGan(5, width)
    mel, img = torch.rand(2, 1, 128, 100) * 2 - 1, torch.rand(2, 3, 96, 96) * 2 - 1
    f_img, logits = m.frame_encoder(img)
    assert f_img.shape == (2, FEATURE) and logits.shape == (2, 5) and (f_img >= 0).all()
    assert m.sound_encoder(mel)[0].shape == (2, 512)
    mm = m.sound_feature(mel)
    assert mm.shape == (2, FEATURE) and (mm < 0).any()  # before the activation (paper 5.3)
    fmap = feature_map(f_img)
    assert fmap.shape == (2, 1, 96, 96) and torch.equal(fmap[:, 0, :4, :4], f_img[:, :1, None].expand(2, 4, 4))
    f_hat, x_hat = m.generators(feature_map(mm), fmap)
    assert f_hat.shape == (2, 1, 96, 96) and x_hat.shape == (2, 3, 96, 96) and x_hat.abs().max() <= 1
    s1, s2 = m.discriminators(feature_map(mm), f_hat, fmap, x_hat)
    assert s1.shape == s2.shape == (2, 1, 10, 10)
    pics = m.eval().pictures(mel[:1].repeat(2, 1, 1, 1))
    assert pics.shape == (2, 3, 96, 96) and not torch.equal(pics[0], pics[1])  # test-time dropout


def test_both_inputs_are_halved():
    torch.manual_seed(0)
    mm = MultimodalLayers(5)
    i, s = torch.rand(3, 576), torch.rand(3, 512)
    pre_i, pre_s = mm.hidden(i, None)[0], mm.hidden(None, s)[0]
    pre_b, post_b = mm.hidden(i, s)
    assert torch.allclose(pre_b, (pre_i + pre_s) / 2) and torch.equal(post_b, pre_b.clamp(min=0))


def test_describe_prints_each_layer():
    out = subprocess.run([sys.executable, "-m", "s2i_model.cli", "describe", "--model", "mmgan", "--width", "0.0625"],
                         capture_output=True, text=True, check=True).stdout
    nets = json.loads(out)
    assert list(nets) == ["mmgan.frame_encoder", "mmgan.sound_encoder", "mmgan.multimodal", "mmgan.g_feature",
                          "mmgan.g_image", "mmgan.d_feature", "mmgan.d_image"]
    for v in nets.values():
        assert v["params"] == sum(r["params"] for r in v["layers"])
    assert [r["out"] for r in nets["mmgan.d_image"]["layers"] if r["kind"] == "conv"] == [8, 8, 16, 32, 1]
    assert nets["mmgan.multimodal"]["params"] == 630_725  # the feature sizes are not scaled
