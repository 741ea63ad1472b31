"""One build at a time per output: an OS lock for a local folder, a lease object for a URL.

Local folder: ``OUT/_build/lock``, held with ``flock`` from before the plan until the build
returns. The kernel drops it when the process dies, however it dies, so there is nothing stale
to clean up after a kill -9. The file stays (removing it would let a second build lock a fresh
inode while a third still waits on the old one). While a build holds it, it says who: pid, host
and start time as JSON; it is emptied again when the build ends. A run that finds the build
already complete locks, looks and leaves without writing the record (so it changes no byte).
On NFS, Linux maps ``flock`` to NFS byte-range locks, which work across clients (NFSv4, or v3
with lockd running); other network filesystems may not lock at all.

URL (fsspec): ``URL/_build/lease.json`` holds owner (a random token), host, pid, start time and
the time of its last renewal. Object stores offer no lock. The lease is taken by create-if-absent
(``pipe_file(mode="create")``: one conditional write where the backend has it, fsspec's generic
exists-then-put otherwise, which ``local://`` uses), or by check-then-write when a stale lease is
taken over; then, after ``LEASE_SETTLE_S``, it is read back and the build goes on only if it
still holds its own token. The window left open: two builds whose check and write straddle each
other's read-back (a request slower than the settle time) can both go on. A daemon thread renews
the lease every ``LEASE_RENEW_S``; a lease not renewed for ``LEASE_STALE_S`` (its holder died, or
hung that long) is taken over with a warning; a renewal is read-then-write too, so it could
still overwrite a takeover that lands between the two. Staleness compares the holder's clock
with ours: skew between hosts must stay well under that interval. A complete build at a URL is
recognised by reading alone, so a re-run there takes no lease. Environment settings:
``S2I_LEASE_STALE_S`` (600), ``S2I_LEASE_RENEW_S`` (60), ``S2I_LEASE_SETTLE_S`` (0.5).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from . import storage

BUILD_DIR = "_build"
LOCK_NAME = "lock"
LEASE_NAME = "lease.json"
LEASE_STALE_S = float(os.environ.get("S2I_LEASE_STALE_S", 600))  # 10 min without renewal
LEASE_RENEW_S = float(os.environ.get("S2I_LEASE_RENEW_S", 60))
LEASE_SETTLE_S = float(os.environ.get("S2I_LEASE_SETTLE_S", 0.5))  # wait before reading our lease back


class LockError(Exception):
    """Another build holds the output, or the output cannot be written: one line for the user."""


def holder_record(**extra) -> dict:
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "started_unix": now,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), **extra}


def describe(record: dict | None, what: str = "build") -> str:
    """'pid 1234 on host X since 10:31:02' (with the date when it is not today)."""
    if not record or "pid" not in record:
        return f"another {what} (it has not recorded itself yet)"
    since = record.get("started_unix")
    if isinstance(since, (int, float)):
        fmt = "%H:%M:%S" if time.localtime(since)[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
        when = time.strftime(fmt, time.localtime(since))
    else:
        when = str(record.get("started", "?"))
    return f"pid {record['pid']} on host {record.get('host', '?')} since {when}"


def _parse(data: bytes) -> dict | None:
    try:
        rec = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


class FolderLock:
    """``flock`` on ``OUT/_build/lock`` (or on ``path``: a run folder's own lock file); `acquire`
    writes nothing if the file exists. ``what`` and ``option`` name the writer and the option that
    chose the folder in refusals."""

    def __init__(self, out: Path, path: Path | None = None, what: str = "build", option: str = "--out") -> None:
        self.out = Path(out)
        self.path = Path(path) if path is not None else self.out / BUILD_DIR / LOCK_NAME
        self.what, self.option = what, option
        self.fd: int | None = None
        self.claimed = False
        self.warnings: list[str] = []

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Not inherited across exec (PEP 446), so an orphaned ffmpeg or Dask worker never
            # keeps the lock alive after the build itself has died. Never through a link left in
            # its place: the holder's record would be written into the file it points at.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            why = "it is a symbolic link" if os.path.islink(self.path) else e.strerror
            raise LockError(f"{self.option} {self.out} is not writable: {why}: {e.filename}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise LockError(f"cannot lock {self.path}: {e.strerror} (a filesystem without locks?)") from None
            record = _parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LockError(f"{self.out} is locked by another {self.what}: held by {_describe_local(record, self.what)} "
                            f"(wait for it to finish, or choose another {self.option})") from None
        self.fd = fd

    def claim(self) -> None:
        """Say who holds the lock (from now on this run will write)."""
        data = json.dumps(holder_record(out=str(self.out))).encode() + b"\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)
        self.claimed = True

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self.claimed:  # idle again: nobody to name
                os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # the lock goes with the last descriptor
            self.fd = None


def _describe_local(record: dict | None, what: str = "build") -> str:
    # The record may be a dead build's (kill -9 leaves it behind) if the holder has not written
    # its own yet: a run that finds the build complete never does.
    if record and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return describe(None, what)
        except PermissionError:
            pass
    return describe(record, what)


class Lease:
    """``URL/_build/lease.json``: taken in `acquire`, renewed by a daemon thread, removed in `release`."""

    def __init__(self, url: str, stale_s: float | None = None, renew_s: float | None = None,
                 settle_s: float | None = None) -> None:
        self.url = url
        self.loc = storage.join(url, BUILD_DIR, LEASE_NAME)
        self.stale_s = LEASE_STALE_S if stale_s is None else stale_s
        self.renew_s = LEASE_RENEW_S if renew_s is None else renew_s
        self.settle_s = LEASE_SETTLE_S if settle_s is None else settle_s
        self.token = secrets.token_hex(16)
        self.record = holder_record(owner=self.token)
        self.warnings: list[str] = []
        self.lost: dict | None = None  # the record that replaced ours, if one did
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def read(self) -> dict | None:
        try:
            return _parse(storage.read_bytes(self.loc))
        except FileNotFoundError:
            return None

    def _payload(self) -> bytes:
        now = time.time()
        self.record.update(renewed_unix=now, renewed=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)))
        return json.dumps(self.record, sort_keys=True).encode() + b"\n"

    def acquire(self) -> None:
        try:
            for attempt in range(3):
                if storage.create_bytes(self.loc, self._payload()):
                    break
                old = self.read()
                if old is None and attempt < 2 and not storage.exists(self.loc):
                    continue  # released between our create and our read: try creating again
                self._refuse_if_live(old)
                storage.write_bytes(self.loc, self._payload())  # check-then-write: see the module docstring
                break
            time.sleep(self.settle_s)
            now = self.read()
        except (OSError, ValueError) as e:
            raise LockError(f"--out {self.url}: cannot take the build lease: {e}") from None
        if not now or now.get("owner") != self.token:
            raise LockError(f"{self.url} is locked by another build: held by {describe(now)} "
                            "(it took the lease at the same moment)")
        self._held = True
        self._thread = threading.Thread(target=self._renew, name="s2i-lease", daemon=True)
        self._thread.start()

    def _refuse_if_live(self, old: dict | None) -> None:
        """Raise for a lease renewed within the stale interval; else note the takeover."""
        renewed = old.get("renewed_unix") if old else None
        if not isinstance(renewed, (int, float)):
            self.warnings.append(f"took over a build lease that cannot be read ({self.loc})")
            return
        age = time.time() - renewed
        if age < self.stale_s:
            raise LockError(f"{self.url} is locked by another build: held by {describe(old)}, lease renewed "
                            f"{max(age, 0):.0f} s ago (one not renewed for {self.stale_s / 60:g} min is taken over)")
        self.warnings.append(f"took over a stale build lease of {describe(old)}, "
                             f"not renewed for {age / 60:.0f} min ({self.loc})")

    def claim(self) -> None:
        """Already recorded by `acquire`."""

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                cur = self.read()
                if not cur or cur.get("owner") != self.token:
                    # Taken over: this build stalled past the stale interval. Writing on would
                    # fight the new holder; the build finishes and says so.
                    self.lost = cur or {}
                    return
                storage.write_bytes(self.loc, self._payload())
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next tick
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self._held:
            return
        self._held = False
        if self.lost is not None:
            self.warnings.append(f"the build lease was taken over by {describe(self.lost)} while this build ran; "
                                 "run verify on the output")
            return
        try:
            cur = self.read()
            if cur and cur.get("owner") == self.token:
                storage.remove(self.loc)
        except (OSError, ValueError):
            pass  # left behind, it turns stale and is taken over
