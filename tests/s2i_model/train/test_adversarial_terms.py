"""The adversarial term reaches the generator, in each trainer that has one (S2I's translator,
AIVAEGAN, the multimodal-feature GAN), and its weight is the one asked for.

Each check is one generator step from the same saved state, run by the trainer itself (tiny
widths, one batch of 8, CPU): with D as trained, and with D's last convolution zeroed, so that
its score is a constant and the term, still computed and logged, sends no gradient to G. A term
that does not reach G (its loss or D's input detached) gives G the same weights both ways."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from s2i_model import checkpoint
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.aivae.train import train_aivaegan
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.models.s2i.train_translator import train_translator
from s2i_model.models.s2i.discriminator import Discriminator
from s2i_model.models.s2i.load import generator_maker
from s2i_model.run import EMBEDDINGS

QUIET = dict(log=lambda *_: None)
TINY = dict(batch_size=8, workers=0, grid_every=0)
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's: they move in any forward


def differ(a: dict, b: dict) -> list[str]:
    """The entries of two state dicts that are not equal bit for bit (short in a failure message)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def params(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not k.endswith(BUFFERS)}


def step_from(saved: Path, dst: Path, file: str, zero: tuple[str, ...] = ()) -> Path:
    """A copy of the run ``saved`` whose checkpoint ``file`` has the weights named in ``zero``
    (``key/param``: a sub-dict of the checkpoint and a parameter in it) set to zero."""
    shutil.copytree(saved, dst)
    if zero:
        state = checkpoint.load(dst / file)
        for name in zero:
            part, param = name.split("/")
            assert param in state[part], f"{file} has no {name}"
            state[part][param] = torch.zeros_like(state[part][param])
        checkpoint.save(dst / file, state)
    return dst


# ---- S2I's translator: G minimises pixel MSE + λ · L_ma (SGD: one step is linear in λ)

@pytest.fixture(scope="module")
def s2i_saved(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("adv-s2i") / "run"
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=64, width=0.0625, batch_size=8,
                                        workers=0, epochs=1, max_steps=2, optimizer="adam"), **QUIET)
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=1, max_steps=2, n_gd=1, **TINY),
                     **QUIET)
    # D's score is conv → BatchNorm → tanh, and G's term sees D in eval mode. After two steps the
    # running statistics are far from G's pictures: the tanh sat at exactly -1 for every picture
    # (adv_loss 4.0; pre-tanh scores near -6000 on an AMD Zen 3, one torch thread), which passes no
    # gradient to G whatever the code does; scaling the last convolution did not help there. The
    # score's BatchNorm is set to standardise the scores of G's pictures at this state (γ = 0.5):
    # every score in the tanh's slope, so a G that does not move is the code's fault.
    state = checkpoint.load(run / "translator.pt")
    ae = state["autoencoder"]
    G, D = generator_maker(state, run)(), Discriminator(ae["emb"], ae["width"])
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    z = checkpoint.load(run / EMBEDDINGS)["train"]["emb"][:8]
    with torch.no_grad():
        fake = G.train()(z)  # as G draws in its step
        D.eval()
        x = D.score[0](torch.cat([D.features(fake), z.reshape(len(z), -1, 2, 2)], 1)).flatten()
    state["D"]["score.1.running_mean"] = x.mean().reshape(1)
    state["D"]["score.1.running_var"] = x.var().reshape(1)
    state["D"]["score.1.weight"] = torch.full((1,), 0.5)
    state["D"]["score.1.bias"] = torch.zeros(1)
    checkpoint.save(run / "translator.pt", state)
    return run


def s2i_step(data: Path, saved: Path, dst: Path, lam: float, zero: tuple[str, ...] = ()) -> dict:
    run = step_from(saved, dst, "translator.pt", zero)
    state = train_translator(TranslatorConfig(data=str(data),
                                              run=str(run), epochs=2, max_steps=1, n_gd=1, lam=lam, **TINY), **QUIET)
    assert state["epoch"] == 2 and state["config"]["lam"] == lam
    return state


def test_s2i_adversarial_term_reaches_g_with_weight_lambda(tiny_build, s2i_saved, tmp_path):
    """One G step (SGD, the paper's) from the same saved state at λ = 0, 1, 2, and at λ = 1 with
    D's score made constant. λ = 0 gives the very weights of the run whose term sends no
    gradient; the step moves G by −lr·λ·∂L_ma/∂θ more than the pixel term's, so λ = 2 moves it
    twice as far as λ = 1, in the same direction."""
    states = {lam: s2i_step(tiny_build, s2i_saved, tmp_path / f"lam{lam:g}", lam) for lam in (0.0, 1.0, 2.0)}
    g = {lam: state["G"] for lam, state in states.items()}
    flat = s2i_step(tiny_build, s2i_saved, tmp_path / "flat", 1.0, zero=("D/score.0.weight",))
    assert flat["last"]["adv_loss"] > 0  # the term was there, only without a gradient
    assert 0 < states[0.0]["last"]["adv_loss"] < 3.9, \
        "D's tanh is saturated at the saved state: no gradient can reach G (the test's set-up, not the code)"
    unlike, moved = differ(flat["G"], g[0.0]), differ(g[1.0], g[0.0])
    assert unlike == [], "λ = 0 is not the run without the adversarial term"
    assert moved, "the adversarial term did not reach G's weights (detached?)"

    def moved(lam: float) -> torch.Tensor:
        return torch.cat([(g[lam][k] - g[0.0][k]).flatten() for k in params(g[0.0])])

    d1, d2 = moved(1.0), moved(2.0)
    ratio = float(d2.norm() / d1.norm())
    cosine = float(torch.nn.functional.cosine_similarity(d1, d2, dim=0))
    print(f"\nG's step beyond the pixel term's, λ = 2 against λ = 1: {ratio:.5f}× as long, cosine {cosine:.6f}")
    assert ratio == pytest.approx(2.0, rel=0.02) and cosine > 0.999, \
        f"G moved {ratio:.3f}× as far at λ = 2 as at λ = 1 (cosine {cosine:.4f}): λ does not weight the term"


# ---- AIVAEGAN: the generator minimises −log D(G(f)) + α·reconstruction + KL

@pytest.fixture(scope="module")
def aivaegan_saved(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("adv-aivaegan") / "run"
    train_aivaegan(AivaeganConfig(data=str(tiny_build), run=str(run), width=0.0625, epochs=1, max_steps=1, **TINY),
                   **QUIET)
    return run


def aivaegan_step(data: Path, saved: Path, dst: Path, alpha: float = 2.0, zero: tuple[str, ...] = ()) -> dict:
    run = step_from(saved, dst, "aivaegan.pt", zero)
    # lr_d = 0: D's step before G's leaves it as saved (a zeroed last layer stays zero)
    cfg = AivaeganConfig(data=str(data), run=str(run), width=0.0625,
                         epochs=2, max_steps=1, alpha=alpha, lr_d=0.0, **TINY)
    return train_aivaegan(cfg, **QUIET)


def test_aivaegan_gan_term_reaches_the_generator_and_alpha_counts(tiny_build, aivaegan_saved, tmp_path):
    on = aivaegan_step(tiny_build, aivaegan_saved, tmp_path / "on")
    flat = aivaegan_step(tiny_build, aivaegan_saved, tmp_path / "flat", zero=("D/layers.conv6.weight",))
    assert differ(params(on["D"]), params(flat["D"])) == ["layers.conv6.weight"]  # lr_d = 0: D as saved
    moved = differ(on["vae"], flat["vae"])
    assert moved, "the GAN term did not reach the generator's weights (detached?)"
    other_alpha = aivaegan_step(tiny_build, aivaegan_saved, tmp_path / "alpha", alpha=0.5)
    moved = differ(on["vae"], other_alpha["vae"])
    assert moved, "α does not weight the reconstruction term"


# ---- the multimodal-feature GAN's cGANs: G minimises the GAN terms + λ_L1·L1; D's loss × d_weight

@pytest.fixture(scope="module")
def mmgan_saved(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("adv-mmgan") / "run"
    train_mmgan(MmganConfig(data=str(tiny_build), run=str(run), width=0.0625, epochs_features=0,
                            epochs_multimodal=1, epochs=0, max_steps=1, **TINY), **QUIET)
    assert checkpoint.load(run / "mmgan.pt")["stage"] == "multimodal"  # the cGANs start from here
    return run


MMGAN_D_LAST = ("nets/discriminators.feature.layers.conv5.weight", "nets/discriminators.image.layers.conv5.weight")


def mmgan_step(data: Path, saved: Path, dst: Path, d_weight: float = 0.0, l1_weight: float = 100.0,
               zero: tuple[str, ...] = ()) -> dict:
    run = step_from(saved, dst, "mmgan.pt", zero)
    cfg = MmganConfig(data=str(data), run=str(run), width=0.0625,
                      epochs_features=0, epochs_multimodal=1, epochs=1, max_steps=1, d_weight=d_weight,
                      l1_weight=l1_weight, **TINY)
    state = train_mmgan(cfg, **QUIET)
    assert state["stage"] == "gan" and state["epoch"] == 1
    return state


def sub(nets: dict, prefix: str) -> dict:
    return {k: v for k, v in params(nets).items() if k.startswith(prefix)}


def test_mmgan_adversarial_terms_reach_both_generators_and_the_weights_are_used(tiny_build, mmgan_saved, tmp_path):
    """d_weight = 0: D's first step (a fresh Adam on a zero gradient) leaves its weights as saved,
    so the runs differ only in D's last layers at G's step."""
    before = checkpoint.load(mmgan_saved / "mmgan.pt")["nets"]
    on = mmgan_step(tiny_build, mmgan_saved, tmp_path / "on")["nets"]
    changed = differ(sub(on, "discriminators."), sub(before, "discriminators."))
    assert changed == [], "D's loss weight (0 here) is not applied"
    flat = mmgan_step(tiny_build, mmgan_saved, tmp_path / "flat", zero=MMGAN_D_LAST)["nets"]
    for g in ("generators.feature.", "generators.image."):  # G1 against D1, G2 against D2
        moved = differ(sub(on, g), sub(flat, g))
        assert moved, f"the GAN term did not reach {g[:-1]} (detached?)"
    other_l1 = mmgan_step(tiny_build, mmgan_saved, tmp_path / "l1", l1_weight=10.0)["nets"]
    moved = differ(sub(on, "generators."), sub(other_l1, "generators."))
    assert moved, "λ_L1 does not weight the L1 term"
    trained_d = mmgan_step(tiny_build, mmgan_saved, tmp_path / "d", d_weight=0.001)["nets"]
    changed = differ(sub(trained_d, "discriminators."), sub(before, "discriminators."))
    assert changed, "D did not train at d_weight 0.001"
