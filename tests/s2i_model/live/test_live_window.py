"""The live front end: the incremental log-mel is the shards' own, window by window, in flat memory."""

from __future__ import annotations

import numpy as np
import pytest

from s2i_data import features
from s2i_model.live.window import Windower


def pieces(audio: np.ndarray, rng) -> list[np.ndarray]:
    out, i = [], 0
    while i < audio.size:
        k = int(rng.integers(1, 2500))  # odd sizes, from one sample to 156 ms
        out.append(audio[i:i + k])
        i += k
    return out


def test_log_mel_stream_equals_the_batch_log_mel():
    rng = np.random.default_rng(0)
    audio = (0.2 * rng.standard_normal(int(3.37 * 16000))).astype(np.float32)
    stream = features.LogMelStream(16000)
    frames = np.concatenate([stream.push(p) for p in pieces(audio, rng)] + [stream.finish()])
    assert frames.shape == (337, 128)  # every frame centred inside the audio, each computed once
    starts = [0.0, 0.5, 1.23, 2.37]  # 2.37: the last whole second, whose last frames read past the end
    batch = features.log_mel_segments(audio, 0.0, starts)
    for s, ref in zip(starts, batch):
        i = int(round(s * 100))
        np.testing.assert_allclose(frames[i:i + 100], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sr,hop,incremental", [(16000, 0.5, True), (16000, 0.25, True), (22050, 0.5, False),
                                                (16000, 0.333, False)])
def test_windows_are_the_segments_a_file_would_give(sr, hop, incremental):
    rng = np.random.default_rng(1)
    audio = (0.2 * rng.standard_normal(int(4.3 * sr))).astype(np.float32)
    win = Windower(1.0, sr, hop)
    assert win.incremental is incremental  # off the 10 ms grid: whole windows, the same numbers
    got = [w for p in pieces(audio, rng) for w in win.push(p)] + win.finish()
    ends = [w.end_s for w in got]
    assert ends == [round(1.0 * sr + k * round(hop * sr)) / sr for k in range(len(ends))]
    assert len(got) == int(np.floor((4.3 - 1.0) / hop + 1e-9)) + 1
    assert [w.index for w in got] == list(range(len(got)))
    ref = features.log_mel_segments(audio, 0.0, [w.end_s - 1.0 for w in got], 1.0, sr)
    for w, r in zip(got, ref):
        np.testing.assert_allclose(w.mel, r, rtol=0, atol=1e-5)
    assert np.allclose(np.diff(ends), hop, atol=1 / sr)


def test_memory_stays_flat_over_a_long_stream():
    win = Windower(1.0, 16000, 0.5)
    rng = np.random.default_rng(2)
    chunk = (0.1 * rng.standard_normal(320)).astype(np.float32)
    sizes = []
    for i in range(60 * 50):  # a minute of 20 ms chunks
        win.push(chunk)
        if i % 500 == 499:
            sizes.append((win._audio.size, len(win._frames)))
    assert win.next == 118  # 1.0 ... 59.5 s; the window ending at 60 s waits for 7.5 ms more (or the end)
    assert max(a for a, _ in sizes) <= 16000 + 8000 + 400 and max(f for _, f in sizes) <= 150, sizes


def test_loudness_and_quiet():
    win = Windower(1.0, 16000, 0.5)
    got = win.push(np.zeros(16000 + 200, np.float32)) + win.push(np.full(8000, 0.5, np.float32))
    assert got[0].loudness_db <= -190  # digital silence
    assert got[1].loudness_db == pytest.approx(20 * np.log10(0.5 * np.sqrt(7800 / 16000)), abs=0.01)  # 7800 of its samples at 0.5
