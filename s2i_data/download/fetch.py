"""One window of one video, fetched with yt-dlp (used as a library) and checked before it is kept.

yt-dlp downloads only the window (``download_ranges``), keyframes forced at the cut so the clip
starts with a picture, through ffmpeg: the same binary the builder uses (`media.ffmpeg_exe`).
yt-dlp's partial-download check looks for an executable named ``ffmpeg`` on ``PATH``, and the
imageio-ffmpeg wheel's binary has another name, so a private folder holding an ``ffmpeg`` link is
put at the front of this process's ``PATH`` (`ffmpeg_dir`).

Everything is written inside a hidden folder ``ROOT/<class>/.part-<key>-<pid>-<thread>/``; the
result is probed (`media.probe`: both streams present, at least the window's length less
``TOLERANCE_S``), fsynced and only then renamed to ``ROOT/<class>/<key>.<ext>``, so a final name
never holds a partial file whatever kills the process. Build sources skip hidden folders.

yt-dlp reports failures as exceptions with YouTube's message; `classify` maps them, first hit
wins (case-insensitive):

- ``private``: "private video", "video is private", "members-only", "join this channel";
- ``removed``: "has been removed", "account ... terminated", "no longer available because",
  "copyright", "violat" (violating the terms), HTTP 410;
- transient, retried with backoff and ``error`` when attempts run out: HTTP 429 (its
  ``Retry-After`` is honoured), HTTP 5xx, "timed out", connection reset/aborted/refused, "remote
  end closed", "incomplete read", "confirm you're not a bot" (YouTube's rate limiting), and a
  result shorter than the window (a truncated transfer);
- ``unavailable``: "unavailable", "not available", HTTP 404, "does not exist", "unsupported url";
- anything else: ``error`` (not retried in this run; a re-run retries it).
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from s2i_data import media, storage

TOLERANCE_S = 1.0  # a clip may be this much shorter than its window (keyframe and packet rounding)
VIDEO_EXTS = ("mp4", "mkv", "webm", "mov", "m4v")

PRIVATE = ("private video", "video is private", "members-only", "members only", "join this channel")
REMOVED = ("has been removed", "been terminated", "no longer available because", "copyright", "violat",
           "http error 410")
TRANSIENT = ("http error 429", "too many requests", "timed out", "timeout", "connection reset", "connection aborted",
             "connection refused", "remote end closed", "incomplete read", "incompleteread", "temporary failure",
             "not a bot", "network is unreachable", "truncated")
UNAVAILABLE = ("unavailable", "not available", "http error 404", "does not exist", "unsupported url")
_HTTP_5XX = re.compile(r"http error 5\d\d")


@dataclass(frozen=True)
class FetchSettings:
    url_template: str = "https://www.youtube.com/watch?v={ytid}"
    max_height: int = 360
    cookies: str | None = None
    socket_timeout_s: float = 30.0
    clips: bool = False  # the URL serves the window itself (a mirror of cut clips): fetch 0 .. end-start

    def url(self, ytid: str, start: float) -> str:
        """The template with ``{ytid}`` and ``{start}`` (whole seconds, 6 digits) filled in."""
        return self.url_template.replace("{ytid}", ytid).replace("{start}", f"{int(start):06d}")


@dataclass
class Outcome:
    status: str  # ok | unavailable | private | removed | error
    reason: str = ""
    transient: bool = False  # worth another attempt in this run
    retry_after_s: float | None = None  # what the server asked for (HTTP 429 Retry-After)
    file: str = ""  # path relative to ROOT
    bytes: int = 0
    sha256: str = ""
    duration_s: float = float("nan")


_ffmpeg_lock = threading.Lock()


def ffmpeg_dir() -> str:
    """A folder whose ``ffmpeg`` is `media.ffmpeg_exe()`, put first on this process's PATH."""
    exe = media.ffmpeg_exe()
    with _ffmpeg_lock:
        if os.path.basename(exe) == "ffmpeg":
            folder = os.path.dirname(exe)
        else:
            digest = hashlib.sha1(exe.encode()).hexdigest()[:12]
            folder = os.path.join(tempfile.gettempdir(), f"s2i-ffmpeg-{os.getuid()}-{digest}")
            link = os.path.join(folder, "ffmpeg")
            if os.path.realpath(link) != os.path.realpath(exe):
                os.makedirs(folder, exist_ok=True)
                tmp = f"{link}.tmp-{os.getpid()}-{threading.get_ident()}"
                os.symlink(exe, tmp)
                os.replace(tmp, link)  # atomic: another process may be looking at it
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0] != folder:
            os.environ["PATH"] = folder + (os.pathsep + path if path else "")
    return folder


class _Quiet:
    """yt-dlp's messages go nowhere: errors come back as exceptions, progress would flood."""

    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


def ydl_options(work: Path, start: float, end: float, s: FetchSettings) -> dict:
    from yt_dlp.utils import download_range_func

    h = int(s.max_height)
    opts = {
        # at most h lines of video plus the best audio; an unknown height (a plain file on a
        # mirror) passes the `?` filters; with nothing that small, the smallest there is
        "format": f"bv*[height<=?{h}]+ba/b[height<=?{h}]/wv*+ba/w",
        "merge_output_format": "mp4",
        "outtmpl": {"default": str(work / "clip.%(ext)s")},
        "download_ranges": download_range_func(None, [(start, end)]),
        "force_keyframes_at_cuts": True,
        "ffmpeg_location": ffmpeg_dir(),
        "logger": _Quiet(), "quiet": True, "no_warnings": True, "noprogress": True,
        # retrying is ours (backoff, Retry-After, the global rate): one request per attempt
        "retries": 0, "fragment_retries": 0, "extractor_retries": 0, "file_access_retries": 0,
        "socket_timeout": s.socket_timeout_s,
        "noplaylist": True, "overwrites": True, "cachedir": False, "color": "no_color",
    }
    if s.cookies:
        opts["cookiefile"] = s.cookies
    return opts


def _causes(exc: BaseException):
    seen, stack = set(), [exc]
    while stack and len(seen) < 20:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        info = getattr(e, "exc_info", None)
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__, info[1] if info else None]


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a ``Retry-After`` header anywhere in the exception's chain (delta or date)."""
    for e in _causes(exc):
        response = getattr(e, "response", None)
        headers = getattr(response, "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value is None:
            continue
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


def classify(message: str) -> tuple[str, bool]:
    """(status, transient) for a yt-dlp error message (see the module docstring)."""
    text = message.lower().replace("’", "'")
    if any(p in text for p in PRIVATE):
        return "private", False
    if any(p in text for p in REMOVED):
        return "removed", False
    if any(p in text for p in TRANSIENT) or _HTTP_5XX.search(text):
        return "error", True
    if any(p in text for p in UNAVAILABLE):
        return "unavailable", False
    return "error", False


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^ERROR:\s*", "", text)
    return re.sub(r"\s*\(caused by .*\)$", "", text)[:300]  # yt-dlp repeats the cause's words


class Incomplete(Exception):
    """The transfer ended early: the clip is shorter than its window (or unreadable)."""


def _produced(work: Path) -> Path:
    files = [p for p in work.iterdir() if p.is_file() and p.suffix.lstrip(".").lower() in VIDEO_EXTS
             and not p.name.endswith((".part", ".ytdl")) and ".part" not in p.suffixes and not re.search(r"\.f\d+\.", p.name)]
    if not files:
        raise Incomplete("yt-dlp wrote no video file (truncated transfer?)")
    return max(files, key=lambda p: p.stat().st_size)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_clip(path: Path, expected_s: float) -> float:
    """The clip's usable seconds; raises `Incomplete` when it is unreadable or too short."""
    try:
        probe = media.probe(str(path))
    except media.MediaError as e:
        raise Incomplete(f"downloaded clip is not usable: {e} (truncated transfer?)") from None
    if probe.duration_s < expected_s - TOLERANCE_S:
        raise Incomplete(f"downloaded clip is truncated: {probe.duration_s:.2f} s of {expected_s:.2f} s")
    return probe.duration_s


def keep(path: Path, final: Path, root: Path) -> Outcome:
    """Describe a checked clip and give it its final name (fsynced first: whole or absent)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    digest, size = _sha256(path), path.stat().st_size
    os.replace(path, final)
    storage.fsync_dir(final.parent)
    return Outcome("ok", file=final.relative_to(root).as_posix(), bytes=size, sha256=digest)


def _paced(slots):
    """A YoutubeDL whose first HTTP request takes a slot of the rate: the slot is taken right
    before the request, not before yt-dlp's set-up (whose time varies), so requests keep the
    schedule's spacing."""
    import yt_dlp

    class Paced(yt_dlp.YoutubeDL):
        _paced = False

        def urlopen(self, req):
            if not self._paced and slots is not None:
                self._paced = True
                slots.acquire()
            return super().urlopen(req)

    return Paced


def fetch(ytid: str, start: float, end: float, folder: Path, key: str, root: Path, s: FetchSettings,
          slots=None) -> Outcome:
    """Download ``ytid``'s window into ``folder/<key>.<ext>``; never raises for a bad video.
    ``slots`` (`ratelimit`) paces the attempt's first request."""
    url = s.url(ytid, start)
    if s.clips:
        start, end = 0.0, end - start
    work = folder / f".part-{key}-{os.getpid()}-{threading.get_ident()}"
    try:
        work.mkdir(parents=True, exist_ok=True)
        with _paced(slots)(ydl_options(work, start, end, s)) as ydl:
            info = ydl.extract_info(url, download=True) or {}
        expected = end - start
        whole = info.get("duration")
        if isinstance(whole, (int, float)) and whole > 0:
            expected = min(expected, whole - start)
            if expected <= 0:
                return Outcome("unavailable", f"the window starts at {start:g} s, the video is {whole:g} s long")
        path = _produced(work)
        duration = check_clip(path, expected)
        out = keep(path, folder / f"{key}{path.suffix.lower()}", root)
        out.duration_s = duration
        return out
    except Incomplete as e:
        return Outcome("error", str(e), transient=True)
    except Exception as e:  # noqa: BLE001 - yt-dlp's DownloadError and whatever it wraps: one row's failure
        status, transient = classify(_message(e) + " " + " ".join(_message(c) for c in _causes(e)))
        return Outcome(status, _message(e), transient=transient, retry_after_s=retry_after(e))
    finally:
        shutil.rmtree(work, ignore_errors=True)
