"""A built-in synthetic audiovisual data set, so the pipeline runs and is tested with no download.

``synth()`` writes real H.264 + AAC MP4 files in the VEGAS layout
(``<out>/<class>/<class>_NNN.mp4``) for the five classes the Sound-to-Imagination paper uses.
Every class has its own sound and look, varied per video (pitch, rhythm, colour, position), and
sound and picture move together where that is natural (firework dots appear with the bangs, the
baby's mouth opens while it cries), so a model has something real to learn without the task
being trivial.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from s2i_data import factors as factor_defs
from s2i_data import storage, synth_factors
from s2i_data.media import ffmpeg_exe
from s2i_data.synth_draw import (FPS, HEIGHT, SAMPLE_RATE, WIDTH, Canvas, Frames, Mono, add_at, at_frames,
                                 as_colour, band_noise, blank, burst_phase, bursts, decay, grid, jitter,
                                 muted_colour, paint, paint_ellipse)

PAPER_CLASSES = ("baby", "dog", "rail", "fireworks", "water")
DEFAULT = "default"
PRESETS = (DEFAULT, synth_factors.PRESET)
MARKER = "synth.json"  # the settings a folder with factors was made with

_IMAGE_GRAIN = 0.015  # std of the luma grain added to every frame, on a 0..1 scale
_GRAIN_BANK = 16
_AUDIO_FLOOR = 0.003  # std of the per-channel hiss, relative to full scale

_Maker = Callable[[np.random.Generator, Canvas], tuple[Frames, Mono, float]]


# --------------------------------------------------------------------------- baby


def _baby_sound(rng, c: Canvas, starts, lengths) -> Mono:
    t = c.sample_times()
    idx, u, inside = burst_phase(t, starts, lengths)
    f0 = rng.uniform(350.0, 600.0)
    glide = rng.uniform(0.05, 0.25, max(len(starts), 1))  # each cry arches up then down
    vib_rate, vib_depth = rng.uniform(4.5, 7.5), rng.uniform(0.015, 0.045)
    f = f0 * (1.0 + glide[idx] * np.sin(np.pi * np.clip(u, 0, 1))
              + vib_depth * np.sin(2 * np.pi * vib_rate * t))
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    rolloff = rng.uniform(0.8, 1.6)
    tone = sum(np.sin(k * phase) / k**rolloff for k in range(1, 7))
    env = np.where(inside, np.clip(u / 0.08, 0, 1) * np.clip((1 - u) / 0.2, 0, 1), 0.0)
    breath = 0.15 * band_noise(rng, c.n_samples, 1500.0, 6000.0)
    return env * (tone + breath)


def _baby_look(rng, c: Canvas, mouth: np.ndarray) -> Frames:
    t = c.frame_times()[:, None, None].astype(np.float32)
    m = mouth[:, None, None].astype(np.float32)
    skin = jitter(rng, (0.95, 0.68, 0.45) if rng.random() < 0.5 else (1.0, 0.58, 0.25), 0.06)
    ry = rng.uniform(0.22, 0.35) * HEIGHT
    rx = ry * rng.uniform(0.85, 1.15)
    cy0, cx0 = rng.uniform(0.38, 0.62) * HEIGHT, rng.uniform(0.3, 0.7) * WIDTH
    wob_f, wob_a = rng.uniform(0.2, 0.6), rng.uniform(1.0, 4.0)
    cy = cy0 + wob_a * np.sin(2 * np.pi * wob_f * t)
    cx = cx0 + wob_a * np.cos(2 * np.pi * wob_f * 0.7 * t)
    frames = blank(muted_colour(rng), c.n_frames)
    paint_ellipse(frames, cy, cx, ry * (1 + 0.05 * m), rx * (1 + 0.05 * m), skin)
    for side in (-1, 1):  # eyes squeeze shut while crying
        paint_ellipse(frames, cy - 0.25 * ry, cx + side * 0.35 * rx,
                       0.09 * ry * (1 - 0.7 * m) + 0.6, 0.1 * rx, skin * 0.35, soft=0.8)
    paint_ellipse(frames, cy + 0.4 * ry, cx, 0.2 * ry * m + 0.6, 0.25 * rx, (0.35, 0.08, 0.08),
                   soft=0.8)
    return frames


def _baby(rng, c: Canvas):
    starts, lengths = bursts(rng, c.duration, length=(0.35, 1.1), gap=(0.12, 0.5))
    audio = _baby_sound(rng, c, starts, lengths)
    _, u, inside = burst_phase(c.frame_times(), starts, lengths)
    mouth = np.where(inside, np.sin(np.pi * np.clip(u, 0, 1)) ** 0.5, 0.0)
    return _baby_look(rng, c, mouth), audio, rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- dog


def _dog_sound(rng, c: Canvas, starts, lengths) -> Mono:
    out = np.zeros(c.n_samples)
    f0 = rng.uniform(250.0, 550.0)
    noise_mix = rng.uniform(0.3, 0.7)
    for s, n in zip(starts, lengths):
        k = int(n * SAMPLE_RATE)
        u = np.arange(k) / k
        f = f0 * rng.uniform(0.9, 1.1) * (1.2 - 0.4 * u)  # a bark falls in pitch
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        voiced = sum(np.sin(h * phase) / h for h in range(1, 11))
        rough = band_noise(rng, k, 400.0, 4000.0)
        env = decay(k, tau=n / 2.5, attack=0.008)
        add_at(out, s, env * ((1 - noise_mix) * voiced + noise_mix * 1.5 * rough))
    return out


def _dog_look(rng, c: Canvas, bark: np.ndarray) -> Frames:
    yy, xx = grid()
    b = bark[:, None, None].astype(np.float32)
    brown = jitter(rng, (0.45, 0.28, 0.12), 0.07)
    face = rng.choice([-1.0, 1.0])
    bry, brx = rng.uniform(0.12, 0.18) * HEIGHT, rng.uniform(0.2, 0.28) * WIDTH
    cy, cx = rng.uniform(0.45, 0.7) * HEIGHT, rng.uniform(0.35, 0.65) * WIDTH
    ground = rng.uniform(0.7, 0.85) * HEIGHT
    # the body stands still: draw it once, then copy it into every frame
    still = blank(muted_colour(rng))
    paint(still, (yy > ground).astype(np.float32), muted_colour(rng) * 0.8)
    for leg in (-0.6, -0.3, 0.3, 0.6):
        legs = (np.abs(xx - (cx + leg * brx)) < 3) & (yy > cy) & (yy < cy + bry * 2.2)
        paint(still, legs.astype(np.float32), brown)
    paint_ellipse(still, cy, cx, bry, brx, brown)
    frames = np.repeat(still, c.n_frames, axis=0)
    # the head jerks up on every bark
    hy, hx = cy - bry * 1.1 - 4.0 * b, cx + face * brx * 0.95
    paint_ellipse(frames, hy, hx, bry * 0.8, bry * 0.9, brown)
    paint_ellipse(frames, hy + bry * 0.6, hx - face * bry * 0.5, bry * 0.5, bry * 0.25,
                   brown * 0.7)
    return frames


def _dog(rng, c: Canvas):
    starts, lengths = bursts(rng, c.duration, length=(0.08, 0.2), gap=(0.12, 0.9))
    audio = _dog_sound(rng, c, starts, lengths)
    _, _, inside = burst_phase(c.frame_times(), starts, lengths)
    bark = inside.astype(np.float64)
    return _dog_look(rng, c, bark), audio, rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- rail


def _rail_sound(rng, c: Canvas, period: float) -> Mono:
    t = c.sample_times()
    f = rng.uniform(40.0, 120.0)
    hum = sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    rumble = band_noise(rng, c.n_samples, 20.0, 200.0, tilt=1.0)
    sway = 1.0 + 0.25 * np.sin(2 * np.pi * t / period)  # the bogies rock once per rail joint
    out = sway * (0.6 * hum + rumble)
    gap = rng.uniform(0.08, 0.2)  # front and back wheel of one bogie over the same joint
    clack_gain = rng.uniform(0.8, 1.5)
    for s in np.arange(rng.uniform(0, period), c.duration, period):
        for d in (0.0, gap):
            k = int(0.04 * SAMPLE_RATE)
            add_at(out, s + d, clack_gain * decay(k, 0.01) * band_noise(rng, k, 800.0, 5000.0))
    return out


def _rail_look(rng, c: Canvas, period: float) -> Frames:
    _, xx = grid()
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
    paint(train, (pos < 3.0).astype(np.float32), (0.12, 0.12, 0.12))
    pane = np.mod(pos, seam_every / 3)
    windows = train[:, :, int(0.2 * (bottom - top)) : int(0.5 * (bottom - top))]
    paint(windows, ((pane > seam_every / 12) & (pane < seam_every / 5)) * np.float32(0.6),
           (0.2, 0.22, 0.25))
    return frames


def _rail(rng, c: Canvas):
    period = rng.uniform(0.35, 0.9)
    return _rail_look(rng, c, period), _rail_sound(rng, c, period), rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- fireworks


def _fireworks_sound(rng, c: Canvas, bangs: np.ndarray) -> Mono:
    out = 0.02 * band_noise(rng, c.n_samples, 50.0, 2000.0, tilt=1.0)
    for s in bangs:
        k = int(rng.uniform(0.8, 1.5) * SAMPLE_RATE)
        boom = decay(k, rng.uniform(0.15, 0.45)) * band_noise(rng, k, 30.0, rng.uniform(150, 400))
        crack = decay(k, 0.03, attack=0.001) * band_noise(rng, k, 200.0, 8000.0)
        # the crackle thins out as the sparks burn away
        density = 0.004 * np.exp(-np.arange(k) / (0.4 * SAMPLE_RATE))
        crackle = (rng.random(k) < density) * rng.uniform(-1, 1, k)
        add_at(out, s, rng.uniform(0.6, 1.0) * (1.6 * boom + 0.8 * crack + 0.8 * crackle))
    return out


# a soft 3x3 spark: a single pixel would not survive the encoder's chroma subsampling
_SPARK = [(dy, dx, 1.0 if dy == dx == 0 else 0.5 if dy == 0 or dx == 0 else 0.25)
          for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _fireworks_look(rng, c: Canvas, bangs: np.ndarray) -> Frames:
    sky = jitter(rng, (0.02, 0.03, 0.08), 0.02)
    frames = blank(sky, c.n_frames)
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


def _fireworks(rng, c: Canvas):
    bangs, _ = bursts(rng, c.duration, length=(0.0, 0.0), gap=(0.6, 1.8), first=0.8)
    return _fireworks_look(rng, c, bangs), _fireworks_sound(rng, c, bangs), 0.9


# --------------------------------------------------------------------------- water


def _water_swell(rng, c: Canvas):
    """Slow loudness swell shared by the sound and the ripples, at audio-sample times."""
    t = c.sample_times()
    rate, depth, phase = rng.uniform(0.15, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
    return t, 1.0 + depth * np.sin(2 * np.pi * rate * t + phase)


def _water_sound(rng, c: Canvas, swell: np.ndarray) -> Mono:
    out = swell * band_noise(rng, c.n_samples, 60.0, rng.uniform(1500.0, 5000.0), tilt=1.0)
    n_drops = rng.poisson(rng.uniform(0.0, 6.0) * c.duration)
    for s in rng.uniform(0, c.duration, n_drops):  # droplets make it a brook, not just hiss
        k = int(0.025 * SAMPLE_RATE)
        f = rng.uniform(800.0, 2500.0) * (1 + np.arange(k) / k)
        drop = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * decay(k, 0.008)
        add_at(out, s, rng.uniform(0.5, 1.5) * drop)
    return out


def _water_look(rng, c: Canvas, swell: np.ndarray) -> Frames:
    yy, xx = grid()
    t = c.frame_times()
    blue = jitter(rng, (0.1, 0.35, 0.65), 0.07)
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
    frames = as_colour(blue) * (1.0 + 0.25 * waves[:, None])
    glint = np.clip((waves - 0.55) * 3.0, 0.0, 1.0)  # sun glints on the crests
    paint(frames, glint * 0.7, (0.85, 0.92, 1.0))
    return frames


def _water(rng, c: Canvas):
    st, swell = _water_swell(rng, c)
    audio = _water_sound(rng, c, swell)
    return _water_look(rng, c, at_frames(c, st, swell)), audio, rng.uniform(0.4, 0.8)


_MAKERS: dict[str, _Maker] = {
    "baby": _baby,
    "dog": _dog,
    "rail": _rail,
    "fireworks": _fireworks,
    "water": _water,
}


# --------------------------------------------------------------------------- rendering & encoding


def _video_rng(seed: int, cls: str, index: int, stream: str = "") -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process, which would break determinism; the
    # default preset's stream has no name, so its videos are the ones it always made
    key = [seed % 2**64, zlib.crc32(cls.encode()), index]
    return np.random.default_rng(key + [zlib.crc32(stream.encode())] if stream else key)


def factor_values(preset: str, seed: int, cls: str, index: int) -> dict[str, float]:
    """The factor values of one video of a preset with factors (``{}`` for the default preset): from
    their own stream, so they are known without rendering the video."""
    if preset == DEFAULT:
        return {}
    return synth_factors.draw_values(_video_rng(seed, cls, index, f"{preset}/values"), cls)


def _finish_frames(rng, frames: Frames) -> np.ndarray:
    # grain frames drawn from a small bank: it flickers like sensor noise at a fraction of the cost
    bank = rng.standard_normal((_GRAIN_BANK, 1, *frames.shape[2:]), dtype=np.float32)
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


def _render(cls: str, seed: int, index: int, min_seconds: float, max_seconds: float, preset: str = "default"):
    """The raw content of one video: (uint8 frames (T, H, W, 3), float32 stereo audio (N, 2))."""
    rng = _video_rng(seed, cls, index, "" if preset == DEFAULT else preset)
    duration = float(rng.uniform(min_seconds, max_seconds))
    canvas = Canvas(n_frames=max(1, round(duration * FPS)),
                    n_samples=max(1, round(duration * SAMPLE_RATE)))
    if preset == DEFAULT:
        frames, mono, peak = _MAKERS[cls](rng, canvas)
    else:
        frames, mono, peak = synth_factors.MAKERS[cls](rng, canvas, factor_values(preset, seed, cls, index))
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


def _make_one(job: tuple[Path, str, int, int, float, float, str]) -> Path:
    final, cls, seed, index, lo, hi, preset = job
    frames, audio = _render(cls, seed, index, lo, hi, preset)
    _encode(frames, audio, final)
    return final


def synth(out_dir: Path, videos_per_class: int = 12, classes: Sequence[str] = PAPER_CLASSES,
          seed: int = 0, min_seconds: float = 3.0, max_seconds: float = 6.0,
          workers: int | None = None, preset: str = DEFAULT) -> list[Path]:
    """Write the synthetic set as ``out_dir/<class>/<class>_NNN.mp4``; return all paths, sorted.

    Each video is H.264 + AAC (stereo, 22.05 kHz) in MP4, 160x120 at 25 fps, lasting a duration
    drawn uniformly from [min_seconds, max_seconds]. Its content depends only on (seed, class,
    index), and the encoded bytes are reproducible too, so the same call gives the same files.

    A video whose final file already exists is skipped (and still returned), so re-running an
    interrupted or finished call is cheap; delete the folder to regenerate with new settings.
    Files are written under a hidden temporary name (``.<name>.mp4.tmp-PID``, `storage.atomic_write`) and renamed into
    place, so a visible ``.mp4`` is always complete. ``workers`` videos are made at once
    (default: one per CPU).

    ``preset``: ``default`` (the set every test is calibrated on) or ``factors`` (issue 28: colour
    never names the class; each class's factors, `s2i_data.factors`, are heard and seen). A preset
    with factors writes ``out_dir/factors.csv`` (every video's values) and ``out_dir/synth.json``
    (preset, seed, durations); a folder made with other settings is refused rather than mixed.

    Raises ValueError for a class name not in PAPER_CLASSES, an unknown preset, a folder made
    with other settings, or nonsensical counts and durations, and RuntimeError naming the file if
    ffmpeg fails.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; known: {', '.join(PRESETS)}")
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
    settings = {"preset": preset, "seed": seed, "min_seconds": min_seconds, "max_seconds": max_seconds}
    _claim(out_dir, settings)
    paths, jobs = [], []
    for cls in classes:
        (out_dir / cls).mkdir(parents=True, exist_ok=True)
        for i in range(videos_per_class):
            final = out_dir / cls / f"{cls}_{i:03d}.mp4"
            paths.append(final)
            if not final.exists():
                jobs.append((final, cls, seed, i, min_seconds, max_seconds, preset))

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
    if preset != DEFAULT:
        _write_factors(out_dir, preset, seed)
    return sorted(paths)


def _claim(out_dir: Path, settings: dict) -> None:
    """Refuse to add videos of other settings to a folder made with factors (its factors.csv would
    then describe videos it did not make), and record the settings of a new one."""
    marker = out_dir / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            old = json.loads(marker.read_text())
        except (OSError, ValueError):
            old = None
        if old != settings:
            raise ValueError(f"{out_dir} was made with other synthetic settings ({marker}): "
                             "delete it or choose another folder")
        return
    if marker.exists() or marker.is_symlink():
        raise ValueError(f"{marker} is not a regular file: delete it or choose another folder")
    if settings["preset"] == DEFAULT:
        return
    if any(out_dir.glob("*/*.mp4")):
        raise ValueError(f"{out_dir} already holds videos of other settings: choose an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    storage.atomic_write(out_dir / MARKER, json.dumps(settings, indent=2))


def _write_factors(out_dir: Path, preset: str, seed: int) -> None:
    """ROOT/factors.csv: a row per video in the folder, its values recomputed from (seed, class,
    index), so a run that added classes keeps the earlier ones' rows."""
    names = [f.name for f in factor_defs.preset(preset)]
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["preset", "class", "video", *(factor_defs.COLUMN_PREFIX + n for n in names)])
    for cls in PAPER_CLASSES:
        for path in sorted((out_dir / cls).glob(f"{cls}_[0-9][0-9][0-9].mp4")):
            values = factor_values(preset, seed, cls, int(path.stem.rsplit("_", 1)[1]))
            out.writerow([preset, cls, path.name, *(repr(values[n]) if n in values else "" for n in names)])
    storage.atomic_write(out_dir / factor_defs.SIDECAR, buf.getvalue())
