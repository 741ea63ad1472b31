"""`s2i-model`: a thin typer wrapper over the networks, the trainers and imagine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console

from s2i_data.cliutil import fail, require_build

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The Sound-to-Imagination translator: describe, train, imagine.")
console = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(console, message, code)


@app.command()
def describe(emb: int = typer.Option(512, help="embedding size E"),
             width: float = typer.Option(1.0, help="channel width multiplier"),
             flops: bool = typer.Option(False, "--flops", help="also multiply-adds per sample of each network "
                                        "and of a training step of each stage (counted over a pass)"),
             model: str = typer.Option("s2i", help="s2i, aivae, aivaegan, mmgan or sound2scene"),
             latent: int = typer.Option(64, help="aivae / aivaegan: latent size")) -> None:
    """JSON: conv layers and parameters of each network (with --flops, their multiply-adds)."""
    from s2i_model.nets import AudioAutoencoder, DenseGenerator, Discriminator, InformativityClassifier
    from s2i_model.nets.blocks import conv_layers, n_params

    if model in ("mmgan", "sound2scene"):
        from s2i_model.nets.aivae import layer_table

        if flops:
            _fail("--flops counts the S2I networks only")
        if width <= 0:
            _fail("--width must be above 0")
        if model == "mmgan":
            from s2i_model.nets.mmgan import networks as mmgan_networks

            nets = mmgan_networks(5, width)  # class heads sized for the five classes of the built-in data
        else:
            from s2i_model.nets.sound2scene import networks as s2s_networks

            nets = s2s_networks(width)
        print(json.dumps({k: {"conv_layers": conv_layers(m), "params": n_params(m), "layers": layer_table(m)}
                          for k, m in nets.items()}, indent=2, ensure_ascii=False))
        return
    if model != "s2i":
        from s2i_model.nets.aivae import MODELS, layer_table, networks

        if model not in MODELS:
            _fail(f"--model must be s2i, {', '.join(MODELS)}, mmgan or sound2scene, not {model!r}")
        if flops:
            _fail("--flops counts the S2I networks only")
        if latent < 1 or width <= 0:
            _fail("--latent must be at least 1 and --width above 0")
        nets = networks(model, latent, width)
        print(json.dumps({k: {"conv_layers": conv_layers(m), "params": n_params(m), "layers": layer_table(m)}
                          for k, m in nets.items()}, indent=2, ensure_ascii=False))
        return
    try:
        ae = AudioAutoencoder(emb, width)
        nets = {"autoencoder.encoder": ae.encoder, "autoencoder.decoder": ae.decoder,
                "generator": DenseGenerator(emb, width), "discriminator": Discriminator(emb, width),
                "informativity_classifier": InformativityClassifier()}
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
        return
    out = {k: {"conv_layers": conv_layers(m), "params": n_params(m)} for k, m in nets.items()}
    if flops:
        from s2i_model.config import TranslatorConfig
        from s2i_model.train.flops import net_macs, training_macs

        for k, macs in net_macs(emb, width).items():
            out[k]["macs_per_sample"] = macs
        cfg = TranslatorConfig()
        out["training_macs_per_sample"] = training_macs(emb, width, n_gd=cfg.n_gd, lam=cfg.lam)
    print(json.dumps(out, indent=2, ensure_ascii=False))


def _check_data(data: str) -> None:
    require_build(console, data, "stats.json", "build shards first with s2i-data build")


# ---- options every trainer takes, defined once (typer reads them and never changes them); each
# command's parameters carry the names of its config's fields, so `_train` builds the config from them
_RUN_HELP = ("run folder (checkpoints, metrics, grids); resumed if it exists (--run-dir under torchrun, whose own "
             "parser claims --run)")
_DATA = typer.Option(..., help="an s2i-data build: a folder or an fsspec URL (s3://, gs://, ...)")
_RUN = typer.Option(..., "--run", "--run-dir", help=_RUN_HELP)
_SEED = typer.Option(0)
_WORKERS = typer.Option(2, help="DataLoader processes reading shards")
_DEVICE = typer.Option("auto", help="auto | cpu | cuda")
_SHARD_URL = typer.Option("", help='open shards through a template, e.g. "pipe:curl -s https://host/b/{shard}"')
_CACHE_DIR = typer.Option("", help="keep remote shards here after their first read")
_SKIP_BAD = typer.Option(False, help="count, log and skip damaged samples or shards instead of stopping")
_PRECISION = typer.Option("fp32", help="fp32 (the papers'), bf16 or fp16 (autocast; fp16 with loss scaling, GPU only)")
_SYNC_BN = typer.Option(True, "--sync-bn/--no-sync-bn", help="under DDP on GPUs: BatchNorm statistics over the global batch")
_DATA_ON_DEVICE = typer.Option("auto", help="auto | on | off: hold the split in device memory (auto: when it fits)")
_GRID_EVERY = typer.Option(10, min=0, help="training epochs between validation image grids (0: none)")
_OPTIMIZER = typer.Option("sgd", help="sgd (the paper's) or adam (short CPU runs)")


def _train(config_cls, train, options: dict, **overrides) -> None:
    """Run ``train`` on ``config_cls`` built from a command's options; bad data or runs get one line
    (exit 2 when another process writes the run folder, as for two builds into one folder)."""
    from s2i_model.run import RunError, RunLockError

    fields = {f.name for f in dataclasses.fields(config_cls)}
    if unknown := set(options) - fields:  # a programming error: an option no config field receives
        raise TypeError(f"{config_cls.__name__} has no field for {sorted(unknown)}")
    _check_data(str(options["data"]))
    cfg = config_cls(**{**options, "data": str(options["data"]), "run": str(options["run"]), **overrides})
    try:
        train(cfg, log=lambda m: console.print(m, highlight=False))
    except RunLockError as e:
        _fail(str(e), 2)
    except (RunError, ValueError) as e:
        _fail(str(e), 1)


@app.command("train-autoencoder")
def train_autoencoder(
    data: str = _DATA, run: Path = _RUN,
    emb: int = typer.Option(512, help="embedding size E"),
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the paper's network)"),
    epochs: int = typer.Option(1000), batch_size: int = typer.Option(64), lr: float = typer.Option(0.05),
    momentum: float = typer.Option(0.9), seed: int = _SEED, workers: int = _WORKERS, optimizer: str = _OPTIMIZER,
    adam_lr: float = typer.Option(1e-3, help="learning rate when --optimizer adam"),
    device: str = _DEVICE, shard_url: str = _SHARD_URL, cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD,
    precision: str = _PRECISION, sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
) -> None:
    """Stage 1: the audio autoencoder on the train split's spectrograms."""
    options = dict(locals())  # the command's options only: taken before the imports below add names
    from s2i_model.config import AutoencoderConfig
    from s2i_model.train.autoencoder import train_autoencoder as train

    _train(AutoencoderConfig, train, options)


@app.command("train-translator")
def train_translator(
    data: str = _DATA,
    run: Path = typer.Option(..., "--run", "--run-dir", help="run folder holding the trained autoencoder "
                             "(--run-dir under torchrun)"),
    epochs: int = typer.Option(4000), batch_size: int = typer.Option(64),
    lr_g: float = typer.Option(0.1), lr_d: float = typer.Option(0.1),
    momentum_g: float = typer.Option(0.5), momentum_d: float = typer.Option(0.5),
    n_gd: int = typer.Option(5, help="generator updates per discriminator update"),
    d_schedule: str = typer.Option("step", help="step: D once every n_gd G steps; epoch: D through every n_gd-th epoch"),
    lam: float = typer.Option(0.1, help="weight of the moving-average adversarial loss"),
    ma_k: int = typer.Option(10, min=1, help="k: epochs in the moving-average adversarial loss (the paper does not give k; "
                             "the batch term carries 1/k of λ's weight)"),
    grid_every: int = _GRID_EVERY, optimizer: str = _OPTIMIZER,
    adam_lr: float = typer.Option(1e-3, help="learning rate of G and D when --optimizer adam"),
    informativity: Optional[Path] = typer.Option(None, help="informativity classifiers: measure informativity every epoch"),
    informativity_every: int = typer.Option(1, min=1, help="epochs between informativity measurements"),
    informativity_samples: int = typer.Option(4, help="pictures per test sound for it"),
    seed: int = _SEED, workers: int = _WORKERS, device: str = _DEVICE, shard_url: str = _SHARD_URL,
    cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD, precision: str = _PRECISION,
    sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
    narrow_generator: str = typer.Option("auto", help="below width 1: auto | on: dropout scaled to the width and no "
                                         "BatchNorm before the RGB output (docs/training.md); off: the paper's network"),
) -> None:
    """Stage 2: generator and discriminator on the frozen encoder's embeddings."""
    options = dict(locals())
    from s2i_model.config import TranslatorConfig
    from s2i_model.train.translator import train_translator as train

    if d_schedule not in ("step", "epoch"):
        _fail(f"--d-schedule must be step or epoch, not {d_schedule!r}")
    if informativity is not None and not (informativity / "informativity.pt").is_file():
        _fail(f"{informativity} holds no informativity classifiers: run s2i-model train-informativity first")
    _train(TranslatorConfig, train, options, informativity=str(informativity or ""))


@app.command("train-aivae")
def train_aivae(
    data: str = _DATA, run: Path = _RUN,
    latent: int = typer.Option(64, help="latent size (the paper's 64)"),
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the paper's widths)"),
    epochs: int = typer.Option(100), batch_size: int = typer.Option(128), lr: float = typer.Option(1e-3),
    grid_every: int = _GRID_EVERY, seed: int = _SEED, workers: int = _WORKERS, device: str = _DEVICE,
    shard_url: str = _SHARD_URL, cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD,
    precision: str = _PRECISION, sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
) -> None:
    """AIVAE (paper 002): a VAE from the sound to its picture, trained on the ELBO (docs/models.md)."""
    options = dict(locals())
    from s2i_model.train.aivae import AivaeConfig, train_vae

    _train(AivaeConfig, train_vae, options)


@app.command("train-aivaegan")
def train_aivaegan(
    data: str = _DATA, run: Path = _RUN,
    alpha: float = typer.Option(2.0, help="weight of the reconstruction term (the paper: 0.2, 0.5, 1, 2)"),
    latent: int = typer.Option(64, help="latent size (the paper's 64)"),
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the paper's widths)"),
    epochs: int = typer.Option(100), batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-4, help="the generator's (encoder + decoder) learning rate"),
    lr_d: float = typer.Option(2e-4, help="the discriminator's learning rate"),
    grid_every: int = _GRID_EVERY, seed: int = _SEED, workers: int = _WORKERS, device: str = _DEVICE,
    shard_url: str = _SHARD_URL, cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD,
    precision: str = _PRECISION, sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
) -> None:
    """AIVAEGAN (paper 002): AIVAE's deeper variant against an image discriminator (docs/models.md)."""
    options = dict(locals())
    from s2i_model.train.aivae import AivaeganConfig, train_vae

    _train(AivaeganConfig, train_vae, options)


@app.command("train-mmgan")
def train_mmgan(
    data: str = _DATA, run: Path = _RUN,
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the widths in nets/mmgan.py)"),
    epochs_features: int = typer.Option(30, help="stage 1: the frame and sound encoders on the class labels"),
    epochs_multimodal: int = typer.Option(30, help="stage 2: the multimodal layers"),
    epochs: int = typer.Option(200, help="stage 3: the two stacked cGANs (pix2pix's 200)"),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(2e-4, help="the cGANs' G and D learning rate (pix2pix)"),
    lr_features: float = typer.Option(1e-3), lr_multimodal: float = typer.Option(1e-3),
    d_weight: float = typer.Option(0.001, help="weight of the Ds' loss (the paper's 0.001)"),
    l1_weight: float = typer.Option(100.0, help="pix2pix's λ on the L1 to each target"),
    grid_every: int = typer.Option(10, min=0, help="cGAN epochs between validation image grids (0: none)"), seed: int = _SEED, workers: int = _WORKERS, device: str = _DEVICE,
    shard_url: str = _SHARD_URL, cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD,
    precision: str = _PRECISION, sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
) -> None:
    """The multimodal-feature GAN (paper 004): feature extractors and multimodal layers trained on the
    build's class labels, then two stacked U-Net cGANs (docs/models.md)."""
    options = dict(locals())
    from s2i_model.train.mmgan import MmganConfig, train_mmgan as train

    _train(MmganConfig, train, options)


@app.command("train-sound2scene")
def train_sound2scene(
    data: str = _DATA, run: Path = _RUN,
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the widths in nets/sound2scene.py)"),
    epochs_visual: int = typer.Option(100, help="stage 1: the frame encoder (SimCLR, frames only)"),
    epochs_generator: int = typer.Option(100, help="stage 2: the IC-GAN generator (frames only)"),
    epochs: int = typer.Option(50, help="stage 3: the audio encoder (the paper's 50, with early stopping)"),
    batch_size: int = typer.Option(64),
    lr_visual: float = typer.Option(1e-3), temperature: float = typer.Option(0.5, help="stage 1: NT-Xent's τ"),
    crop_scale: float = typer.Option(0.35, help="stage 1: smallest area of the random resized crop"),
    lr_g: float = typer.Option(1e-4, help="stage 2: G (BigGAN)"), lr_d: float = typer.Option(4e-4, help="stage 2: D"),
    d_steps: int = typer.Option(2, help="stage 2: D updates per G update (BigGAN)"),
    neighbours: int = typer.Option(50, help="stage 2: IC-GAN's k, the frames of an instance's neighbourhood"),
    lr: float = typer.Option(1e-3, help="stage 3 (the paper)"), weight_decay: float = typer.Option(1e-5),
    patience: int = typer.Option(10, help="stage 3: epochs without a better validation loss before it stops"),
    grid_every: int = typer.Option(10, min=0, help="epochs of stages 2 and 3 between validation image grids (0: none)"), seed: int = _SEED, workers: int = _WORKERS, device: str = _DEVICE,
    shard_url: str = _SHARD_URL, cache_dir: str = _CACHE_DIR, skip_bad_samples: bool = _SKIP_BAD,
    precision: str = _PRECISION, sync_bn: bool = _SYNC_BN, data_on_device: str = _DATA_ON_DEVICE,
) -> None:
    """Sound2Scene (paper 003) from scratch: a visual space (SimCLR) and an IC-GAN generator learnt
    from the train frames alone, then an audio encoder aligned to that space (docs/models.md)."""
    options = dict(locals())
    from s2i_model.train.sound2scene import Sound2SceneConfig, train_sound2scene as train

    _train(Sound2SceneConfig, train, options)


@app.command()
def reference(
    kind: str = typer.Argument(..., help="retrieval (nearest train frames in a model's audio space) or real (the "
                               "test sound's own frame)"),
    run: Path = typer.Option(..., "--run", "--run-dir", help="the reference's folder (evaluate it like a run)"),
    space: Optional[Path] = typer.Option(None, help="retrieval: the trained run whose audio space is searched"),
    data: str = typer.Option("", help="real: the build; retrieval: the build searched (default: the space's)"),
) -> None:
    """A reference row for `make compare`: copying instead of imagining, or the real frames (the
    ceiling). Writes RUN/reference.json; `evaluate --run RUN` then measures it like a model."""
    from s2i_model.evaluate.reference import write_reference
    from s2i_model.run import RunError

    if data:
        _check_data(data)
    try:
        record = write_reference(kind, run, data, space)
    except (RunError, ValueError) as e:
        _fail(str(e), 1)
    console.print(f"{run}: {record['model']} reference on {record['data']}"
                  + (f", in the audio space of {record['space']}" if record.get("space") else ""), highlight=False)


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
            grid = imagine_split(load_model(run, device), data, split, output or Path(f"{split}.imagined.png"),
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
                       threads=threads)
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
    run: Path = typer.Option(..., help="a run folder with a trained translator"),
    out: Path = typer.Option(..., help="the pool folder (created, or grown if it exists)"),
    data: Optional[str] = typer.Option(None, help="the build (default: the one the run was trained on)"),
    split: str = typer.Option("val", help="whose sounds to imagine from"),
    n: int = typer.Option(500, "-n", help="images to add, spread evenly over classes and sounds"),
    target: int = typer.Option(500, help="labels wanted per class and kind (SPEC 3.4: 500 + 500)"),
    seed: int = typer.Option(0, help="another seed adds other pictures to the same pool"),
    device: str = typer.Option("auto"),
    skip_bad_samples: bool = typer.Option(False, help="count, log and skip damaged samples or shards instead of stopping"),
) -> None:
    """Images to label: a pool of pictures generated from a split's sounds."""
    from s2i_data.readers import Build

    from s2i_model.labelling.sampling import sample_pool

    data = data or _run_data(run)
    _check_data(data)
    try:
        res = sample_pool(run, Build.open(data, skip_bad=skip_bad_samples), split, n, out, seed=seed, target=target,
                          device=device)
    except (ValueError, OSError) as e:
        _fail(str(e))
        return
    print(f"{res['added']} images added to {out} ({res['total']} in the pool); label them with: s2i-model label {out}")


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
        run_train(labels, out, cfg, device, log=lambda m: console.print(m, highlight=False))
    except (ValueError, OSError) as e:
        _fail(str(e), 1)
        return
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
    console.print(f"{res.get('model', 's2i')}{size}, epoch {res['epoch']}, {res['split']} split, "
                  f"{res['samples_per_sound']} pictures a sound", highlight=False)
    console.print(f"{'class':<14}{'informativity':>14}{'agreement*':>12}{'R@1*':>8}{'R@5*':>8}{'diversity':>11}", highlight=False)
    for name, r in [*res["per_class"].items(), ("mean", res["mean"])]:
        div = r.get("diversity")
        console.print(f"{name:<14}{pct(r.get('informativity')):>14}{pct(r.get('class_agreement')):>12}"
                      f"{pct(r.get('retrieval_r1')):>8}{pct(r.get('retrieval_r5')):>8}"
                      f"{'–' if div is None else f'{div:.3f}':>11}", highlight=False)
    sep = res.get("embedding_separability") or {}
    if sep.get("centroid") is not None:
        console.print(f"ceiling: the {res['split']} sounds' embeddings alone name their class {sep['centroid']:.1%} "
                      f"(nearest class centroid), {sep['nn1']:.1%} (nearest train embedding)", highlight=False)
    p = res["proxies"]
    console.print(f"* proxies (no human labels). Fréchet distance {p['frechet_distance']:.4g}, kernel distance "
                  f"{p['kernel_distance']:.4g} in the real-frame classifier's features"
                  + (f"; Inception FID {p['fid_inception']:.4g}" if "fid_inception" in p else ""), highlight=False)


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
