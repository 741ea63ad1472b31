"""Content checks for verify: samples recomputed from their sources, apart from the builder.

The builder decodes each video once (`media.decode_segments`: one ffmpeg run from a second
before its first segment, the fps filter picking the frame on screen at every segment centre)
and frames the audio with `features.log_mel_segments`. Here each segment's log-mel is framed
again by a plain float64 computation (frame i centred at start + (i + 0.5) * 10 ms, reading the
neighbouring audio, zeros only outside the decoded audio), and each picture comes from its own
ffmpeg run that keeps the frames up to the segment's centre and takes the last one (the frame on
screen then). Shared with the builder: ffmpeg, the mel filter bank (checked against librosa in
test_features), the crop/scale filters, which define the picture of the contract, and the
decoding of the audio.

The audio is decoded by the builder's own call, `media.decode_segments` for the segments of the
video in the manifest (`segment_starts`), so from the same seek point, with the same streams
and arguments. It must be: an AAC decoder fills noise-substituted bands (PNS, which ffmpeg's AAC
encoder uses on noisy sound, and uploads have) from a random generator that runs from the first
packet it decodes, so the audio of a noisy file differs from one start to the next (log-mel
|Δ| up to 4: a decode of the whole file from time zero, as here before, failed every sample of
a video the builder had sought into). The other stream matters too: ffmpeg starts its clock at
the earliest stream a run uses, so decoding the audio alone would start it later for an MPEG-TS
whose audio starts after its video. Only a video whose first segment failed at build time (it
is then not in the manifest) is decoded from another point than the builder's.

Times are the manifest's: seconds from the start of the file's first audio and first video
stream together, as the builder's probe and decoder see them; the frame runs here keep the
audio stream too (stream-copied to nothing) for the same reason.

Tolerances, measured on the test corpora (tiny synth build, awkward-inputs build, full-scale
tones and noise, noisy AAC in MP4 and in late-audio MPEG-TS; see tests/s2i_data/test_verify.py
and test_verify_pns.py):

* ``MEL_TOL``: largest |Δ| of natural-log mel energies. Measured at most 1.3e-4 (the builder
  works in float32; the largest differences sit in quiet bands near the 1e-6 floor), so 1e-3,
  energies within 0.1 %. Two different samples differ by >= 4 somewhere (closest pair seen: 7.5).
* ``FRAME_TOL``: mean |Δ| in 8-bit levels. Measured 0 (same decoder, same filters: the same
  bits) on every sample of the synth, awkward-inputs and late-audio MPEG-TS builds, PNG and JPEG;
  0.5 leaves room for another ffmpeg build's scaler rounding (±1 on half the pixels) and still
  separates the closest pair of different samples seen, two seconds of one near-still video
  (1.2 levels; two different videos: >= 2.1). The frame on screen one frame later differs by 0.2
  to 10 levels (median 2.8), so the comparison is with the frame on screen at the centre, or a
  neighbour only where one starts within half a tick of the stream's clock of it (see
  `frames_at`: the builder's AVI frames at 0.5 s are 0.52 s ones). JPEG builds: the reference
  goes through the same JPEG encoding first (quality 95, 4:4:4, the contract's).
* ``FLAC_TOL``: largest |Δ| of the kept audio against the source's samples clipped to ±1 (the
  builder clips before writing 16-bit PCM). Measured 1 step of 16-bit PCM (3.1e-5); 2 steps.
* ``FLAC_MEL_TOL``: mean |Δ| between the log-mel of the kept audio and the sample's mel.npy,
  over the frames that lie wholly inside the segment and read no clipped sample. The 16-bit
  quantisation noise moves quiet bands: measured mean <= 0.0033 (max 0.047), so 0.05; a swap
  is >= 1.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import media, storage
from .features import N_MELS, mel_filterbank

MEL_TOL = 1e-3
FRAME_TOL = 0.5
FLAC_TOL = 2 / 32768
FLAC_MEL_TOL = 0.05
DEFAULT_PER_SPLIT = 2  # what a plain `verify` recomputes: a gross swap shows, the run stays fast
FRAME_LEAD_S = 1.0  # seek this far before the instant, as the builder does (from the start if no frame is that close)


def segment_starts(manifest) -> dict[str, tuple[float, ...]]:
    """key → the start_s of every segment of its video (in its shard) in ``manifest``: what the
    builder decoded that video for, in one run. Pass it to `ContentCheck` when it checks only
    some of the samples, so that each video is decoded from where the builder decoded it."""
    out: dict[str, tuple[float, ...]] = {}
    for _, rows in manifest.groupby(["shard", "video_id"], sort=False):
        out.update(dict.fromkeys(rows["key"], tuple(sorted(float(t) for t in rows["start_s"]))))
    return out


def sampled_keys(manifest, per_split: int) -> set[str]:
    """The ``per_split`` keys of each split with the smallest SHA-1: the same samples every run
    (a FAIL reproduces), spread over videos and shards by the hash."""
    chosen: set[str] = set()
    if per_split <= 0:
        return chosen
    for _, keys in manifest.groupby("split")["key"]:
        chosen.update(sorted(keys, key=lambda k: hashlib.sha1(str(k).encode()).hexdigest())[:per_split])
    return chosen


@dataclass
class Sample:
    shard: str
    key: str
    source: str
    start_s: float
    mel: np.ndarray
    image: np.ndarray
    image_ext: str
    flac: bytes | None = None


def reference_log_mel(audio: np.ndarray, sr: int, start_s: float, frames: int,
                      audio_start_s: float = 0.0) -> np.ndarray:
    """float64 [frames, 128]: the log-mel of SPEC 2.3 for a segment at ``start_s`` of ``audio``
    (mono, sample 0 at ``audio_start_s``), one window per frame, zeros outside the audio."""
    hop = sr // 100
    win = int(round(0.025 * sr))
    n_fft = 512 if sr == 16000 else int(2 ** np.ceil(np.log2(win)))
    first = int(round((start_s - audio_start_s) * sr)) + hop // 2 + hop * np.arange(frames) - win // 2
    idx = first[:, None] + np.arange(win)[None, :]
    x = _take(audio, idx)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hamming
    power = np.abs(np.fft.rfft(x * window, n_fft)) ** 2
    bank = mel_filterbank(sr, n_fft, N_MELS, 0.0, sr / 2).astype(np.float64)
    return np.log(power @ bank.T + 1e-6)


def _ffmpeg(args: list[str], timeout: float, loglevel: str = "error") -> tuple[bytes, bytes]:
    cmd = [media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", loglevel, "-threads", "1", *args]
    run = subprocess.run(cmd, capture_output=True, timeout=timeout, start_new_session=True)
    if run.returncode != 0:
        lines = [ln for ln in run.stderr.decode("utf-8", "replace").strip().splitlines() if "showinfo" not in ln]
        raise media.MediaError(lines[-1][:200] if lines else f"ffmpeg exited with {run.returncode}")
    return run.stdout, run.stderr


# A second output that stream-copies the audio to nothing: no decoding, but the clock then
# starts where the builder's does (see the module docstring).
_AUDIO_TO_NOTHING = ["-map", "0:a:0", "-c", "copy", "-f", "null", "-"]


@dataclass
class Audio:
    """A source's audio as the builder decoded it: mono float32, sample 0 at ``start_s``."""

    samples: np.ndarray
    start_s: float


def decode_like_builder(path: str, starts, seconds: float, sample_rate: int, image_size: int,
                        timeout: float = 600.0) -> Audio:
    """The audio of ``path`` decoded by the builder's call for segments at ``starts`` (the
    frames it also gives are not used: pictures are checked by their own runs, `frames_at`)."""
    # the path comes from a manifest, i.e. from whoever made the build: only ever a local file
    probe = media.probe(path, timeout=timeout, local_only=True)
    decoded = media.decode_segments(path, probe, starts, seconds, sample_rate=sample_rate, image_size=image_size,
                                    timeout=timeout, local_only=True)
    return Audio(decoded.audio, decoded.audio_start_s)


def _take(audio: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``audio[idx]`` in float64, zero where ``idx`` falls outside it."""
    a = np.asarray(audio, np.float64)
    if not len(a):
        return np.zeros(idx.shape)
    return np.where((idx >= 0) & (idx < len(a)), a[np.clip(idx, 0, len(a) - 1)], 0.0)


_SHOWINFO = re.compile(rb"\bn:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:")
_TIME_BASE = re.compile(rb"config in time_base: (\d+)/(\d+)")


def frames_at(path: str, t: float, size: int, timeout: float = 120.0) -> list[np.ndarray]:
    """The frames on screen at ``t`` s (uint8 [size, size, 3], square-cropped and scaled as the
    builder does): first the one on screen at ``t`` (the last whose time is <= t), then any other
    on screen within half a tick of the stream's clock of ``t``; empty when the video has none.

    The builder shifts timestamps by a whole number of ticks (setpts rounds), so where a frame
    starts within half a tick of the instant it may take the neighbour: AVI's clock ticks once a
    frame, Matroska's once a millisecond.
    """
    n = size * size * 3
    for lead in (FRAME_LEAD_S, t):  # again from the start for a frame held longer than the lead
        seek = max(0.0, t - lead)
        rel = t - seek  # after -ss the clock reads 0 at the seek point
        # Non-square pixels are stretched to square first, as the builder does when the probe
        # reports a SAR other than 1 (an unset SAR reads 0 here: left alone).
        vf = ",".join([f"select='lte(t,{rel + 0.1:.6f})'", "showinfo",
                       "scale=w='if(gt(sar,0)*gt(abs(sar-1),0.001),trunc(iw*sar/2)*2,iw)':h=ih", "setsar=1",
                       "crop=w='min(iw,ih)':h='min(iw,ih)'", f"scale={size}:{size}:flags=area", "format=rgb24"])
        args = ["-ss", f"{seek:.6f}"] if seek > 0 else []
        # the path comes from a manifest, i.e. from whoever made the build: only ever a local file
        args += ["-t", f"{rel + 0.2:.6f}", *media.LOCAL_ONLY, "-i", media.as_input(path), "-map", "0:V:0", "-vf", vf,
                 # passthrough: rawvideo would otherwise get a constant rate, with duplicated frames
                 "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1", *_AUDIO_TO_NOTHING]
        out, err = _ffmpeg(args, timeout, loglevel="info")  # info: showinfo's line per frame
        pts = [int(p) for p in _SHOWINFO.findall(err)]
        tb = _TIME_BASE.search(err)
        frames = np.frombuffer(out[: len(out) // n * n], np.uint8).reshape(-1, size, size, 3)
        if len(pts) != len(frames) or not tb or not int(tb.group(2)):
            raise media.MediaError(f"ffmpeg gave {len(frames)} frames, {len(pts)} timestamps, time base "
                                   f"{tb.group(0).decode() if tb else 'none'}")
        tick = int(tb.group(1)) / int(tb.group(2))
        times = np.array(pts, np.float64) * tick

        def on_screen(at: float) -> int | None:
            before = np.nonzero(times <= at + 1e-9)[0]
            return int(before[-1]) if len(before) else None

        here = on_screen(rel)
        if here is not None:
            near = {i for i in (on_screen(rel - tick / 2), on_screen(rel + tick / 2)) if i is not None}
            near |= set(range(min(near), max(near) + 1))
            return [frames[here]] + [frames[i] for i in sorted(near - {here})]
        if seek == 0:
            break
    return []


def _jpeg(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass
class ContentCheck:
    """Buffers the selected samples and compares them on `flush`, a video's samples together so
    that its audio is decoded once (a video lies in one shard: flushing only between shards keeps
    that, and keeps a --deep run's memory to about a shard).

    ``segments`` (`segment_starts` of the manifest) says where the builder decoded each
    sample's video from; without it, from the samples given, which is right when they are all
    the video's samples (--deep)."""

    sample_rate: int
    seconds: float
    image_size: int
    workers: int = 1
    segments: dict[str, tuple[float, ...]] | None = None
    errors: list[str] = field(default_factory=list)  # one line per mismatching sample
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why
    checked: int = 0
    pending: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample, batch: int = 256) -> None:
        if len(self.pending) >= batch and self.pending[-1].shard != sample.shard:
            self.flush()
        self.pending.append(sample)

    def flush(self) -> None:
        by_decode = self._by_decode(self.pending)
        self.pending = []
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = list(pool.map(self._source, by_decode.items()))
        for errors, note, n in results:
            self.errors += errors
            self.notes += [note] if note else []
            self.checked += n

    def _by_decode(self, samples: list[Sample]) -> dict[tuple[str, tuple[float, ...]], list[Sample]]:
        """``samples`` by the builder's decode that gave them: (source, its segments' starts)."""
        by_video: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for s in samples:
            by_video[(s.shard, s.source)].append(s)
        known = self.segments or {}
        out: dict[tuple[str, tuple[float, ...]], list[Sample]] = defaultdict(list)
        for (_, source), group in by_video.items():
            given = tuple(sorted(s.start_s for s in group))
            for s in group:
                out[(source, known.get(s.key, given))].append(s)
        return out

    def _source(self, item: tuple[tuple[str, tuple[float, ...]], list[Sample]]) -> tuple[list[str], str | None, int]:
        (source, starts), samples = item
        samples = sorted(samples, key=lambda s: s.key)
        what = f"{len(samples)} sample(s) of {samples[0].shard} ({', '.join(s.key for s in samples[:3])}" + \
               (", ...)" if len(samples) > 3 else ")")
        if storage.is_remote(source):
            return [], f"cannot check {what}: remote source {source} not fetched (not a failure)", 0
        path = storage.local_path(source)
        if not os.path.isfile(path):
            return [], f"cannot check {what}: source missing: {source} (not a failure)", 0
        try:
            audio = decode_like_builder(path, starts, self.seconds, self.sample_rate, self.image_size)
        except (media.MediaError, media.FFmpegKilled, subprocess.TimeoutExpired, OSError) as e:
            return [], f"cannot check {what}: source unreadable: {source}: {e}", 0
        errors = []
        for s in samples:
            try:
                problems = self._compare(s, audio, path)
            except (media.MediaError, subprocess.TimeoutExpired, OSError) as e:
                problems = [f"cannot extract the frame: {e}"]
            if problems:
                errors.append(f"{s.shard}: {s.key}: content differs from {source} at {s.start_s:g} s: "
                              + "; ".join(problems))
        return errors, None, len(samples)

    def _compare(self, s: Sample, audio: Audio, path: str) -> list[str]:
        problems = []
        ref = reference_log_mel(audio.samples, self.sample_rate, s.start_s, s.mel.shape[0], audio.start_s)
        d = np.abs(s.mel.astype(np.float64) - ref)
        if not d.max() <= MEL_TOL:
            problems.append(f"mel.npy vs the source's log-mel: max |Δ| {d.max():.3g}, mean {d.mean():.3g} "
                            f"(tolerance {MEL_TOL:g})")
        centre = s.start_s + self.seconds / 2
        candidates = frames_at(path, centre, self.image_size)
        if not candidates:
            problems.append(f"the source has no frame at {centre:g} s")
        else:
            diffs = [np.abs(s.image.astype(np.int16) - (_jpeg(f) if s.image_ext == "jpg" else f).astype(np.int16))
                     for f in candidates]
            if not min(d.mean() for d in diffs) <= FRAME_TOL:
                problems.append(f"{s.image_ext} vs the source's frame at {centre:g} s: mean |Δ| {diffs[0].mean():.3g} "
                                f"levels, max {diffs[0].max()} (tolerance {FRAME_TOL:g})")
        if s.flac is not None:
            problems += self._compare_flac(s, audio)
        return problems

    def _compare_flac(self, s: Sample, audio: Audio) -> list[str]:
        import soundfile

        sr = self.sample_rate
        try:
            wave, rate = soundfile.read(io.BytesIO(s.flac), dtype="float32")
        except Exception as e:  # libsndfile's errors have no common base
            return [f"flac does not decode ({type(e).__name__}: {str(e)[:80]})"]
        n = int(round(self.seconds * sr))
        if rate != sr or wave.ndim != 1 or len(wave) != n:
            return [f"flac is {len(wave)} samples x {wave.ndim if wave.ndim == 1 else wave.shape[1]} channel(s) "
                    f"at {rate} Hz, expected {n} x 1 at {sr} Hz"]
        a0 = int(round((s.start_s - audio.start_s) * sr))
        src = _take(audio.samples, np.arange(a0, a0 + n))
        problems = []
        d = np.abs(wave - np.clip(src, -1, 1))
        if not d.max() <= FLAC_TOL:
            problems.append(f"flac vs the source's audio: max |Δ| {d.max():.3g} "
                            f"(tolerance {FLAC_TOL:.3g}, 2 steps of 16-bit PCM)")
        # Only frames wholly inside the segment (the mel reads 7.5 ms beyond it) and with no
        # sample the builder clipped can match.
        n_frames = s.mel.shape[0]
        hop, win = sr // 100, int(round(0.025 * sr))
        first = hop // 2 + hop * np.arange(n_frames) - win // 2
        inside = (first >= 0) & (first + win <= n)
        clipped = np.abs(src) > 1
        ok = inside & np.array([not clipped[max(f, 0):f + win].any() for f in first])
        if ok.any():
            got = reference_log_mel(wave, sr, 0.0, n_frames)[ok]
            dm = np.abs(got - s.mel[ok].astype(np.float64))
            if not dm.mean() <= FLAC_MEL_TOL:
                problems.append(f"log-mel of the flac vs mel.npy: mean |Δ| {dm.mean():.3g}, max {dm.max():.3g} "
                                f"(tolerance {FLAC_MEL_TOL:g})")
        return problems
