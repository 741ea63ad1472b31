"""One writer per run folder: while a training holds RUN/.lock, a second training of any model, an
evaluation or a reference into the same folder is refused with one line (exit 2) naming the
holder's pid; kill -9 of the holder frees the folder and the next run takes it over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--width", "0.0625", "--batch-size", "8", "--workers", "0", "--device", "cpu"]
SECOND = {  # every command that writes into a run folder, at tiny sizes
    "train-autoencoder": ["--emb", "16", *TINY],
    "train-translator": ["--batch-size", "8", "--workers", "0", "--device", "cpu", "--optimizer", "adam"],
    "train-aivae": ["--latent", "8", *TINY],
    "train-aivaegan": ["--latent", "8", *TINY],
    "train-mmgan": TINY,
    "train-sound2scene": TINY,
}


def model_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def holder_record(lock: Path) -> dict | None:
    try:
        rec = json.loads(lock.read_text() or "null")
    except (OSError, ValueError):  # not created yet, or being written
        return None
    return rec if isinstance(rec, dict) else None


def start_holder(data: Path, run: Path) -> subprocess.Popen:
    """A training that will run far longer than the test, stopped (SIGSTOP) once it has recorded
    itself in RUN/.lock: a deterministic "training still running"."""
    proc = subprocess.Popen([sys.executable, "-m", "s2i_model.cli", "train-autoencoder", "--data", str(data),
                             "--run", str(run), "--epochs", "100000", "--emb", "16", *TINY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rec = holder_record(run / ".lock")
        if rec and rec.get("pid") == proc.pid:
            os.killpg(proc.pid, signal.SIGSTOP)
            # the training takes RUN/.lock twice (model.json, then the training itself): stopped
            # between the two, its record is gone; go on and stop it again once it holds the run
            rec = holder_record(run / ".lock")
            if rec and rec.get("pid") == proc.pid:
                return proc
            os.killpg(proc.pid, signal.SIGCONT)
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the training never recorded itself in the lock: {proc.communicate()[1]}")


def refused_naming(r: subprocess.CompletedProcess, pid: int) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"held by pid {pid} on host {socket.gethostname()}" in r.stderr, r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def finished(tiny_build, tmp_path_factory) -> Path:
    """A run folder with a finished autoencoder (what train-translator and evaluate need to get going)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    r = model_cli("train-autoencoder", "--data", str(tiny_build), "--run", str(run), "--epochs", "1",
                  "--emb", "16", *TINY)
    assert r.returncode == 0, r.stderr
    return run


def test_every_writer_is_refused_while_a_training_holds_the_run_and_kill_9_frees_it(tiny_build, finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    proc = start_holder(tiny_build, run)
    try:
        for command, extra in SECOND.items():
            r = model_cli(command, "--data", str(tiny_build), "--run", str(run), "--epochs", "1", *extra)
            assert "is locked by another training or evaluation" in refused_naming(r, proc.pid), command
        refused_naming(model_cli("evaluate", "--run", str(run), "--data", str(tiny_build)), proc.pid)
        # refused before anything in the folder was read, removed or written
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert holder_record(run / ".lock")["pid"] == proc.pid  # a dead holder's record stays behind ...
    r = model_cli("train-autoencoder", "--data", str(tiny_build), "--run", str(run), "--epochs", "1",
                  "--emb", "16", *TINY)
    assert r.returncode == 0, r.stderr  # ... and the next run takes the folder over
    assert (run / ".lock").read_bytes() == b""  # idle: nobody named


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tiny_build, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    r = model_cli("train-autoencoder", "--data", str(tiny_build), "--run", str(run), "--epochs", "1",
                  "--emb", "16", *TINY)
    assert r.returncode == 2 and "symbolic link" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
