"""What the build overlaps changes timing only: probing several files per ffmpeg run, workers
started while the build probes, and the next video decoding while the current one is encoded
give the bytes of probing each file alone and extracting one video after another."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from pathlib import Path

import pandas as pd
import pytest

from badcorpus import make_bad_corpus
from s2i_data import build as build_mod
from s2i_data import executors, media, shards
from s2i_data.build import build, make_tasks, shard_config
from s2i_data.config import BuildConfig


def digest(folder: Path) -> dict[str, str]:
    """Every shard, manifest and table of the plan; shard stats without their timings."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if not p.is_file() or p.name in ("build.json", "lock"):
            continue
        if rel.startswith("_build/shards/"):
            stats = json.loads(p.read_text())
            stats.pop("seconds"), stats.pop("peak_rss_mb")
            out[rel] = json.dumps(stats, sort_keys=True)
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("overlap") / "corpus"
    make_bad_corpus(root)
    return root


def config(root: Path, out: Path) -> BuildConfig:
    return BuildConfig(root=str(root), classes=["dog", "water"], out=str(out), shard_size=8, workers=1,
                       progress=False)


@pytest.fixture(scope="module")
def overlapped(corpus, tmp_path_factory) -> tuple[Path, list]:
    """The build as it runs; what each batched probe run answered, recorded."""
    answers: list = []
    real = media.probe_many

    def spy(paths, **kw):
        got = real(paths, **kw)
        answers.append(got)
        return got

    mp = pytest.MonkeyPatch()
    mp.setattr(media, "probe_many", spy)
    out = tmp_path_factory.mktemp("overlapped") / "out"
    try:
        build(config(corpus, out))
    finally:
        mp.undo()
    return out, answers


def test_batched_probes_and_a_warm_pool_give_the_bytes_of_probing_alone(corpus, overlapped, tmp_path, monkeypatch):
    out, answers = overlapped
    # The corpus mixes good files with broken ones: some runs were used, some fell back.
    assert any(p is not None for got in answers for p in got)
    assert any(all(p is None for p in got) for got in answers)
    monkeypatch.setattr(media, "probe_many", lambda paths, **kw: [None] * len(paths))
    monkeypatch.setattr(executors.LocalExecutor, "start", lambda self: None)  # the pool starts with `run`
    alone = tmp_path / "alone"
    build(config(corpus, alone))
    assert digest(out) == digest(alone)
    videos = pd.read_parquet(out / "videos.parquet")
    assert (videos["status"] == "skipped").any() and not videos["reason"].str.contains("Traceback").any()


class InOrder:
    """An executor that runs each call when it is submitted: one decode after another, nothing
    running beside the encoding."""

    def __init__(self, *args, **kwargs) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def submit(self, fn, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered by result(), as a pool would
            fut.set_exception(e)
        return fut


def test_decoding_ahead_gives_the_bytes_of_one_video_after_another(corpus, overlapped, tmp_path, monkeypatch):
    out, _ = overlapped
    work = out / build_mod.BUILD_DIR
    tasks = make_tasks(pd.read_parquet(work / "plan.parquet"), pd.read_parquet(work / "probe.parquet"))
    cfg = shard_config(config(corpus, out))
    ahead, in_order = tmp_path / "ahead", tmp_path / "in-order"
    for task in tasks:
        shards.write_shard(task, str(ahead), cfg)
    monkeypatch.setattr(shards, "ThreadPoolExecutor", InOrder)
    for task in tasks:
        shards.write_shard(task, str(in_order), cfg)
    assert digest(ahead) == digest(in_order)
    assert max(len(t.videos) for t in tasks) > 1  # there was a next video to decode ahead
    # ... and the same as the build's own workers wrote
    built = {k: v for k, v in digest(out).items() if k.endswith(".tar") or k.startswith("_build/shards/")}
    assert built == digest(ahead)


def test_a_pool_started_for_a_build_that_stops_early_is_shut_down():
    ex = executors.LocalExecutor(2)
    ex.start()  # what a build does before it probes
    pool = ex._warming.result()
    workers = list(pool._processes.values())
    assert len(workers) == 2 and all(p.is_alive() for p in workers)
    ex.close()
    for p in workers:
        p.join(timeout=30)
    assert not any(p.is_alive() for p in workers)


def test_a_started_pool_runs_the_shards():
    ex = executors.LocalExecutor(2)
    ex.start()
    done = []
    failed = ex.run(pow, [2, 3, 4], args=(2,), on_done=lambda t, r: done.append((t, r)))
    assert failed == [] and sorted(done) == [(2, 4), (3, 9), (4, 16)]
    ex.close()  # nothing left to stop
