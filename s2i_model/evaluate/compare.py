"""Models compared (`make compare`): a row per evaluated run, per-class bars, and the same test
sounds drawn by every model side by side.

Everything measured comes from each run's evaluation.json (one `evaluate` for every model:
same build, split, pictures per sound, seed and real-frame classifier when `make compare` ran
it); what evaluation.json does not hold is read here: the parameters of the loaded model
(`run.parameter_count`), the training time and throughput (RUN/metrics.jsonl), and the labels
each model's training used (its registry entry, `s2i_model.models`). On a build of within-class
factors (issue 28) the rows also carry factor agreement, and `factor_rows` is the per (class,
factor) table. `report.write_report` calls `comparison` when
the runs under its folder hold more than one model.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from s2i_data import storage
from s2i_data.readers import Build

from s2i_model import run as run_folder
from s2i_model import models as registry
from s2i_model.data import ShardStream, tensor_to_image
from s2i_model.evaluate import curve, intervals
from s2i_model.grid import LABEL_W, PAD, save_grid

HEADER = 18  # px above the grid naming each model's columns


SEED_SUFFIX = re.compile(r"-seed\d+$")
MEASURES = ("class_agreement", "class_agreement_full", "frame_r1", "frame_r5", "diversity", "informativity")
DISTANCES = ("frechet_distance", "kernel_distance")


def training_cost(run: Path) -> dict:
    """Training time (sum of every stage's epoch ``seconds``) and samples seen (every stage's epoch
    ``samples``) and samples per second over it, from RUN/metrics.jsonl."""
    samples, seconds, trained = curve.spent(run)
    return {"training_seconds": seconds if trained else None, "training_samples": samples if trained else None,
            "samples_per_s": samples / seconds if trained and seconds > 0 else None}


def plot_text(label: str) -> str:
    """A name as matplotlib shows it verbatim: a ``$`` would start mathematics (and a name such
    as ``$^^$`` would fail to draw)."""
    return label.replace("$", r"\$")


def save_figure(fig, path: Path) -> str:
    """``fig`` as PNG at ``path``, written atomically (never through a link left at ``path``)."""
    import matplotlib.pyplot as plt

    storage.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return Path(path).name


def figure_width(per_item: float, items: int) -> float:
    """Inches for a plot of ``items`` bars: at least 6, at most 40 (4000 px) whatever the count."""
    return min(40.0, max(6.0, per_item * items))


def sort_runs(runs: list[dict]) -> list[dict]:
    # a model's place in the table: the registry's order (the translator first, its comparison
    # models in paper order, models of other packages, then the reference rows)
    order = registry.names(include_references=True)
    return sorted(runs, key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order),
                                       r["model"], r["name"]))


def row_name(run: dict) -> str:
    """The table row a run belongs to: its folder's name without a ``-seed<k>`` ending."""
    return SEED_SUFFIX.sub("", run["name"]) or run["name"]


def group_runs(runs: list[dict]) -> list[dict]:
    """The runs of one row (one model or reference, every seed) together, in `sort_runs`' order:
    ``{"name", "model", "runs"}``."""
    groups: dict[str, dict] = {}
    for r in sort_runs(runs):
        groups.setdefault(row_name(r), {"name": row_name(r), "model": r["model"], "runs": []})["runs"].append(r)
    return list(groups.values())


def _combined(runs: list[dict], part: str, key: str) -> dict:
    """A measure over a row's seeds: the mean of the seeds' values and its 95 % interval (over the
    split's videos and the seeds, `intervals.over_seeds`)."""
    points = [(r["mean"] if part == "mean" else r["proxies"]).get(key) for r in runs]
    reps = [((r.get("replicates") or {}).get(part) or {}).get(key) for r in runs]
    if any(p is None for p in points):
        return {"value": None, "interval": None}
    if any(not x for x in reps):  # an evaluation from before intervals: no interval
        return {"value": float(sum(points) / len(points)), "interval": None}
    value, ci = intervals.over_seeds(points, reps)
    return {"value": value, "interval": ci}


def _factor_block(r: dict) -> dict | None:
    return r.get("factors") or None


def _combined_factor(runs: list[dict], factor: str | None = None, key: str = "spearman") -> dict:
    """Factor agreement (``factor`` None: the mean over (class, factor) pairs) or one factor's
    ``key`` (spearman, accuracy) over a row's seeds, with its 95 % interval (`intervals.over_seeds`
    on the replicates each evaluation stored); value None where a run has no factor results."""
    blocks = [_factor_block(r) for r in runs]
    if any(b is None for b in blocks):
        return {"value": None, "interval": None}
    reps_of = [((r.get("replicates") or {}).get("factors") or {}) for r in runs]
    if factor is None:
        points, reps = [b.get("mean") for b in blocks], [f.get("mean") for f in reps_of]
    else:
        entries = [b["per_factor"].get(factor) or {} for b in blocks]
        points = [e.get(key) for e in entries]
        reps = [((f.get("per_factor") or {}).get(factor) or {}).get(key) for f in reps_of]
    if any(p is None for p in points):
        return {"value": None, "interval": None}
    if any(not x for x in reps):
        return {"value": float(sum(points) / len(points)), "interval": None}
    value, ci = intervals.over_seeds(points, reps)
    return {"value": value, "interval": ci}


def factor_rows(groups: list[dict]) -> dict | None:
    """The per (class, factor) table: the factors (name, class, kind; in the first evaluation's
    order, classes as the build lists them) and per row (model or reference, seeds joined) each
    factor's Spearman and a counted factor's accuracy, with intervals. None when no run measured
    factor agreement (a build without factors)."""
    named: dict[str, dict] = {}
    for g in groups:
        for r in g["runs"]:
            for name, e in ((_factor_block(r) or {}).get("per_factor") or {}).items():
                named.setdefault(name, {"name": name, "class": e["class"], "kind": e["kind"]})
    if not named:
        return None
    classes = groups[0]["runs"][0]["classes"]
    factors = sorted(named.values(), key=lambda f: classes.index(f["class"]) if f["class"] in classes else len(classes))
    rows = []
    for g in groups:
        per = {}
        for f in factors:
            per[f["name"]] = {"spearman": _combined_factor(g["runs"], f["name"])}
            if f["kind"] == "count":
                per[f["name"]]["accuracy"] = _combined_factor(g["runs"], f["name"], "accuracy")
        rows.append({"name": g["name"], "model": g["model"], "per_factor": per})
    return {"factors": factors, "rows": rows}


def short_labels(text: str) -> str:
    """A registry's "labels used" as a table cell: the words before its explanation."""
    return text.split(" (")[0].strip()[:24] or "–"


def table_rows(groups: list[dict], models: dict[str, object], pool_models=None) -> list[dict]:
    """One row per model or reference (its seeds joined): what it is, what it learnt from, what was
    measured with its interval, what it cost. ``pool_models``: the models the informativity judges'
    pool holds pictures of (None: unknown, every model's informativity is shown)."""
    rows = []
    for g in groups:
        runs = g["runs"]
        costs = [training_cost(Path(r["run"])) for r in runs]
        mean = lambda k: (None if any(c[k] is None for c in costs)  # noqa: E731
                          else float(sum(c[k] for c in costs) / len(costs)))
        row = {"name": g["name"], "model": g["model"], "seeds": [r.get("training_seed") for r in runs],
               "labels_used": run_folder.labels_used(g["model"]),
               "epoch": runs[0]["epoch"], "width": runs[0].get("width"), "emb": runs[0].get("emb"),
               **{k: _combined(runs, "mean", k) for k in MEASURES},
               **{k: _combined(runs, "proxies", k) for k in DISTANCES},
               "factor_agreement": _combined_factor(runs),
               "parameters": run_folder.parameter_count(models[runs[0]["name"]]) if runs[0]["name"] in models else None,
               "training_seconds": mean("training_seconds"), "training_samples": mean("training_samples"),
               "samples_per_s": mean("samples_per_s")}
        judged = pool_models is None or g["model"] in pool_models
        if not judged:
            row["informativity"] = {"value": None, "interval": None, "note": "judges not trained on this model"}
        rows.append(row)
    return rows


def orders(rows: list[dict], measure: str = "class_agreement") -> dict[str, dict[str, str]]:
    """For every two rows, ``above``, ``below`` or ``not separable`` on ``measure``: an order only
    where their 95 % intervals do not overlap."""
    out = {}
    for a in rows:
        out[a["name"]] = {}
        for b in rows:
            if a is b:
                continue
            ia, ib = a[measure]["interval"], b[measure]["interval"]
            out[a["name"]][b["name"]] = ("not separable" if not intervals.separable(ia, ib)
                                         else "above" if a[measure]["value"] > b[measure]["value"] else "below")
    return out


class _Raw:
    """Stands in for a normaliser so that the split is read once: each model then normalises the
    raw log-mels with its own statistics (`Normalizer` is a clip, so it cannot be undone)."""

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        return np.asarray(mel, np.float32)


def split_sounds(data: str, split: str, per_class: int) -> list[tuple[str, np.ndarray, torch.Tensor, int]]:
    """The first ``per_class`` sounds of every class by key: (key, raw log-mel, real frame, class)."""
    chosen: dict[int, list] = {}
    for mel, img, cls, key in sorted(ShardStream(Build.open(data), split, _Raw(), shuffle=False), key=lambda s: s[3]):
        if len(chosen.setdefault(cls, [])) < per_class:
            chosen[cls].append((key, mel, img, cls))
    return [s for c in sorted(chosen) for s in chosen[c]]


def side_by_side(runs: list[dict], models: dict[str, object], sounds: list, n: int, seed: int, path: Path) -> dict:
    """A row per sound: its real frame, then n pictures from each model (each seeded alike), and a
    header naming each model's columns."""
    columns = []
    rows = [(key, tensor_to_image(img), []) for key, _, img, _ in sounds]
    for r in runs:
        model = models[r["name"]]
        if not hasattr(model, "sound_pictures"):  # the real-frame row: its pictures are the first column
            continue
        mels = torch.stack([model.norm(raw) for _, raw, _, _ in sounds])
        pics = model.sound_pictures(mels, n, seed).cpu()
        for row, p in zip(rows, pics):
            row[2].extend(p)
        name = row_name(r)
        columns.append(name if name == r["model"] else f"{r['model']} ({name})")
    with tempfile.TemporaryDirectory(prefix="s2i-compare-") as tmp:  # drawn privately, then written atomically
        sheet = Image.open(save_grid(rows, Path(tmp) / "grid.png"))
        sheet.load()
    side = rows[0][1].shape[0]
    framed = Image.new("RGB", (sheet.width, sheet.height + HEADER), (255, 255, 255))
    framed.paste(sheet, (0, HEADER))
    draw = ImageDraw.Draw(framed)
    x0 = LABEL_W + PAD
    draw.text((x0, 3), "real", fill=(0, 0, 0))
    for i, name in enumerate(columns):
        draw.text((x0 + (1 + i * n) * (side + PAD), 3), name[: max(4, n * (side + PAD) // 7)], fill=(0, 0, 0))
    storage.atomic_write(path, lambda tmp: framed.save(tmp, format="PNG"))
    return {"file": path.name, "sounds": [key for key, *_ in sounds], "columns": ["real"] + columns,
            "pictures_per_model": n, "seed": seed, "image_size": [framed.width, framed.height]}


def per_class_bars(runs: list[dict], metric: str, title: str, path: Path, label=lambda r: plot_text(r["name"]),
                   per_item: float = 1.6) -> tuple[str, dict]:
    """per-class.png: a bar per class and run (or row), ``metric`` in %, with its 95 % interval as an
    error bar where the item has ``errors`` ({class: [low, high]}); the legend beside the plot, never
    over a bar. Also the bars' heights read back from the figure as drawn (report.json's
    ``per_class``), so that the numbers behind the plot can be checked against each run's
    evaluation.json. A class a run has no value for is drawn at 0."""
    import matplotlib.pyplot as plt

    classes = runs[0]["classes"]
    fig, ax = plt.subplots(figsize=(figure_width(per_item, len(classes)), 4))
    width = 0.8 / len(runs)
    colours = plt.get_cmap("tab20" if len(runs) > 10 else "tab10")  # a colour of its own for each bar of a class
    drawn = {}
    for i, r in enumerate(runs):
        vals = [100 * ((r["per_class"].get(c) or {}).get(metric) or 0) for c in classes]
        errors = r.get("errors") or {}
        err = [[max(0.0, v - 100 * errors[c][0]) if errors.get(c) else 0 for c, v in zip(classes, vals)],
               [max(0.0, 100 * errors[c][1] - v) if errors.get(c) else 0 for c, v in zip(classes, vals)]]
        bars = ax.bar([k + i * width for k in range(len(classes))], vals, width, label=label(r), color=colours(i % colours.N),
                      yerr=err if errors else None, capsize=2 if errors else 0, error_kw={"elinewidth": 0.8})
        drawn[r["name"]] = [float(b.get_height()) for b in bars]
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], [plot_text(c) for c in classes])
    ax.set(ylabel=f"{metric.replace('_', ' ')} (%)", title=title, ylim=(0, 105))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path), {"metric": metric, "unit": "%", "classes": classes, "bars": drawn}


def _per_class_rows(groups: list[dict], metric: str) -> list[dict]:
    """Each row's per-class ``metric`` over its seeds, with intervals, as `per_class_bars` draws it."""
    out = []
    for g in groups:
        runs, classes = g["runs"], g["runs"][0]["classes"]
        per_class, errors = {}, {}
        for c in classes:
            points = [(r["per_class"].get(c) or {}).get(metric) for r in runs]
            reps = [(((r.get("replicates") or {}).get("per_class") or {}).get(c) or {}).get(metric) for r in runs]
            if any(p is None for p in points):
                continue
            value, ci = intervals.over_seeds(points, reps) if all(reps) else (sum(points) / len(points), None)
            per_class[c] = {metric: value}
            if ci is not None:
                errors[c] = ci
        out.append({"name": g["name"], "classes": classes, "per_class": per_class, "errors": errors})
    return out


def curves_plot(groups: list[dict], curves: dict[str, list[dict]], path: Path) -> tuple[str | None, dict]:
    """curves.png: headline class agreement against training samples seen, a line per model (the
    mean over seeds at each point; the bars span the seeds' lowest to highest); and the points drawn."""
    import matplotlib.pyplot as plt

    drawn = {}
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in groups:
        per_seed = [curves.get(r["name"]) or [] for r in g["runs"]]
        if not any(per_seed):
            continue
        n = min(len(c) for c in per_seed if c)
        per_seed = [c[:n] for c in per_seed if c]
        xs = [sum(c[i]["samples_seen"] for c in per_seed) / len(per_seed) for i in range(n)]
        ys = [[100 * c[i]["class_agreement"] for c in per_seed if c[i]["class_agreement"] is not None] for i in range(n)]
        keep = [i for i in range(n) if ys[i]]
        x, mid = [xs[i] for i in keep], [sum(ys[i]) / len(ys[i]) for i in keep]
        err = [[m - min(ys[i]) for i, m in zip(keep, mid)], [max(ys[i]) - m for i, m in zip(keep, mid)]]
        ax.errorbar(x, mid, yerr=err, marker="o", capsize=2, label=plot_text(g["name"]))
        drawn[g["name"]] = {"samples_seen": x, "class_agreement": mid, "seeds": len(per_seed)}
    if not drawn:
        plt.close(fig)
        return None, {}
    ax.set(xlabel="training samples seen (all stages)", ylabel="class agreement, blurred judges (%)",
           title="Learning curves", ylim=(0, 105))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(alpha=0.3)
    return save_figure(fig, path), drawn


def comparison(runs: list[dict], out: Path, metric: str, label: str, per_class: int = 2, pictures: int = 3,
               device: str = "auto", pool_models=None) -> dict:
    """What report.json and index.html show for several models: ``rows`` (the table, a row per model
    or reference with its seeds joined), ``orders`` (which rows are separable), the per-class bars
    (the plot's file and its bars' heights), the learning curves, the side-by-side grid (the first
    seed of each row), and whether the evaluations can be compared at all."""
    groups = group_runs(runs)
    firsts = [g["runs"][0] for g in groups]
    models = {r["name"]: run_folder.load_model(Path(r["run"]), device) for r in firsts}
    settings = {(r["data"], r["split"], r["samples_per_sound"], r.get("evaluated_with", {}).get("proxy_cache"))
                for r in runs}
    first = firsts[0]
    seed = first.get("evaluated_with", {}).get("seed") or 0
    sounds = split_sounds(first["data"], first["split"], per_class)
    grid = side_by_side(firsts, models, sounds, min(pictures, first["samples_per_sound"]), seed, out / "compare-grid.png")
    plot, bars = per_class_bars(_per_class_rows(groups, metric), metric, f"Per class and model: {label}",
                                out / "per-class.png")
    learning = {r["name"]: curve.read(Path(r["run"]))["points"] for r in runs}
    curve_plot, curve_points = curves_plot(groups, learning, out / "curves.png")
    rows = table_rows(groups, models, pool_models)
    out = {"rows": rows, "orders": orders(rows), "grid": grid, "per_class_plot": plot, "per_class": bars,
           "curves_plot": curve_plot, "curves": curve_points, "same_evaluation": len(settings) == 1,
           "judge": first.get("judge")}
    factors = factor_rows(groups)
    if factors is not None:  # a build of within-class factors (issue 28)
        out["factors"] = factors
    return out
