"""Proof that it learns: a short CPU `make train` on the built-in synthetic data set produces
pictures whose class a real-frame classifier recognises, from sounds of held-out videos, and the
same run with the sounds shuffled against the pictures (the control) does not."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # ~2.5 min on 2 CPU cores: `make test-fast` leaves it out

REPO = Path(__file__).resolve().parents[3]
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def shuffled_copy(build: Path, out: Path) -> Path:
    """The build with every train sample's sound (mel.npy) moved to another train sample: the same
    sounds and pictures, no longer paired. Val and test are left as they are."""
    from shardcraft import copy_build, members, write_members

    copy_build(build, out)
    shards = sorted((out / "train").glob("*.tar"))
    items = {s: members(s) for s in shards}
    mels = [(s, i) for s in shards for i, (name, _) in enumerate(items[s]) if name.endswith(".mel.npy")]
    order = list(range(len(mels)))
    random.Random(0).shuffle(order)
    payload = [items[s][i][1] for s, i in mels]
    for (s, i), j in zip(mels, order):
        items[s][i] = (items[s][i][0], payload[j])
    for s in shards:
        write_members(s, items[s])
    return out


def make_train(data: Path, run: Path) -> None:
    bindir = Path(sys.executable).parent  # the environment running the tests
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    # -o setup: the environment is already set up (this test runs inside it). A CPU-sized run:
    # width 1/16, Adam, and no adversarial term (LAM=0): with λ = 0.1 a few CPU minutes do not
    # give the generator enough updates to draw better than with λ = 0 (docs/training.md).
    # Batch 8: what the generator needs is updates (~700 here), and a batch of 8 costs 2/3 of 16.
    subprocess.run(["make", "-s", "-o", "setup", "train", f"BIN={bindir}", "EMB=128", "WIDTH=0.0625",
                    f"DATA={data}", f"RUN={run}", "EPOCHS_AE=10", "EPOCHS_GAN=40", "BATCH=8", "OPT=adam",
                    "LAM=0", "LOADERS=2"],
                   cwd=REPO, env=env, check=True, capture_output=True, text=True)


def per_class_agreement(run: Path, data: Path, classifier) -> tuple[float, list[float]]:
    from s2i_model.imagine import Translator

    from s2i_model.evaluate.realframe import load_split

    mels, _, classes, _ = load_split(data, "test")
    tr = Translator.load(run, "cpu")
    with torch.no_grad():
        images = tr.images(tr.encoder(mels), 4).flatten(0, 1)
        pred = torch.cat([classifier(b).argmax(1) for b in images.split(256)])
    right = pred == classes.repeat_interleave(4)
    per = [float(right[classes.repeat_interleave(4) == c].float().mean()) for c in range(len(CLASSES))]
    return float(right.float().mean()), per


def test_make_train_learns_recognisable_pictures(learning_data, learning_judge, tmp_path):
    toy_build = learning_data
    from s2i_model.evaluate.realframe import embedding_separability, load_split

    make_train(toy_build, tmp_path / "run")
    control = shuffled_copy(toy_build, tmp_path / "shuffled")
    make_train(control, tmp_path / "control")

    classifier = learning_judge
    _, real, classes, _ = load_split(toy_build, "test")
    assert classifier(real).argmax(1).eq(classes).float().mean() > 0.8  # the judge itself sees classes (~88 %)
    agreement, per = per_class_agreement(tmp_path / "run", toy_build, classifier)
    chance, per_control = per_class_agreement(tmp_path / "control", toy_build, classifier)
    ceiling = embedding_separability(tmp_path / "run", toy_build)
    print(f"\nclass agreement of pictures imagined from {len(classes)} held-out sounds: {agreement:.1%} "
          f"(per class {', '.join(f'{c} {a:.0%}' for c, a in zip(CLASSES, per))}); the control, trained on "
          f"sounds shuffled against pictures: {chance:.1%} ({', '.join(f'{a:.0%}' for a in per_control)}); "
          f"the ceiling, the embeddings alone: nearest centroid {ceiling['centroid']:.1%}, 1-NN {ceiling['nn1']:.1%}")
    # A generator that cannot hear which picture goes with a sound draws the same kind of picture
    # for every class: on this balanced split it scores about chance, 20 %. Seen here: 48-52 %
    # for the real run on this data, 34-37 % on the harder seed-4 data (docs/performance.md).
    assert chance <= 0.3
    assert agreement >= 0.3 and agreement >= chance + 0.15
