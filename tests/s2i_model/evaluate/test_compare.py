"""`make compare` end to end on the tiny build: S2I and AIVAE trained at the test preset, the
reference rows (chance, the class-mean lookup, nearest-sound in S2I's embedding, the real frames),
all evaluated alike, one report
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
                           "MODELS=s2i aivae", "SEEDS=0 1", f"DATA={data}", f"RUNS={runs}"],
                          cwd=REPO, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def compared(tiny_build, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("compare") / "runs"
    done = make_compare(tiny_build, runs)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs


def test_one_row_per_model_with_finite_numbers_and_intervals(compared):
    report = json.loads((compared / "report" / "report.json").read_text())
    rows = report["comparison"]["rows"]
    assert [(r["model"], r["name"]) for r in rows] == [("s2i", "s2i"), ("aivae", "aivae"), ("chance", "chance"),
                                                       ("lookup", "lookup"), ("nearest-sound", "nearest-sound-s2i"),
                                                       ("real", "real")]
    assert report["comparison"]["same_evaluation"]
    for r in rows[2:]:  # the references train nothing (the lookup's sound classifier learns class labels)
        assert r["epoch"] is None and r["training_seconds"] is None
        assert r["labels_used"].startswith("class labels" if r["model"] == "lookup" else "none"), r
    for r in rows:  # every row joins its two seeds' runs, and every number has its interval around it
        assert r["seeds"] == [0, 1] if r["model"] in ("s2i", "aivae") else len(r["seeds"]) == 2
        for k in ("class_agreement", "class_agreement_full", "frame_r1", "frame_r5"):
            lo, hi = r[k]["interval"]
            assert 0.0 <= lo <= hi <= 1.0, (r["name"], k)
        for k in ("frechet_distance", "kernel_distance"):
            assert math.isfinite(r[k]["value"]) and r[k]["interval"] is not None, (r["name"], k)
    rows = rows[:2]
    for r in rows:
        assert r["labels_used"] == "none (sound-frame pairs only)" and r["epoch"] == 4
        assert r["informativity"]["value"] is None  # no judges given
        for k in ("training_seconds", "samples_per_s"):
            assert math.isfinite(r[k]) and r[k] > 0, (r["name"], k)
        assert r["parameters"] > 0 and r["training_samples"] > 0
    # the numbers are the two seeds' evaluation.json, averaged
    for r in rows:
        evs = [json.loads((compared / f"{r['name']}-seed{s}" / "evaluation.json").read_text()) for s in (0, 1)]
        assert all(ev["model"] == r["model"] and ev["samples_per_sound"] == 2 and ev["split"] == "test" for ev in evs)
        assert r["class_agreement"]["value"] == pytest.approx(sum(ev["mean"]["class_agreement"] for ev in evs) / 2)


def test_orders_only_where_intervals_do_not_overlap(compared):
    cmp = json.loads((compared / "report" / "report.json").read_text())["comparison"]
    rows = {r["name"]: r["class_agreement"] for r in cmp["rows"]}
    for a, ra in rows.items():
        for b, rb in rows.items():
            if a == b:
                continue
            apart = ra["interval"][0] > rb["interval"][1] or rb["interval"][0] > ra["interval"][1]
            want = "not separable" if not apart else "above" if ra["value"] > rb["value"] else "below"
            assert cmp["orders"][a][b] == want, (a, b)


def test_learning_curves_have_four_points_of_rising_samples_seen(compared):
    from s2i_model.evaluate.history import log_rows

    cmp = json.loads((compared / "report" / "report.json").read_text())["comparison"]
    assert cmp["curves_plot"] == "curves.png" and (compared / "report" / "curves.png").stat().st_size > 1000
    for model in ("s2i", "aivae"):
        assert cmp["curves"][model]["seeds"] == 2
        for seed in (0, 1):
            points = json.loads((compared / f"{model}-seed{seed}" / "curve.json").read_text())["points"]
            assert [p["epochs"] for p in points] == [1, 2, 3, 4]
            seen = [p["samples_seen"] for p in points]
            assert seen == sorted(seen) and len(set(seen)) == 4
            # the last point's samples seen are every stage's logged samples (metrics.jsonl), read here alone
            rows = log_rows(compared / f"{model}-seed{seed}")
            assert seen[-1] == sum(r["samples"] for r in rows if "seconds" in r)
            final = json.loads((compared / f"{model}-seed{seed}" / "evaluation.json").read_text())
            assert points[-1]["class_agreement"] == pytest.approx(final["mean"]["class_agreement"])


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
    assert run_folder.parameter_count(run_folder.load_model(compared / "aivae-seed0", "cpu")) == rows["aivae"]["parameters"]


def test_per_class_bars_and_the_side_by_side_grid(compared):
    report = json.loads((compared / "report" / "report.json").read_text())
    assert Image.open(compared / "report" / report["plots"]["per_class"]).size[0] > 300
    grid = report["comparison"]["grid"]
    assert grid["columns"] == ["real", "s2i", "aivae", "chance", "lookup", "nearest-sound (nearest-sound-s2i)"]
    assert grid["pictures_per_model"] == 2
    keys = grid["sounds"]
    assert len(keys) == 2 * len(CLASSES) == len(set(keys))  # the first 2 test sounds of every class
    img = Image.open(compared / "report" / grid["file"])
    side, cols = 96, 1 + 2 * 5  # the real frame, then 2 pictures of each of 2 models and of 3 reference rows
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
    for m, model_name in enumerate(["s2i", "aivae", "chance", "lookup", "nearest-sound-s2i"]):
        model = run_folder.load_model(compared / f"{model_name}-seed0", "cpu")
        mels = torch.stack([model.norm(raw) for _, raw, _, _ in sounds])
        pics = model.sound_pictures(mels, 2, grid["seed"])
        first = pics[0, 0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()
        x = LABEL_W + PAD + (1 + 2 * m) * (96 + PAD)
        assert np.array_equal(img[HEADER + PAD:HEADER + PAD + 96, x:x + 96], first), model_name


def test_make_compare_again_redoes_nothing(compared, tiny_build):
    files = [compared / "judges.pt", compared / "report" / "report.json", compared / "report" / "index.html"]
    for seed in (0, 1):
        run = lambda name: compared / f"{name}-seed{seed}"  # noqa: E731
        files += [run("s2i") / "autoencoder.pt", run("s2i") / "translator.pt", run("aivae") / "aivae.pt",
                  run("s2i") / "curve.json", run("aivae") / "curve.json"]
        files += [run(r) / f for r in ("s2i", "aivae", "nearest-sound-s2i", "lookup", "chance", "real")
                  for f in ("evaluation.json",) + (("reference.json",) if r not in ("s2i", "aivae") else ())]
    before = {f: f.stat().st_mtime_ns for f in files}
    again = make_compare(tiny_build, compared)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # per seed: S2I's two stages and AIVAE's one; 6 rows each evaluated; and the report
    assert again.stderr.count("nothing to do") == 6 and again.stderr.count("up to date") == 13, again.stderr


def test_reference_rows_measure_what_they_are(compared, tiny_build):
    """The real-frame row is the ceiling judged by the same judges: its class agreement is, for
    every test frame, what its fold's blurred judge in RUNS/judges.pt reads (computed here from the
    stored weights and the manifest's videos), frame R@1 is 1 and the Fréchet distance 0. The
    nearest-sound row copies: a train sound retrieves its own frame first, and its parameters are
    S2I's encoder's. The lookup's parameters are its sound classifier's."""
    import pyarrow.parquet as pq
    import torch

    from s2i_model import checkpoint
    from s2i_model import run as run_folder
    from s2i_model.data import ShardStream
    from s2i_model.evaluate.crossfit import video_folds
    from s2i_model.evaluate.realframe import FrameClassifier
    from s2i_data.readers import Build
    from s2i_model.models.s2i.nets import AudioAutoencoder

    rows = {r["name"]: r for r in json.loads((compared / "report" / "report.json").read_text())["comparison"]["rows"]}
    real = json.loads((compared / "real-seed0" / "evaluation.json").read_text())
    stored = checkpoint.load(compared / "judges.pt")
    judges = []
    for state in stored["states"]["blurred"]:
        clf = FrameClassifier(len(CLASSES), 4)
        clf.load_state_dict(state)
        judges.append(clf.eval())
    manifest = pq.read_table(tiny_build / "manifest.parquet").to_pandas()
    test = manifest[manifest["split"] == "test"]
    video_of = dict(zip(test["key"], test["video_id"]))
    folds = video_folds(dict(zip(test["video_id"], test["class_index"])), len(judges))
    right: dict[int, list[bool]] = {}
    with torch.no_grad():
        for _, img, cls, key in ShardStream(Build.open(str(tiny_build)), "test", lambda m: m, shuffle=False):
            right.setdefault(cls, []).append(int(judges[folds[video_of[key]]](img[None]).argmax(1).item()) == cls)
    for c, hits in right.items():
        assert real["per_class"][CLASSES[c]]["class_agreement"] == pytest.approx(sum(hits) / len(hits)), CLASSES[c]
    assert real["judge"]["blurred"]["held_out_accuracy"] == pytest.approx(real["mean"]["class_agreement"])
    assert real["mean"]["frame_r1"] == 1.0 and real["proxies"]["frechet_distance"] < 0.05  # 0 up to sqrtm's rounding
    assert rows["real"]["parameters"] == 0

    retrieval = run_folder.load_model(compared / "nearest-sound-s2i-seed0", "cpu")
    build = Build.open(str(tiny_build))
    mel, img, _, _ = next(iter(ShardStream(build, "train", retrieval.norm, shuffle=False)))
    first = retrieval.sound_pictures(mel[None], 2)[0, 0]
    assert torch.allclose(first, img, atol=1 / 127.5)
    enc = AudioAutoencoder(64, 0.0625).encoder
    assert rows["nearest-sound-s2i"]["parameters"] == sum(p.numel() for p in enc.parameters())
    assert rows["chance"]["parameters"] == 0 and rows["lookup"]["parameters"] == 2 * 128 * 5 + 5
    lookup = json.loads((compared / "lookup-seed0" / "reference.json").read_text())["classifier"]
    assert 0.0 <= lookup["test_accuracy"] <= 1.0 and lookup["test_sounds"] == build.size("test")


def test_the_page_fits_a_laptop_screen(compared, chromium):
    """At 1280 × 800 the models table shows every column without scrolling sideways and no row
    wraps into a tall block; every number cell holds its interval."""
    chromium.set_window_size(1280, 800)
    chromium.get((compared / "report" / "index.html").as_uri())
    width = chromium.execute_script("return document.documentElement.clientWidth")
    table = chromium.execute_script("const r = document.getElementById('models').getBoundingClientRect();"
                                    "return [r.left, r.right];")
    assert 0 <= table[0] and table[1] <= width, (table, width)
    assert chromium.execute_script("return document.documentElement.scrollWidth") <= width
    heights = chromium.execute_script("return [...document.querySelectorAll('#models tbody tr')]"
                                      ".map(r => r.getBoundingClientRect().height)")
    line = chromium.execute_script("return parseFloat(getComputedStyle(document.querySelector('#models td')).lineHeight)"
                                   " || 16")
    assert len(heights) == 6 and max(heights) <= 2.5 * line, (heights, line)
    cells = chromium.execute_script("return [...document.querySelectorAll('#models tbody tr')]"
                                    ".map(r => [...r.cells].map(c => c.textContent))")
    for row in cells:
        assert all("[" in c for c in row[2:6]), row  # class agreement (both judges), frame R@1, R@5
    shot = compared / "report" / "screenshot.png"
    chromium.save_screenshot(str(shot))
    assert Image.open(shot).size[0] >= 1200


def test_the_per_class_legend_stays_off_the_bars(tmp_path, monkeypatch):
    """The legend of per-class.png is drawn beside the axes, over none of the bars (a legend in the
    axes covered the first class's bars)."""
    from s2i_model.evaluate import compare

    kept = []
    monkeypatch.setattr(compare, "save_figure", lambda fig, path: kept.append(fig) or path.name)
    runs = [{"name": f"model-{i}", "classes": CLASSES,
             "per_class": {c: {"class_agreement": 0.95 - 0.1 * i} for c in CLASSES},
             "errors": {c: [0.8 - 0.1 * i, 1.0 - 0.1 * i] for c in CLASSES}} for i in range(6)]
    compare.per_class_bars(runs, "class_agreement", "t", tmp_path / "p.png")
    fig = kept[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(renderer))
    assert not legend.overlaps(ax.get_window_extent(renderer))


def test_labels_used_is_declared_for_every_registered_model():
    from s2i_model import models

    declared = {n: models.get(n).labels_used for n in models.names(include_references=True)}
    assert all(said and said != "not declared" for said in declared.values()), declared
