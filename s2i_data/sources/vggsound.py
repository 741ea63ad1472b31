"""VGGSound source: the VGGSound CSV plus the tree `s2i-data download` writes, as ``VideoItem``s.

The CSV (``vggsound.csv``) has no header; each line is ``YTID,start_seconds,label,split`` with
``split`` ``train`` or ``test``, labels quoted when they hold a comma (``"dog bow-wow"``, ``"male
speech, man speaking"``). Each row names the 10 s window ``start .. start+10`` of one YouTube video.

Files: ``ROOT/<class>/<YTID>_<start:06d>.<ext>`` (what `s2i_data.download` writes), found by
file name at any depth below ROOT, so the class folder does not matter. Each file is already cut to
its window, so its usable window is the whole file (0 .. 10 s). A row without a file is recorded as
skipped with the reason `download.parquet` gives for it (unavailable, private, ...) when ROOT has
one, else "not downloaded".

Classes (`resolve_vggsound`): VGGSound names its 309 classes by phrases (``dog barking``). A
requested name resolves, first hit wins, to

1. a class of ``manifests/classes.csv`` by alias or display name (``dog``, ``Baby cry``); its
   ``vggsound`` column gives its VGGSound label(s) (``;``-separated: a class may gather several);
2. a VGGSound label found in the CSV (any case or punctuation); when that label is the VGGSound
   label of a table class, that class (so ``dog barking`` and ``dog`` are one class, alias
   ``dog``), else a class whose alias is the label's slug (``playing_cello``).

Splits (written into build.json as ``split_rule``): the official **test** rows are the test split;
the official train rows are split into train and validation by `plan.assign_splits`, per class,
by hash of the YouTube id, so the split is video-disjoint (two windows of one video stay
together) and the proportions are ``--splits``' train : val (its test share is not used). A video
that has any official test row is test as a whole.
"""

from __future__ import annotations

import csv
import difflib
import functools
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from s2i_data.classes import ClassInfo, class_table, class_table_rows, normalize, slugify
from s2i_data.sources import VIDEO_EXTENSIONS, VideoItem

WINDOW_S = 10.0  # VGGSound's clips are 10 s from start_seconds
SPLITS = ("train", "test")
_YTID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # YouTube ids are 11 of these; mirrors may use longer
SPLIT_RULE = ("official VGGSound test rows -> test; official train rows -> train and val, per class "
              "by SHA-1 of (seed, YouTube id), proportions train:val of --splits; a YouTube id with "
              "any test row is test as a whole")


@dataclass(frozen=True)
class VggRow:
    line: int  # 1-based line of the CSV, for messages
    ytid: str
    start: float
    label: str
    split: str
    reason: str = ""  # set when the line cannot be used


def stem(ytid: str, start: float) -> str:
    """File stem of a downloaded window: ``<YTID>_<start seconds, 6 digits>``."""
    return f"{ytid}_{int(math.floor(start)):06d}"


def check_ytid(ytid: str) -> str:
    """'' when ``ytid`` is safe as a file name part, else the reason (no '/', no '..', no spaces)."""
    return "" if _YTID.match(ytid) else f"YouTube id {ytid[:40]!r} is not [A-Za-z0-9_-]{{1,64}}"


def parse_line(fields: list[str], line: int) -> VggRow:
    """One CSV record as a row, with a reason naming the line when it is malformed."""
    fields = [f.strip() for f in fields]
    if len(fields) != 4:
        return VggRow(line, fields[0] if fields else "", math.nan, "", "",
                      f"line {line}: expected 4 fields (ytid,start,label,split), got {len(fields)}")
    ytid, start_text, label, split = fields
    bad = check_ytid(ytid)
    try:
        start = float(start_text)
    except ValueError:
        start = math.nan
    if bad:
        pass
    elif not math.isfinite(start):
        bad = f"start {start_text[:20]!r} is not a number"
    elif start < 0:
        bad = f"start {start:g} s is negative"
    elif not label:
        bad = "no label"
    elif split not in SPLITS:
        bad = f"split {split[:20]!r} is not train or test"
    return VggRow(line, ytid, start, label, split, f"line {line}: {bad}" if bad else "")


def read_csv(path: str | Path) -> list[VggRow]:
    """Every record of a VGGSound CSV (blank lines skipped); a file that is not one raises
    ``ValueError`` naming it."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [parse_line(fields, n) for n, fields in enumerate(csv.reader(f), 1) if any(x.strip() for x in fields)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a VGGSound CSV ({e})") from None
    if not rows:
        raise ValueError(f"{path}: VGGSound CSV has no rows")
    if all(r.reason for r in rows):
        raise ValueError(f"{path}: not a VGGSound CSV (no line reads ytid,start,label,train|test; {rows[0].reason})")
    return rows


# ---------------------------------------------------------------------------------- classes

@functools.lru_cache(maxsize=1)
def table_labels() -> dict[str, tuple[str, ...]]:
    """Class-table alias → its VGGSound labels (the ``vggsound`` column of classes.csv)."""
    return {row["alias"].strip(): tuple(p.strip() for p in (row.get("vggsound") or "").split(";") if p.strip())
            for row in class_table_rows()}


@dataclass(frozen=True)
class VggClass:
    info: ClassInfo  # alias, display name, folder spellings
    labels: tuple[str, ...]  # the VGGSound labels it gathers


def resolve_vggsound(names: Sequence[str], labels: Iterable[str]) -> list[VggClass]:
    """Classes for requested names; ``labels`` is the CSV's vocabulary. Unknown names and two
    names for one class raise ``ValueError`` with one line."""
    vocabulary = {normalize(label): label for label in labels}
    mapped = table_labels()
    by_label = {normalize(label): info for info in class_table() for label in mapped.get(info.alias, ())}
    out: list[VggClass] = []
    seen: dict[str, str] = {}
    for name in names:
        key = normalize(name)
        info = next((i for i in class_table() if key and key in (normalize(i.alias), normalize(i.display_name))), None)
        if info is not None:
            wanted = mapped.get(info.alias, ())
            if not wanted:
                raise ValueError(f"class {name!r} has no VGGSound name in classes.csv (its vggsound column is empty)")
        elif key in vocabulary:
            info = by_label.get(key)
            if info is not None:
                wanted = mapped[info.alias]
            else:
                label = vocabulary[key]
                info, wanted = ClassInfo(slugify(label), label, (label, slugify(label)), ()), (label,)
        else:
            close = difflib.get_close_matches(name.lower(), sorted(vocabulary.values()), n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown VGGSound class {name!r} (neither a class of classes.csv with a VGGSound "
                             f"name nor a label of the CSV){hint}")
        if info.alias in seen:
            raise ValueError(f"class {name!r} is requested twice (same class as {seen[info.alias]!r})")
        seen[info.alias] = name
        out.append(VggClass(info, tuple(wanted)))
    if not out:
        raise ValueError("no classes requested")
    return out


def default_alias(label: str) -> str:
    """The class of a label when no classes were requested: the table class whose VGGSound label
    it is (``dog barking`` → ``dog``), else the label's slug."""
    key = normalize(label)
    for alias, labels in table_labels().items():
        if any(normalize(x) == key for x in labels):
            return alias
    return slugify(label)


def label_map(classes: Sequence[VggClass]) -> dict[str, str]:
    """normalised VGGSound label → class alias."""
    return {normalize(label): c.info.alias for c in classes for label in c.labels}


# ---------------------------------------------------------------------------------- items

def _file_index(root: str) -> dict[str, str]:
    """File stem → path for every video file below root (hidden entries skipped; first by path)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            base, dot, ext = name.rpartition(".")
            if dot and base and not name.startswith(".") and ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(base, os.path.join(dirpath, name))
    return found


def _download_reasons(root: str) -> dict[str, str]:
    """stem → 'status: reason' of rows `download` did not fetch, from ROOT/download.parquet."""
    path = os.path.join(root, "download.parquet")
    if not os.path.exists(path):  # a folder of parts (a file before issue 29): read as one table
        return {}
    import pandas as pd

    try:
        table = pd.read_parquet(path, columns=["ytid", "start", "status", "reason"])
    except (OSError, ValueError, KeyError):
        return {}
    bad = table[table["status"] != "ok"]
    return {stem(y, s): f"{st}: {r}" if r else st
            for y, s, st, r in zip(bad["ytid"], bad["start"], bad["status"], bad["reason"]) if math.isfinite(s)}


def prepare_vggsound(csvs: Sequence[Path], root: Path, classes: Sequence[VggClass]) -> tuple[list[VideoItem], dict[str, str]]:
    """Items for the rows of the requested classes, sorted by video id, and each item's official
    split (video id → ``train``/``test``; ids of skipped rows too). Raises ``ValueError`` for a
    missing folder or a CSV that is not VGGSound's."""
    root_str = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_str):
        raise ValueError(f"VGGSound video folder {root_str} does not exist or is not a folder")
    wanted = label_map(classes)
    files = _file_index(root_str)
    reasons = _download_reasons(root_str)
    items: dict[str, VideoItem] = {}
    splits: dict[str, str] = {}
    for path in csvs:
        for row in read_csv(path):
            if row.reason:
                continue  # a line naming no usable window belongs to no class; download records it
            alias = wanted.get(normalize(row.label))
            if alias is None:
                continue
            vid = stem(row.ytid, row.start)
            if vid in items:
                continue  # listed twice: kept once, as first listed
            source = files.get(vid)
            reason = None
            if source is None:
                why = reasons.get(vid)
                reason = f"not downloaded ({why})" if why else f"no file {vid}.* under {root_str}"
            items[vid] = VideoItem(vid, source or os.path.join(root_str, alias, vid + ".mp4"), alias, 0.0, WINDOW_S, reason)
            splits[vid] = row.split
    return sorted(items.values(), key=lambda it: it.video_id), splits


def csv_labels(csvs: Sequence[Path]) -> set[str]:
    return {row.label for path in csvs for row in read_csv(path) if not row.reason}


def add_official_splits(probes, csvs: Sequence[Path]):
    """The probe table with ``official_split`` (train/test, from the CSV) and ``split_group``
    (the YouTube id: windows of one video share a split), which `plan.assign_splits` reads."""
    split, group = {}, {}
    for path in csvs:
        for row in read_csv(path):
            if not row.reason:
                vid = stem(row.ytid, row.start)
                split.setdefault(vid, row.split)
                group.setdefault(vid, row.ytid)
    probes = probes.copy()
    probes["official_split"] = probes["video_id"].map(split).fillna("train")
    probes["split_group"] = probes["video_id"].map(group).fillna(probes["video_id"])
    return probes
