"""The audio front end (SPEC 2.3), shared by the shard builder and `s2i-model imagine`.

Log-mel: 16 kHz mono, 25 ms periodic Hamming frames on a 10 ms grid, |FFT 512|², 128 Slaney mel
bands (librosa's filter bank, computed here so that worker processes need not import librosa),
natural log of (energy + 1e-6). Exactly 100 frames per 1 s segment: frame i of a segment starting
at t0 is centred at t0 + (i + 0.5) * 10 ms and reads the real neighbouring audio of the track.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
WIN = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
N_MELS = 128
LOG_EPS = 1e-6


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangular filters, area-normalised (librosa ``norm='slaney'``)."""
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=2)
def hamming(n: int = WIN) -> np.ndarray:
    # Periodic ("fftbins") Hamming, as scipy.signal.get_window and librosa use for spectra.
    return (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def log_mel_segments(audio: np.ndarray, audio_start_s: float, starts_s, seconds: float = 1.0,
                     sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel of each segment: float32 [len(starts_s), frames, 128] with frames = seconds / 10 ms.

    ``audio`` is mono float32 whose first sample sits at ``audio_start_s`` in the file; windows that
    reach outside it read zeros (only the ends of the file are padded).
    """
    hop = sr // 100
    win = int(round(0.025 * sr))
    frames = int(round(seconds * 100))
    starts = np.asarray(list(starts_s), dtype=np.float64)
    if starts.size == 0:
        return np.zeros((0, frames, N_MELS), np.float32)
    s0 = np.round((starts - audio_start_s) * sr).astype(np.int64)  # segment start, in samples
    centres = s0[:, None] + hop // 2 + hop * np.arange(frames)[None, :]
    first = centres - win // 2
    pad_left = int(max(0, -first.min()))
    pad_right = int(max(0, first.max() + win - audio.shape[0]))
    padded = np.pad(np.asarray(audio, np.float32), (pad_left, pad_right))
    # Row gather from a strided view: one copy of the frames, no per-sample index array.
    windows = np.lib.stride_tricks.sliding_window_view(padded, win)[(first + pad_left).ravel()]
    return _log_mel_frames(windows, sr).reshape(len(starts), frames, N_MELS)


def _n_fft(sr: int, win: int) -> int:
    return N_FFT if sr == SAMPLE_RATE else int(2 ** np.ceil(np.log2(win)))


def _log_mel_frames(windows: np.ndarray, sr: int) -> np.ndarray:
    """float32 [n, 128]: the log-mel of n analysis frames of ``win`` samples each."""
    win = windows.shape[-1]
    n_fft = _n_fft(sr, win)
    spec = scipy.fft.rfft(windows * hamming(win), n=n_fft, axis=-1, workers=1)
    power = np.square(spec.real) + np.square(spec.imag)
    # One BLAS thread: a threaded product sums in another order, and the shards would then
    # differ in the last bit with the machine's core count (local pool vs Dask workers).
    with _blas().limit(limits=1, user_api="blas"):
        mel = power @ _filterbank_t(sr, n_fft)
    return np.log(mel + LOG_EPS, dtype=np.float32)


class LogMelStream:
    """The same log-mel, frame by frame, for audio that arrives in pieces (`s2i-model live`).

    Frame k is centred at sample (k + 0.5) * hop of the stream, as frame i of a segment starting at
    t0 is centred at t0 + (i + 0.5) * hop in `log_mel_segments`: a segment starting on the 10 ms
    grid is frames t0 / hop ... t0 / hop + frames - 1 of the stream, the same numbers. Each frame
    is computed once, as soon as its 25 ms of audio is in (7.5 ms after its grid step ends); only
    the samples the next frame reads are kept. Before the stream start there are zeros, as before
    a file's start; `finish` pads the end with zeros, as at a file's end.
    """

    def __init__(self, sr: int = SAMPLE_RATE) -> None:
        self.sr = sr
        self.hop = sr // 100
        self.win = int(round(0.025 * sr))
        self.frames = 0  # frames computed so far
        self.samples = 0  # samples pushed so far
        self._lead = self.hop // 2 - self.win // 2  # frame k reads from sample k * hop + lead
        self._buf = np.zeros(max(0, -self._lead), np.float32)
        self._buf_start = min(0, self._lead)  # stream sample index of _buf[0]

    def push(self, audio: np.ndarray) -> np.ndarray:
        """float32 [new frames, 128]: every frame whose audio is now complete."""
        self._buf = np.concatenate([self._buf, np.asarray(audio, np.float32).ravel()])
        self.samples += int(np.asarray(audio).size)
        return self._compute()

    def finish(self) -> np.ndarray:
        """The frames of the stream's last grid steps, zeros read past its end (as `log_mel_segments`
        pads at a file's end): every frame centred before the end."""
        last = -(-self.samples // self.hop)  # frames whose centre lies before the end, ceil(samples / hop)
        need = (last - 1) * self.hop + self._lead + self.win - (self._buf_start + self._buf.size)
        if need > 0:
            self._buf = np.concatenate([self._buf, np.zeros(need, np.float32)])
        return self._compute(limit=last)

    def _compute(self, limit: int | None = None) -> np.ndarray:
        end = self._buf_start + self._buf.size
        n = (end - self._lead - self.win) // self.hop + 1 - self.frames  # frames now complete
        if limit is not None:
            n = min(n, limit - self.frames)
        if n <= 0:
            return np.zeros((0, N_MELS), np.float32)
        off = self.frames * self.hop + self._lead - self._buf_start
        idx = off + self.hop * np.arange(n)
        out = _log_mel_frames(np.lib.stride_tricks.sliding_window_view(self._buf, self.win)[idx], self.sr)
        self.frames += n
        keep = self.frames * self.hop + self._lead - self._buf_start  # where the next frame starts
        self._buf, self._buf_start = self._buf[keep:], self._buf_start + keep
        return out


@functools.lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.lru_cache(maxsize=8)
def _filterbank_t(sr: int, n_fft: int) -> np.ndarray:
    return np.ascontiguousarray(mel_filterbank(sr, n_fft, N_MELS, 0.0, sr / 2).T)
