"""`s2i-data download`: the windows a CSV names, fetched with yt-dlp into ``ROOT/<class>/<key>.mp4``.

The walk: `rows.read_table` (the CSV as columns, bad lines kept with a reason) → the record of
earlier runs (`manifest.load`) and one listing of each class folder decide what is left to do
(`plan`) → each row is fetched (`fetch.fetch`) by one of ``workers`` threads, or by Dask workers
in chunks, every attempt taking a slot of the global rate (`ratelimit`) → each finished row goes
to the journal at once, to parts of ``download.parquet`` every few thousand rows, and the end of
the run folds them in (`manifest.Writer`). Until the first request nothing is a Python object a
row: two million AudioSet rows are planned in seconds (issue 29, docs/performance.md).

A re-run skips rows that are ``ok`` (their file still there) and permanent failures
(unavailable, private, removed; ``retry_failed`` retries them) and tries again the rest
(``error``, rows never reached). Transient failures are retried within a run up to ``attempts``
times with exponential backoff (``backoff_s``·2^k, k = 0, 1, ...; at least the server's
``Retry-After``, at most ``MAX_WAIT_S``). A clip under its final name without a record (a run
killed between the rename and the journal line) is checked and recorded as ``ok``.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from . import manifest
from .fetch import FetchSettings, Incomplete, Outcome, check_clip, fetch as fetch_window
from .plan import make_plan, release_memory
from .ratelimit import DaskSchedule, Schedule, parse_rate
from .rows import FORMATS, Row, read_table

MAX_WAIT_S = 600.0  # a Retry-After longer than this ends the row's attempts for this run


class DownloadError(Exception):
    """Bad arguments or a ROOT that cannot take the download: one line for the user."""


@dataclass
class DownloadConfig:
    csv: str
    out: str
    fmt: str = "auto"  # auto | vggsound | audioset | plain
    classes: list[str] = field(default_factory=list)
    url_template: str = FetchSettings.url_template
    clips: bool = False  # the URLs serve the windows already cut
    max_height: int = 360
    rate: str = "2/s"
    workers: int = 4
    attempts: int = 4
    backoff_s: float = 2.0
    retry_failed: bool = False
    cookies: str | None = None
    executor: str = "local"  # local (threads) | dask
    scheduler: str | None = None
    window_s: float = 10.0
    chunk_rows: int = 32  # dask: rows per task
    read_timeout_s: float = FetchSettings.read_timeout_s
    min_speed_kBps: float = FetchSettings.min_speed_kBps
    speed_window_s: float = FetchSettings.speed_window_s
    max_file_mb: float = FetchSettings.max_file_mb


@dataclass
class DownloadResult:
    root: Path
    done_now: int  # rows attempted by this run
    counts: dict[str, int]  # status → rows of this CSV's selection

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """download.parquet as written (read when asked: two million rows at AudioSet scale)."""
        return manifest.read_record(self.root)

    @functools.cached_property
    def failures(self) -> pd.DataFrame:
        return manifest.read_record(self.root, failed_only=True)


def _record(row: Row, out: Outcome, attempts: int) -> dict:
    return {"key": row.key, "ytid": row.ytid, "start": row.start, "end": row.end, "class": row.cls,
            "split": row.split, "status": out.status, "reason": out.reason, "attempts": attempts,
            "bytes": out.bytes, "sha256": out.sha256, "duration": out.duration_s, "file": out.file}


def download_row(row: Row, root: str, settings: FetchSettings, slots, attempts: int, backoff_s: float,
                 previous_attempts: int = 0, stop: threading.Event | None = None) -> dict:
    """Fetch one row with retries; the record for download.parquet."""
    root_path = Path(root)
    tries = 0
    while True:
        tries += 1
        out = fetch_window(row.ytid, row.start, row.end, root_path / row.cls, row.key, root_path, settings, slots)
        if out.status == "ok" or not out.transient or tries >= attempts or (stop and stop.is_set()):
            break
        wait = backoff_s * 2 ** (tries - 1)
        if out.retry_after_s is not None:
            if out.retry_after_s > MAX_WAIT_S:
                out.reason += f" (Retry-After {out.retry_after_s:.0f} s: left for a later run)"
                break
            wait = max(wait, out.retry_after_s)
        if stop is not None:
            if stop.wait(min(wait, MAX_WAIT_S)):
                break
        else:
            time.sleep(min(wait, MAX_WAIT_S))
    if out.transient and out.status == "error":
        out.reason = f"{out.reason} (after {tries} attempt{'s' if tries > 1 else ''})"
    return _record(row, out, previous_attempts + tries)


@dataclass
class Chunk:
    name: str
    rows: list[Row]
    previous: list[int]


def download_chunk(chunk: Chunk, root: str, settings: FetchSettings, slots, attempts: int, backoff_s: float) -> list[dict]:
    """A Dask task: some rows, one after another."""
    return [download_row(r, root, settings, slots, attempts, backoff_s, p) for r, p in zip(chunk.rows, chunk.previous)]


# ------------------------------------------------------------------------------------ the run

def _adopt(root: Path, row: Row, path: Path, previous_attempts: int) -> dict:
    """Record of a clip found under its final name with no ok record: checked, then kept."""
    try:
        duration = check_clip(path, row.end - row.start)
    except Incomplete as e:  # cannot happen for our own files; someone else's: set it aside
        return _record(row, Outcome("error", f"{path.name} is in the way and unusable: {e}"), 0)
    from .fetch import _sha256

    out = Outcome("ok", file=path.relative_to(root).as_posix(), bytes=path.stat().st_size, sha256=_sha256(path),
                  duration_s=duration)
    return _record(row, out, previous_attempts)


class _Todo:
    """The rows to fetch, handed out one at a time: a `Row` is made when a worker takes it, a
    batch of the table at a time (two million Row objects would be gigabytes)."""

    BATCH = 256

    def __init__(self, plan) -> None:
        self.rows, self.todo, self.previous = plan.rows, plan.todo, plan.previous
        self.next, self.ready = 0, []
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.todo)

    def _batch(self, first: int, last: int) -> list[tuple[Row, int]]:
        picked = self.rows.take(pa.array(self.todo[first:last])).to_pylist()
        return [(Row(r["line"], r["ytid"], r["start"], r["end"], r["cls"], r["split"], "", r["key"]), int(p))
                for r, p in zip(picked, self.previous[first:last].tolist())]

    def take(self) -> tuple[Row, int] | None:
        with self.lock:
            if not self.ready:
                if self.next >= len(self.todo):
                    return None
                self.ready = self._batch(self.next, self.next + self.BATCH)[::-1]
                self.next += len(self.ready)
            return self.ready.pop()

    def all(self) -> list[tuple[Row, int]]:
        return self._batch(0, len(self.todo))


def validate(cfg: DownloadConfig) -> tuple[Path, float]:
    if cfg.fmt not in FORMATS:
        raise DownloadError(f"--format must be one of {', '.join(FORMATS)}, not {cfg.fmt!r}")
    if not Path(cfg.csv).is_file():
        raise DownloadError(f"--csv {cfg.csv}: no such file")
    if "{ytid}" not in cfg.url_template:
        raise DownloadError(f"--url-template {cfg.url_template!r} has no {{ytid}}")
    if cfg.cookies and not Path(cfg.cookies).is_file():
        raise DownloadError(f"--cookies {cfg.cookies}: no such file")
    if cfg.workers < 1 or cfg.attempts < 1 or cfg.max_height < 1 or cfg.backoff_s < 0 or cfg.window_s <= 0:
        raise DownloadError("--workers, --attempts and --max-height must be at least 1, --backoff at least 0")
    if not (cfg.read_timeout_s > 0 and cfg.speed_window_s > 0 and cfg.min_speed_kBps >= 0 and cfg.max_file_mb > 0):
        raise DownloadError("--read-timeout, --speed-window and --max-file-mb must be above 0, --min-speed at least 0")
    if cfg.executor not in ("local", "dask"):
        raise DownloadError(f"--executor must be local or dask, not {cfg.executor!r}")
    if cfg.scheduler and cfg.executor != "dask":
        raise DownloadError("--scheduler needs --executor dask")
    try:
        rate = parse_rate(cfg.rate)
    except ValueError as e:
        raise DownloadError(str(e)) from None
    root = Path(cfg.out).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise DownloadError(f"--out {cfg.out} is not a folder")
    return root, rate


def download(cfg: DownloadConfig, on_row: Callable[[dict], None] | None = None) -> DownloadResult:
    """Fetch what ``cfg.csv`` names into ``cfg.out``; resumable, one run per ROOT at a time.
    ``on_row``: called with the record of each row this run fetches or adopts."""
    root, rate = validate(cfg)
    try:
        rows = read_table(cfg.csv, cfg.fmt, cfg.classes or None, cfg.window_s)
        release_memory()
    except ValueError as e:
        raise DownloadError(str(e).splitlines()[0]) from None
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = manifest.RootLock(root).__enter__()
    except manifest.LockError as e:
        raise DownloadError(str(e)) from None
    except OSError as e:
        raise DownloadError(f"--out {cfg.out} is not writable: {e.strerror}") from None
    try:
        return _download_locked(cfg, root, rate, rows, on_row)
    finally:
        lock.__exit__()


def _download_locked(cfg, root: Path, rate: float, rows, on_row) -> DownloadResult:
    known = manifest.load(root)  # every record checked before anything is written
    writer = manifest.Writer(root, known)
    known = writer.known  # (a download.parquet of before issue 29 is parts now)
    release_memory()
    settings = FetchSettings(cfg.url_template, cfg.max_height, cfg.cookies and str(Path(cfg.cookies).resolve()),
                             read_timeout_s=cfg.read_timeout_s, clips=cfg.clips, min_speed_kBps=cfg.min_speed_kBps,
                             speed_window_s=cfg.speed_window_s, max_file_mb=cfg.max_file_mb)

    def finish(rec: dict) -> None:
        writer.add(rec)
        if on_row:
            on_row(rec)

    try:
        plan = make_plan(rows, known, root, cfg.retry_failed)
        del rows, known
        release_memory()
        writer.replaces(*plan.replacing)
        writer.add_table(plan.skipped)  # lines of the CSV: parts at once, not a journal line each
        for row, path, previous in plan.adopt:
            finish(_adopt(root, row, path, previous))
        todo = _Todo(plan)
        if cfg.executor == "dask":
            _run_dask(cfg, root, settings, rate, todo, finish)
        else:
            _run_threads(cfg, root, settings, rate, todo, finish)
    finally:
        writer.close()  # also on Ctrl-C: what finished is kept
    return DownloadResult(root, len(todo), manifest.count(root, manifest.array(plan.rows["key"])))


def _run_threads(cfg, root, settings, rate, todo: _Todo, finish) -> None:
    """``workers`` daemon threads: a Ctrl-C returns at once (a thread in a download is abandoned;
    its work folder is removed by the next run)."""
    slots = Schedule(rate)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            item = todo.take()
            if item is None:
                return
            row, prev = item
            try:
                results.put(download_row(row, str(root), settings, slots, cfg.attempts, cfg.backoff_s, prev, stop))
            except BaseException as e:  # noqa: BLE001 - a bug must not hang the run
                results.put(_record(row, Outcome("error", f"{type(e).__name__}: {e}"), prev + 1))

    threads = [threading.Thread(target=worker, daemon=True, name=f"s2i-download-{i}")
               for i in range(min(cfg.workers, max(1, len(todo))))]
    for t in threads:
        t.start()
    try:
        for _ in range(len(todo)):
            finish(results.get())
    finally:
        stop.set()


def _run_dask(cfg, root, settings, rate, todo: _Todo, finish) -> None:
    from s2i_data.executors import make_executor

    try:
        executor = make_executor("dask", cfg.workers, cfg.scheduler, retries=2)
    except ValueError as e:
        raise DownloadError(str(e)) from None
    slots = DaskSchedule(rate, f"s2i-download-{uuid.uuid4().hex[:12]}")
    n = max(1, cfg.chunk_rows)
    items = todo.all()  # the tasks are handed to the scheduler at once: Rows of every row to fetch
    chunks = [Chunk(f"download-{i // n:06d}", [r for r, _ in items[i:i + n]], [p for _, p in items[i:i + n]])
              for i in range(0, len(items), n)]
    try:
        failed = executor.run(download_chunk, chunks, args=(str(root), settings, slots, cfg.attempts, cfg.backoff_s),
                              on_done=lambda chunk, recs: [finish(r) for r in recs])
    finally:
        executor.close()
    for chunk, err in failed:  # a chunk whose worker kept dying: its rows are errors, retried next run
        for row, prev in zip(chunk.rows, chunk.previous):
            finish(_record(row, Outcome("error", f"worker failed: {err}"), prev + 1))
