"""The embedding-size comparison: plots like the paper's figures 7 and 8 and one HTML page.

Input: a folder of runs, each evaluated (RUN/evaluation.json, RUN/metrics.jsonl). Output in
OUT: report.json (every number shown), history.png (informativity per epoch per size),
versus-size.png (informativity and training pixel loss against E), per-class.png, the
evaluation grid of every size under grids/, and index.html tying them together. Where no
informativity classifiers were given, the plots fall back to the class-agreement proxy and
say so in their titles.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on clusters and CI
import matplotlib.pyplot as plt  # noqa: E402

from s2i_data import storage

from s2i_model.evaluate.evaluation import RESULT  # noqa: E402
from s2i_model.evaluate.history import informativity_history, read_rows  # noqa: E402


def find_runs(root: Path) -> list[Path]:
    runs = {p.parent for p in Path(root).glob(f"*/{RESULT}")} | {p.parent for p in Path(root).glob(RESULT)}
    return sorted(runs, key=lambda r: (json.loads((r / RESULT).read_text())["emb"], str(r)))


def collect(root: Path) -> list[dict]:
    out = []
    for run in find_runs(root):
        ev = json.loads((run / RESULT).read_text())
        ev.pop("ident", None)
        ev["name"] = run.name
        ev["history"] = informativity_history(read_rows(run))
        out.append(ev)
    return out


def write_report(root: Path, out: Path) -> dict:
    runs = collect(root)
    if not runs:
        raise ValueError(f"{root}: no evaluated runs (run s2i-model evaluate --run RUN first)")
    out.mkdir(parents=True, exist_ok=True)
    has_info = any(r["mean"].get("informativity") is not None for r in runs)
    metric, metric_label = ("informativity", "informativity") if has_info else \
        ("class_agreement", "class agreement (proxy: no informativity classifiers given)")
    plots = {"history": _plot_history(runs, out / "history.png"),
             "versus_size": _plot_versus_size(runs, metric, metric_label, out / "versus-size.png"),
             "per_class": _plot_per_class(runs, metric, metric_label, out / "per-class.png")}
    (out / "grids").mkdir(exist_ok=True)
    for r in runs:
        src = Path(r["run"]) / r.get("grid", "")
        if src.is_file():
            shutil.copyfile(src, out / "grids" / f"{r['name']}.png")
            r["grid_file"] = f"grids/{r['name']}.png"
    report = {"metric": metric, "runs": runs, "plots": {k: v for k, v in plots.items() if v}}
    storage.atomic_write(out / "report.json", json.dumps(report, indent=2))
    storage.atomic_write(out / "index.html", _html(report, metric_label))
    return report




def _plot_history(runs: list[dict], path: Path) -> str | None:
    with_hist = [r for r in runs if r["history"]["epochs"]]
    if not with_hist:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in with_hist:
        ax.plot(r["history"]["epochs"], [100 * v for v in r["history"]["mean"]], label=f"E = {r['emb']}")
    ax.set(xlabel="epoch", ylabel="mean informativity (%)", title="Informativity during training")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_versus_size(runs: list[dict], metric: str, label: str, path: Path) -> str:
    embs = [r["emb"] for r in runs]
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
    return _save(fig, path)


def _plot_per_class(runs: list[dict], metric: str, label: str, path: Path) -> str:
    classes = runs[0]["classes"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(classes)), 4))
    width = 0.8 / len(runs)
    for i, r in enumerate(runs):
        vals = [100 * ((r["per_class"].get(c) or {}).get(metric) or 0) for c in classes]
        ax.bar([k + i * width for k in range(len(classes))], vals, width, label=f"E = {r['emb']}")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], classes)
    ax.set(ylabel=f"{metric.replace('_', ' ')} (%)", title=f"Per class: {label}")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


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
    plots = "".join(f'<figure><img src="{e(f)}" alt="{e(k)}"></figure>' for k, f in report["plots"].items())
    grids = "".join(f'<h3>E = {r["emb"]} ({e(r["name"])})</h3><img class="grid" src="{e(r["grid_file"])}" '
                    f'alt="grid {r["emb"]}">' for r in runs if r.get("grid_file"))
    note = ("" if metric == "informativity" else
            "<p class=note>No informativity classifiers were given: the per-class table and plots show the "
            "class-agreement proxy, which over-reports (SPEC 5). Label a pool (s2i-model sample, label, "
            "train-informativity) and evaluate with --informativity for the paper's metric.</p>")
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>s2i embedding-size report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{max-width:100%}}.grid{{image-rendering:pixelated}}.note{{color:#8a4b00}}</style></head><body>
<h1>Sound-to-Imagination: embedding sizes compared</h1>
<p>{len(runs)} run{"s" if len(runs) > 1 else ""} on {e(runs[0]["data"])}, split <b>{e(runs[0]["split"])}</b>, {runs[0]["samples_per_sound"]}
pictures per sound. Proxies need no human labels and are named as such; the distances are measured in the
real-frame classifier's feature space{", plus the standard Inception FID" if any("fid_inception" in r["proxies"] for r in runs) else ""}.</p>
{note}<h2>Summary</h2>{table}<h2>Per class: {e(metric_label)}</h2>{per_class}<h2>Plots</h2>{plots}
<h2>Pictures imagined from held-out sounds</h2><p>Each row: the real frame, then pictures from its sound.</p>{grids}
</body></html>"""


def _table(tid: str, head: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    return (f'<table id="{tid}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows) + "</tbody></table>")
