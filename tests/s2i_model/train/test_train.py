"""Training: resume reaches the uninterrupted state, completion is idempotent, non-finite losses
stop the run with its last good checkpoint, and imagine turns real files into pictures."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s2i_model import checkpoint
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.s2i.train_autoencoder import TrainingError, train_autoencoder
from s2i_model.models.s2i.train_translator import train_translator

from runfolders import same_autoencoder

QUIET = dict(log=lambda *_: None)


def ae_cfg(data, run, **kw):
    return AutoencoderConfig(data=str(data), run=str(run), emb=64, width=0.0625, batch_size=8, workers=2, **kw)


def gan_cfg(data, run, **kw):
    return TranslatorConfig(data=str(data), run=str(run), batch_size=8, n_gd=2, workers=2, grid_every=1,
                            grid_images=2, **kw)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train_autoencoder(ae_cfg(tiny_build, run, epochs=2), **QUIET)
    train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    return run


def test_resume_reaches_the_uninterrupted_state(tiny_build, trained, tmp_path):
    run = tmp_path / "resumed"
    train_autoencoder(ae_cfg(tiny_build, run, epochs=1), **QUIET)  # "killed" after epoch 1
    train_autoencoder(ae_cfg(tiny_build, run, epochs=2), **QUIET)
    train_translator(gan_cfg(tiny_build, run, epochs=1), **QUIET)
    train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    a, b = checkpoint.load(trained / "autoencoder.pt"), checkpoint.load(run / "autoencoder.pt")
    assert same_weights(a["model"], b["model"])
    a, b = checkpoint.load(trained / "translator.pt"), checkpoint.load(run / "translator.pt")
    assert same_weights(a["G"], b["G"]) and same_weights(a["D"], b["D"])
    assert a["g_steps"] == b["g_steps"] and a["adv_history"] == b["adv_history"]
    # every generator's state too, Python's included (reading data before the loop may draw from it)
    assert a["rng"]["python"] == b["rng"]["python"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("autoencoder", 1), ("autoencoder", 2),
                                                        ("translator", 1), ("translator", 2)]


def test_no_grids_when_grid_every_is_zero(tiny_build, trained, tmp_path):
    run = tmp_path / "nogrids"
    shutil.copytree(trained, run)
    cfg = gan_cfg(tiny_build, run, epochs=3, max_steps=2)
    cfg.grid_every = 0
    train_translator(cfg, **QUIET)
    assert checkpoint.load(run / "translator.pt")["epoch"] == 3
    assert sorted(p.name for p in (run / "grids").iterdir()) == sorted(p.name for p in (trained / "grids").iterdir())


def test_ma_k_averages_the_adversarial_loss_over_k_epochs(tiny_build, trained, tmp_path):
    """The paper's moving-average loss (its equation 5) with k = --ma-k: G's loss is the pixel loss
    plus λ · (this batch's adversarial loss + the epoch means of the k − 1 epochs before) / k, so
    over an epoch g_loss − pixel_loss = λ · (adv_loss + the k − 1 previous adv_loss) / k."""
    run = same_autoencoder(trained, tmp_path / "ma")
    train_translator(gan_cfg(tiny_build, run, epochs=5, max_steps=3, lam=0.5, ma_k=3), **QUIET)
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "translator"]
    adv = [r["adv_loss"] for r in rows]
    for e, r in enumerate(rows):
        terms = adv[max(0, e - 2):e + 1]  # this epoch and at most k - 1 = 2 before it
        assert r["g_loss"] - r["pixel_loss"] == pytest.approx(0.5 * sum(terms) / len(terms), rel=1e-4, abs=1e-6)
    assert checkpoint.load(run / "translator.pt")["config"]["ma_k"] == 3


def test_precision_bf16_trains_on_a_cpu_and_fp16_is_refused_with_one_line(tiny_build, trained, tmp_path):
    run = same_autoencoder(trained, tmp_path / "bf16")
    state = train_translator(gan_cfg(tiny_build, run, epochs=1, max_steps=2, precision="bf16"), **QUIET)
    assert state["config"]["precision"] == "bf16"
    assert all(math.isfinite(state["last"][k]) for k in ("pixel_loss", "adv_loss", "g_loss"))
    assert TranslatorConfig().precision == "fp32"  # the paper's arithmetic unless asked
    for bad, said in (("fp16", "needs a GPU"), ("fp64", "must be one of")):
        other = same_autoencoder(trained, tmp_path / f"run-{bad}")
        r = subprocess.run([sys.executable, "-m", "s2i_model.cli", "train-translator", "--data", str(tiny_build),
                            "--run", str(other), "--device", "cpu", "--epochs", "1", "--batch-size", "8",
                            "--precision", bad], capture_output=True, text=True)
        assert r.returncode == 1 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (other / "translator.pt").exists()


def test_cached_embeddings_change_nothing(tiny_build, trained, tmp_path):
    run = tmp_path / "cached"
    run.mkdir()
    for name in ("autoencoder.pt", "autoencoder.json", "embeddings.pt"):  # stage 1 done, embeddings kept
        (run / name).write_bytes((trained / name).read_bytes())
    train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    a, b = checkpoint.load(trained / "translator.pt"), checkpoint.load(run / "translator.pt")
    assert same_weights(a["G"], b["G"]) and same_weights(a["D"], b["D"])


def test_a_finished_run_does_nothing(tiny_build, trained):
    before = (trained / "translator.pt").stat().st_mtime_ns
    said = []
    train_autoencoder(ae_cfg(tiny_build, trained, epochs=2), log=said.append)
    train_translator(gan_cfg(tiny_build, trained, epochs=2), log=said.append)
    assert all("nothing to do" in s for s in said) and len(said) == 2
    assert (trained / "translator.pt").stat().st_mtime_ns == before


def test_outputs_of_a_run(trained):
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    gan = [r for r in rows if r["stage"] == "translator"]
    assert all(math.isfinite(r["pixel_loss"]) and r["samples"] > 0 for r in gan)
    assert sum(r["d_updates"] for r in gan) >= 1
    assert sorted(p.name for p in (trained / "grids").glob("*.png")) == ["epoch-00001.png", "epoch-00002.png"]
    assert any((trained / "tensorboard").iterdir())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_build, tmp_path):
    run = tmp_path / "nan"
    train_autoencoder(ae_cfg(tiny_build, run, epochs=1), **QUIET)
    good = checkpoint.load(run / "autoencoder.pt")
    with pytest.raises(TrainingError, match="non-finite"):
        train_autoencoder(ae_cfg(tiny_build, run, epochs=3, lr=float("nan")), **QUIET)
    kept = checkpoint.load(run / "autoencoder.pt")
    assert kept["epoch"] == 1 and same_weights(kept["model"], good["model"])


def model_cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True,
                          check=check)


def test_translator_needs_a_finished_autoencoder(tiny_build, tmp_path):
    r = model_cli("train-translator", "--data", str(tiny_build), "--run", str(tmp_path / "empty"))
    assert r.returncode == 1 and "train the autoencoder first" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_imagine_real_files_and_clear_errors(trained, synth_videos, tmp_path):
    sr = 44100
    t = np.arange(int(sr * 2.5)) / sr
    wav = tmp_path / "whistle.wav"
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 900 * t), sr)
    grid = tmp_path / "whistle.png"
    r = model_cli("imagine", str(wav), "--run", str(trained), "-n", "3", "-o", str(grid), "--out-dir", str(tmp_path / "each"))
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(grid) as im:
        assert im.size[1] >= 2 * 96  # two whole 1 s windows, a row each
    assert len(list((tmp_path / "each").glob("*.png"))) == 2 * 3
    video = sorted((synth_videos / "dog").glob("*.mp4"))[0]  # a video file: its sound track
    assert model_cli("imagine", str(video), "--run", str(trained), "-o", str(tmp_path / "v.png")).returncode == 0
    folder = model_cli("imagine", str(synth_videos / "rail"), "--run", str(trained), "--out-dir", str(tmp_path / "rail"))
    assert folder.returncode == 0 and len(list((tmp_path / "rail").glob("*.png"))) == 5

    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(sr * 2), sr)
    short = tmp_path / "short.flac"
    soundfile.write(short, 0.3 * np.sin(2 * np.pi * 440 * t[: sr // 2]), sr)
    junk = tmp_path / "junk.mp3"
    junk.write_text("not audio at all\n" * 10)
    for path, reason in ((silent, "silent"), (short, "too short"), (junk, "cannot decode"),
                         (tmp_path / "nope.wav", "no such file")):
        r = model_cli("imagine", str(path), "--run", str(trained), "-o", str(tmp_path / "x.png"))
        assert r.returncode != 0 and reason in r.stderr, (path, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_a_truncated_checkpoint_resumes_from_the_previous_one(tiny_build, trained, tmp_path):
    """A save cut short (or a disk that lost the end of the file): the trainer warns, resumes from
    the checkpoint before it, and reaches the very weights of the uninterrupted run."""
    run = tmp_path / "damaged"
    run.mkdir()
    for name in ("autoencoder.pt", "autoencoder.prev.pt"):  # epochs 2 and 1
        (run / name).write_bytes((trained / name).read_bytes())
    data = (run / "autoencoder.pt").read_bytes()
    (run / "autoencoder.pt").write_bytes(data[: len(data) // 3])
    (run / f".autoencoder.pt.tmp-{2 ** 22 + 7}").write_bytes(data[:100])  # a killed save's leftover
    said = []
    train_autoencoder(ae_cfg(tiny_build, run, epochs=2), log=said.append)
    assert any("autoencoder.pt" in s and "autoencoder.prev.pt" in s for s in said), said
    assert same_weights(checkpoint.load(trained / "autoencoder.pt")["model"], checkpoint.load(run / "autoencoder.pt")["model"])
    assert not list(run.glob(".*.tmp-*"))


def _model_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True)


def test_a_damaged_sample_stops_training_with_one_line_or_is_skipped(tiny_build, trained, tmp_path):
    from shardcraft import copy_build, object_npy, replace_member

    data = copy_build(tiny_build, tmp_path / "damaged")
    key = replace_member(sorted((data / "train").glob("*.tar"))[1], "mel.npy", object_npy(), index=1)
    key_val = replace_member(sorted((data / "val").glob("*.tar"))[0], "json", b"[" * 30000 + b"]" * 30000)
    args = ["train-autoencoder", "--data", str(data), "--emb", "64", "--width", "0.0625", "--epochs", "1",
            "--batch-size", "8", "--workers", "2", "--optimizer", "adam"]
    r = _model_cli(*args, "--run", str(tmp_path / "stopped"))
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err  # not the DataLoader worker's traceback
    assert f"train/train-000001.tar: {key}.mel.npy: dtype object" in err, err
    r = _model_cli(*args, "--run", str(tmp_path / "skipped"), "--skip-bad-samples")
    assert r.returncode == 0, r.stderr
    assert f"skipped: train/train-000001.tar: {key}.mel.npy" in r.stderr and f"{key_val}.json" in r.stderr, r.stderr
    row = json.loads((tmp_path / "skipped" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["skipped_samples"] == 1 and row["samples"] == 29
    # the pool sampler (no DataLoader) stops the same way on the damaged val split
    r = _model_cli("sample", "--run", str(trained), "--data", str(data), "--out", str(tmp_path / "pool"), "-n", "5")
    assert r.returncode != 0 and f"val/val-000000.tar: {key_val}.json: nested too deeply" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _adversarial_updates(frozen_d: bool, steps: int = 30, batch: int = 8, d_steps: int = 20) -> tuple[float, float]:
    """Mean RC-score (D in evaluation mode) of G's pictures before and after ``steps`` updates of G
    on the adversarial term alone, against a D trained a little to tell real from fake."""
    import torch.nn.functional as F

    from s2i_model.models.s2i.nets import DenseGenerator, Discriminator
    from s2i_model.models.s2i.train_translator import adversarial_loss

    torch.manual_seed(0)
    G, D = DenseGenerator(64, 0.0625), Discriminator(64, 0.0625)
    z = torch.tanh(torch.randn(batch, 64))
    real = torch.rand(batch, 3, 96, 96) * 2 - 1
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(d_steps):
        with torch.no_grad():
            fake = G(z)
        d_real, d_fake = D(torch.cat([real, fake]), torch.cat([z, z])).chunk(2)
        loss = F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, -torch.ones_like(d_fake))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()

    def score() -> float:
        D.eval()
        with torch.no_grad():
            s = float(D(G(z), z).mean())
        D.train()
        return s

    before = score()
    opt_d.zero_grad(set_to_none=True)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.5, 0.999))
    for _ in range(steps):
        loss = adversarial_loss(D, G(z), z) if frozen_d else torch.mean((1.0 - D(G(z), z)) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if frozen_d:  # no gradient reached D's weights, and its mode and flags are back
        assert D.training and all(p.grad is None for p in D.parameters())
        assert all(p.requires_grad for p in D.parameters())
    return before, score()


def test_the_adversarial_term_raises_the_rc_score_of_gs_pictures():
    """With the pixel term off and D frozen (the trainer's `adversarial_loss`), a few dozen G
    updates raise the RC-score D gives G's pictures. With D in training mode, as before, its last
    BatchNorm normalises the scores over the batch of fakes, and the same updates cannot."""
    before, after = _adversarial_updates(frozen_d=True)
    old_before, old_after = _adversarial_updates(frozen_d=False)
    print(f"\nmean RC-score of G's pictures after 30 adversarial updates: D frozen {before:.3f} -> {after:.3f}; "
          f"D in training mode {old_before:.3f} -> {old_after:.3f}")
    assert after > before + 0.15
    assert old_after < old_before + 0.05


def test_streamed_and_resumed_training_equals_data_held_in_memory(tiny_build, trained, tmp_path):
    """`trained` held its splits in memory (auto, on this CPU); the same run streamed from the
    shards, and killed and resumed after each stage's first epoch, reaches the same weights and
    logs the same losses, to the last bit."""
    run = tmp_path / "streamed"
    for epochs in (1, 2):
        train_autoencoder(ae_cfg(tiny_build, run, epochs=epochs, data_on_device="off"), **QUIET)
    for epochs in (1, 2):
        train_translator(gan_cfg(tiny_build, run, epochs=epochs, data_on_device="off"), **QUIET)
    a, b = checkpoint.load(trained / "autoencoder.pt"), checkpoint.load(run / "autoencoder.pt")
    assert same_weights(a["model"], b["model"])
    a, b = checkpoint.load(trained / "translator.pt"), checkpoint.load(run / "translator.pt")
    assert same_weights(a["G"], b["G"]) and same_weights(a["D"], b["D"])
    losses = ("train_loss", "val_loss", "pixel_loss", "adv_loss", "d_loss")

    def logged(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: r[k] for k in losses if k in r} for r in rows]

    assert logged(trained) == logged(run)
