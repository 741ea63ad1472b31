"""The comparison's "labels used" column is a declaration (each model's registry entry, `models.get(name).labels_used`); here it is checked.
Every model declared to learn without class labels is trained for one epoch on a build and on
the same build with its class labels scrambled (sounds, pictures, keys and shards unchanged): the
weights must be the same to the last bit. The model that declares class labels (mmgan) must come
out different, which shows the scrambled labels do reach a trainer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model import models
from s2i_model.models.aivae.train import train_aivae, train_aivaegan
from s2i_model.models.aivae.config import AivaeConfig
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.models.sound2scene.train import train_sound2scene
from s2i_model.models.sound2scene.config import Sound2SceneConfig
from s2i_model.models.s2i.train_translator import train_translator

from shardcraft import copy_build, members, write_members, write_parquet

QUIET = dict(log=lambda *_: None)
# one epoch of each stage, of its first two batches (a label read anywhere in a step shows in the
# first), and the whole val split
TINY = dict(batch_size=8, workers=0, max_steps=2)


def scrambled_labels(build: Path, out: Path, seed: int = 0) -> Path:
    """A copy of ``build`` whose samples' class labels are shuffled within each split (each class
    keeps its count): the .cls member and the .json's class in every shard, and the manifest's
    class and class_index. Everything else is byte for byte the build's."""
    copy_build(build, out)
    classes = json.loads((out / "stats.json").read_text())["classes"]
    man = pd.read_parquet(out / "manifest.parquet")
    rng = random.Random(seed)
    label: dict[str, int] = {}
    for _, rows in man.groupby("split"):
        old = list(rows["class_index"])
        new = old[:]
        rng.shuffle(new)
        label.update(zip(rows["key"], new))
    changed = sum(label[k] != c for k, c in zip(man["key"], man["class_index"]))
    assert changed > len(man) // 2, "the shuffle left most labels where they were"
    man["class_index"] = [label[k] for k in man["key"]]
    man["class"] = [classes[i] for i in man["class_index"]]
    write_parquet(man, out / "manifest.parquet")
    for shard in sorted(out.glob("*/*.tar")):
        items = []
        for name, data in members(shard):
            key, ext = name.split(".", 1)
            if ext == "cls":
                data = str(label[key]).encode()
            elif ext == "json":
                meta = json.loads(data)
                meta.update({"class": classes[label[key]], "class_index": label[key]})
                data = json.dumps(meta, sort_keys=True).encode()
            items.append((name, data))
        write_members(shard, items)
    return out


@pytest.fixture(scope="module")
def scrambled(tiny_build, tmp_path_factory) -> Path:
    return scrambled_labels(tiny_build, tmp_path_factory.mktemp("scrambled") / "shards")


# ---- each model's one epoch: {name: state dict} of the networks it trained

def s2i(data: Path, run: Path) -> dict:
    ae = train_autoencoder(AutoencoderConfig(data=str(data), run=str(run), emb=64, width=0.0625, epochs=1,
                                             optimizer="adam", **TINY), **QUIET)
    gan = train_translator(TranslatorConfig(data=str(data), run=str(run), epochs=1, n_gd=1, grid_every=1,
                                            grid_images=2, **TINY), **QUIET)
    return {"autoencoder": ae["model"], "G": gan["G"], "D": gan["D"]}


def aivae(data: Path, run: Path) -> dict:
    return {"vae": train_aivae(AivaeConfig(data=str(data), run=str(run), width=0.0625, epochs=1, grid_every=1,
                                           grid_images=2, **TINY), **QUIET)["vae"]}


def aivaegan(data: Path, run: Path) -> dict:
    state = train_aivaegan(AivaeganConfig(data=str(data), run=str(run), width=0.0625, epochs=1, grid_every=1,
                                          grid_images=2, **TINY), **QUIET)
    return {"vae": state["vae"], "D": state["D"]}


def sound2scene(data: Path, run: Path) -> dict:
    state = train_sound2scene(Sound2SceneConfig(data=str(data), run=str(run), width=0.0625, neighbours=5,
                                                epochs_visual=1, epochs_generator=1, epochs=1, grid_every=1,
                                                grid_images=2, **TINY), **QUIET)
    return {"nets": state["nets"]}


def mmgan(data: Path, run: Path) -> dict:
    state = train_mmgan(MmganConfig(data=str(data), run=str(run), width=0.0625, epochs_features=1,
                                    epochs_multimodal=0, epochs=0, grid_every=0, **TINY), **QUIET)
    return {"nets": state["nets"]}


TRAINERS = {"s2i": s2i, "aivae": aivae, "aivaegan": aivaegan, "sound2scene": sound2scene, "mmgan": mmgan}
NOT_TRAINED = set(models.REFERENCES)  # reference rows: no generator learns (the lookup's class labels are its point)
LABELS_USED = {n: models.get(n).labels_used for n in models.names(include_references=True)}
NO_LABELS = sorted(m for m, said in LABELS_USED.items() if said.startswith("none") and m not in NOT_TRAINED)
LABELS = sorted(m for m, said in LABELS_USED.items() if not said.startswith("none") and m not in NOT_TRAINED)


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [f"{net}.{k}" for net in a for k in a[net] if not torch.equal(a[net][k], b[net][k])]


def test_every_model_is_checked():
    assert set(LABELS_USED) == set(TRAINERS) | NOT_TRAINED, "a model without a label check here"
    assert NO_LABELS and LABELS == ["mmgan"]


@pytest.mark.parametrize("model", NO_LABELS)
def test_scrambled_class_labels_change_no_weight(model, tiny_build, scrambled, tmp_path):
    original = TRAINERS[model](tiny_build, tmp_path / "original")
    other = TRAINERS[model](scrambled, tmp_path / "scrambled")
    unlike = differing(original, other)
    assert unlike == [], f"{model} is declared to use {LABELS_USED[model]!r}, yet class labels changed {unlike[:5]}"


@pytest.mark.parametrize("model", LABELS)
def test_a_model_that_reads_the_labels_sees_the_scramble(model, tiny_build, scrambled, tmp_path):
    original = TRAINERS[model](tiny_build, tmp_path / "original")
    unlike = differing(original, TRAINERS[model](scrambled, tmp_path / "scrambled"))
    assert unlike, f"{model} is declared to use {LABELS_USED[model]!r}, yet scrambled labels changed no weight"
    # the same classes, the same count of each in each split: only which sample is which changed
    assert json.loads((scrambled / "stats.json").read_text()) == json.loads((tiny_build / "stats.json").read_text())
