"""What a download run knows and keeps: ``ROOT/download.parquet``, its journal, and the lock.

``download.parquet`` has one row per CSV row of every run into ROOT (by ``key`` =
``<ytid>_<start:06d>``): ytid, start, end, class, split, status, reason, attempts, bytes, sha256,
duration, file. It is rewritten whole (atomically) at the end of a run. While a run goes, each
finished row is appended to ``ROOT/.download/journal.jsonl`` and fsynced, so a run killed at any
moment loses nothing it finished; the next run reads the parquet, then the journal (later lines
win, a torn last line is ignored), and removes the journal once the parquet holds it all. Both
may come from another lab's copy of ROOT: every record passes `untrusted.download_record` (a
record that does not stops the run with one line, before anything is written).

``ROOT/.download/lock`` is held with ``flock`` for the whole run: one download into a ROOT at a time
(the kernel drops it when the process dies, however it dies).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
from pathlib import Path

import pandas as pd

from s2i_data import storage, untrusted

COLUMNS = ["ytid", "start", "end", "class", "split", "status", "reason", "attempts", "bytes", "sha256",
           "duration", "file"]
STATUSES = ("ok", "unavailable", "private", "removed", "error", "skipped")
PERMANENT = ("unavailable", "private", "removed")  # skipped by a re-run unless --retry-failed
STATE_DIR = ".download"


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


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def load(root: Path) -> dict[str, dict]:
    """key → the last record of every row downloaded into ROOT before."""
    records: dict[str, dict] = {}
    table = Path(root) / "download.parquet"
    if table.is_file():
        df = pd.read_parquet(table)
        for i, rec in enumerate(df.to_dict("records")):
            rec = untrusted.download_record({k: _plain(v) for k, v in rec.items()}, f"{table}: row {i}")
            records[rec["key"]] = rec
    journal = _journal(root)
    if journal.is_file():
        with open(journal, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # the torn last line of a killed run
                rec = untrusted.download_record(rec, f"{journal}: line {n}")
                records[rec["key"]] = rec
    return records


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

    def close(self) -> None:
        self.f.close()


def save(root: Path, records: dict[str, dict]) -> pd.DataFrame:
    """Write download.parquet from ``records`` (atomically), then drop the journal it now holds."""
    df = pd.DataFrame(list(records.values()), columns=["key", *COLUMNS])
    df = df.sort_values("key", kind="stable").reset_index(drop=True)
    for col in ("start", "end", "duration"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("attempts", "bytes"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("ytid", "class", "split", "status", "reason", "sha256", "file"):
        df[col] = df[col].fillna("").astype(str)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    storage.atomic_write(Path(root) / "download.parquet", lambda p: pq.write_table(table, p))
    _journal(root).unlink(missing_ok=True)
    return df
