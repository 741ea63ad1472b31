"""The Dask executor on a real cluster: a scheduler and two workers started with the `dask` CLI on
loopback build the synthetic set to the very bytes the local executor writes, and a worker
that dies mid-shard costs that shard one retry, nothing more."""

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

import pytest

distributed = pytest.importorskip("distributed")

CLASSES = "baby,dog,rail,fireworks,water"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` + two `dask worker` processes (one thread each) on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker"]
    # scheduler and workers can import this module (the dying task below is defined here)
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)]
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
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root), "--classes", CLASSES,
                           "--out", str(out), "--shard-size", "8", "--no-progress", *extra],
                          capture_output=True, text=True, timeout=600)


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


def test_dask_cluster_build_is_byte_identical_to_local(synth_videos, cluster, tmp_path):
    local = build(synth_videos, tmp_path / "local", "--workers", "2")
    assert local.returncode == 0, local.stderr
    on_dask = build(synth_videos, tmp_path / "dask", "--executor", "dask", "--scheduler", cluster["address"])
    assert on_dask.returncode == 0, on_dask.stderr
    a, b = digest_tree(tmp_path / "local"), digest_tree(tmp_path / "dask")
    assert any(k.endswith(".tar") for k in a) and "manifest.parquet" in a
    assert a == b
    # a shard lost mid-write (its marker never written) is redone by the next run, as locally
    (tmp_path / "dask" / "_build" / "shards" / "train-000001.json").unlink()
    (tmp_path / "dask" / "train" / "train-000001.tar").rename(tmp_path / "dask" / "train" / ".train-000001.tar.tmp-1")
    again = build(synth_videos, tmp_path / "dask", "--executor", "dask", "--scheduler", cluster["address"])
    assert again.returncode == 0 and "resumed" in again.stdout + again.stderr, again.stderr
    assert digest_tree(tmp_path / "dask") == a


def test_local_cluster_when_no_scheduler_is_given(synth_videos, tmp_path):
    res = build(synth_videos, tmp_path / "lc", "--executor", "dask", "--workers", "2", "--limit", "3")
    assert res.returncode == 0, res.stderr
    ref = build(synth_videos, tmp_path / "ref", "--workers", "2", "--limit", "3")
    assert ref.returncode == 0, ref.stderr
    assert digest_tree(tmp_path / "lc") == digest_tree(tmp_path / "ref")


def test_a_cluster_started_for_a_build_that_stops_early_is_closed():
    from s2i_data.executors import DaskExecutor

    ex = DaskExecutor(workers=1)
    ex.start()  # what a build does before it probes
    client, cluster = ex._starting.result(timeout=60)
    assert client.submit(lambda: 1 + 1).result(timeout=30) == 2
    ex.close()  # the build stopped before its shards: nothing may stay behind
    assert client.status == "closed" and cluster.status.name == "closed"
    ex.close()  # and closing twice is harmless


def test_bad_executor_settings_are_one_line(synth_videos, tmp_path):
    for args, said in [(["--executor", "spark"], "--executor must be local or dask"),
                       (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask")]:
        res = build(synth_videos, tmp_path / "x", *args)
        assert res.returncode != 0 and said in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "x").exists()


def die_once(task: int, marker_dir: str) -> int:
    """A shard function whose worker process dies, once, half-way through task 3."""
    marker = Path(marker_dir) / f"died-{task}"
    if task == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return task * 10


def test_a_worker_dying_mid_shard_costs_only_that_shard(cluster, tmp_path):
    from s2i_data.executors import DaskExecutor

    done = {}
    failed = DaskExecutor(scheduler=str(cluster["file"]), retries=2).run(
        die_once, list(range(6)), args=(str(tmp_path),), on_done=lambda t, r: done.__setitem__(t, r))
    assert failed == []
    assert done == {t: t * 10 for t in range(6)}
    assert (tmp_path / "died-3").exists()  # the worker really died there
    with distributed.Client(scheduler_file=str(cluster["file"]), timeout="30s") as c:
        c.wait_for_workers(2, timeout=60)  # its nanny brought it back for the tests after this one
    shutil.rmtree(tmp_path, ignore_errors=True)
