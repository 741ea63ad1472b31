"""The download's promises, measured at the server: the rate over threads and over Dask worker
processes, the journal across a ``kill -9``, the retry waits (backoff·2^k, Retry-After), and the
lock on ROOT.

Each test runs the real download (yt-dlp, the guard) against a real HTTP server on 127.0.0.1
(`Watched`) and asserts on the server's own record of what it was asked and when (time.monotonic()
in this process as each request arrives), never on how long the run took. Rows answered 404 cost
one request and no ffmpeg, so that a run at a few requests a second keeps up with its rate even on
a busy machine (a run that cannot keep up could not show a rate that is too high).
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from childprocs import wait_for
from test_download import Mirror, cli, table


class Watched(Mirror):
    """The test mirror with other answers: a status (``404``, ``410``, ``503``: always that, no
    body); ``429:<value>`` (429 with that Retry-After on the first request, 404 after;
    ``429:date+N``: an HTTP date N s ahead); ``hold`` (the first request waits until `release` is
    set, `holding` set meanwhile; then 404). Any other id: 404.

    ``work``: a class folder of ROOT. An attempt makes its work folder
    ``.part-<key>-<pid>-<thread>`` there before its first request, so the server reads in it which
    process and thread is asking (`fetchers`)."""

    def __init__(self, behaviour: dict[str, str], work: Path | None = None) -> None:
        super().__init__({}, behaviour)
        self.work = work
        self.fetchers: dict[str, list[tuple[int, int]]] = {}
        self.holding = threading.Event()
        self.release = threading.Event()

    def __exit__(self, *exc) -> None:
        self.release.set()  # a held request must not outlive the test
        super().__exit__(*exc)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        ytid = h.path.strip("/").rsplit(".", 1)[0]
        kind = self.behaviour.get(ytid, "404")
        first = not self.requests(ytid)
        self._who(ytid)
        if kind.isdigit():
            return self._answer(h, ytid, int(kind), HTTPStatus(int(kind)).phrase)
        if kind.startswith("429:") and first:
            value = kind[4:]
            if value.startswith("date+"):
                value = email.utils.formatdate(time.time() + float(value[5:]), usegmt=True)
            return self._answer(h, ytid, 429, "Too Many Requests", {"Retry-After": value})
        if kind == "hold" and first:
            self._note(ytid, 404)  # the time it asked, not the time it was answered
            self.holding.set()
            self.release.wait(120)
            return self._answer(h, ytid, 404, "Not Found", noted=True)
        return self._answer(h, ytid, 404, "Not Found")

    def _answer(self, h, ytid: str, code: int, words: str, headers: dict | None = None, noted: bool = False) -> None:
        if not noted:
            self._note(ytid, code)
        try:
            h.send_response(code, words)
            for k, v in {**(headers or {}), "Content-Length": "0"}.items():
                h.send_header(k, v)
            h.end_headers()
        except OSError:
            pass  # the client is gone (killed while it waited)

    def _who(self, ytid: str) -> None:
        if self.work is None:
            return
        try:
            names = os.listdir(self.work)
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith(f".part-{ytid}_"):
                _, pid, thread = name.rsplit("-", 2)
                with self.lock:
                    self.fetchers.setdefault(ytid, []).append((int(pid), int(thread)))

    def times(self, ids: list[str]) -> list[float]:
        with self.lock:
            return sorted(t for t, i, _ in self.log if i in set(ids))


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f"{y},0,10,dog\n" for y in ids))
    return path


def download_in_child(timeout: float = 180, **cfg) -> subprocess.CompletedProcess:
    """`download(DownloadConfig(**cfg))` in a fresh process: for settings the command line does
    not offer (``chunk_rows``)."""
    code = ("import json, os, sys\nfrom s2i_data.download import DownloadConfig, download\n"
            "counts = download(DownloadConfig(**json.loads(sys.argv[1]))).counts\n"
            "print(json.dumps({'pid': os.getpid(), 'counts': counts}))\n")
    return subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------------------ the rate

RATE = 4  # requests a second: whole, for the per-second rule below
PACED_ROWS = 20


def assert_paced(times: list[float], rate: int) -> None:
    """Requests ``1/rate`` apart: the median gap within 20 % of it, and no second with more than
    ``rate`` requests. The count is exact; the second is shortened by two slots (2/rate), the
    lateness allowed to one request: a request leaves its slot late by what the process does
    between the slot and the socket (yt-dlp's TLS set-up, other threads holding the GIL, a sleep
    woken late), so on a busy machine requests of a correct run can arrive closer than 1/rate
    (seen with two training runs on both cores: one request 0.36 s late, five within 0.64 s; one
    slot of allowance failed there). A rate twice too high fails the median (1/(2·rate)), and a
    schedule that lets `rate` requests go at once puts rate+1 within one slot."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    median = statistics.median(gaps)
    shown = [round(g, 3) for g in gaps]
    assert abs(median - 1 / rate) <= 0.2 / rate, (median, shown)
    spans = [b - a for a, b in zip(times, times[rate:])]  # rate+1 consecutive requests
    assert min(spans) >= 1 - 2 / rate, (f"{rate + 1} requests within {min(spans):.3f} s", shown)


def _paced_mirror(tmp_path: Path) -> tuple[list[str], Path, Path]:
    ids = [f"pace{i:02d}" for i in range(PACED_ROWS)]
    return ids, write_ids(tmp_path / "ids.csv", ids), tmp_path / "root"


def _check_paced_run(mirror: Watched, ids: list[str], root: Path) -> set[tuple[int, int]]:
    """Every row fetched once (unavailable, one request each); who fetched."""
    t = table(root)
    assert sorted(t.index) == sorted(f"{y}_000000" for y in ids) and set(t["status"]) == {"unavailable"}, t
    assert [len(mirror.requests(y)) for y in ids] == [1] * len(ids)
    assert all(len(mirror.fetchers.get(y, [])) == 1 for y in ids), mirror.fetchers  # each seen fetching
    return {f for y in ids for f in mirror.fetchers[y]}


def test_the_rate_holds_over_threads(tmp_path):
    """Six threads, twenty rows: the threads share one schedule (twice the rate, or one schedule
    per thread, fails)."""
    ids, csv, root = _paced_mirror(tmp_path)
    with Watched({y: "404" for y in ids}, work=root / "dog") as mirror:
        run = cli("download", "--csv", str(csv), "--out", str(root), "--url-template", mirror.template,
                  "--rate", f"{RATE}/s", "--workers", "6", "--attempts", "1", "--no-progress")
        assert run.returncode == 0, run.stderr
        fetchers = _check_paced_run(mirror, ids, root)
        assert len({pid for pid, _ in fetchers}) == 1 and len(fetchers) >= 2, fetchers  # threads of one process
        assert_paced(mirror.times(ids), RATE)


def test_the_rate_holds_over_dask_worker_processes(tmp_path):
    """A LocalCluster of three worker processes, chunks of one row, twenty rows: the processes
    share one schedule kept by the scheduler (one schedule per process fails: three times the
    rate). The run prints nothing on stderr (the scheduler once logged a traceback for the first
    read of the schedule)."""
    ids, csv, root = _paced_mirror(tmp_path)
    with Watched({y: "404" for y in ids}, work=root / "dog") as mirror:
        run = download_in_child(csv=str(csv), out=str(root), url_template=mirror.template, rate=f"{RATE}/s",
                                workers=3, attempts=1, executor="dask", chunk_rows=1)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr and "ERROR" not in run.stderr, run.stderr
        said = json.loads(run.stdout.splitlines()[-1])
        assert said["counts"]["unavailable"] == PACED_ROWS, said
        fetchers = _check_paced_run(mirror, ids, root)
        pids = {pid for pid, _ in fetchers}
        assert len(pids) >= 2 and said["pid"] not in pids, fetchers  # worker processes, not the client
        assert_paced(mirror.times(ids), RATE)


# ------------------------------------------------------------------------------------ the journal

def test_rows_that_failed_for_good_are_not_asked_again_after_kill_9(tmp_path):
    """One thread: a 410 and a 404 row finish, the third row's request is held, the run is killed
    (-9: no parquet written). The re-run knows the first two from the journal and does not ask for
    them again; the row in flight is asked again."""
    root = tmp_path / "root"
    csv = write_ids(tmp_path / "ids.csv", ["gone1", "miss1", "held1"])
    args = ["download", "--csv", str(csv), "--out", str(root), "--workers", "1", "--rate", "0", "--no-progress"]
    journal = root / ".download" / "journal.jsonl"
    with Watched({"gone1": "410", "miss1": "404", "held1": "hold"}) as mirror:
        args += ["--url-template", mirror.template]
        proc = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert mirror.holding.wait(90), "the third row was never asked for"
            # The two rows before it are finished; their journal lines are written as each
            # finishes (by the main thread, a moment after): wait for that, not for a time. A run
            # that never writes them is killed after the deadline and asks again below.
            wait_for(lambda: journal.is_file() and all(k in journal.read_text() for k in ("gone1_", "miss1_")), 20)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            mirror.release.set()
        assert not (root / "download.parquet").exists()  # killed: only the journal knows
        asked = {y: len(mirror.requests(y)) for y in ("gone1", "miss1", "held1")}
        assert asked == {"gone1": 1, "miss1": 1, "held1": 1}, asked
        run = cli(*args)
        assert run.returncode == 0, run.stderr
        asked = {y: len(mirror.requests(y)) for y in ("gone1", "miss1", "held1")}
        assert asked == {"gone1": 1, "miss1": 1, "held1": 2}, asked
    t = table(root)
    assert t.loc["gone1_000000", "status"] == "removed" and t.loc["miss1_000000", "status"] == "unavailable"
    assert list(t.loc[["gone1_000000", "miss1_000000"], "attempts"]) == [1, 1]
    assert t.loc["held1_000000", "status"] == "unavailable"
    assert "(1 attempted now)" in run.stdout, run.stdout


# ------------------------------------------------------------------------------------ retries

BACKOFF = 0.4
ATTEMPTS = 4
RETRY_AFTER = 2  # s, well above the first backoff step


@pytest.fixture(scope="module")
def retried(tmp_path_factory):
    """One run, four threads: a row always 503; rows answered 429 once, with a Retry-After of 2 s,
    an HTTP date 3 s ahead, and an hour (more than the run waits: left for a later run)."""
    tmp = tmp_path_factory.mktemp("retries")
    behaviour = {"busy1": "503", "ra2": f"429:{RETRY_AFTER}", "radate": "429:date+3", "ralong": "429:3600"}
    csv = write_ids(tmp / "ids.csv", list(behaviour))
    with Watched(behaviour) as mirror:
        # an hour's Retry-After obeyed (or capped at the run's 600 s) would outlast the time-out
        run = cli("download", "--csv", str(csv), "--out", str(tmp / "root"), "--url-template", mirror.template,
                  "--workers", "4", "--attempts", str(ATTEMPTS), "--backoff", str(BACKOFF), "--rate", "0",
                  "--no-progress", timeout=60)
    assert run.returncode == 0, run.stderr
    return {"mirror": mirror, "table": table(tmp / "root")}


def _gaps(mirror: Watched, ytid: str) -> list[float]:
    times = [t for t, _ in mirror.requests(ytid)]
    return [b - a for a, b in zip(times, times[1:])]


def test_retry_waits_double_from_the_backoff(retried):
    """A 503 is retried ATTEMPTS times; the k-th wait is backoff·2^k. At the server a gap can only
    be longer than its wait (the wait starts after the answer); it is at most half as long again
    plus 0.4 s (one attempt's set-up on a busy machine), below the next step of a backoff off by
    one doubling."""
    mirror, t = retried["mirror"], retried["table"]
    assert [s for _, s in mirror.requests("busy1")] == [503] * ATTEMPTS
    gaps = _gaps(mirror, "busy1")
    for k, gap in enumerate(gaps):
        wait = BACKOFF * 2 ** k
        assert wait <= gap < 1.5 * wait + 0.4, (k, [round(g, 3) for g in gaps])
    row = t.loc["busy1_000000"]
    assert row["status"] == "error" and row["attempts"] == ATTEMPTS
    assert "503" in row["reason"] and f"(after {ATTEMPTS} attempts)" in row["reason"], row["reason"]


def test_a_retry_after_longer_than_the_backoff_is_waited_for(retried):
    """Retry-After 2 s and a date 3 s ahead (whole seconds: at least 2 s), against a backoff of
    0.4 s: the retry comes no sooner."""
    mirror, t = retried["mirror"], retried["table"]
    for ytid, at_least in (("ra2", RETRY_AFTER), ("radate", 1.9)):
        assert [s for _, s in mirror.requests(ytid)] == [429, 404], ytid
        gap = _gaps(mirror, ytid)[0]
        assert at_least <= gap < at_least + 2.5, (ytid, gap)
        assert t.loc[f"{ytid}_000000", "status"] == "unavailable" and t.loc[f"{ytid}_000000", "attempts"] == 2


def test_a_retry_after_beyond_the_runs_patience_ends_the_row_for_this_run(retried):
    """Retry-After an hour: not asked again in this run (no retry after the backoff, no ten-minute
    wait), an error a later run retries, saying why."""
    mirror, t = retried["mirror"], retried["table"]
    assert [s for _, s in mirror.requests("ralong")] == [429]
    row = t.loc["ralong_000000"]
    assert row["status"] == "error" and row["attempts"] == 1
    assert "Retry-After 3600 s: left for a later run" in row["reason"], row["reason"]


# ------------------------------------------------------------------------------------ the lock

def test_a_second_download_into_a_locked_root_exits_2_naming_the_first(tmp_path):
    """The first run is held by the server in its first request (it has the lock: it takes it
    before any row); a second run into the same ROOT stops at once with one line naming the first
    run's pid, asks for nothing and writes nothing; the first then finishes normally."""
    root = tmp_path / "root"
    with Watched({"held1": "hold", "other1": "404"}) as mirror:
        first = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", "download", "--csv",
                                  str(write_ids(tmp_path / "first.csv", ["held1"])), "--out", str(root),
                                  "--url-template", mirror.template, "--rate", "0", "--no-progress"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert mirror.holding.wait(90), "the first run never asked for its row"
            second = cli("download", "--csv", str(write_ids(tmp_path / "second.csv", ["other1"])), "--out", str(root),
                         "--url-template", mirror.template, "--rate", "0", "--no-progress", timeout=120)
            assert second.returncode == 2, (second.stdout, second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"(pid {first.pid})" in lines[0], second.stderr
            assert "being downloaded into by another run" in lines[0], second.stderr
            assert not mirror.requests("other1")
        finally:
            mirror.release.set()
            out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert list(table(root).index) == ["held1_000000"]  # nothing of the second run
