"""`s2i-model compare`: several registered models trained on one build, evaluated alike, reported.

Every model goes into RUNS/<name> at its own preset of one name (``paper``, ``cpu``, ``test``: the
presets live in each model's folder), is trained (a finished stage is skipped, a killed one
resumed: its trainer's own rule), then evaluated with the same split, pictures per sound, seed and
one real-frame classifier kept in RUNS; then the reference rows (RUNS/real, RUNS/retrieval-<model>),
then RUNS/report. Every step is cached (a trainer's checkpoint, evaluate's ident, an unchanged
reference record, a report newer than every evaluation), so a second run trains and measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from s2i_model import models
from s2i_model.evaluate.evaluation import RESULT, EvalConfig, evaluate
from s2i_model.evaluate.reference import write_reference
from s2i_model.evaluate.report import write_report
from s2i_model.train.entry import train_model

# pictures per test sound at each preset: the paper's protocol draws 10; fewer keep CPU runs short
SAMPLES = {"paper": 10, "cpu": 4, "test": 2}
CLASSIFIER = "frame-classifier.pt"  # one real-frame classifier for every row, kept in RUNS


@dataclass
class CompareConfig:
    data: str
    runs: str
    models: list[str] = field(default_factory=lambda: list(models.BUILTIN))
    references: list[str] | None = None  # None: real, and retrieval in the space of each model that has one
    preset: str = "paper"
    samples: int | None = None  # None: the preset's (SAMPLES)
    seed: int = 0
    informativity: str = ""
    workers: int | None = None  # None: each preset's
    device: str = "auto"


def plan(cfg: CompareConfig) -> tuple[list[models.ModelSpec], list[tuple[str, str]]]:
    """The models and reference rows to run, every name checked before anything trains."""
    if cfg.preset not in models.PRESETS:
        raise models.RegistryError(f"--preset must be one of {', '.join(models.PRESETS)}, not {cfg.preset!r}")
    if not cfg.models:
        raise models.RegistryError("--models names no model")
    specs = []
    for name in dict.fromkeys(cfg.models):
        spec = models.get(name)
        if not spec.stages:
            raise models.RegistryError(f"{name} is a reference row: give it with --references")
        spec.preset(cfg.preset)  # a model without this preset is refused here, not after the others trained
        specs.append(spec)
    wanted = cfg.references if cfg.references is not None else \
        [f"retrieval-{s.name}" for s in specs if s.retrieval_space] + ["real"]
    refs = []
    for ref in dict.fromkeys(wanted):
        kind, _, space = ref.partition("-")
        if ref == "real":
            refs.append((ref, ""))
        elif kind == "retrieval" and space in [s.name for s in specs]:
            refs.append((ref, space))
        else:
            raise models.RegistryError(f"reference {ref!r} is not real or retrieval-<one of --models>")
    return specs, refs


def _report_is_current(runs: Path) -> bool:
    done = runs / "report" / "report.json"
    if not done.is_file():
        return False
    evaluations = list(runs.glob(f"*/{RESULT}"))
    return bool(evaluations) and all(e.stat().st_mtime <= done.stat().st_mtime for e in evaluations)


def run_comparison(cfg: CompareConfig, log: Callable[[str], None] = print, console: Console | None = None) -> Path:
    """The whole comparison (see the module's text); RUNS/report/index.html."""
    specs, refs = plan(cfg)
    runs = Path(cfg.runs)
    runs.mkdir(parents=True, exist_ok=True)
    samples = cfg.samples or SAMPLES[cfg.preset]

    def evaluated(run: Path) -> None:
        evaluate(EvalConfig(run=str(run), data=cfg.data, split="test", samples=samples, seed=cfg.seed,
                            informativity=cfg.informativity, proxy_cache=str(runs / CLASSIFIER), device=cfg.device),
                 log=log)

    steps = 2 * len(specs) + 2 * len(refs) + 1
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console or Console(stderr=True), transient=False) as progress:
        task = progress.add_task("compare", total=steps)

        def step(what: str, do: Callable[[], object]) -> None:
            progress.update(task, description=what)
            do()
            progress.advance(task)

        for spec in specs:
            run = runs / spec.name
            options = {s.name: {"workers": cfg.workers} for s in spec.stages} if cfg.workers is not None else None
            step(f"train {spec.name}", lambda: train_model(spec, cfg.data, str(run), cfg.preset, options, log))
            step(f"evaluate {spec.name}", lambda: evaluated(run))
        for name, space in refs:
            run = runs / name
            step(f"reference {name}", lambda: write_reference(
                "real" if not space else "retrieval", run, cfg.data, runs / space if space else None))
            step(f"evaluate {name}", lambda: evaluated(run))
        if _report_is_current(runs):
            log(f"{runs / 'report'} is up to date")
            progress.advance(task)
        else:
            step("report", lambda: write_report(runs, runs / "report", cfg.device))
    return runs / "report" / "index.html"
