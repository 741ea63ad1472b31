"""`make compare` end to end on the tiny build: S2I and AIVAE trained at the test preset, the two
reference rows (retrieval in S2I's embedding, the real frames), all evaluated alike, one report
with a row each, per-class bars and the same test sounds side by side; a second `make compare`
trains and measures nothing again."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from s2i_model.evaluate.compare import HEADER
from s2i_model.grid import LABEL_W, PAD

pytestmark = pytest.mark.slow(2)  # two trainings, two evaluations and a report, twice: ~2 min on 2 loaded cores

REPO = Path(__file__).resolve().parents[3]
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def make_compare(data: Path, runs: Path) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent  # the environment running the tests
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["make", "-s", "-o", "setup", "compare", f"BIN={bindir}", "COMPARE_SIZE=test",
                           "MODELS=s2i aivae", f"DATA={data}", f"RUNS={runs}"],
                          cwd=REPO, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def compared(tiny_build, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("compare") / "runs"
    done = make_compare(tiny_build, runs)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs


def test_one_row_per_model_with_finite_numbers(compared):
    report = json.loads((compared / "report" / "report.json").read_text())
    rows = report["comparison"]["rows"]
    assert [(r["model"], r["name"]) for r in rows] == [("s2i", "s2i"), ("aivae", "aivae"),
                                                       ("retrieval", "retrieval-s2i"), ("real", "real")]
    assert report["comparison"]["same_evaluation"]
    for r in rows[2:]:  # the references train nothing
        assert r["epoch"] is None and r["training_seconds"] is None and r["labels_used"].startswith("none")
    rows = rows[:2]
    for r in rows:
        assert r["labels_used"] == "none (sound-frame pairs only)" and r["epoch"] == 1
        assert r["informativity"] is None  # no judges given
        for k in ("class_agreement", "retrieval_r1", "retrieval_r5", "diversity"):
            assert 0.0 <= r[k] <= 1.0, (r["name"], k)
        for k in ("frechet_distance", "kernel_distance", "training_seconds", "samples_per_s"):
            assert math.isfinite(r[k]) and r[k] > 0, (r["name"], k)
        assert r["parameters"] > 0 and r["training_samples"] > 0
    # the same evaluation behind every row: the numbers are each run's evaluation.json
    for r in rows:
        ev = json.loads((compared / r["name"] / "evaluation.json").read_text())
        assert ev["model"] == r["model"] and ev["samples_per_sound"] == 2 and ev["split"] == "test"
        assert r["class_agreement"] == ev["mean"]["class_agreement"]


def test_parameters_are_those_of_the_networks_that_draw(compared):
    from s2i_model import run as run_folder
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
    from s2i_model.models.aivae.nets import MODELS

    rows = {r["model"]: r for r in json.loads((compared / "report" / "report.json").read_text())["comparison"]["rows"]}

    def count(net):
        return sum(p.numel() for p in net.parameters())

    # test preset: E = 64, latent 64, width 1/16
    assert rows["s2i"]["parameters"] == count(AudioAutoencoder(64, 0.0625).encoder) + count(DenseGenerator(64, 0.0625))
    assert rows["aivae"]["parameters"] == count(MODELS["aivae"](64, 0.0625))
    assert run_folder.parameter_count(run_folder.load_model(compared / "aivae", "cpu")) == rows["aivae"]["parameters"]


def test_per_class_bars_and_the_side_by_side_grid(compared):
    report = json.loads((compared / "report" / "report.json").read_text())
    assert Image.open(compared / "report" / report["plots"]["per_class"]).size[0] > 300
    grid = report["comparison"]["grid"]
    assert grid["columns"] == ["real", "s2i", "aivae", "retrieval (retrieval-s2i)"] and grid["pictures_per_model"] == 2
    keys = grid["sounds"]
    assert len(keys) == 2 * len(CLASSES) == len(set(keys))  # the first 2 test sounds of every class
    img = Image.open(compared / "report" / grid["file"])
    side, cols = 96, 1 + 2 * 3  # the real frame, then 2 pictures of each of 2 models and of retrieval
    assert img.size == (LABEL_W + cols * (side + PAD) + PAD, HEADER + len(keys) * (side + PAD) + PAD)
    page = (compared / "report" / "index.html").read_text()
    assert 'id="models"' in page and 'id="side-by-side"' in page and "versus-size" not in page
    assert not (compared / "report" / "versus-size.png").exists()


def test_side_by_side_pictures_are_each_models_own_with_the_same_seed(compared, tiny_build):
    import numpy as np
    import torch

    from s2i_model import run as run_folder
    from s2i_model.evaluate.compare import split_sounds

    grid = json.loads((compared / "report" / "report.json").read_text())["comparison"]["grid"]
    sounds = split_sounds(str(tiny_build), "test", 2)
    assert [k for k, *_ in sounds] == grid["sounds"]
    img = np.asarray(Image.open(compared / "report" / grid["file"]))
    for m, model_name in enumerate(["s2i", "aivae", "retrieval-s2i"]):
        model = run_folder.load_model(compared / model_name, "cpu")
        mels = torch.stack([model.norm(raw) for _, raw, _, _ in sounds])
        pics = model.sound_pictures(mels, 2, grid["seed"])
        first = pics[0, 0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
        x = LABEL_W + PAD + (1 + 2 * m) * (96 + PAD)
        assert np.array_equal(img[HEADER + PAD:HEADER + PAD + 96, x:x + 96], first), model_name


def test_make_compare_again_redoes_nothing(compared, tiny_build):
    files = [compared / "s2i" / "autoencoder.pt", compared / "s2i" / "translator.pt", compared / "aivae" / "aivae.pt",
             compared / "s2i" / "evaluation.json", compared / "aivae" / "evaluation.json",
             compared / "retrieval-s2i" / "reference.json", compared / "retrieval-s2i" / "evaluation.json",
             compared / "real" / "reference.json", compared / "real" / "evaluation.json",
             compared / "frame-classifier.pt", compared / "report" / "report.json", compared / "report" / "index.html"]
    before = {f: f.stat().st_mtime_ns for f in files}
    again = make_compare(tiny_build, compared)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert again.stderr.count("nothing to do") == 3 and again.stderr.count("up to date") == 5, again.stderr  # 4 rows, the report


def test_reference_rows_measure_what_they_are(compared, tiny_build):
    """The real-frame row is the ceiling: its class agreement is the frame classifier's accuracy on
    the real test frames, R@1 is 1 and the Fréchet distance 0. The retrieval row copies: a train
    sound retrieves its own frame first, and its parameters are S2I's encoder's."""
    import torch

    from s2i_model import checkpoint
    from s2i_model import run as run_folder
    from s2i_model.data import ShardStream
    from s2i_model.evaluate.realframe import FrameClassifier
    from s2i_data.readers import Build
    from s2i_model.models.s2i.nets import AudioAutoencoder

    rows = {r["name"]: r for r in json.loads((compared / "report" / "report.json").read_text())["comparison"]["rows"]}
    real = json.loads((compared / "real" / "evaluation.json").read_text())
    clf = FrameClassifier(len(CLASSES))
    clf.load_state_dict(checkpoint.load(compared / "frame-classifier.pt")["model"])
    clf.eval()
    right: dict[int, list[bool]] = {}
    with torch.no_grad():
        for _, img, cls, _ in ShardStream(Build.open(str(tiny_build)), "test", lambda m: m, shuffle=False):
            right.setdefault(cls, []).append(int(clf(img[None]).argmax(1).item()) == cls)
    for c, hits in right.items():
        assert real["per_class"][CLASSES[c]]["class_agreement"] == pytest.approx(sum(hits) / len(hits)), CLASSES[c]
    assert real["mean"]["retrieval_r1"] == 1.0 and real["proxies"]["frechet_distance"] < 0.05  # 0 up to the matrix square root's rounding
    assert rows["real"]["parameters"] == 0

    retrieval = run_folder.load_model(compared / "retrieval-s2i", "cpu")
    build = Build.open(str(tiny_build))
    mel, img, _, _ = next(iter(ShardStream(build, "train", retrieval.norm, shuffle=False)))
    first = retrieval.sound_pictures(mel[None], 2)[0, 0]
    assert torch.allclose(first, img, atol=1 / 127.5)
    enc = AudioAutoencoder(64, 0.0625).encoder
    assert rows["retrieval-s2i"]["parameters"] == sum(p.numel() for p in enc.parameters())


def test_labels_used_is_declared_for_every_registered_model():
    from s2i_model import models

    declared = {n: models.get(n).labels_used for n in models.names(include_references=True)}
    assert all(said and said != "not declared" for said in declared.values()), declared
