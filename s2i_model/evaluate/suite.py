"""`s2i-model compare`: several registered models trained on one build, evaluated alike, reported.

Every model goes into RUNS/<name> at its own preset of one name (``paper``, ``cpu``, ``test``: the
presets live in each model's folder), is trained (a finished stage is skipped, a killed one
resumed: its trainer's own rule), then evaluated with the same split, pictures per sound, seed and
one real-frame classifier kept in RUNS; then the reference rows (RUNS/real, RUNS/retrieval-<model>),
then RUNS/report. On a build of within-class factors (issue 28) the factor readers are fitted once
too (RUNS/factor-readers.pt), and the ``shuffled`` reference row joins the defaults. Every step is
cached (a trainer's checkpoint, evaluate's ident, an unchanged reference record, a report newer
than every evaluation), so a second run trains and measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from s2i_data.readers import Build

from s2i_model import models
from s2i_model.device import pick_device
from s2i_model.evaluate import curve
from s2i_model.evaluate import factors as factor_eval
from s2i_model.evaluate.crossfit import cross_fitted
from s2i_model.evaluate.evaluation import JUDGES, RESULT, EvalConfig, _stamp, agreement, evaluate
from s2i_model.evaluate.reference import write_reference
from s2i_model.evaluate.report import write_report
from s2i_model.train.entry import train_model

# pictures per test sound at each preset: the paper's protocol draws 10; fewer keep CPU runs short
SAMPLES = {"paper": 10, "cpu": 4, "test": 2}


@dataclass
class CompareConfig:
    data: str
    runs: str
    models: list[str] = field(default_factory=lambda: list(models.BUILTIN))
    references: list[str] | None = None  # None: real, and retrieval in the space of each model that has one
    preset: str = "paper"
    samples: int | None = None  # None: the preset's (SAMPLES)
    seeds: list[int] = field(default_factory=lambda: [0])  # each model trained and evaluated once per seed
    informativity: str = ""
    workers: int | None = None  # None: each preset's
    device: str = "auto"


def plan(cfg: CompareConfig) -> tuple[list[models.ModelSpec], list[tuple[str, str, str]]]:
    """The models and reference rows to run, every name checked before anything trains: each row as
    (its folder's name, its kind, the model whose space it searches or ""). By default real, lookup,
    chance, nearest-sound-<m> for each model with an audio space and nearest-image-<m> for each
    whose audio space is an image space, and ``shuffled`` where the build has within-class factors
    (issue 28: the floor of factor agreement); ``retrieval-<m>`` is nearest-sound-<m>'s earlier name."""
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
        ["real", "lookup", "chance"] + [f"nearest-sound-{s.name}" for s in specs if s.retrieval_space] \
        + [f"nearest-image-{s.name}" for s in specs if s.image_space] + (["shuffled"] if _has_factors(cfg.data) else [])
    spaces = {"nearest-sound": [s.name for s in specs],  # any with an `embed` (write_reference checks)
              "nearest-image": [s.name for s in specs if s.image_space]}
    refs = []  # (row name, kind, the model whose space it searches or "")
    for ref in dict.fromkeys(wanted):
        if ref.startswith("retrieval-"):  # nearest-sound's earlier name
            ref = "nearest-sound-" + ref.removeprefix("retrieval-")
        kind = next((k for k in spaces if ref.startswith(k + "-")), ref)
        space = ref.removeprefix(kind + "-") if kind in spaces else ""
        if kind in ("real", "lookup", "chance", "shuffled") or space in spaces.get(kind, ()):
            if ref not in [r for r, *_ in refs]:
                refs.append((ref, kind, space))
        else:
            raise models.RegistryError(
                f"reference {ref!r} is not real, lookup, chance, shuffled, nearest-sound-<one of --models> or "
                f"nearest-image-<one of --models whose sounds map into an image space: "
                f"{', '.join(spaces['nearest-image']) or 'none here'}>")
    return specs, refs


def _has_factors(data: str) -> bool:
    """Whether ``data`` is a build of within-class factors (a build that cannot be opened has none
    here: the comparison refuses it later, in one line of its own)."""
    try:
        return bool(Build.open(data).factors)
    except (ValueError, OSError):
        return False


def _report_is_current(runs: Path) -> bool:
    done = runs / "report" / "report.json"
    if not done.is_file():
        return False
    evaluations = list(runs.glob(f"*/{RESULT}")) + list(runs.glob(f"*/{curve.FILE}"))
    return bool(evaluations) and all(e.stat().st_mtime <= done.stat().st_mtime for e in evaluations)


def folder(name: str, seed: int, seeds: list[int]) -> str:
    """A row's run folder for one seed: its name alone when the comparison has only seed 0 (as
    before seeds existed), ``<name>-seed<k>`` otherwise (the report joins them into one row)."""
    return name if seeds == [0] else f"{name}-seed{seed}"


def run_comparison(cfg: CompareConfig, log: Callable[[str], None] = print, console: Console | None = None) -> Path:
    """The whole comparison (see the module's text); RUNS/report/index.html."""
    specs, refs = plan(cfg)
    seeds = list(dict.fromkeys(cfg.seeds))
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise models.RegistryError("--seeds must name one or more whole numbers ≥ 0")
    runs = Path(cfg.runs)
    runs.mkdir(parents=True, exist_ok=True)
    samples = cfg.samples or SAMPLES[cfg.preset]
    judges_file = runs / JUDGES
    build = Build.open(cfg.data)

    def evaluated(run: Path, seed: int) -> None:
        evaluate(EvalConfig(run=str(run), data=cfg.data, split="test", samples=samples, seed=seed,
                            informativity=cfg.informativity, proxy_cache=str(judges_file), device=cfg.device),
                 log=log)

    steps = len(seeds) * (2 * len(specs) + 2 * len(refs)) + 2 + bool(build.factors)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console or Console(stderr=True), transient=False) as progress:
        task = progress.add_task("compare", total=steps)

        def step(what: str, do: Callable[[], object]):
            progress.update(task, description=what)
            out = do()
            progress.advance(task)
            return out

        # one set of cross-fitted judges for every row and seed, fitted before anything is judged
        judge = step("judges", lambda: cross_fitted(build, "test", len(build.classes), judges_file,
                                                    device=pick_device(cfg.device).type, log=log))
        if build.factors:  # one set of factor readers too, beside the judges (evaluate finds them there)
            step("factor readers", lambda: factor_eval.factor_readers(
                build, build.factors, runs / factor_eval.FILE, device=pick_device(cfg.device).type, log=log))
        stamp = _stamp(str(judges_file))
        for seed in seeds:
            for spec in specs:
                run = runs / folder(spec.name, seed, seeds)
                options = {s.name: {"seed": seed, **({"workers": cfg.workers} if cfg.workers is not None else {})}
                           for s in spec.stages}
                step(f"train {run.name}", lambda: curve.train_with_curve(
                    spec, run, cfg.preset, options,
                    lambda opts: train_model(spec, cfg.data, str(run), cfg.preset, opts, log),
                    lambda r: agreement(r, build, "test", judge, samples, seed, cfg.device), stamp, log))
                step(f"evaluate {run.name}", lambda: evaluated(run, seed))
            for name, kind, space in refs:
                run = runs / folder(name, seed, seeds)
                step(f"reference {run.name}", lambda: write_reference(
                    kind, run, cfg.data, runs / folder(space, seed, seeds) if space else None))
                step(f"evaluate {run.name}", lambda: evaluated(run, seed))
        if _report_is_current(runs):
            log(f"{runs / 'report'} is up to date")
            progress.advance(task)
        else:
            step("report", lambda: write_report(runs, runs / "report", cfg.device))
    return runs / "report" / "index.html"
