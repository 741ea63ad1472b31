"""Where live sound comes from: the default microphone, any ffmpeg input, or raw PCM on stdin.

Every source yields mono float32 chunks at the run's sample rate, as soon as they arrive (small
chunks: the chunk size is latency), and says whether it is ``live``: a live source runs at its own
pace whatever we do, so stale windows are dropped; a file or a pipe waits for us, so every window
is made.

ffmpeg only ever gets argument lists (no shell). A local file is passed as ``file:/abs/path`` and
may only open local files (`media.as_input`, `media.LOCAL_ONLY`), so a name like ``concat:a|b`` is a
file; a URL (``scheme://…``) is passed as the user wrote it, to reach that stream.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np

from s2i_data import media
from s2i_data.untrusted import path_shown, printable

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# Microphone blocks and pipe reads: 20 ms, so the chunk size adds at most that to the latency.
BLOCK_S = 0.02


class SourceError(Exception):
    """A source that cannot be read, or stopped being readable: one line for the user."""


class Source:
    live: bool = True
    name: str = ""

    def chunks(self) -> Iterator[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Stop reading (from another thread too): `chunks` ends soon after."""


class FfmpegSource(Source):
    """Any input ffmpeg reads: a URL, a device (``fmt``: ``-f pulse``, ``-f alsa``…), a local file
    (``realtime``: paced at its own speed with ``-re``, as if live) or stdin (``pcm_rate``: raw s16le
    mono at that rate). No byte from ffmpeg for ``stall_timeout`` seconds ends it with a `SourceError`.
    """

    def __init__(self, input: str, sample_rate: int, realtime: bool = False, fmt: str | None = None,
                 pcm_rate: int | None = None, stall_timeout: float = 10.0, stdin=None) -> None:
        self.sample_rate, self.stall_timeout = sample_rate, stall_timeout
        # what is shown and recorded: a URL's user and password stay out of the page and live.json,
        # and a newline or control character in a name is escaped (it cannot forge a line)
        self.name = "stdin" if input == "-" else path_shown(re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@",
                                                                   input))
        self._raw = input
        before: list[str] = []
        if input == "-":
            before += ["-f", "s16le", "-ar", str(pcm_rate or 16000), "-ac", "1"]
            arg = "pipe:0"
            self.live = realtime
        elif fmt:  # a capture device: its name is the device's, not a path
            before += ["-f", fmt]
            arg = input
            self.live = True
        elif URL.match(input):
            arg = input
            self.live = True
            # ffmpeg reads up to 5 s of a stream to learn its codecs before it decodes a sample:
            # 0.5 s is enough for the audio and keeps that wait off the first pictures.
            before += ["-analyzeduration", "500000", "-probesize", "65536"]
        elif os.path.isfile(input):
            if os.path.getsize(input) == 0:
                raise SourceError(f"{self.name}: empty file (0 bytes)")
            before += list(media.LOCAL_ONLY)
            arg = media.as_input(input)
            self.live = realtime
        elif os.path.isdir(input):
            raise SourceError(f"{self.name}: a folder, not a file or stream (imagine takes folders)")
        else:
            raise SourceError(f"{self.name}: no such file, and not a stream URL (scheme://...)")
        if realtime:
            before.insert(0, "-re")
        self.cmd = [media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *([] if input == "-" else ["-nostdin"]),
                    *before, "-i", arg, "-map", "0:a:0", "-ac", "1", "-af", f"aresample={sample_rate}",
                    # rawaudio output is buffered 32 KB at a time (0.5 s at 16 kHz) unless flushed per packet
                    "-flush_packets", "1", "-f", "f32le", "pipe:1"]
        self._stdin = stdin if input == "-" else subprocess.DEVNULL
        self._proc: subprocess.Popen | None = None
        self._closed = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        try:
            proc = self._proc = subprocess.Popen(self.cmd, stdin=self._stdin if self._stdin is not None else sys.stdin,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise SourceError(f"cannot start ffmpeg: {e.strerror or e}") from None
        tail: collections.deque[bytes] = collections.deque(maxlen=64)  # a bad stream can print errors for ever
        err = threading.Thread(target=lambda: tail.extend(iter(proc.stderr.readline, b"")), daemon=True)
        err.start()
        fd = proc.stdout.fileno()
        pending = bytearray()
        want = max(4, int(BLOCK_S * self.sample_rate) * 4)
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([fd], [], [], min(self.stall_timeout, 0.25))
                if not ready:
                    if proc.poll() is None and self._stalled():
                        raise SourceError(f"{self.name}: the stream stalled (no audio for {self.stall_timeout:g} s)")
                    continue
                block = os.read(fd, 1 << 16)
                if not block:
                    break
                self._last = _now()
                pending += block
                usable = len(pending) // 4 * 4
                if usable >= want:
                    yield np.frombuffer(bytes(pending[:usable]), "<f4").copy()
                    del pending[:usable]
            if self._closed.is_set():
                return
            proc.wait()
            err.join(timeout=5)
            if proc.returncode != 0:
                reason = _reason(b"".join(tail).decode("utf-8", "replace"), proc.returncode).replace(self._raw, self.name)
                raise SourceError(f"{self.name}: {printable(reason)}")
            if len(pending) >= 4:
                yield np.frombuffer(bytes(pending[: len(pending) // 4 * 4]), "<f4").copy()
        finally:
            self._kill()
            err.join(timeout=5)
            proc.stdout.close()
            if not err.is_alive():
                proc.stderr.close()

    _last: float | None = None

    def _stalled(self) -> bool:
        if self._last is None:
            self._last = _now()  # the clock starts when ffmpeg does, so a slow first connect counts too
        return _now() - self._last > self.stall_timeout

    def _kill(self) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def close(self) -> None:
        self._closed.set()
        self._kill()


def _now() -> float:
    import time

    return time.monotonic()


def _reason(stderr: str, returncode: int) -> str:
    if returncode < 0:
        return f"ffmpeg was killed by signal {-returncode}"
    if "matches no streams" in stderr or "does not contain any stream" in stderr:
        return "no audio stream in this input"
    return media._last_error(stderr)


class MicrophoneSource(Source):
    """The default input device through sounddevice (PortAudio): blocks of 20 ms from its callback
    thread, through a bounded queue (a consumer that stops cannot grow it)."""

    live = True

    def __init__(self, sample_rate: int, device: str | None = None, stall_timeout: float = 10.0) -> None:
        try:
            import sounddevice as sd
        except ImportError:
            raise SourceError("the microphone needs the sounddevice package: pip install 's2i[live]' "
                              "(or give a stream URL, a file or - for PCM on stdin)") from None
        except OSError:  # the package is there, the PortAudio library is not
            raise SourceError("the microphone needs the PortAudio library, which is not installed "
                              "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio)") from None
        self._sd = sd
        try:
            info = sd.query_devices(device, kind="input")
        except (ValueError, sd.PortAudioError):
            raise SourceError("no microphone: this machine has no audio input device" if device is None
                              else f"no audio input device {device!r} (python -m sounddevice lists them)") from None
        self.name = f"microphone ({printable(info['name'])})"
        self.sample_rate, self.device, self.stall_timeout = sample_rate, device, stall_timeout
        self._q: queue.Queue = queue.Queue(maxsize=500)  # 10 s of 20 ms blocks
        self._closed = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        sd = self._sd

        def callback(indata, frames, time, status) -> None:
            try:
                self._q.put_nowait(indata[:, 0].copy())
            except queue.Full:
                pass  # the reader is gone or stuck: the newest block is lost, memory stays flat

        try:
            stream = sd.InputStream(samplerate=self.sample_rate, channels=1, dtype="float32", device=self.device,
                                    blocksize=int(BLOCK_S * self.sample_rate), callback=callback)
        except sd.PortAudioError as e:
            raise SourceError(f"{self.name}: cannot open it at {self.sample_rate} Hz: {e}") from None
        with stream:
            while not self._closed.is_set():
                try:
                    yield self._q.get(timeout=self.stall_timeout)
                except queue.Empty:
                    if not self._closed.is_set():
                        raise SourceError(f"{self.name}: gave no sound for {self.stall_timeout:g} s") from None

    def close(self) -> None:
        self._closed.set()


class ArraySource(Source):
    """Audio already in memory, as a stream of ``chunk_s`` chunks; ``realtime`` paces it by the clock
    as a microphone would (bench/live.py, tests)."""

    def __init__(self, audio: np.ndarray, sample_rate: int, realtime: bool = False, chunk_s: float = BLOCK_S,
                 name: str = "array") -> None:
        self.audio, self.sample_rate, self.live, self.chunk_s, self.name = audio, sample_rate, realtime, chunk_s, name
        self._closed = threading.Event()

    def chunks(self) -> Iterator[np.ndarray]:
        step = max(1, int(round(self.chunk_s * self.sample_rate)))
        t0 = _now()
        for i in range(0, len(self.audio), step):
            if self._closed.is_set():
                return
            if self.live:  # this chunk is "recorded" once the clock has passed its end
                wait = t0 + (i + step) / self.sample_rate - _now()
                if wait > 0 and self._closed.wait(wait):
                    return
            yield np.asarray(self.audio[i:i + step], np.float32)

    def close(self) -> None:
        self._closed.set()


def open_source(input: str | None, sample_rate: int, realtime: bool = False, fmt: str | None = None,
                pcm_rate: int = 16000, stall_timeout: float = 10.0, device: str | None = None) -> Source:
    """The source the user named: None for the default microphone, ``-`` for PCM on stdin, else an
    ffmpeg input."""
    if input is None:
        return MicrophoneSource(sample_rate, device, stall_timeout)
    return FfmpegSource(str(input), sample_rate, realtime, fmt, pcm_rate, stall_timeout, stdin=sys.stdin.buffer
                        if input == "-" else None)


__all__ = ["ArraySource", "FfmpegSource", "MicrophoneSource", "Source", "SourceError", "open_source"]
