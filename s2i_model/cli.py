"""`s2i-model`: a thin typer wrapper over the networks, the trainers and imagine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The Sound-to-Imagination translator: describe, train, imagine.")
console = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


@app.command()
def describe(emb: int = typer.Option(512, help="embedding size E"),
             width: float = typer.Option(1.0, help="channel width multiplier")) -> None:
    """JSON: conv layers and parameters of each network."""
    from .nets import AudioAutoencoder, DenseGenerator, Discriminator, InformativityClassifier
    from .nets.blocks import conv_layers, n_params

    try:
        ae = AudioAutoencoder(emb, width)
        nets = {"autoencoder.encoder": ae.encoder, "autoencoder.decoder": ae.decoder,
                "generator": DenseGenerator(emb, width), "discriminator": Discriminator(emb, width),
                "informativity_classifier": InformativityClassifier()}
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
        return
    print(json.dumps({k: {"conv_layers": conv_layers(m), "params": n_params(m)} for k, m in nets.items()}, indent=2))


def _check_data(data: Path) -> None:
    if not (data / "stats.json").is_file():
        _fail(f"{data} holds no s2i-data build (no stats.json): build shards first with s2i-data build")


@app.command("train-autoencoder")
def train_autoencoder(
    data: Path = typer.Option(..., help="an s2i-data build"),
    run: Path = typer.Option(..., help="run folder (checkpoints, metrics, grids); resumed if it exists"),
    emb: int = typer.Option(512, help="embedding size E"),
    width: float = typer.Option(1.0, help="channel width multiplier (1.0: the paper's network)"),
    epochs: int = typer.Option(1000), batch_size: int = typer.Option(64), lr: float = typer.Option(0.05),
    momentum: float = typer.Option(0.9), seed: int = typer.Option(0), workers: int = typer.Option(2),
    optimizer: str = typer.Option("sgd", help="sgd (the paper's) or adam (short CPU runs)"),
    adam_lr: float = typer.Option(1e-3, help="learning rate when --optimizer adam"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Stage 1: the audio autoencoder on the train split's spectrograms."""
    from .config import AutoencoderConfig
    from .train_autoencoder import TrainingError, train_autoencoder as run_train

    _check_data(data)
    cfg = AutoencoderConfig(data=str(data), run=str(run), emb=emb, width=width, epochs=epochs,
                            batch_size=batch_size, lr=lr, momentum=momentum, seed=seed, workers=workers,
                            optimizer=optimizer, adam_lr=adam_lr, device=device)
    try:
        run_train(cfg, log=lambda m: console.print(m, highlight=False))
    except (TrainingError, ValueError) as e:
        _fail(str(e), 1)


@app.command("train-translator")
def train_translator(
    data: Path = typer.Option(..., help="an s2i-data build"),
    run: Path = typer.Option(..., help="run folder holding the trained autoencoder"),
    epochs: int = typer.Option(4000), batch_size: int = typer.Option(64),
    lr_g: float = typer.Option(0.1), lr_d: float = typer.Option(0.1),
    momentum_g: float = typer.Option(0.5), momentum_d: float = typer.Option(0.5),
    n_gd: int = typer.Option(5, help="generator updates per discriminator update"),
    lam: float = typer.Option(0.1, help="weight of the moving-average adversarial loss"),
    ma_k: int = typer.Option(10, help="epochs in the moving average (the paper does not give k)"),
    grid_every: int = typer.Option(10, help="epochs between validation image grids"),
    optimizer: str = typer.Option("sgd", help="sgd (the paper's) or adam (short CPU runs)"),
    adam_lr: float = typer.Option(1e-3, help="learning rate of G and D when --optimizer adam"),
    seed: int = typer.Option(0), workers: int = typer.Option(2), device: str = typer.Option("auto"),
) -> None:
    """Stage 2: generator and discriminator on the frozen encoder's embeddings."""
    from .config import TranslatorConfig
    from .train_translator import TrainingError, train_translator as run_train

    _check_data(data)
    cfg = TranslatorConfig(data=str(data), run=str(run), epochs=epochs, batch_size=batch_size, lr_g=lr_g,
                           lr_d=lr_d, momentum_g=momentum_g, momentum_d=momentum_d, n_gd=n_gd, lam=lam,
                           ma_k=ma_k, grid_every=grid_every, optimizer=optimizer, adam_lr=adam_lr, seed=seed,
                           workers=workers, device=device)
    try:
        run_train(cfg, log=lambda m: console.print(m, highlight=False))
    except (TrainingError, ValueError) as e:
        _fail(str(e), 1)


@app.command()
def imagine(
    source: Optional[Path] = typer.Argument(None, help="an audio or video file (wav, flac, mp3, ogg, mp4, mov, ...) or a folder"),
    run: Path = typer.Option(..., help="a run folder with a trained translator"),
    data: Optional[Path] = typer.Option(None, help="instead of a file: the sounds of a built split (with --split)"),
    split: str = typer.Option("test", help="with --data: the split whose sounds to imagine from"),
    n: int = typer.Option(8, "-n", help="images per 1 s window"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG grid (single file; default <name>.imagined.png)"),
    out_dir: Optional[Path] = typer.Option(None, help="also write every image here (needed for a folder)"),
    max_windows: int = typer.Option(60, help="at most this many windows per file, evenly spread"),
    seed: int = typer.Option(0, help="seed of the dropout noise"),
    device: str = typer.Option("auto"),
) -> None:
    """Pictures of what could be making a sound: a grid with a row per 1 s window."""
    from .imagine import ImagineError, Translator, imagine_file, imagine_split, media_files
    from .train_autoencoder import TrainingError

    if data is not None:  # a grid from a build's own held-out sounds, real frame first
        _check_data(data)
        try:
            grid = imagine_split(Translator.load(run, device), data, split, output or Path(f"{split}.imagined.png"),
                                 n=n, seed=seed)
        except (TrainingError, ImagineError, ValueError) as e:
            _fail(str(e))
            return
        print(grid)
        return
    if source is None:
        _fail("give an audio or video file, a folder, or --data BUILD")
    if not source.exists():
        _fail(f"{source}: no such file or folder")
    if source.is_dir() and out_dir is None:
        _fail("a folder needs --out-dir (a grid per file is written there)")
    try:
        tr = Translator.load(run, device)
    except TrainingError as e:
        _fail(str(e))
        return
    if source.is_dir():
        files = media_files(source)
        if not files:
            _fail(f"{source}: no audio or video files")
        failed = 0
        for f in files:
            try:
                grid = imagine_file(tr, f, n, out_dir / f"{f.stem}.png", out_dir / f.stem, max_windows, seed)
                print(grid)
            except ImagineError as e:
                console.print(f"[yellow]skipped:[/yellow] {e}", highlight=False)
                failed += 1
        if failed == len(files):
            raise typer.Exit(1)
        return
    try:
        grid = imagine_file(tr, source, n, output or Path(f"{source.stem}.imagined.png"), out_dir, max_windows, seed)
    except ImagineError as e:
        _fail(str(e), 1)
        return
    print(grid)


def main() -> None:
    from s2i_data.cliutil import run_app

    run_app(app, console, "interrupted: re-run the same command to resume from the last checkpoint")


if __name__ == "__main__":
    main()
