"""`--data-on-device on` reads each split once: with the build's shards taken away after the first
epoch, every trainer still trains its second; streamed (`off`, or `auto` over its budget), the
same run stops, since it reads the shards again. Two epochs of one step each, tiny widths."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2i_data.readers import SampleError
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.aivae.train import train_aivaegan
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.train.resident import BUDGET_ENV, wanted
from s2i_model.models.sound2scene.train import train_sound2scene
from s2i_model.models.sound2scene.config import Sound2SceneConfig
from s2i_model.models.s2i.train_translator import train_translator

from runfolders import same_autoencoder

TINY = dict(batch_size=8, workers=0, max_steps=1)
SPLITS = ("train", "val")


class ShardsAway:
    """A trainer's log that takes the build's split folders away once the first epoch is logged
    (``… epoch 1/2``) and brings them back once the second is (a later stage may read them)."""

    def __init__(self, build: Path) -> None:
        self.build, self.lines, self.away = build, [], False

    def _move(self, suffix_from: str, suffix_to: str) -> None:
        for split in SPLITS:
            (self.build / f"{split}{suffix_from}").rename(self.build / f"{split}{suffix_to}")

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if re.search(r"\bepoch 1/2\b", line) and not self.away:
            self._move("", ".away")
            self.away = True
        elif re.search(r"\bepoch 2/2\b", line) and self.away:
            self._move(".away", "")
            self.away = False


def autoencoder(data, run, choice, log):
    return train_autoencoder(AutoencoderConfig(data=str(data), run=str(run), emb=64, width=0.0625, epochs=2,
                                               optimizer="adam", data_on_device=choice, **TINY), log=log)


def translator(data, run, choice, log, encoder_run=None):
    return train_translator(TranslatorConfig(data=str(data), run=str(same_autoencoder(encoder_run, run)), epochs=2,
                                             grid_every=0, data_on_device=choice, **TINY), log=log)


def aivaegan(data, run, choice, log):
    return train_aivaegan(AivaeganConfig(data=str(data), run=str(run), width=0.0625, epochs=2, grid_every=0,
                                         data_on_device=choice, **TINY), log=log)


def mmgan(data, run, choice, log):
    return train_mmgan(MmganConfig(data=str(data), run=str(run), width=0.0625, epochs_features=2, epochs_multimodal=0,
                                   epochs=0, grid_every=0, data_on_device=choice, **TINY), log=log)


def sound2scene(data, run, choice, log):
    return train_sound2scene(Sound2SceneConfig(data=str(data), run=str(run), width=0.0625, neighbours=5,
                                               epochs_visual=2, epochs_generator=0, epochs=0, grid_every=0,
                                               data_on_device=choice, **TINY), log=log)


TRAINERS = [autoencoder, translator, aivaegan, mmgan, sound2scene]


@pytest.fixture(scope="module")
def encoder_run(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("on-device") / "ae"
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=64, width=0.0625, epochs=1,
                                        optimizer="adam", **TINY), log=lambda *_: None)
    return run


def train(trainer, tiny_build, encoder_run, tmp_path, choice: str):
    """``trainer``'s two epochs on a copy of the build whose shards go away after the first."""
    data = shutil.copytree(tiny_build, tmp_path / "shards")
    log = ShardsAway(data)
    extra = {"encoder_run": encoder_run} if trainer is translator else {}
    state = trainer(data, tmp_path / "run", choice, log, **extra)
    return state, log.lines


@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda f: f.__name__)
def test_on_trains_from_memory_after_the_shards_are_gone(trainer, tiny_build, encoder_run, tmp_path):
    state, lines = train(trainer, tiny_build, encoder_run, tmp_path, "on")
    assert state["epoch"] == 2, lines
    assert any(line.startswith("data on cpu:") and "read once" in line for line in lines), lines


@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda f: f.__name__)
def test_off_reads_the_shards_every_epoch(trainer, tiny_build, encoder_run, tmp_path):
    with pytest.raises(SampleError, match="unreadable shard"):
        train(trainer, tiny_build, encoder_run, tmp_path, "off")


def test_auto_streams_over_its_budget_and_holds_within_it(tiny_build, encoder_run, tmp_path, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "0.01")  # 10 KiB: less than one sample's log-mel
    cpu = torch.device("cpu")
    assert not wanted("auto", str(tiny_build), ("train",), cpu, True, True, log=lambda *_: None)
    with pytest.raises(SampleError, match="unreadable shard"):
        train(autoencoder, tiny_build, encoder_run, tmp_path / "small", "auto")
    monkeypatch.setenv(BUDGET_ENV, "64")
    state, lines = train(autoencoder, tiny_build, encoder_run, tmp_path / "enough", "auto")
    assert state["epoch"] == 2 and any(line.startswith("data on cpu:") for line in lines), lines


def test_a_budget_that_is_not_a_size_is_one_line(tiny_build, tmp_path, monkeypatch):
    for bad in ("-1", "nan", "inf"):
        monkeypatch.setenv(BUDGET_ENV, bad)
        with pytest.raises(ValueError, match=f"{BUDGET_ENV} must be a number of MiB"):
            wanted("auto", str(tiny_build), ("train",), torch.device("cpu"), True, True)
    r = subprocess.run([sys.executable, "-m", "s2i_model.cli", "train-autoencoder", "--data", str(tiny_build),
                        "--run", str(tmp_path / "run"), "--device", "cpu", "--epochs", "1"],
                       capture_output=True, text=True, env={**os.environ, BUDGET_ENV: "lots"})
    said = r.stderr.strip()
    assert r.returncode == 1 and said == f"error: {BUDGET_ENV} must be a number of MiB, 0 or more, not 'lots'", said
    assert not (tmp_path / "run" / "autoencoder.pt").exists()


def test_auto_says_why_it_streams(tiny_build, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "0")
    said = []
    assert not wanted("auto", str(tiny_build), ("train", "val"), torch.device("cpu"), True, True, said.append)
    assert len(said) == 1 and "data streamed from the shards" in said[0] and "train+val" in said[0], said
