"""Builds to and from fsspec URLs, and shards read back from URLs, pipe: commands and a cache.

fsspec's `local://` implementation stands in for an object store across processes (the shard
workers upload through it); its in-memory one for reading inside one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from s2i_data import storage
from s2i_data.readers import iter_raw, shard_list
from s2i_data.verify import verify

CLASSES = "baby,dog,rail,fireworks,water"


def build(root: str, out: str, staging: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "S2I_STAGING": str(staging)}
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", root, "--classes", CLASSES,
                           "--out", out, "--shard-size", "8", "--workers", "2", "--no-progress", *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def samples(out: str) -> dict[str, tuple[bytes, bytes]]:
    got = {}
    for raw in iter_raw([u for _, u in shard_list(out)]):
        got[raw["__key__"]] = (raw["mel.npy"], raw["png"])
    return got


@pytest.fixture(scope="module")
def builds(synth_videos, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("remote")
    local = build(str(synth_videos), str(tmp / "local"), tmp / "staging")
    assert local.returncode == 0, local.stderr
    url = f"local://{tmp / 'remote'}"
    remote = build(f"local://{synth_videos}", url, tmp / "staging")
    assert remote.returncode == 0, remote.stderr
    return {"tmp": tmp, "local": tmp / "local", "url": url, "remote": tmp / "remote"}


def test_a_build_from_and_to_urls_holds_the_same_samples(builds):
    a, b = samples(str(builds["local"])), samples(builds["url"])
    assert a and a == b  # same keys, same spectrogram and frame bytes
    assert verify(builds["url"]).errors == []
    stats = storage.read_json(storage.join(builds["url"], "stats.json"))
    assert stats["complete"] and stats["samples"] == len(a)
    assert json.loads((builds["remote"] / "build.json").read_text())["config"]["out"] == builds["url"]


def shard_objects(remote: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every shard and resume marker at the build's URL as its store sees it: (mtime ns, inode,
    bytes); an object written again, even with the same bytes, changes."""
    got = {}
    for p in sorted([*remote.glob("*/*.tar"), *(remote / "_build" / "shards").glob("*.json")]):
        st = p.stat()
        got[str(p.relative_to(remote))] = (st.st_mtime_ns, st.st_ino, p.read_bytes())
    return got


def test_a_build_at_a_url_resumes_from_anywhere(builds, synth_videos, tmp_path):
    remote = builds["remote"]
    before = samples(builds["url"])
    manifest = (remote / "manifest.parquet").read_bytes()
    lost, marker = "train/train-000001.tar", "_build/shards/train-000001.json"
    objects = shard_objects(remote)
    assert lost in objects and marker in objects and len(objects) > 4
    (remote / lost).unlink()  # a shard lost at the URL, and its marker with it
    (remote / marker).unlink()
    res = build(f"local://{synth_videos}", builds["url"], tmp_path / "fresh-staging")  # another machine
    assert res.returncode == 0 and "resumed" in res.stdout, res.stderr
    after = shard_objects(remote)
    assert after.keys() == objects.keys()
    # exactly that shard and its marker written again; every other object untouched
    assert {n for n in objects if after[n] != objects[n]} == {lost, marker}
    assert after[lost][2] == objects[lost][2]  # the very bytes it had
    redone, was = json.loads(after[marker][2]), json.loads(objects[marker][2])
    for stats in (redone, was):
        stats.pop("seconds"), stats.pop("peak_rss_mb")
    assert redone == was
    assert samples(builds["url"]) == before and (remote / "manifest.parquet").read_bytes() == manifest


def test_a_url_holding_something_else_is_refused(synth_videos, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    res = build(str(synth_videos), f"local://{tmp_path / 'busy'}", tmp_path / "staging")
    assert res.returncode == 2 and "not empty and holds no s2i build" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_shards_read_from_memory_with_a_cache(builds, tmp_path):
    fs = fsspec.filesystem("memory")
    for p in builds["local"].rglob("*"):
        if p.is_file() and "_build" not in p.parts:
            fs.pipe_file(f"/s2i-test/{p.relative_to(builds['local']).as_posix()}", p.read_bytes())
    url = "memory:///s2i-test"
    cache = tmp_path / "cache"
    report = verify(url, cache_dir=str(cache))
    assert report.errors == [] and report.samples == len(samples(str(builds["local"])))
    assert len(list(cache.iterdir())) == report.shards  # every shard kept locally after one read
    from s2i_model.data import Normalizer, ShardStream, loader

    ds = ShardStream(url, "train", Normalizer.from_build(url), shuffle=False)
    keys = [k for _, _, _, ks in loader(ds, 4, 2) for k in ks]  # DataLoader workers read memory:// too
    assert sorted(keys) == sorted(_keys_of_split(builds["local"], "train"))


def _keys_of_split(out: Path, split: str) -> set[str]:
    import pandas as pd

    m = pd.read_parquet(out / "manifest.parquet")
    return set(m[m["split"] == split]["key"])


def test_verify_through_a_pipe_command(builds):
    res = subprocess.run([sys.executable, "-m", "s2i_data.cli", "verify", str(builds["local"]), "--shard-url",
                          f"pipe:cat {builds['local']}/{{shard}}"], capture_output=True, text=True)
    assert res.returncode == 0 and "verified" in res.stdout, res.stdout + res.stderr


def test_unknown_url_schemes_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "s2i_data.cli", "verify", "nosuchproto://x/y"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "nosuchproto" in res.stderr


def test_the_trainer_reads_a_build_at_a_url(builds, tmp_path):
    res = subprocess.run([sys.executable, "-m", "s2i_model.cli", "train-autoencoder", "--data", builds["url"],
                          "--run", str(tmp_path / "run"), "--emb", "128", "--width", "0.0625", "--epochs", "1",
                          "--batch-size", "8", "--workers", "2", "--device", "cpu",
                          "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["samples"] == len(_keys_of_split(builds["local"], "train"))
    assert any(n.endswith(".tar") for n in os.listdir(tmp_path / "cache"))
