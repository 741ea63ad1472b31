"""One window of one video, fetched with yt-dlp (used as a library) and checked before it is kept.

yt-dlp downloads only the window (``download_ranges``), keyframes forced at the cut so the clip
starts with a picture, through ffmpeg: the same binary the builder uses (`media.ffmpeg_exe`).
yt-dlp's partial-download check looks for an executable named ``ffmpeg`` on ``PATH``, and the
imageio-ffmpeg wheel's binary has another name, so a private folder of this process holding an
``ffmpeg`` is put at the front of its ``PATH`` (`ffmpeg_dir`). That ``ffmpeg`` is a wrapper which
asks the kernel to kill it when the downloader dies (``PR_SET_PDEATHSIG`` on Linux; ``kill -9``
included) before it becomes the real ffmpeg, so no ffmpeg outlives its download.

Every connection goes through a `guard.Guard` (a proxy on 127.0.0.1, one per attempt): redirects
to addresses that are not public are refused unless the template names that host, and a server
that goes silent (``read_timeout_s``) or trickles (under ``min_speed_kBps`` over
``speed_window_s``) is cut; the attempt is then a transient ``error`` with that reason.

A direct file on a mirror (yt-dlp's generic extractor, ``direct``) whose window cannot be cut
over HTTP (a server without ``Range`` serving an MP4 whose index is at the end) or comes out short
is fetched whole (at most ``max_file_mb``) and cut here. Its length then settles it: a video that
ends before its window does is ``unavailable``, with its length, for good (a re-run does not fetch
it again); so is a video whose length yt-dlp knows before any download (YouTube).

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
  end closed", "incomplete read", "confirm you're not a bot" (YouTube's rate limiting), a
  connection the guard cut (silent or slow), and a result shorter than the window that is not
  explained by the video's length (a truncated transfer);
- ``unavailable``: "unavailable", "not available", HTTP 404, "does not exist", "unsupported url";
- anything else: ``error`` (not retried in this run; a re-run retries it).
"""

from __future__ import annotations

import atexit
import email.utils
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from s2i_data import media, storage, untrusted

from .guard import Guard, Limits

TOLERANCE_S = 1.0  # a clip may be this much shorter than its window (keyframe and packet rounding)
CUT_TIMEOUT_S = 600.0  # cutting a window out of a whole file on this machine
VIDEO_EXTS = ("mp4", "mkv", "webm", "mov", "m4v")

PRIVATE = ("private video", "video is private", "members-only", "members only", "join this channel")
REMOVED = ("has been removed", "been terminated", "no longer available because", "copyright", "violat",
           "http error 410")
TRANSIENT = ("http error 429", "too many requests", "timed out", "timeout", "connection reset", "connection aborted",
             "connection refused", "remote end closed", "incomplete read", "incompleteread", "temporary failure",
             "not a bot", "network is unreachable", "truncated", "content too short", "more expected")
UNAVAILABLE = ("unavailable", "not available", "http error 404", "does not exist", "unsupported url")
_HTTP_5XX = re.compile(r"http error 5\d\d")


@dataclass(frozen=True)
class FetchSettings:
    url_template: str = "https://www.youtube.com/watch?v={ytid}"
    max_height: int = 360
    cookies: str | None = None
    read_timeout_s: float = 30.0  # a server silent this long is cut
    clips: bool = False  # the URL serves the window itself (a mirror of cut clips): fetch 0 .. end-start
    min_speed_kBps: float = 10.0  # a server slower than this over speed_window_s is cut (0: no minimum)
    speed_window_s: float = 60.0
    max_file_mb: float = 2000.0  # a whole file fetched to cut the window here: at most this

    def url(self, ytid: str, start: float) -> str:
        """The template with ``{ytid}`` and ``{start}`` (whole seconds, 6 digits) filled in."""
        return self.url_template.replace("{ytid}", ytid).replace("{start}", f"{int(start):06d}")

    def guard(self) -> Guard:
        """An attempt's guard; what it may receive is bounded too (a server that streams for ever)."""
        return Guard(self.url_template, Limits(self.read_timeout_s, self.min_speed_kBps * 1000, self.speed_window_s),
                     max_bytes=int(self.max_file_mb * 1e6))


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
_ffmpeg_dirs: dict[int, str] = {}  # pid → its folder (a Dask worker forked from us needs its own)

# Runs as ``ffmpeg``: asks to be killed when its parent dies (kill -9 too), checks the parent did
# not die before that took hold, drops no_proxy (every connection goes through the guard), then
# becomes the real ffmpeg (same pid, so the request survives the exec).
_WRAPPER = """\
import os, sys
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != {parent}:
        os._exit(137)
for name in ("no_proxy", "NO_PROXY"):
    os.environ.pop(name, None)
os.execv({exe!r}, [{exe!r}, *sys.argv[1:]])
"""


def ffmpeg_dir() -> str:
    """A private folder of this process whose ``ffmpeg`` runs `media.ffmpeg_exe()` so that it dies
    with this process; put first on this process's PATH."""
    exe = media.ffmpeg_exe()
    with _ffmpeg_lock:
        folder = _ffmpeg_dirs.get(os.getpid())
        if folder is None or not os.path.isfile(os.path.join(folder, "ffmpeg")):
            folder = tempfile.mkdtemp(prefix="s2i-ffmpeg-")  # 0700, a fresh name: nobody else's
            code = _WRAPPER.format(parent=os.getpid(), exe=exe)
            script = f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -IS -c {shlex.quote(code)} \"$@\"\n"
            storage.atomic_write(Path(folder) / "ffmpeg", script)
            os.chmod(os.path.join(folder, "ffmpeg"), 0o700)
            _ffmpeg_dirs[os.getpid()] = folder
            atexit.register(shutil.rmtree, folder, True)
        path = os.environ.get("PATH", "")
        if path.split(os.pathsep)[0] != folder:
            os.environ["PATH"] = folder + (os.pathsep + path if path else "")
    return folder


def ffmpeg_cmd() -> str:
    """The ``ffmpeg`` to run here: dies with this process."""
    return os.path.join(ffmpeg_dir(), "ffmpeg")


class _Quiet:
    """yt-dlp's messages go nowhere: errors come back as exceptions, progress would flood."""

    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


def ydl_options(work: Path, start: float, end: float, s: FetchSettings, proxy: str) -> dict:
    from yt_dlp.utils import download_range_func

    # the guard cuts a silent server at read_timeout_s and says why; the clients' own time-outs,
    # a little later, only back it up (yt-dlp: each socket operation; ffmpeg: -rw_timeout in µs)
    backstop = s.read_timeout_s + 5
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
        "socket_timeout": backstop,
        "proxy": proxy,  # yt-dlp's requests, and (as http_proxy) those of the ffmpeg it runs
        "external_downloader_args": {"ffmpeg_i": ["-rw_timeout", str(int(backstop * 1e6))]},
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
    # the first line with words: yt-dlp's "ERROR: \r[download] Got error: ..." breaks at the \r
    lines = [line.strip() for line in re.sub(r"^\s*ERROR:", "", str(exc)).splitlines() if line.strip()]
    text = re.sub(r"^\[download\] Got error:\s*", "", lines[0]) if lines else type(exc).__name__
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


def short_window(length_s: float, start: float, end: float) -> Outcome | None:
    """The outcome of a window the video does not hold (it ends before the window does, less
    `TOLERANCE_S`): ``unavailable`` for good, with what the window holds as its duration."""
    have = max(0.0, min(end, length_s) - start)
    if have >= end - start - TOLERANCE_S:
        return None
    return Outcome("unavailable", f"the video is {length_s:.2f} s long: the window {start:g}-{end:g} s holds "
                                  f"{have:.2f} s of {end - start:g} s", duration_s=have)


def fetch(ytid: str, start: float, end: float, folder: Path, key: str, root: Path, s: FetchSettings,
          slots=None) -> Outcome:
    """Download ``ytid``'s window into ``folder/<key>.<ext>``; never raises for a bad video.
    ``slots`` (`ratelimit`) paces the attempt's first request."""
    url = s.url(ytid, start)
    if s.clips:
        start, end = 0.0, end - start
    work = folder / f".part-{key}-{os.getpid()}-{threading.get_ident()}"
    guard = None
    try:
        guard = s.guard()
        storage.folder_inside(root, folder.relative_to(root))  # a class folder that is a link out: refused
        work.mkdir(exist_ok=True)
        with guard, _paced(slots)(ydl_options(work, start, end, s, guard.url)) as ydl:
            got = _window(ydl, guard, url, start, end, work, s)
        if isinstance(got, Outcome):
            return got  # the video does not hold the window
        path, duration = got
        out = keep(path, folder / f"{key}{path.suffix.lower()}", root)
        out.duration_s = duration
        return out
    except Exception as e:  # noqa: BLE001 - yt-dlp's DownloadError and whatever it wraps: one row's failure
        return _failure(e, guard)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _failure(e: Exception, guard: Guard | None) -> Outcome:
    """What a failed attempt records: the server's own permanent answer (404, private, ...) when
    it gave one, else what the guard cut or refused, else the error itself."""
    status, transient = _classify(e)
    event = guard.failure if guard is not None else None
    if event is not None and status not in ("private", "removed", "unavailable"):
        return Outcome("error", event.reason, transient=event.transient)
    if isinstance(e, Incomplete):
        return Outcome(status, str(e), transient=transient)
    return Outcome(status, _message(e), transient=transient, retry_after_s=retry_after(e))


def _classify(e: Exception) -> tuple[str, bool]:
    if isinstance(e, Incomplete):
        return "error", True
    return classify(_message(e) + " " + " ".join(_message(c) for c in _causes(e)))


def _window(ydl, guard: Guard, url: str, start: float, end: float, work: Path,
            s: FetchSettings) -> tuple[Path, float] | Outcome:
    """(the checked clip, its seconds), or the outcome of a video too short for the window."""
    info = ydl.extract_info(url, download=False) or {}
    length = info.get("duration")
    if length is not None:  # known before any download (YouTube): a short video is settled here
        short = short_window(untrusted.number(length, f"{url}: duration", lo=0), start, end)
        if short:
            return short
    try:
        ydl.process_ie_result(info, download=True)
        path = _produced(work)
        return path, check_clip(path, end - start)
    except Exception as e:  # noqa: BLE001 - which ones a whole file can mend is decided below
        if not info.get("direct") or guard.failure is not None or _classify(e)[0] != "error":
            raise  # not a plain file, cut off by the guard, or the server's own no
    return _whole_then_cut(ydl, guard, info, start, end, work, s)


def _whole_then_cut(ydl, guard: Guard, info: dict, start: float, end: float, work: Path,
                    s: FetchSettings) -> tuple[Path, float] | Outcome:
    """The window of a direct file that ffmpeg could not cut over HTTP: the whole file (through the
    same guard, at most ``max_file_mb``, its length then known), cut here."""
    for p in work.iterdir():  # what the windowed try left
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    guard.max_bytes = guard.received + int(s.max_file_mb * 1e6)
    ydl.params.pop("download_ranges", None)
    ydl.params["force_keyframes_at_cuts"] = False
    ydl._paced = False  # a second transfer: it takes a slot of the rate too
    try:
        ydl.process_ie_result(info, download=True)
    except Exception as e:  # noqa: BLE001 - yt-dlp's words for a transfer cut short, made ours
        if any(words in str(e).lower() for words in ("content too short", "more expected")):
            raise Incomplete(f"downloaded file is truncated: {_message(e)}") from None
        raise
    whole = _produced(work)
    try:
        length = untrusted.number(media.probe(str(whole)).duration_s, f"{info.get('webpage_url')}: duration", lo=0)
    except media.MediaError as e:
        raise Incomplete(f"downloaded file is not usable: {e} (truncated transfer?)") from None
    short = short_window(length, start, end)
    if short:
        return short
    clip = work / "window.mp4"
    # as yt-dlp cuts over HTTP: seek, re-encode so that the clip starts with a keyframe
    cmd = [ffmpeg_cmd(), "-nostdin", "-y", "-loglevel", "error", "-ss", f"{start:.6f}", "-t", f"{end - start:.6f}",
           "-i", str(whole), "-f", "mp4", str(clip)]
    run = subprocess.run(cmd, capture_output=True, timeout=CUT_TIMEOUT_S)
    if run.returncode != 0:
        last = (run.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit {run.returncode}"])[-1]
        raise Incomplete(f"cutting the window out of the whole file failed: {untrusted.printable(last)}")
    whole.unlink()
    return clip, check_clip(clip, end - start)
