"""The one place that talks to ffmpeg: find the binary, probe a file, decode a video once.

ffmpeg on PATH wins; otherwise the static binary that the ``imageio-ffmpeg`` wheel ships, so that
``pip install`` alone gives a working tool. That wheel ships no ffprobe, so probing reads what
``ffmpeg -i`` prints about the container plus a demux-only pass (``-c copy -f framecrc``) that
lists every packet: the real extent of each stream, which a truncated file's header overstates.
`probe_many` does the same for several files in one run, where starting ffmpeg is most of the cost.
"""

from __future__ import annotations

import functools
import os
import shutil


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: $S2I_FFMPEG, else ffmpeg on PATH, else imageio-ffmpeg's."""
    env = os.environ.get("S2I_FFMPEG")
    if env:
        return env
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - it is a declared dependency
        raise RuntimeError("no ffmpeg on PATH and imageio-ffmpeg is not installed") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


import re
import subprocess
import threading
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np

# Quiet, non-interactive, deterministic: workers must never wait on a terminal.
_BASE = ("-nostdin", "-hide_banner")


class MediaError(Exception):
    """A file ffmpeg cannot use; the message is the one-line reason recorded in the manifest."""


class FFmpegKilled(RuntimeError):
    """ffmpeg died of a signal (out of memory, a kill): says nothing about the file, so the
    work is retried instead of the file being recorded as bad."""


def _check_killed(returncode: int, path: str) -> None:
    if returncode < 0:
        raise FFmpegKilled(f"ffmpeg was killed by signal {-returncode} while reading {path}")


@dataclass
class Probe:
    """What a file holds, as far as the pipeline cares; times are seconds from the file's start."""

    start_s: float  # usable span: where both the audio and the video streams really have data
    end_s: float
    duration_s: float  # end_s - start_s
    header_duration_s: float | None  # what the container claims (can overstate a truncated file)
    video_index: int  # absolute stream indices, chosen by type (first real video, first audio)
    audio_index: int
    width: int  # as displayed: rotation and sample aspect ratio applied
    height: int
    fps: float | None
    rotation: int  # degrees of the display matrix, 0 when none
    sar: float  # sample aspect ratio (1.0 for square pixels)
    video_codec: str
    audio_codec: str
    audio_rate: int
    audio_channels: int
    audio_end_s: float
    video_end_s: float

    def as_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row) -> "Probe":
        """Rebuild from a table row, where pandas may have turned ints into floats."""
        kinds = {"int": int, "float": float, "str": str}
        out = {}
        for name, f in cls.__dataclass_fields__.items():
            v = row[name]
            base = str(f.type).split("|")[0].strip()
            if v is None or (isinstance(v, float) and v != v):
                out[name] = None
            else:
                out[name] = kinds.get(base, lambda x: x)(v)
        return cls(**out)


_STREAM = re.compile(r"^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (\w+): (.*)$")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_SIZE = re.compile(r"(?:^|[ ,])(\d{1,5})x(\d{1,5})(?:[ ,\[]|$)")
_SAR = re.compile(r"SAR (\d+):(\d+)")
_FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")
_RATE = re.compile(r"(\d+) Hz")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6,
            "6.1": 7, "7.1": 8, "downmix": 2}


def _channels(desc: str) -> int:
    parts = [p.strip() for p in desc.split(",")]
    for p in parts[1:]:
        m = re.match(r"(\d+) channels", p)
        if m:
            return int(m.group(1))
        base = p.split("(")[0]
        if base in _LAYOUTS:
            return _LAYOUTS[base]
    return 0


def _parse_header(stderr: str, file: int = 0) -> tuple[float | None, list[dict]]:
    """The section of input #``file`` that ``ffmpeg -i`` prints: container duration and one
    dict per stream."""
    duration = None
    streams: list[dict] = []
    in_input = False
    stream_re = _STREAM if file == 0 else re.compile(_STREAM.pattern.replace("#0:", f"#{file}:"))
    for line in stderr.splitlines():
        if line.startswith(f"Input #{file},") or (file == 0 and line.startswith("Input #0")):
            in_input = True
            continue
        if line.startswith(("Output #", "Stream mapping:")) or (in_input and line.startswith("Input #")):
            break
        if not in_input:
            continue
        m = _DURATION.search(line)
        if m and duration is None:
            h, mi, s = m.groups()
            duration = int(h) * 3600 + int(mi) * 60 + float(s)
            continue
        m = stream_re.match(line)
        if m and any(s["index"] == int(m.group(1)) for s in streams):
            continue  # listed again under a program (MPEG-TS): one entry per stream
        if m:
            streams.append({"index": int(m.group(1)), "type": m.group(2).lower(), "desc": m.group(3)})
            continue
        m = _ROTATION.search(line)
        if m and streams:  # side data belongs to the stream printed just above it
            streams[-1]["rotation"] = int(round(float(m.group(1)))) % 360
    return duration, streams


def _parse_packets(framecrc: str) -> dict[int, tuple[float, float]]:
    """Per output stream: (first pts, end of last packet) in seconds, from a framecrc listing."""
    tbs: dict[int, float] = {}
    ext: dict[int, list[float]] = {}
    for line in framecrc.splitlines():
        if line.startswith("#tb "):
            idx, frac = line[4:].split(":")
            num, den = frac.strip().split("/")
            tbs[int(idx)] = int(num) / int(den)
        elif line and line[0].isdigit():
            f = line.split(",")
            if len(f) < 5:
                continue
            i, pts, dur = int(f[0]), int(f[2]), int(f[3])
            if pts < -(2**62):  # AV_NOPTS_VALUE
                continue
            tb = tbs.get(i, 0.0)
            start, end = pts * tb, (pts + max(dur, 0)) * tb
            cur = ext.setdefault(i, [start, end])
            cur[0], cur[1] = min(cur[0], start), max(cur[1], end)
    return {i: (a, b) for i, (a, b) in ext.items()}


_KNOWN = (("moov atom not found", "truncated or incomplete MP4/MOV (moov atom not found)"),
          ("EBML header parsing failed", "not a valid Matroska/WebM file"))


def _last_error(stderr: str) -> str:
    for needle, reason in _KNOWN:
        if needle in stderr:
            return reason
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        low = ln.lower()
        if any(w in low for w in ("invalid", "error", "no such", "not found", "denied", "unknown")):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)[:200]
    return (lines[-1] if lines else "ffmpeg printed nothing")[:200]


def probe(path: str, timeout: float = 300.0, local_only: bool = False) -> Probe:
    """Describe a file or raise `MediaError` with the reason it cannot be used.

    The header names the streams; a demux-only copy of the audio and video streams to framecrc
    lists their packets without decoding, so the usable span is where the data really is, not
    what the header promises. ``local_only``: ``path`` came from someone else's file (see
    `input_args`).
    """
    if not os.path.isfile(path):
        raise MediaError("file not found")
    if os.path.getsize(path) == 0:
        raise MediaError("empty file (0 bytes)")
    # One run: stderr describes the streams, stdout lists every packet of every audio and video
    # stream (demuxed and copied, never decoded). Output streams follow the -map order, all
    # video then all audio, which is how packets are matched back to input streams below.
    cmd = [ffmpeg_exe(), *_BASE, *input_args(path, local_only), "-map", "0:v?", "-map", "0:a?", "-c", "copy",
           "-f", "framecrc", "-"]
    # Own session: a Ctrl-C at the terminal stops the build (which then stops its workers), it
    # must not kill ffmpeg under a worker and make a good file look broken.
    run = subprocess.run(cmd, capture_output=True, timeout=timeout, start_new_session=True)
    _check_killed(run.returncode, path)
    stderr = run.stderr.decode("utf-8", "replace")
    header_duration, streams = _parse_header(stderr)
    return _describe(header_duration, streams, _parse_packets(run.stdout.decode("ascii", "replace")), stderr)


def _mapped(streams: list[dict]) -> list[dict]:
    """The streams ``-map N:v? -map N:a?`` sends to the output, in output order: every video
    stream, then every audio stream, each by index."""
    return (sorted((s for s in streams if s["type"] == "video"), key=lambda s: s["index"])
            + sorted((s for s in streams if s["type"] == "audio"), key=lambda s: s["index"]))


def _describe(header_duration: float | None, streams: list[dict], packets: dict[int, tuple[float, float]],
              stderr: str) -> Probe:
    """A `Probe` from one input's header and its packets (keyed by output stream, in `_mapped`
    order), or `MediaError`; ``stderr`` supplies the reason."""
    if not streams:
        raise MediaError(f"not a readable media file: {_last_error(stderr)}")
    # Streams are chosen by type: attached pictures (cover art) are not video.
    video = [s for s in streams if s["type"] == "video" and "attached pic" not in s["desc"]]
    audio = [s for s in streams if s["type"] == "audio"]
    if not video and not audio:
        raise MediaError("no audio and no video stream")
    if not video:
        cover = " (only a still cover picture)" if any(s["type"] == "video" for s in streams) else ""
        raise MediaError(f"no video stream{cover}: audio-only file")
    if not audio:
        raise MediaError("no audio stream: video-only file")
    v, a = video[0], audio[0]
    out_index = {s["index"]: i for i, s in enumerate(_mapped(streams))}
    if out_index[v["index"]] not in packets:
        raise MediaError(f"video stream has no readable packets: {_last_error(stderr)}")
    if out_index[a["index"]] not in packets:
        raise MediaError(f"audio stream has no readable packets: {_last_error(stderr)}")
    (video_start, video_end) = packets[out_index[v["index"]]]
    (audio_start, audio_end) = packets[out_index[a["index"]]]
    # Negative first pts are encoder priming cut by an edit list: the data starts at zero.
    start, end = max(0.0, video_start, audio_start), min(video_end, audio_end)

    size = _SIZE.search(v["desc"])
    if not size:
        raise MediaError("video stream has no frame size")
    w, h = int(size.group(1)), int(size.group(2))
    sar_m = _SAR.search(v["desc"])
    sar = int(sar_m.group(1)) / int(sar_m.group(2)) if sar_m and int(sar_m.group(2)) else 1.0
    sar = sar if sar > 0 else 1.0
    w = int(round(w * sar))
    rotation = v.get("rotation", 0)
    if rotation in (90, 270):
        w, h = h, w
    fps_m = _FPS.search(v["desc"])
    fps = float(fps_m.group(1)) * (1000 if fps_m.group(2) else 1) if fps_m else None
    rate_m = _RATE.search(a["desc"])
    return Probe(
        start_s=start,
        end_s=max(start, end),
        duration_s=max(0.0, end - start),
        header_duration_s=header_duration,
        video_index=v["index"],
        audio_index=a["index"],
        width=w,
        height=h,
        fps=fps,
        rotation=rotation,
        sar=sar,
        video_codec=v["desc"].split(",")[0].split(" ")[0],
        audio_codec=a["desc"].split(",")[0].split(" ")[0],
        audio_rate=int(rate_m.group(1)) if rate_m else 0,
        audio_channels=_channels(a["desc"]),
        audio_end_s=audio_end,
        video_end_s=video_end,
    )


# Any line ffmpeg logs above "info" (with -loglevel level+info every line carries its level).
_TROUBLE = re.compile(r"\[(?:warning|error|fatal|panic)\] ")


def probe_many(paths: list[str], timeout: float = 300.0) -> list[Probe | None]:
    """`probe` of several files by one ffmpeg run, for what a run of its own would cost each.

    Starting ffmpeg is most of a probe of a short clip (about 15 of 25 ms). One run reads every
    file (``-i`` each, ``-map K:v? -map K:a?`` each, in that order) and, when it is clean - exit
    0, nothing logged above "info" - each file's header section and packets are its own, the
    same as `probe` reads (each input is demuxed on its own, timestamps offset by its own start).
    Anything else gives None for every file, and None stands for a file the run found unusable:
    the caller probes those alone, so reasons and failures come from `probe` only.
    """
    none: list[Probe | None] = [None] * len(paths)
    if len(paths) < 2:
        return none
    cmd = [ffmpeg_exe(), *_BASE, "-nostats", "-loglevel", "level+info"]
    for path in paths:
        cmd += ["-i", path]
    for k in range(len(paths)):
        cmd += ["-map", f"{k}:v?", "-map", f"{k}:a?"]
    cmd += ["-c", "copy", "-f", "framecrc", "-"]
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=timeout, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return none
    stderr = run.stderr.decode("utf-8", "replace")
    if run.returncode != 0 or _TROUBLE.search(stderr):
        return none
    stderr = "\n".join(ln[7:] if ln.startswith("[info] ") else ln for ln in stderr.splitlines())
    try:
        packets = _parse_packets(run.stdout.decode("ascii", "replace"))
        out: list[Probe | None] = []
        first = 0  # output index of this file's first stream
        for k in range(len(paths)):
            duration, streams = _parse_header(stderr, k)
            n = len(_mapped(streams))
            mine = {i - first: span for i, span in packets.items() if first <= i < first + n}
            first += n
            try:
                out.append(_describe(duration, streams, mine, ""))
            except MediaError:
                out.append(None)
    except Exception:  # noqa: BLE001 - text this parser did not expect: each file's own probe
        return none  # meets it again and answers (or fails) the way a single file always has
    if any(i >= first for i in packets):
        return none  # packets of more streams than the headers name: a section was misread
    return out


# Audio before the first and after the last segment that the analysis windows read (25 ms
# frames centred on a 10 ms grid overhang a segment by 7.5 ms); a little more costs nothing.
AUDIO_MARGIN_S = 0.05
SEEK_LEAD_S = 1.0


@dataclass
class Decoded:
    audio: np.ndarray  # float32 mono in [-1, 1]; audio[0] sits at `audio_start_s` in the file
    audio_start_s: float
    frames: np.ndarray  # uint8 [n, size, size, 3]: frame k is on screen at `frame_times_s[k]`


def _video_filter(probe: Probe, shift_s: float, step_s: float, size: int) -> str:
    # Shift so that the wanted instants fall on the output grid k * step, then let the fps filter
    # pick, for each grid point, the last frame whose pts <= that instant (round=up): "the frame
    # on screen" whatever the frame rate, constant or variable. Crop and scale run only on the
    # few frames that survive. Autorotation has already been applied by ffmpeg before this graph.
    rate = Fraction(step_s).limit_denominator(1000) ** -1
    chain = [f"setpts=PTS-{shift_s:.6f}/TB", f"fps=fps={rate.numerator}/{rate.denominator}:round=up:start_time=0"]
    if abs(probe.sar - 1.0) > 1e-3:
        chain.append("scale=w='trunc(iw*sar/2)*2':h=ih,setsar=1")
    chain += ["crop=w='min(iw,ih)':h='min(iw,ih)'", f"scale={size}:{size}:flags=area", "format=rgb24"]
    return ",".join(chain)


def decode(path: str, probe: Probe, audio_span_s: tuple[float, float], first_frame_s: float = 0.0,
           n_frames: int = 0, frame_step_s: float = 1.0, sample_rate: int = 16000,
           image_size: int = 96, timeout: float = 600.0, local_only: bool = False) -> Decoded:
    """Decode a file once: its first audio stream as mono at ``sample_rate`` over ``audio_span_s``,
    and the frames on screen at ``first_frame_s + k * frame_step_s`` for k < ``n_frames``,
    square-cropped and scaled to ``image_size`` (fewer come back if the video ends first).

    One ffmpeg process writes the audio to stdout and the frames to a second pipe; a thread drains
    the frames so neither pipe can fill up and stall the other. ``local_only``: see `input_args`.
    """
    # Seeking a second early costs a second of cheap decoding and keeps a long-held frame (a
    # slideshow, a frozen stream) that started before the span in reach of the fps filter.
    seek = max(0.0, audio_span_s[0] - SEEK_LEAD_S)
    stop = audio_span_s[1] + AUDIO_MARGIN_S
    read_fd, write_fd = os.pipe()
    cmd = [ffmpeg_exe(), *_BASE, "-loglevel", "error", "-threads", "1"]
    if seek > 0:
        cmd += ["-ss", f"{seek:.6f}"]
    cmd += [*input_args(path, local_only),
            # first_pts=0 pads with silence when the audio starts after the container's zero
            # (and trims encoder priming), so sample k really sits at seek + k / rate.
            "-map", f"0:{probe.audio_index}", "-t", f"{stop - seek:.6f}", "-ac", "1",
            "-af", f"aresample={sample_rate}:first_pts=0", "-f", "f32le", "pipe:1"]
    if n_frames:
        cmd += ["-map", f"0:{probe.video_index}",
                "-vf", _video_filter(probe, first_frame_s - seek, frame_step_s, image_size),
                "-frames:v", str(n_frames), "-f", "rawvideo", f"pipe:{write_fd}"]
    chunks: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as f:
            while block := f.read(1 << 20):
                chunks.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(write_fd,), start_new_session=True)
    finally:
        os.close(write_fd)  # the child holds its own copy; ours must close for EOF to arrive
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise MediaError(f"decoding took longer than {timeout:.0f} s") from None
    finally:
        reader.join(timeout=60)
    _check_killed(proc.returncode, path)
    if proc.returncode != 0:
        raise MediaError(f"decoding failed: {_last_error(err.decode('utf-8', 'replace'))}")
    audio = np.frombuffer(out, dtype="<f4").astype(np.float32)
    frame_bytes = image_size * image_size * 3
    raw = b"".join(chunks)
    frames = np.frombuffer(raw[: len(raw) // frame_bytes * frame_bytes], dtype=np.uint8)
    return Decoded(audio=audio, audio_start_s=seek,
                   frames=frames.reshape(-1, image_size, image_size, 3))


def decode_segments(path: str, probe: Probe, starts, seconds: float, sample_rate: int = 16000,
                    image_size: int = 96, timeout: float = 600.0, local_only: bool = False) -> Decoded:
    """`decode` for segments of ``seconds`` starting at ``starts`` (s): the audio from the first
    to the end of the last, with a frame at every segment centre in between.

    The builder's one decode of a video, and verify's repeat of it: the audio of some files
    (AAC with noise substitution) depends on where decoding starts, so both must start alike.
    """
    first, last = min(starts), max(starts)
    n_frames = max(int(round((t - first) / seconds)) for t in starts) + 1
    return decode(path, probe, (first, last + seconds), first_frame_s=first + seconds / 2, n_frames=n_frames,
                  frame_step_s=seconds, sample_rate=sample_rate, image_size=image_size, timeout=timeout,
                  local_only=local_only)


def decode_audio(path: str, sample_rate: int = 16000, timeout: float = 600.0) -> np.ndarray:
    """The first audio stream of any audio or video file, as mono float32 at ``sample_rate``,
    sample 0 at the file's time zero. Raises `MediaError` with the reason it cannot."""
    if not os.path.isfile(path):
        raise MediaError("file not found")
    if os.path.getsize(path) == 0:
        raise MediaError("empty file (0 bytes)")
    cmd = [ffmpeg_exe(), *_BASE, "-loglevel", "error", "-i", path, "-map", "0:a:0", "-ac", "1",
           "-af", f"aresample={sample_rate}:first_pts=0", "-f", "f32le", "pipe:1"]
    run = subprocess.run(cmd, capture_output=True, timeout=timeout, start_new_session=True)
    _check_killed(run.returncode, path)
    err = run.stderr.decode("utf-8", "replace")
    if run.returncode != 0:
        if "matches no streams" in err:
            raise MediaError("no audio stream")
        raise MediaError(f"cannot decode the audio: {_last_error(err)}")
    return np.frombuffer(run.stdout, dtype="<f4").astype(np.float32)


# ---- single local files named by users (s2i-model imagine): streamed, never taken for a protocol

def as_input(path) -> str:
    """``path`` as an ffmpeg input that can only mean that local file: ``file:`` + its absolute path.

    ffmpeg takes ``concat:a|b``, ``pipe:0``, ``http:…`` (any ``scheme:`` prefix) for a protocol
    whatever the folder holds, and a bare ``-`` for stdin; an absolute path has no scheme and the
    ``file:`` prefix says so outright (also where ``C:`` would look like one).
    """
    return "file:" + os.path.abspath(os.fspath(path))


# Nested opens (a playlist in a .m3u8, say) may only reach local files: no network, no pipes.
LOCAL_ONLY = ("-protocol_whitelist", "file")


def input_args(path, local_only: bool) -> list[str]:
    """``-i path``; with ``local_only`` (a path named in someone else's file: a manifest) as
    `as_input` and reaching only local files. The decoded data is the same either way."""
    return [*LOCAL_ONLY, "-i", as_input(path)] if local_only else ["-i", path]


def header_duration(path, timeout: float = 60.0) -> float | None:
    """The duration the container header claims, in seconds (``ffmpeg -i``, nothing decoded), or
    None when it states none, cannot be read, or takes longer than ``timeout`` to read: a hint
    only; the decoder says whether the file is usable and how long it really is."""
    cmd = [ffmpeg_exe(), *_BASE, *LOCAL_ONLY, "-i", as_input(path)]
    try:
        run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                             start_new_session=True)
    except (subprocess.TimeoutExpired, OSError):
        return None
    duration, _ = _parse_header(run.stderr.decode("utf-8", "replace"))
    return duration


def stream_audio(path, sample_rate: int = 16000, chunk_samples: int = 1 << 16,
                 idle_timeout: float = 120.0):
    """The first audio stream of a local file as mono float32 at ``sample_rate``, sample 0 at the
    file's time zero, yielded in arrays of about ``chunk_samples`` (the same samples as
    `decode_audio`, whose whole-file array a long recording would not fit in memory).

    One ffmpeg process writes to a pipe; there is no time limit on the whole decode (an hour-long
    file takes what it takes), only on silence from ffmpeg: no byte for ``idle_timeout`` seconds
    (a stalled network mount, a FIFO nobody writes) kills it with a `MediaError`. Closing the
    generator early kills ffmpeg too. Raises `MediaError` with the reason the file cannot be read.
    """
    import collections
    import select

    if not os.path.exists(path):
        raise MediaError("file not found")
    if os.path.isdir(path):
        raise MediaError("a folder, not a file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise MediaError("empty file (0 bytes)")
    cmd = [ffmpeg_exe(), *_BASE, "-loglevel", "error", *LOCAL_ONLY, "-i", as_input(path),
           "-map", "0:a:0", "-ac", "1", "-af", f"aresample={sample_rate}:first_pts=0", "-f", "f32le", "pipe:1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    # A damaged file can print an error per packet for an hour: only the tail is kept.
    tail: collections.deque[bytes] = collections.deque(maxlen=64)
    err_reader = threading.Thread(target=lambda: tail.extend(iter(proc.stderr.readline, b"")), daemon=True)
    err_reader.start()
    fd = proc.stdout.fileno()
    want = max(1, int(chunk_samples)) * 4
    pending = bytearray()
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], idle_timeout)
            if not ready:
                raise MediaError(f"ffmpeg gave no audio for {idle_timeout:g} s (stalled input?)")
            block = os.read(fd, max(want - len(pending), 1 << 16))
            if not block:
                break
            pending += block
            if len(pending) >= want:
                usable = len(pending) // 4 * 4
                yield np.frombuffer(pending, "<f4", usable // 4).astype(np.float32)
                del pending[:usable]
        proc.wait()
        err_reader.join(timeout=10)
        _check_killed(proc.returncode, str(path))
        if proc.returncode != 0:
            err = b"".join(tail).decode("utf-8", "replace")
            if "matches no streams" in err:
                raise MediaError("no audio stream")
            raise MediaError(f"cannot decode the audio: {_last_error(err)}")
        if len(pending) >= 4:
            yield np.frombuffer(pending, "<f4", len(pending) // 4).astype(np.float32)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err_reader.join(timeout=10)  # ffmpeg is gone, so its stderr is at EOF
        proc.stdout.close()
        if not err_reader.is_alive():
            proc.stderr.close()
