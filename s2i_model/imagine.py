"""imagine: any sound → pictures of what could be making it.

The sound goes through the very front end the shards were built with (`s2i_data.media` to decode
and `s2i_data.features` for the log-mel), cut into 1 s windows; each window's embedding is
turned into n images by the generator, whose test-time dropout makes them differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from s2i_data import features, media
from s2i_data.sources import VIDEO_EXTENSIONS

from . import checkpoint
from .config import AutoencoderConfig, from_dict
from .data import Normalizer, tensor_to_image
from .grid import save_grid
from .nets import AudioAutoencoder, DenseGenerator
from .runtime import pick_device
from .train_autoencoder import CKPT as AE_CKPT
from .train_autoencoder import TrainingError
from .train_translator import CKPT as GAN_CKPT

AUDIO_EXTENSIONS = frozenset({"wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "aiff", "aif"})
SILENCE = 1e-4  # peak amplitude under which there is nothing to hear


class ImagineError(Exception):
    """Unreadable, silent or too-short input: one line for the user."""


@dataclass
class Translator:
    encoder: torch.nn.Module
    generator: torch.nn.Module
    norm: Normalizer
    device: torch.device

    @classmethod
    def load(cls, run: Path, device: str = "auto") -> "Translator":
        dev = pick_device(device)
        ae_state = checkpoint.load(Path(run) / AE_CKPT, dev)
        gan_state = checkpoint.load(Path(run) / GAN_CKPT, dev)
        if ae_state is None or gan_state is None:
            raise TrainingError(f"{run} holds no trained translator (need {AE_CKPT} and {GAN_CKPT})")
        ae_cfg = from_dict(AutoencoderConfig, ae_state["config"])
        ae = AudioAutoencoder(ae_cfg.emb, ae_cfg.width)
        ae.load_state_dict(ae_state["model"])
        gen = DenseGenerator(ae_cfg.emb, ae_cfg.width)
        gen.load_state_dict(gan_state["G"])
        return cls(ae.encoder.to(dev).eval(), gen.to(dev).eval(), Normalizer(**ae_state["normalizer"]), dev)

    @torch.no_grad()
    def embed(self, mels: np.ndarray) -> torch.Tensor:
        x = torch.stack([self.norm(m) for m in mels]).to(self.device)
        return self.encoder(x)

    @torch.no_grad()
    def images(self, z: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
        """[windows, n, 3, 96, 96]: n pictures per embedding (dropout stays on in eval mode)."""
        torch.manual_seed(seed)
        out = self.generator(z.repeat_interleave(n, 0))
        return out.reshape(z.shape[0], n, *out.shape[1:])


def sound_windows(path: Path, seconds: float = 1.0, max_windows: int = 60) -> tuple[np.ndarray, list[float]]:
    """Log-mel of the 1 s windows of a file (evenly thinned to ``max_windows``) and their starts."""
    try:
        audio = media.decode_audio(str(path), features.SAMPLE_RATE)
    except media.MediaError as e:
        raise ImagineError(f"{path}: {e}") from None
    length = len(audio) / features.SAMPLE_RATE
    n = int(np.floor(length / seconds + 1e-6))
    if n < 1:
        raise ImagineError(f"{path}: too short ({length:.2f} s of sound; a window is {seconds:g} s)")
    if float(np.max(np.abs(audio))) < SILENCE:
        raise ImagineError(f"{path}: silent (peak below {SILENCE:g}): nothing to imagine")
    starts = [i * seconds for i in range(n)]
    if n > max_windows:
        starts = [starts[int(round(i))] for i in np.linspace(0, n - 1, max_windows)]
    return features.log_mel_segments(audio, 0.0, starts, seconds), starts


def media_files(folder: Path) -> list[Path]:
    exts = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in exts
                  and not p.name.startswith("."))


def imagine_file(tr: Translator, path: Path, n: int, grid: Path, out_dir: Path | None = None,
                 max_windows: int = 60, seed: int = 0) -> Path:
    mels, starts = sound_windows(path, max_windows=max_windows)
    imgs = tr.images(tr.embed(mels), n, seed).cpu()
    rows = [(f"{t:.0f}-{t + 1:.0f} s", None, list(imgs[i])) for i, t in enumerate(starts)]
    save_grid(rows, grid)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(starts):
            for k in range(n):
                Image.fromarray(tensor_to_image(imgs[i, k])).save(out_dir / f"{path.stem}_{t:07.1f}s_{k}.png")
    return grid


def imagine_split(tr: Translator, data: str | Path, split: str, out: Path, n: int = 4, per_class: int = 2,
                  seed: int = 0) -> Path:
    """A grid from a built split's own sounds: a row per sound, its real frame then n pictures
    (the first ``per_class`` samples of every class, by key)."""
    from .data import ShardStream

    chosen: dict[int, list] = {}
    for mel, img, cls, key in sorted(ShardStream(data, split, tr.norm, shuffle=False), key=lambda s: s[3]):
        if len(chosen.setdefault(cls, [])) < per_class:
            chosen[cls].append((key, mel, img))
    rows = [r for c in sorted(chosen) for r in chosen[c]]
    if not rows:
        raise ImagineError(f"{data}: the {split} split has no samples")
    with torch.no_grad():
        z = tr.encoder(torch.stack([m for _, m, _ in rows]).to(tr.device))
    imgs = tr.images(z, n, seed).cpu()
    return save_grid([(key, tensor_to_image(img), list(imgs[i])) for i, (key, _, img) in enumerate(rows)], out)
