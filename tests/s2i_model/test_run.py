"""The run folder and the build behind it: the nets refuse a build they cannot take before training,
a run records its build, imagine hears that build's windows, cached embeddings follow the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from s2i_data.readers import Build, decode_sample, iter_raw
from s2i_model import checkpoint
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.imagine import sound_windows
from s2i_model.models.s2i.load import Translator
from s2i_model.run import EMBEDDINGS, RunError, check_build
from s2i_model.models.s2i import AUTOENCODER
from s2i_model.models.s2i.load import load_encoder
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.s2i.train_translator import embedding_cache, train_translator

QUIET = dict(log=lambda *_: None)


def build(videos: Path, out: Path, *options: str) -> Path:
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(videos), "--classes", "baby,dog",
                    "--out", str(out), "--shard-size", "8", "--workers", "2", "--no-progress", *options],
                   check=True, capture_output=True)
    return out


def s2i_model(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *map(str, args)], capture_output=True, text=True)


def test_a_build_the_nets_cannot_take_is_refused_before_training(synth_videos, tmp_path):
    data = build(synth_videos, tmp_path / "two-seconds", "--segment-seconds", "2")
    run = tmp_path / "run"
    res = s2i_model("train-autoencoder", "--data", data, "--run", run, "--emb", 64, "--width", 0.0625,
                    "--epochs", 1, "--batch-size", 8, "--device", "cpu")
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0 and "Traceback" not in out and len(out.splitlines()) == 1, out
    assert "--segment-seconds 2" in out and "1 s" in out, out
    assert not (run / AUTOENCODER).exists()


def test_each_shape_the_nets_fix_is_named(tiny_build):
    good = Build.open(tiny_build)
    assert check_build(good) is good
    config = dict(good.config)
    for setting, value, named in (("image_size", 64, "--image-size 64"), ("segment_seconds", 0.5, "--segment-seconds 0.5")):
        other = Build(good.location, {**good.build_json, "config": {**config, setting: value}}, good.stats)
        with pytest.raises(RunError, match=named):
            check_build(other)


@pytest.fixture(scope="module")
def resampled(synth_videos, tmp_path_factory):
    """A build at 22.05 kHz (the nets take any rate: 128 bands, 10 ms hop) and a run trained on it."""
    root = tmp_path_factory.mktemp("sr22050")
    data = build(synth_videos, root / "shards", "--sample-rate", "22050")
    run = root / "run"
    train_autoencoder(AutoencoderConfig(data=str(data), run=str(run), emb=64, width=0.0625, epochs=1, batch_size=8,
                                        workers=0, device="cpu"), **QUIET)
    train_translator(TranslatorConfig(data=str(data), run=str(run), epochs=1, batch_size=8, workers=0, device="cpu"),
                     **QUIET)
    return data, run


def test_a_run_records_its_build_and_imagine_hears_its_windows(resampled):
    data, run = resampled
    b = Build.open(data)
    recorded = checkpoint.load(run / AUTOENCODER)["build"]
    assert recorded == b.record() and recorded["sample_rate"] == 22050 and recorded["fingerprint"] == b.fingerprint
    tr = Translator.load(run, "cpu")
    assert tr.window == (1.0, 22050)

    raw = next(iter_raw([u for _, u in b.shards("test")]))
    sample = decode_sample(raw, b.contract)
    row = b.manifest().set_index("key").loc[sample["key"]]
    seconds, rate = tr.window
    mels, starts = sound_windows(Path(row["source"]), seconds, sample_rate=rate)
    got = mels[starts.index(float(row["start_s"]))]
    np.testing.assert_allclose(got, sample["mel"], rtol=0, atol=1e-5)  # the shard's own log-mel
    at_16k, _ = sound_windows(Path(row["source"]), seconds)
    assert np.abs(at_16k[starts.index(float(row["start_s"]))] - sample["mel"]).max() > 0.1  # the rate matters


def test_cached_embeddings_follow_the_build(resampled):
    data, run = resampled
    b = Build.open(data)
    assert checkpoint.load(run / EMBEDDINGS)["fingerprint"] == b.fingerprint
    encoder, _, norm = load_encoder(run, "cpu")
    said: list[str] = []
    same = embedding_cache(run, encoder, b, norm, torch.device("cpu"), 0, log=said.append)
    assert not said and same["fingerprint"] == b.fingerprint

    rebuilt = Build(b.location, {**b.build_json, "fingerprint": "0123456789abcdef"}, b.stats)
    again = embedding_cache(run, encoder, rebuilt, norm, torch.device("cpu"), 0, log=said.append)
    assert any("another build" in s for s in said), said
    assert checkpoint.load(run / EMBEDDINGS)["fingerprint"] == again["fingerprint"] == "0123456789abcdef"
    torch.testing.assert_close(again["train"]["emb"], same["train"]["emb"])  # same samples, recomputed


@pytest.mark.parametrize("record", [{"segment_seconds": "1; rm -rf /"}, {"sample_rate": 0}, {"segment_seconds": 1e9},
                                    {"sample_rate": [16000]}])
def test_a_checkpoints_build_record_is_checked_before_it_reaches_ffmpeg(record):
    from s2i_model.run import build_record

    with pytest.raises(RunError, match="build record is not usable"):
        build_record({"build": record})
    assert build_record({})["sample_rate"] == 16000  # runs from before the record: 1 s at 16 kHz


def test_a_build_json_without_usable_settings_is_one_line(tiny_build, tmp_path):
    import json
    import shutil

    from s2i_data.readers import SampleError

    bad = tmp_path / "bad"
    shutil.copytree(tiny_build, bad)
    meta = json.loads((bad / "build.json").read_text())
    meta["config"]["segment_seconds"] = "one"
    (bad / "build.json").write_text(json.dumps(meta))
    with pytest.raises(SampleError, match=r"build\.json: config\.segment_seconds: 'one' is not a number"):
        Build.open(bad)
    res = s2i_model("train-autoencoder", "--data", bad, "--run", tmp_path / "run", "--device", "cpu")
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0 and "Traceback" not in out and "internal error" not in out and "config.segment_seconds" in out, out
