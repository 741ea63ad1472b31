"""The sliding window: the last ``seconds`` of sound every ``hop``, as the log-mel the run heard.

The log-mel is the shards' own front end (`s2i_data.features`), computed incrementally: each 10 ms
frame once, as its audio arrives (`features.LogMelStream`), and a window is its last 100 frames,
the very numbers `log_mel_segments` gives for that second of a file. That needs window starts on
the 10 ms frame grid, which holds when a hop is a whole number of frames (any hop in 10 ms steps
at 16 kHz); otherwise (a run built at 22.05 kHz, say) each window's log-mel is computed whole
from the last second of samples, the same numbers at a higher cost.

Only what the next window reads is kept: the frames and samples of one window and a margin, so
memory is flat however long the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from s2i_data import features, untrusted


@dataclass
class Window:
    index: int  # 0 for the first window of the stream
    end_s: float  # where it ends, seconds from the stream's start (the `t` of live.jsonl)
    mel: np.ndarray  # float32 [frames, 128]: raw natural-log mel energies, as in the shards
    loudness_db: float  # RMS of its samples, dB relative to full scale
    ready: float  # time.monotonic() when its last audio had arrived: where latency is counted from


def loudness_db(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return round(20 * np.log10(max(rms, 1e-10)), 2)


class Windower:
    """Feed it chunks (`push`), get the windows they complete; `finish` at the end of the stream."""

    def __init__(self, seconds: float, sample_rate: int, hop_s: float) -> None:
        self.sr = sample_rate
        self.frames = int(round(seconds * 100))
        self.size = int(round(seconds * sample_rate))  # samples in a window
        self.step = int(round(hop_s * sample_rate))  # samples between window ends
        if self.step < 1 or self.size < 1:
            raise ValueError(f"hop {hop_s:g} s and window {seconds:g} s must hold at least one sample")
        fhop = sample_rate // 100
        self.incremental = (abs(hop_s * sample_rate - self.step) < 1e-9 and self.step % fhop == 0
                            and self.size == self.frames * fhop)
        self.hop_frames = self.step // fhop
        self._mel = features.LogMelStream(sample_rate) if self.incremental else None
        self._frames = np.zeros((0, features.N_MELS), np.float32)
        self._frames_start = 0  # stream frame index of _frames[0]
        self._audio = np.zeros(0, np.float32)
        self._audio_start = 0  # stream sample index of _audio[0]
        self.samples = 0
        self.invalid = 0  # NaN or infinite samples of the source, heard as silence
        self.next = 0  # index of the next window
        # The last frame of a window reads this far past its end (7.5 ms at 16 kHz).
        self._lookahead = max(0, int(round(0.025 * sample_rate)) // 2 - fhop // 2)

    def _end(self, k: int) -> int:
        return self.size + k * self.step

    def push(self, chunk: np.ndarray) -> list[Window]:
        # Every source comes through here: a float file's NaN or inf is silence before it can make
        # a loudness, a log-mel or a picture NaN (and the journal's and page's JSON invalid).
        chunk, bad = untrusted.audio_samples(chunk)
        self.invalid += bad
        now = time.monotonic()
        self.samples += chunk.size
        self._audio = np.concatenate([self._audio, chunk])
        if self._mel is not None:
            new = self._mel.push(chunk)
            if len(new):
                self._frames = np.concatenate([self._frames, new])
        return self._ready(now, ended=False)

    def finish(self) -> list[Window]:
        if self._mel is not None:
            new = self._mel.finish()
            if len(new):
                self._frames = np.concatenate([self._frames, new])
        return self._ready(time.monotonic(), ended=True)

    def _ready(self, now: float, ended: bool) -> list[Window]:
        out = []
        while True:
            end = self._end(self.next)
            if end > self.samples or (not ended and end + self._lookahead > self.samples):
                break
            start = end - self.size
            audio = self._audio[start - self._audio_start:end - self._audio_start]
            if self._mel is not None:
                f0 = start // (self.sr // 100) - self._frames_start
                if f0 + self.frames > len(self._frames):  # pragma: no cover - the lookahead guarantees them
                    break
                mel = self._frames[f0:f0 + self.frames].copy()
            else:
                pad = self._lookahead + self.sr // 100
                lo = max(self._audio_start, start - pad)
                mel = features.log_mel_segments(self._audio[lo - self._audio_start:end + pad - self._audio_start],
                                                lo / self.sr, [start / self.sr], self.size / self.sr, self.sr)[0]
            out.append(Window(self.next, end / self.sr, mel, loudness_db(audio), now))
            self.next += 1
        self._trim()
        return out

    def _trim(self) -> None:
        # keep from the next window's start (less a frame's reach for the whole-window path)
        start = self._end(self.next) - self.size
        keep = max(self._audio_start, start - self.sr // 50)
        self._audio, self._audio_start = self._audio[keep - self._audio_start:], keep
        if self._mel is not None:
            f = max(self._frames_start, start // (self.sr // 100))
            self._frames, self._frames_start = self._frames[f - self._frames_start:], f
