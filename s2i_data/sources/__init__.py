"""Corpus sources: each turns a corpus on disk into a list of `VideoItem`s.

One module per corpus (lhotse-style ``prepare_*`` functions). A source never opens media: it
names files and their usable window; `media.probe` decides whether they are usable. Items a source
already knows are unusable (a CSV row whose file is missing, a file in an unknown class folder)
carry a ``reason`` and are recorded as skipped, never silently dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

# Lower-case file extensions (no dot) that sources treat as video; compared case-insensitively.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {"mp4", "mkv", "webm", "mov", "avi", "m4v", "flv", "mpg", "mpeg", "ts", "3gp", "wmv", "ogv"}
)


@dataclass(frozen=True)
class VideoItem:
    video_id: str  # stable, unique, [A-Za-z0-9_-] only: it prefixes every sample key
    source: str  # absolute path (or URL) of the input file
    cls: str  # class alias from the class table ("" when unknown)
    start_s: float = 0.0  # usable window, seconds from the start of the file
    end_s: float | None = None  # None: to the end of the file
    reason: str | None = None  # set when the source already knows the item is unusable


def safe_id(name: str, salt: str) -> str:
    """A key-safe id from a human name, made unique by a short hash of ``salt`` (e.g. the path).

    Keys must contain no dots (webdataset splits key and extension at the first dot) and should
    survive any filesystem, so everything outside [A-Za-z0-9_-] becomes '_'.
    """
    stem = _UNSAFE.sub("_", name).strip("_")[:48] or "video"
    digest = hashlib.sha1(salt.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}"
