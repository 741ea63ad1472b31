"""features: the log-mel front end against an independent librosa computation."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from s2i_data import features


def test_filterbank_matches_librosa():
    ref = librosa.filters.mel(sr=16000, n_fft=512, n_mels=128, fmin=0, fmax=8000)
    np.testing.assert_allclose(features.mel_filterbank(), ref, rtol=1e-4, atol=1e-8)


def _librosa_log_mel(audio: np.ndarray, start_sample: int) -> np.ndarray:
    # Frame i centred at start + 80 + 160 i; librosa (center=False) frames j start at j*hop, so
    # give it audio from the first centre minus half the FFT (the 400-sample Hamming window sits
    # centred in the 512-sample frame, as librosa pads it).
    first = start_sample + 80 - 256
    pad_left = max(0, -first)
    padded = np.pad(audio, (pad_left, 512))
    y = padded[first + pad_left : first + pad_left + 160 * 99 + 512]
    m = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=160, win_length=400,
                                       window="hamming", center=False, power=2.0, n_mels=128,
                                       fmin=0, fmax=8000, htk=False, norm="slaney")
    return np.log(m + 1e-6).T


@pytest.mark.parametrize("start", [0.0, 1.0, 2.37])
def test_log_mel_matches_librosa(start):
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 4) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = features.log_mel_segments(audio, 0.0, [start])[0]
    assert ours.shape == (100, 128) and ours.dtype == np.float32
    ref = _librosa_log_mel(audio, int(round(start * 16000)))
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1.0)
    assert rel.max() < 1e-4


def test_segments_read_neighbouring_audio_and_zeros_only_outside_the_file():
    audio = (np.random.default_rng(0).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    # audio[0] sits at 0.5 s in the file: the segment at 0.0 is half before the decoded audio
    mel = features.log_mel_segments(audio, 0.5, [0.0, 1.0])
    silent = np.log(1e-6)
    assert np.allclose(mel[0, :40], silent, atol=1e-3)  # frames wholly before the audio: zeros
    assert (mel[1] > silent + 1).all()  # the second segment is inside: real audio everywhere
    # the same segment computed from a longer buffer that starts earlier gives identical values
    longer = np.concatenate([np.full(8000, 0.1, np.float32), audio])  # earlier audio, same file times
    again = features.log_mel_segments(longer, 0.0, [1.0])
    np.testing.assert_allclose(again[0], mel[1], rtol=1e-5, atol=1e-5)
