"""S2I's trained model, loaded back from a run folder as a `model.SoundToImage` (`Translator`): the
frozen encoder of stage 1, the generator of stage 2, the normaliser and the build record. Each
checkpoint is checked (sizes in range, weights exactly those of the network they describe) before
a network is built from it, and read once (`run.Run.state`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2i_data import untrusted

from s2i_model import checkpoint, run as run_folder
from s2i_model.config import from_dict
from s2i_model.data import Normalizer
from s2i_model.device import pick_device
from s2i_model.model import seeded_pictures
from s2i_model.models.s2i import AUTOENCODER, TRANSLATOR
from s2i_model.models.s2i.config import AutoencoderConfig
from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator


def load(run: run_folder.Run, device: torch.device) -> "Translator":
    """The registry's loader (`ModelSpec.load`)."""
    return Translator.load(run, device)


@dataclass
class Translator:
    encoder: torch.nn.Module
    generator: torch.nn.Module
    norm: Normalizer
    device: torch.device
    build: dict = field(default_factory=lambda: dict(run_folder.LEGACY_BUILD))  # what it was trained on

    @classmethod
    def load(cls, run: "Path | run_folder.Run", device: str = "auto") -> "Translator":
        """S2I's trained encoder and generator, from a run folder opened once (`run.Run`)."""
        run = run_folder.Run.open(run)
        dev = pick_device(str(device))
        state = autoencoder_state(run, dev)
        encoder, _, norm = encoder_from(state, dev)
        return cls(encoder, load_generator(run, dev), norm, dev, run_folder.build_record(state))

    @property
    def window(self) -> tuple[float, int]:
        """(seconds, sample rate) of the sound windows it hears: those of the build it learnt from."""
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The embeddings of normalised log-mels (the encoder draws no noise)."""
        return self.encoder(mels.to(self.device))

    @torch.no_grad()
    def images(self, z: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[windows, n, 3, 96, 96]: n pictures per embedding (dropout stays on in eval mode), in
        one generator call (a long file goes through `pictures`)."""
        return next(seeded_pictures(self.generator, z, n, seed))

    @torch.no_grad()
    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """`model.SoundToImage`: normalised log-mels → [B, n, 3, 96, 96]."""
        return self.images(self.encoder(mels.to(self.device)), n, seed)

    @torch.no_grad()
    def pictures(self, z: torch.Tensor, n: int, seed: int = 0, per_call: int = 8) -> np.ndarray:
        """uint8 [windows, n, H, W, 3]: `images` drawn ``per_call`` pictures at a time (whole
        windows, at least one) and turned into bytes as they come, so a long file never holds its
        pictures as floats (60 x 8 pictures: 13 MB instead of 53) nor more than one call's
        activations (3.4 GB for 480 pictures at full width): the process stays under 400 MB RSS
        (bench/imagine.py)."""
        chunks = [x.float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 1, 3, 4, 2).cpu().numpy()
                  for x in seeded_pictures(self.generator, z, n, seed, per_call)]
        return np.concatenate(chunks)


def autoencoder_state(run: "str | Path | run_folder.Run", device: torch.device | str = "cpu", log=None,
                      finished: bool = True) -> dict:
    """The stage-1 checkpoint, refused when absent (or, with ``finished``, not trained to the end),
    and checked (`check_autoencoder`) before anything is built from it."""
    run = run_folder.Run.open(run)
    state = run.state(AUTOENCODER, device, log)
    if state is None:
        raise run_folder.RunError(f"{run.path / AUTOENCODER} not found: train the autoencoder first (s2i-model train-autoencoder)")
    cfg = check_autoencoder(state, run.path / AUTOENCODER)
    if finished and state["epoch"] < cfg.epochs:
        raise run_folder.RunError(f"the autoencoder in {run} is at epoch {state['epoch']} of {cfg.epochs}: finish it first")
    return state


def check_autoencoder(state: dict, where: Path | str) -> AutoencoderConfig:
    """The autoencoder a checkpoint describes, once its sizes are in range, its weights exactly
    those of that network, and its normaliser usable."""
    raw = untrusted.net_config(run_folder.common(state, where), str(where), "emb", "width")
    untrusted.epoch(raw.get("epochs", 0), f"{where}: config.epochs")
    cfg = from_dict(AutoencoderConfig, raw)
    checkpoint.check_net(lambda: AudioAutoencoder(cfg.emb, cfg.width), state.get("model"), f"{where}: model")
    untrusted.normaliser(state.get("normalizer"), f"{where}: normalizer")
    return cfg


def load_encoder(run: "str | Path | run_folder.Run", device: torch.device | str = "cpu",
                 log=None) -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    """The trained, frozen encoder (eval mode, no gradients), its config and its normaliser."""
    return encoder_from(autoencoder_state(run, device, log), device)


def encoder_from(state: dict, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    """The encoder of a checkpoint `autoencoder_state` has checked."""
    cfg = from_dict(AutoencoderConfig, untrusted.net_config(state["config"], AUTOENCODER, "emb", "width"))
    ae = AudioAutoencoder(cfg.emb, cfg.width)
    ae.load_state_dict(state["model"])
    encoder = ae.encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, cfg, Normalizer(**untrusted.normaliser(state["normalizer"], AUTOENCODER))


def translator_state(run: "str | Path | run_folder.Run", device: torch.device | str = "cpu", log=None) -> dict:
    """The stage-2 checkpoint, its generator's sizes and weights checked (`generator_maker`)."""
    run = run_folder.Run.open(run)
    state = run.state(TRANSLATOR, device, log)
    if state is None:
        raise run_folder.RunError(f"{run} holds no trained translator ({TRANSLATOR}): run s2i-model train-translator")
    return check_translator(state, run.path / TRANSLATOR)


def check_translator(state: dict, where: Path | str) -> dict:
    """A translator checkpoint whose recorded autoencoder sizes are in range and whose generator
    weights are exactly those of the generator they describe."""
    run_folder.common(state, where)
    checkpoint.check_net(generator_maker(state, where), state.get("G"), f"{where}: G")
    return state


def generator_maker(state: dict, where: Path | str):
    """What builds a translator checkpoint's generator: its recorded autoencoder's E and width, in range."""
    ae = untrusted.net_config(state.get("autoencoder"), str(where), "emb", "width", section="autoencoder")
    narrow = generator_narrow(state)
    return lambda: DenseGenerator(ae["emb"], ae["width"], narrow=narrow)


def generator_narrow(state: dict | None) -> bool | None:
    """Whether a translator checkpoint's generator has the narrow-width adaptations
    (`DenseGenerator`'s ``narrow``): as the checkpoint records; for one that does not say (from
    before they existed, or written by other code), whether its weights hold a BatchNorm before
    the RGB output; None (the width decides) for no checkpoint."""
    if state is None:
        return None
    gen = state.get("generator") or {}
    said = gen.get("narrow") if isinstance(gen, dict) else gen
    if said is not None:
        if not isinstance(said, bool):
            raise untrusted.Untrusted(f"{TRANSLATOR}: generator.narrow {said!r} is not true or false")
        return said
    return "layers.transition6.1.weight" not in untrusted.mapping(state.get("G") or {}, f"{TRANSLATOR}: G")


def load_generator(run: "str | Path | run_folder.Run", device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained generator in eval mode (its test-time dropout stays on: one sound, many pictures)."""
    run = run_folder.Run.open(run)
    state = translator_state(run, device)
    G = generator_maker(state, run.path / TRANSLATOR)()
    G.load_state_dict(state["G"])
    return G.to(device).eval()
