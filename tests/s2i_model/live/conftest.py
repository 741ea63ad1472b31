"""What the live tests share: a tiny trained run (the model tests' tiny build, trained one epoch a
stage at width 1/16, with the real-frame classifier `evaluate` would keep in it), a real video
with a sounding, a silent and a sounding stretch, and ffmpeg streaming it over loopback HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import encode_frames
from s2i_data.media import ffmpeg_exe

SR = 16000
# sound 0-3 s, digital silence 3-5.5 s, sound 5.5-7 s
SOUND_S, SILENCE_S, TAIL_S = 3.0, 2.5, 1.5
LENGTH_S = SOUND_S + SILENCE_S + TAIL_S


@pytest.fixture(scope="session")
def live_run(tiny_build, tmp_path_factory) -> Path:
    from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
    from s2i_model.evaluate.realframe import frame_classifier
    from s2i_model.models.s2i.train_autoencoder import train_autoencoder
    from s2i_model.models.s2i.train_translator import train_translator

    run = tmp_path_factory.mktemp("live") / "run"
    quiet = dict(log=lambda *_: None)
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=64, width=0.0625, epochs=1,
                                        batch_size=8, workers=0, device="cpu"), **quiet)
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=1, batch_size=8, workers=0,
                                      device="cpu"), **quiet)
    frame_classifier(tiny_build, 5, cache=run / "frame-classifier.pt", epochs=1)
    return run


def sound(seconds: float, seed: int = 0) -> np.ndarray:
    """Loud, changing sound: a chirp over noise bursts (so each window differs)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    chirp = np.sin(2 * np.pi * (300 + 900 * t) * t)
    bursts = rng.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0)
    return (0.25 * chirp + 0.1 * bursts).astype(np.float32)


@pytest.fixture(scope="session")
def talk_and_silence(tmp_path_factory) -> Path:
    """A 7 s video: sound, 2.5 s of digital silence, sound (frames are a plain moving bar)."""
    audio = np.concatenate([sound(SOUND_S), np.zeros(int(SILENCE_S * SR), np.float32), sound(TAIL_S, 1)])
    n = int(LENGTH_S * 10)
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    for i in range(n):
        frames[i, :, i % 32] = 255
    return encode_frames(tmp_path_factory.mktemp("video") / "talk.mkv", frames, fps=10, audio=audio, sr=SR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Streamer:
    """ffmpeg serving a file's sound as a live MPEG-TS stream over loopback HTTP (-re: at its own
    speed, from when the client connects; the stream ends when the file does)."""

    def __init__(self, path: Path, video: bool = False, audio: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/live.ts"
        codecs = (["-c:a", "aac"] if audio else ["-an"]) + (["-c:v", "mpeg2video"] if video else ["-vn"])
        self.proc = subprocess.Popen([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "quiet", "-re",
                                      "-i", str(path), *codecs, "-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0",
                                      "-flush_packets", "1", "-listen", "1", self.url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until ffmpeg listens, without connecting: it serves the first client only.
        deadline = time.monotonic() + 20
        while not listening(self.port) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listening(self.port), "ffmpeg did not start listening"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port (Linux's socket table; state 0A is LISTEN)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return True
    return False


def live_cmd(*args, fast: str = "eager") -> list[str]:
    """`s2i-model live ARGS` on the eager networks unless ``fast`` says otherwise: importing OpenVINO
    and compiling cost ~2 s a process, and only the tests of the fast path itself need it (they
    pass ``fast="auto"``, live's default)."""
    return [sys.executable, "-m", "s2i_model.cli", "live", *map(str, args), "--fast", fast, "--no-open", "--port", "0"]
