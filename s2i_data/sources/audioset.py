"""AudioSet source: segment CSVs plus a folder of downloaded videos as ``VideoItem``s.

Owns reading the AudioSet segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``,
``unbalanced_train_segments.csv``: three ``#`` lines, the third naming the columns ``YTID,
start_seconds, end_seconds, positive_labels``, then rows ``-0RWZT-miFs, 420.000, 430.000,
"/m/03v3yw,/m/0k4j"``), selecting the segments of the requested classes, and finding each
segment's video file.

Class matching: a segment belongs to a class when any positive label is one of the class's
AudioSet ids or a descendant of one in the ontology. Segments matching none of the requested
classes are not part of the corpus and are not recorded. A segment matching **several** requested
classes (e.g. Dog and Bark both requested, or a video labelled both Dog and Fireworks) is recorded
as skipped with ``reason="labels match several requested classes: a, b"``: a class label is only
useful for selection and balance when it is unambiguous, and giving it to one class arbitrarily
would make the corpus depend on the order of ``--classes``.

Video files, looked for at any depth below ``root`` (indexed once):

- ``<YTID>_<start>_<end>.<ext>``, start/end in seconds (``abc_30_40``, ``abc_30.000_40.000``) or
  milliseconds (``abc_30000_40000``): the segment already cut, usable window 0..(end-start).
  The suffix must name this row's segment; such a file is preferred over a whole video.
- ``<YTID>.<ext>``: the whole YouTube video, usable window start..end from the CSV, unless
  ``clips=True`` says every ``<YTID>.<ext>`` is already cut to its segment (window
  0..(end-start)). The two cannot be told apart without probing, so a folder of cut clips named
  by bare YTID needs ``clips=True``; naming them ``<YTID>_<start>_<end>`` needs nothing.

Among several candidates of the same kind the first by path wins. A segment whose file is missing
is recorded with ``source=ROOT/YTID`` and a reason, as is a segment whose end is not after its
start. The same segment (YTID and start) listed in several CSVs is kept once, as first listed.
Video ids are ``<YTID>_<start in ms>``.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from s2i_data.classes import ClassInfo, Ontology, ontology
from s2i_data.sources import VIDEO_EXTENSIONS, VideoItem

COLUMNS = ("YTID", "start_seconds", "end_seconds", "positive_labels")
_BLOCK_BYTES = 16 << 20  # bounds memory: only the matching lines of each block are kept
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Anchored at the end because YTIDs themselves contain '_' and '-'.
_CLIP_NAME = re.compile(r"^(?P<ytid>.+)_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)$")
_SECONDS_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# CSV reading
#
# The file is read as whole lines by pyarrow (streamed in blocks, so memory stays bounded) and every
# line is checked against the row grammar with one vectorised RE2 pass; only lines carrying a
# wanted label are then split into fields. pandas' CSV parser takes ~4x longer on the 2M-row
# unbalanced_train CSV, and the `, "a,b"` quoting defeats pyarrow's own CSV field parser.

_ROW = (
    r'^\s*(?P<ytid>[^\s,"]+)\s*,\s*(?P<start>[-+]?[0-9]+(?:\.[0-9]*)?)\s*,'
    r'\s*(?P<end>[-+]?[0-9]+(?:\.[0-9]*)?)\s*,\s*(?:"(?P<labels>[^"]*)"|(?P<bare>[^\s,"]+))\s*$'
)


def _header_lines(path: Path) -> int:
    """Number of leading ``#`` lines; checks the column names when one of them names columns."""
    count = 0
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if not line.startswith("#"):
                break
            count += 1
            names = tuple(part.strip() for part in line.lstrip("#").split(","))
            if names and names[0] == COLUMNS[0] and names != COLUMNS:
                raise ValueError(
                    f"{path}: not an AudioSet segment CSV: columns are {', '.join(names)}, "
                    f"expected {', '.join(COLUMNS)}"
                )
    return count


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _line_batches(path: Path) -> Iterator[pa.StringArray]:
    """The data lines of a segment CSV, in blocks."""
    skip = _header_lines(path)
    read = pacsv.ReadOptions(skip_rows=skip, column_names=["line"], block_size=_BLOCK_BYTES)
    # No quoting and a delimiter that never occurs: each line is one field, parsed by _ROW.
    parse = pacsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False)
    convert = pacsv.ConvertOptions(column_types={"line": pa.string()})
    try:
        options = {"read_options": read, "parse_options": parse, "convert_options": convert}
        with pacsv.open_csv(path, **options) as reader:
            for batch in reader:
                yield batch.column(0)
    except pa.ArrowInvalid as e:
        if "empty" in str(e).lower():
            return  # nothing after the comment lines: reported as "no rows" by the caller
        raise ValueError(f"{path}: not an AudioSet segment CSV ({_first_line(e)})") from None


def _check_lines(path: Path, lines: pa.StringArray, first_row: int) -> None:
    valid = pc.match_substring_regex(lines, _ROW)
    if not pc.all(valid).as_py():
        bad = pc.index(valid, False).as_py()
        text = lines[bad].as_py()
        raise ValueError(
            f"{path}: not an AudioSet segment CSV (data row {first_row + bad} reads {text[:80]!r})"
        )


def _parse_lines(lines: pa.Array) -> pd.DataFrame:
    fields = pc.extract_regex(lines, _ROW)
    part = functools.partial(pc.struct_field, fields)
    # The group that did not take part comes back as "", so joining them gives the label list.
    labels = pc.binary_join_element_wise(part("labels"), part("bare"), "")
    return pd.DataFrame(
        {
            "ytid": pd.Series(part("ytid").to_pylist(), dtype=object),
            "start": pc.cast(part("start"), pa.float64()).to_numpy(),
            "end": pc.cast(part("end"), pa.float64()).to_numpy(),
            "labels": pd.Series(labels.to_pylist(), dtype=object),
        }
    )


def _matching_rows(path: Path, pattern: str) -> pd.DataFrame:
    """The rows of one CSV whose labels contain any wanted label; every row is validated."""
    kept = []
    rows = 0
    for lines in _line_batches(path):
        _check_lines(path, lines, rows + 1)
        rows += len(lines)
        kept.append(lines.filter(pc.match_substring_regex(lines, pattern)))
    if rows == 0:
        raise ValueError(f"{path}: AudioSet segment CSV has no rows")
    return _parse_lines(pa.concat_arrays(kept))


def _label_pattern(labels: Iterable[str]) -> str:
    # Labels start with '/', which no YTID contains, so a whole-line search cannot hit the YTID.
    # Unanchored, it may also hit a label that merely contains a wanted one; the exact per-label
    # test in prepare_audioset rejects those.
    return "|".join(re.escape(label) for label in sorted(labels))


def read_segments(csvs: Sequence[Path], labels: Iterable[str]) -> pd.DataFrame:
    """Segments (columns ytid, start, end, labels, start_ms) of the CSVs carrying any of ``labels``.

    Every CSV is checked in full; duplicates (same YTID and start) are kept once, first listed.
    """
    if not csvs:
        raise ValueError("no AudioSet segment CSV given")
    pattern = _label_pattern(labels)
    frames = [_matching_rows(Path(p), pattern) for p in csvs]
    segments = pd.concat(frames, ignore_index=True)
    segments["start_ms"] = (segments["start"] * 1000).round().astype("int64")
    return segments.drop_duplicates(["ytid", "start_ms"], keep="first").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Class matching


def label_classes(classes: Sequence[ClassInfo], onto: Ontology) -> dict[str, tuple[int, ...]]:
    """Each label that selects a requested class → indices of the classes it selects."""
    table: dict[str, list[int]] = {}
    for index, info in enumerate(classes):
        for mid in info.audioset_ids:
            for label in onto.descendants(mid):
                if index not in table.setdefault(label, []):
                    table[label].append(index)
    return {label: tuple(indices) for label, indices in table.items()}


def _classes_of(labels: str, table: dict[str, tuple[int, ...]]) -> list[int]:
    found = {index for label in labels.split(",") for index in table.get(label.strip(), ())}
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# Video files


@dataclass
class FileIndex:
    """Video files under a root by YTID: whole videos and already-cut clips."""

    whole: dict[str, list[str]] = field(default_factory=dict)
    clips: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: str, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> FileIndex:
        exts = frozenset(e.lower().lstrip(".") for e in extensions)
        index = cls()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                stem, dot, ext = name.rpartition(".")
                if dot and stem and not name.startswith(".") and ext.lower() in exts:
                    index.add(stem, os.path.join(dirpath, name))
        return index

    def add(self, stem: str, path: str) -> None:
        # A stem is indexed both ways: only the CSV's YTID can tell whether "x_1_2" is a clip.
        self.whole.setdefault(stem, []).append(path)
        m = _CLIP_NAME.match(stem)
        if m:
            entry = (float(m["start"]), float(m["end"]), path)
            self.clips.setdefault(m["ytid"], []).append(entry)

    def clip(self, ytid: str, start: float, end: float) -> str | None:
        """The already-cut file of this segment, suffix in seconds or milliseconds."""
        for a, b, path in self.clips.get(ytid, ()):
            seconds = _close(a, start, _SECONDS_TOLERANCE) and _close(b, end, _SECONDS_TOLERANCE)
            millis = _close(a, start * 1000, 0.5) and _close(b, end * 1000, 0.5)
            if seconds or millis:
                return path
        return None

    def whole_video(self, ytid: str) -> str | None:
        paths = self.whole.get(ytid)
        return paths[0] if paths else None


def _close(a: float, b: float, tolerance: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=tolerance)


# ---------------------------------------------------------------------------------------------
# Items


def video_id(ytid: str, start: float) -> str:
    """``<YTID>_<start in ms>`` with anything outside [A-Za-z0-9_-] made '_'."""
    return _UNSAFE.sub("_", f"{ytid}_{round(start * 1000)}")


class _Row(NamedTuple):
    ytid: str
    start: float
    end: float
    labels: str


def _locate(row: _Row, files: FileIndex, clips: bool) -> tuple[str | None, float, float]:
    """(path, window start, window end) of the row's file, path None when there is none."""
    length = row.end - row.start
    path = files.clip(row.ytid, row.start, row.end)
    if path is not None:
        return path, 0.0, length
    path = files.whole_video(row.ytid)
    if path is not None and clips:
        return path, 0.0, length
    return path, row.start, row.end


def _item(
    row: _Row,
    matched: list[int],
    classes: Sequence[ClassInfo],
    files: FileIndex,
    root: str,
    clips: bool,
) -> VideoItem:
    path, start_s, end_s = _locate(row, files, clips)
    source = path if path is not None else os.path.join(root, row.ytid)
    reason = None
    if len(matched) > 1:
        names = ", ".join(classes[i].alias for i in matched)
        reason = f"labels match several requested classes: {names}"
    elif path is None:
        reason = f"no video file for YTID {row.ytid} under {root}"
    elif row.start < 0:
        reason = f"segment start {row.start:g} s is negative"
    elif not row.end > row.start:
        reason = f"segment end {row.end:g} s is not after its start {row.start:g} s"
    cls = classes[matched[0]].alias if len(matched) == 1 else ""
    return VideoItem(video_id(row.ytid, row.start), source, cls, start_s, end_s, reason)


def prepare_audioset(
    csvs: Sequence[Path],
    root: Path,
    classes: Sequence[ClassInfo],
    clips: bool = False,
) -> list[VideoItem]:
    """Items for the segments of ``csvs`` that belong to ``classes``, sorted by video id.

    ``root`` is the folder holding the downloaded videos (searched at any depth). ``clips=True``
    says files named ``<YTID>.<ext>`` are already cut to their segment. Raises ``ValueError`` (one
    line naming the file) for an empty or malformed CSV, and when ``root`` is not a folder.
    """
    if not classes:
        raise ValueError("no classes requested")
    root_str = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_str):
        raise ValueError(f"AudioSet video folder {root_str} does not exist or is not a folder")
    table = label_classes(classes, ontology())
    segments = read_segments(csvs, table)
    files = FileIndex.scan(root_str)
    columns = [segments[name].tolist() for name in ("ytid", "start", "end", "labels")]
    items = []
    for row in map(_Row._make, zip(*columns, strict=True)):
        matched = _classes_of(row.labels, table)
        if matched:  # the regex pass is a superset filter; this is the exact test
            items.append(_item(row, matched, classes, files, root_str, clips))
    items.sort(key=lambda item: item.video_id)
    return items
