"""Folder source: a VEGAS-style tree ``ROOT/<class folder>/**/<video file>`` as ``VideoItem``s.

Owns how a tree of clips maps to classes and ids. The class folder is matched to a requested class
with `s2i_data.classes.match_folder` (case, spaces, underscores and punctuation ignored); files are
found at any depth below it. A clip's window is the whole file, as VEGAS clips are already trimmed
to the sound event.

What is recorded rather than dropped, so a build report shows it:

- a top-level folder that matches no class at all: one item for the whole folder, with a reason;
- a video file lying directly in ROOT, outside any class folder: one item with a reason.

A top-level folder that matches a class of the class table which was simply not requested is
ignored silently (the user chose a subset). Hidden entries (names starting with '.') and non-video
files are ignored. Symbolic links to folders below a class folder are not followed, so a link loop
cannot hang the walk.

Within-class factors (issue 28): ``ROOT/factors.csv``, when present, gives each video its factor
values (`read_factors`, checked by `s2i_data.untrusted.factors_csv`); `factor_items` matches a
video by (class, file name in its class folder) and records one of a class with factors but no
row as skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from s2i_data.classes import ClassInfo, class_table, match_folder
from s2i_data.sources import VIDEO_EXTENSIONS, VideoItem, safe_id

if TYPE_CHECKING:
    from s2i_data.factors import Sidecar


def _normalize_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(ext.lower().lstrip(".") for ext in extensions)


def _is_video(name: str, extensions: frozenset[str]) -> bool:
    if name.startswith("."):
        return False
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in extensions


def _video_files(folder: str, extensions: frozenset[str]) -> list[str]:
    """Absolute paths of the video files at any depth below ``folder`` (hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_video(f, extensions))
    return found


def _relative(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _clip_item(path: str, root: str, info: ClassInfo) -> VideoItem:
    rel = _relative(path, root)
    return VideoItem(video_id=safe_id(Path(path).stem, rel), source=path, cls=info.alias)


def _unmatched_folder_item(path: str, name: str) -> VideoItem:
    return VideoItem(
        video_id=safe_id(name, name),
        source=path,
        cls="",
        reason=f"folder {name!r} matches no requested class",
    )


def _loose_file_item(path: str, root: str) -> VideoItem:
    rel = _relative(path, root)
    return VideoItem(
        video_id=safe_id(Path(path).stem, rel),
        source=path,
        cls="",
        reason=f"file {rel!r} is not inside a class folder",
    )


def prepare_folders(
    root: Path,
    classes: Sequence[ClassInfo],
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
) -> list[VideoItem]:
    """Items for every video file under the class folders of ``root``, sorted by relative path.

    Raises ``ValueError`` when ``root`` is not a folder or none of its folders matches a requested
    class.
    """
    root_str = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_str):
        raise ValueError(f"folder source {root_str} does not exist or is not a folder")
    exts = _normalize_extensions(extensions)
    with os.scandir(root_str) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    ranked: list[tuple[str, VideoItem]] = []
    matched_any = False
    for entry in entries:
        if not entry.is_dir():
            if _is_video(entry.name, exts):
                ranked.append((entry.name, _loose_file_item(entry.path, root_str)))
            continue
        info = match_folder(entry.name, classes)
        if info is None:
            if match_folder(entry.name, class_table()) is None:
                ranked.append((entry.name, _unmatched_folder_item(entry.path, entry.name)))
            continue
        matched_any = True
        for path in _video_files(entry.path, exts):
            ranked.append((_relative(path, root_str), _clip_item(path, root_str, info)))
    if not matched_any:
        raise ValueError(_no_match_message(root_str, classes, entries))
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


def _no_match_message(root: str, classes: Sequence[ClassInfo], entries: list[os.DirEntry]) -> str:
    wanted = ", ".join(info.alias for info in classes) or "none"
    folders = [e.name for e in entries if e.is_dir()]
    shown = ", ".join(repr(f) for f in folders[:10]) + (", ..." if len(folders) > 10 else "")
    return (
        f"no folder under {root} matches a requested class ({wanted}); "
        f"folders found: {shown or 'none'}"
    )


def prepare_remote_folders(root: str, classes: Sequence[ClassInfo],
                           extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[VideoItem]:
    """The same mapping for a tree at an fsspec URL: one listing of every file below ``root``,
    the same ids as a local copy of the tree would get (so builds of both agree), sources as
    URLs (fetched to a temporary file when probed and decoded)."""
    from s2i_data import storage

    exts = _normalize_extensions(extensions)
    files = []
    for rel, url in storage.find(root):
        if not any(part.startswith(".") for part in rel.split("/")):
            files.append((rel, url))
    if not files and not storage.exists(root):
        raise ValueError(f"folder source {root} does not exist")
    ranked: list[tuple[str, VideoItem]] = []
    matched_any, seen_folders = False, {}
    for rel, url in sorted(files):
        top, _, rest = rel.partition("/")
        if not rest:
            if _is_video(top, exts):
                ranked.append((rel, VideoItem(video_id=safe_id(Path(rel).stem, rel), source=url, cls="",
                                              reason=f"file {rel!r} is not inside a class folder")))
            continue
        if top not in seen_folders:
            seen_folders[top] = match_folder(top, classes)
            if seen_folders[top] is None and match_folder(top, class_table()) is None:
                ranked.append((top, _unmatched_folder_item(storage.join(root, top), top)))
        info = seen_folders[top]
        if info is None or not _is_video(rel.rsplit("/", 1)[-1], exts):
            continue
        matched_any = True
        ranked.append((rel, VideoItem(video_id=safe_id(Path(rel).stem, rel), source=url, cls=info.alias)))
    if not matched_any:
        wanted = ", ".join(info.alias for info in classes) or "none"
        raise ValueError(f"no folder under {root} matches a requested class ({wanted}); "
                         f"folders found: {', '.join(repr(f) for f in list(seen_folders)[:10]) or 'none'}")
    ranked.sort(key=lambda pair: pair[0])
    return [item for _, item in ranked]


# --- within-class factors (issue 28): ROOT/factors.csv beside the class folders ---------------

NO_FACTORS = "no factor values in factors.csv"


def read_factors(root: str) -> "Sidecar | None":
    """``ROOT/factors.csv`` checked whole (`untrusted.factors_csv`), or None when ROOT has none.
    Read with a cap (`untrusted.MAX_FACTOR_BYTES`) whether ROOT is a folder or a URL; a link, FIFO
    or device in its place is refused. Raises `untrusted.Untrusted` (one line) for a bad file."""
    from s2i_data import factors, storage, untrusted

    where = storage.join(root, factors.SIDECAR)
    limit = untrusted.MAX_FACTOR_BYTES
    if storage.is_remote(root):
        if not storage.exists(where):
            return None
        fs, path = storage.fs_of(where)
        with fs.open(path, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise untrusted.Untrusted(f"{where}: more than {limit >> 20} MB; refusing to read it")
    else:
        try:
            data = untrusted.capped_read(storage.local_path(where), limit, where)
        except FileNotFoundError:
            return None
    return untrusted.factors_csv(data, where)


def _in_class_folder(source: str, root: str) -> str | None:
    """The file name of ``source`` when it lies directly in a top-level folder of ``root`` (as
    factors.csv names videos), else None."""
    from s2i_data import storage

    if storage.is_remote(root):
        fs, path = storage.fs_of(root)
        base = fs.unstrip_protocol(fs._strip_protocol(path).rstrip("/"))
        rel = source[len(base) + 1:] if source.startswith(base + "/") else None
    else:
        rel = _relative(source, os.path.abspath(root))
    parts = rel.split("/") if rel else []
    return parts[1] if len(parts) == 2 and parts[0] not in ("", ".", "..") else None


def factor_items(items: list[VideoItem], root: str, sidecar: "Sidecar",
                 classes: Sequence[str]) -> tuple[list[VideoItem], dict[str, dict[str, float]]]:
    """The items with their factor values from ``sidecar`` (ROOT/factors.csv): a video of a class
    that has factors in the sidecar's preset is matched by (class alias, file name) to its row;
    without one it is recorded as skipped (`NO_FACTORS`), never dropped. Returns the items (those
    skipped with their reason) and ``{video_id: {column: value}}`` for the matched ones; videos of
    classes without factors get no values (their rows' factor columns stay empty)."""
    import dataclasses

    from s2i_data import factors

    with_factors = {f.cls for f in factors.of_classes(sidecar.preset, classes)}
    out, values = [], {}
    for it in items:
        if it.reason is not None or it.cls not in with_factors:
            out.append(it)
            continue
        video = _in_class_folder(it.source, root)
        row = sidecar.values.get((it.cls, video)) if video is not None else None
        if row is None:
            why = (f"class {it.cls!r}, video {video!r}" if video is not None
                   else "factors.csv names only files lying directly in a class folder")
            out.append(dataclasses.replace(it, reason=f"{NO_FACTORS} ({why})"))
            continue
        out.append(it)
        values[it.video_id] = dict(row)
    return out, values
