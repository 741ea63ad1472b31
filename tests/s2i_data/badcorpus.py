"""A small corpus of awkward real containers, for testing that the shard builder survives them.

Not a test module: tests import it (``from badcorpus import Case, make_bad_corpus``).
``make_bad_corpus(root)`` writes, in the VEGAS layout ``root/<class>/<file>``, one real file per
case -- all generated with ffmpeg from lavfi sources (``testsrc2``, ``sine``, ``anoisesrc``,
``color``), 160x120 (or smaller), 2.5-4 s long -- and returns a :class:`Case` per file saying
what the builder must do with it:

* ``expect="ok"``: it must build, giving at least one 1 s segment; ``segments`` is the exact
  number of segments when it is certain (the floor of the *usable* duration: the span in which
  both audio and video exist, measured from the file's own start), else ``None``.
* ``expect="skipped"``: the builder must record the file (as skipped/failed) and emit no
  sample from it -- and must not crash.

Durations are mostly 3.5 s or 2.5 s, so that the floor is unambiguous despite codec
priming/padding (AAC, MP3, Opus, Vorbis add a few tens of ms) and frame-rounding.

Output is deterministic (same bytes on each run with the same ffmpeg binary): every encode and
remux runs with ``-fflags +bitexact -flags +bitexact -threads 1``, noise sources are seeded, and
the random-bytes case uses a seeded PRNG. The corpus takes a few seconds on 2 cores: the ffmpeg
jobs run in a thread pool of 2. Scratch inputs (an .srt, a cover .jpg) live in a temporary folder
outside ``root``, so ``root`` holds only the case files.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

try:
    from s2i_data.media import ffmpeg_exe
except ImportError:  # tests run without the package installed: use the checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from s2i_data.media import ffmpeg_exe

CLASSES = ("dog", "water")
UNKNOWN_CLASS = "kazoo"


@dataclass(frozen=True)
class Case:
    name: str  # short id, e.g. "zero_byte"
    path: Path  # the file created
    cls: str  # class folder it sits in ("dog", "water", or UNKNOWN_CLASS)
    expect: str  # "ok" (builds: >= 1 segment) or "skipped" (recorded, no samples)
    segments: int | None  # exact number of 1 s segments for "ok" cases when certain, else None
    why: str  # what it exercises


# --------------------------------------------------------------------------------------------
# ffmpeg command pieces

BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-threads", "1"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "64k"]
SRT_TEXT = (
    "1\n00:00:00,200 --> 00:00:01,500\nWoof.\n\n"
    "2\n00:00:01,800 --> 00:00:03,000\n[water running]\n\n"
)


def _vsrc(d: float, size: str = "160x120", rate: str = "25") -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={d}"]


def _sine(d: float, rate: int = 44100, freq: int = 440) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=f={freq}:r={rate}:d={d}"]


def _noise(d: float, rate: int = 44100, color: str = "pink", seed: int = 7) -> list[str]:
    return ["-f", "lavfi", "-i", f"anoisesrc=d={d}:r={rate}:c={color}:a=0.2:seed={seed}"]


def _ff(*args: str | Path) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {cmd}\n{proc.stderr}")


def _av(out: Path, vin: list[str], ain: list[str], *opts: str, vcodec: list[str] = H264,
        acodec: list[str] = AAC) -> None:
    """Encode one video + one audio lavfi source into ``out`` (video mapped first)."""
    _ff(*vin, *ain, "-map", "0:v", "-map", "1:a", *vcodec, *acodec, *opts, *BITEXACT, out)


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _demuxed_overlap(path: Path) -> float:
    """Seconds during which both an audio and a video stream have packets (demux only).

    Reads ``ffmpeg -c copy -f framecrc`` (every packet's pts and duration) -- the real extent of a
    truncated file, which its intact header overstates. 0.0 when either kind is missing.
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
           "-map", "0", "-c", "copy", "-f", "framecrc", "-"]
    text = subprocess.run(cmd, capture_output=True, text=True, errors="replace").stdout
    tb: dict[int, float] = {}
    kind: dict[int, str] = {}
    span: dict[int, list[float]] = {}
    for line in text.splitlines():
        if m := re.match(r"#tb (\d+): (\d+)/(\d+)", line):
            tb[int(m[1])] = int(m[2]) / int(m[3])
        elif m := re.match(r"#media_type (\d+): (\w+)", line):
            kind[int(m[1])] = m[2]
        elif line and not line.startswith("#"):
            f = [x.strip() for x in line.split(",")]
            idx, pts, dur = int(f[0]), int(f[2]), int(f[3])
            t0, t1 = pts * tb[idx], (pts + dur) * tb[idx]
            lo_hi = span.setdefault(idx, [t0, t1])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], t0), max(lo_hi[1], t1)
    starts, ends = [], []
    for want in ("video", "audio"):
        idxs = [i for i, k in kind.items() if k == want and i in span]
        if not idxs:
            return 0.0
        starts.append(min(span[i][0] for i in idxs))
        ends.append(max(span[i][1] for i in idxs))
    return max(0.0, min(ends) - max(starts))


# --------------------------------------------------------------------------------------------
# the corpus


def make_bad_corpus(root: Path) -> list[Case]:
    """Create the corpus under ``root`` (made if missing) and return its cases, in a fixed order."""
    root = Path(root)
    for c in (*CLASSES, UNKNOWN_CLASS):
        (root / c).mkdir(parents=True, exist_ok=True)
    dog, water, kazoo = root / "dog", root / "water", root / UNKNOWN_CLASS

    with tempfile.TemporaryDirectory(prefix="s2i-badcorpus-") as tmp:
        scratch = Path(tmp)
        srt = scratch / "subs.srt"
        srt.write_text(SRT_TEXT, encoding="utf-8")
        cover = scratch / "cover.jpg"

        # Each job writes one case file (possibly in several sequential ffmpeg steps) and
        # returns the Case. Jobs are independent of each other.
        jobs: list[Callable[[], Case]] = []

        def job(fn: Callable[[], Case]) -> Callable[[], Case]:
            jobs.append(fn)
            return fn

        # ---------------------------------------------------------------- "ok" cases
        @job
        def baseline() -> Case:
            p = dog / "baseline_stereo_aac.mp4"
            _av(p, _vsrc(3.5), _sine(3.5), "-ac", "2")
            return Case("baseline", p, "dog", "ok", 3,
                        "the good file: H.264 + stereo AAC 44.1 kHz in MP4, 3.5 s -> 3 segments")

        @job
        def surround() -> Case:
            p = water / "surround_5.1.mp4"
            _av(p, _vsrc(3.5), _noise(3.5, 48000),
                "-af", "pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0")
            return Case("surround_5_1", p, "water", "ok", 3,
                        "6-channel (5.1) AAC must be downmixed to what the model wants; "
                        "also a dot inside the stem; 3.5 s -> 3")

        @job
        def audio_8k() -> Case:
            p = water / "rain_8khz.mp4"
            _av(p, _vsrc(2.5), _noise(2.5, 8000, "brown"))
            return Case("audio_8k", p, "water", "ok", 2,
                        "8 kHz mono AAC: must be upsampled to the mel front-end's rate; 2.5 s -> 2")

        @job
        def audio_192k() -> Case:
            p = dog / "hires_192khz.mkv"
            _av(p, _vsrc(3.5), _sine(3.5, 192000, 1000), "-ac", "2",
                acodec=["-c:a", "flac"])
            return Case("audio_192k", p, "dog", "ok", 3,
                        "192 kHz stereo FLAC in Matroska (AAC cannot do 192 kHz): heavy "
                        "downsampling, big audio buffers; 3.5 s -> 3")

        @job
        def pcm_mov() -> Case:
            p = dog / "pcm_audio.mov"
            _av(p, _vsrc(3.5), _sine(3.5, 48000), "-ac", "2", acodec=["-c:a", "pcm_s16le"])
            return Case("pcm_mov", p, "dog", "ok", 3,
                        "uncompressed pcm_s16le audio in QuickTime .mov; 3.5 s -> 3")

        @job
        def fps_7() -> Case:
            p = water / "slow_7fps.mp4"
            _av(p, _vsrc(3.5, rate="7"), _noise(3.5, 44100, "white", 11))
            return Case("fps_7", p, "water", "ok", 3,
                        "7 fps: centre frame of a segment is often far from the segment centre "
                        "(nearest frame up to 71 ms away); video 25 frames = 3.571 s, audio "
                        "3.5 s -> 3")

        @job
        def fps_ntsc() -> Case:
            p = dog / "ntsc_29.97fps.mp4"
            _av(p, _vsrc(3.5, rate="30000/1001"), _sine(3.5, 48000, 330))
            return Case("fps_ntsc", p, "dog", "ok", 3,
                        "29.97 fps (30000/1001): non-integer frame rate, frame times never land "
                        "on segment boundaries; 3.5 s -> 3")

        @job
        def vfr() -> Case:
            p = water / "variable_fps.mkv"
            _av(p, _vsrc(3.5, rate="30"), _noise(3.5, 44100, "pink", 3),
                "-vf", "select='not(between(t,1,2))+not(mod(n,3))'", "-fps_mode", "vfr")
            return Case("vfr", p, "water", "ok", 3,
                        "variable frame rate in Matroska: 30 fps, but only every third frame "
                        "kept between 1 s and 2 s (10 fps there); the header's fps is wrong for "
                        "that stretch, so frame index != time * fps; 3.5 s -> 3")

        @job
        def portrait() -> Case:
            p = dog / "portrait_120x160.mp4"
            _av(p, _vsrc(3.5, "120x160"), _sine(3.5, 44100, 550))
            return Case("portrait", p, "dog", "ok", 3,
                        "portrait 120x160 (taller than wide): resize/crop must not assume "
                        "landscape; 3.5 s -> 3")

        @job
        def rotated() -> Case:
            p = water / "rotated_90.mp4"
            tmp_p = scratch / "rotated_src.mp4"
            _av(tmp_p, _vsrc(3.5), _noise(3.5, 44100, "pink", 5))
            _ff("-display_rotation", "90", "-i", tmp_p, "-c", "copy", *BITEXACT, p)
            return Case("rotated", p, "water", "ok", 3,
                        "160x120 stored with a display-matrix rotation of 90 degrees (a phone "
                        "video): decoded frames are 120x160 once ffmpeg autorotates, so "
                        "sizes read from the stream header are transposed; 3.5 s -> 3")

        @job
        def tiny() -> Case:
            p = dog / "tiny_16x12.mp4"
            _av(p, _vsrc(2.5, "16x12"), _sine(2.5, 44100, 880))
            return Case("tiny", p, "dog", "ok", 2,
                        "16x12 video: must be upscaled to the frame size, not crash on a crop "
                        "larger than the image; 2.5 s -> 2")

        @job
        def nonascii_fr() -> Case:
            p = dog / "chien qui aboie — été.mp4"
            _av(p, _vsrc(3.5), _sine(3.5, 44100, 660))
            return Case("nonascii_fr", p, "dog", "ok", 3,
                        "spaces, an em dash and accented letters in the file name (shell "
                        "quoting, key/URL encoding in shards); 3.5 s -> 3")

        @job
        def nonascii_ja() -> Case:
            p = water / "日本 犬.mkv"
            _av(p, _vsrc(3.5), _noise(3.5, 48000, "white", 9))
            return Case("nonascii_ja", p, "water", "ok", 3,
                        "CJK characters and a space in a Matroska file name; 3.5 s -> 3")

        @job
        def audio_first() -> Case:
            p = dog / "audio_first.mp4"
            _ff(*_sine(3.5, 48000, 500), *_vsrc(3.5), "-map", "0:a", "-map", "1:v",
                *AAC, *H264, *BITEXACT, p)
            return Case("audio_first", p, "dog", "ok", 3,
                        "stream #0:0 is the audio, #0:1 the video: code that assumes stream 0 "
                        "is video (or uses -map 0:0) breaks; 3.5 s -> 3")

        @job
        def subtitle_mkv() -> Case:
            p = water / "with_srt_subtitles.mkv"
            _ff(*_vsrc(3.5), *_noise(3.5, 44100, "pink", 13), "-i", srt,
                "-map", "0:v", "-map", "1:a", "-map", "2:s", *H264, *AAC, "-c:s", "srt",
                *BITEXACT, p)
            return Case("subtitle_mkv", p, "water", "ok", 3,
                        "Matroska with an extra SubRip subtitle stream (video, audio, "
                        "subtitle): the subtitle must be ignored, not mapped; 3.5 s -> 3")

        @job
        def mov_text_mp4() -> Case:
            p = dog / "with_mov_text.mp4"
            _ff(*_vsrc(3.5), *_sine(3.5, 44100, 770), "-i", srt,
                "-map", "0:v", "-map", "1:a", "-map", "2:s", *H264, *AAC, "-c:s", "mov_text",
                *BITEXACT, p)
            return Case("mov_text_mp4", p, "dog", "ok", 3,
                        "MP4 with a third stream, a mov_text (tx3g) subtitle track; 3.5 s -> 3")

        @job
        def timecode_mp4() -> Case:
            p = water / "with_timecode.mp4"
            _av(p, _vsrc(3.5), _noise(3.5, 48000, "brown", 17), "-timecode", "01:00:00:00")
            return Case("timecode_mp4", p, "water", "ok", 3,
                        "MP4 with a tmcd timecode *data* stream (Data: none (tmcd)); ffmpeg 9 "
                        "lists it inside a 'Stream group ... Track Reference' block, indented, "
                        "and out of index order (#0:0, #0:2, then #0:1); 3.5 s -> 3")

        @job
        def webm_vp9() -> Case:
            p = dog / "vp9_opus.webm"
            _av(p, _vsrc(3.5), _sine(3.5, 48000, 440), "-ac", "2",
                vcodec=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                        "-b:v", "200k", "-row-mt", "0"],
                acodec=["-c:a", "libopus", "-b:a", "48k"])
            return Case("webm_vp9", p, "dog", "ok", 3,
                        "WebM: VP9 video + Opus audio (48 kHz, 312-sample pre-skip); 3.5 s -> 3")

        @job
        def webm_vp8() -> Case:
            p = water / "vp8_vorbis.webm"
            _av(p, _vsrc(3.5), _noise(3.5, 44100, "pink", 19),
                vcodec=["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
                        "-b:v", "200k"],
                acodec=["-c:a", "libvorbis", "-q:a", "2"])
            return Case("webm_vp8", p, "water", "ok", 3,
                        "WebM: VP8 video + Vorbis audio; 3.5 s -> 3")

        @job
        def avi() -> Case:
            p = dog / "mpeg4_mp3.avi"
            _av(p, _vsrc(3.5), _sine(3.5, 44100, 990), "-ac", "2",
                vcodec=["-c:v", "mpeg4", "-q:v", "5"], acodec=["-c:a", "libmp3lame", "-b:a", "96k"])
            return Case("avi", p, "dog", "ok", 3,
                        "AVI: MPEG-4 part 2 video + MP3 audio (no per-packet timestamps, "
                        "encoder delay in the MP3); 3.5 s -> 3")

        @job
        def ts_offset() -> Case:
            p = water / "broadcast.ts"
            _av(p, _vsrc(3.5), _noise(3.5, 48000, "pink", 23))
            return Case("ts_offset", p, "water", "ok", 3,
                        "MPEG-TS whose streams start at ~1.4 s (container 'start: 1.400000'; "
                        "video 'start 1.421333', AAC audio 'start 1.400000' because of its "
                        "1024-sample priming): times must be taken relative to the file's "
                        "start; 3.5 s of both from there -> 3 (a grid anchored at pts 0 would "
                        "give 2)")

        @job
        def audio_late() -> Case:
            p = dog / "audio_starts_late.mp4"
            _ff(*_vsrc(3.5), "-itsoffset", "0.7", *_sine(3.5, 44100, 600),
                "-map", "0:v", "-map", "1:a", *H264, *AAC, *BITEXACT, p)
            return Case("audio_late", p, "dog", "ok", 2,
                        "video 0-3.5 s, audio shifted by -itsoffset to 0.7-4.2 s (an MP4 edit "
                        "list with an empty edit): only 0.7-3.5 s has both = 2.8 s -> 2; a "
                        "builder that ignores the offset (or pads silence) gets 3")

        @job
        def odd_duration() -> Case:
            p = water / "odd_3.999s.mov"
            _ff(*_vsrc(4), *_sine(3.999, 48000, 420), "-map", "0:v", "-map", "1:a",
                *H264, "-c:a", "pcm_s16le", *BITEXACT, p)
            return Case("odd_duration", p, "water", "ok", 3,
                        "audio exactly 3.999 s (191952 PCM samples at 48 kHz), video 4.0 s "
                        "(100 frames at 25 fps): ffmpeg -i prints 'Duration: 00:00:04.00' "
                        "(the longest stream, to 1/100 s), but the usable length is 3.999 s "
                        "and must be floored to 3 segments, not rounded to 4")

        # ---------------------------------------------------------------- "skipped" cases
        @job
        def zero_byte() -> Case:
            p = dog / "zero_byte.mp4"
            p.write_bytes(b"")
            return Case("zero_byte", p, "dog", "skipped", None,
                        "empty file: ffmpeg -i fails with 'Invalid data found when processing "
                        "input'")

        @job
        def truncated_moov_lost() -> Case:
            p = water / "truncated_no_moov.mp4"
            _av(p, _vsrc(3.5), _noise(3.5, 44100, "pink", 29))  # moov written last
            _truncate(p, 0.40)
            return Case("truncated_moov_lost", p, "water", "skipped", None,
                        "an MP4 written without faststart (moov at the end), cut to 40 % of "
                        "its bytes: the moov is gone -> 'moov atom not found', unreadable")

        @job
        def truncated_faststart() -> Case:
            p = dog / "truncated_faststart.mp4"
            _av(p, _vsrc(4), _sine(4, 44100, 350), "-movflags", "+faststart")
            _truncate(p, 0.60)
            usable = _demuxed_overlap(p)
            head = (f"an MP4 written with +faststart (moov first), 4 s, cut to 60 % of its "
                    f"bytes: the header is intact and still claims 4 s, but packets "
                    f"(demuxed) cover only {usable:.2f} s of both audio and video; the "
                    f"builder must use what decodes, not the header's duration")
            if usable >= 1.0:
                return Case("truncated_faststart", p, "dog", "ok", None,
                            head + f" -> ok, about {math.floor(usable)} segment(s), fewer than "
                                   "4 (not exact: the last packet may be cut mid-way)")
            return Case("truncated_faststart", p, "dog", "skipped", None,
                        head + " -> under 1 s remains, skipped")

        @job
        def random_bytes() -> Case:
            p = water / "corrupt_random.mp4"
            p.write_bytes(random.Random(20240917).randbytes(48_000))
            return Case("random_bytes", p, "water", "skipped", None,
                        "48 kB of (seeded) random bytes named .mp4: probed as mov with score 1, "
                        "'moov atom not found'")

        @job
        def video_only() -> Case:
            p = dog / "no_audio.mp4"
            _ff(*_vsrc(3.5), *H264, *BITEXACT, p)
            return Case("video_only", p, "dog", "skipped", None,
                        "video stream only, no audio stream: nothing to make a log-mel from")

        @job
        def audio_only() -> Case:
            p = water / "audio_only.mp4"
            _ff(*_noise(3.5, 44100, "pink", 31), *AAC, *BITEXACT, p)
            return Case("audio_only", p, "water", "skipped", None,
                        "an .mp4 holding only an AAC audio stream (an .m4a renamed): no frames")

        @job
        def cover_art() -> Case:
            p = dog / "song_with_cover.mp4"
            _ff("-f", "lavfi", "-i", "color=c=0x3366aa:s=64x64", "-frames:v", "1",
                *BITEXACT, cover)
            _ff(*_sine(3.5, 44100, 523), "-i", cover, "-map", "0:a", "-map", "1:v",
                *AAC, "-c:v", "copy", "-disposition:v:0", "attached_pic", *BITEXACT, p)
            return Case("cover_art", p, "dog", "skipped", None,
                        "chosen as .mp4 (so a builder that filters by video extension still "
                        "sees it): AAC audio + a 64x64 MJPEG cover with the attached_pic "
                        "disposition -- ffmpeg -i lists a 'Video:' stream ending in '(attached "
                        "pic)' with no fps, a single still; it has no real video and must be "
                        "skipped, not turned into 3 segments of one still image")

        @job
        def too_short() -> Case:
            p = water / "too_short_0.6s.mp4"
            _av(p, _vsrc(0.6), _noise(0.6, 44100, "white", 37))
            return Case("too_short", p, "water", "skipped", None,
                        "a valid 0.6 s clip: shorter than one 1 s segment, so no samples")

        @job
        def unknown_class() -> Case:
            p = kazoo / "x.mp4"
            _av(p, _vsrc(3.5), _sine(3.5, 44100, 700))
            return Case("unknown_class", p, UNKNOWN_CLASS, "skipped", None,
                        f"a perfectly good file in a folder '{UNKNOWN_CLASS}' that is not one "
                        "of the known classes (dog, water): no label, so skipped")

        @job
        def text_as_mp4() -> Case:
            p = dog / "readme_renamed.mp4"
            p.write_text("This is not a video.\nIt is a text file somebody renamed to .mp4.\n"
                         * 20, encoding="utf-8")
            return Case("text_as_mp4", p, "dog", "skipped", None,
                        "a plain-text file with a .mp4 name: 'moov atom not found'")

        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(fn) for fn in jobs]
            return [f.result() for f in futures]


def cases_by_name(cases: list[Case]) -> dict[str, Case]:
    return {c.name: c for c in cases}
