"""What a download run knows and keeps: ``ROOT/download.parquet``, its journal, and the lock.

``download.parquet`` is a folder of parquet parts that pandas and pyarrow read as one table
(``pd.read_parquet(ROOT / "download.parquet")``): one row per CSV row of every run into ROOT, by
``key``; columns ytid, start, end, class, split, status, reason, attempts, bytes, sha256, duration,
file. A part is ``<seq>-<group>.parquet``; the groups are what a re-run does with a row: ``ok``,
``failed`` (unavailable, private, removed: kept unless --retry-failed), ``error`` (retried) and
``skipped`` (read again from the CSV).

Why parts (issue 29): at AudioSet scale the record has two million rows and a re-run fetches a
few thousand of them; writing the whole record again at the end of every run (from dicts) cost
more than the run. A run appends its rows as new parts (numbered after all others) and, at its
end, takes the keys it recorded out of the older parts that held them: those are the parts of
rows it was going to retry anyway (``error``; ``failed`` with --retry-failed), so the ``ok``
parts, the bulk, stay as they are. Then each group's newest parts are merged while the newer is at
least half the older, so a group keeps a few parts (log2 of its rows) and a row is rewritten a few
times in its life: the end of a run costs in proportion to the rows it recorded, not to the record.

A key is in one part only, except while a run goes or after one was killed: then the newest part
holding it (then the journal) is its record, and the next run's end takes it out of the others.

While a run goes, each finished row is appended to ``ROOT/.download/journal.jsonl`` and fsynced,
so a run killed at any moment loses nothing it finished; every `CHECKPOINT_ROWS` rows they become
parts and the journal starts again (a run of two million rows holds at most that many in memory,
and a killed one leaves at most that many lines to read). The next run reads the parts, then the
journal (later lines win, a torn line is ignored). A ``download.parquet`` *file* (written before
issue 29) is read as the oldest part and turned into parts by the next run (once, all of it).

Parts and journal may come from another lab's copy of ROOT: every part passes
`untrusted.download_table`, every journal line `untrusted.download_record`; a record that does not
stops the run with one line, before anything is written. Nothing in ROOT is followed as a link.

``ROOT/.download/lock`` is held with ``flock`` for the whole run: one download into a ROOT at a time
(the kernel drops it when the process dies, however it dies).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from s2i_data import storage, untrusted

from . import keys

COLUMNS = ["ytid", "start", "end", "class", "split", "status", "reason", "attempts", "bytes", "sha256",
           "duration", "file"]
STATUSES = ("ok", "unavailable", "private", "removed", "error", "skipped")
PERMANENT = ("unavailable", "private", "removed")  # skipped by a re-run unless --retry-failed
STATE_DIR = ".download"
RECORD = "download.parquet"
CHECKPOINT_ROWS = 50_000  # journal lines before they become parts: ~7 h at 2 requests/s
GROUPS = ("ok", "failed", "error", "skipped")
_PART = re.compile(r"(\d{8})-(ok|failed|error|skipped)\.parquet")
_TEXT = ("ytid", "class", "split", "status", "reason", "sha256", "file")
SCHEMA = pa.schema([("key", pa.string()), ("ytid", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                    ("class", pa.string()), ("split", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                    ("attempts", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string()),
                    ("duration", pa.float64()), ("file", pa.string())])


class LockError(Exception):
    pass


class RootLock:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / STATE_DIR / "lock"
        self.fd: int | None = None

    def __enter__(self) -> "RootLock":
        try:  # never through a link: the pid written below would truncate whatever it points at
            storage.folder_inside(self.path.parent.parent, STATE_DIR)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            if self.path.is_symlink():
                raise LockError(f"cannot lock {self.path}: it is a symbolic link; refusing to follow it") from None
            raise LockError(f"cannot lock {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(f"{self.path.parent.parent} is being downloaded into by another run "
                                f"(pid {self._holder()}); wait for it or choose another --out") from None
            raise LockError(f"cannot lock {self.path}: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _journal(root: Path) -> Path:
    return Path(root) / STATE_DIR / "journal.jsonl"


def _legacy_moved(root: Path) -> Path:
    """Where a ``download.parquet`` file waits while it becomes parts."""
    return Path(root) / STATE_DIR / "legacy-download.parquet"


def array(x) -> pa.Array:
    """A column as one array (pyarrow's functions hand back a chunked one for a table's column)."""
    return x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x


def group(status: str) -> str:
    if status == "ok" or status == "skipped":
        return status
    return "failed" if status in PERMANENT else "error"


# ------------------------------------------------------------------------------------ reading

@dataclass
class Part:
    path: Path
    seq: int
    group: str  # '' for a download.parquet file of before issue 29 (every group)
    rows: int


@dataclass
class Known:
    """What the runs before this one recorded, newest record of each key, as columns."""

    parts: list[Part]  # oldest first
    keys: pa.Array
    status: pa.Array
    attempts: pa.Array  # int64
    reason: pa.Array  # of skipped rows (null for the others): a re-run records a skipped row only when it changed
    part: np.ndarray  # index in ``parts`` of the part holding each key (-1: the journal)
    # part index -> its rows that a newer part or the journal replaces (a killed run's)
    stale: dict[int, np.ndarray] = field(default_factory=dict)
    journal: list[dict] = field(default_factory=list)  # a killed run's lines, checked
    legacy: Path | None = None  # a download.parquet file of before issue 29

    def __len__(self) -> int:
        return len(self.part)

    def release(self) -> None:
        """Drop the columns once the plan has taken each row's (the listing that follows must not
        stack on them); the parts, which key is where (`Writer.replaces`) and the stale rows stay."""
        self.keys = self.status = self.attempts = self.reason = None


def _parts(root: Path) -> tuple[list[Part], Path | None]:
    folder = Path(root) / RECORD
    legacy = None
    if folder.is_symlink():
        raise untrusted.Untrusted(f"{folder}: a symbolic link; refusing to follow it")
    if folder.is_file() or (not folder.exists() and _legacy_moved(root).is_file()):
        legacy = folder if folder.is_file() else _legacy_moved(root)
        return [Part(legacy, 0, "", 0)], legacy
    if not folder.is_dir():
        return [], None
    parts = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue  # a temporary file of a write that did not finish
        m = _PART.fullmatch(name)
        if not m:
            raise untrusted.Untrusted(f"{folder / untrusted.printable(name)}: not a part of the record "
                                      "(<8 digits>-<ok|failed|error|skipped>.parquet); move it out of the folder")
        parts.append(Part(folder / name, int(m.group(1)), m.group(2), 0))
    parts.sort(key=lambda p: (p.seq, GROUPS.index(p.group)))
    return parts, None


def _read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A part (or a download.parquet file), never through a link, FIFO or device."""
    try:
        with storage.open_regular(path) as f:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            return pf.read(columns=[c for c in columns if c in names] if columns is not None else None)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, ValueError) as e:
        raise untrusted.Untrusted(f"{path}: not a parquet table ({untrusted.printable(str(e))})") from None


def load(root: Path) -> Known:
    """The newest record of every row downloaded into ROOT before, each value checked."""
    root = Path(root)
    parts, legacy = _parts(root)
    key, status, attempts, reason, owner = [], [], [], [], []
    for i, part in enumerate(parts):
        # the reason is only compared for skipped rows: read where they are (parts of ours)
        t = _read_part(part.path, ["key", "status", "attempts"] + (["reason"] if part.group in ("", "skipped") else []))
        part.rows = t.num_rows
        k, s, a = untrusted.download_table(t, str(part.path))
        r = t.column("reason").combine_chunks() if "reason" in t.column_names else None
        r = r.cast(pa.string()) if r is not None and untrusted.is_text_type(r.type) else pa.nulls(len(k), pa.string())
        del t
        key.append(k)
        status.append(s)
        attempts.append(a)
        reason.append(pc.if_else(pc.equal(s, "skipped"), r, pa.scalar(None, pa.string())))
        owner.append(np.full(len(k), i, np.int32))
    lines = _read_journal(root)
    if lines:
        key.append(pa.array([r["key"] for r in lines], pa.string()))
        status.append(pa.array([r["status"] for r in lines], pa.string()))
        attempts.append(pa.array([r["attempts"] for r in lines], pa.int64()))
        reason.append(pa.array([r.get("reason") if r["status"] == "skipped" and isinstance(r.get("reason"), str)
                                else None for r in lines], pa.string()))
        owner.append(np.full(len(lines), -1, np.int32))
    columns = []
    for arrays, type_ in ((key, pa.string()), (status, pa.string()), (attempts, pa.int64()), (reason, pa.string())):
        columns.append(_concat(arrays, type_))
        arrays.clear()  # each column's pieces freed once it is whole
    known = Known(parts, *columns, np.concatenate(owner) if owner else np.zeros(0, np.int32), journal=lines,
                  legacy=legacy)
    return _newest(known)


def _concat(arrays: list, type_=pa.string()) -> pa.Array:
    if len(arrays) == 1:
        return arrays[0].cast(type_)
    return pa.concat_arrays([a.cast(type_) for a in arrays]) if arrays else pa.array([], type_)


def _newest(known: Known) -> Known:
    """Keep each key's last record (parts by number, then the journal); note the rows of the
    parts that it replaces (a killed run's, or a part that lists a key twice)."""
    keep = keys.last_of_each(known.keys)
    if keep is None:
        return known
    starts = np.concatenate([[0], np.cumsum([p.rows for p in known.parts], dtype=np.int64)])
    for i in range(len(known.parts)):
        gone = np.flatnonzero(~keep[starts[i]:starts[i + 1]])
        if len(gone):
            known.stale[i] = gone
    mask = pa.array(keep)
    known.keys, known.status, known.attempts, known.reason = (
        a.filter(mask) for a in (known.keys, known.status, known.attempts, known.reason))
    known.part = known.part[keep]
    return known


def _read_journal(root: Path) -> list[dict]:
    journal = _journal(root)
    if not journal.is_file():
        return []
    lines = []
    with open(journal, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the torn last line of a killed run
            lines.append(untrusted.download_record(rec, f"{journal}: line {n}"))
    return lines


def _record_table(root: Path, names: list[str]) -> pa.Table:
    """The record's ``names`` columns, one row a key (its newest). Unchecked: for showing only."""
    parts, _ = _parts(Path(root))
    tables = [canonical(_read_part(p.path, names), names) for p in parts]
    t = pa.concat_tables(tables) if tables else pa.schema([SCHEMA.field(c) for c in names]).empty_table()
    keep = keys.last_of_each(t["key"])
    return t if keep is None else t.filter(pa.array(keep))  # a killed run's rows: the newest


def read_record(root: Path, columns: list[str] | None = None, failed_only: bool = False):
    """The record as a pandas DataFrame (``key``, ``status`` and ``columns``; all by default), for
    readers of a finished run (the summary, the builder); ``failed_only``: rows that are not ok."""
    t = _record_table(root, SCHEMA.names if columns is None else list(dict.fromkeys(["key", "status", *columns])))
    if failed_only:
        t = t.filter(pc.not_equal(t["status"], "ok"))
    return t.to_pandas()


def count(root: Path, rows: pa.Array) -> dict[str, int]:
    """status → how many of ``rows`` (the keys of a CSV's rows) the record gives it."""
    t = _record_table(root, ["key", "status"])
    at = keys.index_in(rows, t["key"])
    status = pc.take(array(t["status"]), pa.array(at, mask=at < 0))
    counts = dict(zip(*(c.to_pylist() for c in pc.value_counts(status).flatten())))
    return {s: int(counts.get(s, 0)) for s in STATUSES}


# ------------------------------------------------------------------------------------ writing

def canonical(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """``table`` with the record's columns and types, as `records_table` makes them; a part of
    ours passes as it is, another (a file of before issue 29, another lab's) goes through pandas."""
    schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
    if all(f.name in table.column_names and _same_kind(table.schema.field(f.name).type, f.type) for f in schema):
        return pa.table([_fill(table.column(f.name).cast(f.type), f) for f in schema], schema=schema)
    df = table.to_pandas()
    for name in schema.names:
        if name not in df.columns:
            df[name] = None
    return _coerced(df[schema.names], schema)


def _same_kind(have, want) -> bool:
    return have == want or (untrusted.is_text_type(have) and pa.types.is_string(want))


def _fill(column, f):
    if f.name in ("attempts", "bytes"):
        return pc.fill_null(column, 0)
    if pa.types.is_string(f.type):
        return pc.fill_null(column, "")
    return column


def _coerced(df, schema: pa.Schema = SCHEMA) -> pa.Table:
    """The types of the record, as it always made them: times and durations numbers (else NaN),
    counts whole (else 0), the rest text."""
    import pandas as pd

    for col in ("start", "end", "duration"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("attempts", "bytes"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in _TEXT:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False).replace_schema_metadata(None)


def records_table(records: list[dict]) -> pa.Table:
    import pandas as pd

    return _coerced(pd.DataFrame(records, columns=SCHEMA.names))


class Journal:
    """Append-only, one fsynced JSON line per finished row."""

    def __init__(self, root: Path) -> None:
        self.path = _journal(root)
        storage.folder_inside(root, STATE_DIR)
        self.f = storage.open_append(self.path)

    def append(self, record: dict) -> None:
        self.f.write(json.dumps(record, sort_keys=True) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def restart(self) -> None:
        """Empty it: its lines are in parts now."""
        self.f.flush()
        os.ftruncate(self.f.fileno(), 0)
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


class Writer:
    """The record of one run: each finished row to the journal at once, to parts every
    `CHECKPOINT_ROWS` rows, and at `close` the older parts rid of the keys it recorded, then merged."""

    def __init__(self, root: Path, known: Known) -> None:
        self.root = Path(root)
        self.folder = self.root / RECORD
        self.journal = Journal(self.root)
        if known.legacy is not None:
            _parts_from_legacy(self.root, known)
            known = load(self.root)
        elif _legacy_moved(self.root).is_file():
            _legacy_moved(self.root).unlink()  # a file turned into parts by a run that died just after
        self.known = known
        self.seq = max((p.seq for p in known.parts), default=0) + 1
        self.mine: list[Part] = []  # this run's parts, oldest first
        self.mine_keys: list[pa.Array] = []
        self.buffer: list[dict] = []
        self.replacing: tuple[pa.Array, np.ndarray] | None = None
        # a killed run's last lines become its parts (older than this run's) and the journal starts
        # empty: a line this run appends never follows the torn end of the killed run's last one
        self.buffer = list(known.journal)
        self.checkpoint()

    def add(self, record: dict) -> None:
        self.journal.append(record)
        self.keep(record)

    def keep(self, record: dict) -> None:
        """A row already in the journal."""
        self.buffer.append(record)
        if len(self.buffer) >= CHECKPOINT_ROWS:
            self.checkpoint()

    def add_table(self, table: pa.Table) -> None:
        """Rows known before any fetch (lines of the CSV recorded as skipped): parts at once,
        fsynced, never a journal line each."""
        if table.num_rows:
            self._append(canonical(table))

    def checkpoint(self) -> None:
        if self.buffer:
            self._append(records_table(self.buffer))
            self.buffer = []
        self.journal.restart()

    def _append(self, table: pa.Table) -> None:
        storage.folder_inside(self.root, RECORD)
        groups = _groups(array(table["status"]))
        for g in GROUPS:
            rows = table.filter(pa.array(groups == g))
            if rows.num_rows:
                part = Part(self.folder / f"{self.seq:08d}-{g}.parquet", self.seq, g, rows.num_rows)
                _write(part.path, rows)
                self.mine.append(part)
                self.mine_keys.append(array(rows["key"]))
        self.seq += 1

    def close(self) -> None:
        """The end of the run (also on Ctrl-C): the rest of the journal to parts, the older parts
        without the keys this run recorded, merges, and the journal gone."""
        self.checkpoint()
        self._fold()
        self._merge()
        self.journal.close()
        self.journal.path.unlink(missing_ok=True)

    # the end of a run ------------------------------------------------------------------------

    def _fold(self) -> None:
        """Each key in one part: this run's rows replace those of older parts (and those of this
        run's own earlier parts: a killed run's last lines, fetched again)."""
        if not self.mine:
            seen = pa.array([], pa.string())
        else:
            seen = pa.concat_arrays(self.mine_keys)
            newest = keys.last_of_each(seen)
            if newest is not None:
                start = 0
                for part, these in zip(self.mine, self.mine_keys):
                    again = np.flatnonzero(~newest[start:start + len(these)])
                    start += len(these)
                    if len(again):
                        self._rewrite(part, again, None)
        known = self.known
        drop: dict[int, tuple[np.ndarray, pa.Array | None]] = {}  # part -> (rows, keys) to take out
        if len(seen) and len(known):
            # the parts holding the keys this run recorded: known from the plan when it said
            # (no hashing of the whole record), else looked up in it
            if self.replacing is None and known.keys is None:
                raise RuntimeError("the record's keys were released before the plan said which it replaces")
            where_keys, where_part = self.replacing if self.replacing is not None else (known.keys, known.part)
            at = keys.index_in(seen, where_keys)
            hit = at >= 0
            owners = where_part[at[hit]]
            recorded = seen.filter(pa.array(hit))
            for i in np.unique(owners[owners >= 0]).tolist():
                drop[i] = (known.stale.get(i, np.zeros(0, np.int64)), recorded.filter(pa.array(owners == i)))
        for i, rows in known.stale.items():
            drop.setdefault(i, (rows, None))
        for i, (rows, recorded) in drop.items():
            self._rewrite(known.parts[i], rows, recorded)

    def replaces(self, keys_: pa.Array, at: np.ndarray) -> None:
        """The keys this run may record that have a record already (``at``: its index in
        `Known`): the end of the run takes them out of their parts without reading the whole
        record's keys again."""
        self.replacing = (keys_, self.known.part[at])

    def _rewrite(self, part: Part, rows: np.ndarray, recorded: pa.Array | None) -> None:
        """``part`` without ``rows`` (positions) and the ``recorded`` keys, a piece at a time;
        removed when nothing is left."""
        gone_rows = np.zeros(part.rows, bool)
        gone_rows[rows] = True
        lookup = keys.Lookup(recorded) if recorded is not None and len(recorded) else None

        def kept():
            start = 0
            for t in _pieces(part.path):
                gone = gone_rows[start:start + t.num_rows]
                start += t.num_rows
                if lookup is not None:
                    gone = gone | (lookup.index_in(t["key"]) >= 0)
                yield t.filter(pa.array(~gone))

        part.rows = _write_pieces(part.path, kept())
        if not part.rows:
            part.path.unlink()
            storage.fsync_dir(part.path.parent)

    def _merge(self) -> None:
        """Per group: this run's parts into one, then the newest two while the newer is at least
        half the older. A group's parts then at least double in size from the newest to the
        oldest: log2 of its rows at most, and a row is rewritten that many times in its life."""
        old = [p for p in self.known.parts if p.path.exists() and p.rows]
        mine = [p for p in self.mine if p.path.exists() and p.rows]
        for g in GROUPS:
            parts = [p for p in old if p.group == g]
            run = [p for p in mine if p.group == g]
            if len(run) > 1:
                run = [_merged(run)]
            parts += run
            while len(parts) >= 2 and parts[-1].rows * 2 >= parts[-2].rows:
                parts[-2:] = [_merged(parts[-2:])]


def _groups(status: pa.Array) -> np.ndarray:
    out = np.full(len(status), "error", dtype=object)
    for g, values in (("ok", ["ok"]), ("skipped", ["skipped"]), ("failed", list(PERMANENT))):
        out[pc.is_in(status, value_set=pa.array(values)).to_numpy(zero_copy_only=False)] = g
    return out


def _merged(parts: list[Part]) -> Part:
    """One part of ``parts`` (disjoint), under the newest one's name; the others removed after."""
    newest = parts[-1]
    rows = _write_pieces(newest.path, (t for p in parts for t in _pieces(p.path)))
    for p in parts[:-1]:
        p.path.unlink()
    storage.fsync_dir(newest.path.parent)
    return Part(newest.path, newest.seq, newest.group, rows)


PIECE_ROWS = 100_000  # rows of a part read and written at a time: a merge never holds two parts whole


def _pieces(path: Path):
    """A part's rows as tables of the record's columns, `PIECE_ROWS` at a time."""
    try:
        with storage.open_regular(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=PIECE_ROWS):
                yield canonical(pa.Table.from_batches([batch]))
    except (pa.ArrowException, ValueError) as e:
        raise untrusted.Untrusted(f"{path}: not a parquet table ({untrusted.printable(str(e))})") from None


def _write_pieces(path: Path, pieces) -> int:
    """``pieces`` as one parquet file at ``path`` (atomically); its rows."""
    rows = 0

    def write(tmp: str) -> None:
        nonlocal rows
        with pq.ParquetWriter(tmp, SCHEMA) as w:
            for t in pieces:
                w.write_table(t)
                rows += t.num_rows

    storage.atomic_write(path, write)
    return rows


def _write(path: Path, table: pa.Table) -> None:
    storage.atomic_write(path, lambda p: pq.write_table(table, p))


def _parts_from_legacy(root: Path, known: Known) -> None:
    """The ``download.parquet`` file of before issue 29 as parts (all of it, once, a piece at a
    time): written to a folder aside, then swapped in (a run killed in between finds the file in
    .download/ and starts again)."""
    staging = Path(root) / STATE_DIR / "parts-from-legacy"
    shutil.rmtree(staging, ignore_errors=True)
    storage.folder_inside(root, STATE_DIR, "parts-from-legacy")
    gone_rows = np.zeros(known.parts[0].rows, bool)
    gone_rows[known.stale.get(0, np.zeros(0, np.int64))] = True  # rows the journal replaces
    writers: dict[str, pq.ParquetWriter] = {}
    try:
        start = 0
        for t in _pieces(known.legacy):
            n = t.num_rows
            t = t.filter(pa.array(~gone_rows[start:start + n]))
            start += n
            groups = _groups(array(t["status"]))
            for g in GROUPS:
                rows = t.filter(pa.array(groups == g))
                if rows.num_rows:
                    if g not in writers:
                        writers[g] = pq.ParquetWriter(staging / f"{0:08d}-{g}.parquet", SCHEMA)
                    writers[g].write_table(rows)
    finally:
        for w in writers.values():
            w.close()
    for name in os.listdir(staging):
        fd = os.open(staging / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    storage.fsync_dir(staging)
    folder, moved = Path(root) / RECORD, _legacy_moved(root)
    if known.legacy != moved:
        os.replace(folder, moved)
    os.replace(staging, folder)
    storage.fsync_dir(root)
    moved.unlink()
    storage.fsync_dir(moved.parent)
