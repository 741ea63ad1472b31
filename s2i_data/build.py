"""The pipeline: sources → probe → plan (on disk) → shards → manifests.

Layout of an output folder (SPEC 2.6), plus ``_build/`` that makes a run resumable:
``_build/plan.parquet`` (every sample with its shard, written before any extraction),
``_build/probe.parquet`` (one row per input) and ``_build/shards/*.json`` (one stats file per
finished shard: the resume marker). Re-running the same command skips sources and probing,
finishes the shards without a stats file and rebuilds the manifests from the stats files; on a
build that is already complete it writes nothing at all. ``_build/lock`` (a folder) or
``_build/lease.json`` (a URL) keeps a second build out while one runs (see `lock`).

A folder source's ``ROOT/factors.csv`` (issue 28) is read and checked before the lock is taken;
its values join the probe table as ``factor_<name>`` columns, `plan` copies them onto every
sample, and so they reach the manifests, each KEY.json and, through the plan, a resumed build.
"""

from __future__ import annotations

# Up front, not in build_info: typer's option parsing imports it lazily too, and a process that
# drops its privileges after importing this module (tests/s2i_data/test_lock.py) can no longer
# read the interpreter's files. scipy used to import it here as a side effect.
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, factors, lock, media, plan, shards, storage, untrusted
# imported here, not where it is used: it runs before the output folder is checked, and a refusal
# must not need to read the package again (tests/s2i_data/test_lock.py: a private checkout)
from .sources.folders import read_factors
from .classes import resolve_classes
from .config import BuildConfig
from .executors import default_workers, make_executor
from .sources import VideoItem

BUILD_DIR = lock.BUILD_DIR
WRITE_PROBE = ".s2i-write-test-"


class BuildError(Exception):
    """Bad arguments or an output folder that cannot take this build: one line for the user."""


@dataclass
class BuildResult:
    out: Path
    counts: pd.DataFrame  # split × class
    videos: pd.DataFrame
    failed_shards: list[tuple[str, str]] = field(default_factory=list)
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)
    unchanged: bool = False  # the build was already complete: nothing was written

    @property
    def problems(self) -> pd.DataFrame:
        return self.videos[self.videos["status"] != "ok"]


def _write_json(path: Path, obj) -> None:
    storage.atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Parquet whose bytes depend only on the values: a fixed Arrow type per column (pandas may
    hold the same strings as object or str dtype) and no pandas metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_bool_dtype(col):
            typ = pa.bool_()
        elif pd.api.types.is_integer_dtype(col):
            typ = pa.int64()
        elif pd.api.types.is_float_dtype(col):
            typ = pa.float64()
        else:
            typ = pa.string()
        fields.append(pa.field(str(name), typ))
    table = pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False)
    storage.atomic_write(path, lambda p: pq.write_table(table.replace_schema_metadata(None), p))


# ----------------------------------------------------------------------------- sources

def collect_items(cfg: BuildConfig, class_infos,
                  sidecar: factors.Sidecar | None = None) -> tuple[list[VideoItem], dict[str, dict[str, float]]]:
    """The source's items (at most ``cfg.limit`` usable ones a class), and with a folder source's
    ``sidecar`` (ROOT/factors.csv) each matched video's factor values by video id; a video of a
    class with factors but no row is an item with a reason, before the limit picks."""
    values: dict[str, dict[str, float]] = {}
    if cfg.source == "folders":
        from .sources.folders import factor_items, prepare_folders, prepare_remote_folders

        items = (prepare_remote_folders(cfg.root, class_infos) if storage.is_remote(cfg.root)
                 else prepare_folders(Path(cfg.root), class_infos))
        if sidecar is not None:
            items, values = factor_items(items, cfg.root, sidecar, cfg.classes)
    elif cfg.source == "audioset":
        from .sources.audioset import prepare_audioset

        items = prepare_audioset([Path(c) for c in cfg.csvs], Path(cfg.root), class_infos, clips=cfg.clips)
    elif cfg.source == "vggsound":
        from .sources import vggsound

        csvs = [Path(c) for c in cfg.csvs]
        items, _ = vggsound.prepare_vggsound(csvs, Path(cfg.root),
                                             vggsound.resolve_vggsound(cfg.classes, vggsound.csv_labels(csvs)))
    else:
        raise BuildError(f"unknown --source {cfg.source!r}: use folders, audioset or vggsound")
    if cfg.limit:
        kept = []
        for alias in cfg.classes:
            mine = [it for it in items if it.cls == alias and it.reason is None]
            order = np.argsort(plan.video_hash(pd.Series([it.video_id for it in mine]), cfg.seed, "limit"))
            kept += [mine[i] for i in order[: cfg.limit]]
        items = kept + [it for it in items if it.reason is not None]
    return items, values


def root_factors(cfg: BuildConfig) -> factors.Sidecar | None:
    """A folder source's ``ROOT/factors.csv`` checked whole (`sources.folders.read_factors`), None
    without one (or for another source); a bad file is one line, raised before anything is written."""
    if cfg.source != "folders":
        return None
    try:
        return read_factors(cfg.root)
    except (untrusted.Untrusted, OSError, ValueError) as e:  # ValueError: an fsspec URL it cannot open
        raise BuildError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def factor_record(cfg: BuildConfig, sidecar: factors.Sidecar | None) -> dict | None:
    """build.json's ``factors``: the preset and the columns the samples carry (its factors of the
    build's classes, in the preset's order); None for a build without factors.csv."""
    if sidecar is None:
        return None
    return {"preset": sidecar.preset, "columns": [f.column for f in factors.of_classes(sidecar.preset, cfg.classes)]}


def check_factor_record(dest: str, cfg: BuildConfig, sidecar: factors.Sidecar | None) -> None:
    """Refuse to resume (or call complete) a build at ``dest`` planned without the factors that
    ROOT/factors.csv now gives, or with another preset or other columns: its plan holds the values
    it was planned with, and no others would reach its samples. (A factors.csv gone since is no
    reason: the plan keeps the values.) Reads only."""
    if sidecar is None:
        return
    try:
        old = storage.read_json(storage.join(dest, "build.json"))
    except (OSError, ValueError):  # none yet, or not ours: check_output says which
        return
    new = factor_record(cfg, sidecar)
    recorded = old.get("factors") if isinstance(old, dict) else None
    if isinstance(old, dict) and old.get("fingerprint") == cfg.fingerprint() and recorded != new:
        was = f"with factors {json.dumps(recorded, sort_keys=True)}" if recorded is not None else "without factors"
        raise BuildError(f"{dest} was planned {was}, but {storage.join(cfg.root, factors.SIDECAR)} now gives "
                         f"{json.dumps(new, sort_keys=True)}; choose another --out")


def add_factor_columns(probes: pd.DataFrame, values: dict[str, dict[str, float]], columns: list[str]) -> pd.DataFrame:
    """The probe table with a float64 column per factor: each video's value, NaN where it has none
    (another class's factor, a video skipped for lack of a row)."""
    probes = probes.copy()
    for c in columns:
        probes[c] = np.array([values.get(v, {}).get(c, np.nan) for v in probes["video_id"]], np.float64)
    return probes


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Probed several to one ffmpeg run up to this size: beyond it demuxing, not starting ffmpeg,
# is what a probe costs, and a run of big files would only near the probe timeout.
BATCH_PROBE_BYTES = 32 << 20


def _batchable(it: VideoItem) -> bool:
    """A local file with data and a UTF-8 name, not big: what `media.probe_many` may read."""
    if it.reason or not _utf8(it.source) or storage.is_remote(it.source):
        return False
    try:
        path = storage.local_path(it.source)
        return os.path.isfile(path) and 0 < os.path.getsize(path) <= BATCH_PROBE_BYTES
    except (OSError, ValueError):
        return False


def probe_items(items: list[VideoItem], workers: int, on_probe: Callable[[], None] | None = None) -> pd.DataFrame:
    """One row per item, status ok or skipped with the reason; probes run in parallel threads
    (each is an ffmpeg subprocess, so threads are enough).

    Local files are probed several to one ffmpeg run (`media.probe_many`: a process start is
    most of a short clip's probe); a file that run leaves undecided, or any file of a run that
    logged a warning, is probed alone, so every reason comes from `media.probe`. Once runs that
    fall back outnumber clean ones (a corpus that warns a lot), files are probed alone from then
    on: the waste stays within a couple of runs."""
    threads = max(1, workers * 2)

    def one(it: VideoItem, found: media.Probe | None = None) -> dict:
        row = {"video_id": it.video_id, "source": it.source, "class": it.cls, "status": "ok",
               "reason": "", "window_start_s": float(it.start_s), "window_end_s": np.nan}
        if it.reason:
            row.update(status="skipped", reason=it.reason)
        elif not _utf8(it.source):
            # Manifests are UTF-8 text: a name that is not cannot be recorded faithfully.
            row.update(status="skipped", source=it.source.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                       reason="file name is not valid UTF-8: rename the file")
        else:
            try:
                if found is None:
                    with storage.fetched(it.source) as local:
                        found = media.probe(local)
            except media.MediaError as e:
                row.update(status="skipped", reason=str(e))
            except (OSError, ValueError, UnicodeError) as e:  # unreadable path, odd bytes
                row.update(status="skipped", reason=f"cannot probe: {type(e).__name__}: {e}")
            except (media.FFmpegKilled, subprocess.TimeoutExpired) as e:
                row.update(status="failed", reason=str(e).splitlines()[0])
            else:
                pr = found
                # The usable window: the source's (an AudioSet start..end) within the span where
                # the file really has both sound and picture.
                start = max(float(it.start_s), pr.start_s)
                end = pr.end_s if it.end_s is None else min(float(it.end_s), pr.end_s)
                row.update(pr.as_row(), window_start_s=start, window_end_s=end)
                if it.start_s >= pr.end_s:
                    row.update(status="skipped",
                               reason=f"segment window starts at {it.start_s:.1f} s but the file ends at {pr.end_s:.2f} s")
        if on_probe:
            on_probe()
        return row

    runs = {"clean": 0, "fallback": 0}
    lock = threading.Lock()

    def unit(positions: list[int]) -> list[tuple[int, dict]]:
        group = [items[i] for i in positions]
        with lock:
            batching = len(group) > 1 and runs["fallback"] <= runs["clean"] + 1
        found: list[media.Probe | None] = [None] * len(group)
        if batching:
            found = media.probe_many([storage.local_path(it.source) for it in group])
            with lock:
                runs["clean" if any(f is not None for f in found) else "fallback"] += 1
        return [(i, one(it, f)) for i, it, f in zip(positions, group, found)]

    batchable = [i for i, it in enumerate(items) if _batchable(it)]
    # Runs small enough that every thread gets several: the last ones to finish are short.
    size = max(2, min(16, math.ceil(len(batchable) / (threads * 4))))
    units = [batchable[k : k + size] for k in range(0, len(batchable), size)]
    units += [[i] for i in sorted(set(range(len(items))) - set(batchable))]
    rows: list[dict] = [{}] * len(items)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done in pool.map(unit, units):
            for i, row in done:
                rows[i] = row
    columns = ["video_id", "source", "class", "status", "reason", "window_start_s", "window_end_s",
               *media.Probe.__dataclass_fields__]
    # The same columns whether or not any file probed fine (or there were no files at all).
    return pd.DataFrame(rows).reindex(columns=columns)


# ----------------------------------------------------------------------------- output folder

def check_output(out: Path, cfg: BuildConfig) -> bool:
    """True when ``out`` holds a plan of this very configuration (resume); raise if it holds
    another build or unrelated files; False when it is new or empty."""
    build_json = out / "build.json"
    if build_json.exists():
        old_cfg = _saved_config(build_json)
        if old_cfg.fingerprint() != cfg.fingerprint():
            a, b = old_cfg.identity(), cfg.identity()
            diff = ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(b) if a.get(k) != b.get(k))
            raise BuildError(f"{out} holds a different build ({diff}); choose another --out")
        return (out / BUILD_DIR / "plan.parquet").exists()
    # A write probe or a build.json.tmp-PID left by a run killed in the instant between its create
    # and its rename/unlink is ours.
    if out.exists() and any(p.name != BUILD_DIR and not p.name.startswith(WRITE_PROBE)
                            and not re.fullmatch(r"build\.json\.tmp-\d+", p.name) for p in out.iterdir()):
        raise BuildError(f"{out} is not empty and holds no s2i build; choose another --out")
    return False


def _saved_config(build_json: Path) -> BuildConfig:
    """The configuration an output's build.json records (the folder may come from elsewhere)."""
    try:
        old = untrusted.mapping(json.loads(build_json.read_text()), str(build_json))
        return BuildConfig.from_dict(untrusted.mapping(old.get("config", {}), f"{build_json}: config"))
    except (TypeError, ValueError) as e:  # JSON errors and Untrusted are ValueErrors
        raise BuildError(f"{build_json} is not the build.json of an s2i-data build ({str(e)[:120]}); "
                         "choose another --out") from None


def read_plan(work: Path, cfg: BuildConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(probes, samples) of a build being resumed, checked whole (`untrusted.plan_tables`) before
    a path is formed from them: an edited plan must not make a build write outside its folder. A
    build of factors (its build.json's ``factors``) keeps them: the plan's factor columns are
    checked too (`untrusted.factor_columns`), and the manifests are made from them again."""
    probes = pd.read_parquet(work / "probe.parquet")
    samples = pd.read_parquet(work / "plan.parquet")
    try:
        untrusted.plan_tables(samples, probes, str(work), cfg.classes, cfg.segment_seconds)
        where = str(work.parent / "build.json")
        build_json = untrusted.mapping(untrusted.json_value((work.parent / "build.json").read_bytes(), where), where)
        if "factors" in build_json:
            fs = untrusted.build_factors(build_json["factors"], f"{where}: factors")
            untrusted.factor_columns(samples, f"{work}/plan.parquet", fs)
            untrusted.factor_columns(probes, f"{work}/probe.parquet", fs, key="video_id",
                                     rows=(probes["status"] == "ok").to_numpy())
    except untrusted.Untrusted as e:
        raise BuildError(f"{e}; not resumed (remove {work} to plan afresh)") from None
    return probes, samples


def build_info(cfg: BuildConfig, factor_rec: dict | None = None) -> dict:
    md = importlib.metadata
    versions = {}
    for pkg in ("numpy", "pandas", "pyarrow", "webdataset", "pillow", "soundfile", "imageio-ffmpeg"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        ff = subprocess.run([media.ffmpeg_exe(), "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        ff = None
    info = {"tool": "s2i-data", "version": __version__, "fingerprint": cfg.fingerprint(),
            "config": cfg.to_dict(), "python": sys.version.split()[0], "platform": platform.platform(),
            "ffmpeg": ff, "libraries": versions}
    if cfg.source == "vggsound":
        from .sources.vggsound import SPLIT_RULE

        info["split_rule"] = SPLIT_RULE
    if factor_rec is not None:  # a build of within-class factors (ROOT/factors.csv, issue 28)
        info["factors"] = factor_rec
    return info


# ----------------------------------------------------------------------------- the pipeline

def make_tasks(samples: pd.DataFrame, probes: pd.DataFrame) -> list[shards.ShardTask]:
    by_video = probes.set_index("video_id")
    tasks = []
    for name, part in samples.groupby("shard", sort=True):
        videos = []
        for vid, rows in part.groupby("video_id", sort=True):
            info = by_video.loc[vid]
            videos.append({"video_id": vid, "source": info["source"],
                           "probe": media.Probe.from_row(info).as_row(),
                           "samples": [{k: _meta(k, v) for k, v in r.items()} for r in rows.to_dict("records")]})
        tasks.append(shards.ShardTask(name=name, videos=videos, order=part["key"].tolist()))
    # Big shards first: the last worker to finish is then not the one that started the biggest.
    tasks.sort(key=lambda t: -len(t.order))
    return tasks


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _meta(column: str, v):
    """A manifest value as KEY.json holds it: an empty factor (NaN in the manifest) is null, so
    that the JSON stays standard."""
    v = _plain(v)
    if column.startswith(factors.COLUMN_PREFIX) and isinstance(v, float) and math.isnan(v):
        return None
    return v


def shard_config(cfg: BuildConfig) -> dict:
    return {"segment_seconds": cfg.segment_seconds, "sample_rate": cfg.sample_rate,
            "image_size": cfg.image_size, "keep_audio": cfg.keep_audio, "image_format": cfg.image_format}


def validate(cfg: BuildConfig) -> BuildConfig:
    """Check and resolve the arguments; reads only, creates nothing."""
    if cfg.source in ("audioset", "vggsound"):
        if not cfg.csvs:
            raise BuildError(f"--source {cfg.source} needs at least one --csv")
        for c in cfg.csvs:
            if not Path(c).is_file():
                raise BuildError(f"--csv {c}: no such file")
        cfg.csvs = [str(Path(c).resolve()) for c in cfg.csvs]
    if cfg.source == "vggsound" and cfg.classes:
        from .sources import vggsound

        # VGGSound's classes are its CSV's labels (and the class table's aliases mapped to them)
        class_infos = [c.info for c in vggsound.resolve_vggsound(cfg.classes, vggsound.csv_labels(cfg.csvs))]
    else:
        class_infos = resolve_classes(cfg.classes) if cfg.classes else None
    if not class_infos:
        raise BuildError("--classes is required (e.g. --classes dog,rail)")
    cfg.classes = [c.alias for c in class_infos]
    if not cfg.root:
        raise BuildError("--root is required")
    if storage.is_remote(cfg.root):
        if cfg.source != "folders":
            raise BuildError("a --root URL works with --source folders; copy or mount an AudioSet tree")
    else:
        root = Path(storage.local_path(cfg.root)).expanduser()
        if not root.is_dir():
            raise BuildError(f"--root {cfg.root}: no such folder")
        cfg.root = str(root.resolve())
    if not storage.is_remote(cfg.out):
        cfg.out = str(Path(storage.local_path(cfg.out)).expanduser().resolve())
    return cfg


def prepare(cfg: BuildConfig) -> tuple[BuildConfig, Path, bool]:
    """Validate arguments and the output folder before any work; returns the resolved config.
    Takes no lock: `build` validates, locks, then opens the output."""
    return _open_output(validate(cfg))


def _open_output(cfg: BuildConfig) -> tuple[BuildConfig, Path, bool]:
    if storage.is_remote(cfg.out):
        out = _staging(cfg.out)
        _pull_plan(cfg.out, out)
        return cfg, out, check_output(out, cfg)
    out = Path(cfg.out)
    return cfg, out, check_output(out, cfg)


def _refuse_foreign(cfg: BuildConfig) -> None:
    """Refuse an output that holds something else before the lock or lease is put inside it."""
    if storage.is_remote(cfg.out):
        names = storage.listdir(cfg.out)
        if "build.json" not in names and [n for n in names if n != BUILD_DIR]:
            raise BuildError(f"{cfg.out} is not empty and holds no s2i build; choose another --out")
    elif Path(cfg.out).is_dir():
        check_output(Path(cfg.out), cfg)


def finished(dest: str, cfg: BuildConfig) -> bool:
    """True when ``dest`` (a folder or URL) already holds this very build, complete and
    consistent: build.json of this configuration, every planned shard with its tar and its
    marker, no partial shard, the manifests and a stats.json that says complete and lists
    exactly the planned shards and as many samples as the manifest has. Reads only."""
    try:
        old = storage.read_json(storage.join(dest, "build.json"))
        if BuildConfig.from_dict(old.get("config", {})).fingerprint() != cfg.fingerprint():
            return False
        stats = storage.read_json(storage.join(dest, "stats.json"))
        if not stats.get("complete") or stats.get("classes") != cfg.classes:
            return False
        planned = set(storage.read_parquet(storage.join(dest, BUILD_DIR, "plan.parquet"), columns=["shard"])["shard"])
        if planned != {n for sp in plan.SPLITS for n in stats["shards"].get(sp, [])}:
            return False
        top = set(storage.listdir(dest))
        work = set(storage.listdir(storage.join(dest, BUILD_DIR)))
        if not ({"manifest.parquet", "videos.parquet"} <= top and {"probe.parquet", "balance.json"} <= work):
            return False
        markers = set(storage.listdir(storage.join(dest, BUILD_DIR, "shards")))
        for split in plan.SPLITS:
            names = set(storage.listdir(storage.join(dest, split)))
            if any(n.startswith(".") and ".tmp-" in n for n in names):
                return False  # an interrupted shard: the normal path removes it
            mine = {os.path.basename(s) for s in planned if s.startswith(split + "/")}
            if not mine <= names or not {n.replace(".tar", ".json") for n in mine} <= markers:
                return False
        return storage.parquet_rows(storage.join(dest, "manifest.parquet")) == stats.get("samples")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def finished_result(dest: str, cfg: BuildConfig) -> BuildResult:
    """What a run would report, read back from a complete build."""
    stats = storage.read_json(storage.join(dest, "stats.json"))
    counts = (pd.DataFrame(stats["counts"]).T.reindex(index=list(plan.SPLITS), columns=cfg.classes, fill_value=0)
              .astype("int64"))
    videos = storage.read_parquet(storage.join(dest, "videos.parquet"))
    report = storage.read_json(storage.join(dest, BUILD_DIR, "balance.json"))
    return BuildResult(out=dest if storage.is_remote(dest) else Path(dest), counts=counts, videos=videos,
                       resumed=True, unchanged=True, warnings=balance_warnings(report))


def _check_writable(out: Path) -> None:
    # A real write, not os.access: root passes access() on a read-only folder, then fails later
    # with a traceback half-way through the plan.
    for folder in (out, out / BUILD_DIR):
        probe = folder / f"{WRITE_PROBE}{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
        except OSError as e:
            raise BuildError(f"--out {out} is not writable: {e.strerror}: {folder}") from None


# A build to a URL is planned in a local staging folder; workers upload each finished shard and
# then its stats file (the resume marker), and the manifests follow at the end, build.json last.
PLAN_FILES = ("build.json", f"{BUILD_DIR}/probe.parquet", f"{BUILD_DIR}/plan.parquet", f"{BUILD_DIR}/balance.json")
RESULT_FILES = ("manifest.parquet", "videos.parquet", "stats.json")


def _staging(url: str) -> Path:
    import hashlib

    base = Path(os.environ.get("S2I_STAGING", Path.home() / ".cache" / "s2i" / "staging"))
    return base / hashlib.sha1(url.rstrip("/").encode()).hexdigest()[:16]


def _pull_plan(url: str, staging: Path) -> None:
    """The remote build's plan, if it has one, into the staging folder (so a run anywhere resumes)."""
    names = storage.listdir(url)
    if "build.json" not in names:
        if [n for n in names if n != BUILD_DIR]:
            raise BuildError(f"{url} is not empty and holds no s2i build; choose another --out")
        return
    for name in PLAN_FILES:
        loc = storage.join(url, name)
        if storage.exists(loc):
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(storage.read_bytes(loc))


def _publish(staging: Path, url: str, names: tuple[str, ...]) -> None:
    for name in names:
        if (staging / name).exists():
            storage.put_file(str(staging / name), storage.join(url, name))


def build(cfg: BuildConfig, progress=None) -> BuildResult:
    """Build (or finish) the shards of ``cfg``. ``progress`` is an optional `Progress` sink."""
    try:
        executor = make_executor(cfg.executor, cfg.workers, cfg.scheduler)
    except ValueError as e:
        raise BuildError(str(e)) from None
    try:
        return _build(cfg, executor, progress)
    finally:
        executor.close()


def _build(cfg: BuildConfig, executor, progress) -> BuildResult:
    cfg = validate(cfg)
    _refuse_foreign(cfg)
    remote = storage.is_remote(cfg.out)
    sidecar = root_factors(cfg)  # a bad ROOT/factors.csv: one line, before the lock is taken
    check_factor_record(cfg.out, cfg, sidecar)
    # A complete build at a URL is recognised by reading alone: taking the lease would write.
    if remote and finished(cfg.out, cfg):
        return finished_result(cfg.out, cfg)
    guard = lock.Lease(cfg.out) if remote else lock.FolderLock(Path(cfg.out))
    try:
        guard.acquire()  # before anything is planned, probed or written
    except lock.LockError as e:
        raise BuildError(str(e)) from None
    try:
        result = _build_locked(cfg, executor, progress, guard, sidecar)
    finally:
        guard.release()
    result.warnings = guard.warnings + result.warnings
    return result


def _build_locked(cfg: BuildConfig, executor, progress, guard, sidecar: factors.Sidecar | None = None) -> BuildResult:
    cfg, out, resuming = _open_output(cfg)
    dest = cfg.out if storage.is_remote(cfg.out) else str(out)  # where shards and manifests go
    if resuming and finished(dest, cfg):
        return finished_result(dest, cfg)
    work = out / BUILD_DIR
    planned = read_plan(work, cfg) if resuming else None  # before anything is written
    if dest == str(out):
        _check_writable(out)
    guard.claim()
    executor.start()  # a cluster's start-up overlaps the probe and the plan
    workers = cfg.workers or default_workers()
    progress = progress or NullProgress()

    if planned is not None:
        probes, samples = planned
    else:
        items, values = collect_items(cfg, None if cfg.source == "vggsound" else resolve_classes(cfg.classes), sidecar)
        (work / "shards").mkdir(parents=True, exist_ok=True)
        progress.start("probe", len(items))
        probes = probe_items(items, workers, on_probe=lambda: progress.advance("probe"))
        factor_rec = factor_record(cfg, sidecar)
        if factor_rec is not None:
            probes = add_factor_columns(probes, values, factor_rec["columns"])
        if cfg.source == "vggsound":  # its own test split, and videos that must stay together
            from .sources import vggsound

            probes = vggsound.add_official_splits(probes, [Path(c) for c in cfg.csvs])
        videos, samples, report = plan.plan(probes, cfg)
        probes = videos
        _write_parquet(work / "probe.parquet", probes)
        _write_parquet(work / "plan.parquet", samples)
        _write_json(work / "balance.json", report)
        # build.json last: its presence with this fingerprint is what marks the plan as complete.
        _write_json(out / "build.json", build_info(cfg, factor_rec))
        if dest != str(out):
            _publish(out, dest, PLAN_FILES)

    tasks = make_tasks(samples, probes)
    _remove_partial_files(out)
    todo = [t for t in tasks if not shards.is_done(dest, t.name)]
    progress.start("extract", len(samples), total_videos=int((probes["segments"] > 0).sum()))
    progress.advance("extract", len(samples) - sum(len(t.order) for t in todo),
                     videos=sum(len(t.videos) for t in tasks) - sum(len(t.videos) for t in todo))
    failed = executor.run(shards.write_shard, todo, args=(dest, shard_config(cfg)),
                          on_done=lambda t, st: progress.advance("extract", len(t.order), videos=len(t.videos)))
    progress.stop()
    result = assemble(out, cfg, probes, samples, tasks, dest)
    if dest != str(out):
        _publish(out, dest, RESULT_FILES)
        result.out = dest
    result.failed_shards = [(t.name, err) for t, err in failed]
    result.resumed = resuming
    result.warnings = balance_warnings(json.loads((work / "balance.json").read_text()))
    return result


def balance_warnings(report: dict) -> list[str]:
    """Say why a split is empty: balance gives every class the smallest class's count."""
    out = []
    for split in plan.SPLITS:
        available = report["available"].get(split, {})
        empty = [c for c, n in available.items() if n == 0]
        if empty:
            out.append(f"{split} is empty: no usable segments for {', '.join(empty)} "
                       f"(a class needs at least 3 usable videos to reach every split)")
    return out


def _remove_partial_files(out: Path) -> None:
    # Temporary shards of an interrupted run: never valid, always redone.
    for split in plan.SPLITS:
        for p in (out / split).glob(".*.tmp-*") if (out / split).is_dir() else []:
            p.unlink(missing_ok=True)


def assemble(out: Path, cfg: BuildConfig, probes: pd.DataFrame, samples: pd.DataFrame,
             tasks: list[shards.ShardTask], dest: str | None = None) -> BuildResult:
    """Manifests and stats from the plan and what the shards report (only finished shards)."""
    dest = dest or str(out)
    stats = [storage.read_json(shards.stats_path(dest, t.name)) for t in tasks if shards.is_done(dest, t.name)]
    done_shards = {s["shard"] for s in stats}
    failed_keys = {f["key"]: f["reason"] for s in stats for f in s["failed"]}
    video_fail = {vid: r for s in stats for vid, r in s["videos_failed"].items()}

    manifest = samples[samples["shard"].isin(done_shards) & ~samples["key"].isin(failed_keys)]
    manifest = manifest.reset_index(drop=True)
    videos = probes.copy()
    written = manifest.groupby("video_id").size()
    videos["segments"] = videos["video_id"].map(written).fillna(0).astype(int)
    hit = videos["video_id"].isin(video_fail.keys())
    videos.loc[hit, "status"] = "failed"
    videos.loc[hit, "reason"] = videos.loc[hit, "video_id"].map(video_fail)
    pending = set(samples["shard"]) - done_shards
    videos_out = videos[plan.VIDEO_COLUMNS + plan.factor_columns(videos)]
    _write_parquet(out / "manifest.parquet", manifest)
    _write_parquet(out / "videos.parquet", videos_out)

    counts = (manifest.groupby(["split", "class"]).size().unstack(fill_value=0)
              .reindex(index=list(plan.SPLITS), columns=cfg.classes, fill_value=0))
    train_mel = shards.MelStats.merge([s["mel"] for s in stats if s["shard"].startswith("train/")])
    status = {k: int(v) for k, v in videos["status"].value_counts().items()}
    stat = {
        "counts": {sp: {c: int(counts.loc[sp, c]) for c in cfg.classes} for sp in plan.SPLITS},
        "samples": int(len(manifest)),
        "shards": {sp: sorted(s for s in done_shards if s.startswith(sp + "/")) for sp in plan.SPLITS},
        "pending_shards": sorted(pending),
        "failed_samples": len(failed_keys),
        "videos": status,
        "balanced": bool(all(len(set(counts.loc[sp])) <= 1 for sp in plan.SPLITS)),
        "complete": not pending,
        "train_logmel": train_mel.summary(),
        "classes": cfg.classes,
    }
    _write_json(out / "stats.json", stat)
    return BuildResult(out=out, counts=counts, videos=videos_out)


class NullProgress:
    def start(self, phase: str, total: int, **kw) -> None: ...
    def advance(self, phase: str, n: int = 1, **kw) -> None: ...
    def stop(self) -> None: ...
