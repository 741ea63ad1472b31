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

from s2i_model.evaluate.compare import per_class_bars, plot_text, save_figure, short_labels  # noqa: E402
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
        compared = comparison(runs, out, metric, metric_label, device=device, pool_models=_pool(runs))
        bars = compared.pop("per_class")  # report.json's own field, whichever page draws the plot
        plots = {"per_class": compared["per_class_plot"], "curves": compared["curves_plot"],
                 "history": _plot_history(runs, out / "history.png")}
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


def _pool(runs: list[dict]) -> set[str] | None:
    """The models the informativity judges' pool held pictures of, as the evaluations recorded it
    (None: no evaluation says, or they used judges without a record)."""
    said = [r.get("informativity_pool") for r in runs if r.get("informativity_judges")]
    if not said or any(p is None for p in said):
        return None
    return set().union(*said)


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
            "informativity during training: best moving average (epochs)",
            "best moving average, window chosen on val (epochs)", "training pixel loss (MA50)",
            "class agreement (proxy)", "frame R@1 (proxy)", "frame R@5 (proxy)", "Fréchet distance (proxy)",
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
                     _span(hist.get("best_moving_average_by_val"), hist.get("best_window_by_val")),
                     _num(r["training"]["pixel_loss_ma50"]),
                     _pct(r["mean"].get("class_agreement")), _pct(r["mean"].get("frame_r1")),
                     _pct(r["mean"].get("frame_r5")), _num(r["proxies"]["frechet_distance"]),
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


class _Markup(str):
    """A table cell already written as HTML from numbers (`_table` escapes every other cell)."""


def _ci(m: dict, pct: bool = True, digits: int = 3) -> str:
    """A measure and its 95 % interval as one short cell, the interval on a line of its own: the
    text "56.2 [50.1, 62.0]"."""
    v, ci = m.get("value"), m.get("interval")
    if v is None:
        return m.get("note") and "n/a" or "–"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.{digits}g}")
    if not ci:
        return f(v)
    return _Markup(f'{html.escape(f(v))}<span class=ci> [{html.escape(f(ci[0]))}, {html.escape(f(ci[1]))}]</span>')


def _corr(m: dict) -> str:
    """A correlation (Spearman's ρ, in [-1, 1]) and its 95 % interval as one short cell."""
    v, ci = m.get("value"), m.get("interval")
    if v is None:
        return "–"
    f = lambda x: f"{x:+.2f}"  # noqa: E731
    if not ci:
        return f(v)
    return _Markup(f'{html.escape(f(v))}<span class=ci> [{html.escape(f(ci[0]))}, {html.escape(f(ci[1]))}]</span>')


def _factor_section(cmp: dict, runs: list[dict]) -> str:
    """The per (class, factor) table of a build of within-class factors (issue 28), the readers'
    held-out quality and how to read it; "" when no run measured factor agreement."""
    table = cmp.get("factors")
    if not table:
        return ""
    e = html.escape
    factors = table["factors"]
    head = ["row"]
    for f in factors:
        head.append(f["name"].replace("_", " ") + " ρ")
        if f["kind"] == "count":
            head.append(f["name"].replace("_", " ") + " acc.")
    body = []
    for r in table["rows"]:
        row = [r["name"]]
        for f in factors:
            cell = r["per_factor"][f["name"]]
            row.append(_corr(cell["spearman"]))
            if f["kind"] == "count":
                row.append(_ci(cell["accuracy"]))
        body.append(row)
    readers = next((x["factors"].get("readers") for x in runs if x.get("factors")), None) or {}
    quality = "; ".join(
        f"{e(name.replace('_', ' '))} {e(_num(q.get('val_spearman'), 2))}"
        + (f" ({_pct(q.get('val_accuracy'))} counted right)" if q.get("kind") == "count" else "")
        for name, q in (readers.get("per_factor") or {}).items())
    return (f"<h2>Factor agreement, per class and factor</h2><p>Spearman's ρ between each test sound's true factor "
            "value and the value its class's factor reader reads in the sound's pictures (the reads of its pictures "
            "averaged); for a counted factor also the share read right (acc., %). <b>real</b> is the ceiling; "
            "<b>lookup</b> (one picture per class) and <b>shuffled</b> (another video's real frame of the same class) "
            "are floors, about 0 by construction. Factor readers: one small CNN per class, trained on the train "
            "split's real frames only; ρ on the real val frames: " + (quality or "–") + ".</p>"
            + _table("factors", head, body))


FOOTNOTES = {
    "cls": "class agreement (%): the share of pictures whose class the cross-fitted judges read as the sound's; "
           "blurred (the headline) and full resolution",
    "frame": "frame R@k (%): a real frame of the sound's class among the k real frames of its fold nearest to the "
             "picture in the judge's space; not the CLIP class-name R@k of Sound2Scene's paper",
    "dist": "Fréchet and kernel distances between the pictures and the real frames in each fold's judge's 32-d "
            "features, averaged over folds",
    "factor": "factor agr.: mean over the build's (class, factor) pairs of Spearman's ρ between true within-class "
              "factors and those read in the pictures (issue 28; the table below)",
    "budget": "samples seen: train samples drawn by every stage (RUN/metrics.jsonl), mean over seeds; time: the sum of "
              "every logged epoch",
}


def _superscript(n: int) -> str:
    return str(n).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))


def _html_models(report: dict, metric_label: str) -> str:
    runs, cmp = report["runs"], report["comparison"]
    e = html.escape
    rows = cmp["rows"]
    labels = {r["model"]: r["labels_used"] for r in rows}
    marks = {text: _superscript(i + 1) for i, text in enumerate(dict.fromkeys(labels.values()))}
    with_factors = bool(cmp.get("factors"))  # a build of within-class factors: its column (issue 28)
    head = ["row", "seeds", "class agr. blurred", "class agr. full", "frame R@1", "frame R@5", "Fréchet", "kernel",
            "diversity", "informativity", *(["factor agr."] if with_factors else []),
            "samples seen", "time", "params", "labels"]  # short: a laptop's width
    table = _table("models", head, [
        [r["name"], str(len(r["seeds"])), _ci(r["class_agreement"]), _ci(r["class_agreement_full"]),
         _ci(r["frame_r1"]), _ci(r["frame_r5"]), _ci(r["frechet_distance"], False, 2),
         _ci(r["kernel_distance"], False, 2), _ci(r["diversity"], False, 2), _ci(r["informativity"]),
         *([_corr(r.get("factor_agreement") or {})] if with_factors else []),
         _count(None if r["training_samples"] is None else round(r["training_samples"])),
         _seconds(r["training_seconds"]), _count(r["parameters"]),
         short_labels(r["labels_used"]) + marks[r["labels_used"]]] for r in rows])
    notes = "".join(f"<li>{e(mark)} labels used: {e(text)}</li>" for text, mark in marks.items())
    notes += "".join(f"<li>{e(v)}</li>" for k, v in FOOTNOTES.items() if k != "factor" or with_factors)
    unjudged = [r["name"] for r in rows if r["informativity"].get("note")]
    if unjudged:
        notes += f"<li>informativity n/a: judges not trained on this model ({e(', '.join(unjudged))})</li>"
    judge = cmp.get("judge") or {}
    judges = ("<p>Judges: " + e(str(judge.get("folds"))) + " folds over the test videos, each trained on "
              + e(judge.get("trained_on", "")) + ". Held-out accuracy on the real test frames: "
              + "; ".join(f"{e(k)} {_pct((judge.get(k) or {}).get('held_out_accuracy'))}" for k in ("blurred", "full"))
              + f". Headline: {e(str(judge.get('headline')))} (a full-resolution judge reads the texture of generated "
              "pictures more than what they show).</p>") if judge else \
        "<p class=note>These evaluations name no cross-fitted judges (made before issue 27).</p>"
    names = [r["name"] for r in rows]
    order = _table("orders", ["class agr. blurred"] + names, [
        [a] + ["" if a == b else {"above": ">", "below": "<"}.get(cmp["orders"][a][b], "≈") for b in names]
        for a in names])
    classes = runs[0]["classes"]
    means = {r["name"]: r.get(report["metric"], {}).get("value") for r in rows}
    per_class = _table("per-class", ["row"] + classes + ["mean"], [
        [name] + [_pct(v / 100) for v in heights] + [_pct(means.get(name))]
        for name, heights in report["per_class"]["bars"].items()])
    plots = "".join(f'<figure><img src="{_src(f)}" alt="{e(k)}"></figure>' for k, f in report["plots"].items())
    grid = cmp["grid"]
    own = "".join(f'<h3>{e(r["name"])}</h3><img class="grid" src="{_src(r["grid_file"])}" alt="grid {e(r["name"])}">'
                  for r in runs if r.get("grid_file"))
    note = ("" if report["metric"] == "informativity" else
            "<p class=note>No informativity classifiers were given: the per-class table and plots show the "
            "class-agreement proxy, which over-reports (SPEC 5).</p>")
    if not cmp["same_evaluation"]:
        note += ("<p class=note>These runs were not evaluated alike (build, split, pictures per sound or judges "
                 "differ): their numbers are not comparable. make compare evaluates every model the same way.</p>")
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>s2i models compared</title>
<style>body{{font-family:system-ui,sans-serif;margin:1em;max-width:1260px}}table{{border-collapse:collapse;margin:.5em 0;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 4px;text-align:right;white-space:nowrap}}th{{background:#f3f3f3;white-space:normal}}
td:first-child{{text-align:left}}.ci{{display:block;font-size:10px;color:#555}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:100%}}.grid{{image-rendering:pixelated}}.note{{color:#8a4b00}}ul.foot{{font-size:12px;color:#444}}</style></head><body>
<h1>Sound-to-image models compared</h1>
<p>{len(rows)} rows ({len(runs)} runs) on {e(runs[0]["data"])}, split <b>{e(runs[0]["split"])}</b>,
{e(str(runs[0]["samples_per_sound"]))} pictures per sound. Every number is the mean over the row's seeds with its 95 %
interval in brackets (a bootstrap over the test videos, stratified by class, and over seeds). Proxies need no human
labels and are named as such.</p>{judges}
{note}<h2>Models</h2>{table}<ul class=foot>{notes}</ul>
<h2>Order</h2><p>Row against column on the headline class agreement: &gt; or &lt; only where the two 95 % intervals do
not overlap; ≈: not separable.</p>{order}
<h2>Per class: {e(metric_label)}</h2>{per_class}{_factor_section(cmp, runs)}<h2>Plots</h2>{plots}
<h2>The same test sounds, every model</h2><p>Each row: a held-out test sound's real frame, then
{e(str(grid["pictures_per_model"]))} pictures from each model in this order: {e(", ".join(grid["columns"][1:]))}
(seed {e(str(grid["seed"]))}, each row's first seed).</p><img class="grid" id="side-by-side" src="{_src(grid["file"])}" alt="side by side">
<h2>Each run's evaluation grid</h2>{own}
</body></html>"""


def _src(file: str) -> str:
    """A file of the report as an attribute value: a name is quoted as a URL (``#``, ``?`` or ``%`` in
    a run's name are part of the file's name), then escaped as HTML."""
    return html.escape(quote(file))


def _table(tid: str, head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return (f'<table id="{tid}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Markup) else e(c)}</td>" for c in row) + "</tr>"
                      for row in rows) + "</tbody></table>")
