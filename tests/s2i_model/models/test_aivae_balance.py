"""AIVAE / AIVAEGAN's balance of reconstruction, KL and α·GAN (`--balance`, docs/models.md):
"paper" weighs the per-picture sum of −log p(i|f) by 784/(C·H·W), so the terms keep the paper's
28×28 ratios; "sum" is every value summed, the loss of every run before the option, bit for bit.

The loss is checked against the Bernoulli likelihood written out here in float64, on numbers
known by hand, and inside the trainer: its first step (before any update, the same batch and
forward under both balances) logs reconstruction, KL and GAN terms that must stand in the ratio
the algebra says. A checkpoint from before the option (no `balance` in its config) is a "sum" run.
"""

from __future__ import annotations

import math
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from s2i_model import checkpoint
from s2i_model.models.aivae import train as vae_train
from s2i_model.models.aivae.config import AivaeConfig
from s2i_model.models.aivae.train import reconstruction, train_aivae, train_aivaegan
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.train.runtime import TrainingError

QUIET = dict(log=lambda *_: None)
TINY = dict(width=0.0625, batch_size=8, workers=0, grid_every=0)
OURS = 3 * 96 * 96  # 27,648 values per picture
PAPER = 28 * 28  # 784


def bernoulli_nll(logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """−log p(i|f) per picture, written out in float64: −Σ [t log σ(x) + (1 − t) log(1 − σ(x))],
    t the frame in [0, 1]."""
    x, t = logits.double(), (image.double() + 1) / 2
    p = torch.sigmoid(x)
    return -(t * torch.log(p) + (1 - t) * torch.log1p(-p)).flatten(1).sum(1)


def before_the_option(logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The reconstruction term as it was before `--balance` (train.py at 597b614), verbatim."""
    target = (image + 1) / 2
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / image.shape[0]


def test_known_numbers():
    """Logits 0 (σ = ½) against a grey frame (t = ½): each value costs log 2 exactly. A picture
    of ours then costs 27,648·log 2 summed, and 784·log 2, the paper's picture, under "paper"."""
    logits, image = torch.zeros(2, 3, 96, 96), torch.zeros(2, 3, 96, 96)
    assert reconstruction(logits, image, "sum").item() == pytest.approx(OURS * math.log(2), rel=1e-6)
    assert reconstruction(logits, image, "paper").item() == pytest.approx(PAPER * math.log(2), rel=1e-6)
    # a picture of the paper's size (28×28 grey) is the paper's sum under both balances
    small_logits, small = torch.full((4, 1, 28, 28), 2.0), torch.ones(4, 1, 28, 28)  # t = 1: log(1 + e^-2) each
    for balance in ("paper", "sum"):
        assert reconstruction(small_logits, small, balance).item() == pytest.approx(PAPER * math.log1p(math.exp(-2)),
                                                                                    rel=1e-6)


@pytest.mark.parametrize("shape", [(5, 3, 96, 96), (3, 3, 48, 40), (2, 1, 28, 28)])
def test_each_balance_against_the_likelihood_by_hand(shape):
    g = torch.Generator().manual_seed(7)
    logits = 3 * torch.randn(shape, generator=g)
    image = torch.rand(shape, generator=g) * 2 - 1
    nll = bernoulli_nll(logits, image).mean().item()  # per picture, mean over the batch
    values = shape[1] * shape[2] * shape[3]
    assert reconstruction(logits, image, "sum").item() == pytest.approx(nll, rel=1e-5)
    assert reconstruction(logits, image, "paper").item() == pytest.approx(nll * PAPER / values, rel=1e-5)


def test_sum_is_the_loss_before_the_option_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    for shape in [(8, 3, 96, 96), (1, 3, 96, 96), (16, 3, 96, 96), (6, 3, 96, 96)]:
        logits, image = 4 * torch.randn(shape, generator=g), torch.rand(shape, generator=g) * 2 - 1
        now, then = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        a, b = reconstruction(now, image, "sum"), before_the_option(then, image)
        a.backward(), b.backward()
        assert torch.equal(a, b) and torch.equal(now.grad, then.grad)  # the value and the step it gives
    with pytest.raises(ValueError, match="--balance must be paper or sum"):
        reconstruction(logits, image, "mean")


def first_row(run) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize("model", ["aivae", "aivaegan"])
def test_the_trainer_weighs_the_terms_as_the_algebra_says(model, tiny_build, tmp_path):
    """One step from the same seed under each balance: the same batch and forward, so KL (and the
    GAN term, D's step being on the same pictures) are equal and the reconstruction is 784/27,648
    of the sum; the loss the generator minimised is GAN + α·reconstruction + KL under both."""
    make, cfg = (train_aivae, AivaeConfig) if model == "aivae" else (train_aivaegan, AivaeganConfig)
    rows = {}
    for balance in ("paper", "sum"):
        run = tmp_path / balance
        make(cfg(data=str(tiny_build), run=str(run), epochs=1, max_steps=1, balance=balance, **TINY), **QUIET)
        rows[balance] = first_row(run)
    paper, summed = rows["paper"], rows["sum"]
    assert paper["recon_loss"] == pytest.approx(summed["recon_loss"] * PAPER / OURS, rel=1e-6)
    assert paper["kl"] == summed["kl"]
    alpha = AivaeganConfig.alpha if model == "aivaegan" else 1.0
    for r in (paper, summed):
        adv = r.get("adv_loss", 0.0)
        assert r["train_loss"] == pytest.approx(adv + alpha * r["recon_loss"] + r["kl"], rel=1e-6)
    if model == "aivaegan":
        assert paper["adv_loss"] == summed["adv_loss"]
    # the KL's share of the objective: 27,648/784 ≈ 35× larger under the paper's balance
    assert (paper["kl"] / paper["recon_loss"]) / (summed["kl"] / summed["recon_loss"]) == pytest.approx(OURS / PAPER)


@pytest.mark.parametrize("model", ["aivae", "aivaegan"])
def test_a_sum_run_is_a_run_before_the_option_bit_for_bit(model, tiny_build, tmp_path, monkeypatch):
    """Two steps with --balance sum, and two with the trainer's loss replaced by the one before
    the option: the same weights, bit for bit (and the same logged numbers)."""
    make, cfg = (train_aivae, AivaeConfig) if model == "aivae" else (train_aivaegan, AivaeganConfig)
    settings = dict(data=str(tiny_build), epochs=1, max_steps=2, balance="sum", **TINY)
    now = make(cfg(run=str(tmp_path / "now"), **settings), **QUIET)
    monkeypatch.setattr(vae_train, "reconstruction", lambda logits, image, balance: before_the_option(logits, image))
    then = make(cfg(run=str(tmp_path / "then"), **settings), **QUIET)
    assert now["vae"].keys() == then["vae"].keys()
    assert all(torch.equal(now["vae"][k], then["vae"][k]) for k in now["vae"])
    timing = ("seconds", "samples_per_s")
    assert {k: v for k, v in now["last"].items() if k not in timing} == \
        {k: v for k, v in then["last"].items() if k not in timing}


def test_a_checkpoint_from_before_the_option_is_a_sum_run(tiny_build, tmp_path):
    """A checkpoint whose config has no balance resumes as "sum" (the same weights as a run that
    never stopped); the default "paper" is refused in one line, a finished run is left alone,
    and its pictures are read back as any run's."""
    settings = dict(data=str(tiny_build), max_steps=1, **TINY)
    straight = train_aivae(AivaeConfig(run=str(tmp_path / "straight"), epochs=2, balance="sum", **settings), **QUIET)
    run = tmp_path / "old"
    train_aivae(AivaeConfig(run=str(run), epochs=1, balance="sum", **settings), **QUIET)
    state = checkpoint.load(run / "aivae.pt")
    del state["config"]["balance"]  # as every checkpoint written before the option
    checkpoint.save(run / "aivae.pt", state)
    with pytest.raises(TrainingError, match="trained with --balance sum, not paper"):
        train_aivae(AivaeConfig(run=str(run), epochs=2, **settings), **QUIET)
    resumed = train_aivae(AivaeConfig(run=str(run), epochs=2, balance="sum", **settings), **QUIET)
    assert all(torch.equal(straight["vae"][k], resumed["vae"][k]) for k in straight["vae"])
    said = []
    train_aivae(AivaeConfig(run=str(run), epochs=2, **settings), log=said.append)  # finished: nothing to do
    assert len(said) == 1 and "nothing to do" in said[0]
    from s2i_model.run import load_model

    assert load_model(run, "cpu").sound_pictures(torch.zeros(1, 1, 128, 100), 2, 0).shape == (1, 2, 3, 96, 96)


def test_a_bad_balance_is_one_line(tiny_build, tmp_path):
    with pytest.raises(ValueError, match="--balance must be paper or sum, not 'mean'"):
        train_aivae(AivaeConfig(data=str(tiny_build), run=str(tmp_path / "direct"), balance="mean", **TINY), **QUIET)
    for args in (["train-aivae", "--balance", "mean"], ["train", "--model", "aivaegan", "--balance", "Paper"]):
        r = subprocess.run([sys.executable, "-m", "s2i_model.cli", *args, "--data", str(tiny_build),
                            "--run", str(tmp_path / "r")], capture_output=True, text=True)
        assert r.returncode != 0 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
        assert "--balance must be paper or sum" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()  # refused before the run folder is made
