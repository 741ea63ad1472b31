"""The rows to download: a CSV in one of three formats → `Row`s, bad lines kept with a reason;
`read_table` gives them as columns, which is how a download reads them (AudioSet's two million
lines are read as columns by `segments` and never become a `Row` each).

- ``vggsound``: headerless ``ytid,start_seconds,label,train|test`` (`s2i_data.sources.vggsound`);
  classes by VGGSound label or class-table alias; without ``--classes`` every label is taken.
- ``audioset``: the segment CSVs (``#`` header lines, ``YTID, start, end, "labels"``), labels as
  ontology ids; a row belongs to a requested class when a label is the class or a descendant
  (`s2i_data.sources.audioset`); ``--classes`` is required (two million rows otherwise). Its
  files are named ``<YTID>_<start ms>_<end ms>``, the name of a cut clip that ``build --source
  audioset`` recognises; VGGSound and plain rows are ``<YTID>_<start:06d>``.
- ``plain``: ``ytid,start,end[,class]``, an optional header line starting ``ytid``; with
  ``--classes`` the class column must name one of them.

Rows of classes that were not requested are not part of the job and are not listed. Every other
line that cannot be downloaded is a row with ``reason`` set (recorded as ``skipped``): a malformed
line, a negative or empty window, an id that is not ``[A-Za-z0-9_-]`` (ids and class aliases
become file names, so nothing else may reach a path), a plain row whose class is not requested,
an AudioSet row whose labels match several requested classes.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from s2i_data.classes import normalize, slugify
from s2i_data.sources import vggsound

from .segments import audioset_table

FORMATS = ("auto", "vggsound", "audioset", "plain")
UNLABELLED = "unlabelled"  # the folder of plain rows without a class


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the CSV
    ytid: str
    start: float
    end: float
    cls: str  # class alias: the folder under ROOT ('' when the row is skipped before a class is known)
    split: str = ""  # vggsound: train | test
    reason: str = ""  # set: the row is recorded as skipped
    name: str = ""  # the file stem when the format has its own (AudioSet)

    @property
    def key(self) -> str:
        """File stem and identity of the row: ``<ytid>_<start:06d>`` (VGGSound's, and plain rows'),
        or the format's own ``name``."""
        if self.name:
            return self.name
        return vggsound.stem(self.ytid, self.start) if math.isfinite(self.start) else f"{self.ytid}_line{self.line}"


def read_table(path: str | Path, fmt: str, classes: list[str] | None, window_s: float = 10.0):
    """The rows of `read_rows` as a pyarrow Table of `segments.COLUMNS` (``cls`` the class alias,
    ``key`` `Row.key`), in line order: AudioSet's millions of lines are read as columns
    (`segments`), never as a Python object a row; the other formats (VGGSound: 200,000 rows) are
    read as rows and turned into columns."""
    import pyarrow as pa

    if fmt == "auto":
        fmt = detect(path)
    if fmt == "audioset":
        return audioset_table(path, classes)
    rows = read_rows(path, fmt, classes, window_s)
    return pa.table({"line": pa.array([r.line for r in rows], pa.int64()),
                     "ytid": pa.array([r.ytid for r in rows], pa.string()),
                     "start": pa.array([r.start for r in rows], pa.float64()),
                     "end": pa.array([r.end for r in rows], pa.float64()),
                     "cls": pa.array([r.cls for r in rows], pa.string()),
                     "split": pa.array([r.split for r in rows], pa.string()),
                     "reason": pa.array([r.reason for r in rows], pa.string()),
                     "key": pa.array([r.key for r in rows], pa.string())})


def read_rows(path: str | Path, fmt: str, classes: list[str] | None, window_s: float = 10.0) -> list[Row]:
    """The rows of ``path``; raises ``ValueError`` (one line) for an unknown format or class, or a
    file that is not of the format at all. ``auto``: see `detect`."""
    if fmt == "auto":
        fmt = detect(path)
    if fmt == "vggsound":
        return _vggsound(path, classes, window_s)
    if fmt == "audioset":
        return _audioset(path, classes)
    if fmt == "plain":
        return _plain(path, classes)
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect(path: str | Path) -> str:
    """The format from the first line: ``#`` comments → audioset; a ``ytid`` header or
    ``id,number,number[,class]`` → plain; anything else → vggsound."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = next((fields for fields in csv.reader(f, skipinitialspace=True) if any(x.strip() for x in fields)), [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the CSV ({e})") from None
    if first and first[0].lstrip().startswith("#"):
        return "audioset"
    fields = [x.strip() for x in first]
    if fields and (fields[0].lower() == "ytid" or (len(fields) in (3, 4) and _number(fields[1]) and _number(fields[2]))):
        return "plain"
    return "vggsound"


def _vggsound(path, classes, window_s) -> list[Row]:
    records = vggsound.read_csv(path)
    if classes:
        wanted = vggsound.label_map(vggsound.resolve_vggsound(classes, {r.label for r in records if not r.reason}))
    out = []
    for r in records:
        if r.reason:
            out.append(Row(r.line, r.ytid, r.start, r.start + window_s, "", r.split, r.reason))
            continue
        alias = wanted.get(normalize(r.label)) if classes else vggsound.default_alias(r.label)
        if alias is None:
            continue
        if not alias:
            out.append(Row(r.line, r.ytid, r.start, r.start + window_s, "", r.split,
                           f"line {r.line}: label {r.label[:40]!r} gives no folder name"))
            continue
        out.append(Row(r.line, r.ytid, r.start, r.start + window_s, alias, r.split))
    return out


def _window(line: int, ytid: str, start_text: str, end_text: str) -> tuple[float, float, str]:
    """(start, end, reason) of a row's window."""
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        return math.nan, math.nan, f"line {line}: start/end {start_text[:20]!r}, {end_text[:20]!r} are not numbers"
    bad = vggsound.check_ytid(ytid)
    if bad:
        return start, end, f"line {line}: {bad}"
    if not (math.isfinite(start) and math.isfinite(end)):
        return start, end, f"line {line}: start/end are not finite"
    if start < 0:
        return start, end, f"line {line}: start {start:g} s is negative"
    if end <= start:
        return start, end, f"line {line}: end {end:g} s is not after start {start:g} s"
    return start, end, ""


def _records(path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-comment, non-blank lines; a file that is not text raises."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return [(n, [x.strip() for x in fields]) for n, fields in enumerate(csv.reader(f, skipinitialspace=True), 1)
                    if fields and any(x.strip() for x in fields) and not fields[0].lstrip().startswith("#")]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the CSV ({e})") from None


def _audioset(path, classes) -> list[Row]:
    table = audioset_table(path, classes)  # the columns, as Rows (for small files and tests)
    return [Row(r["line"], r["ytid"], r["start"], r["end"], r["cls"], r["split"], r["reason"],
                "" if r["reason"] else r["key"]) for r in table.to_pylist()]


def _plain(path, classes) -> list[Row]:
    wanted = {normalize(c): slugify(c) for c in classes or []}
    if classes and not all(wanted.values()):
        raise ValueError(f"--classes {', '.join(classes)}: a class name gives no folder name")
    records = _records(path)
    if records and records[0][1][0].lower() == "ytid":
        records = records[1:]  # the optional header line
    if not records:
        raise ValueError(f"{path}: no rows (expected ytid,start,end[,class])")
    out = []
    for line, fields in records:
        if len(fields) not in (3, 4):
            out.append(Row(line, fields[0], math.nan, math.nan, "", "",
                           f"line {line}: expected 3 or 4 fields (ytid,start,end[,class]), got {len(fields)}"))
            continue
        start, end, reason = _window(line, *fields[:3])
        name = fields[3] if len(fields) == 4 else ""
        if wanted:
            alias = wanted.get(normalize(name))
            if alias is None and not reason:
                reason = f"line {line}: unknown class {name[:40]!r} (not in --classes)"
        else:
            alias = slugify(name) if name else UNLABELLED
            if not alias and not reason:
                reason = f"line {line}: class {name[:40]!r} gives no folder name"
        out.append(Row(line, fields[0], start, end, "" if reason else alias, "", reason))
    return out
