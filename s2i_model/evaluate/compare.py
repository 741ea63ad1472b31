"""Models compared (`make compare`): a row per evaluated run, per-class bars, and the same test
sounds drawn by every model side by side.

Everything measured comes from each run's evaluation.json (one `evaluate` for every model:
same build, split, pictures per sound, seed and real-frame classifier when `make compare` ran
it); what evaluation.json does not hold is read here: the parameters of the loaded model
(`run.parameter_count`), the training time and throughput (RUN/metrics.jsonl), and the labels
each model's training used (its registry entry, `s2i_model.models`). `report.write_report` calls `comparison` when
the runs under its folder hold more than one model.
"""

from __future__ import annotations

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
from s2i_model.evaluate.history import log_rows
from s2i_model.grid import LABEL_W, PAD, save_grid

HEADER = 18  # px above the grid naming each model's columns


def training_cost(run: Path) -> dict:
    """Training time (sum of every stage's epoch ``seconds``) and samples per second over it, from
    RUN/metrics.jsonl."""
    rows = [r for r in log_rows(run) if "seconds" in r]
    seconds = float(sum(r["seconds"] for r in rows))
    samples = int(sum(r.get("samples", 0) for r in rows))
    return {"training_seconds": seconds if rows else None, "training_samples": samples if rows else None,
            "samples_per_s": samples / seconds if rows and seconds > 0 else None}


def plot_text(label: str) -> str:
    """A name as matplotlib shows it verbatim: a ``$`` would start mathematics (and a name such
    as ``$^^$`` would fail to draw)."""
    return label.replace("$", r"\$")


def save_figure(fig, path: Path) -> str:
    """``fig`` as PNG at ``path``, written atomically (never through a link left at ``path``)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    storage.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
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


def table_rows(runs: list[dict], models: dict[str, object]) -> list[dict]:
    """One row per run: what it is, what it learnt from, what was measured, what it cost."""
    rows = []
    for r in runs:
        m, p = r["mean"], r["proxies"]
        rows.append({"name": r["name"], "model": r["model"], "labels_used": run_folder.labels_used(r["model"]),
                     "epoch": r["epoch"], "width": r.get("width"), "emb": r.get("emb"),
                     "informativity": m.get("informativity"), "class_agreement": m.get("class_agreement"),
                     "frechet_distance": p.get("frechet_distance"), "kernel_distance": p.get("kernel_distance"),
                     "retrieval_r1": m.get("retrieval_r1"), "retrieval_r5": m.get("retrieval_r5"),
                     "diversity": m.get("diversity"),
                     "parameters": run_folder.parameter_count(models[r["name"]]) if r["name"] in models else None,
                     **training_cost(Path(r["run"]))})
    return rows


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
        columns.append(r["name"] if r["name"] == r["model"] else f"{r['model']} ({r['name']})")
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
    """per-class.png: a bar per class and run, ``metric`` in %; and the bars' heights read back from
    the figure as drawn (report.json's ``per_class``), so that the numbers behind the plot can be
    checked against each run's evaluation.json. A class a run has no value for is drawn at 0."""
    import matplotlib.pyplot as plt

    classes = runs[0]["classes"]
    fig, ax = plt.subplots(figsize=(figure_width(per_item, len(classes)), 4))
    width = 0.8 / len(runs)
    drawn = {}
    for i, r in enumerate(runs):
        vals = [100 * ((r["per_class"].get(c) or {}).get(metric) or 0) for c in classes]
        bars = ax.bar([k + i * width for k in range(len(classes))], vals, width, label=label(r))
        drawn[r["name"]] = [float(b.get_height()) for b in bars]
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(classes))], [plot_text(c) for c in classes])
    ax.set(ylabel=f"{metric.replace('_', ' ')} (%)", title=title)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path), {"metric": metric, "unit": "%", "classes": classes, "bars": drawn}


def comparison(runs: list[dict], out: Path, metric: str, label: str, per_class: int = 2, pictures: int = 3,
               device: str = "auto") -> dict:
    """What report.json and index.html show for several models: ``rows`` (the table), the per-class
    bars (the plot's file and its bars' heights), the side-by-side grid, and whether the evaluations
    can be compared at all."""
    models = {r["name"]: run_folder.load_model(Path(r["run"]), device) for r in runs}
    settings = {(r["data"], r["split"], r["samples_per_sound"], r.get("evaluated_with", {}).get("seed"),
                 r.get("evaluated_with", {}).get("proxy_cache")) for r in runs}
    first = runs[0]
    seed = first.get("evaluated_with", {}).get("seed") or 0
    sounds = split_sounds(first["data"], first["split"], per_class)
    grid = side_by_side(runs, models, sounds, min(pictures, first["samples_per_sound"]), seed, out / "compare-grid.png")
    plot, bars = per_class_bars(runs, metric, f"Per class and model: {label}", out / "per-class.png")
    return {"rows": table_rows(runs, models), "grid": grid, "per_class_plot": plot, "per_class": bars,
            "same_evaluation": len(settings) == 1}
