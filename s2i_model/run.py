"""The run folder: what a trained S2I run holds, its file names, and each trained net loaded back.

    RUN/autoencoder.pt   stage 1: the audio autoencoder, its normaliser, config and build record
    RUN/embeddings.pt    the frozen encoder's embedding of every split (a cache, tagged with the build)
    RUN/translator.pt    stage 2: G and D, their optimisers, config and build record
    RUN/metrics.jsonl, RUN/tensorboard/, RUN/grids/      what training logged
    RUN/evaluation.json, RUN/evaluation-grid.png         what `s2i-model evaluate` measured

Inference (imagine, evaluate, sample, live) reads a run through this module only and never
imports a trainer; the trainers write these same names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.config import AutoencoderConfig, from_dict
from s2i_model.data import Normalizer
from s2i_model.nets import AudioAutoencoder, DenseGenerator

AUTOENCODER = "autoencoder.pt"
TRANSLATOR = "translator.pt"
EMBEDDINGS = "embeddings.pt"
EVALUATION = "evaluation.json"


# What the S2I networks take (SPEC 3): 1 s of log-mel at a 10 ms hop, 128 mel bands, 96 px frames.
# The sample rate is free: the front end keeps 128 bands and a 10 ms hop at any rate.
NET_INPUT = {"frames": 100, "mel_bins": 128, "image_size": 96}
# For runs trained before checkpoints recorded their build.
LEGACY_BUILD = {"segment_seconds": 1.0, "sample_rate": 16000, **NET_INPUT}


class RunError(Exception):
    """A run folder that cannot serve what was asked (a stage missing or unfinished, a build the
    run was not trained for): one line for the user."""


def check_build(build: Build) -> Build:
    """``build`` when the S2I networks can take its samples; otherwise one line naming the setting."""
    rec = build.record()
    if rec["frames"] != NET_INPUT["frames"]:
        raise RunError(f"{build} was built with --segment-seconds {rec['segment_seconds']:g} "
                       f"({rec['frames']} log-mel frames); the S2I networks take 1 s windows (100 frames): "
                       "rebuild with --segment-seconds 1")
    if rec["image_size"] != NET_INPUT["image_size"]:
        raise RunError(f"{build} was built with --image-size {rec['image_size']}; the S2I networks draw "
                       f"{NET_INPUT['image_size']} px pictures: rebuild with --image-size 96")
    if rec["mel_bins"] != NET_INPUT["mel_bins"]:
        raise RunError(f"{build} holds {rec['mel_bins']} mel bands; the S2I networks take 128")
    return build


def open_build(cfg) -> Build:
    """A trainer's build, reached as its config says and checked against the networks."""
    return check_build(Build.open(cfg.data, cfg.shard_url, cfg.cache_dir, cfg.skip_bad_samples))


def build_record(state: dict) -> dict:
    """The build a checkpoint was trained on (segment seconds, sample rate, shapes, fingerprint)."""
    return {**LEGACY_BUILD, **(state.get("build") or {})}


def autoencoder_state(run: str | Path, device: torch.device | str = "cpu", log=None, finished: bool = True) -> dict:
    """The stage-1 checkpoint, refused when absent (or, with ``finished``, not trained to the end)."""
    run = Path(run)
    state = checkpoint.load(run / AUTOENCODER, device, log)
    if state is None:
        raise RunError(f"{run / AUTOENCODER} not found: train the autoencoder first (s2i-model train-autoencoder)")
    cfg = from_dict(AutoencoderConfig, state["config"])
    if finished and state["epoch"] < cfg.epochs:
        raise RunError(f"the autoencoder in {run} is at epoch {state['epoch']} of {cfg.epochs}: finish it first")
    return state


def load_encoder(run: str | Path, device: torch.device | str = "cpu",
                 log=None) -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    """The trained, frozen encoder (eval mode, no gradients), its config and its normaliser."""
    return encoder_from(autoencoder_state(run, device, log), device)


def encoder_from(state: dict, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    cfg = from_dict(AutoencoderConfig, state["config"])
    ae = AudioAutoencoder(cfg.emb, cfg.width)
    ae.load_state_dict(state["model"])
    encoder = ae.encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, cfg, Normalizer(**state["normalizer"])


def translator_state(run: str | Path, device: torch.device | str = "cpu", log=None) -> dict:
    run = Path(run)
    state = checkpoint.load(run / TRANSLATOR, device, log)
    if state is None:
        raise RunError(f"{run} holds no trained translator ({TRANSLATOR}): run s2i-model train-translator")
    return state


def load_generator(run: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained generator in eval mode (its test-time dropout stays on: one sound, many pictures)."""
    state = translator_state(run, device)
    ae = state["autoencoder"]
    G = DenseGenerator(ae["emb"], ae["width"])
    G.load_state_dict(state["G"])
    return G.to(device).eval()
