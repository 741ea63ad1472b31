"""A built-in synthetic audiovisual data set, so the pipeline runs and is tested with no download.

``synth()`` writes real H.264 + AAC MP4 files in the VEGAS layout
(``<out>/<class>/<class>_NNN.mp4``) for the five classes the Sound-to-Imagination paper uses.
Every class has its own sound and look, varied per video (pitch, rhythm, colour, position), and
sound and picture move together where that is natural (firework dots appear with the bangs, the
baby's mouth opens while it cries), so a model has something real to learn without the task
being trivial.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from s2i_data import storage
from s2i_data.media import ffmpeg_exe

PAPER_CLASSES = ("baby", "dog", "rail", "fireworks", "water")

WIDTH, HEIGHT = 160, 120  # landscape on purpose: a centre crop must throw something away
FPS = 25
SAMPLE_RATE = 22050

_IMAGE_GRAIN = 0.015  # std of the luma grain added to every frame, on a 0..1 scale
_GRAIN_BANK = 16
_AUDIO_FLOOR = 0.003  # std of the per-channel hiss, relative to full scale


@dataclass(frozen=True)
class _Canvas:
    """Geometry and timing shared by the picture and the sound of one video."""

    n_frames: int
    n_samples: int

    @property
    def duration(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def frame_times(self) -> np.ndarray:
        return np.arange(self.n_frames, dtype=np.float64) / FPS

    def sample_times(self) -> np.ndarray:
        return np.arange(self.n_samples, dtype=np.float64) / SAMPLE_RATE


# planar (T, 3, H, W) while drawing: broadcasting a colour over a trailing axis of 3 is several
# times slower in numpy than over whole rows; it is interleaved to rgb24 only for the encoder
Frames = np.ndarray  # (T, 3, H, W) float32 in 0..1
Mono = np.ndarray  # (N,) float64, any scale: it is peak-normalised afterwards
_Maker = Callable[[np.random.Generator, _Canvas], tuple[Frames, Mono, float]]


# --------------------------------------------------------------------------- shared helpers


def _grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return yy, xx


def _colour(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)


def _paint(frames: Frames, alpha: np.ndarray, rgb) -> None:
    """Composite a colour over frames in place; alpha broadcasts to (T, H, W)."""
    # plane by plane: temporaries a third the size stay under malloc's mmap threshold and get
    # reused, where whole-video temporaries would be fresh pages (page faults) every time
    for plane, value in zip(frames.swapaxes(0, 1), np.asarray(rgb, dtype=np.float32)):
        plane += alpha * (value - plane)


def _paint_ellipse(frames: Frames, cy, cx, ry, rx, rgb, soft: float = 1.5) -> None:
    """Paint an ellipse with a soft rim (no aliased staircase); centre and radii may vary per frame.

    Only the box the ellipse can reach in any frame is computed: shapes are small, frames many.
    """
    # float32 throughout: a float64 scalar would silently promote the whole box
    cy, cx = np.asarray(cy, np.float32), np.asarray(cx, np.float32)
    ry, rx = np.maximum(ry, 0.5).astype(np.float32), np.maximum(rx, 0.5).astype(np.float32)
    r0, r1 = int(max(np.min(cy - ry) - 2, 0)), int(min(np.max(cy + ry) + 3, HEIGHT))
    c0, c1 = int(max(np.min(cx - rx) - 2, 0)), int(min(np.max(cx + rx) + 3, WIDTH))
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    alpha = np.clip((1.0 - d) * np.minimum(ry, rx) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    _paint(frames[:, :, r0:r1, c0:c1], alpha, rgb)


def _jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A dull background of any hue, so the background alone never gives the class away."""
    grey = rng.uniform(0.35, 0.75)
    return np.clip(grey + rng.uniform(-0.12, 0.12, 3), 0.0, 1.0).astype(np.float32)


def _blank(colour, n_frames: int = 1) -> Frames:
    return np.broadcast_to(_colour(colour), (n_frames, 3, HEIGHT, WIDTH)).copy()


def _bursts(rng, duration: float, length: tuple[float, float], gap: tuple[float, float],
            first: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping (start, length) events with random lengths and gaps: an irregular rhythm."""
    starts, lengths = [], []
    t = rng.uniform(0.0, first)
    while t < duration:
        n = rng.uniform(*length)
        starts.append(t)
        lengths.append(n)
        t += n + rng.uniform(*gap)
    return np.array(starts), np.array(lengths)


def _burst_phase(t: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Per time: index of the burst it falls in, position 0..1 within it, and whether inside."""
    if len(starts) == 0:
        zeros = np.zeros_like(t)
        return zeros.astype(int), zeros, zeros.astype(bool)
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    u = (t - starts[idx]) / lengths[idx]
    return idx, u, (u >= 0.0) & (u < 1.0)


def _band_noise(rng, n: int, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
    """Noise limited to lo..hi Hz with a 1/f**tilt slope, shaped in the frequency domain."""
    # a power-of-two length keeps the FFT fast whatever n is (n may have a large prime factor)
    m = 1 << max(int(n - 1).bit_length(), 1)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)
    # smooth shoulders rather than a brick wall, which would ring audibly
    gain = 1.0 / (1.0 + (lo / np.maximum(f, 1e-3)) ** 4) / (1.0 + (f / hi) ** 4)
    gain /= np.maximum(f, 20.0) ** (tilt / 2.0)
    out = np.fft.irfft(spec * gain, m)[:n]
    return out / (np.std(out) + 1e-12)


def _decay(n: int, tau: float, attack: float = 0.004) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return np.minimum(t / attack, 1.0) * np.exp(-t / tau)


def _add_at(buf: np.ndarray, start: float, piece: np.ndarray) -> None:
    i = int(start * SAMPLE_RATE)
    if i >= len(buf):
        return
    piece = piece[: len(buf) - i]
    buf[i : i + len(piece)] += piece


def _at_frames(c: _Canvas, signal_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.interp(c.frame_times(), signal_times, values)


# --------------------------------------------------------------------------- baby


def _baby_sound(rng, c: _Canvas, starts, lengths) -> Mono:
    t = c.sample_times()
    idx, u, inside = _burst_phase(t, starts, lengths)
    f0 = rng.uniform(350.0, 600.0)
    glide = rng.uniform(0.05, 0.25, max(len(starts), 1))  # each cry arches up then down
    vib_rate, vib_depth = rng.uniform(4.5, 7.5), rng.uniform(0.015, 0.045)
    f = f0 * (1.0 + glide[idx] * np.sin(np.pi * np.clip(u, 0, 1))
              + vib_depth * np.sin(2 * np.pi * vib_rate * t))
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    rolloff = rng.uniform(0.8, 1.6)
    tone = sum(np.sin(k * phase) / k**rolloff for k in range(1, 7))
    env = np.where(inside, np.clip(u / 0.08, 0, 1) * np.clip((1 - u) / 0.2, 0, 1), 0.0)
    breath = 0.15 * _band_noise(rng, c.n_samples, 1500.0, 6000.0)
    return env * (tone + breath)


def _baby_look(rng, c: _Canvas, mouth: np.ndarray) -> Frames:
    t = c.frame_times()[:, None, None].astype(np.float32)
    m = mouth[:, None, None].astype(np.float32)
    skin = _jitter(rng, (0.95, 0.68, 0.45) if rng.random() < 0.5 else (1.0, 0.58, 0.25), 0.06)
    ry = rng.uniform(0.22, 0.35) * HEIGHT
    rx = ry * rng.uniform(0.85, 1.15)
    cy0, cx0 = rng.uniform(0.38, 0.62) * HEIGHT, rng.uniform(0.3, 0.7) * WIDTH
    wob_f, wob_a = rng.uniform(0.2, 0.6), rng.uniform(1.0, 4.0)
    cy = cy0 + wob_a * np.sin(2 * np.pi * wob_f * t)
    cx = cx0 + wob_a * np.cos(2 * np.pi * wob_f * 0.7 * t)
    frames = _blank(_muted_colour(rng), c.n_frames)
    _paint_ellipse(frames, cy, cx, ry * (1 + 0.05 * m), rx * (1 + 0.05 * m), skin)
    for side in (-1, 1):  # eyes squeeze shut while crying
        _paint_ellipse(frames, cy - 0.25 * ry, cx + side * 0.35 * rx,
                       0.09 * ry * (1 - 0.7 * m) + 0.6, 0.1 * rx, skin * 0.35, soft=0.8)
    _paint_ellipse(frames, cy + 0.4 * ry, cx, 0.2 * ry * m + 0.6, 0.25 * rx, (0.35, 0.08, 0.08),
                   soft=0.8)
    return frames


def _baby(rng, c: _Canvas):
    starts, lengths = _bursts(rng, c.duration, length=(0.35, 1.1), gap=(0.12, 0.5))
    audio = _baby_sound(rng, c, starts, lengths)
    _, u, inside = _burst_phase(c.frame_times(), starts, lengths)
    mouth = np.where(inside, np.sin(np.pi * np.clip(u, 0, 1)) ** 0.5, 0.0)
    return _baby_look(rng, c, mouth), audio, rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- dog


def _dog_sound(rng, c: _Canvas, starts, lengths) -> Mono:
    out = np.zeros(c.n_samples)
    f0 = rng.uniform(250.0, 550.0)
    noise_mix = rng.uniform(0.3, 0.7)
    for s, n in zip(starts, lengths):
        k = int(n * SAMPLE_RATE)
        u = np.arange(k) / k
        f = f0 * rng.uniform(0.9, 1.1) * (1.2 - 0.4 * u)  # a bark falls in pitch
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        voiced = sum(np.sin(h * phase) / h for h in range(1, 11))
        rough = _band_noise(rng, k, 400.0, 4000.0)
        env = _decay(k, tau=n / 2.5, attack=0.008)
        _add_at(out, s, env * ((1 - noise_mix) * voiced + noise_mix * 1.5 * rough))
    return out


def _dog_look(rng, c: _Canvas, bark: np.ndarray) -> Frames:
    yy, xx = _grid()
    b = bark[:, None, None].astype(np.float32)
    brown = _jitter(rng, (0.45, 0.28, 0.12), 0.07)
    face = rng.choice([-1.0, 1.0])
    bry, brx = rng.uniform(0.12, 0.18) * HEIGHT, rng.uniform(0.2, 0.28) * WIDTH
    cy, cx = rng.uniform(0.45, 0.7) * HEIGHT, rng.uniform(0.35, 0.65) * WIDTH
    ground = rng.uniform(0.7, 0.85) * HEIGHT
    # the body stands still: draw it once, then copy it into every frame
    still = _blank(_muted_colour(rng))
    _paint(still, (yy > ground).astype(np.float32), _muted_colour(rng) * 0.8)
    for leg in (-0.6, -0.3, 0.3, 0.6):
        legs = (np.abs(xx - (cx + leg * brx)) < 3) & (yy > cy) & (yy < cy + bry * 2.2)
        _paint(still, legs.astype(np.float32), brown)
    _paint_ellipse(still, cy, cx, bry, brx, brown)
    frames = np.repeat(still, c.n_frames, axis=0)
    # the head jerks up on every bark
    hy, hx = cy - bry * 1.1 - 4.0 * b, cx + face * brx * 0.95
    _paint_ellipse(frames, hy, hx, bry * 0.8, bry * 0.9, brown)
    _paint_ellipse(frames, hy + bry * 0.6, hx - face * bry * 0.5, bry * 0.5, bry * 0.25,
                   brown * 0.7)
    return frames


def _dog(rng, c: _Canvas):
    starts, lengths = _bursts(rng, c.duration, length=(0.08, 0.2), gap=(0.12, 0.9))
    audio = _dog_sound(rng, c, starts, lengths)
    _, _, inside = _burst_phase(c.frame_times(), starts, lengths)
    bark = inside.astype(np.float64)
    return _dog_look(rng, c, bark), audio, rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- rail


def _rail_sound(rng, c: _Canvas, period: float) -> Mono:
    t = c.sample_times()
    f = rng.uniform(40.0, 120.0)
    hum = sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    rumble = _band_noise(rng, c.n_samples, 20.0, 200.0, tilt=1.0)
    sway = 1.0 + 0.25 * np.sin(2 * np.pi * t / period)  # the bogies rock once per rail joint
    out = sway * (0.6 * hum + rumble)
    gap = rng.uniform(0.08, 0.2)  # front and back wheel of one bogie over the same joint
    clack_gain = rng.uniform(0.8, 1.5)
    for s in np.arange(rng.uniform(0, period), c.duration, period):
        for d in (0.0, gap):
            k = int(0.04 * SAMPLE_RATE)
            _add_at(out, s + d, clack_gain * _decay(k, 0.01) * _band_noise(rng, k, 800.0, 5000.0))
    return out


def _rail_look(rng, c: _Canvas, period: float) -> Frames:
    _, xx = _grid()
    t = c.frame_times()[:, None, None].astype(np.float32)
    edges = np.sort(rng.uniform(0, HEIGHT, rng.integers(3, 7)))
    band = np.searchsorted(edges, np.arange(HEIGHT))
    greys = rng.uniform(0.3, 0.75, len(edges) + 1)
    tint = rng.uniform(-0.03, 0.03, 3)
    rows = (greys[band][None, :] + tint[:, None]).astype(np.float32)  # (3, H)
    frames = np.repeat(np.repeat(rows[None, :, :, None], WIDTH, axis=3), c.n_frames, axis=0)
    # one carriage seam passes per clack period, so the picture keeps time with the sound
    seam_every = rng.uniform(60.0, 140.0)
    speed = seam_every / period * rng.choice([-1.0, 1.0])
    pos = np.mod(xx[None, :1] - speed * t, seam_every)  # (T, 1, W): bands are uniform along y
    top, bottom = np.sort(rng.uniform(0.2, 0.8, 2) * HEIGHT)
    top, bottom = int(top), int(max(bottom, top + 25.0))
    train = frames[:, :, top:bottom]
    _paint(train, (pos < 3.0).astype(np.float32), (0.12, 0.12, 0.12))
    pane = np.mod(pos, seam_every / 3)
    windows = train[:, :, int(0.2 * (bottom - top)) : int(0.5 * (bottom - top))]
    _paint(windows, ((pane > seam_every / 12) & (pane < seam_every / 5)) * np.float32(0.6),
           (0.2, 0.22, 0.25))
    return frames


def _rail(rng, c: _Canvas):
    period = rng.uniform(0.35, 0.9)
    return _rail_look(rng, c, period), _rail_sound(rng, c, period), rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- fireworks


def _fireworks_sound(rng, c: _Canvas, bangs: np.ndarray) -> Mono:
    out = 0.02 * _band_noise(rng, c.n_samples, 50.0, 2000.0, tilt=1.0)
    for s in bangs:
        k = int(rng.uniform(0.8, 1.5) * SAMPLE_RATE)
        boom = _decay(k, rng.uniform(0.15, 0.45)) * _band_noise(rng, k, 30.0, rng.uniform(150, 400))
        crack = _decay(k, 0.03, attack=0.001) * _band_noise(rng, k, 200.0, 8000.0)
        # the crackle thins out as the sparks burn away
        density = 0.004 * np.exp(-np.arange(k) / (0.4 * SAMPLE_RATE))
        crackle = (rng.random(k) < density) * rng.uniform(-1, 1, k)
        _add_at(out, s, rng.uniform(0.6, 1.0) * (1.6 * boom + 0.8 * crack + 0.8 * crackle))
    return out


# a soft 3x3 spark: a single pixel would not survive the encoder's chroma subsampling
_SPARK = [(dy, dx, 1.0 if dy == dx == 0 else 0.5 if dy == 0 or dx == 0 else 0.25)
          for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _fireworks_look(rng, c: _Canvas, bangs: np.ndarray) -> Frames:
    sky = _jitter(rng, (0.02, 0.03, 0.08), 0.02)
    frames = _blank(sky, c.n_frames)
    stars_y, stars_x = rng.integers(0, HEIGHT, 12), rng.integers(0, WIDTH, 12)
    frames[:, :, stars_y, stars_x] += 0.15
    gravity = rng.uniform(15.0, 35.0)
    ft = c.frame_times()
    for tb in bangs:
        n = int(rng.integers(25, 60))
        cy, cx = rng.uniform(0.15, 0.6) * HEIGHT, rng.uniform(0.15, 0.85) * WIDTH
        hue = rng.uniform(0.0, 0.5, 3)
        hue[rng.integers(3)] = 1.0  # always one channel at full: a bright, saturated spark
        colours = np.where(rng.random((n, 1)) < 0.15, 1.0, hue)  # a few white ones
        angle, speed = rng.uniform(0, 2 * np.pi, n), rng.uniform(15.0, 55.0, n)
        tau = rng.uniform(0.7, 1.4)
        after = np.flatnonzero(ft >= tb)  # the sparks exist from the bang on
        dt = (ft[after] - tb)[:, None]  # (F, 1) against n sparks
        y = np.floor(cy + np.sin(angle) * speed * dt + 0.5 * gravity * dt**2).astype(int)
        x = np.floor(cx + np.cos(angle) * speed * dt).astype(int)
        glow = colours[None] * np.exp(-dt / tau)[..., None]  # (F, n, 3)
        frame = np.broadcast_to(after[:, None], y.shape)
        for dy, dx, w in _SPARK:
            ok = (y + dy >= 0) & (y + dy < HEIGHT) & (x + dx >= 0) & (x + dx < WIDTH)
            for ch in range(3):
                np.add.at(frames, (frame[ok], ch, y[ok] + dy, x[ok] + dx), w * glow[..., ch][ok])
        flash = after[: int(0.5 * FPS)]  # the flash lights the whole sky briefly
        glare = 0.08 * np.exp(-(ft[flash] - tb) / 0.08)
        frames[flash] += glare.astype(np.float32)[:, None, None, None]
    return frames


def _fireworks(rng, c: _Canvas):
    bangs, _ = _bursts(rng, c.duration, length=(0.0, 0.0), gap=(0.6, 1.8), first=0.8)
    return _fireworks_look(rng, c, bangs), _fireworks_sound(rng, c, bangs), 0.9


# --------------------------------------------------------------------------- water


def _water_swell(rng, c: _Canvas):
    """Slow loudness swell shared by the sound and the ripples, at audio-sample times."""
    t = c.sample_times()
    rate, depth, phase = rng.uniform(0.15, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
    return t, 1.0 + depth * np.sin(2 * np.pi * rate * t + phase)


def _water_sound(rng, c: _Canvas, swell: np.ndarray) -> Mono:
    out = swell * _band_noise(rng, c.n_samples, 60.0, rng.uniform(1500.0, 5000.0), tilt=1.0)
    n_drops = rng.poisson(rng.uniform(0.0, 6.0) * c.duration)
    for s in rng.uniform(0, c.duration, n_drops):  # droplets make it a brook, not just hiss
        k = int(0.025 * SAMPLE_RATE)
        f = rng.uniform(800.0, 2500.0) * (1 + np.arange(k) / k)
        drop = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * _decay(k, 0.008)
        _add_at(out, s, rng.uniform(0.5, 1.5) * drop)
    return out


def _water_look(rng, c: _Canvas, swell: np.ndarray) -> Frames:
    yy, xx = _grid()
    t = c.frame_times()
    blue = _jitter(rng, (0.1, 0.35, 0.65), 0.07)
    # travelling waves sin(k.r - w t + p) split as sin(k.r)cos(p - w t) + cos(k.r)sin(p - w t):
    # a (T, 6) @ (6, H*W) product instead of a sine per pixel per frame
    basis, coef = [], []
    for _ in range(3):
        theta, wl, v = rng.uniform(0, 2 * np.pi), rng.uniform(15.0, 50.0), rng.uniform(10.0, 40.0)
        k = 2 * np.pi / wl
        space = k * (np.cos(theta) * xx + np.sin(theta) * yy)
        drift = rng.uniform(0, 2 * np.pi) - k * v * t
        basis += [np.sin(space), np.cos(space)]
        coef += [np.cos(drift), np.sin(drift)]
    coef = np.stack(coef, axis=1) * (swell / 3.0)[:, None]
    waves = (coef.astype(np.float32) @ np.stack(basis).reshape(6, -1).astype(np.float32))
    waves = waves.reshape(c.n_frames, HEIGHT, WIDTH)
    frames = _colour(blue) * (1.0 + 0.25 * waves[:, None])
    glint = np.clip((waves - 0.55) * 3.0, 0.0, 1.0)  # sun glints on the crests
    _paint(frames, glint * 0.7, (0.85, 0.92, 1.0))
    return frames


def _water(rng, c: _Canvas):
    st, swell = _water_swell(rng, c)
    audio = _water_sound(rng, c, swell)
    return _water_look(rng, c, _at_frames(c, st, swell)), audio, rng.uniform(0.4, 0.8)


_MAKERS: dict[str, _Maker] = {
    "baby": _baby,
    "dog": _dog,
    "rail": _rail,
    "fireworks": _fireworks,
    "water": _water,
}


# --------------------------------------------------------------------------- rendering & encoding


def _video_rng(seed: int, cls: str, index: int) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process, which would break determinism
    return np.random.default_rng([seed % 2**64, zlib.crc32(cls.encode()), index])


def _finish_frames(rng, frames: Frames) -> np.ndarray:
    # grain frames drawn from a small bank: it flickers like sensor noise at a fraction of the cost
    bank = rng.standard_normal((_GRAIN_BANK, 1, HEIGHT, WIDTH), dtype=np.float32)
    bank *= _IMAGE_GRAIN * 255.0
    bank += 0.5  # rounds instead of truncating in the cast below
    frames *= 255.0
    frames += bank[rng.integers(_GRAIN_BANK, size=len(frames))]
    planar = np.clip(frames, 0.0, 255.0, out=frames).astype(np.uint8)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1))  # rgb24 for the encoder


def _finish_audio(rng, mono: Mono, peak: float) -> np.ndarray:
    mono = mono * (peak / (np.max(np.abs(mono)) + 1e-12))
    pan = rng.uniform(-0.4, 0.4)  # constant-power pan: the source sits a little off-centre
    gains = np.array([np.cos((pan + 1) * np.pi / 4), np.sin((pan + 1) * np.pi / 4)]) * np.sqrt(2)
    stereo = mono[:, None] * gains + rng.normal(0.0, _AUDIO_FLOOR, (len(mono), 2))
    return np.clip(stereo, -1.0, 1.0).astype(np.float32)


def _render(cls: str, seed: int, index: int, min_seconds: float, max_seconds: float):
    """The raw content of one video: (uint8 frames (T, H, W, 3), float32 stereo audio (N, 2))."""
    rng = _video_rng(seed, cls, index)
    duration = float(rng.uniform(min_seconds, max_seconds))
    canvas = _Canvas(n_frames=max(1, round(duration * FPS)),
                     n_samples=max(1, round(duration * SAMPLE_RATE)))
    frames, mono, peak = _MAKERS[cls](rng, canvas)
    return _finish_frames(rng, frames), _finish_audio(rng, mono, peak)


def _encode(frames: np.ndarray, audio: np.ndarray, final: Path) -> None:
    # the video is written through storage.atomic_write: hidden and not ending in .mp4 until it is
    # whole, so no scan for videos picks up a half-written one
    tmp_audio = final.with_name(f".{final.stem}.wav.part")
    # audio goes through a file, video through stdin: one pipe in, stderr read by communicate(),
    # so neither side can block the other
    sf.write(tmp_audio, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
        "-i", "pipe:0",
        "-i", str(tmp_audio),
        "-map", "0:v:0", "-map", "1:a:0",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "26", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k",  # the default coder is 4x slower
        # single-threaded, bit-exact, no metadata: the same content gives the same bytes
        "-threads", "1",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-map_metadata", "-1",
        "-movflags", "+faststart", "-f", "mp4",
    ]

    def write_video(path: str) -> None:
        proc = subprocess.Popen([*cmd, path], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _, err = proc.communicate(frames.tobytes())
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            raise RuntimeError(f"ffmpeg failed to write {final}: {last}")

    try:
        storage.atomic_write(final, write_video)
    finally:
        tmp_audio.unlink(missing_ok=True)


def _make_one(job: tuple[Path, str, int, int, float, float]) -> Path:
    final, cls, seed, index, lo, hi = job
    frames, audio = _render(cls, seed, index, lo, hi)
    _encode(frames, audio, final)
    return final


def synth(out_dir: Path, videos_per_class: int = 12, classes: Sequence[str] = PAPER_CLASSES,
          seed: int = 0, min_seconds: float = 3.0, max_seconds: float = 6.0,
          workers: int | None = None) -> list[Path]:
    """Write the synthetic set as ``out_dir/<class>/<class>_NNN.mp4``; return all paths, sorted.

    Each video is H.264 + AAC (stereo, 22.05 kHz) in MP4, 160x120 at 25 fps, lasting a duration
    drawn uniformly from [min_seconds, max_seconds]. Its content depends only on (seed, class,
    index), and the encoded bytes are reproducible too, so the same call gives the same files.

    A video whose final file already exists is skipped (and still returned), so re-running an
    interrupted or finished call is cheap; delete the folder to regenerate with new settings.
    Files are written under a hidden temporary name (``.<name>.mp4.tmp-PID``, `storage.atomic_write`) and renamed into
    place, so a visible ``.mp4`` is always complete. ``workers`` videos are made at once
    (default: one per CPU).

    Raises ValueError for a class name not in PAPER_CLASSES or nonsensical counts and durations,
    and RuntimeError naming the file if ffmpeg fails.
    """
    if isinstance(classes, str):  # a lone name, not its letters
        classes = [classes]
    classes = list(dict.fromkeys(classes))
    unknown = [c for c in classes if c not in _MAKERS]
    if unknown:
        raise ValueError(
            f"unknown synthetic class(es) {unknown}; allowed: {', '.join(PAPER_CLASSES)}")
    if videos_per_class < 0:
        raise ValueError(f"videos_per_class must be >= 0, got {videos_per_class}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    out_dir = Path(out_dir)
    paths, jobs = [], []
    for cls in classes:
        (out_dir / cls).mkdir(parents=True, exist_ok=True)
        for i in range(videos_per_class):
            final = out_dir / cls / f"{cls}_{i:03d}.mp4"
            paths.append(final)
            if not final.exists():
                jobs.append((final, cls, seed, i, min_seconds, max_seconds))

    # threads suffice: the encoding runs in ffmpeg processes and numpy drops the GIL for the rest
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(_make_one, job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:  # fail fast: don't make the videos still queued
                future.cancel()
            raise
    return sorted(paths)
