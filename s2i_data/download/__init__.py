"""`s2i-data download`: the windows a CSV names, fetched with yt-dlp into ``ROOT/<class>/<key>.mp4``.

The walk: `rows.read_rows` (the CSV, bad lines kept with a reason) → the state of earlier runs
(`manifest.load`) decides what is left to do → each row is fetched (`fetch.fetch`) by one of
``workers`` threads, or by Dask workers in chunks, every attempt taking a slot of the global rate
(`ratelimit`) → each finished row goes to the journal at once → ``download.parquet`` at the end.

A re-run skips rows that are ``ok`` (their file still there) and permanent failures
(unavailable, private, removed; ``retry_failed`` retries them) and tries again the rest
(``error``, rows never reached). Transient failures are retried within a run up to ``attempts``
times with exponential backoff (``backoff_s``·2^k, k = 0, 1, ...; at least the server's
``Retry-After``, at most ``MAX_WAIT_S``). A clip under its final name without a record (a run
killed between the rename and the journal line) is checked and recorded as ``ok``.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import manifest
from .fetch import VIDEO_EXTS, FetchSettings, Incomplete, Outcome, check_clip, fetch as fetch_window
from .ratelimit import DaskSchedule, Schedule, parse_rate
from .rows import FORMATS, Row, read_rows

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
    table: pd.DataFrame  # download.parquet as written
    done_now: int  # rows attempted by this run
    counts: dict[str, int]  # status → rows of this CSV's selection

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[~self.table["status"].isin(["ok"])]


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


# ------------------------------------------------------------------------------------ planning

class _Listing:
    """The clips already under final names, one listing per class folder (not a stat per row:
    at AudioSet scale on a shared file system that is millions of round trips)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders: dict[str, dict[str, str]] = {}

    def find(self, row: Row) -> Path | None:
        if row.cls not in self.folders:
            names: dict[str, str] = {}
            try:
                with os.scandir(self.root / row.cls) as it:
                    for e in it:
                        stem, dot, ext = e.name.rpartition(".")
                        if dot and not e.name.startswith(".") and ext in VIDEO_EXTS and e.is_file():
                            names.setdefault(stem, e.name)
            except FileNotFoundError:
                pass
            self.folders[row.cls] = names
        name = self.folders[row.cls].get(row.key)
        return self.root / row.cls / name if name else None


def _remove_partials(root: Path) -> None:
    """Work folders of an interrupted run (never valid: their clip was not checked yet)."""
    with os.scandir(root) as it:  # a link in ROOT is not followed: nothing outside ROOT is removed
        folders = [e.path for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    for folder in folders:
        for p in Path(folder).glob(".part-*"):
            shutil.rmtree(p, ignore_errors=True)


def _adopt(root: Path, row: Row, path: Path, previous: dict | None) -> dict:
    """Record of a clip found under its final name with no ok record: checked, then kept."""
    try:
        duration = check_clip(path, row.end - row.start)
    except Incomplete as e:  # cannot happen for our own files; someone else's: set it aside
        return _record(row, Outcome("error", f"{path.name} is in the way and unusable: {e}"), 0)
    from .fetch import _sha256

    out = Outcome("ok", file=path.relative_to(root).as_posix(), bytes=path.stat().st_size, sha256=_sha256(path),
                  duration_s=duration)
    return _record(row, out, int((previous or {}).get("attempts") or 0))


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
    """Fetch what ``cfg.csv`` names into ``cfg.out``; resumable, one run per ROOT at a time."""
    root, rate = validate(cfg)
    try:
        rows = read_rows(cfg.csv, cfg.fmt, cfg.classes or None, cfg.window_s)
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


def _download_locked(cfg, root: Path, rate: float, rows: list[Row], on_row) -> DownloadResult:
    _remove_partials(root)
    records = manifest.load(root)
    journal = manifest.Journal(root)
    settings = FetchSettings(cfg.url_template, cfg.max_height, cfg.cookies and str(Path(cfg.cookies).resolve()),
                             read_timeout_s=cfg.read_timeout_s, clips=cfg.clips, min_speed_kBps=cfg.min_speed_kBps,
                             speed_window_s=cfg.speed_window_s, max_file_mb=cfg.max_file_mb)
    todo: list[Row] = []
    listing = _Listing(root)
    seen: set[str] = set()
    selection: list[str] = []

    def finish(rec: dict) -> None:
        records[rec["key"]] = rec
        journal.append(rec)
        if on_row:
            on_row(rec)

    try:
        for row in rows:
            if row.key in seen:
                continue  # listed twice: once, as first listed
            seen.add(row.key)
            selection.append(row.key)
            old = records.get(row.key)
            if row.reason:
                finish(_record(row, Outcome("skipped", row.reason), 0))
                continue
            found = listing.find(row)
            if found is not None:
                if not (old and old.get("status") == "ok"):
                    finish(_adopt(root, row, found, old))
                continue
            if old and old.get("status") in manifest.PERMANENT and not cfg.retry_failed:
                continue
            todo.append(row)
        previous = [int((records.get(r.key) or {}).get("attempts") or 0) for r in todo]
        if cfg.executor == "dask":
            _run_dask(cfg, root, settings, rate, todo, previous, finish)
        else:
            _run_threads(cfg, root, settings, rate, todo, previous, finish)
    finally:
        journal.close()
        table = manifest.save(root, records)  # also on Ctrl-C: what finished is kept
    mine = table[table["key"].isin(set(selection))]
    counts = {s: int((mine["status"] == s).sum()) for s in manifest.STATUSES}
    return DownloadResult(root, table, len(todo), counts)


def _run_threads(cfg, root, settings, rate, todo, previous, finish) -> None:
    """``workers`` daemon threads: a Ctrl-C returns at once (a thread in a download is abandoned;
    its work folder is removed by the next run)."""
    slots = Schedule(rate)
    work: queue.Queue = queue.Queue()
    for item in zip(todo, previous):
        work.put(item)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                row, prev = work.get_nowait()
            except queue.Empty:
                return
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


def _run_dask(cfg, root, settings, rate, todo, previous, finish) -> None:
    from s2i_data.executors import make_executor

    try:
        executor = make_executor("dask", cfg.workers, cfg.scheduler, retries=2)
    except ValueError as e:
        raise DownloadError(str(e)) from None
    slots = DaskSchedule(rate, f"s2i-download-{uuid.uuid4().hex[:12]}")
    n = max(1, cfg.chunk_rows)
    chunks = [Chunk(f"download-{i // n:06d}", todo[i:i + n], previous[i:i + n]) for i in range(0, len(todo), n)]
    try:
        failed = executor.run(download_chunk, chunks, args=(str(root), settings, slots, cfg.attempts, cfg.backoff_s),
                              on_done=lambda chunk, recs: [finish(r) for r in recs])
    finally:
        executor.close()
    for chunk, err in failed:  # a chunk whose worker kept dying: its rows are errors, retried next run
        for row, prev in zip(chunk.rows, chunk.previous):
            finish(_record(row, Outcome("error", f"worker failed: {err}"), prev + 1))
