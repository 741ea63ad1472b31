"""An AudioSet segment CSV as columns: two million lines in seconds and a few hundred MB, each row
what reading the file a record at a time with the csv module makes of it (the same fields,
reasons, keys and classes as `rows` gave before issue 29).

The real files hold one shape of line, ``YTID, start, end, "label,label"`` with a plain id, after
three ``#`` lines. One regular expression over a block of lines at a time (pyarrow's RE2, no
Python per line) picks the lines of that shape; each is one CSV record whose fields are the
expression's groups. Every other line is read by the csv module alone, which is the same as
reading it within the file when it is one record by itself (no quote left open at its end: the
csv module tells, see `_alone`). A line that is not (a field spanning lines), a carriage return or
NUL inside a line, or a file that is not UTF-8 sends the whole file through the csv module,
record by record, as before issue 29.

A block's rows are then made whole before the next block is read (the file, and its texts, are
never all in memory): labels and times are decided once per distinct text (the real files have a
few thousand start times and label sets) and mapped back to the rows; the table is the blocks'
rows, chunk after chunk, in line order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from s2i_data.sources import vggsound

COLUMNS = ("line", "ytid", "start", "end", "cls", "split", "reason", "key")
BLOCK_BYTES = 4 << 20  # of the file at a time
BLOCK_RECORDS = 100_000  # records read by the csv module at a time

# The usual line: a plain id (vggsound.check_ytid's rule), start, end, the quoted labels. Its
# groups are the csv module's fields (skipinitialspace) before they are stripped.
_LINE = (r'^ *(?P<y>[A-Za-z0-9_-]{1,64}), *(?P<s>[^,"\r\n]*), *(?P<e>[^,"\r\n]*), *"(?P<l>[^"\r\n]*)"\r?$')
_PLAIN_ID = r"^[A-Za-z0-9_-]{1,64}$"
_BOM = b"\xef\xbb\xbf"
_SENTINEL = "s2i-sentinel-line"


class _Fallback(Exception):
    """The file must be read by the csv module, whole."""


@dataclass
class _Block:
    """Records of four fields (line numbers, ytid, start, end, labels, before strip) and the others."""

    line: np.ndarray
    ytid: pa.Array
    start: pa.Array
    end: pa.Array
    labels: pa.Array
    odd: list[tuple[int, list[str]]]  # (line, stripped fields) of the records of another count
    records: int  # records that are not comments or blank


class _Lists:
    """Records the csv module gives, as `rows` took them before issue 29."""

    def __init__(self) -> None:
        self.line, self.fields, self.odd, self.records = [], ([], [], [], []), [], 0

    def add(self, line: int, fields: list[str]) -> None:
        if not fields or not any(x.strip() for x in fields) or fields[0].lstrip().startswith("#"):
            return
        self.records += 1
        fields = [x.strip() for x in fields]
        if len(fields) != 4:
            self.odd.append((line, fields))
            return
        self.line.append(line)
        for column, value in zip(self.fields, fields):
            column.append(value)

    def block(self) -> _Block:
        return _Block(np.array(self.line, np.int64), *(pa.array(c, pa.string()) for c in self.fields), self.odd,
                      self.records)


def _byte_blocks(path) -> Iterator[bytes]:
    """The file's bytes, BOM dropped, in blocks that end at a line's end."""
    with open(path, "rb") as f:
        rest = f.read(len(_BOM))
        if rest == _BOM:
            rest = b""
        while True:
            data = f.read(BLOCK_BYTES)
            if not data:
                if rest:
                    yield rest
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            rest = data[cut:]
            yield data[:cut]


def _fast_blocks(path) -> Iterator[_Block]:
    """Blocks of the file's records read by the expression; raises `_Fallback`."""
    first_line = 1
    for data in _byte_blocks(path):
        lines = pc.split_pattern(pa.array([data], pa.binary()), b"\n").flatten()
        if data.endswith(b"\n"):
            lines = lines.slice(0, len(lines) - 1)
        del data
        try:
            text = lines.cast(pa.string())  # checks UTF-8
        except pa.ArrowInvalid:
            raise _Fallback from None
        del lines
        groups = pc.extract_regex(text, _LINE)  # null where the line is not of the shape
        usual = pc.is_valid(groups)
        numbers = np.arange(first_line, first_line + len(text), dtype=np.int64)
        picked = groups.filter(usual)
        others = _Lists()
        for i in np.flatnonzero(pc.invert(usual).to_numpy(zero_copy_only=False)).tolist():
            fields = _alone(text[i].as_py())
            if fields is None:
                raise _Fallback
            others.add(int(numbers[i]), fields)
        block = _Block(numbers[usual.to_numpy(zero_copy_only=False)], picked.field("y"), picked.field("s"),
                       picked.field("e"), picked.field("l"), [], len(picked))
        yield _merged(block, others.block()) if others.records else block
        first_line += len(text)


def _merged(a: _Block, b: _Block) -> _Block:
    """The records of both, in line order."""
    line = np.concatenate([a.line, b.line])
    order = pa.array(np.argsort(line, kind="stable"))
    cols = [pc.take(pa.concat_arrays([x, y]), order) for x, y in
            ((a.ytid, b.ytid), (a.start, b.start), (a.end, b.end), (a.labels, b.labels))]
    return _Block(line[order.to_numpy()], *cols, a.odd + b.odd, a.records + b.records)


def _alone(line: str) -> list[str] | None:
    """The fields of a line when it is one CSV record by itself; None when the csv module would
    read it otherwise within the file (a quoted field left open, a carriage return or NUL)."""
    if line.endswith("\r"):
        line = line[:-1]  # \r\n: the record's end
    if "\r" in line or "\0" in line:
        return None
    try:
        got = list(csv.reader([line + "\n", _SENTINEL + "\n"], skipinitialspace=True))
    except csv.Error:
        return None
    if len(got) != 2 or got[1] != [_SENTINEL]:
        return None  # the line's last field went on into the next line
    return got[0]


def _csv_blocks(path) -> Iterator[_Block]:
    """Blocks of the file's records read by the csv module (how every file was read before issue 29)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        lists = _Lists()
        for n, fields in enumerate(csv.reader(f, skipinitialspace=True), 1):
            lists.add(n, fields)
            if len(lists.line) + len(lists.odd) >= BLOCK_RECORDS:
                yield lists.block()
                lists = _Lists()
        yield lists.block()


def _times(array) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, pa.Array]]:
    """(value, is a number) of each row of a text array of times, as `rows._window` reads one
    (``float`` of the stripped text); and each row's index into the distinct texts, with them."""
    encoded = array.dictionary_encode()
    texts = encoded.dictionary
    values = np.full(len(texts), math.nan)
    ok = np.zeros(len(texts), bool)
    for i, text in enumerate(texts.to_pylist()):
        try:
            values[i], ok[i] = float(text.strip()), True
        except ValueError:
            pass
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return values[codes], ok[codes], (codes, texts)


def _text_of(texts: tuple[np.ndarray, pa.Array], i: int) -> str:
    codes, values = texts
    return values[int(codes[i])].as_py().strip()


class _Classes:
    """The requested classes, and the ones each label set selects (cached over the blocks)."""

    def __init__(self, classes: list[str]) -> None:
        from s2i_data.classes import ontology, resolve_classes
        from s2i_data.sources.audioset import label_classes

        self.infos = resolve_classes(classes)
        self.by_label = label_classes(self.infos, ontology())
        self.seen: dict[str, tuple[int, ...]] = {}
        # a row's class as an index into the aliases; the last one is '' (no class: skipped)
        self.aliases = pa.array([info.alias for info in self.infos] + [""], pa.string())

    def of(self, labels: str) -> tuple[int, ...]:
        got = self.seen.get(labels)
        if got is None:
            got = tuple(sorted({i for label in labels.split(",") for i in self.by_label.get(label.strip(), ())}))
            self.seen[labels] = got
        return got


def _rows_of(block: _Block, classes: _Classes) -> pa.Table:
    """The rows of a block's records (of a requested class, or of another field count)."""
    encoded = block.labels.dictionary_encode()
    sets = [classes.of(v) for v in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    count = np.array([len(s) for s in sets] or [0], np.int64)[codes]
    keep = count > 0  # rows selecting no requested class are not part of the job
    line, codes, count = block.line[keep], codes[keep], count[keep]
    ytid, start_text, end_text = (a.filter(pa.array(keep)) for a in (block.ytid, block.start, block.end))
    n = len(line)
    start, start_ok, start_texts = _times(start_text)
    end, end_ok, end_texts = _times(end_text)
    numeric = start_ok & end_ok
    plain_id = pc.match_substring_regex(ytid, _PLAIN_ID).to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        clean = numeric & plain_id & np.isfinite(start) & np.isfinite(end) & (start >= 0) & (end > start) & (count == 1)
        # <YTID>_<start ms>_<end ms>: the cut clip's name that `build --source audioset` finds
        # (sources/audioset.py), so the downloaded tree builds with the same CSV, no --clips.
        # np.rint is Python's round() on a float (half to even) while the value fits an int64.
        ms_start, ms_end = np.rint(start * 1000), np.rint(end * 1000)
        vectorised = clean & (ms_start < 2.0**62) & (ms_end < 2.0**62)
    names = pc.binary_join_element_wise(
        ytid, pa.array(np.where(vectorised, ms_start, 0).astype(np.int64)).cast(pa.string()),
        pa.array(np.where(vectorised, ms_end, 0).astype(np.int64)).cast(pa.string()), "_")

    # the other rows one by one: a reason and its key, or a window beyond 2^62 ms
    reasons, keys = [], []
    for i in np.flatnonzero(~vectorised).tolist():
        y, ln = ytid[i].as_py(), int(line[i])
        s, e = (float(start[i]), float(end[i])) if numeric[i] else (math.nan, math.nan)
        why = _window_reason(ln, y, _text_of(start_texts, i), _text_of(end_texts, i), bool(numeric[i]), s, e)
        if not why and count[i] > 1:
            why = (f"line {ln}: labels match several requested classes: "
                   f"{', '.join(classes.infos[j].alias for j in sets[codes[i]])}")
        reasons.append(why)
        if why:
            keys.append(vggsound.stem(y, s) if math.isfinite(s) else f"{y}_line{ln}")
        else:
            keys.append(f"{y}_{round(s * 1000)}_{round(e * 1000)}")
    mask = pa.array(~vectorised)
    first_class = np.array([s[0] if s else -1 for s in sets] or [-1], np.int64)[codes]
    cls = pa.DictionaryArray.from_arrays(pa.array(np.where(clean, first_class, len(classes.infos)).astype(np.int32)),
                                         classes.aliases)
    table = pa.table({
        "line": pa.array(line, pa.int64()), "ytid": ytid.cast(pa.string()),
        "start": pa.array(np.where(numeric, start, np.nan)), "end": pa.array(np.where(numeric, end, np.nan)),
        "cls": cls, "split": pa.repeat(pa.scalar("", pa.string()), n),
        "reason": pc.replace_with_mask(pa.repeat(pa.scalar("", pa.string()), n), mask, pa.array(reasons, pa.string())),
        "key": pc.replace_with_mask(names, mask, pa.array(keys, pa.string()))})
    if block.odd:
        table = pa.concat_tables([table, _odd_rows(block.odd, classes, table.schema)])
        table = table.take(pc.sort_indices(table, [("line", "ascending")]))
    return table


def audioset_table(path: str | Path, classes: list[str] | None) -> pa.Table:
    """The rows of an AudioSet segment CSV for ``classes`` as a pyarrow Table of `COLUMNS` (``cls``
    dictionary-encoded), in line order; see `rows` for what becomes of each line."""
    if not classes:
        raise ValueError("--format audioset needs --classes (the segment CSVs list millions of rows)")
    wanted = _Classes(classes)
    try:
        try:
            tables, records = [], 0
            for block in _fast_blocks(path):
                tables.append(_rows_of(block, wanted))
                records += block.records
        except _Fallback:
            tables, records = [], 0
            for block in _csv_blocks(path):
                tables.append(_rows_of(block, wanted))
                records += block.records
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read the CSV ({e})") from None
    if not records:
        raise ValueError(f"{path}: AudioSet segment CSV has no rows")
    return pa.concat_tables([t for t in tables if t.num_rows] or tables[:1])


def _odd_rows(odd: list[tuple[int, list[str]]], classes: _Classes, schema) -> pa.Table:
    """Rows for the records that have not four fields: skipped with the count, whatever their class."""
    n = len(odd)
    return pa.table({
        "line": pa.array([ln for ln, _ in odd], pa.int64()), "ytid": pa.array([f[0] for _, f in odd], pa.string()),
        "start": pa.array([math.nan] * n, pa.float64()), "end": pa.array([math.nan] * n, pa.float64()),
        "cls": pa.DictionaryArray.from_arrays(pa.array([len(classes.infos)] * n, pa.int32()), classes.aliases),
        "split": pa.array([""] * n, pa.string()),
        "reason": pa.array([f"line {ln}: expected 4 fields (YTID, start, end, \"labels\"), got {len(f)}"
                            for ln, f in odd], pa.string()),
        "key": pa.array([f"{f[0]}_line{ln}" for ln, f in odd], pa.string())}, schema=schema)


def _window_reason(line: int, ytid: str, start_text: str, end_text: str, numeric: bool, start: float,
                   end: float) -> str:
    """`rows._window`'s reason, from the values already read."""
    if not numeric:
        return f"line {line}: start/end {start_text[:20]!r}, {end_text[:20]!r} are not numbers"
    bad = vggsound.check_ytid(ytid)
    if bad:
        return f"line {line}: {bad}"
    if not (math.isfinite(start) and math.isfinite(end)):
        return f"line {line}: start/end are not finite"
    if start < 0:
        return f"line {line}: start {start:g} s is negative"
    if end <= start:
        return f"line {line}: end {end:g} s is not after start {start:g} s"
    return ""
