"""AIVAE / AIVAEGAN training: resume reaches the uninterrupted state bit for bit, a finished run
does nothing, the run folder serves imagine, sample and evaluate through `run.load_model`, and
bad input gets one line and a non-zero exit."""

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
from s2i_model.models.aivae.train import train_aivae, train_aivaegan
from s2i_model.models.aivae.config import AivaeConfig
from s2i_model.models.aivaegan.config import AivaeganConfig

QUIET = dict(log=lambda *_: None)


def vae_cfg(data, run, **kw):
    return AivaeConfig(data=str(data), run=str(run), width=0.0625, batch_size=8, workers=2, grid_every=1,
                       grid_images=2, **kw)


def gan_cfg(data, run, **kw):
    return AivaeganConfig(data=str(data), run=str(run), width=0.0625, batch_size=8, workers=2, grid_every=1,
                          grid_images=2, **kw)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def model_cli(*args):
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def aivae_run(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("aivae")
    train_aivae(vae_cfg(tiny_build, run, epochs=2), **QUIET)
    return run


@pytest.fixture(scope="module")
def aivaegan_run(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("aivaegan")
    train_aivaegan(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    return run


def test_aivae_resume_reaches_the_uninterrupted_state(tiny_build, aivae_run, tmp_path):
    run = tmp_path / "resumed"
    train_aivae(vae_cfg(tiny_build, run, epochs=1, data_on_device="off"), **QUIET)  # "killed" after epoch 1
    train_aivae(vae_cfg(tiny_build, run, epochs=2, data_on_device="off"), **QUIET)
    a, b = checkpoint.load(aivae_run / "aivae.pt"), checkpoint.load(run / "aivae.pt")
    assert a["model"] == b["model"] == "aivae" and b["epoch"] == 2
    assert same_weights(a["vae"], b["vae"])
    assert a["rng"]["python"] == b["rng"]["python"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("aivae", 1), ("aivae", 2)]
    straight = [json.loads(x) for x in (aivae_run / "metrics.jsonl").read_text().splitlines()]
    losses = ("train_loss", "recon_loss", "kl", "val_recon_loss", "val_kl")
    assert [{k: r[k] for k in losses} for r in rows] == [{k: r[k] for k in losses} for r in straight]
    assert all(math.isfinite(r["recon_loss"]) and r["samples"] > 0 for r in rows)


def test_aivae_outputs_and_a_finished_run(tiny_build, aivae_run):
    assert sorted(p.name for p in (aivae_run / "grids").glob("*.png")) == ["aivae-epoch-00001.png", "aivae-epoch-00002.png"]
    assert any((aivae_run / "tensorboard").iterdir())
    before = (aivae_run / "aivae.pt").stat().st_mtime_ns
    said = []
    train_aivae(vae_cfg(tiny_build, aivae_run, epochs=2), log=said.append)
    assert len(said) == 1 and "nothing to do" in said[0]
    assert (aivae_run / "aivae.pt").stat().st_mtime_ns == before


def test_aivaegan_resume_reaches_the_uninterrupted_state(tiny_build, aivaegan_run, tmp_path):
    run = tmp_path / "resumed"
    train_aivaegan(gan_cfg(tiny_build, run, epochs=1, data_on_device="off"), **QUIET)
    train_aivaegan(gan_cfg(tiny_build, run, epochs=2, data_on_device="off"), **QUIET)
    a, b = checkpoint.load(aivaegan_run / "aivaegan.pt"), checkpoint.load(run / "aivaegan.pt")
    assert same_weights(a["vae"], b["vae"]) and same_weights(a["D"], b["D"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["adv_loss"]) and math.isfinite(r["d_loss"]) for r in rows)
    assert a["config"]["alpha"] == 2.0 and a["config"]["lr"] == 2e-4


def test_imagine_sample_evaluate_on_an_aivae_run(tiny_build, aivae_run, tmp_path):
    sr = 16000
    t = np.arange(int(sr * 2.5)) / sr
    wav = tmp_path / "whistle.wav"
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 900 * t), sr)
    grid = tmp_path / "whistle.png"
    r = model_cli("imagine", wav, "--run", aivae_run, "-n", 3, "-o", grid, "--out-dir", tmp_path / "each")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size[1] >= 2 * 96  # two whole 1 s windows, a row each
    pics = sorted((tmp_path / "each").glob("*.png"))
    assert len(pics) == 2 * 3
    assert not np.array_equal(np.asarray(Image.open(pics[0])), np.asarray(Image.open(pics[1])))  # two draws of f
    r = model_cli("imagine", "--data", tiny_build, "--run", aivae_run, "-n", 2, "-o", tmp_path / "split.png")
    assert r.returncode == 0 and (tmp_path / "split.png").is_file(), r.stderr
    r = model_cli("sample", "--run", aivae_run, "--out", tmp_path / "pool", "-n", 5)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "pool" / "images").rglob("*.png"))) == 5
    r = model_cli("evaluate", "--run", aivae_run, "--data", tiny_build, "--samples", 2)
    assert r.returncode == 0, r.stderr
    res = json.loads((aivae_run / "evaluation.json").read_text())
    assert res["model"] == "aivae" and res["mean"]["class_agreement"] is not None


def test_bad_input_gets_one_line(tiny_build, aivae_run, tmp_path):
    for args in (["train-aivae", "--data", tmp_path / "nowhere", "--run", tmp_path / "r"],
                 ["train-aivaegan", "--data", tiny_build, "--run", tmp_path / "r", "--alpha", "-1"],
                 ["train-aivae", "--data", tiny_build, "--run", aivae_run, "--latent", "32", "--width", "0.0625"]):
        r = model_cli(*args)
        assert r.returncode != 0, args
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


REPO = Path(__file__).resolve().parents[3]
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


@pytest.mark.slow  # ~1 min each on 2 CPU cores
@pytest.mark.parametrize("model, settings", [
    ("aivae", []),  # the paper's Adam 1e-3
    # the paper's 2e-4 stays at chance in CPU minutes (docs/models.md); make compare's cpu preset
    ("aivaegan", ["LR=1e-3", "LR_D=1e-3"]),
])
def test_make_train_learns_recognisable_pictures(model, settings, learning_data, learning_judge, tmp_path):
    """AIVAE and AIVAEGAN at CPU size (width 1/16, 20 epochs, batch 16) through `make train
    MODEL=...` on the built-in synthetic data: pictures imagined from held-out test sounds are
    recognised by the independent real-frame classifier clearly above chance (20 %). Seen: AIVAE
    38 %, AIVAEGAN at 1e-3 40 % (docs/models.md)."""
    import os

    from s2i_model.evaluate.realframe import load_split
    from s2i_model.run import load_model

    data = learning_data
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["make", "-s", "-o", "setup", "train", f"MODEL={model}", f"BIN={bindir}", f"DATA={data}",
                    f"RUN={tmp_path / 'run'}", "WIDTH=0.0625", "EPOCHS=20", "BATCH=16", "LOADERS=2", "GRID_EVERY=0",
                    *settings], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    classifier = learning_judge
    mels, _, classes, _ = load_split(data, "test")
    run = load_model(tmp_path / "run", "cpu")
    with torch.no_grad():
        pictures = run.sound_pictures(mels, 4, 0).flatten(0, 1)
        pred = torch.cat([classifier(b).argmax(1) for b in pictures.split(256)])
    agreement = float((pred == classes.repeat_interleave(4)).float().mean())
    print(f"\n{model} class agreement on {len(classes)} held-out sounds: {agreement:.1%} (chance 20 %)")
    assert agreement >= 0.3


@pytest.mark.slow  # a real torchrun run (gloo, 2 CPU processes) per model
@pytest.mark.parametrize("model", ["aivae", "aivaegan"])
def test_ddp_under_torchrun(model, tiny_build, tmp_path):
    """Two processes, two epochs: one log line and one metrics row per epoch (the ranks' samples
    summed), and a checkpoint that load_model reads."""
    import os

    run = tmp_path / model
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "s2i_model.cli", f"train-{model}", "--data", str(tiny_build), "--run-dir", str(run),
                        "--width", "0.0625", "--epochs", "2", "--batch-size", "8", "--grid-every", "1",
                        "--device", "cpu", "--workers", "1"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [1, 2]
    from s2i_data.readers import Build

    train = Build.open(tiny_build).size("train")
    # both ranks' shares counted (one rank alone has about half), no sample twice
    assert all(train // 2 < x["samples"] <= train for x in rows), (rows, train)
    from s2i_model.run import load_model

    assert load_model(run, "cpu").sound_pictures(torch.zeros(1, 1, 128, 100), 2, 0).shape == (1, 2, 3, 96, 96)
