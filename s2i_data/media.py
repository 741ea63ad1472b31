"""The one place that talks to ffmpeg: find the binary, probe a file, decode a video once.

ffmpeg on PATH wins; otherwise the static binary that the ``imageio-ffmpeg`` wheel ships, so that
``pip install`` alone gives a working tool. That wheel ships no ffprobe, so probing reads what
``ffmpeg -i`` prints about the container plus a demux-only pass (``-c copy -f framecrc``) that
lists every packet: the real extent of each stream, which a truncated file's header overstates.
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
