"""The embedding-size comparison: plots like the paper's figures 7 and 8 and one HTML page; and,
when the runs hold different models (`make compare`), the models compared instead (compare.py).

Input: a folder of runs, each evaluated (RUN/evaluation.json, RUN/metrics.jsonl). Output in
OUT: report.json (every number shown, and ``per_class``: the heights of per-class.png's bars as
drawn, in %, by run name), history.png (informativity per epoch per size),
versus-size.png (informativity and training pixel loss against E), per-class.png, the
evaluation grid of every size under grids/, and index.html tying them together. Where no
informativity classifiers were given, the plots fall back to the class-agreement proxy and
say so in their titles. With several models, report.json gains ``comparison`` (a row per model,
the side-by-side grid compare-grid.png), per-class.png has a bar per model, and versus-size.png is
left out: the embedding size of one model says nothing of another's.

Run folders come from other labs: every file read from one (evaluation.json, reference.json,
metrics.jsonl) is checked against its schema first (`s2i_data.untrusted`), and a run that breaks
it stops the report with one line naming file and field before anything is written. Only a
run's own grid (RUN/evaluation-grid.png, a regular file and a PNG by content) is copied, never a
path the JSON names; the page escapes every text, and each output replaces its file atomically
instead of writing through a link left in OUT.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from s2i_data import storage, untrusted  # noqa: E402

from s2i_model.evaluate.compare import per_class_bars, plot_text, save_figure  # noqa: E402
from s2i_model.evaluate.evaluation import RESULT  # noqa: E402
from s2i_model.evaluate.history import informativity_history, read_rows  # noqa: E402
from s2i_model import models  # noqa: E402
from s2i_model.run import REFERENCE  # noqa: E402

GRID = "evaluation-grid.png"  # the run's own grid, by the name `evaluate` gives it; never a path from the JSON
MAX_GRID_BYTES = 64 << 20


def find_runs(root: Path) -> list[Path]:
    root = Path(root)
    return sorted({p.parent for p in root.glob(f"*/{RESULT}")} | {p.parent for p in root.glob(RESULT)})


def read_evaluation(run: Path) -> dict:
    """RUN/evaluation.json (and RUN/reference.json where there is one), checked against their
    schema (`untrusted.evaluation`) before anything uses them; a file that breaks it is refused
    with one line naming file and field."""
    path = run / RESULT
    ev = untrusted.evaluation(untrusted.json_value(untrusted.capped_read(path, untrusted.MAX_EVALUATION_BYTES),
                                                   str(path)), str(path))
    ref = run / REFERENCE
    if ref.is_file():  # what the comparison loads for a reference row
        untrusted.reference(untrusted.json_value(untrusted.capped_read(ref, untrusted.MAX_SMALL_JSON_BYTES),
                                                 str(ref)), str(ref))
    return ev


def read_grid(run: Path) -> bytes | None:
    """RUN/evaluation-grid.png's bytes: a regular file in the run itself (not a link, not a FIFO)
    that is a PNG by content; None when there is none. Anything else there is refused."""
    path = run / GRID
    try:
        with storage.open_regular(path) as f:
            data = f.read(MAX_GRID_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise untrusted.Untrusted(f"{e}; a run's grid must be a PNG file of its own") from None
    if len(data) > MAX_GRID_BYTES or untrusted.image_type(data) != "image/png" or not _is_png(data):
        raise untrusted.Untrusted(f"{path}: not a PNG picture (or over {MAX_GRID_BYTES >> 20} MB)")
    return data


def _is_png(data: bytes) -> bool:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # every chunk's checksum, without decoding the pixels
        return True
    except Exception:  # PIL raises what the broken chunk led to; any of it means "not a PNG"
        return False


def _translator_history(run: Path) -> dict:
    rows = read_rows(run, name=str(run / "metrics.jsonl"))
    # an epoch whose informativity could not be judged (no judge for any class) has none to plot
    rows = [r if (r.get("informativity") or {}).get("mean") is not None else
            {k: v for k, v in r.items() if k != "informativity"} for r in rows]
    return informativity_history(rows)


def collect(root: Path) -> tuple[list[dict], dict[str, bytes]]:
    """Every evaluated run under ``root``, checked (its files, its folder's name), by embedding
    size (runs of models without one last); and each run's grid by run name. Reads only."""
    out, grids = [], {}
    for run in find_runs(root):
        ev = read_evaluation(run)
        ident = ev.pop("ident")
        # how it was evaluated, so that a comparison can say whether its runs were measured alike
        ev["evaluated_with"] = ident["config"]
        ev["model"] = ev["model"] or models.DEFAULT  # evaluations from before other models existed
        ev["name"] = untrusted.name(run.name or run.resolve().name, f"{run}: the run folder's name")
        ev["run"] = str(run)  # the folder it was found in, whatever the JSON says
        ev["history"] = _translator_history(run)
        if ev["grid"] is not None and (grid := read_grid(run)) is not None:
            grids[ev["name"]] = grid
        out.append(ev)
    return sorted(out, key=lambda r: (r["emb"] is None, r["emb"] or 0, r["name"])), grids


def write_report(root: Path, out: Path, device: str = "auto") -> dict:
    runs, grids = collect(root)  # every run is checked before anything is written
    if not runs:
        raise ValueError(f"{root}: no evaluated runs (run s2i-model evaluate --run RUN first)")
    out.mkdir(parents=True, exist_ok=True)
    has_info = any(r["mean"].get("informativity") is not None for r in runs)
    metric, metric_label = ("informativity", "informativity") if has_info else \
        ("class_agreement", "class agreement (proxy: no informativity classifiers given)")
    compared = None
    if len({r["model"] for r in runs}) > 1:
        from s2i_model.evaluate.compare import comparison, sort_runs

        runs = sort_runs(runs)
        compared = comparison(runs, out, metric, metric_label, device=device)
        bars = compared.pop("per_class")  # report.json's own field, whichever page draws the plot
        plots = {"history": _plot_history(runs, out / "history.png"), "per_class": compared["per_class_plot"]}
    else:
        per_class, bars = per_class_bars(runs, metric, f"Per class: {metric_label}", out / "per-class.png",
                                         label=lambda r: f"E = {r['emb']}", per_item=1.4)
        plots = {"history": _plot_history(runs, out / "history.png"),
                 "versus_size": _plot_versus_size(runs, metric, metric_label, out / "versus-size.png"),
                 "per_class": per_class}
    folder = Path(storage.folder_inside(out, "grids"))
    for r in runs:
        if r["name"] in grids:
            storage.atomic_write(folder / f"{r['name']}.png", grids[r["name"]])
            r["grid_file"] = f"grids/{r['name']}.png"
    report = {"metric": metric, "runs": runs, "plots": {k: v for k, v in plots.items() if v}, "per_class": bars}
    if compared is not None:
        report["comparison"] = compared
    storage.atomic_write(out / "report.json", json.dumps(report, indent=2))
    storage.atomic_write(out / "index.html", _html_models(report, metric_label) if compared else _html(report, metric_label))
    return report


def _plot_history(runs: list[dict], path: Path) -> str | None:
    with_hist = [r for r in runs if r["history"]["epochs"]]
    if not with_hist:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in with_hist:
        ax.plot(r["history"]["epochs"], [100 * v for v in r["history"]["mean"]], label=_run_label(r))
    ax.set(xlabel="epoch", ylabel="mean informativity (%)", title="Informativity during training")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _plot_versus_size(runs: list[dict], metric: str, label: str, path: Path) -> str | None:
    embs = [r["emb"] for r in runs]
    if None in embs:  # a model without an embedding size (a reference row alone) has no such plot
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(embs, [100 * (r["mean"].get(metric) or 0) for r in runs], "o-", label="final evaluation")
    best = [r["training"]["informativity_history"] for r in runs]
    if metric == "informativity" and all(best):
        a.plot(embs, [100 * h["best_moving_average"] for h in best], "s--", label="best moving average (training)")
    a.set(xscale="log", xlabel="embedding size E", ylabel=f"{metric.replace('_', ' ')} (%)",
          title=f"Mean {label} on the test sounds")
    a.set_xticks(embs, [str(e) for e in embs])
    a.legend()
    b.plot(embs, [r["training"]["pixel_loss_ma50"] for r in runs], "o-", color="tab:red")
    b.set(xscale="log", xlabel="embedding size E", ylabel="pixel MSE", title="Training pixel loss (50-epoch mean)")
    b.set_xticks(embs, [str(e) for e in embs])
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _run_label(r: dict) -> str:
    return f"E = {r['emb']}" if r.get("model", models.DEFAULT) == models.DEFAULT else plot_text(r["name"])


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _span(v, epochs) -> str:
    return "–" if v is None else f"{100 * v:.1f} % ({epochs[0]}–{epochs[1]})"


def _num(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def _html(report: dict, metric_label: str) -> str:
    runs = report["runs"]
    e = html.escape
    head = ["E", "epochs", "informativity (mean)", "informativity during training: mean (epochs)",
            "informativity during training: best moving average (epochs)", "training pixel loss (MA50)",
            "class agreement (proxy)", "R@1 (proxy)", "R@5 (proxy)", "Fréchet distance (proxy)",
            "kernel distance (proxy)", "diversity"]
    fid = any("fid_inception" in r["proxies"] for r in runs)
    if fid:
        head.append("Inception FID")
    rows = []
    for r in runs:
        hist = r["training"]["informativity_history"] or {}
        rows.append([str(r["emb"]), str(r["epoch"]), _pct(r["mean"].get("informativity")),
                     _span(hist.get("mean"), hist.get("mean_epochs")),
                     _span(hist.get("best_moving_average"), hist.get("best_window")),
                     _num(r["training"]["pixel_loss_ma50"]),
                     _pct(r["mean"].get("class_agreement")), _pct(r["mean"].get("retrieval_r1")),
                     _pct(r["mean"].get("retrieval_r5")), _num(r["proxies"]["frechet_distance"]),
                     _num(r["proxies"]["kernel_distance"]), _num(r["mean"].get("diversity"), 3)]
                    + ([_num(r["proxies"].get("fid_inception"))] if fid else []))
    table = _table("summary", head, rows)
    classes = runs[0]["classes"]
    metric = report["metric"]
    per_class = _table("per-class", ["E"] + classes + ["mean"],
                       [[str(r["emb"])] + [_pct((r["per_class"].get(c) or {}).get(metric)) for c in classes]
                        + [_pct(r["mean"].get(metric))] for r in runs])
    plots = "".join(f'<figure><img src="{_src(f)}" alt="{e(k)}"></figure>' for k, f in report["plots"].items())
    grids = "".join(f'<h3>E = {e(str(r["emb"]))} ({e(r["name"])})</h3><img class="grid" src="{_src(r["grid_file"])}" '
                    f'alt="grid {e(str(r["emb"]))}">' for r in runs if r.get("grid_file"))
    note = ("" if metric == "informativity" else
            "<p class=note>No informativity classifiers were given: the per-class table and plots show the "
            "class-agreement proxy, which over-reports (SPEC 5). Label a pool (s2i-model sample, label, "
            "train-informativity) and evaluate with --informativity for the paper's metric.</p>")
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>s2i embedding-size report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:100%}}.grid{{image-rendering:pixelated}}.note{{color:#8a4b00}}</style></head><body>
<h1>Sound-to-Imagination: embedding sizes compared</h1>
<p>{len(runs)} run{"s" if len(runs) > 1 else ""} on {e(runs[0]["data"])}, split <b>{e(runs[0]["split"])}</b>, {e(str(runs[0]["samples_per_sound"]))}
pictures per sound. Proxies need no human labels and are named as such; the distances are measured in the
real-frame classifier's feature space{", plus the standard Inception FID" if any("fid_inception" in r["proxies"] for r in runs) else ""}.</p>
{note}<h2>Summary</h2>{table}<h2>Per class: {e(metric_label)}</h2>{per_class}<h2>Plots</h2>{plots}
<h2>Pictures imagined from held-out sounds</h2><p>Each row: the real frame, then pictures from its sound.</p>{grids}
</body></html>"""


def _seconds(v) -> str:
    if v is None:
        return "–"
    return f"{v:.0f} s" if v < 120 else f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


def _count(v) -> str:
    return "–" if v is None else f"{v:,}"


def _html_models(report: dict, metric_label: str) -> str:
    runs, cmp = report["runs"], report["comparison"]
    e = html.escape
    head = ["model", "run", "labels used in training", "epochs", "informativity (mean)", "class agreement (proxy)",
            "Fréchet distance (proxy)", "kernel distance (proxy)", "R@1 (proxy)", "R@5 (proxy)", "diversity",
            "parameters", "training time", "training samples/s"]
    table = _table("models", head, [
        [r["model"], r["name"], r["labels_used"], "–" if r["epoch"] is None else str(r["epoch"]), _pct(r["informativity"]), _pct(r["class_agreement"]),
         _num(r["frechet_distance"]), _num(r["kernel_distance"]), _pct(r["retrieval_r1"]), _pct(r["retrieval_r5"]),
         _num(r["diversity"], 3), _count(r["parameters"]), _seconds(r["training_seconds"]),
         _num(r["samples_per_s"], 3)] for r in cmp["rows"]])
    classes = runs[0]["classes"]
    metric = report["metric"]
    per_class = _table("per-class", ["run"] + classes + ["mean"],
                       [[r["name"]] + [_pct((r["per_class"].get(c) or {}).get(metric)) for c in classes]
                        + [_pct(r["mean"].get(metric))] for r in runs])
    plots = "".join(f'<figure><img src="{_src(f)}" alt="{e(k)}"></figure>' for k, f in report["plots"].items())
    grid = cmp["grid"]
    own = "".join(f'<h3>{e(r["name"])}</h3><img class="grid" src="{_src(r["grid_file"])}" alt="grid {e(r["name"])}">'
                  for r in runs if r.get("grid_file"))
    note = ("" if metric == "informativity" else
            "<p class=note>No informativity classifiers were given: the per-class table and plots show the "
            "class-agreement proxy, which over-reports (SPEC 5).</p>")
    if not cmp["same_evaluation"]:
        note += ("<p class=note>These runs were not evaluated alike (build, split, pictures per sound, seed or "
                 "real-frame classifier differ): their numbers are not comparable. make compare evaluates every "
                 "model the same way.</p>")
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>s2i models compared</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:100%}}.grid{{image-rendering:pixelated}}.note{{color:#8a4b00}}</style></head><body>
<h1>Sound-to-image models compared</h1>
<p>{len(runs)} runs on {e(runs[0]["data"])}, split <b>{e(runs[0]["split"])}</b>, {e(str(runs[0]["samples_per_sound"]))}
pictures per sound, seed {e(str(runs[0]["evaluated_with"].get("seed")))}. Proxies need no human labels and are named
as such; the distances are measured in the real-frame classifier's feature space. Parameters: the networks
that draw a picture from a sound (training-only networks such as discriminators are not counted); training
time and samples/s: the sum over every logged epoch of every stage (RUN/metrics.jsonl).</p>
{note}<h2>Models</h2>{table}<h2>Per class: {e(metric_label)}</h2>{per_class}<h2>Plots</h2>{plots}
<h2>The same test sounds, every model</h2><p>Each row: a held-out test sound's real frame, then
{e(str(grid["pictures_per_model"]))} pictures from each model in this order: {e(", ".join(grid["columns"][1:]))}
(seed {e(str(grid["seed"]))}).</p><img class="grid" id="side-by-side" src="{_src(grid["file"])}" alt="side by side">
<h2>Each run's evaluation grid</h2>{own}
</body></html>"""


def _src(file: str) -> str:
    """A file of the report as an attribute value: a name is quoted as a URL (``#``, ``?`` or ``%`` in
    a run's name are part of the file's name), then escaped as HTML."""
    return html.escape(quote(file))


def _table(tid: str, head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return (f'<table id="{tid}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</tbody></table>")
