"""Proof that it learns, with the paper's objective: issue 11's CPU `make train` (λ = 0.1) on the
built-in synthetic data set produces pictures whose class a real-frame classifier recognises, from
sounds of held-out videos, and the same run with the sounds shuffled against the pictures (the
control) draws at chance. λ = 0 against λ = 0.1 is measured over seeds by bench/learning.py
(docs/training.md): at this budget which one ends higher depends on the seed and the machine, so
it is a figure, not an assertion; that λ weights the term G learns from is
train/test_adversarial_terms.py's."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runfolders import same_autoencoder

pytestmark = pytest.mark.slow(8)  # ~8 min on one CPU thread: `make test-fast` leaves it out

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


# Issue 11's command, as a user types it (20 synthetic videos a class, 30 % of the videos held out)
COMMAND = ["EMB=128", "WIDTH=0.0625", "EPOCHS_AE=40", "EPOCHS_GAN=80", "BATCH=16", "OPT=adam", "LOADERS=2"]
# Calibrated over data seeds 3, 4, 5 with this test's own procedure, every torch process on one
# thread as the suite runs it (tests/conftest.py), on the two kinds of 2-core AMD EPYC machine CI
# has run on (docs/training.md, "The test"): class agreement after 80 epochs, and the classes the
# λ = 0.1 run draws at least MARGIN above the control. The figures belong to the machine: a CPU of
# another kind sums floats in another order, and 40 autoencoder epochs on 230 clips amplify that
# into another embedding (seed 3: 79.0 % on the machine of 2026-11-30 on two threads, 60.2 % and
# 49.3 % on these two on one).
CALIBRATION = {
    "AVX-512 bf16 (2026-12-07)": {"λ = 0.1": (0.602, 0.557, 0.536), "classes above": (3, 3, 3)},
    "Zen 3, AVX2 (2026-12-08)": {"λ = 0.1": (0.493, 0.595, 0.588), "classes above": (2, 2, 2)},
}
# Issue 11's 60 % is for its whole command (240 translator epochs, `make demo`; docs/training.md);
# after 80 epochs the calibration reaches 49.3-60.2 %. A generator that draws each picture from
# another sound's embedding: 21.9 % on seed 3's run; one that cannot hear the sound: ~20 %
BAR = 0.40
# chance is 20 % (calibrated, the control reusing the λ = 0.1 run's autoencoder: 20.0, 22.1, 20.0 %
# on Zen 3, every sound drawn as rail but baby 11 % on seed 4; 20.0 % on each seed on the other
# machine with an autoencoder of its own)
CONTROL_MAX = 0.30
# per class, the real run above the control, which draws one class for every sound (seed 3 on
# Zen 3: baby 100, dog 7, rail 39, fireworks 0, water 100 % against 0, 0, 100, 0, 0 %; the class
# the control draws can never clear it): a generator that draws one class for every sound clears 1
# at most, so 2 of 5 is the bar (calibrated 2-3)
MARGIN, CLASSES_ABOVE = 0.15, 2
# issue 11: "on the built-in data D's loss falls clearly below 2.0" (2.0: a D that outputs 0 for
# everything). Mean of the last 10 epochs at λ = 0.1, calibrated on the same seeds: 1.68, 1.45,
# 1.70 on one machine, 1.59, 1.54, 1.84 on the other
D_LOSS_MAX = 1.90


def make_train(data: Path, run: Path, lam: float) -> None:
    bindir = Path(sys.executable).parent  # the environment running the tests
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    # -o setup: the environment is already set up (this test runs inside it)
    subprocess.run(["make", "-s", "-o", "setup", "train", f"BIN={bindir}", f"DATA={data}", f"RUN={run}",
                    *COMMAND, f"LAM={lam:g}"], cwd=REPO, env=env, check=True, capture_output=True, text=True)


def train_translator(data: Path, run: Path) -> None:
    """Stage 2 of COMMAND alone, at λ = 0.1, in ``run`` (which holds an autoencoder already): the
    control's translator. `make train` would refuse the copied autoencoder (trained on the other
    build's path), rightly for a resumed stage 1."""
    settings = dict(x.split("=") for x in COMMAND)
    subprocess.run([str(Path(sys.executable).parent / "s2i-model"), "train-translator", "--data", str(data),
                    "--run-dir", str(run), "--epochs", settings["EPOCHS_GAN"], "--batch-size", settings["BATCH"],
                    "--optimizer", settings["OPT"], "--lam", "0.1", "--workers", settings["LOADERS"]],
                   cwd=REPO, check=True, capture_output=True, text=True)


def per_class_agreement(run: Path, data: Path, classifier) -> tuple[float, list[float]]:
    from s2i_model.models.s2i.load import Translator

    from s2i_model.evaluate.realframe import load_split

    mels, _, classes, _ = load_split(data, "test")
    tr = Translator.load(run, "cpu")
    with torch.no_grad():
        images = tr.images(tr.encoder(mels), 4).flatten(0, 1)
        pred = torch.cat([classifier(b).argmax(1) for b in images.split(256)])
    right = pred == classes.repeat_interleave(4)
    per = [float(right[classes.repeat_interleave(4) == c].float().mean()) for c in range(len(CLASSES))]
    return float(right.float().mean()), per


def assert_term_was_there(run: Path) -> None:
    """The λ = 0.1 run trained with the adversarial term: G's loss carries it in every epoch and
    the checkpoint records λ (a run that ignored λ would pass the agreement bars as well)."""
    from s2i_model import checkpoint

    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if r["stage"] == "translator"]
    assert rows and all(r["g_loss"] > r["pixel_loss"] for r in rows), "λ = 0.1: G's loss without the term"
    assert checkpoint.load(run / "translator.pt")["config"]["lam"] == 0.1


def test_make_train_learns_recognisable_pictures(learning_data, request, tmp_path):
    from s2i_model.evaluate.realframe import embedding_separability, load_split

    data = learning_data
    make_train(data, tmp_path / "lam0.1", 0.1)
    control = shuffled_copy(data, tmp_path / "shuffled")
    # the control learns from the same sounds (only their pictures moved): the λ = 0.1 run's
    # autoencoder is its autoencoder, and only the pairing differs between the two translators
    train_translator(control, same_autoencoder(tmp_path / "lam0.1", tmp_path / "control"))

    judge = request.getfixturevalue("learning_judge")  # after training: conftest.learning_judge
    _, real, classes, _ = load_split(data, "test")
    assert judge(real).argmax(1).eq(classes).float().mean() > 0.8  # the judge itself sees classes (~90 %)
    agreement, per = per_class_agreement(tmp_path / "lam0.1", data, judge)
    chance, per_control = per_class_agreement(tmp_path / "control", data, judge)
    ceiling = embedding_separability(tmp_path / "lam0.1", data, classifier=judge)
    rows = [json.loads(x) for x in (tmp_path / "lam0.1" / "metrics.jsonl").read_text().splitlines()]
    d_losses = [r["d_loss"] for r in rows if r["stage"] == "translator"][-10:]
    d_loss = sum(d_losses) / len(d_losses)

    def classes_(per):
        return ", ".join(f"{c} {a:.0%}" for c, a in zip(CLASSES, per))

    low = min(x for machine in CALIBRATION.values() for x in machine["λ = 0.1"])
    print(f"\nclass agreement of pictures imagined from {len(classes)} held-out sounds, 4 each:"
          f"\n  λ = 0.1: {agreement:.1%} ({classes_(per)})"
          f"\n  control, sounds shuffled against pictures: {chance:.1%} ({classes_(per_control)})"
          f"\n  ceiling, the embeddings alone: nearest centroid {ceiling['centroid']:.1%}, 1-NN {ceiling['nn1']:.1%}; "
          f"pictures a linear map draws from them: {ceiling['linear']:.1%}"
          f"\n  D's loss at λ = 0.1, mean of the last 10 epochs: {d_loss:.2f} (2.0: a D that outputs 0)"
          f"\n  calibration over data seeds 3, 4, 5, λ = 0.1: " + "; ".join(
              f"{k} {', '.join(f'{x:.1%}' for x in v['λ = 0.1'])}" for k, v in CALIBRATION.items()) +
          f"\n  asserted: λ = 0.1 ≥ {BAR:.0%} (lowest calibrated {low:.1%}); "
          f"control ≤ {CONTROL_MAX:.0%}; λ = 0.1 ≥ control + {MARGIN:.0%} in ≥ {CLASSES_ABOVE} of 5 classes; "
          f"D's loss ≤ {D_LOSS_MAX}")
    # A generator that cannot hear which picture goes with a sound draws the same kind of picture
    # for every class: about chance (20 %) overall, all of one class and none of the others.
    assert chance <= CONTROL_MAX
    assert agreement >= BAR
    assert_term_was_there(tmp_path / "lam0.1")
    assert sum(a >= c + MARGIN for a, c in zip(per, per_control)) >= CLASSES_ABOVE
    assert d_loss <= D_LOSS_MAX
