"""The evaluation workflow end to end on the tiny build: sample a pool, label it, train the
informativity classifiers, measure informativity during training and after it, the sweep over
embedding sizes with `make sweep`, and the report it writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.labelling.store import append_label, read_labels, read_pool
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.s2i.train_translator import train_translator

from runfolders import same_autoencoder

REPO = Path(__file__).resolve().parents[3]
QUIET = dict(log=lambda *_: None)
CLI = [sys.executable, "-m", "s2i_model.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


def label_like_a_person(pool: Path) -> dict[str, str]:
    """A stand-in for the person at the labelling page (the page itself is tested in a browser in
    test_labelling.py): within each class, the brighter half of the images is "informative". A
    rule a small CNN can learn, and one that gives every class both kinds."""
    rows = read_pool(pool)
    bright = {r["id"]: float(np.asarray(Image.open(pool / r["file"])).mean()) for r in rows}
    for cls in {r["class"] for r in rows}:
        # by rank, not against the median: two pictures of a sound can be alike (a narrow
        # generator's dropout is light), and ties at the median would unbalance the halves
        ids = sorted((r["id"] for r in rows if r["class"] == cls), key=lambda i: (bright[i], i))
        for k, i in enumerate(ids):
            append_label(pool, i, "informative" if k >= len(ids) // 2 else "not")
    return read_labels(pool)


@pytest.fixture(scope="module")
def judged(tiny_build, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("eval")
    run = root / "runs" / "emb64"
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=64, width=0.0625, epochs=1,
                                        batch_size=8, workers=0), **QUIET)
    # the paper's generator: its dropout makes the pictures of one sound differ, which the labelling
    # rule below (the brighter half of each class) needs in a pool drawn from a 1-epoch run
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=1, batch_size=8, workers=0,
                                      grid_every=1, narrow_generator="off"), **QUIET)
    pool = root / "pool"
    res = cli("sample", "--run", run, "--data", tiny_build, "--split", "train", "-n", 60, "--out", pool,
              "--target", 6, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    labels = label_like_a_person(pool)
    res = cli("train-informativity", "--labels", pool, "--out", root / "informativity", "--epochs", 200, "--lr", 0.01)
    assert res.returncode == 0, res.stderr
    return {"root": root, "run": run, "pool": pool, "labels": labels, "judges": root / "informativity"}


def test_sample_fills_a_balanced_pool_and_grows_it(judged, tiny_build):
    pool = judged["pool"]
    rows = read_pool(pool)
    assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
    counts = {c: sum(r["class"] == c for r in rows) for c in {r["class"] for r in rows}}
    assert set(counts.values()) == {12}  # 60 images over 5 classes
    assert all((pool / r["file"]).is_file() for r in rows)
    assert json.loads((pool / "pool.json").read_text())["target"] == 6
    before = (pool / "labels.csv").read_bytes()
    res = cli("sample", "--run", judged["run"], "--data", tiny_build, "--split", "train", "-n", 10, "--out", pool,
              "--seed", 1, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert len(read_pool(pool)) == 70 and (pool / "labels.csv").read_bytes() == before  # labels untouched
    res = cli("sample", "--run", judged["run"], "--data", tiny_build, "-n", 10, "--out", pool, "--seed", 1)
    assert res.returncode == 0 and "0 images added" in res.stdout  # the same seed adds nothing twice


def test_informativity_classifiers_report_accuracy_per_class(judged):
    summary = json.loads((judged["judges"] / "informativity.json").read_text())
    assert set(summary["classes"]) == {"baby", "dog", "rail", "fireworks", "water"}
    for cls, r in summary["classes"].items():
        assert r["informative"] == r["not"] == 6
        assert r["train"] + r["test"] == 12 and r["test"] >= 1
        assert 0.0 <= r["test_accuracy"] <= 1.0
    # A 2-3-image test side per class is too small to judge the judges by; on the images they were
    # trained on they must have learnt the labelling rule (brightness), which a coin or a constant
    # (50 % on these balanced labels) cannot.
    from s2i_model.data import image_to_tensor
    from s2i_model.evaluate.informativity import InformativityConfig, Judges, _in_test

    rows = [r for r in read_pool(judged["pool"])  # the labelled images they were trained on
            if r["id"] in judged["labels"] and not _in_test(r["id"], InformativityConfig().test_fraction)]
    images = torch.stack([image_to_tensor(np.asarray(Image.open(judged["pool"] / r["file"]).convert("RGB")))
                          for r in rows])
    said = Judges.load(judged["judges"]).predict(images, [r["class"] for r in rows])
    truth = torch.tensor([judged["labels"][r["id"]] == "informative" for r in rows], dtype=torch.float)
    assert float((said == truth).float().mean()) >= 0.7  # chance: 0.5 ± 0.07 on these 49 images


def test_train_informativity_refuses_a_pool_without_enough_labels(tmp_path, judged):
    pool = tmp_path / "pool"
    shutil.copytree(judged["pool"], pool)
    (pool / "labels.csv").unlink()
    res = cli("train-informativity", "--labels", pool, "--out", tmp_path / "j")
    assert res.returncode == 1 and "no class has enough labels" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "j").exists()


def test_informativity_is_measured_every_epoch_with_the_papers_schedule(judged, tiny_build, tmp_path):
    run = same_autoencoder(judged["run"], tmp_path / "epoch-schedule")
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=4, batch_size=8, workers=0, n_gd=2,
                                      d_schedule="epoch", informativity=str(judged["judges"]),
                                      informativity_samples=2), **QUIET)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    gan = [r for r in rows if r["stage"] == "translator"]
    assert [r["d_updates"] > 0 for r in gan] == [False, True, False, True]  # D through every 2nd epoch
    for r in gan:
        info = r["informativity"]
        assert set(info["per_class"]) == {"baby", "dog", "rail", "fireworks", "water"}
        assert info["mean"] == pytest.approx(np.mean(list(info["per_class"].values())))
    from s2i_model.evaluate.history import informativity_history

    assert informativity_history(gan)["replaced_epochs"] == [3, 4]  # the two after epoch 2's D update


class _TinyInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def test_evaluate_measures_informativity_and_the_proxies(judged, tiny_build, tmp_path):
    weights = tmp_path / "inception.pt"
    torch.jit.script(_TinyInception()).save(str(weights))
    run = judged["run"]
    res = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", 3, "--informativity", judged["judges"],
              "--fid-weights", weights, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["split"] == "test" and ev["samples_per_sound"] == 3 and ev["emb"] == 64
    classes = ["baby", "dog", "rail", "fireworks", "water"]
    assert list(ev["per_class"]) == classes
    for name, r in ev["per_class"].items():
        assert r["images"] == 3 * r["sounds"] > 0
        for k in ("informativity", "class_agreement", "frame_r1", "frame_r5"):
            assert 0.0 <= r[k] <= 1.0, (name, k)
        assert r["frame_r5"] >= r["frame_r1"] and r["diversity"] > 0  # dropout makes them differ
    assert ev["mean"]["informativity"] == pytest.approx(np.mean([r["informativity"] for r in ev["per_class"].values()]))
    assert ev["proxies"]["frechet_distance"] > 0 and ev["proxies"]["fid_inception"] > 0
    assert (run / ev["grid"]).is_file()
    assert "informativity" in res.stderr and "proxies" in res.stderr  # the table printed for the user
    sep = ev["embedding_separability"]
    assert 0.0 <= sep["centroid"] <= 1.0 and 0.0 <= sep["nn1"] <= 1.0 and "ceiling" in res.stderr
    again = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", 3, "--informativity", judged["judges"],
                "--fid-weights", weights, "--device", "cpu")
    assert again.returncode == 0 and "up to date" in again.stderr


def test_evaluate_errors_are_one_line(tmp_path, tiny_build, judged):
    for args, said in [(["--run", tmp_path], "no trained s2i (translator.pt)"),
                       (["--run", judged["run"], "--data", tiny_build, "--informativity", tmp_path],
                        "no informativity classifiers"),
                       (["--run", judged["run"], "--data", tiny_build, "--fid-weights", tmp_path / "no.pt"],
                        "no such weights file")]:
        res = cli("evaluate", *args, "--force")
        assert res.returncode != 0 and said in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_make_sweep_trains_evaluates_and_reports(judged, tiny_build, tmp_path, chromium):
    runs = tmp_path / "sweep"
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    args = ["make", "-s", "-o", "setup", "sweep", f"BIN={bindir}", "EMBS=128 256", f"DATA={tiny_build}",
            f"RUNS={runs}", "WIDTH=0.0625", "EPOCHS_AE=1", "EPOCHS_GAN=3", "BATCH=8", "OPT=adam", "LOADERS=0",
            "SAMPLES=2", f"INFORMATIVITY={judged['judges']}"]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((runs / "report" / "report.json").read_text())
    assert report["metric"] == "informativity"
    assert [r["emb"] for r in report["runs"]] == [128, 256]
    for r in report["runs"]:
        ev = json.loads((runs / f"emb{r['emb']}" / "evaluation.json").read_text())
        assert r["mean"] == ev["mean"] and r["epoch"] == 3
        assert r["history"]["epochs"] == [1, 2, 3]  # informativity measured every epoch
        assert (runs / "report" / r["grid_file"]).is_file()
    for png in ("history.png", "versus-size.png", "per-class.png"):
        assert Image.open(runs / "report" / png).size[0] > 300

    # the page, as a person opens it
    chromium.get((runs / "report" / "index.html").as_uri())
    cells = [[td.text for td in tr.find_elements("tag name", "td")]
             for tr in chromium.find_elements("css selector", "#summary tbody tr")]
    assert [c[0] for c in cells] == ["128", "256"]
    for c, r in zip(cells, report["runs"]):
        assert c[2] == f"{100 * r['mean']['informativity']:.1f} %"
        assert c[3] == f"{100 * r['training']['informativity_history']['mean']:.1f} % (1–3)"
    loaded = chromium.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert len(loaded) == 5 and all(loaded)  # three plots and two grids, all displayed

    # resuming what is done: nothing is trained or measured again
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert again.stderr.count("nothing to do") == 4 and again.stderr.count("up to date") == 2, again.stderr


# ---- the metrics on picture makers whose scores are known (no translator, no training of one)

@pytest.fixture(scope="module")
def frame_judge(tiny_build):
    """A real-frame classifier, stopped early on purpose (5 epochs): its predictions on the test
    frames are neither all right nor all one class, so "agreement = its accuracy" says more than
    "agreement = 1". The identities below hold for any classifier."""
    from s2i_model.evaluate.informativity import fit_classifier
    from s2i_model.evaluate.realframe import FrameClassifier, load_split

    _, images, classes, _ = load_split(tiny_build, "train")
    torch.manual_seed(0)
    model = FrameClassifier(5)
    return fit_classifier(model, torch.optim.Adam(model.parameters(), lr=3e-3), images, classes, 5, 8, 0, "cpu")


def measured(maker, data, proxy, samples: int) -> dict:
    from s2i_data.readers import read_build_json
    from s2i_model.data import Normalizer
    from s2i_model.evaluate.evaluation import measure

    classes = read_build_json(data)["classes"]
    # 4 sounds a batch: the 10 test sounds cross three batches, as a long split crosses many
    return measure(maker, data, "test", proxy, classes, samples, Normalizer.from_build(data), "cpu", batch_sounds=4)


def test_pictures_that_are_the_real_frames_score_as_the_real_frames(tiny_build, frame_judge):
    from s2i_model.evaluate.realframe import embed_images, load_split

    _, real, cls, _ = load_split(tiny_build, "test")
    classes = ["baby", "dog", "rail", "fireworks", "water"]
    with torch.no_grad():
        pred = frame_judge(real).argmax(1)
    assert len(set(pred.tolist())) > 1 and 0 < float((pred == cls).float().mean()) < 1, pred  # see frame_judge
    m = measured(lambda mels, frames: frames, tiny_build, frame_judge, samples=1)
    assert torch.equal(m["sound_cls"], cls)  # the same sounds, in the same order
    for c, name in enumerate(classes):
        row = m["per_class"][name]
        # class agreement is the judge's accuracy on the real test frames, class by class
        assert row["class_agreement"] == float((pred[cls == c] == c).float().mean()), name
        assert row["frame_r1"] == row["frame_r5"] == 1.0, name  # each picture finds its own frame
    assert m["mean"]["class_agreement"] == pytest.approx(np.mean([float((pred[cls == c] == c).float().mean())
                                                                  for c in range(5)]), abs=1e-12)
    # Fréchet distance of a set to itself is 0. The only error is scipy's sqrtm of Σ² for a Σ of
    # rank ≤ 9 (10 frames, 32 dimensions), whose zero eigenvalues come back as ~√ε·‖Σ‖ (1e-8 of
    # tr Σ each, ≤ 32 of them); 1e-5·tr Σ leaves room for that and is 10⁵ times smaller than the
    # distance of the one-picture maker below (≥ tr Σ).
    feats = embed_images(frame_judge, real).numpy().astype(np.float64)
    trace = float(np.trace(np.cov(feats, rowvar=False)))
    assert 0 <= m["proxies"]["frechet_distance"] <= 1e-5 * trace, (m["proxies"]["frechet_distance"], trace)


def test_one_picture_for_every_sound_scores_as_chance(tiny_build, frame_judge):
    from s2i_model.evaluate.realframe import embed_images, load_split

    _, train_frames, _, _ = load_split(tiny_build, "train")
    _, real, cls, _ = load_split(tiny_build, "test")
    picture = train_frames.mean(0)  # the mean train frame, whatever the sound
    m = measured(lambda mels, frames: picture.expand(2 * len(frames), -1, -1, -1), tiny_build, frame_judge, samples=2)
    classes = ["baby", "dog", "rail", "fireworks", "water"]
    with torch.no_grad():
        named = int(frame_judge(picture[None]).argmax(1))  # the class the judge sees in that picture
    feats = embed_images(frame_judge, real).numpy().astype(np.float64)
    mine = embed_images(frame_judge, picture[None]).numpy().astype(np.float64)[0]
    cos = feats @ mine / (np.linalg.norm(feats, axis=1) * np.linalg.norm(mine))
    nearest = cls[np.argsort(-cos, kind="stable")].tolist()  # classes of the real frames, nearest first

    for c, name in enumerate(classes):
        row = m["per_class"][name]
        assert row["images"] == 2 * row["sounds"] == 2 * int((cls == c).sum())
        assert row["class_agreement"] == float(c == named), name  # all its pictures agree, or none
        assert row["frame_r1"] == float(c == nearest[0]), name
        assert row["frame_r5"] == float(c in nearest[:5]), name
        assert row["diversity"] == pytest.approx(0.0, abs=1e-7)  # two identical pictures per sound
    # over all pictures, agreement is exactly the share of test sounds of the class it is named
    agree = sum(m["per_class"][n]["class_agreement"] * m["per_class"][n]["images"] for n in classes)
    assert agree / (2 * len(cls)) == pytest.approx(int((cls == named).sum()) / len(cls), abs=1e-12)
    assert m["mean"]["class_agreement"] == m["mean"]["frame_r1"] == pytest.approx(1 / 5)  # chance: 5 classes
    # the pictures' covariance is 0: the distance is the means' gap plus the real frames' spread
    want = float(((feats.mean(0) - mine) ** 2).sum() + np.trace(np.cov(feats, rowvar=False)))
    assert m["proxies"]["frechet_distance"] == pytest.approx(want, rel=1e-6)
