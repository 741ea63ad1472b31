"""`s2i-model`: a thin typer wrapper over the networks, the trainers and imagine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from s2i_data.cliutil import fail, require_build

from s2i_model import models as registry  # names only: the registry imports no model until asked

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The Sound-to-Imagination translator: describe, train, imagine.")
console = Console(stderr=True, soft_wrap=True)
FAST_HELP = ("the networks' path: auto (OpenVINO when installed, else torch) | openvino | torch | eager (the "
             "networks as trained); S2I's fast path gives the eager pictures within a stated tolerance "
             "(docs/performance.md), and falls back to eager with one line")


def _accelerated(model, fast: str, precision: str):
    """``model`` on the fast path (`fast.accelerate`): silent when it is the path asked for, else its one
    line on stderr (stdout names the pictures); a bad choice exits."""
    from s2i_model import fast as fast_path

    if not hasattr(model, "sound_pictures"):
        return model
    try:
        return fast_path.accelerate(model, fast, precision, 0, log=lambda s: console.print(s, highlight=False, markup=False),
                                    quiet=True)
    except fast_path.FastPathError as e:
        _fail(str(e))


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(console, message, code)


@app.command()
def describe(emb: int = typer.Option(512, help="embedding size E"),
             width: float = typer.Option(1.0, help="channel width multiplier"),
             flops: bool = typer.Option(False, "--flops", help="also multiply-adds per sample of each network "
                                        "and of a training step of each stage (counted over a pass)"),
             model: str = typer.Option(registry.DEFAULT, help="a registered model (s2i-model models lists them)"),
             latent: int = typer.Option(64, help="a VAE's latent size")) -> None:
    """JSON: conv layers and parameters of each network (with --flops, their multiply-adds)."""
    from s2i_model import models

    try:
        spec = models.get(model)
        if spec.describe is None:
            _fail(f"{model} describes no networks")
        out = models.resolve(spec.describe)(model=model, emb=emb, width=width, latent=latent, flops=flops)
    except (models.RegistryError, ValueError, RuntimeError) as e:
        _fail(str(e))
        return
    print(json.dumps(out, indent=2, ensure_ascii=False))


@app.command("models")
def list_models() -> None:
    """The registered models: name, paper, labels their training reads, stages, presets and each preset's
    budget (passes over the train split, every phase)."""
    from s2i_model import models

    out = Console(soft_wrap=True, highlight=False)
    for name in models.names():
        try:
            spec = models.get(name)
        except models.RegistryError as e:  # another package's model that cannot be loaded: its line, not a crash
            out.print(f"{name:<13}[red]{escape(str(e))}[/red]")
            continue
        out.print(f"[bold]{name:<13}[/bold]{escape(spec.title)}; paper {escape(spec.paper)}")
        out.print(f"{'':<13}labels used: {escape(spec.labels_used)}; stages: {', '.join(s.name for s in spec.stages)}; "
                  f"presets: {', '.join(['paper', *[p for p in spec.presets if p != 'paper']])}")
        budgets = []
        for preset in ["paper", *[p for p in spec.presets if p != "paper"]]:
            try:
                phases = spec.phase_passes(preset)
            except models.RegistryError:  # a stage that names no epoch field: its budget is not stated
                budgets.append(f"{preset} not stated")
                continue
            split = f" ({' + '.join(map(str, phases.values()))})" if len(phases) > 1 else ""
            budgets.append(f"{preset} {sum(phases.values())}{split}")
        if spec.stages:
            out.print(f"{'':<13}passes over the train split: {', '.join(budgets)}")


def _check_data(data: str) -> None:
    require_build(console, data, "stats.json", "build shards first with s2i-data build")


# ---- training: every registered model's stages, by name. `train --model NAME` runs its stages in
# order; `train-<stage>` (train-autoencoder, train-translator, train-aivae, ...) is generated from the
# stage's config, a field an option, so that today's commands and options keep working.
_RUNTIME_HELP = {
    "data": "an s2i-data build: a folder or an fsspec URL (s3://, gs://, ...)",
    "run": "run folder (checkpoints, metrics, grids); resumed if it exists (--run-dir under torchrun, whose own "
           "parser claims --run)",
    "workers": "DataLoader processes reading shards",
    "device": "auto | cpu | cuda",
    "shard_url": 'open shards through a template, e.g. "pipe:curl -s https://host/b/{shard}"',
    "cache_dir": "keep remote shards here after their first read",
    "skip_bad_samples": "count, log and skip damaged samples or shards instead of stopping",
    "precision": "fp32 (the papers'), bf16 or fp16 (autocast; fp16 with loss scaling, GPU only)",
    "sync_bn": "under DDP on GPUs: BatchNorm statistics over the global batch",
    "data_on_device": "auto | on | off: hold the split in device memory (auto: when it fits)",
    "grid_every": "training epochs between validation image grids (0: none)",
    "optimizer": "sgd (the paper's) or adam (short CPU runs)",
    "max_steps": "stop an epoch after this many batches (0: all; smoke tests)",
}


def _run_training(what) -> None:
    """``what()`` with a training's errors as one line: exit 2 when another process writes the run
    folder (as for two builds into one folder), 1 for a run, data or setting that cannot serve."""
    from s2i_model.run import RunError, RunLockError

    try:
        what()
    except RunLockError as e:
        _fail(str(e), 2)
    except (RunError, ValueError) as e:  # RegistryError is a ValueError
        _fail(str(e), 1)


def _stage_command(spec, stage) -> None:
    """`s2i-model train-<stage>`: an option per field of the stage's config, its default the config's."""
    import inspect

    from s2i_model.config import Grids, Runtime
    from s2i_model.train.entry import field_types, stage_config, train_stage

    types = field_types(stage.config)
    defaults = {f.name: f.default for f in dataclasses.fields(stage.config)}
    # data and run first, then the model's own settings, then how it reads data and uses the machine
    shared = {f.name for f in dataclasses.fields(Runtime)} | {f.name for f in dataclasses.fields(Grids)}
    order = ["data", "run"] + [n for n in types if n not in shared and n not in ("data", "run")] + \
        [n for n in types if n in shared]
    params = []
    for name in order:
        t = types[name]
        flag = "--" + name.replace("_", "-")
        help_text = stage.options.get(name) or _RUNTIME_HELP.get(name)
        if name in ("data", "run"):
            decls = [flag] + (["--run-dir"] if name == "run" else [])
            opt = typer.Option(..., *decls, help=help_text)
        elif t is bool:
            opt = typer.Option(defaults[name], f"{flag}/--no-{flag[2:]}", help=help_text)
        else:
            opt = typer.Option(defaults[name], flag, help=help_text)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=t))

    def command(**options) -> None:
        _check_data(str(options["data"]))
        log = lambda m: console.print(m, highlight=False)  # noqa: E731
        data, run = options.pop("data"), options.pop("run")
        try:
            cfg = stage_config(spec, stage, data, run, "paper", options)
        except ValueError as e:
            _fail(str(e))
            return
        _run_training(lambda: train_stage(spec, stage, cfg, log))

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__doc__ = stage.help
    app.command(f"train-{stage.name}")(command)


def _stage_commands() -> None:
    from s2i_model import models

    for name in models.BUILTIN:
        spec = models.get(name)
        for stage in spec.stages:
            _stage_command(spec, stage)


_stage_commands()


def _parse_model_options(spec, args: list[str]) -> dict[str, dict]:
    """``--field VALUE`` (every stage with that field), ``--<stage>-<field> VALUE`` (that stage only),
    ``--flag`` / ``--no-flag`` for true-or-false fields → {stage: {field: value}}."""
    from s2i_model.train.entry import field_types

    spellings: dict[str, list[tuple[str, str, type, bool]]] = {}  # option → (stage, field, type, flag value)
    for stage in spec.stages:
        for field, t in field_types(stage.config).items():
            if field in ("data", "run"):
                continue
            for name in (field, f"{stage.name}_{field}"):
                spellings.setdefault(name.replace("_", "-"), []).append((stage.name, field, t, True))
                if t is bool:
                    spellings.setdefault("no-" + name.replace("_", "-"), []).append((stage.name, field, t, False))
    out: dict[str, dict] = {s.name: {} for s in spec.stages}
    i = 0
    while i < len(args):
        arg, i = args[i], i + 1
        if not arg.startswith("--") or len(arg) < 3:
            _fail(f"unexpected argument {arg!r}: options are --name VALUE (s2i-model train-<stage> --help lists them)")
        key, _, inline = arg[2:].partition("=")
        targets = list(dict.fromkeys(spellings.get(key, [])))
        if not targets:
            _fail(f"{spec.name} has no option --{key}")
        raw = inline
        if not inline and any(t is not bool for _, _, t, _ in targets):
            if i == len(args):
                _fail(f"--{key} needs a value")
            raw, i = args[i], i + 1
        for stage, field, t, flag in targets:
            if t is bool:
                out[stage][field] = flag
                continue
            try:
                out[stage][field] = t(raw)
            except ValueError:
                _fail(f"--{key} takes {'a whole number' if t is int else 'a number' if t is float else 'a text'}, "
                      f"not {raw!r}")
    return out


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    model: str = typer.Option(..., help="a registered model (s2i-model models lists them)"),
    data: str = typer.Option(..., help=_RUNTIME_HELP["data"]),
    run: Path = typer.Option(..., "--run", "--run-dir", help=_RUNTIME_HELP["run"]),
    preset: str = typer.Option("paper", help="paper (the paper's settings), cpu (minutes on two cores) or test "
                               "(the smallest run through every step)"),
) -> None:
    """Train (or resume) any registered model, all its stages; further options set its config's fields:
    --epochs 5 (every stage that has epochs), --translator-epochs 240 (one stage), --no-sync-bn."""
    from s2i_model import models
    from s2i_model.train.entry import train_model

    try:
        spec = models.get(model)
    except models.RegistryError as e:
        _fail(str(e))
        return
    options = _parse_model_options(spec, list(ctx.args))
    _check_data(data)
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    _run_training(lambda: train_model(spec, data, str(run), preset, options, log))


def _seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` (or spaces, as make passes SEEDS="0 1 2") as whole numbers; one line otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts or not all(p.isdigit() and len(p) < 10 for p in parts):
        _fail(f"--seeds takes whole numbers ≥ 0 separated by commas, not {text!r}")
    return list(dict.fromkeys(int(p) for p in parts))


@app.command()
def compare(
    data: str = typer.Option(..., help=_RUNTIME_HELP["data"]),
    runs: Path = typer.Option(..., help="the comparison's folder: RUNS/<model>, RUNS/<reference>, RUNS/report"),
    models_: str = typer.Option(",".join(registry.BUILTIN), "--models",
                                help="registered models, comma-separated (s2i-model models lists them)"),
    references: Optional[str] = typer.Option(None, help="reference rows, comma-separated: real, lookup, chance, "
                                             "nearest-sound-<model>, nearest-image-<model> (default: all of them, "
                                             "in the space of each model that has one)"),
    preset: str = typer.Option("paper", help="paper, cpu or test: every model at its own preset of that name"),
    samples: Optional[int] = typer.Option(None, help="pictures per test sound (default: the preset's: paper 10, "
                                          "cpu 4, test 2)"),
    seeds: str = typer.Option("0", help="training seeds, comma-separated: each model is trained and evaluated once "
                              "per seed, and the report shows means with 95 % intervals over test videos and seeds"),
    informativity: Optional[Path] = typer.Option(None, help="informativity classifiers"),
    workers: Optional[int] = typer.Option(None, help="DataLoader processes (default: each preset's)"),
    device: str = typer.Option("auto"),
) -> None:
    """Train what is missing (resume the rest), evaluate every model alike, add the reference rows,
    write RUNS/report: the comparison `make compare` runs. A second run trains and measures nothing."""
    from s2i_model import models
    from s2i_model.evaluate.suite import CompareConfig, plan, run_comparison

    _check_data(data)
    cfg = CompareConfig(data=data, runs=str(runs), models=[m.strip() for m in models_.split(",") if m.strip()],
                        references=None if references is None else [r.strip() for r in references.split(",") if r.strip()],
                        preset=preset, samples=samples, seeds=_seed_list(seeds), informativity=str(informativity or ""),
                        workers=workers, device=device)
    try:
        plan(cfg)  # every model, reference and preset named is checked before anything trains
    except models.RegistryError as e:
        _fail(str(e))
    done: list = []
    _run_training(lambda: done.append(run_comparison(cfg, log=lambda m: console.print(m, highlight=False))))
    report = done[0]
    print(report)



@app.command()
def reference(
    kind: str = typer.Argument(..., help="chance (a random train frame), lookup (the mean train frame of the class "
                               "a sound classifier picks), nearest-sound (the frames of the nearest train sounds in "
                               "a model's audio space; once called retrieval), nearest-image (the train frames "
                               "nearest to the sound in a model's visual space), shuffled (the real frame of another "
                               "video of the sound's class: a floor of factor agreement) or real (the test sound's own "
                               "frame)"),
    run: Path = typer.Option(..., "--run", "--run-dir", help="the reference's folder (evaluate it like a run)"),
    space: Optional[Path] = typer.Option(None, help="nearest-sound, nearest-image: the trained run whose space is "
                                         "searched"),
    data: str = typer.Option("", help="real, shuffled, lookup, chance: the build; nearest-*: the build searched "
                             "(default: the space's)"),
) -> None:
    """A reference row for `make compare`, to read the table by: chance, the class-mean lookup,
    copying instead of imagining (nearest-sound, nearest-image), or the real frames (the ceiling).
    Writes RUN/reference.json; `evaluate --run RUN` then measures it like a model."""
    from s2i_model.evaluate.reference import write_reference
    from s2i_model.run import RunError

    if data:
        _check_data(data)
    try:
        record = write_reference(kind, run, data, space)
    except (RunError, ValueError) as e:
        _fail(str(e), 1)
    clf = record.get("classifier") or {}
    console.print(f"{run}: {record['model']} reference on {record['data']}"
                  + (f", in the space of {record['space']}" if record.get("space") else "")
                  + (f", its sound classifier {clf['test_accuracy']:.1%} right on the test split"
                     if clf.get("test_accuracy") is not None else ""), highlight=False)


@app.command()
def imagine(
    source: Optional[Path] = typer.Argument(None, help="an audio or video file (wav, flac, mp3, ogg, mp4, mov, ...) or a folder"),
    run: Path = typer.Option(..., help="a run folder with a trained translator"),
    data: Optional[str] = typer.Option(None, help="instead of a file: the sounds of a built split (with --split)"),
    split: str = typer.Option("test", help="with --data: the split whose sounds to imagine from"),
    n: int = typer.Option(8, "-n", min=1, help="images per 1 s window"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG grid (single file; default <name>.imagined.png)"),
    out_dir: Optional[Path] = typer.Option(None, help="also write every image here (needed for a folder: "
                                           "OUT/<relative path>.png and OUT/<relative path>/<start>s_<k>.png)"),
    max_windows: int = typer.Option(60, min=1, help="at most this many windows per file, evenly spread"),
    seed: int = typer.Option(0, help="seed of the dropout noise"),
    device: str = typer.Option("auto"),
    fast: str = typer.Option("auto", help=FAST_HELP),
    precision: str = typer.Option("fp32", help="the fast path's precision: fp32 (the default: the pictures are "
                                  "the eager ones within 2e-3) | bf16 (faster where the CPU has it) | auto"),
) -> None:
    """Pictures of what could be making a sound: a grid with a row per 1 s window.

    A folder (with --out-dir) keeps relative paths: a/same.wav goes to OUT/a/same.wav.png and OUT/a/same.wav/.

    A file that cannot be used (undecodable, silent, too short, too long a name) is skipped with one line.

    Exit status with a folder: 0 when at least one file was imagined, 1 when none was.
    """
    from s2i_model.checkpoint import CheckpointError
    from rich.markup import escape

    from s2i_data.untrusted import path_shown
    from s2i_model.imagine import ImagineError, imagine_file, imagine_folder, imagine_split, media_files
    from s2i_model.run import RunError, load_model

    if data is not None:  # a grid from a build's own held-out sounds, real frame first
        _check_data(data)
        try:
            grid = imagine_split(_accelerated(load_model(run, device), fast, precision), data, split, output or Path(f"{split}.imagined.png"),
                                 n=n, seed=seed)
        except (RunError, ImagineError, ValueError, CheckpointError) as e:
            _fail(str(e))
            return
        print(grid)
        return
    if source is None:
        _fail("give an audio or video file, a folder, or --data BUILD")
    if not source.exists():
        _fail(f"{path_shown(source)}: no such file or folder")
    if source.is_dir() and out_dir is None:
        _fail("a folder needs --out-dir (a grid per file is written there)")
    try:
        tr = load_model(run, device)
    except (RunError, CheckpointError) as e:
        _fail(str(e))
        return
    if not hasattr(tr, "sound_pictures"):  # the real-frames reference row shows a test sound's own frame
        _fail(f"{path_shown(run)} is the real-frames reference: it draws no pictures from a sound "
              "(imagine --data BUILD shows its frames)")
    tr = _accelerated(tr, fast, precision)
    if source.is_dir():
        if not media_files(source):
            _fail(f"{source}: no audio or video files")
        done = skipped = 0
        for _, grid, reason in imagine_folder(tr, source, out_dir, n, max_windows, seed):
            if grid is None:
                console.print(f"[yellow]skipped:[/yellow] {escape(reason)}", highlight=False)
                skipped += 1
            else:
                print(path_shown(grid), flush=True)  # one line per file, whatever its name holds
                done += 1
        if skipped:
            console.print(f"imagined {done} of {done + skipped} files ({skipped} skipped)", highlight=False)
        if not done:
            raise typer.Exit(1)
        return
    grid = output or Path(f"{source.stem}.imagined.png")
    try:
        imagine_file(tr, source, n, grid, out_dir, max_windows, seed)
    except ImagineError as e:
        _fail(str(e), 1)
        return
    except OSError as e:  # the output side: unwritable folder, full disk, a name too long
        _fail(f"cannot write the pictures: {e.strerror or e} ({path_shown(e.filename)})", 1)
        return
    print(path_shown(grid))


@app.command()
def live(
    source: Optional[str] = typer.Argument(None, help="a stream URL, a file (with --realtime: as if live), a device "
                                           "(with --format), - for raw 16 kHz mono s16le PCM on stdin; "
                                           "none: the default microphone"),
    run: Path = typer.Option(..., help="a run folder with a trained model"),
    n: int = typer.Option(1, "-n", min=1, help="pictures per window (test-time dropout makes them differ)"),
    hop: float = typer.Option(0.5, help="seconds between pictures"),
    quiet_db: float = typer.Option(-50.0, help="windows quieter than this (RMS, dBFS) show 'quiet'"),
    gate: Optional[float] = typer.Option(None, help="with a class line: pictures below this confidence are hidden "
                                         "(default: twice chance, 2 / classes, for a frame classifier; 0.5 for judges)"),
    classifier: Optional[str] = typer.Option(None, help="a frame classifier (default RUN/frame-classifier.pt "
                                             "when s2i-model evaluate left one)"),
    informativity: Optional[str] = typer.Option(None, help="informativity judges (s2i-model train-informativity): "
                                                "the class line is the class whose judge finds the pictures most informative"),
    port: int = typer.Option(8766, help="the page's port (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="127.0.0.1: this machine only"),
    record: Optional[Path] = typer.Option(None, help="write every picture and DIR/live.jsonl here: a new or empty "
                                          "folder (one that holds anything is refused: nothing is replaced)"),
    realtime: bool = typer.Option(False, "--realtime", help="a file or stdin read at its own speed, as if live"),
    format: Optional[str] = typer.Option(None, "--format", help="ffmpeg input format of a device (pulse, alsa, ...)"),
    pcm_rate: int = typer.Option(16000, help="sample rate of the PCM on stdin"),
    stall_timeout: float = typer.Option(10.0, help="give up after this many seconds without sound from the input"),
    mic: Optional[str] = typer.Option(None, help="a microphone other than the default (python -m sounddevice lists them)"),
    open_page: bool = typer.Option(True, "--open/--no-open", help="open the page in a browser (when there is a display)"),
    threads: int = typer.Option(1, min=0, help="torch threads (0: torch's default; 1 keeps latency steady on a busy CPU)"),
    fast: str = typer.Option("auto", help=FAST_HELP),
    precision: str = typer.Option("auto", help="the fast path's precision: auto (bf16 where the CPU computes it "
                                  "natively) | fp32 | bf16"),
    seed: int = typer.Option(0), device: str = typer.Option("auto"),
) -> None:
    """A picture every hop of what is sounding now, on a local web page (ends when the input ends)."""
    from s2i_model.checkpoint import CheckpointError
    from s2i_model.live.record import RecordError
    from s2i_model.live.session import LiveError, LiveOptions, open_page_in_browser, run_session
    from s2i_model.live.sources import SourceError
    from s2i_model.run import RunError

    opts = LiveOptions(run=str(run), input=source, n=n, hop=hop, quiet_db=quiet_db, gate=gate, classifier=classifier,
                       informativity=informativity,
                       host=host, port=port, record=str(record) if record else None, realtime=realtime, format=format,
                       pcm_rate=pcm_rate, stall_timeout=stall_timeout, mic=mic, device=device, seed=seed,
                       threads=threads, fast=fast, precision=precision)
    try:
        summary = run_session(opts, log=lambda s: print(s, flush=True),
                              on_ready=open_page_in_browser if open_page else None)
    except (LiveError, SourceError, RecordError, RunError, CheckpointError) as e:
        _fail(str(e), 1)
        return
    except KeyboardInterrupt:
        print("stopped", flush=True)
        return
    if summary.error:  # with what was heard before, when anything was
        _fail(summary.error + (f" (after {summary.line()})" if summary.windows else ""), 1)
    print(f"input ended: {summary.line()}", flush=True)


@app.command()
def sample(
    run: list[Path] = typer.Option(..., help="a run folder with a trained model; repeat --run for several. Each "
                                   "picture's id starts with its run's folder name (RUN.KEY-sSEED-K), and the "
                                   "pool records each run's model"),
    out: Path = typer.Option(..., help="the pool folder (created, or grown if it exists; a pool from before ids "
                             "named their run cannot be grown)"),
    data: Optional[str] = typer.Option(None, help="the build (default: the one the runs were trained on)"),
    split: str = typer.Option("val", help="whose sounds to imagine from"),
    n: int = typer.Option(500, "-n", help="images to add, spread evenly over runs (or models), classes and sounds"),
    balance: str = typer.Option("runs", help="how -n is shared out: 'runs' (every run the same number of "
                                "pictures) or 'models' (every model the same number, shared among its runs). The "
                                "S2I paper kept the same number per model because a model leaves a fingerprint on "
                                "its pictures that judges would learn instead of the picture's content"),
    target: int = typer.Option(500, help="labels wanted per class and kind (SPEC 3.4: 500 + 500)"),
    seed: int = typer.Option(0, help="another seed adds other pictures to the same pool"),
    device: str = typer.Option("auto"),
    skip_bad_samples: bool = typer.Option(False, help="count, log and skip damaged samples or shards instead of stopping"),
) -> None:
    """Images to label: a pool of pictures generated from a split's sounds by one or several runs."""
    from s2i_data.readers import Build

    from s2i_model import run as run_folder
    from s2i_model.labelling.sampling import BALANCE, sample_pool

    if balance not in BALANCE:
        _fail(f"--balance {balance!r}: use one of {', '.join(BALANCE)}")
    if not data:
        builds = {str(_run_data(r)) for r in run}
        if len(builds) > 1:
            _fail(f"the runs were trained on different builds ({', '.join(sorted(builds))}): give --data")
        data = builds.pop()
    _check_data(data)
    try:
        res = sample_pool(run, Build.open(data, skip_bad=skip_bad_samples), split, n, out, seed=seed, target=target,
                          device=device, balance=balance)
    except (ValueError, OSError, run_folder.RunError) as e:
        _fail(str(e))
        return
    held = ", ".join(f"{m} {k}" for m, k in sorted(res["models"].items()))
    print(f"{res['added']} images added to {out} ({res['total']} in the pool; by model: {held}); "
          f"label them with: s2i-model label {out}")


@app.command()
def label(pool: Path = typer.Argument(..., help="a pool folder made by s2i-model sample"),
          port: int = typer.Option(8765), host: str = typer.Option("127.0.0.1", help="127.0.0.1: this machine only")) -> None:
    """A local web page to mark each pool image informative or not (labels saved on every click)."""
    from s2i_model.labelling.server import serve

    if not (pool / "pool.csv").is_file():
        _fail(f"{pool} is not a pool (no pool.csv): make one with s2i-model sample")
    try:
        serve(pool, host, port)
    except OSError as e:
        _fail(f"cannot serve on {host}:{port}: {e.strerror or e}")
    except ValueError as e:  # a pool.csv or labels.csv header that is not ours
        _fail(str(e), 1)


@app.command("train-informativity")
def train_informativity(
    labels: Path = typer.Option(..., help="a labelled pool folder"),
    out: Path = typer.Option(..., help="where the classifiers and their accuracies go"),
    epochs: int = typer.Option(100), batch_size: int = typer.Option(32), lr: float = typer.Option(0.001),
    momentum: float = typer.Option(0.9), weight_decay: float = typer.Option(5e-5),
    test_fraction: float = typer.Option(0.2, help="share of each class's labels held out for the accuracy"),
    seed: int = typer.Option(0), device: str = typer.Option("cpu"),
) -> None:
    """One binary informativity classifier per class (SPEC 3.4), accuracy per class."""
    from s2i_model.evaluate.informativity import InformativityConfig, train_informativity as run_train

    if not (labels / "pool.csv").is_file():
        _fail(f"{labels} is not a pool (no pool.csv)")
    cfg = InformativityConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                              weight_decay=weight_decay, test_fraction=test_fraction, seed=seed)
    try:
        summary = run_train(labels, out, cfg, device, log=lambda m: console.print(m, highlight=False))
    except (ValueError, OSError) as e:
        _fail(str(e), 1)
        return
    said = summary["pool_models"]
    console.print("judges learnt from pictures of: " + (", ".join(said) if said is not None else
                  "models the pool does not name (an older pool: its ids name no run)"), highlight=False)
    print(out / "informativity.json")


@app.command()
def evaluate(
    run: Path = typer.Option(..., help="a run folder with a trained translator"),
    data: Optional[str] = typer.Option(None, help="the build (default: the one the run was trained on)"),
    split: str = typer.Option("test"),
    samples: int = typer.Option(10, help="pictures per sound (test-time dropout)"),
    informativity: Optional[Path] = typer.Option(None, help="informativity classifiers (s2i-model train-informativity)"),
    fid_weights: Optional[Path] = typer.Option(None, help="the standard FID Inception (TorchScript inception-2015-12-05.pt) on disk"),
    proxy_cache: Optional[Path] = typer.Option(None, help="where the real-frame classifier is kept (default RUN/frame-classifier.pt)"),
    force: bool = typer.Option(False, help="measure again even if RUN/evaluation.json is up to date"),
    seed: int = typer.Option(0), device: str = typer.Option("auto"),
    skip_bad_samples: bool = typer.Option(False, help="count, log and skip damaged samples or shards instead of stopping"),
) -> None:
    """Informativity per class and mean, and the label-free proxies, into RUN/evaluation.json."""
    from s2i_model.evaluate.evaluation import EvalConfig, evaluate as run_eval
    from s2i_model.run import RunError, RunLockError

    if data is not None:
        _check_data(data)
    cfg = EvalConfig(run=str(run), data=str(data or ""), split=split, samples=samples,
                     informativity=str(informativity or ""), fid_weights=str(fid_weights or ""),
                     proxy_cache=str(proxy_cache or ""), seed=seed, device=device, skip_bad_samples=skip_bad_samples)
    try:
        res = run_eval(cfg, force=force, log=lambda m: console.print(m, highlight=False))
    except RunLockError as e:
        _fail(str(e), 2)
    except (ValueError, RunError, OSError) as e:
        _fail(str(e), 1)
        return
    _print_evaluation(res)
    print(run / "evaluation.json")


def _print_evaluation(res: dict) -> None:
    def pct(v):
        return "   –  " if v is None else f"{100 * v:5.1f}%"

    size = f", E = {res['emb']}" if res.get("emb") is not None else ""
    console.print(f"{res.get('model', registry.DEFAULT)}{size}, epoch {res['epoch']}, {res['split']} split, "
                  f"{res['samples_per_sound']} pictures a sound", highlight=False)
    console.print(f"{'class':<14}{'informativity':>14}{'agreement*':>12}{'full*':>8}{'fR@1*':>8}{'fR@5*':>8}"
                  f"{'diversity':>11}", highlight=False)
    for name, r in [*res["per_class"].items(), ("mean", res["mean"])]:
        div = r.get("diversity")
        console.print(f"{name:<14}{pct(r.get('informativity')):>14}{pct(r.get('class_agreement')):>12}"
                      f"{pct(r.get('class_agreement_full')):>8}{pct(r.get('frame_r1')):>8}{pct(r.get('frame_r5')):>8}"
                      f"{'–' if div is None else f'{div:.3f}':>11}", highlight=False)
    ci = ((res.get("intervals") or {}).get("mean") or {}).get("class_agreement")
    if ci:
        console.print(f"class agreement 95 % interval over the {res['intervals'].get('videos')} {res['split']} videos: "
                      f"{ci[0]:.1%} to {ci[1]:.1%}", highlight=False)
    judge = res.get("judge") or {}
    if judge:
        console.print(f"judges: {judge.get('folds')} folds, never trained on a judged video or a train frame; held-out "
                      "accuracy on the real frames " + ", ".join(
                          f"{k} {(judge.get(k) or {}).get('held_out_accuracy', 0):.1%}" for k in ("blurred", "full"))
                      + f" (headline: {judge.get('headline')})", highlight=False)
    _print_factors(res)
    sep = res.get("embedding_separability") or {}
    if sep.get("centroid") is not None:
        console.print(f"ceiling: the {res['split']} sounds' embeddings alone name their class {sep['centroid']:.1%} "
                      f"(nearest class centroid), {sep['nn1']:.1%} (nearest train embedding)", highlight=False)
    p = res["proxies"]
    console.print(f"* proxies (no human labels). Fréchet distance {p['frechet_distance']:.4g}, kernel distance "
                  f"{p['kernel_distance']:.4g} in the cross-fitted judges' features; fR@k: frame R@k (real frames, not CLIP)"
                  + (f"; Inception FID {p['fid_inception']:.4g}" if "fid_inception" in p else ""), highlight=False)


def _print_factors(res: dict) -> None:
    """Factor agreement per class and factor (a build of within-class factors, issue 28)."""
    block = res.get("factors")
    if not block:
        return

    def rho(v, ci=None) -> str:
        return "–" if v is None else f"{v:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")

    readers = (block.get("readers") or {}).get("per_factor") or {}
    console.print(f"factor agreement (Spearman ρ of true factors and those read in the pictures): "
                  f"{rho(block.get('mean'), block.get('interval'))}", highlight=False)
    console.print(f"{'class':<12}{'factor':<18}{'ρ [95 % interval]':>22}{'count acc.':>12}{'reader ρ (val)':>16}",
                  highlight=False)
    for name, f in block["per_factor"].items():
        acc = f"{100 * f['accuracy']:.1f}%" if f.get("accuracy") is not None else ""
        console.print(f"{f['class']:<12}{name:<18}{rho(f['spearman'], f.get('interval')):>22}{acc:>12}"
                      f"{rho((readers.get(name) or {}).get('val_spearman')):>16}", highlight=False)


def _run_data(run: Path) -> Path:
    from s2i_model import run as run_folder

    try:
        _, state = run_folder.model_state(run)
    except (run_folder.RunError, run_folder.checkpoint.CheckpointError) as e:
        _fail(str(e), 1)
    cfg = state.get("config")
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(data, str) or not data or "\0" in data:  # somebody's checkpoint: a string or nothing
        _fail(f"{run}: its checkpoint names no build (config.data); give --data BUILD", 1)
    return data


@app.command()
def report(runs: Path = typer.Argument(..., help="a folder of evaluated runs (e.g. runs/sweep)"),
           output: Path = typer.Option(..., "-o", "--output", help="report folder (index.html, plots)")) -> None:
    """Plots and an HTML page comparing evaluated runs: embedding sizes (make sweep), or models (make compare)."""
    from s2i_model.evaluate.report import write_report

    try:
        write_report(runs, output)
    except (ValueError, OSError) as e:
        _fail(str(e), 1)
        return
    print(output / "index.html")


def main() -> None:
    from s2i_data.cliutil import run_app
    from s2i_data.readers import SampleError
    from s2i_data.untrusted import Untrusted

    from s2i_model.checkpoint import CheckpointError
    from s2i_model.run import RunError

    run_app(app, console, "interrupted: re-run the same command to resume from the last checkpoint",
            expected=(CheckpointError, SampleError, RunError, Untrusted, OSError))


if __name__ == "__main__":
    main()
