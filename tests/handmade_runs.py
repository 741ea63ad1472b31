"""Run folders written by hand, as the trainers and `evaluate` write them, for tests that check
what is read from a run rather than how it was trained: untrained nets (seeded, tiny width)
saved in the trainers' checkpoint layout, and evaluation.json files whose every number is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from s2i_data.readers import Build

from s2i_model import checkpoint, models
from s2i_model.models.s2i import AUTOENCODER, TRANSLATOR
from s2i_model import run as run_folder
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.data import Normalizer

EMB, WIDTH = 64, 0.0625  # the test preset's sizes


def s2i_run(data: Path, run: Path, seed: int = 0, emb: int = EMB, width: float = WIDTH) -> Path:
    """RUN/autoencoder.pt and RUN/translator.pt of an untrained S2I (seeded): a finished run to
    `run.load_model`, with the build's normaliser; no epoch was trained."""
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator

    build = Build.open(str(data))
    torch.manual_seed(seed)
    ae, gen = AudioAutoencoder(emb, width), DenseGenerator(emb, width)
    common = {"epoch": 1, "normalizer": Normalizer.from_build(build).to_dict(), "build": build.record()}
    ae_cfg = AutoencoderConfig(data=str(data), run=str(run), emb=emb, width=width, epochs=1)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save(run / AUTOENCODER, {"model": ae.state_dict(), "config": ae_cfg.to_dict(), **common})
    checkpoint.save(run / TRANSLATOR, {
        "G": gen.state_dict(), "config": TranslatorConfig(data=str(data), run=str(run), epochs=1).to_dict(),
        "autoencoder": ae_cfg.to_dict(), "generator": {"narrow": gen.narrow}, **common})
    return run


def vae_run(data: Path, run: Path, model: str = "aivae", seed: int = 0, latent: int = EMB,
            width: float = WIDTH) -> Path:
    """RUN/<model>.pt of an untrained AIVAE or AIVAEGAN (seeded), as its trainer saves it."""
    from s2i_model.models.aivae.nets import MODELS
    from s2i_model.models.aivae.config import AivaeConfig

    build = Build.open(str(data))
    torch.manual_seed(seed)
    cfg = {**AivaeConfig(data=str(data), run=str(run), latent=latent, width=width, epochs=1).to_dict(), "model": model}
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save(run / models.get(model).checkpoint, {
        "model": model, "vae": MODELS[model](latent, width).state_dict(), "epoch": 1, "config": cfg,
        "normalizer": Normalizer.from_build(build).to_dict(), "build": build.record()})
    return run


class Numbers:
    """Distinct numbers: each ``ratio()`` differs from every other by at least ``step``, more than
    a report prints (0.1 %), so a number shown in the wrong place never passes for the right one."""

    def __init__(self, seed: int = 0, step: float = 0.005) -> None:
        import random

        grid = [round(0.02 + step * k, 6) for k in range(int(0.96 / step))]
        random.Random(seed).shuffle(grid)
        self._left = iter(grid)

    def ratio(self) -> float:
        return next(self._left)

    def pair(self) -> tuple[float, float]:
        """(smaller, larger): R@1 and R@5."""
        a, b = self.ratio(), self.ratio()
        return min(a, b), max(a, b)


REPLICATES = 40


def metric_row(num: Numbers, informativity: bool) -> dict:
    r1, r5 = num.pair()
    row = {"class_agreement": num.ratio(), "frame_r1": r1, "frame_r5": r5, "diversity": num.ratio()}
    row["informativity"] = num.ratio() if informativity else None
    return row


def evaluation(run: Path, data: Path, classes: list[str], model: str, num: Numbers, k: int, *,
               emb: int | None = None, epoch: int | None = None, informativity: bool = False,
               samples: int = 3, history: bool = False) -> dict:
    """RUN/evaluation.json with every field `evaluate` writes, its numbers drawn from ``num`` (every
    one distinct) and ``k`` (the run's index) setting the distances and training numbers apart;
    the dict written is returned."""
    sounds = 2
    per_class = {c: {"sounds": sounds, "images": sounds * samples, **metric_row(num, informativity)} for c in classes}
    hist = ({"mean": num.ratio(), "mean_epochs": [1, 3 + k], "best_moving_average": num.ratio(),
             "best_window": [2, 3 + k], "window": 2, "best_moving_average_by_val": num.ratio(),
             "best_window_by_val": [1, 2 + k]} if history else None)
    ev = {"ident": {"config": {"run": str(run), "data": str(data), "split": "test", "samples": samples,
                               "informativity": "judges" if informativity else "", "fid_weights": "",
                               "proxy_cache": str(run.parent / "frame-classifier.pt"), "proxy_epochs": 30, "seed": 0},
                    "translator_epoch": epoch, "translator": [], "judges": [], "data": str(data)},
          "run": str(run), "data": str(data), "split": "test", "samples_per_sound": samples, "model": model,
          "emb": emb, "width": WIDTH if model not in ("retrieval", "real") else None, "epoch": epoch,
          "classes": classes, "per_class": per_class, "mean": metric_row(num, informativity),
          "proxies": {"frechet_distance": round(3.1 + 1.37 * k + num.ratio(), 6),
                      "kernel_distance": round(0.0123 + 0.0311 * k + num.ratio() / 100, 6),
                      "feature_space": "real-frame classifier (32-d), trained on the train split"},
          "embedding_separability": {"centroid": num.ratio(), "nn1": num.ratio()},
          "informativity_judges": "judges" if informativity else None,
          "training": {"pixel_loss_ma50": round(0.05 + 0.113 * k + num.ratio() / 10, 6) if epoch else None,
                       "informativity_history": hist}}
    # bootstrap replicates around each number (what `evaluate` stores), so that the report's
    # intervals can be checked against the quantiles computed by the test itself
    spread = __import__("numpy").random.default_rng(100 + k)
    reps = lambda v, sd: [float(min(1.0, max(0.0, x))) if sd < 0.1 else float(x)  # noqa: E731
                          for x in spread.normal(v, sd, REPLICATES)]
    ev["replicates"] = {
        "mean": {key: reps(v, 0.01) for key, v in ev["mean"].items() if v is not None},
        "proxies": {key: reps(ev["proxies"][key], 0.2 if key == "frechet_distance" else 0.001)
                    for key in ("frechet_distance", "kernel_distance")},
        "per_class": {c: {"class_agreement": reps(row["class_agreement"], 0.02)} for c, row in per_class.items()}}
    if model != "real":
        ev["grid"] = "evaluation-grid.png"
    run.mkdir(parents=True, exist_ok=True)
    (run / run_folder.EVALUATION).write_text(json.dumps(ev, indent=2))
    return ev


def training_log(run: Path, k: int, epochs: int = 2, informativity: list[float] | None = None) -> dict:
    """RUN/metrics.jsonl of a run trained ``epochs`` translator epochs (each with the informativity
    given, if any), its cost set apart by ``k``; returns the training time and samples it sums to."""
    rows = [{"stage": "translator", "epoch": e + 1, "pixel_loss": 0.3, "seconds": 7.0 + 3 * k + e,
             "samples": 30 + 10 * k} for e in range(epochs)]
    for row, value in zip(rows, informativity or []):
        row["informativity"] = {"mean": value, "per_class": {}}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"training_seconds": sum(r["seconds"] for r in rows), "training_samples": sum(r["samples"] for r in rows)}
