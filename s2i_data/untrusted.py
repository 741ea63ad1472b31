"""The one place where values read from somebody else's files are checked before use.

Builds, run folders, labelling pools and mirrors travel between labs, so everything read from
them is hostile until it has passed a check here: a name is a plain name before it becomes part
of a path, a number is finite and in range before it sizes, normalises or positions anything, a
table has its columns with their types before a row of it is read. Readers (`readers.Build`,
the plan on disk, run folders, pools, reports) call these on what they read and hand on only
what passed; nothing else re-checks or trusts raw values.

Every failure is an `Untrusted` (a ValueError) whose message names the file and the field, so
a command prints it as its one line.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping

import numpy as np

NAME_MAX_BYTES = 200
SPLITS = ("train", "val", "test")
# bidirectional overrides and isolates make a name display as something else
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class Untrusted(ValueError):
    """A value from a shared file that breaks the contract; the message names file and field."""


def name(value, what: str) -> str:
    """``value`` when it is a plain name (a class, a key, a video id, a model or run name): a
    non-empty string of at most 200 UTF-8 bytes with no path separator, NUL, control or
    bidirectional-override character, and not ``.`` or ``..``. Anything else is refused, so that
    a name read from data can never become a path or a second line (it may start with ``-``:
    never pass one to a command as an argument of its own)."""
    if not isinstance(value, str):
        raise Untrusted(f"{what}: {type(value).__name__} {_show(value)} is not a name")
    if value in ("", ".", ".."):
        raise Untrusted(f"{what}: {value!r} is not a name")
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        raise Untrusted(f"{what}: {_show(value)} is longer than {NAME_MAX_BYTES} bytes")
    if value.isascii() and value.isprintable() and "/" not in value and "\\" not in value:
        return value  # the common case, checked in C: a manifest holds millions of names
    ch = _first_control(value, also="/\\")
    if ch is not None:
        raise Untrusted(f"{what}: {_show(value)} holds {ch!r}; a name may not hold path separators "
                        "or control characters")
    return value


def _first_control(value: str, also: str = "") -> str | None:
    """The first character of ``value`` that may not be shown as part of one line (a control,
    surrogate, line or paragraph separator or bidirectional override; or one of ``also``)."""
    for ch in value:
        if ch in also or ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            return ch
    return None


def names(values: Iterable, what: str, unique: bool = True) -> list[str]:
    out = [name(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if unique and len(set(out)) != len(out):
        dup = sorted({v for v in out if out.count(v) > 1})
        raise Untrusted(f"{what}: {_show(dup[0])} appears twice")
    return out


def number(value, what: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
           above: float | None = None) -> float | int:
    """``value`` as a finite int or float within [lo, hi] (and > ``above``); bools, strings, NaN
    and infinities are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Untrusted(f"{what}: {_show(value)} is not a number")
    if integer:
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or value != int(value):
                raise Untrusted(f"{what}: {_show(value)} is not a whole number")
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an integer of hundreds of digits, as JSON may hold
            raise Untrusted(f"{what}: {_show(value)} is not a finite number") from None
        if not math.isfinite(value):
            raise Untrusted(f"{what}: {value} is not a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above):
        rng = f"above {above:g}" if above is not None else f"in [{lo if lo is not None else '-inf'}, " \
                                                           f"{hi if hi is not None else 'inf'}]"
        raise Untrusted(f"{what}: {value} is out of range (must be {rng})")
    return value


def mapping(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise Untrusted(f"{what}: a {type(value).__name__}, not an object")
    return value


def finite_vector(value, what: str, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise Untrusted(f"{what}: not a list of {length if length is not None else 'some'} numbers")
    return [number(v, f"{what}[{i}]") for i, v in enumerate(value)]


def _show(value, most: int = 60) -> str:
    """A value as one short printable line: control characters escaped, long ones cut."""
    text = repr(value) if not isinstance(value, str) else ascii(value)
    return text if len(text) <= most else text[:most] + "…'"


def printable(text: str, most: int = 200) -> str:
    """``text`` (a file name, a reason) escaped so that it prints on one line, control
    characters and bidirectional overrides shown as escapes."""
    out = "".join(ch if ch.isprintable() and ch not in _BIDI else ascii(ch)[1:-1] for ch in str(text))
    return out if len(out) <= most else out[:most] + "…"


# --- a build's files (SPEC 2.6) ---------------------------------------------------------------

SHARD_NAME = re.compile(r"^(train|val|test)/(train|val|test)-\d{6}\.tar$")
MAX_CLASSES = 100_000
MAX_COUNT = 10**9
# What a build.json may claim; a shard reader's memory bounds follow from these (readers.Contract)
MIN_SEGMENT_SECONDS, MAX_SEGMENT_SECONDS = 0.01, 60  # a segment holds at least one 10 ms frame
MAX_IMAGE_SIZE = 4096
MAX_SAMPLE_RATE = 384_000
MEL_BINS = 128
LOGMEL_MAX = 1e6  # |log-mel| in any unit (natural log, dB) of float32 power is far below this


def shard_name(value, what: str = "shard name") -> str:
    """``value`` when it is a shard name of the contract (``train/train-000000.tar``)."""
    m = SHARD_NAME.fullmatch(value) if isinstance(value, str) else None  # fullmatch: "$" allows a final \n
    if not m or m.group(1) != m.group(2):
        raise Untrusted(f"{what} {_show(value)} is not of the form split/split-NNNNNN.tar; refusing to use it")
    return value


def build_settings(build_json, where: str) -> dict:
    """build.json: the settings every reader relies on (segment, rate, picture size) in range."""
    cfg = mapping(mapping(build_json, where).get("config"), f"{where}: config")
    number(cfg.get("segment_seconds"), f"{where}: config.segment_seconds", lo=MIN_SEGMENT_SECONDS,
           hi=MAX_SEGMENT_SECONDS)
    number(cfg.get("image_size"), f"{where}: config.image_size", lo=8, hi=MAX_IMAGE_SIZE, integer=True)
    number(cfg.get("sample_rate", 16000), f"{where}: config.sample_rate", lo=8000, hi=MAX_SAMPLE_RATE, integer=True)
    if "factors" in build_json:  # a build of within-class factors (issue 28)
        build_factors(build_json["factors"], f"{where}: factors")
    fp = build_json.get("fingerprint")
    if fp is not None and not (isinstance(fp, str) and re.fullmatch(r"[0-9a-zA-Z]{1,128}", fp)):
        raise Untrusted(f"{where}: fingerprint {_show(fp)} is not a hex digest")
    return build_json


def build_stats(stats, where: str) -> dict:
    """stats.json: classes are names, counts whole numbers, shard names of the contract, and the
    train log-mel statistics finite with a range a normaliser can divide by."""
    stats = mapping(stats, where)
    classes = stats.get("classes")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise Untrusted(f"{where}: classes is not a list of 1 to {MAX_CLASSES} names")
    names(classes, f"{where}: classes")
    counts = mapping(stats.get("counts"), f"{where}: counts")
    if sorted(counts) != sorted(SPLITS):
        raise Untrusted(f"{where}: counts has splits {_show(sorted(map(str, counts)))}, not train, val and test")
    for split, per in counts.items():
        if split not in SPLITS:
            raise Untrusted(f"{where}: counts has split {_show(split)}")
        for cls, n in mapping(per, f"{where}: counts.{split}").items():
            if cls not in classes:
                raise Untrusted(f"{where}: counts.{split} names class {_show(cls)}, which is not in classes")
            number(n, f"{where}: counts.{split}.{cls}", lo=0, hi=MAX_COUNT, integer=True)
    if "samples" in stats:
        number(stats["samples"], f"{where}: samples", lo=0, hi=MAX_COUNT, integer=True)
    shards = mapping(stats.get("shards", {}), f"{where}: shards")
    for split, listed in shards.items():
        if split not in SPLITS or not isinstance(listed, list):
            raise Untrusted(f"{where}: shards.{_show(split)} is not a list of a split's shards")
        for n in listed:
            if shard_name(n, f"{where}: shards.{split}:").split("/")[0] != split:
                raise Untrusted(f"{where}: shard {_show(n)} is listed under {split!r}")
    pending = stats.get("pending_shards", [])
    if not isinstance(pending, list):
        raise Untrusted(f"{where}: pending_shards is not a list")
    for n in pending:
        shard_name(n, f"{where}: pending_shards:")
    for flag in ("complete", "balanced"):
        if flag in stats and not isinstance(stats[flag], bool):
            raise Untrusted(f"{where}: {flag} is {_show(stats[flag])}, not true or false")
    logmel_stats(stats.get("train_logmel", {"count": 0}), f"{where}: train_logmel", MEL_BINS)
    return stats


def logmel_stats(tl, what: str, bins: int | None = None) -> dict:
    """The train log-mel statistics a normaliser is made from: finite, std not negative, and a
    0.1-99.9 percentile range that is not empty (min-max scaling divides by it)."""
    tl = mapping(tl, what)
    count = number(tl.get("count", 0), f"{what}.count", lo=0, hi=MAX_COUNT * 1000, integer=True)
    if not count:
        return tl
    for key in ("mean", "std"):
        vec = finite_vector(tl.get(key), f"{what}.{key}", bins)
        if key == "std" and min(vec, default=0) < 0:
            raise Untrusted(f"{what}.std holds a negative value")
        if max(map(abs, vec), default=0) > LOGMEL_MAX:
            raise Untrusted(f"{what}.{key} holds a value beyond ±{LOGMEL_MAX:g}")
    for key in ("global_mean", "global_std", "min", "max", "p0.1", "p1", "p50", "p99", "p99.9"):
        if key in tl:
            number(tl[key], f"{what}.{key}", lo=-LOGMEL_MAX, hi=LOGMEL_MAX)
    lo, hi = number(tl.get("p0.1"), f"{what}.p0.1"), number(tl.get("p99.9"), f"{what}.p99.9")
    if not hi > lo:
        raise Untrusted(f"{what}: p99.9 ({hi}) is not above p0.1 ({lo}); a normaliser cannot scale by that range")
    if "min" in tl and "max" in tl and tl["min"] > tl["max"]:
        raise Untrusted(f"{what}: min is above max")
    if tl.get("global_std", 0) < 0:
        raise Untrusted(f"{what}.global_std is negative")
    return tl


SAMPLE_COLUMNS = ("key", "split", "shard", "class", "class_index", "video_id", "segment_index", "start_s",
                  "end_s", "source")


def samples_table(df, where: str, classes: list[str], segment_seconds: float | None = None):
    """A table of samples (manifest.parquet, ``_build/plan.parquet``): every column of the
    contract, keys and video ids plain names without dots, splits and shards of the contract,
    classes of the build with their own index, times finite and not negative."""
    import pandas as pd

    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise Untrusted(f"{where}: lacks column(s) {', '.join(missing)}")
    for col in ("key", "video_id"):
        for i, (v,) in _distinct(df, [col]):
            name(v, f"{where}: row {i} {col}")
            if col == "key" and "." in v:
                raise Untrusted(f"{where}: row {i} key {_show(v)} holds a dot (webdataset splits members there)")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        i = int(bad_split.to_numpy().argmax())
        raise Untrusted(f"{where}: row {i} split {_show(df['split'].iloc[i])} is not train, val or test")
    for i, (sh, sp) in _distinct(df, ["shard", "split"]):
        if shard_name(sh, f"{where}: row {i} shard").split("/")[0] != sp:
            raise Untrusted(f"{where}: row {i} shard {_show(sh)} is not in its split {sp!r}")
    index = {c: i for i, c in enumerate(classes)}
    for i, (c, ci) in _distinct(df, ["class", "class_index"]):
        if not isinstance(c, str) or c not in index:
            raise Untrusted(f"{where}: row {i} class {_show(c)} is not a class of this build")
        if number(ci, f"{where}: row {i} class_index", lo=0, integer=True) != index[c]:
            raise Untrusted(f"{where}: row {i} class_index {ci} is not {c!r}'s ({index[c]})")
    for col in ("start_s", "end_s", "segment_index"):
        if not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            raise Untrusted(f"{where}: column {col} holds {df[col].dtype}, not numbers")
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values > 1e7)
        if bad.any():
            i = int(bad.argmax())
            raise Untrusted(f"{where}: row {i} {col} {_show(df[col].iloc[i])} is not a finite time or index >= 0")
    if segment_seconds is not None and len(df):
        span = df["end_s"].to_numpy(np.float64) - df["start_s"].to_numpy(np.float64)
        off = np.abs(span - segment_seconds) > 1e-3
        if off.any():
            i = int(off.argmax())
            raise Untrusted(f"{where}: row {i} spans {span[i]:g} s, the build's segments {segment_seconds:g} s")
    for i, (s,) in _distinct(df, ["source"]):
        if not isinstance(s, str) or not s or "\0" in s or len(s) > 4096:
            raise Untrusted(f"{where}: row {i} source {_show(s)} is not a file name")
    return df


# --- live and imagine: sound samples and the names shown for them ------------------------------

PATH_SHOWN_MAX = 4096  # PATH_MAX: a path printed as a result is shown whole, never cut
SAMPLE_MAX = 1e4  # 80 dB over full scale: the log-mel of a frame stays far from float32's overflow


def path_shown(path) -> str:
    """A file name or path (or a stream's name) as one printable line, whole: a newline or control
    character in it is escaped, so a hostile name cannot forge a second line of output, and a
    name that is not UTF-8 prints instead of failing to encode."""
    import os

    return printable(os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path), most=PATH_SHOWN_MAX)


def audio_samples(chunk) -> tuple[np.ndarray, int]:
    """(float32 samples, how many were NaN or infinite): a decoder hands those on from a float
    file as they are, and they would make every loudness, log-mel and picture of their window NaN;
    they are read as silence (0). Finite samples beyond ±`SAMPLE_MAX` are clipped there."""
    x = np.asarray(chunk, np.float32).ravel()
    if x.size == 0 or float(np.max(np.abs(x))) <= SAMPLE_MAX:  # NaN fails the comparison: checked below
        return x, 0
    bad = ~np.isfinite(x)
    x = np.clip(np.where(bad, np.float32(0), x), -SAMPLE_MAX, SAMPLE_MAX).astype(np.float32)
    return x, int(bad.sum())


# --- a download's record (s2i_data/download: download.parquet and its journal) ----------------

MAX_ATTEMPTS = 1e9


def download_record(rec, where: str) -> dict:
    """A row of ``download.parquet`` or of its journal as the next run reads it: text ``key`` and
    ``status``, and ``attempts`` a whole number >= 0 (missing: 0). The other fields are only shown
    or written back; keys are matched against the CSV's rows, never used as paths."""
    rec = dict(mapping(rec, where))
    for field in ("key", "status"):
        if not isinstance(rec.get(field), str):
            raise Untrusted(f"{where}: {field} {_show(rec.get(field))} is not text")
    attempts = rec.get("attempts")
    rec["attempts"] = 0 if attempts is None else number(attempts, f"{where}: {_show(rec['key'])} attempts", lo=0,
                                                        hi=MAX_ATTEMPTS, integer=True)
    return rec


def parquet_value(value):
    """A cell of a table read with pandas as a plain Python value: NaN (a missing number or text)
    is None, a numpy scalar its Python value."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def download_table(table, where: str):
    """The rows of a table of the download's record (a pyarrow Table read from parquet) as
    `download_record` reads them one by one, checked a column at a time: ``(key, status,
    attempts)`` as pyarrow arrays (text, text, int64). A row that a column's type or value puts in
    doubt is read as the row-by-row reader reads it (pandas, `parquet_value`) and passed to
    `download_record`, in row order: the first bad row stops it with that row's line
    (``<where>: row <i>: ...``), and a doubtful row that passes (a null read as 0 attempts) keeps
    the values `download_record` gave it. At two million rows this is the difference between
    seconds and minutes, and gigabytes of dicts."""
    import pyarrow as pa

    n = table.num_rows
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.int64())
    key, key_doubt = _text_column(table, "key")
    status, status_doubt = _text_column(table, "status")
    attempts, attempts_doubt = _attempts_column(table)
    doubt = key_doubt | status_doubt | attempts_doubt
    if not doubt.any():
        return key, status, attempts
    rows = np.flatnonzero(doubt)
    frame = table.select([c for c in ("key", "status", "attempts") if c in table.column_names]).to_pandas()
    passed = {}
    for first in range(0, len(rows), 10_000):  # a hostile column of two million odd cells: in pieces
        chunk = rows[first:first + 10_000]
        for i, rec in zip(chunk.tolist(), frame.iloc[chunk].to_dict("records")):
            passed[i] = download_record({k: parquet_value(v) for k, v in rec.items()}, f"{where}: row {i}")

    def patched(array, field: str, type_):
        values = array.to_pylist() if array is not None else [None] * n
        for i, rec in passed.items():
            values[i] = rec[field]
        return pa.array(values, type_)

    return patched(key, "key", pa.string()), patched(status, "status", pa.string()), \
        patched(attempts, "attempts", pa.int64())


def is_text_type(t) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    view = getattr(pa.types, "is_string_view", None)  # pyarrow >= 16
    return pa.types.is_string(t) or pa.types.is_large_string(t) or bool(view and view(t))


def _text_column(table, field: str):
    """(the column as text, rows in doubt): a text column's nulls; every row of any other column
    (pandas reads no other type as str)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if field not in table.column_names or not is_text_type(table.column(field).type):
        return None, np.ones(n, bool)
    column = table.column(field).cast(pa.string()).combine_chunks()
    return column, pc.is_null(column).to_numpy(zero_copy_only=False)


def _attempts_column(table):
    """(attempts as int64, rows in doubt): a whole number in [0, 1e9]; a missing one (no column,
    a null, a NaN) is 0. Integers and floats are checked here; any other type is in doubt row by
    row (a bool, a text, a decimal is refused there; a null of such a column passes as 0)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if "attempts" not in table.column_names or pa.types.is_null(table.column("attempts").type):
        return pa.array(np.zeros(n, np.int64)), np.zeros(n, bool)
    column = table.column("attempts").combine_chunks()
    t = column.type
    if pa.types.is_integer(t):
        x = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)  # a null is read as missing: 0
        doubt = (x < 0) | (x > MAX_ATTEMPTS)
        return pa.array(np.where(doubt, 0, x).astype(np.int64)), doubt
    if pa.types.is_floating(t):
        try:
            x = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # null → NaN: read as missing
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None, np.ones(n, bool)
        with np.errstate(invalid="ignore"):
            doubt = ~np.isnan(x) & (~np.isfinite(x) | (x != np.floor(x)) | (x < 0) | (x > MAX_ATTEMPTS))
        values = np.where(np.isnan(x) | doubt, 0, x).astype(np.int64)
        return pa.array(values), doubt
    return None, np.ones(n, bool)


# --- run folders, reports and labelling pools (s2i_model: evaluate/report.py, labelling/) -----

MAX_EVALUATION_BYTES = 64 << 20  # evaluation.json: a few KB a class
MAX_METRICS_BYTES = 256 << 20  # metrics.jsonl: a row an epoch; 4000 epochs with informativity per class are a few MB
MAX_SMALL_JSON_BYTES = 1 << 20  # reference.json
MAX_POOL_BYTES = 256 << 20  # pool.csv, labels.csv, pool.json
MAX_EPOCH = 10**7
MAX_EVALUATED_CLASSES = 1000  # a report draws a bar and a column per class (VGGSound: 309, AudioSet: 527)
RATIOS = ("informativity", "class_agreement", "class_agreement_full", "frame_r1", "frame_r5")
LEGACY_RATIOS = {"retrieval_r1": "frame_r1", "retrieval_r5": "frame_r5"}  # their names before issue 27
MAX_REPLICATES = 10_000
MAX_FOLDS = 1000


def capped_read(path, limit: int, what: str | None = None) -> bytes:
    """A shared file's bytes, refused when it holds more than ``limit``: nothing read from a run
    or pool can fill the memory, whatever it is (a huge file). A link left in the file's place
    (to /dev/zero, to a file elsewhere), a FIFO or a device is refused in one line, never followed
    or waited on (`storage.open_regular`); FileNotFoundError when there is nothing."""
    from s2i_data import storage

    try:
        f = storage.open_regular(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise Untrusted(f"{e}; a shared file must be a regular file of its own") from None
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Untrusted(f"{what or path}: more than {limit >> 20} MB; refusing to read it")
    return data


def json_value(data: bytes, where: str):
    """JSON from a shared file; nesting too deep to parse is refused like any malformed file."""
    import json

    try:
        return json.loads(data)
    except RecursionError:
        raise Untrusted(f"{where}: nested too deeply to be ours") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise Untrusted(f"{where}: not JSON ({str(e).splitlines()[0]})") from None


def text(value, what: str, most: int = 4096) -> str:
    """``value`` when it is a line of text to show (a build location, a path, a description): a
    string of at most ``most`` characters without control or bidirectional-override characters."""
    if not isinstance(value, str):
        raise Untrusted(f"{what}: {_show(value)} is not text")
    if len(value) > most:
        raise Untrusted(f"{what}: {_show(value)} is longer than {most} characters")
    ch = _first_control(value)
    if ch is not None:
        raise Untrusted(f"{what}: {_show(value)} holds {ch!r}")
    return value


def _optional(value, check, *args, **kw):
    return None if value is None else check(value, *args, **kw)


def _ratio(value, what: str):
    return _optional(value, number, what, lo=0, hi=1)


def _epochs(value, what: str) -> list[int]:
    if not isinstance(value, list) or len(value) != 2:
        raise Untrusted(f"{what}: not a [first, last] pair of epochs")
    return [number(v, f"{what}[{i}]", lo=0, hi=MAX_EPOCH, integer=True) for i, v in enumerate(value)]


def _required(obj: Mapping, key: str, where: str):
    if key not in obj:
        raise Untrusted(f"{where}: lacks {key}")
    return obj[key]


def _metric_row(row, what: str, counts: bool) -> dict:
    """A per-class or mean row of evaluation.json: ratios in [0, 1], diversity >= 0, counts whole."""
    row = mapping(row, what)
    row = {LEGACY_RATIOS.get(k, k): v for k, v in row.items()}
    out = {k: _ratio(row.get(k), f"{what}.{k}") for k in RATIOS if k in row}
    if "diversity" in row:
        out["diversity"] = _optional(row["diversity"], number, f"{what}.diversity", lo=0)
    if counts:
        for k in ("sounds", "images"):
            if k in row:
                out[k] = number(row[k], f"{what}.{k}", lo=0, hi=MAX_COUNT * 1000, integer=True)
    return out


def evaluation(ev, where: str) -> dict:
    """RUN/evaluation.json as a report may use it: the fields `evaluate` writes, each checked
    (names plain, numbers finite and in range, texts one line); a field it does not know is left
    out, and ``run`` and ``grid`` are not trusted as paths (the report uses the folder it found
    the file in, and the grid by its fixed name)."""
    ev = mapping(ev, where)
    classes = _required(ev, "classes", where)
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_EVALUATED_CLASSES:
        raise Untrusted(f"{where}: classes is not a list of 1 to {MAX_EVALUATED_CLASSES} names")
    classes = names(classes, f"{where}: classes")
    per_class = {}
    for cls, row in mapping(_required(ev, "per_class", where), f"{where}: per_class").items():
        if cls not in classes:
            raise Untrusted(f"{where}: per_class names {_show(cls)}, which is not in classes")
        per_class[cls] = _metric_row(row, f"{where}: per_class.{cls}", counts=True)
    proxies = mapping(_required(ev, "proxies", where), f"{where}: proxies")
    out_proxies = {k: number(_required(proxies, k, f"{where}: proxies"), f"{where}: proxies.{k}")
                   for k in ("frechet_distance", "kernel_distance")}
    if "fid_inception" in proxies:
        out_proxies["fid_inception"] = number(proxies["fid_inception"], f"{where}: proxies.fid_inception")
    if "feature_space" in proxies:
        out_proxies["feature_space"] = text(proxies["feature_space"], f"{where}: proxies.feature_space", 200)
    training = mapping(_required(ev, "training", where), f"{where}: training")
    hist = training.get("informativity_history")
    if hist is not None:
        hist = mapping(hist, f"{where}: training.informativity_history")
        hw = f"{where}: training.informativity_history"
        hist = {"mean": number(hist.get("mean"), f"{hw}.mean", lo=0, hi=1),
                "mean_epochs": _epochs(hist.get("mean_epochs"), f"{hw}.mean_epochs"),
                "best_moving_average": number(hist.get("best_moving_average"), f"{hw}.best_moving_average", lo=0, hi=1),
                "best_window": _epochs(hist.get("best_window"), f"{hw}.best_window"),
                "window": number(hist.get("window"), f"{hw}.window", lo=1, hi=MAX_EPOCH, integer=True),
                "best_moving_average_by_val": _optional(hist.get("best_moving_average_by_val"), number,
                                                        f"{hw}.best_moving_average_by_val", lo=0, hi=1),
                "best_window_by_val": _optional(hist.get("best_window_by_val"), _epochs, f"{hw}.best_window_by_val")}
    sep = mapping(ev.get("embedding_separability") or {}, f"{where}: embedding_separability")
    split = _required(ev, "split", where)
    if split not in SPLITS:
        raise Untrusted(f"{where}: split {_show(split)} is not train, val or test")
    return {
        "data": text(_required(ev, "data", where), f"{where}: data"),
        "split": split,
        "samples_per_sound": number(_required(ev, "samples_per_sound", where), f"{where}: samples_per_sound",
                                    lo=1, hi=10_000, integer=True),
        "model": _optional(ev.get("model"), name, f"{where}: model"),
        "emb": _optional(ev.get("emb"), number, f"{where}: emb", lo=1, hi=1 << 20, integer=True),
        "width": _optional(ev.get("width"), number, f"{where}: width", above=0, hi=1024),
        "epoch": _optional(ev.get("epoch"), number, f"{where}: epoch", lo=0, hi=MAX_EPOCH, integer=True),
        "classes": classes, "per_class": per_class,
        "mean": _metric_row(_required(ev, "mean", where), f"{where}: mean", counts=False),
        "proxies": out_proxies,
        "embedding_separability": {k: _ratio(sep.get(k), f"{where}: embedding_separability.{k}")
                                   for k in ("centroid", "nn1")},
        "informativity_judges": _optional(ev.get("informativity_judges"), text, f"{where}: informativity_judges"),
        "informativity_pool": _optional(ev.get("informativity_pool"), _name_list, f"{where}: informativity_pool"),
        "training": {"pixel_loss_ma50": _optional(training.get("pixel_loss_ma50"), number,
                                                  f"{where}: training.pixel_loss_ma50", lo=0),
                     "informativity_history": hist},
        "grid": _optional(ev.get("grid"), name, f"{where}: grid"),
        "ident": _ident(ev.get("ident"), f"{where}: ident"),
        "training_seed": _optional(ev.get("training_seed"), number, f"{where}: training_seed", lo=0, hi=2**63,
                                   integer=True),
        "judge": _judge_record(ev.get("judge"), f"{where}: judge", classes),
        "intervals": _intervals(ev.get("intervals"), f"{where}: intervals", classes),
        "replicates": _replicates(ev.get("replicates"), f"{where}: replicates", classes),
        "factors": _factor_block(ev.get("factors"), f"{where}: factors", classes, ev.get("replicates")),
    }


def _name_list(value, what: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_EVALUATED_CLASSES:
        raise Untrusted(f"{what}: not a list of at most {MAX_EVALUATED_CLASSES} names")
    return names(value, what)


_MEASURES = RATIOS + ("diversity", "frechet_distance", "kernel_distance")
_PARTS = ("mean", "proxies", "per_class")


def _pair(value, what: str) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise Untrusted(f"{what}: not a [low, high] pair")
    lo, hi = (number(v, f"{what}[{i}]") for i, v in enumerate(value))
    if lo > hi:
        raise Untrusted(f"{what}: low {lo} is above high {hi}")
    return [lo, hi]


def _by_measure(value, what: str, check) -> dict:
    """``{measure: check(value)}`` for the measures evaluation.json knows; others are left out."""
    value = mapping(value, what)
    return {k: check(v, f"{what}.{k}") for k, v in value.items() if k in _MEASURES}


def _by_part(value, what: str, classes: list[str], check) -> dict | None:
    """evaluation.json's ``intervals`` or ``replicates``: per part (mean, proxies, per_class) a
    value per measure, checked by ``check``."""
    if value is None:
        return None
    value = mapping(value, what)
    out = {p: _by_measure(value.get(p) or {}, f"{what}.{p}", check) for p in ("mean", "proxies")}
    per_class = mapping(value.get("per_class") or {}, f"{what}.per_class")
    for cls in per_class:
        if cls not in classes:
            raise Untrusted(f"{what}.per_class names {_show(cls)}, which is not in classes")
    out["per_class"] = {c: _by_measure(v, f"{what}.per_class.{c}", check) for c, v in per_class.items()}
    return out


def _intervals(value, what: str, classes: list[str]) -> dict | None:
    out = _by_part(value, what, classes, _pair)
    if out is not None:
        value = mapping(value, what)
        out["videos"] = _optional(value.get("videos"), number, f"{what}.videos", lo=0, hi=MAX_COUNT, integer=True)
        out["replicates"] = _optional(value.get("replicates"), number, f"{what}.replicates", lo=0,
                                      hi=MAX_REPLICATES, integer=True)
    return out


def _replicate_list(value, what: str) -> list:
    if not isinstance(value, list) or len(value) > MAX_REPLICATES:
        raise Untrusted(f"{what}: not a list of at most {MAX_REPLICATES} replicates")
    return [_optional(v, number, f"{what}[{i}]") for i, v in enumerate(value)]


def _replicates(value, what: str, classes: list[str]) -> dict | None:
    out = _by_part(value, what, classes, _replicate_list)
    if out is not None:
        lengths = {len(v) for part in ("mean", "proxies") for v in out[part].values()}
        lengths |= {len(v) for m in out["per_class"].values() for v in m.values()}
        factors = mapping(value, what).get("factors")
        if factors is not None:  # issue 28: factor agreement's replicates
            out["factors"] = _factor_replicates(factors, f"{what}.factors")
            lengths |= {len(out["factors"]["mean"])}
            lengths |= {len(v) for m in out["factors"]["per_factor"].values() for v in m.values()}
        if len(lengths) > 1:
            raise Untrusted(f"{what}: replicate lists of different lengths {sorted(lengths)}")
    return out


# issue 28: factor agreement (s2i_model/evaluate/factors.py): per within-class factor a Spearman
# correlation in [-1, 1] (and a counted factor's accuracy in [0, 1]), their mean, intervals, and
# the factor readers' held-out quality
MAX_EVALUATED_FACTORS = 1000
FACTOR_KINDS = ("continuous", "count")


def _correlation(value, what: str):
    return _optional(value, number, what, lo=-1, hi=1)


def _bounded_pair(value, what: str, lo: float, hi: float) -> list[float] | None:
    pair = _pair(value, what)
    if pair is not None and (pair[0] < lo or pair[1] > hi):
        raise Untrusted(f"{what}: {pair} is not within [{lo:g}, {hi:g}]")
    return pair


def _factor_names(value, what: str) -> Mapping:
    """``{factor name: entry}``: at most `MAX_EVALUATED_FACTORS`, every name a plain name."""
    value = mapping(value, what)
    if len(value) > MAX_EVALUATED_FACTORS:
        raise Untrusted(f"{what}: more than {MAX_EVALUATED_FACTORS} factors")
    for k in value:
        name(k, f"{what} name")
    return value


def _factor_kind(value, what: str) -> str:
    if value not in FACTOR_KINDS:
        raise Untrusted(f"{what}: {_show(value)} is not one of {', '.join(FACTOR_KINDS)}")
    return value


def _factor_class(value, what: str, classes: list[str]) -> str:
    if name(value, what) not in classes:
        raise Untrusted(f"{what}: {_show(value)} is not in classes")
    return value


def _factor_block(value, what: str, classes: list[str], replicates) -> dict | None:
    """evaluation.json's ``factors``: ``mean`` (factor agreement, in [-1, 1] or null) and its
    ``interval``; ``per_factor``, per factor its class (one of ``classes``), kind, sounds, Spearman
    and interval (a counted factor also its accuracy and interval, in [0, 1]); ``readers``, how the
    factor readers were fitted and how well they read the val frames. The names of
    ``replicates.factors`` must be factors of this block."""
    if value is None:
        return None
    value = mapping(value, what)
    per_factor = {}
    for f, entry in _factor_names(_required(value, "per_factor", what), f"{what}.per_factor").items():
        w = f"{what}.per_factor.{f}"
        entry = mapping(entry, w)
        kind = _factor_kind(entry.get("kind"), f"{w}.kind")
        row = {"class": _factor_class(entry.get("class"), f"{w}.class", classes), "kind": kind,
               "sounds": number(entry.get("sounds"), f"{w}.sounds", lo=0, hi=MAX_COUNT, integer=True),
               "spearman": number(entry.get("spearman"), f"{w}.spearman", lo=-1, hi=1),
               "interval": _bounded_pair(entry.get("interval"), f"{w}.interval", -1, 1)}
        if kind == "count":
            row["accuracy"] = _ratio(entry.get("accuracy"), f"{w}.accuracy")
            row["accuracy_interval"] = _bounded_pair(entry.get("accuracy_interval"), f"{w}.accuracy_interval", 0, 1)
        per_factor[f] = row
    readers = mapping(value.get("readers") or {}, f"{what}.readers")
    checked = {}
    for f, entry in _factor_names(readers.get("per_factor") or {}, f"{what}.readers.per_factor").items():
        w = f"{what}.readers.per_factor.{f}"
        entry = mapping(entry, w)
        kind = _factor_kind(entry.get("kind"), f"{w}.kind")
        checked[f] = {"class": _factor_class(entry.get("class"), f"{w}.class", classes), "kind": kind,
                      **{k: number(entry.get(k), f"{w}.{k}", lo=0, hi=MAX_COUNT, integer=True)
                         for k in ("train_frames", "val_frames")},
                      "val_spearman": _correlation(entry.get("val_spearman"), f"{w}.val_spearman")}
        if kind == "count":
            checked[f]["val_accuracy"] = _ratio(entry.get("val_accuracy"), f"{w}.val_accuracy")
    out_readers = {"per_factor": checked}
    for k in ("trained_on", "checked_on"):
        if k in readers:
            out_readers[k] = text(readers[k], f"{what}.readers.{k}", 300)
    for k in ("epochs", "batch"):
        if k in readers:
            out_readers[k] = number(readers[k], f"{what}.readers.{k}", lo=0, hi=MAX_EPOCH, integer=True)
    if "seed" in readers:
        out_readers["seed"] = number(readers["seed"], f"{what}.readers.seed", lo=0, hi=2**63, integer=True)
    if "alpha" in readers:
        out_readers["alpha"] = number(readers["alpha"], f"{what}.readers.alpha", lo=0, hi=1e6)
    if "reader" in readers:
        out_readers["reader"] = text(readers["reader"], f"{what}.readers.reader", 100)
    reps = replicates.get("factors") if isinstance(replicates, Mapping) else None
    if isinstance(reps, Mapping):  # its shape checked by `_replicates`; its names must be factors of this block
        for f in reps.get("per_factor") or {}:
            if f not in per_factor:
                raise Untrusted(f"{what}: replicates.factors.per_factor names {_show(f)}, which is not in per_factor")
    return {"mean": _correlation(value.get("mean"), f"{what}.mean"),
            "interval": _bounded_pair(value.get("interval"), f"{what}.interval", -1, 1),
            "per_factor": per_factor, "readers": out_readers}


def _factor_replicates(value, what: str) -> dict:
    """``replicates.factors``: the mean's replicates and, per factor, its Spearman's (in [-1, 1])
    and a counted factor's accuracy's (in [0, 1])."""
    value = mapping(value, what)
    mean = _replicate_list(value.get("mean"), f"{what}.mean")
    for i, v in enumerate(mean):
        _correlation(v, f"{what}.mean[{i}]")
    per_factor = {}
    for f, entry in _factor_names(value.get("per_factor") or {}, f"{what}.per_factor").items():
        entry = mapping(entry, f"{what}.per_factor.{f}")
        row = {}
        for k, lo in (("spearman", -1), ("accuracy", 0)):
            if k in entry:
                row[k] = _replicate_list(entry[k], f"{what}.per_factor.{f}.{k}")
                for i, v in enumerate(row[k]):
                    _optional(v, number, f"{what}.per_factor.{f}.{k}[{i}]", lo=lo, hi=1)
        per_factor[f] = row
    return {"mean": mean, "per_factor": per_factor}


def _judge_record(value, what: str, classes: list[str]) -> dict | None:
    """The cross-fitted judges an evaluation used: their folds and held-out accuracies."""
    if value is None:
        return None
    value = mapping(value, what)
    out = {"folds": number(value.get("folds"), f"{what}.folds", lo=1, hi=MAX_FOLDS, integer=True),
           "headline": name(value.get("headline"), f"{what}.headline"),
           "trained_on": text(value.get("trained_on"), f"{what}.trained_on", 300)}
    for kind in ("blurred", "full"):
        if kind in value:
            j = mapping(value[kind], f"{what}.{kind}")
            per_class = mapping(j.get("per_class") or {}, f"{what}.{kind}.per_class")
            for cls in per_class:
                if cls not in classes:
                    raise Untrusted(f"{what}.{kind}.per_class names {_show(cls)}, which is not in classes")
            out[kind] = {"blur": number(j.get("blur"), f"{what}.{kind}.blur", lo=1, hi=64, integer=True),
                         "held_out_accuracy": _ratio(j.get("held_out_accuracy"), f"{what}.{kind}.held_out_accuracy"),
                         "per_class": {c: _ratio(v, f"{what}.{kind}.per_class.{c}") for c, v in per_class.items()}}
    if out["headline"] not in out:
        raise Untrusted(f"{what}.headline {_show(out['headline'])} is not one of its judges")
    return out


def _ident(ident, what: str) -> dict:
    """What an evaluation was made with, as far as a report compares it (seed and the judges' files)."""
    conf = mapping(mapping(ident or {}, what).get("config") or {}, f"{what}.config")
    out = {"seed": _optional(conf.get("seed"), number, f"{what}.config.seed", lo=0, hi=2**63, integer=True)}
    for k in ("proxy_cache", "informativity", "fid_weights"):
        out[k] = _optional(conf.get(k), text, f"{what}.config.{k}")
    return {"config": out}


REFERENCE_KINDS = ("chance", "lookup", "nearest-sound", "nearest-image", "shuffled", "real")  # s2i_model.models.REFERENCES
OLD_REFERENCE_KINDS = {"retrieval": "nearest-sound"}  # an earlier name of a kind: what it means now


def reference(record, where: str) -> dict:
    """RUN/reference.json (a reference row of s2i_model/evaluate/reference.py): its kind (an
    earlier name read as the kind it names now), the build and the run it names as one-line texts,
    its build record an object, and a lookup row's classifier (its description, its train and test
    sound counts, its test accuracy in [0, 1] or null). Returns a copy with the kind's name of now."""
    record = dict(mapping(record, where))
    kind = record.get("model")
    kind = OLD_REFERENCE_KINDS.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in REFERENCE_KINDS:
        raise Untrusted(f"{where}: model {_show(record.get('model'))} is not one of {', '.join(REFERENCE_KINDS)}")
    record["model"] = kind
    text(record.get("data"), f"{where}: data")
    if record.get("build") is not None:
        mapping(record["build"], f"{where}: build")
    if kind in ("nearest-sound", "nearest-image"):
        text(record.get("space"), f"{where}: space")
        name(record.get("space_model"), f"{where}: space_model")
    if kind == "lookup":
        clf = mapping(record.get("classifier"), f"{where}: classifier")
        text(clf.get("kind"), f"{where}: classifier.kind", most=200)
        for k in ("train_sounds", "test_sounds"):
            number(clf.get(k), f"{where}: classifier.{k}", lo=0, hi=MAX_COUNT, integer=True)
        _ratio(clf.get("test_accuracy"), f"{where}: classifier.test_accuracy")
    return record


def metrics_rows(data: str, where: str) -> list[dict]:
    """RUN/metrics.jsonl: each row checked (`metrics_row`, then a stage that is a plain name and
    seconds and samples not negative) and cut to the fields readers use (stage, epoch, seconds,
    samples, pixel_loss, d_updates, informativity). A line that is not JSON (a torn last line from a
    killed run) is skipped; a resumed run's epoch logged twice counts once, its last row. Rows in
    file order of their last appearance; a row is named ``{where} line N``."""
    import json

    rows: dict = {}
    for i, line in enumerate(data.split("\n"), 1):
        try:
            row = json.loads(line)
        except RecursionError:
            raise Untrusted(f"{where} line {i}: nested too deeply to be ours") from None
        except ValueError:
            continue
        what = f"{where} line {i}"
        row = metrics_row(row, what)
        out = {"stage": name(row["stage"], f"{what}: stage"), "epoch": int(row["epoch"])}
        for k, whole in (("seconds", False), ("samples", True)):
            if k in row:
                out[k] = number(row[k], f"{what}: {k}", lo=0, integer=whole)
        if "pixel_loss" in row:
            out["pixel_loss"] = float(row["pixel_loss"])
        if "d_updates" in row:
            out["d_updates"] = int(row["d_updates"])
        for key in ("informativity", "informativity_val"):
            if key in row:
                info = row[key]
                ratio = lambda v: None if v is None else float(v)  # noqa: E731 (checked by metrics_row)
                out[key] = {"mean": ratio(info.get("mean")),
                            "per_class": {c: ratio(v) for c, v in info.get("per_class", {}).items()}}
        rows.pop((out["stage"], out["epoch"]), None)
        rows[(out["stage"], out["epoch"])] = out
    return list(rows.values())


IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def image_type(data: bytes) -> str | None:
    """The type of a picture by its content (PNG or JPEG, the only ones this project makes), None
    for anything else whatever its name says."""
    return next((t for magic, t in IMAGE_TYPES if data.startswith(magic)), None)


POOL_FILE = re.compile(r"images/([^/]+)/([^/]+)\.png")
MAX_POOL_RUNS = 10_000  # runs a pool, or the pool of a judges' file, names
MODEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # a registered model's name (s2i_model.models._NAME)


def model_name(value, what: str) -> str:
    """``value`` when it can be a model's name in the registry: lower-case a-z, 0-9, ``-``, ``_``,
    at most 40 characters, so that it is no path and no markup wherever it is shown."""
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise Untrusted(f"{what}: {_show(value)} is not a model name (a-z, 0-9, -, _)")
    return value


def pool_rows(rows: list[dict], where: str) -> list[dict]:
    """POOL/pool.csv rows: ids, classes and keys plain names, ids unique, sample a whole number,
    and the file ``images/<class>/<name>.png`` made of plain names, so that it stays inside the pool.
    A pool's rows since issue 27 also name the ``run`` that drew the picture and its ``model``
    (plain names; the id starts with ``<run>.``, and one run is of one model throughout); an
    older pool's rows have neither column: pictures of runs the pool does not name."""
    seen: set[str] = set()
    models: dict[str, str] = {}
    for n, r in enumerate(rows, 2):
        what = f"{where} line {n}"
        for k in ("id", "class", "key"):
            name(r.get(k), f"{what}: {k}")
        m = POOL_FILE.fullmatch(r["file"]) if isinstance(r.get("file"), str) else None
        if not m:
            raise Untrusted(f"{what}: file {_show(r.get('file'))} is not images/<class>/<name>.png")
        name(m[1], f"{what}: file's class folder")
        name(m[2], f"{what}: file's name")
        if not (isinstance(r.get("sample"), str) and r["sample"].isascii() and r["sample"].isdigit()
                and len(r["sample"]) <= 9):
            raise Untrusted(f"{what}: sample {_show(r.get('sample'))} is not a whole number")
        if r["id"] in seen:
            raise Untrusted(f"{what}: duplicate id {_show(r['id'])}")
        seen.add(r["id"])
        if "run" in r or "model" in r:  # the header decides, for every row alike
            run, model = name(r.get("run"), f"{what}: run"), model_name(r.get("model"), f"{what}: model")
            if not r["id"].startswith(run + "."):
                raise Untrusted(f"{what}: id {_show(r['id'])} does not start with its run {_show(run)} and a dot")
            if models.setdefault(run, model) != model:
                raise Untrusted(f"{what}: run {_show(run)} is of model {_show(model)} here but "
                                f"{_show(models[run])} above")
    return rows


def pool_meta(meta, where: str) -> dict:
    """POOL/pool.json: the classes (plain names), the labels wanted per class and kind, and where
    the pictures came from (one-line texts)."""
    meta = mapping(meta, where)
    if "classes" in meta:
        classes = meta["classes"]
        if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
            raise Untrusted(f"{where}: classes is not a list of at most {MAX_CLASSES} names")
        names(classes, f"{where}: classes")
    if "target" in meta:
        number(meta["target"], f"{where}: target", lo=1, hi=MAX_COUNT, integer=True)
    for k in ("run", "data", "split"):  # run: an older pool's last run (a path), never used
        if k in meta:
            text(meta[k], f"{where}: {k}")
    if "runs" in meta:  # {run name: {"model": name, "path": text}}, every run that drew its pictures
        runs = mapping(meta["runs"], f"{where}: runs")
        if len(runs) > MAX_POOL_RUNS:
            raise Untrusted(f"{where}: runs names more than {MAX_POOL_RUNS} runs")
        for run, rec in runs.items():
            what = f"{where}: runs.{_show(name(run, f'{where}: runs'))}"
            rec = mapping(rec, what)
            model_name(rec.get("model"), f"{what}.model")
            if "path" in rec:
                text(rec["path"], f"{what}.path")
    return meta


def judges_pool(runs, unattributed, where: str) -> tuple[dict[str, str], int]:
    """What an informativity judges' file says of the pool its judges learnt from: ``pool_runs``,
    ``{run: model}`` (plain run names, registry-style model names) of the runs whose labelled
    pictures trained them, and ``pool_unattributed``, how many of those pictures came from an
    older pool that names no run (a whole number)."""
    runs = mapping(runs, f"{where}: pool_runs")
    if len(runs) > MAX_POOL_RUNS:
        raise Untrusted(f"{where}: pool_runs names more than {MAX_POOL_RUNS} runs")
    out = {name(run, f"{where}: pool_runs"): model_name(model, f"{where}: pool_runs.{_show(run)}")
           for run, model in runs.items()}
    return out, number(unattributed, f"{where}: pool_unattributed", lo=0, hi=MAX_COUNT, integer=True)


def _distinct(df, columns: list[str]):
    """(row, values) for the first row of each distinct combination of ``columns`` (all rows when
    a value cannot be hashed): a check need not run again on the many rows that repeat a value."""
    try:
        rows = np.flatnonzero(~df.duplicated(subset=columns).to_numpy())
    except TypeError:  # arrays from a list-typed column: each is refused by the check anyway
        rows = np.arange(len(df))
    values = [df[c].to_numpy(dtype=object)[rows] for c in columns]
    return ((int(i), tuple(v[k] for v in values)) for k, i in enumerate(rows))


# --- s2i_data: shard members, videos tables and a build's plan on disk ----------

MEMBER_NAME_MAX = 1024
VIDEO_STATUSES = ("ok", "skipped", "failed")


def tar_member(value: str, what: str = "tar member") -> tuple[str, str]:
    """(key, extension) of a shard member's name, split as webdataset splits it: the key is the
    name up to the first dot of its last part (a folder before it is kept), the extension the
    rest, lower-cased. Every part must be a plain `name` and the last must have an extension."""
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogateescape")) > MEMBER_NAME_MAX:
        raise Untrusted(f"{what} {_show(value)} is not a name of at most {MEMBER_NAME_MAX} bytes")
    names(value.split("/"), f"{what} {_show(value)}", unique=False)
    folder, _, base = value.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        raise Untrusted(f"{what} {_show(value)} is not KEY.EXTENSION")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


PROBE_COLUMNS = ("window_start_s", "window_end_s", "start_s", "end_s", "video_index", "audio_index", "sar")


def videos_table(df, where: str, classes: list[str], probe: bool = False):
    """A table of input videos (videos.parquet; with ``probe`` the plan's ``_build/probe.parquet``,
    whose rows also feed the decoder): unique video ids that are plain names without dots,
    statuses ok, skipped or failed, a class of the build for every usable video, splits of the
    contract, segment counts whole and not negative; for usable videos finite sizes and rates,
    and with ``probe`` the window, span, stream indices and aspect ratio the decoder is given."""
    want = ("video_id", "source", "class", "status", "reason", "split", "segments") + (PROBE_COLUMNS if probe else ())
    missing = [c for c in want if c not in df.columns]
    if missing:
        raise Untrusted(f"{where}: lacks column(s) {', '.join(missing)}")
    ids = names(df["video_id"].tolist(), f"{where}: video_id")
    for i, v in enumerate(ids):
        if "." in v:
            raise Untrusted(f"{where}: row {i} video_id {_show(v)} holds a dot (keys are made from it)")
    bad_status = ~df["status"].isin(VIDEO_STATUSES)
    if bad_status.any():
        i = int(bad_status.to_numpy().argmax())
        raise Untrusted(f"{where}: row {i} status {_show(df['status'].iloc[i])} is not ok, skipped or failed")
    ok = (df["status"] == "ok").to_numpy()
    known = set(classes)
    for i, (c, usable) in enumerate(zip(df["class"].tolist(), ok)):
        if not (isinstance(c, str) and (c in known or (c == "" and not usable))):
            raise Untrusted(f"{where}: row {i} class {_show(c)} is not a class of this build")
    bad_split = ~df["split"].isin(SPLITS + ("",))
    if bad_split.any():
        i = int(bad_split.to_numpy().argmax())
        raise Untrusted(f"{where}: row {i} split {_show(df['split'].iloc[i])} is not train, val or test")
    for i, (s, r) in enumerate(zip(df["source"].tolist(), df["reason"].tolist())):
        if not isinstance(s, str) or not s or "\0" in s or len(s) > 4096:
            raise Untrusted(f"{where}: row {i} source {_show(s)} is not a file name")
        if not (r is None or r != r or (isinstance(r, str) and "\0" not in r and len(r) <= 4096)):  # r != r: NaN
            raise Untrusted(f"{where}: row {i} reason {_show(r)} is not a line of text")
    _numbers(df, where, ["segments"], np.ones(len(df), bool), hi=MAX_COUNT, integer=True)
    # sizes and rates as ffmpeg reported them: only their being numbers matters here
    _numbers(df, where, [c for c in ("duration_s", "fps", "width", "height", "audio_rate", "audio_channels")
                         if c in df.columns], ok, hi=1e12, missing_ok=True)
    if probe:
        _numbers(df, where, ["window_start_s", "window_end_s", "start_s", "end_s"], ok, hi=1e7)
        _numbers(df, where, ["video_index", "audio_index"], ok, hi=1e6, integer=True)
        _numbers(df, where, ["sar"], ok, hi=1e6, above=0)
    return df


def _numbers(df, where: str, columns: list[str], rows: np.ndarray, hi: float, integer: bool = False,
             above: float | None = None, missing_ok: bool = False) -> None:
    """In ``rows`` (those something reads), every value of ``columns`` a finite number in [0, hi]
    (and > ``above``, whole with ``integer``); with ``missing_ok`` it may be missing (NaN, None:
    not measured). Other rows are never read and are not checked."""
    import pandas as pd

    for col in columns:
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)  # text, lists: NaN
        missing = raw.isna().to_numpy()
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(values) | (values < 0) | (values > hi)
            if above is not None:
                wrong |= values <= above
            if integer:
                wrong |= values != np.round(values)
        if missing_ok:
            wrong &= ~missing
        wrong &= rows
        if wrong.any():
            i = int(wrong.argmax())
            raise Untrusted(f"{where}: row {i} {col} {_show(raw.iloc[i])} is not a "
                            f"{'whole' if integer else 'finite'} number in [0, {hi:g}]")


def plan_tables(samples, probes, where: str, classes: list[str], segment_seconds: float):
    """A build's plan on disk (``_build/plan.parquet`` and ``_build/probe.parquet``), before a
    resumed build forms a single path from it: each table as `samples_table` and `videos_table`
    (probe) check it, keys unique, and every planned sample of a usable probed video, with its
    source and class."""
    samples_table(samples, f"{where}/plan.parquet", classes, segment_seconds)
    videos_table(probes, f"{where}/probe.parquet", classes, probe=True)
    dup = samples["key"].duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise Untrusted(f"{where}/plan.parquet: row {i} key {_show(samples['key'].iloc[i])} appears twice")
    usable = probes[probes["status"] == "ok"].set_index("video_id")
    for i, (vid, source, cls) in enumerate(zip(samples["video_id"], samples["source"], samples["class"])):
        if vid not in usable.index:
            raise Untrusted(f"{where}/plan.parquet: row {i} video_id {_show(vid)} is not a usable video of probe.parquet")
        if usable.at[vid, "source"] != source or usable.at[vid, "class"] != cls:
            raise Untrusted(f"{where}/plan.parquet: row {i} source or class differs from probe.parquet's for {_show(vid)}")
    return samples, probes


# --- within-class factors (issue 28): ROOT/factors.csv, build.json's record, the tables' columns
# A data folder's factors.csv is somebody else's file like any other: its values become manifest
# columns and KEY.json fields, its class and video names are matched against files. The factors
# themselves (which exist, their class, kind and range) come from code (`s2i_data.factors`), never
# from the file; the file only supplies values, each checked against its factor's definition.

MAX_FACTOR_BYTES = 32 << 20  # ROOT/factors.csv: a row of ~100 bytes a video, 300 000 videos
MAX_FACTOR_ROWS = 1_000_000
FACTOR_KEYS = ("preset", "class", "video")
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")  # no nan, inf, hex or 1_0


def factor_preset(value, what: str) -> str:
    """``value`` when it names a factor preset defined in `s2i_data.factors`."""
    from s2i_data import factors

    if not isinstance(value, str) or value not in factors.PRESETS:
        raise Untrusted(f"{what}: {_show(value)} is not a factor preset (known: {', '.join(sorted(factors.PRESETS))})")
    return value


def factor_value(cell, what: str, factor) -> float:
    """A factor's value written as text (a CSV cell): a plain decimal number, finite, in the
    factor's [low, high], whole for a counted factor."""
    from s2i_data.factors import COUNT

    if not isinstance(cell, str) or len(cell) > 64 or not _DECIMAL.fullmatch(cell):
        raise Untrusted(f"{what}: {_show(cell)} is not a number")
    whole = factor.kind == COUNT
    return float(number(float(cell), what, lo=factor.low, hi=factor.high, integer=whole))


def factors_csv(data: bytes, where: str):
    """``ROOT/factors.csv`` (its bytes, read through `capped_read` with `MAX_FACTOR_BYTES`) parsed
    as UTF-8 CSV and checked whole by `factor_table`; returns a `factors.Sidecar`."""
    import csv
    import io

    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of a name
    except UnicodeDecodeError as e:
        raise Untrusted(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise Untrusted(f"{where}: empty; a factors.csv starts with the header {','.join(FACTOR_KEYS)},...")

        def rows():
            for row in reader:
                if row:  # a blank line (a trailing one, say) holds no video
                    yield reader.line_num, row

        return factor_table(header, rows(), where)
    except csv.Error as e:
        raise Untrusted(f"{where} line {reader.line_num}: not CSV ({e})") from None


def factor_table(header, rows, where: str):
    """A parsed factors table (``header``, then ``(line number, cells)`` per row) when every row
    keeps the contract of ``ROOT/factors.csv``: columns preset, class, video and exactly the
    ``factor_<name>`` columns of its preset; one preset, defined in `s2i_data.factors`, on every row;
    class and video plain names (never paths), each (class, video) once; for each factor of the
    row's class a value (`factor_value`), every other factor's cell empty; at most
    `MAX_FACTOR_ROWS` rows. Returns a `factors.Sidecar`."""
    from s2i_data import factors

    if not isinstance(header, list):
        raise Untrusted(f"{where}: no header")
    header = names(header, f"{where}: header")
    missing = [k for k in FACTOR_KEYS if k not in header]
    if missing:
        raise Untrusted(f"{where}: the header lacks column(s) {', '.join(missing)}")
    preset: str | None = None
    fs: tuple = ()
    values: dict = {}
    first = 0
    for line, row in rows:
        what = f"{where} line {line}"
        if len(row) != len(header):
            raise Untrusted(f"{what}: {len(row)} fields, the header has {len(header)}")
        if len(values) >= MAX_FACTOR_ROWS:
            raise Untrusted(f"{where}: more than {MAX_FACTOR_ROWS} rows; refusing to read it")
        rec = dict(zip(header, row))
        if preset is None:
            preset, first = factor_preset(rec["preset"], f"{what}: preset"), line
            fs = factors.preset(preset)
            wanted = set(FACTOR_KEYS) | {f.column for f in fs}
            lacking = [f.column for f in fs if f.column not in header]
            if lacking:
                raise Untrusted(f"{where}: the header lacks column(s) {', '.join(lacking)} of preset {preset!r}")
            extra = [c for c in header if c not in wanted]
            if extra:
                raise Untrusted(f"{where}: column {_show(extra[0])} is not one of preset {preset!r}'s")
        elif rec["preset"] != preset:
            raise Untrusted(f"{what}: preset {_show(rec['preset'])}, but line {first} says {preset!r}; "
                            "a factors.csv is of one preset")
        cls, video = name(rec["class"], f"{what}: class"), name(rec["video"], f"{what}: video")
        if (cls, video) in values:
            raise Untrusted(f"{what}: class {_show(cls)} video {_show(video)} appears twice")
        mine = {}
        for f in fs:
            cell = rec[f.column]
            if f.cls == cls:
                if cell == "":
                    raise Untrusted(f"{what}: {f.column} is empty; a {cls} video needs a value")
                mine[f.column] = factor_value(cell, f"{what}: {f.column}", f)
            elif cell != "":
                raise Untrusted(f"{what}: {f.column} holds {_show(cell)}, but it is a factor of {f.cls!r}, "
                                f"not of {cls!r}: leave it empty")
        values[(cls, video)] = mine
    if preset is None:
        raise Untrusted(f"{where}: no rows; a factors.csv names its preset and each video's values")
    return factors.Sidecar(preset, values)


def build_factors(record, where: str) -> tuple:
    """build.json's ``factors`` (``{"preset": name, "columns": [factor_<name>, ...]}``): a preset
    defined in `s2i_data.factors` and columns of it, each once. Returns their `factors.Factor`s,
    in the preset's order."""
    from s2i_data import factors

    record = mapping(record, where)
    preset = factor_preset(record.get("preset"), f"{where}.preset")
    cols = record.get("columns")
    if not isinstance(cols, list):
        raise Untrusted(f"{where}.columns: not a list of column names")
    cols = names(cols, f"{where}.columns")
    known = factors.columns(preset)
    for c in cols:
        if c not in known:
            raise Untrusted(f"{where}.columns: {_show(c)} is not a column of preset {preset!r}")
    return tuple(f for f in factors.preset(preset) if f.column in cols)


def factor_problems(df, where: str, factors, key: str = "key", rows=None) -> list[str]:
    """Every way the table ``df`` (manifest.parquet, videos.parquet, the plan; only ``rows``, a
    mask, when given) breaks its build's ``factors``, one line each: a factor's column missing or
    not numbers; in a row of the factor's class its value missing, not finite, outside [low, high]
    or (a counted factor) not whole; in a row of another class a value where it must be empty."""
    import pandas as pd

    if factors and "class" not in df.columns:
        return [f"{where}: lacks column class"]
    if not factors or not len(df):
        return [f"{where}: lacks column {f.column}" for f in factors if f.column not in df.columns]
    out = []
    classes = df["class"].to_numpy(dtype=object)
    keys = df[key].to_numpy(dtype=object) if key in df.columns else np.arange(len(df))
    take = np.ones(len(df), bool) if rows is None else np.asarray(rows, bool)
    for f in factors:
        col = f.column
        if col not in df.columns:
            out.append(f"{where}: lacks column {col}")
            continue
        raw = df[col]
        if not pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
            out.append(f"{where}: column {col} holds {raw.dtype}, not numbers")
            continue
        values = raw.to_numpy(dtype=np.float64)
        mine = take & (classes == f.cls)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(values) | (values < f.low) | (values > f.high)
            if f.kind == "count":
                wrong |= values != np.round(values)
        for i in np.flatnonzero(mine & wrong):
            what = f"{where}: row {i} ({printable(keys[i], 120)}) {col}"
            if np.isnan(values[i]):
                out.append(f"{what} is empty; every {f.cls} row needs a value")
            else:
                out.append(f"{what} {values[i]:g} is not a {'whole' if f.kind == 'count' else 'finite'} "
                           f"number in [{f.low:g}, {f.high:g}]")
        for i in np.flatnonzero(take & (classes != f.cls) & ~np.isnan(values)):
            out.append(f"{where}: row {i} ({printable(keys[i], 120)}) {col} holds {values[i]:g}, but it is a factor "
                       f"of {f.cls!r}, not of {printable(classes[i], 60)!r}: it must be empty")
    return out


def factor_columns(df, where: str, factors, key: str = "key", rows=None):
    """``df`` when `factor_problems` finds nothing, else `Untrusted` naming the first problem."""
    problems = factor_problems(df, where, factors, key, rows)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise Untrusted(problems[0] + more)
    return df


# --- run folders: checkpoints, their caches and training logs (s2i_model) ---------------------
# A run folder comes from somebody else as much as a build does: the sizes a checkpoint's config
# claims decide how big a network is built, so they are bounded here, and the tensors it stores
# must be exactly those of the network its config describes (names, shapes, kinds, finite),
# compared before any of them is loaded. Checked without importing torch: tensors are read
# through ``shape``, ``is_floating_point`` and ``isfinite``.

NET_SIZES = {  # what a checkpoint's config may claim, before a network is built from it
    "emb": {"lo": 1, "hi": 65536, "integer": True},
    "latent": {"lo": 1, "hi": 65536, "integer": True},
    "classes": {"lo": 1, "hi": MAX_CLASSES, "integer": True},
    "width": {"lo": 2**-10, "hi": 4},
}
OPT_STATE_KEYS = {  # each parameter's optimiser state, by optimiser (runtime.make_optimizer's)
    "SGD": frozenset({"momentum_buffer"}),
    "Adam": frozenset({"step", "exp_avg", "exp_avg_sq"}),
}


def net_config(cfg, where: str, *fields: str, section: str = "config") -> dict:
    """A checkpoint's config (``section``) with ``fields`` (emb, latent, classes, width) in
    range, whole where they must be: the numbers a network is built with."""
    cfg = mapping(cfg, f"{where}: {section}")
    return {**cfg, **{f: number(cfg.get(f), f"{where}: {section}.{f}", **NET_SIZES[f]) for f in fields}}


def epoch(value, what: str) -> int:
    return number(value, what, lo=0, hi=MAX_EPOCH, integer=True)


def _is_tensor(value) -> bool:
    return all(hasattr(value, a) for a in ("shape", "is_floating_point", "isfinite"))


def _finite_tensor(value, what: str):
    # the largest magnitude is NaN when any value is, and infinite when any is: one cheap pass
    if value.is_floating_point() and value.numel() and not bool(value.abs().amax() < math.inf):
        raise Untrusted(f"{what} holds NaN or infinite values")
    return value


def tensor_shapes(expected: Mapping, stored, where: str) -> Mapping:
    """``stored`` (a state dict read from a checkpoint) when it holds exactly the tensors of
    ``expected`` (the network's own state dict, built from the checked config: on the meta device,
    nothing allocated), each of the same shape and kind (floating or not), and finite."""
    stored = mapping(stored, where)
    missing = [k for k in expected if k not in stored]
    if missing:
        raise Untrusted(f"{where}: lacks {_show(missing[0])}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + "; the network its config describes has them")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise Untrusted(f"{where}: holds {_show(extra[0])}, which the network its config describes does not have")
    for k, want in expected.items():
        got = stored[k]
        if not _is_tensor(got):
            raise Untrusted(f"{where}: {_show(k)} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape) or got.is_floating_point() != want.is_floating_point():
            raise Untrusted(f"{where}: {_show(k)} is {list(got.shape)}, the network its config describes "
                            f"has {list(want.shape)}")
        _finite_tensor(got, f"{where}: {_show(k)}")
    return stored


def normaliser(value, where: str) -> dict:
    """A checkpoint's log-mel normaliser: finite lo < hi (it divides by hi - lo)."""
    value = mapping(value, where)
    lo, hi = number(value.get("lo"), f"{where}.lo"), number(value.get("hi"), f"{where}.hi")
    if not hi > lo:
        raise Untrusted(f"{where}: hi ({hi}) is not above lo ({lo})")
    return {"lo": lo, "hi": hi}


def _same_kind(saved, fresh) -> bool:
    """An optimiser setting the fresh optimiser can run with: its very flag or None (amsgrad,
    fused, capturable... change what state it needs), else finite numbers where it has numbers."""
    if fresh is None or isinstance(fresh, bool):
        return saved is fresh or (isinstance(saved, bool) and saved == fresh)
    if isinstance(fresh, (int, float)):
        return not isinstance(saved, bool) and isinstance(saved, (int, float)) and math.isfinite(saved)
    if isinstance(fresh, (list, tuple)):
        return (isinstance(saved, (list, tuple)) and len(saved) == len(fresh)
                and all(_same_kind(s, f) for s, f in zip(saved, fresh)))
    return False


def optimizer_state(saved, fresh: Mapping, shapes: list, kind: str, where: str) -> Mapping:
    """An optimiser's saved state that the optimiser ``fresh`` (its own ``state_dict()``, of class
    ``kind``) can take: the same parameter groups of the same sizes and settings of the same kinds,
    and for each parameter the state ``kind`` keeps, each tensor of the parameter's shape
    (``shapes``, in order) and finite."""
    saved = mapping(saved, where)
    groups, fresh_groups = saved.get("param_groups"), fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        raise Untrusted(f"{where}: param_groups is not a list of {len(fresh_groups)} group(s)")
    for i, (g, f) in enumerate(zip(groups, fresh_groups)):
        g = mapping(g, f"{where}: param_groups[{i}]")
        params = g.get("params")
        if not isinstance(params, list) or len(params) != len(f["params"]):
            raise Untrusted(f"{where}: param_groups[{i}] does not hold the {len(f['params'])} parameters of the network")
        for k, v in g.items():
            if k != "params" and (k not in f or not _same_kind(v, f[k])):
                raise Untrusted(f"{where}: param_groups[{i}].{_show(k)} = {_show(v)} is not a setting of {kind}")
    wanted = OPT_STATE_KEYS[kind]
    for p, per in mapping(saved.get("state", {}), f"{where}: state").items():
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(shapes):
            raise Untrusted(f"{where}: state of parameter {_show(p)}; the network has {len(shapes)}")
        per = mapping(per, f"{where}: state[{p}]")
        if set(per) != wanted:
            raise Untrusted(f"{where}: state[{p}] holds {sorted(map(str, per))}, not {kind}'s {sorted(wanted)}")
        for k, v in per.items():
            if k == "step":  # a count: a number, or a scalar tensor
                if _is_tensor(v) and tuple(v.shape) == ():
                    v = float(v)
                number(v, f"{where}: state[{p}].step", lo=0)
            elif not (v is None and k == "momentum_buffer"):
                if not _is_tensor(v) or tuple(v.shape) != tuple(shapes[p]):
                    raise Untrusted(f"{where}: state[{p}].{k} is not a tensor of the parameter's shape {list(shapes[p])}")
                _finite_tensor(v, f"{where}: state[{p}].{k}")
    return saved


def rng_state(state, where: str, torch_bytes: int, cuda_bytes: int | None = None) -> Mapping:
    """A checkpoint's random generators' states (`runtime.rng_state`), each of the size its
    generator takes: Python's Mersenne Twister, torch's and numpy's, and optionally CUDA's."""
    state = mapping(state, where)
    py = state.get("python")
    if not (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple)) and len(py[1]) == 625):
        raise Untrusted(f"{where}: python is not a Mersenne Twister state")
    number(py[0], f"{where}: python[0]", lo=2, hi=3, integer=True)
    for i, w in enumerate(py[1]):
        number(w, f"{where}: python[1][{i}]", lo=0, hi=2**32 - 1 if i < 624 else 624, integer=True)
    if py[2] is not None:
        number(py[2], f"{where}: python[2]")
    t = state.get("torch")
    if not _is_tensor(t) or tuple(t.shape) != (torch_bytes,) or t.is_floating_point():
        raise Untrusted(f"{where}: torch is not a generator state of {torch_bytes} bytes")
    npy = state.get("numpy")
    if not (isinstance(npy, (list, tuple)) and len(npy) == 5 and npy[0] == "MT19937"
            and getattr(npy[1], "shape", None) is not None and tuple(npy[1].shape) == (624,)):
        raise Untrusted(f"{where}: numpy is not an MT19937 state")
    number(npy[2], f"{where}: numpy[2]", lo=0, hi=624, integer=True)
    number(npy[3], f"{where}: numpy[3]", lo=0, hi=1, integer=True)
    number(npy[4], f"{where}: numpy[4]")
    if "cuda" in state and cuda_bytes is not None:
        cuda = state["cuda"]
        if not isinstance(cuda, list) or not all(_is_tensor(c) and tuple(c.shape) == (cuda_bytes,) for c in cuda):
            raise Untrusted(f"{where}: cuda is not a list of generator states of {cuda_bytes} bytes")
    return state


def embedding_split(value, where: str, width: int, classes: int, most: int = MAX_COUNT) -> Mapping:
    """A split of an embedding cache (RUN/embeddings.pt): ``keys`` plain unique names, ``emb``
    finite [len(keys), width], ``cls`` whole numbers in [0, classes) of the same length."""
    value = mapping(value, where)
    keys = value.get("keys")
    if not isinstance(keys, list) or len(keys) > most:
        raise Untrusted(f"{where}: keys is not a list of at most {most} names")
    names(keys, f"{where}: keys")
    emb, cls = value.get("emb"), value.get("cls")
    n = len(keys)
    if not _is_tensor(emb) or not emb.is_floating_point() or tuple(emb.shape) not in ((n, width),) + (((0,),) if not n else ()):
        raise Untrusted(f"{where}: emb is not {n} embeddings of size {width}")
    _finite_tensor(emb, f"{where}: emb")
    if not _is_tensor(cls) or cls.is_floating_point() or tuple(cls.shape) != (n,):
        raise Untrusted(f"{where}: cls is not {n} class indices")
    if n and not (0 <= int(cls.min()) and int(cls.max()) < classes):
        raise Untrusted(f"{where}: cls holds a class index outside 0..{classes - 1}")
    return value


def metrics_row(row, where: str) -> Mapping:
    """A row of RUN/metrics.jsonl as its readers use it: a stage name, a whole epoch, and where
    present a finite pixel loss, a count of D updates and informativity in [0, 1] per class."""
    row = mapping(row, where)
    if not isinstance(row.get("stage"), str):
        raise Untrusted(f"{where}: stage {_show(row.get('stage'))} is not a stage name")
    number(row.get("epoch"), f"{where}: epoch", lo=1, hi=MAX_EPOCH, integer=True)
    if "pixel_loss" in row:
        number(row["pixel_loss"], f"{where}: pixel_loss")
    if "d_updates" in row:
        number(row["d_updates"], f"{where}: d_updates", lo=0, hi=MAX_COUNT, integer=True)
    for key in ("informativity", "informativity_val"):  # measured on the test split, and on val
        if key in row:
            inf = mapping(row[key], f"{where}: {key}")
            if inf.get("mean") is not None:
                number(inf["mean"], f"{where}: {key}.mean", lo=0, hi=1)
            for c, v in mapping(inf.get("per_class"), f"{where}: {key}.per_class").items():
                name(c, f"{where}: {key}.per_class key")
                if v is not None:
                    number(v, f"{where}: {key}.per_class.{c}", lo=0, hi=1)
    return row


def grad_scaler_state(value, where: str) -> Mapping:
    """An fp16 loss scaler's saved state: its five settings, finite and positive."""
    value = mapping(value, where)
    for k in ("scale", "growth_factor", "backoff_factor"):
        number(value.get(k), f"{where}.{k}", above=0)
    for k in ("growth_interval", "_growth_tracker"):
        number(value.get(k), f"{where}.{k}", lo=0, hi=MAX_COUNT, integer=True)
    return value


def finite_list(value, what: str, most: int = MAX_EPOCH) -> list[float]:
    """A list of at most ``most`` finite numbers (a loss history)."""
    if not isinstance(value, list) or len(value) > most:
        raise Untrusted(f"{what}: not a list of at most {most} numbers")
    return finite_vector(value, what)


MAX_CURVE_POINTS = 1000


def curve(record, where: str) -> dict:
    """RUN/curve.json (a learning curve of the comparison): the judges' stamp and points of samples
    seen, seconds and class agreement, each checked."""
    record = mapping(record, where)
    stamp = record.get("judges")
    if stamp is not None and (not isinstance(stamp, list) or len(stamp) > 3):
        raise Untrusted(f"{where}: judges is not a file stamp")
    points = record.get("points")
    if not isinstance(points, list) or len(points) > MAX_CURVE_POINTS:
        raise Untrusted(f"{where}: points is not a list of at most {MAX_CURVE_POINTS}")
    out = []
    for i, p in enumerate(points):
        p, w = mapping(p, f"{where}: points[{i}]"), f"{where}: points[{i}]"
        out.append({"epochs": _optional(p.get("epochs"), number, f"{w}.epochs", lo=0, hi=MAX_EPOCH, integer=True),
                    "samples_seen": number(p.get("samples_seen"), f"{w}.samples_seen", lo=0, hi=MAX_COUNT * 1000,
                                           integer=True),
                    "seconds": number(p.get("seconds"), f"{w}.seconds", lo=0, hi=1e9),
                    **{k: _ratio(p.get(k), f"{w}.{k}") for k in ("class_agreement", "class_agreement_full")}})
    return {"judges": stamp, "points": out}
