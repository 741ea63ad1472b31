"""media: probing real containers and decoding exactly the frame on screen and the right audio."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import encode_frames
from s2i_data import media

FPS = 25


def index_video(n: int, w: int = 160, h: int = 90) -> np.ndarray:
    """Frames whose centre square's grey level encodes the frame index; red bars outside it."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = 255  # the parts a centre crop must remove are pure red
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    for k in range(n):
        frames[k, y0 : y0 + side, x0 : x0 + side] = 2 * k
    return frames


def indices(decoded: media.Decoded) -> list[int]:
    return [int(round(f[..., 1].mean() / 2)) for f in decoded.frames]


def test_frame_on_screen_at_segment_centres_cfr(tmp_path):
    path = encode_frames(tmp_path / "idx.mkv", index_video(100), FPS,
                         audio=np.zeros(16000 * 4, np.float32))
    pr = media.probe(str(path))
    assert (pr.width, pr.height) == (160, 90) and pr.fps == FPS
    assert pr.duration_s == pytest.approx(4.0, abs=0.05)
    d = media.decode(str(path), pr, (0.0, 4.0), first_frame_s=0.5, n_frames=4)
    # The frame on screen at t is the last one whose start <= t: at 25 fps, floor(t * 25).
    assert indices(d) == [12, 37, 62, 87]
    # Centre crop: none of the red bars survive anywhere in the 96x96 picture.
    assert d.frames.shape == (4, 96, 96, 3)
    assert np.abs(d.frames[..., 0].astype(int) - d.frames[..., 1]).max() <= 2


def test_frame_on_screen_with_seek_and_variable_rate(tmp_path):
    src = encode_frames(tmp_path / "cfr.mkv", index_video(60), FPS, audio=np.zeros(16000 * 3, np.float32))
    # Irregular timestamps: frame k at k*k/1200 s (gaps grow from 1 ms to ~100 ms).
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                    "-vf", "setpts=N*N/1200/TB", "-fps_mode", "passthrough", "-c:v", "ffv1", "-c:a", "copy",
                    str(vfr)], check=True)
    pts = [k * k / 1200 for k in range(60)]
    pr = media.probe(str(vfr))
    d = media.decode(str(vfr), pr, (1.0, 2.0), first_frame_s=1.5, n_frames=2)
    expected = [max(k for k in range(60) if pts[k] <= t) for t in (1.5, 2.5)]
    assert indices(d) == expected


def test_audio_sample_timing_and_late_audio(tmp_path):
    sr = 16000
    audio = np.zeros(sr * 3, np.float32)
    audio[int(1.25 * sr)] = 0.9  # a click at exactly 1.25 s
    plain = encode_frames(tmp_path / "click.mkv", index_video(75), FPS, audio=audio)
    pr = media.probe(str(plain))
    d = media.decode(str(plain), pr, (1.0, 2.0))
    onset = d.audio_start_s + np.argmax(np.abs(d.audio)) / sr
    assert onset == pytest.approx(1.25, abs=0.001)

    late = tmp_path / "late.mkv"  # the same audio, starting 0.5 s after the video
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(plain),
                    "-itsoffset", "0.5", "-i", str(plain), "-map", "0:v", "-map", "1:a", "-c", "copy",
                    str(late)], check=True)
    pr = media.probe(str(late))
    assert pr.start_s == pytest.approx(0.5, abs=0.01)
    d = media.decode(str(late), pr, (1.0, 2.5))
    onset = d.audio_start_s + np.argmax(np.abs(d.audio)) / sr
    assert onset == pytest.approx(1.75, abs=0.002)


def test_rotation_is_applied(tmp_path):
    src = encode_frames(tmp_path / "land.mp4", index_video(50), FPS, codec="x264",
                        audio=np.zeros(32000, np.float32), extra=["-c:a", "aac"])
    rot = tmp_path / "rot.mp4"
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(src), "-c", "copy", str(rot)], check=True)
    pr = media.probe(str(rot))
    assert pr.rotation == 90 and (pr.width, pr.height) == (90, 160)
    d = media.decode(str(rot), pr, (0.0, 1.0), first_frame_s=0.5, n_frames=1)
    assert d.frames.shape == (1, 96, 96, 3)
    assert np.abs(d.frames[0, ..., 0].astype(int) - d.frames[0, ..., 1]).max() <= 8  # still no red


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, this is not a video\n" * 20, "not a readable media file"),
])
def test_unreadable_files_raise_a_reason(tmp_path, content, reason):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(media.MediaError, match=reason):
        media.probe(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(media.MediaError, match="file not found"):
        media.probe(str(tmp_path / "nope.mp4"))
