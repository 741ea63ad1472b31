"""Shared fixtures: small real corpora made with ffmpeg, built once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from s2i_data.media import ffmpeg_exe


def encode_frames(path: Path, frames: np.ndarray, fps: float = 25.0, codec: str = "ffv1",
                  audio: np.ndarray | None = None, sr: int = 16000, extra: list[str] | None = None) -> Path:
    """Write uint8 [n, h, w, 3] frames (and optional mono float audio) to a real video file."""
    n, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    tmp_wav = None
    if audio is not None:
        import soundfile

        tmp_wav = path.with_suffix(".in.wav")
        soundfile.write(tmp_wav, audio, sr, subtype="FLOAT")
        cmd += ["-i", str(tmp_wav)]
    vcodec = ["-c:v", "ffv1"] if codec == "ffv1" else ["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast"]
    cmd += vcodec + (["-c:a", "flac"] if audio is not None else []) + (extra or []) + [str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    if tmp_wav:
        tmp_wav.unlink()
    return path


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory) -> Path:
    from s2i_data.synth import synth

    root = tmp_path_factory.mktemp("synth")
    synth(root, videos_per_class=5, seed=1, min_seconds=2.2, max_seconds=3.6)
    return root
