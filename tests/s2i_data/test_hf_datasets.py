"""Hugging Face `datasets` reads our shards offline with its own "webdataset" loader: the snippet
in the README, run on real builds (one plain, one with --keep-audio), checked member by member
against the tar files themselves.

`datasets` is in the test extra, so `make test` installs it: under CI its absence is a failure,
elsewhere a skip with the advice.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

# offline before datasets is imported (it reads these once): nothing may reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def hf():
    try:
        import datasets
    except ImportError:
        advice = "datasets is not installed: pip install -e '.[test]'"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{advice}; CI={os.environ['CI']}: failing instead of skipping", pytrace=False)
        pytest.skip(advice)
    return datasets


README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(marker: str, build: Path) -> str:
    """The README's code block after ``<!-- marker -->``, reading ``build`` instead of data/vegas5."""
    text = README.read_text()
    start = text.index(f"<!-- {marker} -->")
    code = text[text.index("```python\n", start) + len("```python\n"):]
    return code[: code.index("```")].replace("data/vegas5", str(build))


def members(build: Path, split: str) -> dict[str, dict[str, bytes]]:
    """key → {member extension: bytes}, read straight from the tars."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((build / split).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                key, _, ext = info.name.partition(".")
                out.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return out


def test_load_dataset_webdataset_reads_a_build(hf, tiny_build, tmp_path, monkeypatch):
    monkeypatch.setattr(hf.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # not ~/.cache
    scope: dict = {}
    exec(snippet("hf-example", tiny_build), scope)  # the README's own words
    ds, ex = scope["ds"], scope["ex"]
    assert ex["mel.npy"].dtype == np.float32 and ex["mel.npy"].shape == (100, 128)
    files = scope["files"]
    stats = json.loads((tiny_build / "stats.json").read_text())
    for split in files:
        raw = members(tiny_build, split)
        assert len(ds[split]) == len(raw) == sum(stats["counts"][split].values())
        rows = ds[split].with_format("numpy")
        for i in range(len(rows)):
            ex = rows[i]
            mine = raw[str(ex["__key__"])]
            mel = ex["mel.npy"]
            assert mel.dtype == np.float32 and mel.shape == (100, 128)
            assert np.array_equal(mel, np.load(io.BytesIO(mine["mel.npy"]), allow_pickle=False))
            assert ex["png"].shape == (96, 96, 3) and ex["png"].dtype == np.uint8
            meta = json.loads(mine["json"])
            assert int(ex["cls"]) == meta["class_index"] == int(mine["cls"])
            assert ex["json"]["class"] == meta["class"] and ex["json"]["key"] == str(ex["__key__"])


def test_flac_member_read_as_bytes(hf, synth_videos, tmp_path, monkeypatch):
    monkeypatch.setattr(hf.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # not ~/.cache
    import soundfile

    build = tmp_path / "audio"
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(synth_videos), "--classes", "dog,baby",
                    "--out", str(build), "--keep-audio", "--workers", "2", "--no-progress"], check=True, capture_output=True)
    # the README's snippet: a .flac member is given as bytes (the Audio feature needs torchcodec)
    scope: dict = {"datasets": hf, "files": {"train": str(build / "train" / "*.tar")}}
    exec(snippet("hf-flac-example", build), scope)
    assert scope["rate"] == 16000 and scope["audio"].shape == (16000,)
    ds = scope["ds"]["train"]
    raw = members(build, "train")
    assert len(ds) == len(raw) > 0
    for ex in ds.select(range(min(4, len(ds)))):
        audio, rate = soundfile.read(io.BytesIO(ex["flac"]), dtype="float32")
        assert rate == 16000 and audio.shape == (16000,)
        assert ex["flac"] == raw[ex["__key__"]]["flac"]
        assert np.asarray(ex["mel.npy"], dtype=np.float32).shape == (100, 128)
        assert ex["png"].size == (96, 96)
