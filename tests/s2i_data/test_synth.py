"""The synthetic data set: real, decodable, reproducible videos whose classes really differ."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from s2i_data.media import ffmpeg_exe
from s2i_data.synth import PAPER_CLASSES, synth

SHORT = dict(videos_per_class=2, min_seconds=1.0, max_seconds=1.6)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("synth")
    return out, synth(out, seed=0, **SHORT)


def _ffmpeg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", *args],
                          capture_output=True, check=check)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mean_rgb(path: Path) -> np.ndarray:
    """Mean colour over every decoded frame."""
    raw = _ffmpeg("-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                  "-").stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 3).mean(axis=0)


def _share_above(path: Path, hz: float) -> float:
    """Fraction of the decoded (mono) audio's energy above `hz`."""
    raw = _ffmpeg("-loglevel", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", "22050",
                  "-f", "f32le", "-").stdout
    power = np.abs(np.fft.rfft(np.frombuffer(raw, np.float32))) ** 2
    freqs = np.fft.rfftfreq(2 * (len(power) - 1), 1 / 22050)
    return float(power[freqs > hz].sum() / power.sum())


def test_layout_and_count(made):
    out, paths = made
    expected = sorted(out / c / f"{c}_{i:03d}.mp4" for c in PAPER_CLASSES for i in range(2))
    assert paths == expected
    assert sorted(p for p in out.rglob("*") if p.is_file()) == expected  # no temporaries left


def test_files_decode_as_h264_aac_with_the_asked_duration(made):
    _, paths = made
    durations = []
    for path in paths:
        info = _ffmpeg("-i", str(path), check=False).stderr.decode()  # no output: exits 1
        assert re.search(r"Stream #0:\d.*Video: h264 .*160x120", info), info
        assert re.search(r"Stream #0:\d.*Audio: aac .*22050 Hz, stereo", info), info
        h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
        durations.append(int(h) * 3600 + int(m) * 60 + float(s))
        _ffmpeg("-v", "error", "-xerror", "-i", str(path), "-f", "null", "-")  # full decode
    assert all(0.95 <= d <= 1.7 for d in durations), durations
    assert len({round(d, 2) for d in durations}) > 1  # drawn per video, not fixed


def test_same_seed_same_bytes_other_seed_other_bytes(made, tmp_path):
    out, paths = made
    again = synth(tmp_path / "again", seed=0, classes=["dog", "water"], **SHORT)
    other = synth(tmp_path / "other", seed=1, classes=["dog", "water"], **SHORT)
    for a, o in zip(again, other):
        rel = a.relative_to(tmp_path / "again")
        assert _sha(a) == _sha(out / rel), rel
        assert _sha(o) != _sha(a), rel


def test_rerun_skips_existing_files(made):
    out, paths = made
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert synth(out, seed=0, **SHORT) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == before


def test_classes_look_and_sound_different(made):
    out, _ = made
    for i in range(2):
        water, dog = (_mean_rgb(out / c / f"{c}_{i:03d}.mp4") for c in ("water", "dog"))
        assert water[2] / water.sum() > dog[2] / dog.sum() + 0.1, (water, dog)  # bluer
        fireworks = _mean_rgb(out / "fireworks" / f"fireworks_{i:03d}.mp4")
        assert fireworks.mean() < 60 < dog.mean(), (fireworks, dog)  # a night sky
        baby, rail = (_share_above(out / c / f"{c}_{i:03d}.mp4", 300.0) for c in ("baby", "rail"))
        assert baby > 0.8 > 0.2 > rail, (baby, rail)  # a high cry against a low rumble


def test_unknown_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'cat'.*baby, dog, rail, fireworks, water"):
        synth(tmp_path, classes=["dog", "cat"])
    assert not (tmp_path / "dog").exists()  # refused before writing anything


def test_ffmpeg_failure_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import s2i_data.synth as synth_module

    monkeypatch.setattr(synth_module, "WIDTH", 161)  # libx264 refuses odd widths in yuv420p
    with pytest.raises(RuntimeError, match=r"dog_000\.mp4: .+"):
        synth(tmp_path, classes=["dog"], videos_per_class=1, min_seconds=0.5, max_seconds=0.6)
    assert list((tmp_path / "dog").iterdir()) == []
