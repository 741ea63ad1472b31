"""Multimodal-feature GAN training: its three stages resume (inside a stage and at a stage's end)
to the uninterrupted state bit for bit, a finished run does nothing, the run folder serves imagine
through `run.load_model`, and bad input gets one line and a non-zero exit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s2i_model import checkpoint
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig

QUIET = dict(log=lambda *_: None)


def cfg(data, run, f=2, m=1, g=1, **kw):
    return MmganConfig(data=str(data), run=str(run), width=0.0625, batch_size=8, workers=2, grid_every=1,
                       grid_images=2, epochs_features=f, epochs_multimodal=m, epochs=g, **kw)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def model_cli(*args):
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def mmgan_run(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("mmgan")
    train_mmgan(cfg(tiny_build, run), **QUIET)
    return run


def test_resume_inside_and_between_stages_reaches_the_uninterrupted_state(tiny_build, mmgan_run, tmp_path):
    run = tmp_path / "resumed"
    train_mmgan(cfg(tiny_build, run, 1, 0, 0, data_on_device="off"), **QUIET)  # "killed" inside stage 1
    assert checkpoint.load(run / "mmgan.pt")["stage"] == "features"
    train_mmgan(cfg(tiny_build, run, 2, 1, 0, data_on_device="off"), **QUIET)  # "killed" at stage 2's end
    assert checkpoint.load(run / "mmgan.pt")["stage"] == "multimodal"
    train_mmgan(cfg(tiny_build, run, data_on_device="off"), **QUIET)
    a, b = checkpoint.load(mmgan_run / "mmgan.pt"), checkpoint.load(run / "mmgan.pt")
    assert a["model"] == b["model"] == "mmgan" and (b["stage"], b["epoch"]) == ("gan", 1)
    assert same_weights(a["nets"], b["nets"])
    assert same_weights(a["opts"]["opt"]["state"][0], b["opts"]["opt"]["state"][0])
    assert a["rng"]["python"] == b["rng"]["python"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("mmgan-features", 1), ("mmgan-features", 2),
                                                        ("mmgan-multimodal", 1), ("mmgan-gan", 1)]
    straight = [json.loads(x) for x in (mmgan_run / "metrics.jsonl").read_text().splitlines()]
    drop = ("seconds", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in straight]
    gan = rows[-1]
    assert all(math.isfinite(gan[k]) for k in ("d_loss", "adv_loss", "l1_feature", "l1_image", "val_l1_image"))
    assert {"l1", "ce_hidden", "ce_out"} <= set(rows[2])


def test_outputs_and_a_finished_run(tiny_build, mmgan_run):
    assert sorted(p.name for p in (mmgan_run / "grids").glob("*.png")) == ["mmgan-epoch-00001.png"]
    assert any((mmgan_run / "tensorboard").iterdir())
    state = checkpoint.load(mmgan_run / "mmgan.pt")
    assert state["config"]["d_weight"] == 0.001 and "class labels" in state["adapted"]
    before = (mmgan_run / "mmgan.pt").stat().st_mtime_ns
    said = []
    train_mmgan(cfg(tiny_build, mmgan_run), log=said.append)
    assert len(said) == 1 and "nothing to do" in said[0]
    assert (mmgan_run / "mmgan.pt").stat().st_mtime_ns == before


def test_imagine_on_an_mmgan_run(tiny_build, mmgan_run, tmp_path):
    from s2i_model.model import SoundToImage
    from s2i_model.run import load_model

    model = load_model(mmgan_run, "cpu")
    assert isinstance(model, SoundToImage) and model.name == "mmgan"
    mels = torch.rand(2, 1, 128, 100) * 2 - 1
    a, b = model.sound_pictures(mels, 3, 0), model.sound_pictures(mels, 3, 0)
    assert a.shape == (2, 3, 3, 96, 96) and torch.equal(a, b) and not torch.equal(a[0, 0], a[0, 1])
    sr = 16000
    t = np.arange(int(sr * 2.5)) / sr
    wav = tmp_path / "whistle.wav"
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 900 * t), sr)
    r = model_cli("imagine", wav, "--run", mmgan_run, "-n", 3, "-o", tmp_path / "whistle.png",
                  "--out-dir", tmp_path / "each")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "each").glob("*.png"))) == 2 * 3


def test_bad_input_gets_one_line(tiny_build, mmgan_run, tmp_path):
    for args in (["train-mmgan", "--data", tmp_path / "nowhere", "--run", tmp_path / "r"],
                 ["train-mmgan", "--data", tiny_build, "--run", tmp_path / "r", "--width", "0"],
                 ["train-mmgan", "--data", tiny_build, "--run", mmgan_run, "--width", "0.125"]):
        r = model_cli(*args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow  # a real torchrun run (gloo, 2 CPU processes)
def test_ddp_under_torchrun(tiny_build, tmp_path):
    """Two processes through every stage: one log line and one metrics row per epoch, grids, a
    checkpoint that load_model reads. (A rank without a val shard once left the sums over ranks
    misaligned and hung the run: every rank now sums the same names.)"""
    import os

    run = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "s2i_model.cli", "train-mmgan", "--data", str(tiny_build), "--run-dir", str(run),
                        "--width", "0.0625", "--epochs-features", "1", "--epochs-multimodal", "1", "--epochs", "1",
                        "--batch-size", "8", "--grid-every", "1", "--device", "cpu", "--workers", "1"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in rows] == [("mmgan-features", 1), ("mmgan-multimodal", 1), ("mmgan-gan", 1)]
    assert (run / "grids" / "mmgan-epoch-00001.png").is_file()
    from s2i_model.run import load_model

    assert load_model(run, "cpu").sound_pictures(torch.zeros(1, 1, 128, 100), 2, 0).shape == (1, 2, 3, 96, 96)


REPO = Path(__file__).resolve().parents[3]
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


@pytest.mark.slow  # minutes on 2 shared CPU cores
def test_make_train_mmgan_learns_recognisable_pictures(learning_data, learning_judge, tmp_path):
    """The multimodal-feature GAN at CPU size through `make train MODEL=mmgan` on the built-in
    synthetic data (the data of test_learns.py): pictures imagined from held-out test sounds are
    recognised by the independent real-frame classifier above chance (20 %). Width 1/16, stages
    of 5 + 5 + 20 epochs, batch 8, the cGANs at Adam 1e-3 (at pix2pix's 2e-4 it stays at chance in
    CPU minutes). Its encoders and multimodal layers read the build's class labels (docs/models.md).
    Seen: 30.6 %."""
    import os

    from s2i_model.evaluate.realframe import load_split
    from s2i_model.run import load_model

    data = learning_data
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["make", "-s", "-o", "setup", "train", "MODEL=mmgan", f"BIN={bindir}", f"DATA={data}",
                    f"RUN={tmp_path / 'run'}", "WIDTH=0.0625", "EPOCHS_FEATURES=5", "EPOCHS_MULTIMODAL=5", "EPOCHS=20",
                    "BATCH=8", "LR=1e-3", "LOADERS=2", "GRID_EVERY=0"],
                   cwd=REPO, env=env, check=True, capture_output=True, text=True)
    classifier = learning_judge
    mels, _, classes, _ = load_split(data, "test")
    model = load_model(tmp_path / "run", "cpu")
    with torch.no_grad():
        pictures = model.sound_pictures(mels, 4, 0).flatten(0, 1)
        pred = torch.cat([classifier(b).argmax(1) for b in pictures.split(256)])
    agreement = float((pred == classes.repeat_interleave(4)).float().mean())
    print(f"\nmmgan class agreement on {len(classes)} held-out sounds: {agreement:.1%} (chance 20 %)")
    # 90 sounds: chance's spread over sounds is about 4 points, so 27 % is above chance by more than
    # it while leaving room under the 30.6 % seen for another machine's float rounding
    assert agreement >= 0.27
