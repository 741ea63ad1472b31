"""The ``factors`` preset of the built-in set (issue 28): colour never names the class, and each
class has factors (`s2i_data.factors`) that its sound carries and its picture shows.

Every colour, background and object alike, comes from one pool (`pool_colour`: any hue at a given
brightness), the object always the lighter (`scene`), so a judge of mean colour names the class
near chance; a class is told by shape and texture. Each factor is drawn per video (`draw_values`, from its own random stream, so the
values are known without rendering) and couples sound and picture through one physical story:
a bigger baby cries lower and fills more of the frame; a louder cry opens the mouth wider; a
bigger dog barks lower, a farther one is quieter and stands nearer the horizon; longer carriages
at the same speed clack more slowly; a taller train hums lower; k bangs a second leave k bursts in
the sky (each glows exactly 1 s); a bigger shell booms louder and lower and bursts wider; denser
waves sound brighter; rougher water is louder.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from s2i_data import factors as factor_defs
from s2i_data.synth_draw import (HEIGHT, SAMPLE_RATE, WIDTH, Canvas, Frames, Mono, as_colour,
                                 band_noise, blank, burst_phase, bursts, decay, grid, paint,
                                 paint_ellipse)

PRESET = "factors"
Values = dict[str, float]
Maker = Callable[[np.random.Generator, Canvas, Values], tuple[Frames, Mono, float]]


def draw_values(rng: np.random.Generator, cls: str) -> Values:
    """The factor values of one video of class ``cls``: u ~ U(0, 1), counts uniform over their range."""
    out = {}
    for f in factor_defs.of_class(PRESET, cls):
        if f.kind == factor_defs.COUNT:
            out[f.name] = float(rng.integers(int(f.low), int(f.high) + 1))
        else:
            out[f.name] = float(rng.uniform(f.low, f.high))
    return out


# --------------------------------------------------------------------------- colours


_LUMA = np.array([0.299, 0.587, 0.114])


def pool_colour(rng: np.random.Generator, luma: float) -> np.ndarray:
    """A colour of any hue and saturation at brightness ``luma``: the one pool every class draws from."""
    h, s = rng.random(), rng.uniform(0.0, 0.7)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    rgb = 1.0 - s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.clip(rgb * (luma / float(rgb @ _LUMA)), 0.0, 1.0).astype(np.float32)


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and an object colour, each of any hue: the object is always the lighter (by 0.25
    to 0.45 in luma). Without one such rule, the average picture of a class given its sound is a
    flat grey (object and background of one distribution cancel), and no model trained with a
    pixel loss could draw a shape; with it, a shape is a lighter region, whatever the colours."""
    dark = rng.uniform(0.03, 0.5)
    return pool_colour(rng, dark), pool_colour(rng, min(dark + rng.uniform(0.25, 0.45), 0.95))


def _detail(c: np.ndarray) -> np.ndarray:
    """Eyes, mouth, seams: dark marks on the (always lighter) object."""
    return (c * 0.3).astype(np.float32)


def _add_from(buf: np.ndarray, start: float, piece: np.ndarray) -> None:
    """Add ``piece`` at ``start`` seconds, which may be before the clip (its tail is heard)."""
    i = int(round(start * SAMPLE_RATE))
    if i < 0:
        piece, i = piece[-i:], 0
    piece = piece[: max(len(buf) - i, 0)]
    buf[i:i + len(piece)] += piece


def _level(u: float, lo: float = 0.12, hi: float = 0.95) -> float:
    return lo + (hi - lo) * u


# --------------------------------------------------------------------------- baby


def _baby(rng, c: Canvas, v: Values):
    size, loud = v["baby_size"], v["baby_loudness"]
    # nearly continuous crying: a one-second window almost always holds a cry
    starts, lengths = bursts(rng, c.duration, length=(0.5, 1.2), gap=(0.05, 0.2), first=0.1)
    t = c.sample_times()
    idx, u, inside = burst_phase(t, starts, lengths)
    f0 = 650.0 - 300.0 * size
    glide = rng.uniform(0.05, 0.2, max(len(starts), 1))
    vib_rate, vib_depth = rng.uniform(4.5, 7.5), rng.uniform(0.015, 0.04)
    f = f0 * (1.0 + glide[idx] * np.sin(np.pi * np.clip(u, 0, 1)) + vib_depth * np.sin(2 * np.pi * vib_rate * t))
    phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
    rolloff = rng.uniform(0.8, 1.6)
    tone = sum(np.sin(k * phase) / k**rolloff for k in range(1, 7))
    env = np.where(inside, np.clip(u / 0.08, 0, 1) * np.clip((1 - u) / 0.2, 0, 1), 0.0)
    audio = env * (tone + 0.15 * band_noise(rng, c.n_samples, 1500.0, 6000.0))

    _, fu, finside = burst_phase(c.frame_times(), starts, lengths)
    crying = np.where(finside, np.sin(np.pi * np.clip(fu, 0, 1)) ** 0.5, 0.0)[:, None, None].astype(np.float32)
    bg, skin = scene(rng)
    ry = (0.20 + 0.18 * size) * HEIGHT
    rx = ry * rng.uniform(0.9, 1.1)
    tt = c.frame_times()[:, None, None].astype(np.float32)
    wob_f, wob_a = rng.uniform(0.2, 0.6), rng.uniform(0.5, 2.0)
    cy = HEIGHT / 2 + rng.uniform(-0.05, 0.05) * HEIGHT + wob_a * np.sin(2 * np.pi * wob_f * tt)
    cx = WIDTH / 2 + rng.uniform(-0.06, 0.06) * WIDTH + wob_a * np.cos(2 * np.pi * wob_f * 0.7 * tt)
    frames = blank(bg, c.n_frames)
    paint_ellipse(frames, cy, cx, ry, rx, skin)
    dark = _detail(skin)
    for side in (-1, 1):  # eyes squeeze while crying
        paint_ellipse(frames, cy - 0.25 * ry, cx + side * 0.35 * rx, 0.09 * ry * (1 - 0.6 * crying) + 0.6,
                      0.1 * rx, dark, soft=0.8)
    # the mouth: its opening follows the cry and its size the loudness, never quite shut
    mouth = (0.10 + 0.35 * loud) * ry * (0.55 + 0.45 * crying)
    paint_ellipse(frames, cy + 0.45 * ry, cx, 0.5 * mouth + 0.6, (0.18 + 0.12 * loud) * rx, dark, soft=0.8)
    return frames, audio, _level(loud)


# --------------------------------------------------------------------------- dog


def _dog(rng, c: Canvas, v: Values):
    size, far = v["dog_size"], v["dog_distance"]
    starts, lengths = bursts(rng, c.duration, length=(0.08, 0.2), gap=(0.12, 0.45))
    out = np.zeros(c.n_samples)
    f0 = 560.0 - 330.0 * size
    noise_mix = rng.uniform(0.2, 0.5)
    for s, n in zip(starts, lengths):
        k = int(n * SAMPLE_RATE)
        uu = np.arange(k) / k
        f = f0 * rng.uniform(0.95, 1.05) * (1.2 - 0.4 * uu)  # a bark falls in pitch
        phase = 2 * np.pi * np.cumsum(f) / SAMPLE_RATE
        voiced = sum(np.sin(h * phase) / h for h in range(1, 11))
        rough = band_noise(rng, k, 400.0, 4000.0)
        _add_from(out, s, decay(k, tau=n / 2.5, attack=0.008) * ((1 - noise_mix) * voiced + noise_mix * 1.5 * rough))

    _, _, inside = burst_phase(c.frame_times(), starts, lengths)
    b = inside.astype(np.float32)[:, None, None]
    yy, xx = grid()
    sky, body = scene(rng)
    ground_c = pool_colour(rng, float(np.clip(sky @ _LUMA + rng.uniform(-0.1, 0.0), 0.02, 1.0)))
    horizon = (0.52 + rng.uniform(-0.03, 0.03)) * HEIGHT
    brx = (0.11 + 0.14 * size) * WIDTH
    bry = 0.45 * brx
    feet = (0.95 - 0.25 * far) * HEIGHT
    cy, cx = feet - 2.2 * bry, WIDTH / 2 + rng.uniform(-0.05, 0.05) * WIDTH
    face = rng.choice([-1.0, 1.0])
    still = blank(sky)
    paint(still, (yy > horizon).astype(np.float32), ground_c)
    for leg in (-0.6, -0.3, 0.3, 0.6):
        legs = (np.abs(xx - (cx + leg * brx)) < max(1.5, 0.08 * bry)) & (yy > cy) & (yy < feet)
        paint(still, legs.astype(np.float32), body)
    paint_ellipse(still, cy, cx, bry, brx, body)
    frames = np.repeat(still, c.n_frames, axis=0)
    hy, hx = cy - bry * 1.1 - 0.2 * bry * b, cx + face * brx * 0.95  # the head jerks up on a bark
    paint_ellipse(frames, hy, hx, bry * 0.8, bry * 0.9, body)
    paint_ellipse(frames, hy + bry * 0.6, hx - face * bry * 0.5, bry * 0.5, bry * 0.25, _detail(body))
    return frames, out, _level(1.0 - far)


# --------------------------------------------------------------------------- rail

_RAIL_SPEED = 164.0  # px/s, every train: the seams' spacing alone sets the clack period


def _rail(rng, c: Canvas, v: Values):
    spacing, tall = v["rail_spacing"], v["rail_height"]
    seam = 36.0 + 54.0 * spacing
    period = seam / _RAIL_SPEED  # 0.22 .. 0.55 s
    t = c.sample_times()
    f = 130.0 - 85.0 * tall
    hum = sum(np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5))
    rumble = band_noise(rng, c.n_samples, 20.0, 2.5 * f, tilt=1.0)
    out = 0.7 * hum + 0.5 * rumble
    gap = 0.25 * period  # the two wheels of a bogie over the same joint
    k = int(0.04 * SAMPLE_RATE)
    for s in np.arange(rng.uniform(0, period), c.duration, period):
        for d in (0.0, gap):
            _add_from(out, s + d, 1.2 * decay(k, 0.01) * band_noise(rng, k, 800.0, 5000.0))

    bg, car = scene(rng)
    line = _detail(car)
    height = (0.22 + 0.40 * tall) * HEIGHT
    mid = HEIGHT / 2 + rng.uniform(-0.06, 0.06) * HEIGHT
    top, bottom = int(max(mid - height / 2, 0)), int(min(mid + height / 2, HEIGHT))
    frames = blank(bg, c.n_frames)
    _, xx = grid()
    tt = c.frame_times()[:, None, None].astype(np.float32)
    pos = np.mod(xx[None, :1] - _RAIL_SPEED * rng.choice([-1.0, 1.0]) * tt - rng.uniform(0, seam), seam)
    train = frames[:, :, top:bottom]
    paint(train, np.ones((1, 1, 1), np.float32), car)
    paint(train, (pos < 3.0).astype(np.float32), line)
    h = bottom - top
    windows = train[:, :, int(0.2 * h):int(0.5 * h)]  # one window a carriage: its only period is the spacing
    paint(windows, ((pos > 0.3 * seam) & (pos < 0.7 * seam)).astype(np.float32) * np.float32(0.8), line)
    return frames, out, rng.uniform(0.4, 0.8)


# --------------------------------------------------------------------------- fireworks

_GLOW = 1.0  # seconds a burst is in the sky: k bangs a second leave k bursts at any instant
_SPARK = [(dy, dx, 1.0 if dy == dx == 0 else 0.5 if dy == 0 or dx == 0 else 0.25)
          for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _fireworks(rng, c: Canvas, v: Values):
    k, size = int(v["fireworks_count"]), v["fireworks_size"]
    step = 1.0 / k
    # bangs from before the clip on, so the sky holds k bursts from its first frame
    bangs = np.arange(-_GLOW + rng.uniform(0, step), c.duration, step) + rng.uniform(-0.02, 0.02, 1)
    out = 0.02 * band_noise(rng, c.n_samples, 50.0, 2000.0, tilt=1.0)
    top = 400.0 - 250.0 * size  # a bigger shell booms lower
    for s in bangs:
        n = int(0.9 * SAMPLE_RATE)
        boom = decay(n, rng.uniform(0.12, 0.25)) * band_noise(rng, n, 30.0, top)
        crack = decay(n, 0.03, attack=0.001) * band_noise(rng, n, 200.0, 8000.0)
        _add_from(out, s, 1.6 * boom + 0.8 * crack)

    sky, spark = scene(rng)
    frames = blank(sky, c.n_frames)
    radius = 10.0 + 24.0 * size
    ft = c.frame_times()
    for tb in bangs:
        live = np.flatnonzero((ft >= tb) & (ft < tb + _GLOW))
        if not len(live):
            continue
        m = 40
        cy, cx = rng.uniform(0.25, 0.7) * HEIGHT, WIDTH / 2 + rng.uniform(-0.28, 0.28) * HEIGHT
        angle = rng.uniform(0, 2 * np.pi, m)
        reach = radius * rng.uniform(0.85, 1.0, m)
        dt = (ft[live] - tb)[:, None]
        r = reach * (1.0 - np.exp(-dt / 0.12))  # the shell opens fast, then hangs
        y = np.floor(cy + np.sin(angle) * r + 6.0 * dt**2).astype(int)
        x = np.floor(cx + np.cos(angle) * r).astype(int)
        glow = np.broadcast_to((1.0 - 0.6 * dt / _GLOW), y.shape).astype(np.float32)
        frame = np.broadcast_to(np.arange(len(live))[:, None], y.shape)
        alpha = np.zeros((len(live), HEIGHT, WIDTH), np.float32)  # the live frames are consecutive
        for dy, dx, w in _SPARK:
            ok = (y + dy >= 0) & (y + dy < HEIGHT) & (x + dx >= 0) & (x + dx < WIDTH)
            np.maximum.at(alpha, (frame[ok], y[ok] + dy, x[ok] + dx), w * glow[ok])
        paint(frames[live[0]:live[-1] + 1], alpha, spark)
    return frames, out, _level(size, 0.15, 0.95)


# --------------------------------------------------------------------------- water


def _water(rng, c: Canvas, v: Values):
    dense, rough = v["water_density"], v["water_roughness"]
    t = c.sample_times()
    swell = 1.0 + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(0.15, 0.6) * t + rng.uniform(0, 2 * np.pi))
    out = swell * band_noise(rng, c.n_samples, 60.0, 1200.0 + 4800.0 * dense, tilt=1.0)
    n = int(0.025 * SAMPLE_RATE)
    for s in rng.uniform(0, c.duration, rng.poisson((1.0 + 8.0 * rough) * c.duration)):
        f = rng.uniform(800.0, 2500.0) * (1 + np.arange(n) / n)
        _add_from(out, s, rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * decay(n, 0.008))

    yy, xx = grid()
    ft = c.frame_times()
    water, crest = scene(rng)
    wavelength = 40.0 - 31.0 * dense
    basis, coef = [], []
    for _ in range(3):
        theta = rng.uniform(-0.6, 0.6) + np.pi / 2  # mostly crests across the frame
        k = 2 * np.pi / (wavelength * rng.uniform(0.85, 1.15))
        space = k * (np.cos(theta) * xx + np.sin(theta) * yy)
        drift = rng.uniform(0, 2 * np.pi) - k * rng.uniform(10.0, 30.0) * ft
        basis += [np.sin(space), np.cos(space)]
        coef += [np.cos(drift), np.sin(drift)]
    sw = np.interp(ft, t, swell)
    coef = np.stack(coef, axis=1) * (sw / 3.0)[:, None]
    waves = (coef.astype(np.float32) @ np.stack(basis).reshape(6, -1).astype(np.float32)).reshape(c.n_frames, HEIGHT, WIDTH)
    frames = blank(water, c.n_frames)
    paint(frames, np.clip(0.5 + 0.45 * waves, 0.0, 1.0) * (0.15 + 0.85 * rough), crest)  # rougher: brighter crests
    glint = np.clip((waves - (0.9 - 0.4 * rough)) * 3.0, 0.0, 1.0) * rough
    paint(frames, glint, np.minimum(crest + 0.3, 1.0))
    return frames, out, _level(rough)


MAKERS: dict[str, Maker] = {"baby": _baby, "dog": _dog, "rail": _rail, "fireworks": _fireworks, "water": _water}
