"""Drawing and sound helpers shared by the synthetic presets (`synth`: the default set,
`synth_factors`: the set whose within-class factors are known), and the geometry they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT = 160, 120  # landscape on purpose: a centre crop must throw something away
FPS = 25
SAMPLE_RATE = 22050


@dataclass(frozen=True)
class Canvas:
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


# --------------------------------------------------------------------------- shared helpers


def grid() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return yy, xx


def as_colour(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float32).reshape(3, 1, 1)


def paint(frames: Frames, alpha: np.ndarray, rgb) -> None:
    """Composite a colour over frames in place; alpha broadcasts to (T, H, W)."""
    # plane by plane: temporaries a third the size stay under malloc's mmap threshold and get
    # reused, where whole-video temporaries would be fresh pages (page faults) every time
    for plane, value in zip(frames.swapaxes(0, 1), np.asarray(rgb, dtype=np.float32)):
        plane += alpha * (value - plane)


def paint_ellipse(frames: Frames, cy, cx, ry, rx, rgb, soft: float = 1.5) -> None:
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
    paint(frames[:, :, r0:r1, c0:c1], alpha, rgb)


def jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)


def muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A dull background of any hue, so the background alone never gives the class away."""
    grey = rng.uniform(0.35, 0.75)
    return np.clip(grey + rng.uniform(-0.12, 0.12, 3), 0.0, 1.0).astype(np.float32)


def blank(colour, n_frames: int = 1) -> Frames:
    return np.broadcast_to(as_colour(colour), (n_frames, 3, HEIGHT, WIDTH)).copy()


def bursts(rng, duration: float, length: tuple[float, float], gap: tuple[float, float],
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


def burst_phase(t: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Per time: index of the burst it falls in, position 0..1 within it, and whether inside."""
    if len(starts) == 0:
        zeros = np.zeros_like(t)
        return zeros.astype(int), zeros, zeros.astype(bool)
    idx = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(starts) - 1)
    u = (t - starts[idx]) / lengths[idx]
    return idx, u, (u >= 0.0) & (u < 1.0)


def band_noise(rng, n: int, lo: float, hi: float, tilt: float = 0.0) -> np.ndarray:
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


def decay(n: int, tau: float, attack: float = 0.004) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return np.minimum(t / attack, 1.0) * np.exp(-t / tau)


def add_at(buf: np.ndarray, start: float, piece: np.ndarray) -> None:
    i = int(start * SAMPLE_RATE)
    if i >= len(buf):
        return
    piece = piece[: len(buf) - i]
    buf[i : i + len(piece)] += piece


def at_frames(c: Canvas, signal_times: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.interp(c.frame_times(), signal_times, values)
