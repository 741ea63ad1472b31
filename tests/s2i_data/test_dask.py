"""Executors on real failures. The Dask executor on a real cluster: a scheduler and two workers
started with the `dask` CLI on loopback build the synthetic set to the very bytes the local
executor writes, and a worker killed inside `write_shard` costs that shard one rerun, nothing
more. The local pool retries a shard that raised and reports one that always does.

The failures are real ones, made from outside: a source video replaced by a FIFO that nobody
writes (a hung network mount) stalls ffmpeg inside `write_shard`; the test then kills that
ffmpeg (the shard raises `FFmpegKilled`) or the worker process running it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import distributed  # a hard dependency (pyproject): missing, this module must fail, not skip
import pandas as pd
import pytest

CLASSES = "baby,dog,rail,fireworks,water"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` + two `dask worker` processes (one thread each) on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    # the scheduler can import this module (functions run on it by reference)
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    # A task whose worker dies is rerun by the scheduler once; a second death comes back to the
    # client as KilledWorker (the default allows 3): both layers of rerun within two kills.
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              env={**env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"})]
    try:
        for _ in range(100):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.2)
        for i in range(2):
            procs.append(subprocess.Popen([*worker, "--scheduler-file", str(sched_file), "--nthreads", "1",
                                           "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1",
                                           "--name", f"w{i}", "--local-directory", str(tmp / f"w{i}")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        with distributed.Client(scheduler_file=str(sched_file), timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
            address = c.scheduler.address
        yield {"file": sched_file, "address": address}
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def build(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(build_cmd(root, out, *extra), capture_output=True, text=True, timeout=600)


def build_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root), "--classes", CLASSES,
            "--out", str(out), "--shard-size", "8", "--no-progress", *extra]


def digest_tree(out: Path) -> dict[str, str]:
    """Every file a build writes, by content: shards, manifests and stats byte for byte; the
    per-shard stats less the time and memory it took; build.json less the output path."""
    digests = {}
    for p in sorted(q for q in out.rglob("*") if q.is_file()):
        data = p.read_bytes()
        if p.parent.name == "shards" and p.suffix == ".json":
            stats = json.loads(data)
            stats.pop("seconds"), stats.pop("peak_rss_mb")
            data = json.dumps(stats, sort_keys=True).encode()
        elif p.name == "build.json":
            info = json.loads(data)
            info["config"].pop("out"), info["config"].pop("executor"), info["config"].pop("scheduler")
            info["config"].pop("workers")
            data = json.dumps(info, sort_keys=True).encode()
        digests[str(p.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return digests


@pytest.fixture(scope="module")
def corpus(synth_videos, tmp_path_factory) -> dict:
    """A copy of the synthetic videos (the failure tests stall one of them) and its clean local
    build, the reference every build below must reach."""
    tmp = tmp_path_factory.mktemp("corpus")
    shutil.copytree(synth_videos, tmp / "videos")
    res = build(tmp / "videos", tmp / "clean", "--workers", "2")
    assert res.returncode == 0, res.stderr
    return {"root": tmp / "videos", "clean": tmp / "clean", "digest": digest_tree(tmp / "clean")}


def pending_again(out: Path, *names: str) -> None:
    """Shards of a finished build made to do again: tar and resume marker gone."""
    for name in names:
        (out / name).unlink()
        (out / "_build" / "shards" / Path(name).with_suffix(".json").name).unlink()


def stall(out: Path, shard: str, aside: Path) -> tuple[Path, Path]:
    """One video of ``shard`` replaced by a FIFO that nobody writes: the ffmpeg decoding it for
    the shard blocks on opening it, as on a hung network mount. Returns (FIFO, the real file)."""
    plan = pd.read_parquet(out / "_build" / "plan.parquet")
    source = Path(sorted(plan[plan["shard"] == shard]["source"])[0])
    real = aside / source.name
    shutil.move(source, real)
    os.mkfifo(source)
    return source, real


def ffmpeg_on(path: Path, skip: set[int] = frozenset()) -> tuple[int, int] | None:
    """(pid, parent pid) of a live ffmpeg whose arguments name ``path``, if there is one."""
    want = os.fsencode(path)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            args = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if want in args and b"ffmpeg" in os.path.basename(args[0]):
            return int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])
    return None


def wait_for_ffmpeg_on(path: Path, proc: subprocess.Popen, skip: set[int] = frozenset(),
                       timeout: float = 120) -> tuple[int, int] | None:
    """The ffmpeg blocked on ``path``, waited for; None once ``proc`` (the build) has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = ffmpeg_on(path, skip)
        if found:
            return found
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    raise AssertionError(f"no ffmpeg opened {path} within {timeout} s")


def unstall(fifo: Path, real: Path) -> None:
    os.replace(real, fifo)  # the blocked ffmpeg keeps waiting on the FIFO it opened; a new one reads the video


def test_dask_cluster_build_is_byte_identical_to_local(corpus, cluster, tmp_path):
    on_dask = build(corpus["root"], tmp_path / "dask", "--executor", "dask", "--scheduler", cluster["address"])
    assert on_dask.returncode == 0, on_dask.stderr
    a = corpus["digest"]
    assert any(k.endswith(".tar") for k in a) and "manifest.parquet" in a
    assert digest_tree(tmp_path / "dask") == a
    # a shard lost mid-write (its marker never written) is redone by the next run, as locally
    (tmp_path / "dask" / "_build" / "shards" / "train-000001.json").unlink()
    (tmp_path / "dask" / "train" / "train-000001.tar").rename(tmp_path / "dask" / "train" / ".train-000001.tar.tmp-1")
    again = build(corpus["root"], tmp_path / "dask", "--executor", "dask", "--scheduler", cluster["address"])
    assert again.returncode == 0 and "resumed" in again.stdout + again.stderr, again.stderr
    assert digest_tree(tmp_path / "dask") == a


def test_local_cluster_when_no_scheduler_is_given(synth_videos, tmp_path):
    res = build(synth_videos, tmp_path / "lc", "--executor", "dask", "--workers", "2", "--limit", "3")
    assert res.returncode == 0, res.stderr
    ref = build(synth_videos, tmp_path / "ref", "--workers", "2", "--limit", "3")
    assert ref.returncode == 0, ref.stderr
    assert digest_tree(tmp_path / "lc") == digest_tree(tmp_path / "ref")


def test_a_cluster_started_for_a_build_that_stops_early_is_closed(monkeypatch):
    from s2i_data.executors import DaskExecutor

    # Dask's nannies write their workers' settings into the environment of the process that runs
    # them: a LocalCluster must leave this process's as it found it (every later child inherits it)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ex = DaskExecutor(workers=1)
    ex.start()  # what a build does before it probes
    client, cluster = ex._starting.result(timeout=60)
    assert client.submit(lambda: 1 + 1).result(timeout=30) == 2
    ex.close()  # the build stopped before its shards: nothing may stay behind
    assert client.status == "closed" and cluster.status.name == "closed"
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ and os.environ["OMP_NUM_THREADS"] == "2"
    ex.close()  # and closing twice is harmless


def test_bad_executor_settings_are_one_line(synth_videos, tmp_path):
    for args, said in [(["--executor", "spark"], "--executor must be local or dask"),
                       (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask")]:
        res = build(synth_videos, tmp_path / "x", *args)
        assert res.returncode != 0 and said in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "x").exists()


def _log_length(dask_scheduler) -> int:
    return len(dask_scheduler.transition_log)


def _starts_since(first: int, dask_scheduler=None) -> dict[str, int]:
    """How many times each task was set running ("processing") in the log entries from ``first``."""
    import itertools

    starts: dict[str, int] = {}
    for key, _, finish, *_ in itertools.islice(dask_scheduler.transition_log, first, None):
        if finish == "processing":
            starts[str(key)] = starts.get(str(key), 0) + 1
    return starts


def test_workers_killed_inside_write_shard_cost_that_shard_its_reruns(corpus, cluster, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(corpus["clean"], out)
    pending_again(out, "train/train-000001.tar", "val/val-000000.tar")
    fifo, real = stall(out, "train/train-000001.tar", tmp_path)
    with distributed.Client(scheduler_file=str(cluster["file"]), timeout="30s") as c:
        first = c.run_on_scheduler(_log_length)
        proc = subprocess.Popen(build_cmd(corpus["root"], out, "--executor", "dask", "--scheduler",
                                          cluster["address"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        killed, stalled = [], []
        try:
            # Each worker that reaches the stalled video is killed there, inside write_shard: the
            # first death is rerun by the scheduler, the second comes back as KilledWorker and is
            # resubmitted by the executor (attempt 1), which finds the video back.
            for death in (1, 2):
                found = wait_for_ffmpeg_on(fifo, proc, skip=set(stalled))
                assert found, proc.communicate()
                ffmpeg, worker = found
                # a Dask worker process, decoding the stalled video for the shard
                assert worker in set(c.run(os.getpid, on_error="ignore").values())
                if death == 2:
                    unstall(fifo, real)
                os.kill(worker, signal.SIGKILL)
                os.kill(ffmpeg, signal.SIGKILL)  # orphaned, still waiting on the FIFO
                killed.append(worker)
                stalled.append(ffmpeg)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and "resumed" in stdout, stderr
        assert len(set(killed)) == 2
        starts = {k: n for k, n in c.run_on_scheduler(_starts_since, first).items() if k.startswith("s2i-shard-")}
        # the killed shard: run twice under its first key (the scheduler's rerun), once more
        # under the executor's retry key; the other pending shard once; nothing else ran
        assert starts == {"s2i-shard-train-train-000001.tar-0": 2, "s2i-shard-train-train-000001.tar-1": 1,
                          "s2i-shard-val-val-000000.tar-0": 1}, starts
        c.wait_for_workers(2, timeout=60)  # their nannies brought them back for the tests after this one
    assert digest_tree(out) == corpus["digest"]


def test_the_local_pool_retries_a_shard_that_raised_and_reports_one_that_always_does(corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(corpus["clean"], out)
    once, always = "train/train-000001.tar", "val/val-000000.tar"
    pending_again(out, once, always)
    (tmp_path / "once").mkdir(), (tmp_path / "always").mkdir()
    stalled = {once: stall(out, once, tmp_path / "once"), always: stall(out, always, tmp_path / "always")}
    proc = subprocess.Popen(build_cmd(corpus["root"], out, "--workers", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed: dict[str, list[int]] = {once: [], always: []}
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            for shard, (fifo, real) in stalled.items():
                found = ffmpeg_on(fifo, skip={p for ps in killed.values() for p in ps})
                if found and not (shard == once and killed[once]):
                    if shard == once:
                        unstall(fifo, real)  # the video is back for the retry
                    os.kill(found[0], signal.SIGKILL)  # ffmpeg dies of a signal: the shard raises FFmpegKilled
                    killed[shard].append(found[0])
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # once: retried, and redone whole (not recorded as failed samples of a bad file); always:
    # the first attempt and retries=2, then reported while the other shards went on
    assert len(killed[once]) == 1 and len(killed[always]) == 3, killed
    assert proc.returncode == 1, stderr
    assert f"shard failed: {always}: FFmpegKilled" in stderr and "1 shard(s) failed" in stderr, stderr
    assert "resumed" in stdout and once not in stderr, stderr
    stats = json.loads((out / "stats.json").read_text())
    assert not stats["complete"] and stats["pending_shards"] == [always]
    got = digest_tree(out)
    for name, sha in corpus["digest"].items():
        if name.endswith(".tar") or name.startswith("_build/shards/"):
            assert got.get(name) == (None if "val-000000" in name else sha), name
    unstall(*stalled[always])
