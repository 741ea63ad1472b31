"""`s2i-data`: a thin typer wrapper. It parses arguments, calls the library, prints tables.

Every anticipated failure (bad arguments, unreadable files, a foreign output folder) is turned
into one line on stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cliutil import fail, require_build

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audiovisual video collections → video-disjoint, class-balanced webdataset shards.")
console = Console(stderr=True, soft_wrap=True)  # one message, one line, whatever the width
out_console = Console(soft_wrap=True)  # a FAIL line stays one line, whatever the terminal


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(console, message, code)


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        _fail(f"{name} must be comma-separated numbers, got {text!r}")
        raise  # unreachable


class RichProgress:
    """Files, segments and throughput while building."""

    def __init__(self, enabled: bool) -> None:
        self.p = Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), console=console,
                          disable=not enabled, transient=False)
        self.tasks: dict[str, int] = {}
        self.t0: dict[str, float] = {}
        self.videos = 0
        self.total_videos = 0
        self.p.start()

    def start(self, phase: str, total: int, total_videos: int = 0, **_) -> None:
        self.total_videos = total_videos
        self.t0[phase] = time.time()
        label = "files" if phase == "probe" else "segments"
        self.tasks[phase] = self.p.add_task(f"{phase}", total=total, extra=label)

    def advance(self, phase: str, n: int = 1, videos: int = 0, **_) -> None:
        task = self.tasks[phase]
        self.p.advance(task, n)
        if phase == "extract":
            self.videos += videos
            done = self.p.tasks[task].completed
            rate = done / max(time.time() - self.t0[phase], 1e-9)
            self.p.update(task, extra=f"segments · {self.videos}/{self.total_videos} videos · {rate:.0f} seg/s")

    def stop(self) -> None:
        self.p.stop()


def _print_counts(counts, title: str) -> None:
    table = Table(title=title)
    table.add_column("split")
    for c in counts.columns:
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    for split, row in counts.iterrows():
        table.add_row(split, *[str(int(v)) for v in row], str(int(row.sum())))
    out_console.print(table)


@app.command()
def build(
    source: str = typer.Option("folders", help="folders (VEGAS-style ROOT/<class>/**/file), audioset or vggsound"),
    root: str = typer.Option(..., help="folder holding the videos, or an fsspec URL (s3://bucket/vegas, ...)"),
    classes: str = typer.Option(..., help="comma-separated aliases, display names or AudioSet ids"),
    out: str = typer.Option(..., help="output folder or fsspec URL (created; resumed when it holds this same build)"),
    csv: Optional[list[Path]] = typer.Option(None, help="AudioSet segment CSV or VGGSound CSV (repeatable)"),
    clips: bool = typer.Option(False, help="audioset: files named <YTID>.<ext> are already cut"),
    segment_seconds: float = typer.Option(1.0, help="segment length"),
    sample_rate: int = typer.Option(16000, help="audio rate of the log-mel front end"),
    image_size: int = typer.Option(96, help="side of the square centre frame"),
    splits: str = typer.Option("0.80,0.09,0.11", help="train,val,test proportions by video"),
    per_class: Optional[int] = typer.Option(None, help="samples per class and split (default: smallest class)"),
    seed: int = typer.Option(0, help="seed of the split, balance and shard order"),
    shard_size: int = typer.Option(1000, help="target samples per shard"),
    keep_audio: bool = typer.Option(False, "--keep-audio/--no-keep-audio", help="also store KEY.flac"),
    image_format: str = typer.Option("png", help="png (lossless) or jpg"),
    limit: Optional[int] = typer.Option(None, help="at most this many videos per class"),
    workers: int = typer.Option(0, help="parallel worker processes (0: all cores)"),
    executor: str = typer.Option("local", help="local (a process pool) or dask"),
    scheduler: Optional[str] = typer.Option(None, help="dask: tcp://HOST:8786 or a scheduler file (none: a LocalCluster)"),
    strict: bool = typer.Option(False, help="exit non-zero if any input was skipped or failed"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Probe, plan, extract and write the shards (re-run the same command to resume)."""
    from .build import BuildError, build as run_build
    from .classes import PackageDataError
    from .config import BuildConfig

    try:
        cfg = BuildConfig(source=source, root=str(root), csvs=[str(c) for c in csv or []], clips=clips,
                          classes=[c.strip() for c in classes.split(",") if c.strip()], out=str(out),
                          segment_seconds=segment_seconds, sample_rate=sample_rate, image_size=image_size,
                          splits=_floats(splits, "--splits"), per_class=per_class, seed=seed,
                          shard_size=shard_size, keep_audio=keep_audio, image_format=image_format,
                          limit=limit, workers=workers, strict=strict, progress=progress,
                          executor=executor, scheduler=scheduler)
        bar = RichProgress(progress and sys.stderr.isatty())
        try:
            result = run_build(cfg, progress=bar)
        finally:
            bar.stop()
    except (BuildError, ValueError, FileNotFoundError, PackageDataError) as e:  # the message names what failed
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    except OSError as e:  # the output side mid-build: a full disk, a folder gone; finished shards are kept
        _fail(f"cannot write {e.filename or 'the output'}: {e.strerror or e}; finished shards are kept, "
              "re-run the same command to resume", 1)
        return
    except KeyboardInterrupt:
        _fail("interrupted: finished shards are kept; re-run the same command to resume", 130)
        return
    _print_counts(result.counts, f"samples in {result.out}" + (" (resumed)" if result.resumed else ""))
    if result.unchanged:
        out_console.print("already complete: nothing written", highlight=False)
    problems = result.problems
    if len(problems):
        table = Table(title=f"{len(problems)} input(s) not used (all listed in videos.parquet)")
        for col in ("status", "class", "source", "reason"):
            table.add_column(col, overflow="fold")
        for _, r in problems.head(20).iterrows():
            table.add_row(r["status"], str(r["class"]), str(r["source"]), str(r["reason"]))
        if len(problems) > 20:
            table.add_row("…", "", f"{len(problems) - 20} more", "")
        out_console.print(table)
    for line in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    for name, err in result.failed_shards:
        console.print(f"[red]shard failed:[/red] {name}: {err}")
    if result.failed_shards:
        _fail(f"{len(result.failed_shards)} shard(s) failed; re-run the same command to retry them", 1)
    if strict and len(problems):
        _fail(f"--strict: {len(problems)} input(s) skipped or failed", 1)


@app.command()
def download(
    csv: Path = typer.Option(..., help="the rows: a VGGSound CSV, an AudioSet segment CSV, or ytid,start,end[,class]"),
    out: str = typer.Option(..., help="ROOT: clips go to ROOT/<class>/<ytid>_<start:06d>.mp4, the record to ROOT/download.parquet"),
    format: str = typer.Option("auto", "--format", help="auto, vggsound, audioset or plain (auto: from the first line)"),
    classes: str = typer.Option("", help="comma-separated classes to fetch (VGGSound labels, aliases, AudioSet names); audioset needs it"),
    url_template: str = typer.Option("https://www.youtube.com/watch?v={ytid}", help="URL of a video: {ytid} and {start} (6 digits) replaced (a mirror, a lab server)"),
    clips: bool = typer.Option(False, help="the URLs serve each window already cut (a mirror of clips): fetch the whole file"),
    max_height: int = typer.Option(360, help="video lines at most (plus the best audio)"),
    rate: str = typer.Option("2/s", help="requests at most, over all workers: 2/s, 30/min, 0 for unlimited"),
    workers: int = typer.Option(4, help="downloads at once (dask: LocalCluster processes when no --scheduler)"),
    attempts: int = typer.Option(4, help="tries per row for transient failures (429, resets, truncation)"),
    backoff: float = typer.Option(2.0, help="seconds before the first retry, doubled each time (a Retry-After wins when longer)"),
    retry_failed: bool = typer.Option(False, help="also retry rows recorded unavailable, private or removed"),
    cookies: Optional[Path] = typer.Option(None, help="a Netscape cookies.txt handed to yt-dlp"),
    executor: str = typer.Option("local", help="local (threads) or dask"),
    scheduler: Optional[str] = typer.Option(None, help="dask: tcp://HOST:8786 or a scheduler file (none: a LocalCluster)"),
    read_timeout: float = typer.Option(30.0, help="seconds a server may send nothing before its connection is cut (a transient error)"),
    min_speed: float = typer.Option(10.0, help="KB/s a server must send over --speed-window, else it is cut (0: no minimum)"),
    speed_window: float = typer.Option(60.0, help="seconds over which --min-speed is measured"),
    max_file_mb: float = typer.Option(2000.0, help="MB one attempt may receive (a whole file fetched to cut the window here)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Fetch the windows a CSV names with yt-dlp (re-run the same command to resume)."""
    from .download import DownloadConfig, DownloadError, download as run_download

    cfg = DownloadConfig(csv=str(csv), out=out, fmt=format, classes=[c.strip() for c in classes.split(",") if c.strip()],
                         url_template=url_template, clips=clips, max_height=max_height, rate=rate, workers=workers, attempts=attempts,
                         backoff_s=backoff, retry_failed=retry_failed, cookies=str(cookies) if cookies else None,
                         executor=executor, scheduler=scheduler, read_timeout_s=read_timeout, min_speed_kBps=min_speed,
                         speed_window_s=speed_window, max_file_mb=max_file_mb)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not (progress and sys.stderr.isatty()))
    task = bar.add_task("download", total=None)
    try:
        with bar:
            result = run_download(cfg, on_row=lambda rec: bar.advance(task))
    except DownloadError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt:
        _fail("interrupted: finished clips and their records are kept; re-run the same command to resume", 130)
        return
    table = Table(title=f"{sum(result.counts.values())} rows of {csv.name} in {result.root} ({result.done_now} attempted now)")
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, n in result.counts.items():
        if n:
            table.add_row(status, str(n))
    out_console.print(table)
    failures = result.failures[result.failures["status"] != "skipped"].head(10)
    for _, r in failures.iterrows():
        console.print(f"[yellow]{r['status']}[/yellow] {escape(str(r['key']))}: {escape(str(r['reason']))}", highlight=False)
    out_console.print(f"record: {result.root / 'download.parquet'}", highlight=False)


def _check_build(path: str) -> None:
    require_build(console, path, "build.json")


@app.command()
def verify(path: str = typer.Argument(..., help="a built output folder or an fsspec URL (s3://, gs://, ...)"),
           shard_url: str = typer.Option("", help='open shards through a template, e.g. "pipe:curl -s https://host/b/{shard}"'),
           cache_dir: str = typer.Option("", help="keep remote shards here after their first read"),
           deep: bool = typer.Option(False, "--deep", help="recompute every sample from its source (slow: two ffmpeg runs a sample)"),
           content_samples: int = typer.Option(2, min=0, help="without --deep: samples per split recomputed from their sources (0: none)")) -> None:
    """Read every shard back and check it against the manifests; non-zero exit on any violation.

    The content is checked too: a few samples per split (the same each run; --deep: all) are
    recomputed from their source files by separate ffmpeg runs and compared with the shards. A
    source that is gone is reported as "cannot check", not as a failure."""
    from .verify import verify as run_verify

    _check_build(path)
    try:
        report = run_verify(path, shard_url=shard_url or None, cache_dir=cache_dir or None, deep=deep,
                            content_samples=content_samples)
    except (OSError, ValueError) as e:
        _fail(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return
    for line in report.checks:
        out_console.print(f"[green]ok[/green]   {line}", highlight=False)
    for line in report.notes:
        out_console.print(f"[yellow]skip[/yellow] {line}", highlight=False)
    for line in report.errors:
        out_console.print(f"[red]FAIL[/red] {line}", highlight=False)
    if report.errors:
        raise typer.Exit(1)
    out_console.print(f"verified {report.samples} samples in {report.shards} shards")


@app.command()
def inspect(
    path: str = typer.Argument(..., help="a built output folder or an fsspec URL"),
    png: Optional[Path] = typer.Option(None, help="write a contact sheet (spectrogram | frame, a row per class)"),
    per_class: int = typer.Option(6, help="samples per class on the sheet"),
    split: str = typer.Option("train", help="split to draw the sheet from"),
    shard_url: str = typer.Option("", help='open shards through a template, e.g. "pipe:curl -s https://host/b/{shard}"'),
    cache_dir: str = typer.Option("", help="keep remote shards here after their first read"),
    colour_judge: bool = typer.Option(False, help="how far a frame's mean colour alone names its class "
                                      "(nearest class-mean colour of the train frames, judged on the test frames)"),
) -> None:
    """Counts per split × class, failures, and a contact sheet to look at."""
    from .inspect import colour_judge as judge_colour
    from .inspect import contact_sheet, summary

    _check_build(path)
    try:
        counts, problems = summary(path)
    except (OSError, ValueError) as e:
        _fail(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", 1)
        return
    _print_counts(counts, f"samples in {path}")
    if len(problems):
        table = Table(title="inputs not used, by reason (details in videos.parquet)")
        for col in ("status", "reason", "inputs"):
            table.add_column(col, overflow="fold")
        for (status, reason), n in problems.groupby(["status", "reason"]).size().items():
            table.add_row(status, reason, str(n))
        out_console.print(table)
    if colour_judge:
        try:
            found = judge_colour(path)
        except (OSError, ValueError) as e:
            _fail(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", 1)
            return
        out_console.print(f"mean-colour judge: {found['accuracy']:.1%} of {found['frames']} test frames "
                          f"(chance {found['chance']:.0%})", highlight=False)
    if png:
        damaged: list[str] = []  # shards and samples that do not read: named, left off the sheet
        failure = None
        try:
            contact_sheet(path, png, per_class=per_class, split=split, shard_url=shard_url or None,
                          cache_dir=cache_dir or None, problems=damaged)
        except (ValueError, OSError) as e:
            failure = str(e)
        for line in damaged:
            out_console.print(f"[red]FAIL[/red] {line}", highlight=False)
        if failure:
            _fail(failure, 1)
        out_console.print(f"contact sheet: {png}")
        if damaged:
            raise typer.Exit(1)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="folder to create the videos in (ROOT/<class>/<class>_NNN.mp4)"),
    videos_per_class: int = typer.Option(12, help="videos per class"),
    classes: str = typer.Option("baby,dog,rail,fireworks,water", help="classes to make"),
    seed: int = typer.Option(0, help="seed: the same seed gives the same files"),
    workers: int = typer.Option(0, help="parallel encoders (0: all cores)"),
    preset: str = typer.Option("default", help="default, or factors: colour never names the class and each "
                               "class's factors are heard and seen (ROOT/factors.csv; docs/data.md)"),
) -> None:
    """Make the built-in synthetic audiovisual data set (real H.264 + AAC MP4 files)."""
    from .synth import synth as run_synth

    try:
        paths = run_synth(out, videos_per_class=videos_per_class,
                          classes=[c.strip() for c in classes.split(",") if c.strip()], seed=seed,
                          workers=workers or None, preset=preset)
    except (ValueError, RuntimeError) as e:
        _fail(str(e))
        return
    out_console.print(f"{len(paths)} videos in {out}")


def main() -> None:
    from s2i_data.cliutil import run_app

    from s2i_data.untrusted import Untrusted

    run_app(app, console, "interrupted", expected=(Untrusted, OSError))


if __name__ == "__main__":
    main()
