"""One build at a time per output: the folder lock (a second build refused at once, naming the
holder; freed by kill -9 so the next run resumes), the URL lease (live: refused; stale: taken
over; renewed while held), and outputs that cannot be written (one line, exit 2)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from s2i_data import storage
from s2i_data.lock import FolderLock, Lease, LockError
from childprocs import wait_for

CLASSES = "dog,water"


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def build_args(root, out, *extra: str) -> list[str]:
    return ["build", "--root", str(root), "--classes", CLASSES, "--out", str(out), "--shard-size", "4",
            "--workers", "1", "--no-progress", *extra]


def one_line_refusal(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stderr


def tree(folder: Path) -> dict[str, tuple]:
    """Every file and folder below ``folder``: (mtime ns, inode, bytes)."""
    got = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        got[str(p.relative_to(folder))] = (st.st_mtime_ns, st.st_ino, p.read_bytes() if p.is_file() else None)
    return got


def test_a_second_build_is_refused_at_once_naming_the_holder(synth_videos, tmp_path):
    out = tmp_path / "o"
    held = FolderLock(out)  # what a running build holds, taken through the same API
    held.acquire()
    held.claim()
    try:
        t0 = time.time()
        r = cli(*build_args(synth_videos, out), timeout=60)
        err = one_line_refusal(r)
        assert time.time() - t0 < 30  # refused, not queued behind the holder
        assert f"held by pid {os.getpid()} on host {socket.gethostname()} since " in err
        # Refused before probing or planning anything.
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["_build", "_build/lock"]
    finally:
        held.release()
    assert (out / "_build" / "lock").read_bytes() == b""  # idle: no holder named


def test_kill_9_frees_the_lock_and_the_next_run_resumes(synth_videos, tmp_path):
    out = tmp_path / "o"
    args = build_args(synth_videos, out, "--shard-size", "2", "--limit", "3")
    proc = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    markers = out / "_build" / "shards"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(markers.glob("*.json")) and proc.poll() is None:
            time.sleep(0.01)
        # Frozen mid-build, lock held: a deterministic "build still running".
        os.killpg(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, "the build finished before it could be stopped"
        record = json.loads((out / "_build" / "lock").read_text())
        assert record["pid"] == proc.pid
        err = one_line_refusal(cli(*args, timeout=60))
        assert f"held by pid {proc.pid} on host {socket.gethostname()}" in err
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    done = len(list(markers.glob("*.json")))
    total = len(set(pd.read_parquet(out / "_build" / "plan.parquet")["shard"]))
    assert 1 <= done < total, "the build finished before it could be killed"
    r = cli(*args)
    assert r.returncode == 0 and "resumed" in r.stdout, r.stderr
    assert json.loads((out / "stats.json").read_text())["complete"]
    assert (out / "_build" / "lock").read_bytes() == b""


def test_an_output_under_a_file_is_one_line(synth_videos, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker / "out", blocker):
        err = one_line_refusal(cli(*build_args(synth_videos, out)))
        assert "not writable" in err and "Not a directory" in err
    assert blocker.read_text() == "not a folder"


# Pre-imports what the refusal needs and reads the package data (the class table and ontology,
# cached for the process), then drops root: root ignores permission bits, and the interpreter's
# own files may sit where an unprivileged user cannot read (/root/.pyenv), as may the checkout (a
# clone in a home folder of mode 700). PREREAD=0 leaves the package data unread.
AS_NOBODY = """
import importlib, os, pkgutil, sys
import s2i_data.build, s2i_data.classes, s2i_data.cli, s2i_data.lock
# the CLI's libraries import parts of themselves on first use (typer's click parser, rich's emoji
# table, pydantic's plugin loader): with .venv inside a private clone (/root/s2i) nobody could
# read them after the drop
for top in ("typer", "click", "rich", "pydantic"):
    try:
        pkg = importlib.import_module(top)
    except ImportError:
        continue
    for found in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=lambda name: None):
        if found.name.endswith("__main__") or ".cli" in found.name:  # their own programs: they run
            continue
        try:
            importlib.import_module(found.name)
        except Exception:  # optional parts (rich's Jupyter support) whose own dependencies are absent
            pass
if os.environ.get("PREREAD") != "0":
    s2i_data.classes.class_table(); s2i_data.classes.ontology()
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.argv = ["s2i-data", *sys.argv[1:]]
s2i_data.cli.main()
"""


def private_package(tmp_path: Path) -> Path:
    """A copy of the s2i_data package (its manifests link followed) in a folder of mode 700, as a
    clone in a home folder is: after the drop, nobody can read it. Returns the folder to put on
    PYTHONPATH."""
    import s2i_data

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(Path(s2i_data.__file__).parent, private / "s2i_data",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return private


def run_as_nobody(args: list[str], package: Path, cwd: Path, preread: bool = True) -> subprocess.CompletedProcess:
    """``s2i-data ARGS`` with s2i_data imported from ``package``, as user nobody when run as root
    (started in ``cwd``: python -c puts the current folder first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": str(package), "PREREAD": "1" if preread else "0"}
    return subprocess.run([sys.executable, "-c", AS_NOBODY, *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


@pytest.fixture
def shared_base():
    """A folder every user may enter (not pytest's tmp: that is private to its owner)."""
    base = Path(tempfile.mkdtemp(prefix="s2i-ro-"))
    base.chmod(0o755)
    yield base
    for p in [base, *base.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    shutil.rmtree(base)


def test_a_read_only_output_folder_is_one_line(shared_base, tmp_path):
    """Wherever the checkout sits: the package is imported from a private folder."""
    base = shared_base
    package = private_package(tmp_path)
    root = base / "videos"
    (root / "dog").mkdir(parents=True)
    for name in ("out", "out-nested"):
        (base / name).mkdir()
        (base / name).chmod(0o555)
    for out in (base / "out", base / "out-nested" / "sub"):
        err = one_line_refusal(run_as_nobody(build_args(root, out), package, cwd=base))
        assert "not writable" in err and "Permission denied" in err
    assert not os.listdir(base / "out")


def test_unreadable_package_data_is_a_failed_read(shared_base, tmp_path):
    """The class table the build cannot read is reported as a read of that file, not as a write."""
    base = shared_base
    package = private_package(tmp_path)
    table = package / "s2i_data" / "manifests" / "classes.csv"
    table.chmod(0)  # unreadable to anyone but root, and root drops to nobody in the child
    root = base / "videos"
    (root / "dog").mkdir(parents=True)
    err = one_line_refusal(run_as_nobody(build_args(root, base / "out"), package, cwd=base, preread=False))
    assert f"cannot read {table}: Permission denied" in err, err
    assert "cannot write" not in err, err
    assert not (base / "out").exists()


def write_lease(remote: Path, age_s: float) -> dict:
    then = time.time() - age_s
    rec = {"owner": "someone-else", "pid": 4242, "host": "elsewhere", "started_unix": then - 5,
           "renewed_unix": then}
    (remote / "_build").mkdir(parents=True, exist_ok=True)
    (remote / "_build" / "lease.json").write_text(json.dumps(rec))
    return rec


def test_a_live_lease_at_a_url_refuses_the_build(synth_videos, tmp_path):
    remote = tmp_path / "remote"
    write_lease(remote, age_s=30)
    before = tree(remote)
    r = cli(*build_args(f"local://{synth_videos}", f"local://{remote}"), env={"S2I_STAGING": str(tmp_path / "st")})
    err = one_line_refusal(r)
    assert "held by pid 4242 on host elsewhere since " in err
    assert re.search(r"lease renewed 3\d s ago \(one not renewed for 10 min is taken over\)", err), err
    assert tree(remote) == before


def test_a_stale_lease_is_taken_over_and_a_finished_url_build_is_left_alone(synth_videos, tmp_path):
    remote = tmp_path / "remote"
    write_lease(remote, age_s=3600)
    args = build_args(f"local://{synth_videos}", f"local://{remote}", "--limit", "3")
    env = {"S2I_STAGING": str(tmp_path / "st")}
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"warning: took over a stale build lease of pid 4242 on host elsewhere since .*, "
                     r"not renewed for 60 min", r.stderr), r.stderr
    assert not (remote / "_build" / "lease.json").exists()  # released at the end
    assert storage.read_json(f"local://{remote}/stats.json")["complete"]
    before = tree(remote)
    again = cli(*args, env=env)
    assert again.returncode == 0 and "already complete: nothing written" in again.stdout, again.stderr
    assert tree(remote) == before  # not even a lease written and removed


def test_a_lease_is_renewed_while_held_and_removed_after():
    url = f"memory:///s2i-lease-{os.getpid()}"
    a = Lease(url, renew_s=0.05, settle_s=0)
    a.acquire()
    try:
        first = a.read()["renewed_unix"]
        assert wait_for(lambda: a.read()["renewed_unix"] > first), "the lease was never renewed"
        assert a.read()["owner"] == a.token
        with pytest.raises(LockError, match=rf"held by pid {os.getpid()} on host "):
            Lease(url, settle_s=0).acquire()
    finally:
        a.release()
    assert not storage.exists(a.loc)


def test_a_lease_taken_over_mid_build_is_left_to_its_new_holder():
    url = f"memory:///s2i-lease-lost-{os.getpid()}"
    # a's first renewal comes after b has taken over (a second is ages for b's few reads and
    # writes in memory): renewal is itself read-then-write, and one straddling b's write would
    # hand the lease back to a.
    a = Lease(url, renew_s=1.0, settle_s=0)
    a.acquire()
    b = Lease(url, stale_s=0, settle_s=0)  # as if a had not renewed for the stale interval
    b.acquire()
    try:
        assert b.warnings and "took over a stale build lease" in b.warnings[0]
        assert wait_for(lambda: a.lost is not None), "a's renewal never noticed the takeover"
        a.release()
        assert a.lost is not None and "taken over" in a.warnings[-1]
        assert a.read()["owner"] == b.token  # a did not remove b's lease
    finally:
        b.release()
    assert not storage.exists(b.loc)


def test_a_write_probe_left_by_a_killed_run_does_not_make_the_folder_foreign(tmp_path):
    from s2i_data.build import WRITE_PROBE, check_output
    from s2i_data.config import BuildConfig

    (tmp_path / "o" / "_build").mkdir(parents=True)
    (tmp_path / "o" / f"{WRITE_PROBE}1234").touch()  # killed between its create and its unlink
    assert check_output(tmp_path / "o", BuildConfig(classes=["dog"])) is False
