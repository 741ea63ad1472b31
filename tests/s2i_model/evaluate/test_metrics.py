"""The measures behind evaluation: distances, retrieval, diversity, and the paper's aggregates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2i_model.evaluate.fid import InceptionFeatures, frechet_distance, kernel_distance
from s2i_model.evaluate.history import aggregates, informativity_history, pixel_loss_ma, read_rows, skip_after_d_updates
from s2i_model.evaluate.realframe import diversity, retrieval_recall


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance, means 2 apart along one axis: the distance is |Δμ|² = 4
    assert frechet_distance(a, a + [2.0, 0, 0]) == pytest.approx(4.0, rel=1e-3)
    # N(0, I) vs N(0, 4I) in 3-d: 3 · (1 + 4 − 2·2) = 3
    b = rng.normal(size=(4000, 3)) * 2
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.1)
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_kernel_distance_separates_distributions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same = kernel_distance(a, b, subsets=5, subset_size=200)
    shifted = kernel_distance(a, b + 1.0, subsets=5, subset_size=200)
    assert abs(same) < 0.05 < shifted


def test_retrieval_recall_by_hand():
    gallery = torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0]])
    gallery_cls = torch.tensor([0, 1, 2])
    query = torch.tensor([[1.0, 0.1], [0.9, 0.2]])  # both nearest to gallery 0, then 1
    r = retrieval_recall(query, torch.tensor([0, 1]), gallery, gallery_cls, ks=(1, 2))
    assert r == {1: 0.5, 2: 1.0}


def test_diversity():
    same = torch.zeros(3, 4, 3, 8, 8)
    assert diversity(same) == 0.0
    two = torch.stack([torch.zeros(3, 8, 8), torch.ones(3, 8, 8)])[None]  # RMS distance 1
    assert diversity(two) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        diversity(torch.zeros(2, 1, 3, 8, 8))


def test_the_papers_rule_after_a_discriminator_update():
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.0, 0.0, 0.6, 0.7]
    d = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]  # D trained in epoch 6 (index 5)
    fixed, replaced = skip_after_d_updates(values, d)
    assert replaced == [6, 7]
    assert fixed[6] == fixed[7] == pytest.approx(np.mean([0.2, 0.3, 0.4, 0.5, 0.9]))
    assert fixed[:6] == values[:6] and fixed[8:] == values[8:]
    # D inside every epoch (the default step schedule): nothing is "right after" an update
    assert skip_after_d_updates(values, [3] * 10) == (values, [])


def test_aggregates_and_history(tmp_path):
    rows = [{"stage": "translator", "epoch": e, "pixel_loss": 1.0 / e, "d_updates": 1,
             "informativity": {"mean": v, "per_class": {"a": v}}} for e, v in enumerate([0.1, 0.3, 0.5, 0.2], 1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "transl')
    got = read_rows(tmp_path)  # the torn last line of a killed run is ignored
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    hist = informativity_history(got)
    agg = aggregates(hist, first=2, last=3, window=2)
    assert agg["mean"] == pytest.approx(0.4) and agg["mean_epochs"] == [2, 3]
    assert agg["best_moving_average"] == pytest.approx(0.4) and agg["best_window"] == [2, 3]
    # a run shorter than the range is averaged over all its epochs, and says so
    assert aggregates(hist)["mean_epochs"] == [1, 4]
    assert pixel_loss_ma(got, window=2) == pytest.approx((1 / 3 + 1 / 4) / 2)


def test_best_moving_average_chosen_on_val_reports_the_test_values_of_vals_window(tmp_path):
    """The paper picks the best window on the test split itself; chosen on val instead, the test
    split's moving average in val's best window is reported: here test peaks at epochs 2-3 (0.4),
    val at epochs 3-4, where test's moving average is (0.5 + 0.2) / 2 = 0.35."""
    test, val = [0.1, 0.3, 0.5, 0.2], [0.1, 0.2, 0.6, 0.7]
    rows = [{"stage": "translator", "epoch": e, "d_updates": 1, "informativity": {"mean": t, "per_class": {"a": t}},
             "informativity_val": {"mean": v, "per_class": {"a": v}}} for e, (t, v) in enumerate(zip(test, val), 1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    agg = aggregates(informativity_history(read_rows(tmp_path)), window=2)
    assert agg["best_moving_average"] == pytest.approx(0.4) and agg["best_window"] == [2, 3]
    assert agg["best_moving_average_by_val"] == pytest.approx(0.35) and agg["best_window_by_val"] == [3, 4]
    # without val measurements (older runs) there is no val choice to report
    for r in rows:
        del r["informativity_val"]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "best_moving_average_by_val" not in aggregates(informativity_history(read_rows(tmp_path)), window=2)


class _TinyInception(torch.nn.Module):
    """Same call as the standard TorchScript FID Inception: uint8 images, return_features."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_fid_weights_are_read_from_a_torchscript_file(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    feats = InceptionFeatures(path)(torch.zeros(2, 3, 96, 96))
    assert feats.shape == (2, 6) and torch.allclose(feats[:, :3], torch.full((2, 3), 128 / 255))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript Inception"):
        InceptionFeatures(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no such weights file"):
        InceptionFeatures(tmp_path / "missing.pt")


def test_separability_counts_which_held_out_embeddings_land_with_their_class():
    from s2i_model.evaluate.realframe import separability

    train = torch.tensor([[0.0, 0.0], [0.2, 0.0], [10.0, 0.0], [10.2, 0.0]])
    train_cls = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[0.1, 0.5], [9.0, 0.0], [6.0, 0.0], [1.0, 0.0]])
    test_cls = torch.tensor([0, 1, 0, 1])  # the last two sit nearer the other class
    assert separability(train, train_cls, test, test_cls) == {"centroid": 0.5, "nn1": 0.5}
    # a point nearest to one train sample of class 1 but nearer the class-0 centroid
    train = torch.tensor([[0.0, 0.0], [4.0, 0.0], [5.0, 0.0], [20.0, 0.0]])
    train_cls = torch.tensor([0, 0, 1, 1])
    got = separability(train, train_cls, torch.tensor([[4.6, 0.0]]), torch.tensor([1]))
    assert got == {"centroid": 0.0, "nn1": 1.0}


class _ByColour(torch.nn.Module):
    """A judge that names the class whose colour is nearest the picture's mean colour."""

    def __init__(self, colours: torch.Tensor) -> None:
        super().__init__()
        self.colours = colours

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(images.mean((2, 3)), self.colours)


def test_linear_decoder_draws_what_the_embedding_carries_and_no_more():
    from s2i_model.evaluate.realframe import linear_decoder_agreement

    g = torch.Generator().manual_seed(0)
    colours = torch.tensor([[0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [-0.8, -0.8, 0.8]])
    judge = _ByColour(colours)

    def pairs(n: int):
        cls = torch.arange(n) % 3
        images = colours[cls][:, :, None, None] + 0.3 * torch.randn(n, 3, 6, 6, generator=g)
        # the class sits in two dimensions a hundred times smaller than the third, pure noise:
        # the per-dimension standardisation is what lets least squares use them
        z = torch.cat([0.01 * F.one_hot(cls, 3)[:, :2].float() + 0.002 * torch.randn(n, 2, generator=g),
                       torch.randn(n, 1, generator=g)], 1)
        return z, images, cls

    train_z, train_images, _ = pairs(90)
    test_z, _, test_cls = pairs(30)
    assert linear_decoder_agreement(judge, train_z, train_images, test_z, test_cls) == 1.0
    # the same pictures from embeddings that say nothing of the class: about chance (1/3)
    noise = torch.randn(90, 3, generator=g)
    assert linear_decoder_agreement(judge, noise, train_images, torch.randn(30, 3, generator=g), test_cls) < 0.6
