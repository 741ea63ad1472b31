"""`s2i-model report` on run folders from somebody else: what an evaluation.json, reference.json
or metrics.jsonl says is checked before use, the page shows every text as text, only a run's own
grid is copied, and no output is written through a link left in the report folder.

The runs here are evaluation files written by hand as `evaluate` writes them (a report of one
model reads nothing else), so no model is trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from s2i_data.untrusted import Untrusted
from s2i_model.evaluate.report import write_report

CLASSES = ["dog", "rail"]


def png(path: Path, colour: tuple[int, int, int]) -> bytes:
    Image.new("RGB", (24, 12), colour).save(path, format="PNG")
    return path.read_bytes()


def evaluated_run(runs: Path, name: str, emb: int = 64, classes: list[str] = CLASSES, **changes) -> Path:
    """RUN/evaluation.json as `evaluate` writes it, a translator's metrics.jsonl with informativity
    per epoch, and RUN/evaluation-grid.png; ``changes`` replace top-level fields."""
    run = runs / name
    run.mkdir(parents=True)
    per_class = {c: {"sounds": 2, "images": 4, "class_agreement": 0.5, "retrieval_r1": 0.25, "retrieval_r5": 1.0,
                     "diversity": 0.1, "informativity": 0.75} for c in classes}
    ev = {"ident": {"config": {"seed": 0, "proxy_cache": "", "informativity": "judges", "fid_weights": ""}},
          "run": str(run), "data": "shards/tiny", "split": "test", "samples_per_sound": 2, "model": "s2i", "emb": emb,
          "width": 0.0625, "epoch": 3, "classes": classes, "per_class": per_class,
          "mean": {"informativity": 0.75, "class_agreement": 0.5, "retrieval_r1": 0.25, "retrieval_r5": 1.0,
                   "diversity": 0.1},
          "proxies": {"frechet_distance": 1.5, "kernel_distance": 0.01, "feature_space": "real-frame classifier"},
          "embedding_separability": {"centroid": 0.5, "nn1": 0.5}, "informativity_judges": "judges",
          "training": {"pixel_loss_ma50": 0.2, "informativity_history": {
              "mean": 0.5, "mean_epochs": [1, 3], "best_moving_average": 0.6, "best_window": [1, 3], "window": 3}},
          "grid": "evaluation-grid.png"}
    ev.update(changes)
    (run / "evaluation.json").write_text(json.dumps(ev))
    rows = [{"stage": "translator", "epoch": e, "pixel_loss": 0.3, "seconds": 1.0, "samples": 8, "d_updates": 1,
             "informativity": {"mean": 0.5, "per_class": {c: 0.5 for c in classes}}} for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    png(run / "evaluation-grid.png", (10, 200, 30))
    return run


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def report_cli(runs: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", "report", str(runs), "-o", str(out)],
                          capture_output=True, text=True, env=env)


# ---- the page shows texts as text ----------------------------------------------------------

def test_names_and_texts_from_runs_show_as_text_in_the_page(tmp_path, chromium):
    """Plain names may still hold <, >, quotes, & and $ (a class, a run folder's name) and a build
    location any text: the page shows each as written, runs no script, and finds every picture
    (a # or % in a run's name is part of its grid's file name)."""
    classes = ["<img src=x onerror=document.title='pwned'>", "a$^^$b & \"c\""]
    data = "shards\"><script>document.title='pwned'</script>"
    runs = tmp_path / "runs"
    for name, emb in (("run#1 <b>", 64), ("100% <i>", 128)):
        evaluated_run(runs, name, emb, classes, data=data)
    write_report(runs, tmp_path / "report")

    chromium.get((tmp_path / "report" / "index.html").as_uri())
    assert chromium.title == "s2i embedding-size report"
    assert chromium.execute_script("return document.scripts.length") == 0
    assert chromium.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    heads = [th.text for th in chromium.find_elements("css selector", "#per-class thead th")]
    assert heads == ["E", *classes, "mean"]
    assert data in chromium.find_element("css selector", "p").text
    assert [h.text for h in chromium.find_elements("css selector", "h3")] == ["E = 64 (run#1 <b>)", "E = 128 (100% <i>)"]
    loaded = chromium.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert len(loaded) == 5 and all(loaded)  # history, versus-size, per-class, and both grids


# ---- what breaks the schema is one line, and nothing is written ------------------------------

def deep(n: int) -> str:
    return "[" * n + "]" * n


HOSTILE = {
    "script as a number": ("evaluation.json", {"samples_per_sound": "<script>alert(1)</script>"}, "samples_per_sound"),
    "script as the size": ("evaluation.json", {"emb": "<script>alert(1)</script>"}, "emb"),
    "class that is a path": ("evaluation.json", {"classes": ["../../x", "rail"]}, "classes[0]"),
    "model that is a path": ("evaluation.json", {"model": "../s2i"}, "model"),
    "NaN in the means": ("evaluation.json", {"mean": {"class_agreement": float("nan")}}, "mean.class_agreement"),
    "ratio above one": ("evaluation.json", {"per_class": {"dog": {"class_agreement": 7.0}}}, "per_class.dog"),
    "per-class row of no class": ("evaluation.json", {"per_class": {"cat": {}}}, "per_class names 'cat'"),
    "split of no build": ("evaluation.json", {"split": "<b>"}, "split"),
    "text over lines": ("evaluation.json", {"data": "shards\n<script>"}, "data"),
    "seed as text": ("evaluation.json", {"ident": {"config": {"seed": "<script>"}}}, "ident.config.seed"),
    "no proxies": ("evaluation.json", {"proxies": None}, "proxies"),
    "too many classes": ("evaluation.json", {"classes": [f"c{i}" for i in range(1001)], "per_class": {}}, "classes"),
    # issue 27's fields: intervals, bootstrap replicates, the judges' record, the informativity pool
    "interval upside down": ("evaluation.json", {"intervals": {"mean": {"class_agreement": [0.9, 0.1]}}},
                             "intervals.mean.class_agreement"),
    "interval as text": ("evaluation.json", {"intervals": {"proxies": {"frechet_distance": "<b>"}}},
                         "intervals.proxies.frechet_distance"),
    "interval of no class": ("evaluation.json", {"intervals": {"per_class": {"cat": {}}}}, "intervals.per_class"),
    "a billion replicates": ("evaluation.json", {"replicates": {"mean": {"class_agreement": [0.5] * 10_001}}},
                             "replicates.mean.class_agreement"),
    "replicate as script": ("evaluation.json", {"replicates": {"mean": {"class_agreement": ["<script>"]}}},
                            "replicates.mean.class_agreement[0]"),
    "replicates of two lengths": ("evaluation.json", {"replicates": {"mean": {"class_agreement": [0.5] * 3,
                                                                              "frame_r1": [0.5] * 4}}},
                                  "replicates"),
    "judge headline no judge": ("evaluation.json", {"judge": {"folds": 3, "headline": "<b>", "trained_on": "val"}},
                                "judge.headline"),
    "judge trained on over lines": ("evaluation.json", {"judge": {"folds": 3, "headline": "blurred",
                                                                  "trained_on": "val\n<script>"}}, "judge.trained_on"),
    "judge accuracy above one": ("evaluation.json", {"judge": {
        "folds": 3, "headline": "blurred", "trained_on": "val",
        "blurred": {"blur": 4, "held_out_accuracy": 2.0, "per_class": {}}}}, "judge.blurred.held_out_accuracy"),
    "pool model a path": ("evaluation.json", {"informativity_pool": ["../s2i"]}, "informativity_pool[0]"),
    "pool a string": ("evaluation.json", {"informativity_pool": "s2i"}, "informativity_pool"),
    "training seed as text": ("evaluation.json", {"training_seed": "<b>"}, "training_seed"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_an_evaluation_that_breaks_its_schema_is_refused_before_anything_is_written(tmp_path, case):
    file, changes, field = HOSTILE[case]
    runs = tmp_path / "runs"
    evaluated_run(runs, "good", 64)
    evaluated_run(runs, "shared", **({"emb": 128} | changes))
    with pytest.raises(Untrusted, match="evaluation.json") as err:
        write_report(runs, tmp_path / "report")
    assert field in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("case", ["row not an object", "informativity as text", "NaN seconds", "stage a path",
                                  "nested too deep"])
def test_metrics_and_reference_files_are_checked_too(tmp_path, case):
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "shared", 64)
    row = {"stage": "translator", "epoch": 4}
    bad = {"row not an object": "[1, 2]", "nested too deep": deep(100_000),
           "informativity as text": json.dumps(row | {"informativity": {"mean": "<script>", "per_class": {}}}),
           "NaN seconds": json.dumps(row | {"seconds": float("nan")}),
           "stage a path": json.dumps(row | {"stage": "../x"})}[case]
    with open(run / "metrics.jsonl", "a") as f:
        f.write(bad + "\n")
    with pytest.raises(Untrusted, match="metrics.jsonl line 4"):
        write_report(runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_torn_last_metrics_line_is_still_skipped(tmp_path):
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "emb64", 64)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"stage": "translator", "epo')  # a killed run's last line
    report = write_report(runs, tmp_path / "report")
    assert report["runs"][0]["history"]["epochs"] == [1, 2, 3]


def test_a_hostile_reference_json_is_refused(tmp_path):
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "real", emb=None, model="real")
    (run / "reference.json").write_text(json.dumps({"model": "real", "data": "shards\u202e<script>"}))
    with pytest.raises(Untrusted, match="reference.json: data"):
        write_report(runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_the_command_prints_one_line_and_exits_non_zero(tmp_path):
    runs = tmp_path / "runs"
    evaluated_run(runs, "shared", 64, samples_per_sound="<script>alert(1)</script>")
    res = report_cli(runs, tmp_path / "report")
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 1 and len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "evaluation.json: samples_per_sound" in out and "internal error" not in out
    assert not (tmp_path / "report").exists()


# ---- only the run's own grid -----------------------------------------------------------------

def test_only_the_runs_own_grid_is_copied_never_a_path_from_the_json(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    secret = png(elsewhere / "secret.png", (255, 0, 0))
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "emb64", 64, run=str(elsewhere), grid="secret.png")
    report = write_report(runs, tmp_path / "report")
    copied = (tmp_path / "report" / report["runs"][0]["grid_file"]).read_bytes()
    assert copied == (run / "evaluation-grid.png").read_bytes() and copied != secret
    assert report["runs"][0]["run"] == str(run)


@pytest.mark.parametrize("kind", ["link out", "page in a png's name", "a folder"])
def test_a_grid_that_is_not_the_runs_own_png_is_refused(tmp_path, kind):
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "emb64", 64)
    grid = run / "evaluation-grid.png"
    grid.unlink()
    if kind == "link out":
        png(tmp_path / "secret.png", (255, 0, 0))
        grid.symlink_to(tmp_path / "secret.png")
    elif kind == "a folder":
        grid.mkdir()
    else:
        grid.write_text("<html><script>document.title='pwned'</script></html>")
    with pytest.raises(Untrusted, match="evaluation-grid.png"):
        write_report(runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()


# ---- writes never follow links ---------------------------------------------------------------

def test_outputs_replace_links_left_in_the_report_folder_instead_of_writing_through_them(tmp_path):
    runs = tmp_path / "runs"
    evaluated_run(runs, "emb64", 64)
    evaluated_run(runs, "emb128", 128)
    victims = tmp_path / "victims"
    victims.mkdir()
    out = tmp_path / "report"
    (out / "grids").mkdir(parents=True)
    planted = ["index.html", "report.json", "history.png", "versus-size.png", "per-class.png", "grids/emb64.png"]
    for i, name in enumerate(planted):
        (victims / f"{i}").write_text("precious")
        (out / name).symlink_to(victims / f"{i}")
    write_report(runs, out)
    assert all(v.read_text() == "precious" for v in victims.iterdir())
    for name in planted:
        assert not (out / name).is_symlink() and (out / name).read_bytes() != b"precious", name
    assert (out / "grids/emb64.png").read_bytes() == (runs / "emb64" / "evaluation-grid.png").read_bytes()


def test_a_grids_folder_that_leads_out_is_refused(tmp_path):
    runs = tmp_path / "runs"
    evaluated_run(runs, "emb64", 64)
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "report"
    out.mkdir()
    (out / "grids").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match="leads outside"):
        write_report(runs, out)
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("bad,field", [
    ({"judges": None, "points": "<script>"}, "points"),
    ({"judges": None, "points": [{"samples_seen": -1, "seconds": 1}]}, "points[0].samples_seen"),
    ({"judges": None, "points": [{"samples_seen": 4, "seconds": 1, "class_agreement": 3}]}, "points[0].class_agreement"),
    ({"judges": None, "points": [{"samples_seen": 4, "seconds": float("nan")}]}, "points[0].seconds"),
    ({"judges": None, "points": [{"samples_seen": 4, "seconds": 1}] * 1001}, "points"),
    ({"judges": "x" * 10, "points": []}, "judges"),
])
def test_a_hostile_learning_curve_is_refused_in_one_line(tmp_path, bad, field):
    """RUN/curve.json (the comparison's learning curve) from somebody else: checked before use."""
    from s2i_model.evaluate import curve

    (tmp_path / "curve.json").write_text(json.dumps(bad))
    with pytest.raises(Untrusted, match="curve.json") as err:
        curve.read(tmp_path)
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["link to a file elsewhere", "link to /dev/zero", "fifo"])
def test_an_evaluation_that_is_not_a_file_of_its_own_is_refused_without_waiting(tmp_path, kind):
    """evaluation.json left as a link (to another lab's file, to an endless device) or a FIFO (a
    reader would wait for ever) is refused in one line, and the report writes nothing."""
    runs = tmp_path / "runs"
    run = evaluated_run(runs, "shared", 64)
    path = run / "evaluation.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(path.read_bytes())
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(elsewhere if kind.endswith("elsewhere") else "/dev/zero")
    done = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from s2i_model.evaluate.report import write_report; "
                           "write_report(Path(sys.argv[1]), Path(sys.argv[2]))", str(runs), str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert done.returncode != 0 and "regular file" in done.stderr, done.stderr[-500:]
    assert not (tmp_path / "report").exists()
