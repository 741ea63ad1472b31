"""What `s2i-model report` shows is what each run measured: report.json and the tables of
index.html, column by column and row by row, against each run's own evaluation.json; the bars of
per-class.png against the runs' per-class numbers; the invariants of the table (R@5 ≥ R@1, the
reference rows present and labelled).

The runs are written by hand (tests/handmade_runs.py): evaluation.json files whose every number
differs from every other in its row and its column, so a report that shows a number in the wrong
column or the wrong row, or no number, fails. The comparison of several models loads each
model, so those runs hold untrained nets in the trainers' checkpoint layout: nothing is trained."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from s2i_data.readers import Build

from s2i_model import run as run_folder
from s2i_model.evaluate.reference import write_reference
from s2i_model.evaluate.report import write_report

from handmade_runs import EMB, WIDTH, Numbers, evaluation, s2i_run, training_log, vae_run

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]  # the tiny build's


# ---- the page's tables, read back as a browser's parser sees them ------------------------------

class _Tables(HTMLParser):
    """Every <table id=...>: its header cells and its rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("id"), {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(("".join(self._cell), tag))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if all(kind == "th" for _, kind in self._row):
                self._table["head"] = [text for text, _ in self._row]
            else:
                self._table["rows"].append([text for text, _ in self._row])
            self._row = None
        elif tag == "table":
            self._table = None


def page_tables(page: Path) -> dict[str, list[dict[str, str]]]:
    """index.html's tables by id: a dict per row, header → cell text."""
    parser = _Tables()
    parser.feed(page.read_text())
    out = {}
    for tid, t in parser.tables.items():
        assert all(len(r) == len(t["head"]) for r in t["rows"]), tid
        out[tid] = [dict(zip(t["head"], r)) for r in t["rows"]]
    return out


# ---- a cell read back as a number, within what it prints ----------------------------------------

def pct(cell: str) -> float | None:
    """"12.3 %" → 0.123 (printed to 0.1 %); "–" → None."""
    if cell == "–":
        return None
    m = re.fullmatch(r"(-?\d+\.\d) %", cell)
    assert m, cell
    return float(m.group(1)) / 100


def span(cell: str) -> tuple[float, list[int]] | None:
    """"50.0 % (1–3)" → (0.5, [1, 3])."""
    if cell == "–":
        return None
    m = re.fullmatch(r"(\d+\.\d) % \((\d+)–(\d+)\)", cell)
    assert m, cell
    return float(m.group(1)) / 100, [int(m.group(2)), int(m.group(3))]


def shows(cell: str, want, kind: str) -> bool:
    """Whether ``cell`` is ``want`` as the page prints a ``kind`` (pct, num4, num3, seconds, count,
    text): to the digits printed, and "–" exactly where there is no number."""
    if want is None:
        return cell == "–"
    if kind == "text":
        return cell == str(want)
    if kind == "check":
        return want(cell)
    if kind == "pct":
        got = pct(cell)
        return got is not None and abs(got - want) <= 0.0005 + 1e-9
    if kind == "span":
        got = span(cell)
        return got is not None and abs(got[0] - want[0]) <= 0.0005 + 1e-9 and got[1] == list(want[1])
    if kind == "count":
        return cell == f"{want:,}"
    if kind == "seconds":  # below 2 min, whole seconds
        m = re.fullmatch(r"(\d+) s", cell)
        return bool(m) and abs(int(m.group(1)) - want) <= 0.5
    digits = {"num4": 4, "num3": 3}[kind]
    return cell != "–" and math.isclose(float(cell), want, rel_tol=0.6 * 10 ** (1 - digits))


def ci_cell(cell: str, scale: float) -> tuple[float, list[float] | None]:
    """"12.3 [11.0, 13.5]" → (0.123, [0.110, 0.135]) with ``scale`` 100 (a ratio printed in %),
    or a number and its interval as printed (``scale`` 1)."""
    m = re.fullmatch(r"(\S+)(?: \[(\S+), (\S+)\])?", cell)
    assert m and cell not in ("–", "n/a"), cell
    value = float(m.group(1)) / scale
    return value, None if m.group(2) is None else [float(m.group(2)) / scale, float(m.group(3)) / scale]


def shows_ci(cell: str, want: float | None, reps: list | None, kind: str) -> bool:
    """Whether ``cell`` is ``want`` with the 95 % interval of ``reps`` (its 2.5 and 97.5 % quantiles,
    computed here with numpy), as printed: ratios to 0.1 %, other numbers to 2 significant digits."""
    import numpy as np

    if want is None:
        return cell in ("–", "n/a")
    scale = 100 if kind == "pct" else 1
    value, ci = ci_cell(cell, scale)
    close = (lambda a, b: abs(a - b) <= 0.0005 + 1e-9) if kind == "pct" else \
        (lambda a, b: math.isclose(a, b, rel_tol=0.05, abs_tol=1e-12))
    if not close(value, want):
        return False
    if reps is None:
        return ci is None
    lo, hi = np.quantile(np.array(reps, float), [0.025, 0.975])
    return ci is not None and close(ci[0], lo) and close(ci[1], hi)


def check_row(row: dict[str, str], want: dict[str, tuple], where: str) -> None:
    for head, (value, kind) in want.items():
        assert head in row, (where, head, list(row))
        if kind.startswith("ci-"):
            assert shows_ci(row[head], value[0], value[1], kind[3:]), (where, head, row[head], value[0])
        else:
            assert shows(row[head], value, kind), (where, head, row[head], value)


# ---- one model, four embedding sizes: the embedding-size report ---------------------------------

SIZES = [64, 128, 256, 512]


@pytest.fixture(scope="module")
def sizes(tmp_path_factory) -> dict:
    """Four S2I runs evaluated with informativity judges (the report's metric is informativity),
    every number distinct; report.json and index.html written from them."""
    root = tmp_path_factory.mktemp("sizes")
    num = Numbers(seed=1)
    evs, history = {}, {}
    for k, emb in enumerate(SIZES):
        run = root / "runs" / f"emb{emb}"
        evs[run.name] = evaluation(run, Path("shards/tiny"), CLASSES, "s2i", num, k, emb=emb, epoch=40 + k,
                                   informativity=True, history=True)
        history[run.name] = [num.ratio() for _ in range(3)]
        training_log(run, k, epochs=3, informativity=history[run.name])
    report = write_report(root / "runs", root / "report", device="cpu")
    return {"evs": evs, "history": history, "report": report, "out": root / "report",
            "saved": json.loads((root / "report" / "report.json").read_text())}


def shown(ev: dict, metric: str) -> dict[str, float]:
    """The ratios a row of the report shows (printed to 0.1 %), by where they come from."""
    out = {f"mean.{k}": ev["mean"][k] for k in ("class_agreement", "frame_r1", "frame_r5", "diversity")}
    out |= {f"per_class.{c}": ev["per_class"][c][metric] for c in CLASSES}
    if metric == "informativity":
        out["mean.informativity"] = ev["mean"]["informativity"]
    return out


@pytest.mark.parametrize("fixture,metric", [("sizes", "informativity"), ("models", "class_agreement")])
def test_the_numbers_of_the_fixtures_all_differ(request, fixture, metric):
    """The premise of every check below: in each run no two numbers shown are alike, and no run
    shows another's number in any column (so a swap of columns or of rows cannot pass)."""
    evs = list(request.getfixturevalue(fixture)["evs"].values())
    for ev in evs:
        values = list(shown(ev, metric).values())
        assert min(abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]) > 0.002
        assert ev["proxies"]["frechet_distance"] > 10 * ev["proxies"]["kernel_distance"]
    for key in shown(evs[0], metric):
        column = sorted(shown(ev, metric)[key] for ev in evs)
        assert min(b - a for a, b in zip(column, column[1:])) > 0.002, key
    for key in ("frechet_distance", "kernel_distance"):
        column = sorted(ev["proxies"][key] for ev in evs)
        assert min(b / a for a, b in zip(column, column[1:])) > 1.01, key


def size_row_wanted(ev: dict) -> dict[str, tuple]:
    """The summary row of one embedding size, header by header, from its evaluation.json."""
    m, p, t = ev["mean"], ev["proxies"], ev["training"]
    hist = t["informativity_history"]
    return {"E": (ev["emb"], "text"), "epochs": (ev["epoch"], "text"),
            "informativity (mean)": (m["informativity"], "pct"),
            "informativity during training: mean (epochs)": ((hist["mean"], hist["mean_epochs"]), "span"),
            "informativity during training: best moving average (epochs)":
                ((hist["best_moving_average"], hist["best_window"]), "span"),
            "best moving average, window chosen on val (epochs)":
                ((hist["best_moving_average_by_val"], hist["best_window_by_val"]), "span"),
            "training pixel loss (MA50)": (t["pixel_loss_ma50"], "num4"),
            "class agreement (proxy)": (m["class_agreement"], "pct"), "frame R@1 (proxy)": (m["frame_r1"], "pct"),
            "frame R@5 (proxy)": (m["frame_r5"], "pct"), "Fréchet distance (proxy)": (p["frechet_distance"], "num4"),
            "kernel distance (proxy)": (p["kernel_distance"], "num4"), "diversity": (m["diversity"], "num3")}


def test_the_size_tables_show_each_runs_own_numbers_column_by_column(sizes):
    tables = page_tables(sizes["out"] / "index.html")
    summary = tables["summary"]
    assert [r["E"] for r in summary] == [str(e) for e in SIZES]  # by embedding size
    by_emb = {ev["emb"]: ev for ev in sizes["evs"].values()}
    for row in summary:
        ev = by_emb[int(row["E"])]
        check_row(row, size_row_wanted(ev), f"summary E = {row['E']}")
        assert pct(row["frame R@5 (proxy)"]) >= pct(row["frame R@1 (proxy)"]), row
    per_class = tables["per-class"]
    assert [r["E"] for r in per_class] == [str(e) for e in SIZES]
    for row in per_class:
        ev = by_emb[int(row["E"])]
        want = {c: (ev["per_class"][c]["informativity"], "pct") for c in CLASSES}
        check_row(row, {**want, "mean": (ev["mean"]["informativity"], "pct")}, f"per-class E = {row['E']}")


def test_the_size_report_json_holds_each_runs_own_numbers(sizes):
    saved = sizes["saved"]
    assert saved["metric"] == "informativity"
    assert [r["name"] for r in saved["runs"]] == [f"emb{e}" for e in SIZES]
    for r in saved["runs"]:
        ev = sizes["evs"][r["name"]]
        for key in ("emb", "epoch", "classes", "per_class", "mean", "proxies", "training", "samples_per_sound"):
            assert r[key] == ev[key], (r["name"], key)
        assert r["mean"]["frame_r5"] >= r["mean"]["frame_r1"]
        # history.png's curve: the run's own informativity per translator epoch (metrics.jsonl)
        assert r["history"]["epochs"] == [1, 2, 3] and r["history"]["raw"] == sizes["history"][r["name"]], r["name"]


def check_bars(saved: dict, evs: dict[str, dict], metric: str) -> None:
    """report.json's per_class: the heights of per-class.png's bars, as drawn, for every run and
    class, are 100 × the run's per-class number (0 where the run has none)."""
    bars = saved["per_class"]
    assert bars["metric"] == metric and bars["classes"] == CLASSES and bars["unit"] == "%"
    assert list(bars["bars"]) == [r["name"] for r in saved["runs"]]  # a bar group per run, in table order
    for name, heights in bars["bars"].items():
        want = [100 * (evs[name]["per_class"][c].get(metric) or 0) for c in CLASSES]
        assert heights == pytest.approx(want, abs=1e-9), name
        assert any(h > 0 for h in heights), name


def test_the_per_class_bars_are_each_runs_per_class_numbers(sizes):
    check_bars(sizes["saved"], sizes["evs"], "informativity")
    assert sizes["saved"]["plots"]["per_class"] == "per-class.png"
    assert (sizes["out"] / "per-class.png").stat().st_size > 0


# ---- several models and the reference rows: the comparison -----------------------------------------

MODELS = [("s2i", "s2i"), ("aivae", "aivae"), ("chance", "chance"), ("lookup", "lookup"),
          ("nearest-sound-s2i", "nearest-sound"), ("real", "real")]  # table order


@pytest.fixture(scope="module")
def models(tiny_build, tmp_path_factory) -> dict:
    """What `make compare` leaves before its report, trained by nobody: S2I and AIVAE runs holding
    untrained nets, the chance, lookup, nearest-sound (in S2I's space) and real-frame rows, each evaluated by hand
    with distinct numbers and no informativity (the metric is class agreement); then the report,
    written by the command `s2i-model report`.
    Written in an order other than the table's, so the report must sort them."""
    root = tmp_path_factory.mktemp("models")
    runs = root / "runs"
    num = Numbers(seed=2)
    s2i_run(tiny_build, runs / "s2i")
    vae_run(tiny_build, runs / "aivae")
    write_reference("nearest-sound", runs / "nearest-sound-s2i", space=runs / "s2i")
    for kind in ("real", "chance", "lookup"):
        write_reference(kind, runs / kind, data=str(tiny_build))
    evs, costs = {}, {}
    for k, (name, model) in enumerate(reversed(MODELS)):
        trained = model in ("s2i", "aivae")
        evs[name] = evaluation(runs / name, tiny_build, CLASSES, model, num, k, emb=EMB if trained else None,
                               epoch=3 + k if trained else None)
        if trained:
            costs[name] = training_log(runs / name, k)
    done = report_cli(runs, root / "report")
    assert done.returncode == 0 and done.stdout.strip().endswith(str(root / "report" / "index.html")), done.stderr
    return {"evs": evs, "costs": costs, "out": root / "report",
            "saved": json.loads((root / "report" / "report.json").read_text())}


def report_cli(runs: Path, out: Path) -> subprocess.CompletedProcess:
    """`s2i-model report RUNS -o OUT`, as a user runs it (on the CPU: the nets here are tiny)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "",  # the grid test redraws the pictures on the CPU
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", "report", str(runs), "-o", str(out)],
                          capture_output=True, text=True, env=env)


def parameters(model: str) -> int:
    """The parameters of the nets that draw, counted from the nets themselves."""
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
    from s2i_model.models.aivae.nets import MODELS as VAES

    def count(net) -> int:
        return sum(p.numel() for p in net.parameters())

    encoder = count(AudioAutoencoder(EMB, WIDTH).encoder)
    return {"s2i": encoder + count(DenseGenerator(EMB, WIDTH)), "aivae": count(VAES["aivae"](EMB, WIDTH)),
            "nearest-sound": encoder, "real": 0, "chance": 0,
            "lookup": 2 * 128 * len(CLASSES) + len(CLASSES)}[model]  # its classifier: 2 × 128 numbers → classes


def model_row_wanted(name: str, model: str, ev: dict, cost: dict | None) -> dict[str, tuple]:
    m, p, reps = ev["mean"], ev["proxies"], ev["replicates"]
    seconds = cost["training_seconds"] if cost else None
    short = run_folder.labels_used(model).split(" (")[0]
    return {"row": (name, "text"), "seeds": ("1", "text"),
            "class agr. blurred": ((m["class_agreement"], reps["mean"]["class_agreement"]), "ci-pct"),
            "frame R@1": ((m["frame_r1"], reps["mean"]["frame_r1"]), "ci-pct"),
            "frame R@5": ((m["frame_r5"], reps["mean"]["frame_r5"]), "ci-pct"),
            "Fréchet": ((p["frechet_distance"], reps["proxies"]["frechet_distance"]), "ci-num"),
            "kernel": ((p["kernel_distance"], reps["proxies"]["kernel_distance"]), "ci-num"),
            "diversity": ((m["diversity"], reps["mean"]["diversity"]), "ci-num"),
            "informativity": ((None, None), "ci-pct"), "params": (parameters(model), "count"),
            "time": (seconds, "seconds"),
            "samples seen": (cost["training_samples"] if cost else None, "count"),
            "labels": (lambda cell: cell.rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹") == short, "check")}


def test_the_models_table_shows_each_runs_own_numbers_column_by_column(models):
    rows = page_tables(models["out"] / "index.html")["models"]
    assert [r["row"] for r in rows] == [name for name, _ in MODELS]
    for row, (name, model) in zip(rows, MODELS):
        check_row(row, model_row_wanted(name, model, models["evs"][name], models["costs"].get(name)), name)
        assert ci_cell(row["frame R@5"], 100)[0] >= ci_cell(row["frame R@1"], 100)[0], row


def test_the_comparison_rows_in_report_json_are_each_runs_own_numbers(models):
    rows = models["saved"]["comparison"]["rows"]
    assert [(r["name"], r["model"]) for r in rows] == MODELS
    for r in rows:
        ev, cost = models["evs"][r["name"]], models["costs"].get(r["name"])
        for key in ("class_agreement", "frame_r1", "frame_r5", "diversity"):
            assert r[key]["value"] == ev["mean"][key], (r["name"], key)
        for key in ("frechet_distance", "kernel_distance"):
            assert r[key]["value"] == ev["proxies"][key], (r["name"], key)
        assert r["informativity"]["value"] is None and r["epoch"] == ev["epoch"] and r["emb"] == ev["emb"]
        assert r["frame_r5"]["value"] >= r["frame_r1"]["value"]
        assert r["parameters"] == parameters(r["model"]), r["name"]
        assert r["training_seconds"] == (cost["training_seconds"] if cost else None), r["name"]
        assert r["training_samples"] == (cost["training_samples"] if cost else None), r["name"]
    assert models["saved"]["comparison"]["same_evaluation"]


def test_the_reference_rows_are_there_and_say_what_they_are(models):
    """The ceiling (the real frames), chance, the class-mean lookup and the copying baseline
    (nearest-sound) each have their row, after the models, labelled as such, training nothing; the
    lookup says it learns from class labels; the learnt models say they used no class label."""
    rows = {r["row"]: r for r in page_tables(models["out"] / "index.html")["models"]}
    page = (models["out"] / "index.html").read_text()

    def labels(name: str) -> str:  # the cell's short word, its marks leading to the footnote's whole text
        cell = rows[name]["labels"]
        marks = cell[len(cell.rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹")):]
        found = re.search(rf"<li>{re.escape(marks)} labels used: ([^<]*)</li>", page)
        assert found and cell.rstrip("⁰¹²³⁴⁵⁶⁷⁸⁹") == found.group(1).split(" (")[0], (name, cell)
        return found.group(1)

    assert "ceiling" in labels("real")
    assert "copies train frames" in labels("nearest-sound-s2i")
    assert labels("chance").startswith("none") and rows["chance"]["params"] == "0"
    assert labels("lookup").startswith("class labels")
    for name in ("real", "nearest-sound-s2i", "chance", "lookup"):
        assert rows[name]["samples seen"] == rows[name]["time"] == "–", rows[name]
    assert rows["real"]["params"] == "0"
    for name in ("s2i", "aivae"):
        assert labels(name) == "none (sound-frame pairs only)"
    columns = models["saved"]["comparison"]["grid"]["columns"]
    assert columns == ["real", "s2i", "aivae", "chance", "lookup", "nearest-sound (nearest-sound-s2i)"]  # real first


def test_the_models_per_class_table_and_bars_are_each_runs_per_class_numbers(models):
    saved = models["saved"]
    assert saved["metric"] == "class_agreement"
    check_bars(saved, models["evs"], "class_agreement")
    rows = page_tables(models["out"] / "index.html")["per-class"]
    assert [r["row"] for r in rows] == [name for name, _ in MODELS]
    for row in rows:
        ev = models["evs"][row["row"]]
        want = {c: (ev["per_class"][c]["class_agreement"], "pct") for c in CLASSES}
        check_row(row, {**want, "mean": (ev["mean"]["class_agreement"], "pct")}, f"per-class {row['row']}")


def test_the_side_by_side_grid_shows_each_models_own_pictures_of_the_same_sounds(models, tiny_build):
    """compare-grid.png, cell by cell: a row per chosen test sound (the first two of every class by
    key), its real frame, then each model's pictures of that sound in table order, drawn with the
    evaluation's seed."""
    import numpy as np
    from PIL import Image

    from s2i_model.data import ShardStream
    from s2i_model.evaluate.compare import HEADER
    from s2i_model.grid import LABEL_W, PAD

    grid = models["saved"]["comparison"]["grid"]
    n, seed, side = grid["pictures_per_model"], grid["seed"], 96
    assert n == 3 and seed == 0
    split = sorted(ShardStream(Build.open(str(tiny_build)), "test", lambda m: m, shuffle=False), key=lambda s: s[3])
    sounds = [s for c in range(len(CLASSES)) for s in [s for s in split if s[2] == c][:2]]
    assert grid["sounds"] == [key for *_, key in sounds]
    sheet = np.asarray(Image.open(models["out"] / grid["file"]).convert("RGB"))

    def cell(row: int, col: int) -> np.ndarray:
        y, x = HEADER + PAD + row * (side + PAD), LABEL_W + PAD + col * (side + PAD)
        return sheet[y:y + side, x:x + side]

    def as_image(t) -> np.ndarray:
        return t.float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy()

    for i, (_, frame, _, _) in enumerate(sounds):
        assert np.array_equal(cell(i, 0), as_image(frame)), f"real frame of row {i}"
    for m, name in enumerate(["s2i", "aivae", "chance", "lookup", "nearest-sound-s2i"]):
        model = run_folder.load_model(models["out"].parent / "runs" / name, "cpu")
        pics = model.sound_pictures(torch.stack([model.norm(mel) for mel, *_ in sounds]), n, seed)
        for i in range(len(sounds)):
            for j in range(n):
                assert np.array_equal(cell(i, 1 + m * n + j), as_image(pics[i, j])), (name, i, j)


def test_runs_not_evaluated_alike_are_flagged(models, tmp_path):
    """The same runs with one judged by other judges: the page says their numbers are not
    comparable (and says nothing of the kind when they were evaluated alike; seeds may differ, as
    the seeds of one comparison do)."""
    import shutil

    assert "not evaluated alike" not in (models["out"] / "index.html").read_text()
    runs = tmp_path / "runs"
    shutil.copytree(models["out"].parent / "runs", runs)
    ev = json.loads((runs / "aivae" / "evaluation.json").read_text())
    ev["ident"]["config"]["proxy_cache"] = "/elsewhere/judges.pt"
    (runs / "aivae" / "evaluation.json").write_text(json.dumps(ev))
    report = write_report(runs, tmp_path / "report", device="cpu")
    assert report["comparison"]["same_evaluation"] is False
    assert "not evaluated alike" in (tmp_path / "report" / "index.html").read_text()
