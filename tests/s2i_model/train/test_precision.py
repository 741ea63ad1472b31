"""`--precision bf16` runs each trainer's networks in bfloat16 (autocast; on a CPU too), and fp32
in float32: a forward hook on every module sees the dtype of what each convolution and linear
layer gives, inside each network the trainer calls. One step of each stage, tiny widths."""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.aivae.train import train_aivaegan
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.models.sound2scene.train import train_sound2scene
from s2i_model.models.sound2scene.config import Sound2SceneConfig
from s2i_model.models.s2i.train_translator import train_translator

from runfolders import same_autoencoder

QUIET = dict(log=lambda *_: None)
TINY = dict(batch_size=8, workers=0, max_steps=1)
LAYERS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)


@contextlib.contextmanager
def layer_dtypes():
    """{network: dtypes its convolutions and linear layers output} for every forward run inside;
    a network is the outermost module called (G, D, the stage's module, ...), by class name."""
    seen: dict[str, set] = defaultdict(set)
    calls: list[torch.nn.Module] = []

    def enter(module, args):
        calls.append(module)

    def leave(module, args, out):
        calls.pop()
        if isinstance(module, LAYERS) and isinstance(out, torch.Tensor):
            seen[type(calls[0] if calls else module).__name__].add(out.dtype)

    hooks = [register_module_forward_pre_hook(enter), register_module_forward_hook(leave)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def ae_cfg(data, run, **kw):
    return AutoencoderConfig(data=str(data), run=str(run), emb=64, width=0.0625, epochs=1, optimizer="adam", **TINY,
                             **kw)


@pytest.fixture(scope="module")
def encoder_run(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("precision") / "ae"
    train_autoencoder(ae_cfg(tiny_build, run), **QUIET)
    return run


def autoencoder(data, encoder_run, run, precision):
    train_autoencoder(ae_cfg(data, run, precision=precision), **QUIET)


def translator(data, encoder_run, run, precision):
    train_translator(TranslatorConfig(data=str(data), run=str(same_autoencoder(encoder_run, run)), epochs=1, n_gd=1,
                                      grid_every=0, precision=precision, **TINY), **QUIET)


def aivaegan(data, encoder_run, run, precision):
    train_aivaegan(AivaeganConfig(data=str(data), run=str(run), width=0.0625, epochs=1, grid_every=0,
                                  precision=precision, **TINY), **QUIET)


def mmgan(data, encoder_run, run, precision):
    train_mmgan(MmganConfig(data=str(data), run=str(run), width=0.0625, epochs_features=1, epochs_multimodal=1,
                            epochs=1, grid_every=0, precision=precision, **TINY), **QUIET)


def sound2scene(data, encoder_run, run, precision):
    train_sound2scene(Sound2SceneConfig(data=str(data), run=str(run), width=0.0625, neighbours=5, epochs_visual=1,
                                        epochs_generator=1, epochs=1, grid_every=0, precision=precision, **TINY),
                      **QUIET)


# each trainer's networks, as the trainer calls them in training steps (stage modules included)
TRAINED = {
    autoencoder: {"AudioAutoencoder"},
    translator: {"DenseGenerator", "Discriminator"},
    aivaegan: {"Aivaegan", "ImageDiscriminator"},
    mmgan: {"_Features", "_ThreeInputs", "StackedGenerators", "StackedDiscriminators"},
    sound2scene: {"_TwoViews", "Generator", "Discriminator", "AudioEncoder"},
}


@pytest.mark.parametrize("trainer", list(TRAINED), ids=lambda f: f.__name__)
def test_bf16_runs_every_network_in_bfloat16(trainer, tiny_build, encoder_run, tmp_path):
    with layer_dtypes() as seen:
        trainer(tiny_build, encoder_run, tmp_path / "run", "bf16")
    not_bf16 = sorted(n for n in TRAINED[trainer] if torch.bfloat16 not in seen.get(n, ()))
    assert not not_bf16, f"under --precision bf16 these networks ran without bfloat16: {not_bf16} (seen {dict(seen)})"


@pytest.mark.parametrize("trainer", list(TRAINED), ids=lambda f: f.__name__)
def test_fp32_runs_every_network_in_float32(trainer, tiny_build, encoder_run, tmp_path):
    with layer_dtypes() as seen:
        trainer(tiny_build, encoder_run, tmp_path / "run", "fp32")
    assert set(seen) >= TRAINED[trainer]
    assert all(v == {torch.float32} for v in seen.values()), dict(seen)
