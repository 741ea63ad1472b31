"""`s2i-model train --model NAME`: a model's stages at a preset, its config's fields as options
(`--field`, `--<stage>-<field>`, `--no-flag`), each checkpoint saving the settings it was given; a
bad option is one line."""

from __future__ import annotations

import subprocess
import sys

import torch


def model_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True)


def test_options_reach_the_stages_they_name(tiny_build, tmp_path):
    run = tmp_path / "s2i"
    done = model_cli("train", "--model", "s2i", "--preset", "test", "--data", str(tiny_build), "--run", str(run),
                     "--translator-epochs", "2", "--emb=32", "--seed", "5", "--no-sync-bn")
    assert done.returncode == 0, done.stderr
    ae = torch.load(run / "autoencoder.pt", weights_only=True)["config"]
    tr = torch.load(run / "translator.pt", weights_only=True)["config"]
    # the test preset's settings, overridden where an option says: --emb only the autoencoder has,
    # --translator-epochs only the translator, --seed and --no-sync-bn both
    assert (ae["emb"], ae["epochs"], ae["width"], ae["seed"], ae["sync_bn"]) == (32, 1, 0.0625, 5, False)
    assert (tr["epochs"], tr["batch_size"], tr["seed"], tr["sync_bn"]) == (2, 8, 5, False)
    assert (run / "model.json").read_text() == '{"model": "s2i"}'


def test_bad_options_are_one_line(tiny_build, tmp_path):
    for args, said in [(["--model", "aivae", "--colour", "red"], "aivae has no option --colour"),
                       (["--model", "aivae", "--epochs", "many"], "--epochs takes a whole number, not 'many'"),
                       (["--model", "aivae", "--epochs"], "--epochs needs a value"),
                       (["--model", "aivae", "--preset", "fast"], "aivae has no preset 'fast'"),
                       (["--model", "vqvae"], "unknown model 'vqvae'"),
                       (["--model", "s2i", "--translator-d-schedule", "often"], "--d-schedule must be step or epoch")]:
        done = model_cli("train", *args, "--data", str(tiny_build), "--run", str(tmp_path / "r"))
        assert done.returncode != 0 and said in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()  # refused before the run folder was made
