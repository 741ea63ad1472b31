"""Learning curves for the comparison (issue 27): class agreement against training samples seen.

A model is trained to a quarter, a half, three quarters and all of its final stage's epochs (its
trainer resumes from the previous point), and after each its pictures of the judged split are
judged by the comparison's cross-fitted judges. Samples seen are what RUN/metrics.jsonl says the
run has trained on so far, all stages counted: a model that is merely under-trained shows as a
curve still rising at the end of its budget. The points go to RUN/curve.json, written under the
run's lock; a point already there (same epochs, same judges) is not trained or measured again.
A model whose last stage has no ``epochs`` field has one point: its whole training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from s2i_data import storage, untrusted

from s2i_model import models
from s2i_model import run as run_folder
from s2i_model.evaluate.history import log_rows

FILE = "curve.json"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
MAX_CURVE_BYTES = 1 << 20


def targets(spec: models.ModelSpec, preset: str, options: dict | None = None) -> tuple[str, list[int]]:
    """(the last stage's name, the ``epochs`` it is trained to at each point); no points for a
    stage without an ``epochs`` field."""
    from s2i_model.train.entry import stage_config

    last = spec.stages[-1]
    cfg = stage_config(spec, last, "", "", preset, (options or {}).get(last.name))
    total = getattr(cfg, "epochs", None)
    if not isinstance(total, int) or total < 1:
        return last.name, []
    return last.name, sorted({max(1, math.ceil(f * total)) for f in FRACTIONS})


def spent(run: Path) -> tuple[int, float, bool]:
    """(samples, seconds) the run has trained on so far, every stage's logged epochs summed, and
    whether it has logged any epoch."""
    rows = [r for r in log_rows(run) if "seconds" in r]
    return int(sum(r.get("samples", 0) for r in rows)), float(sum(r["seconds"] for r in rows)), bool(rows)


def read(run: Path) -> dict:
    """RUN/curve.json checked (`untrusted.curve`); an empty curve when there is none."""
    path = Path(run) / FILE
    if not path.is_file():
        return {"judges": None, "points": []}
    return untrusted.curve(untrusted.json_value(untrusted.capped_read(path, MAX_CURVE_BYTES), str(path)), str(path))


def _final_epoch(run: Path, spec: models.ModelSpec) -> int | None:
    """The epochs the model's final checkpoint records (its last stage's, once that stage began)."""
    try:
        state = run_folder.Run.open(run).state(spec.checkpoint)
        return untrusted.epoch(state.get("epoch"), f"{run}: epoch") if state else None
    except (run_folder.RunError, untrusted.Untrusted, OSError):
        return None


def train_with_curve(spec: models.ModelSpec, run: Path, preset: str, options: dict | None,
                     train: Callable[[dict | None], None], judge: Callable[[Path], dict], judges_stamp: list,
                     log=print) -> dict:
    """Train ``run`` point by point (``train(options)`` trains to the options given), judging the
    pictures at each point (``judge(run)`` → the point's measures); RUN/curve.json. The last point
    is the full preset: after it the run is what a plain training would leave."""
    stage, points = targets(spec, preset, options)
    curve = read(run)
    if curve["judges"] != judges_stamp:  # measured by other judges: measured again
        curve = {"judges": judges_stamp, "points": []}
    done = {p["epochs"] for p in curve["points"]}
    for epochs in points or [None]:
        if epochs in done:
            continue
        opts = {k: dict(v) for k, v in (options or {}).items()}
        if epochs is not None:
            opts.setdefault(stage, {})["epochs"] = epochs
        train(opts)
        reached = _final_epoch(run, spec)
        if epochs is not None and (reached is None or reached > epochs):  # trained past it before the curve began
            log(f"{run}: trained past epoch {epochs} of {stage} already: that point of its curve is left out")
            continue
        samples, seconds, _ = spent(run)
        if epochs is not None and any(p["samples_seen"] == samples for p in curve["points"]):
            log(f"{run}: no training since the last point (its last stage stopped early): no point at epoch {epochs}")
            continue
        point = {"epochs": epochs, "samples_seen": samples, "seconds": round(seconds, 3), **judge(run)}
        curve["points"] = sorted([p for p in curve["points"] if p["epochs"] != epochs] + [point],
                                 key=lambda p: (p["samples_seen"], p["epochs"] or 0))
        with run_folder.writing(run):
            storage.atomic_write(Path(run) / FILE, json.dumps(curve, indent=2))
    train(options)  # the whole preset (nothing to do when the last point was it)
    return curve
