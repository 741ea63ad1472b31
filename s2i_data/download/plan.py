"""What a run does with each row of its CSV, decided for all rows at once.

The rows (`rows.read_table`) and what earlier runs recorded (`manifest.load`) are columns, and so is
every decision: at AudioSet scale, two million rows as Python objects took minutes and gigabytes
before the first request (issue 29). For each key, first listing only:

- a line that cannot be downloaded is recorded ``skipped``, unless its record says so already;
- a clip under its final name with an ``ok`` record is done; without one (a run killed between the
  rename and the journal line) it is checked and recorded (``adopt``);
- a permanent failure (unavailable, private, removed) is left alone unless ``retry_failed``;
- everything else is fetched (``todo``: errors, rows never reached, ok rows whose clip is gone).

Clips are found with one listing of each class folder, never a stat a row: on a shared file
system two million stats are two million round trips.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import keys, manifest
from .fetch import VIDEO_EXTS
from .rows import Row


@dataclass
class Plan:
    rows: pa.Table  # the rows of this CSV, once each (the summary counts their keys)
    todo: np.ndarray  # indices of the rows to fetch, in CSV order
    previous: np.ndarray  # their attempts in earlier runs
    skipped: pa.Table  # records of the lines recorded as skipped now (new, or changed)
    adopt: list[tuple[Row, Path, int]]  # (row, its clip, previous attempts)
    replacing: tuple[pa.Array, np.ndarray]  # (keys, index in Known) of the rows above that have a record


def scan(root: Path, classes: set[str]) -> Iterator[tuple[str, pa.Array, pa.Array]]:
    """One listing of each folder of ROOT: the work folders of an interrupted run removed (never
    valid: their clip was not checked yet), and for each class folder in ``classes`` the clips
    under final names, as (class, stems, file names), a folder at a time. A link in ROOT is not
    followed."""
    with os.scandir(root) as it:
        folders = [(e.name, e.path) for e in it
                   if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name != manifest.RECORD]
    for name, path in folders:
        names, partial = [], []
        with os.scandir(path) as it:
            for e in it:
                if e.name.startswith("."):
                    if e.name.startswith(".part-"):
                        partial.append(e.path)
                elif name in classes and e.is_file():
                    names.append(e.name)
        for p in partial:
            shutil.rmtree(p, ignore_errors=True)
        if name in classes:
            yield name, *_clips(names)


def _clips(names: list[str]) -> tuple[pa.Array, pa.Array]:
    """(stem, name) of the video files among ``names``, the first of a stem (``x.mp4``, ``x.mkv``)."""
    try:
        arr = pa.array(names, pa.string())
    except UnicodeEncodeError:  # a name that is not UTF-8 is no key of a CSV row
        arr = pa.array([n for n in names if _encodable(n)], pa.string())
    parts = pc.extract_regex(arr, r"(?s)^(?P<stem>.+)\.(?P<ext>[^.]*)$")  # the last dot
    video = pc.fill_null(pc.is_in(parts.field("ext"), value_set=pa.array(VIDEO_EXTS)), False)
    stems, names = parts.field("stem").filter(video), arr.filter(video)
    first = keys.first_of_each(stems)
    if first is not None:
        stems, names = stems.filter(pa.array(first)), names.filter(pa.array(first))
    return stems, names


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def release_memory() -> None:
    """Hand back to the system what the allocators keep of the last step's temporaries (pyarrow's
    pool; glibc's heap, numpy's), so that the next step's peak does not stack on them: at
    AudioSet scale a few hundred MB of the memory before the first request."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def _np(array) -> np.ndarray:
    return manifest.array(array).to_numpy(zero_copy_only=False)


def _col(table: pa.Table, name: str) -> pa.Array:
    return manifest.array(table.column(name))


def make_plan(rows: pa.Table, known: manifest.Known, root: Path, retry_failed: bool) -> Plan:
    """What to do with each row; releases ``known``'s columns once each row's is taken."""
    first = keys.first_of_each(rows["key"])
    if first is not None:
        rows = rows.filter(pa.array(first))  # listed twice: once, as first listed
    n = rows.num_rows
    key = _col(rows, "key")
    rows = rows.set_column(rows.schema.get_field_index("key"), "key", key)  # one copy of the keys
    where = keys.index_in(key, known.keys).astype(np.int32)
    had = where >= 0
    status = known.status.dictionary_encode()
    names = status.dictionary.to_pylist()
    old = np.where(had, _np(status.indices)[np.maximum(where, 0)], -1) if len(names) else np.full(n, -1)
    was = {s: (old == names.index(s)) if s in names else np.zeros(n, bool)
           for s in ("ok", "skipped", *manifest.PERMANENT)}
    old_attempts = np.where(had, _np(known.attempts)[np.maximum(where, 0)] if len(known) else 0, 0)
    reason = _col(rows, "reason")
    skip = _np(pc.not_equal(reason, ""))
    # a skipped line is recorded again only when its record says something else
    same = np.flatnonzero(skip & was["skipped"])
    said = _np(pc.fill_null(pc.equal(known.reason.take(pa.array(where[same])), reason.take(pa.array(same))), False))
    record_skipped = skip.copy()
    record_skipped[same[said]] = False
    known.release()
    release_memory()

    found = np.zeros(n, bool)
    adopt_at: list[tuple[int, str]] = []  # (row, its clip's file name)
    cls = _col(rows, "cls")
    cls = cls if pa.types.is_dictionary(cls.type) else cls.dictionary_encode()
    codes, values = _np(cls.indices), cls.dictionary.to_pylist()
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(values) + 1))
    classes = {values[c] for c in np.unique(codes[~skip]).tolist()} - {""}
    for value, stems, files in scan(root, classes):
        for c in [i for i, v in enumerate(values) if v == value]:
            these = order[bounds[c]:bounds[c + 1]]
            these = these[~skip[these]]
            idx = keys.index_in(key.take(pa.array(these)), stems)
            hit = idx >= 0
            found[these[hit]] = True
            for i, j in zip(these[hit].tolist(), idx[hit].tolist()):
                if not was["ok"][i]:
                    adopt_at.append((i, files[j].as_py()))
    todo = ~skip & ~found
    if not retry_failed:
        for s in manifest.PERMANENT:
            todo &= ~was[s]

    adopt = []
    for i, name in sorted(adopt_at):
        r = rows.slice(i, 1).to_pylist()[0]
        row = Row(r["line"], r["ytid"], r["start"], r["end"], r["cls"], r["split"], "", r["key"])
        adopt.append((row, root / r["cls"] / name, int(old_attempts[i])))

    recorded = todo | record_skipped
    recorded[[i for i, _ in adopt_at]] = True
    recorded &= had
    replacing = (key.filter(pa.array(recorded)), where[recorded])
    todo = np.flatnonzero(todo)
    return Plan(rows, todo, old_attempts[todo], _skipped_records(rows.filter(pa.array(record_skipped))), adopt,
                replacing)


def _skipped_records(rows: pa.Table) -> pa.Table:
    n = rows.num_rows
    return pa.table({
        "key": rows["key"], "ytid": rows["ytid"], "start": rows["start"], "end": rows["end"],
        "class": rows["cls"].cast(pa.string()),
        "split": rows["split"], "status": pa.array(["skipped"] * n, pa.string()), "reason": rows["reason"],
        "attempts": pa.array(np.zeros(n, np.int64)), "bytes": pa.array(np.zeros(n, np.int64)),
        "sha256": pa.array([""] * n, pa.string()), "duration": pa.array(np.full(n, np.nan)),
        "file": pa.array([""] * n, pa.string())}, schema=manifest.SCHEMA)
