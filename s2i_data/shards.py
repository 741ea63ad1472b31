"""Write one shard (the unit of work and of resumption) and read shards back.

A shard is written to a temporary name beside its final one and renamed only when complete; its
stats file (written next, also atomically) is the resume marker. A video that cannot be decoded
fails its own samples only: they are listed in the stats with the reason, and the shard goes on.
Members are encoded here (not by webdataset's pickle-capable default encoder) so that the bytes
are reproducible and the readers never need to unpickle anything.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

# `features` (scipy) and the tar writer are imported where a shard is written, not here: the
# build's main process needs only the task and stats helpers of this module, and those imports
# would sit before its first probe (the worker processes preload them, see `executors`).
from . import media, storage

FIXED_MTIME = 946684800  # 2000-01-01: identical bytes for identical content, run after run
HIST_EDGES = np.linspace(-16.0, 16.0, 3201)  # 0.01-wide bins over every plausible log-mel value


@functools.cache
def _tar_writer_class():
    """webdataset's TarWriter, imported without running webdataset's package ``__init__``.

    That ``__init__`` imports torch (about 3 s, in every worker process) for its loaders; the
    writer module itself needs only numpy and the standard library. Its modules are left in
    ``sys.modules``, so a later ``import webdataset`` reuses them.
    """
    if "webdataset" in sys.modules:
        return importlib.import_module("webdataset.writer").TarWriter
    spec = importlib.util.find_spec("webdataset")
    shell = types.ModuleType("webdataset")
    shell.__path__ = list(spec.submodule_search_locations)
    sys.modules["webdataset"] = shell
    try:
        writer = importlib.import_module("webdataset.writer")
    finally:
        del sys.modules["webdataset"]
    return writer.TarWriter


@dataclass
class ShardTask:
    name: str  # e.g. "train/train-000000.tar", relative to the output folder
    videos: list[dict]  # video_id, source, probe fields, and "samples": manifest rows
    order: list[str] = field(default_factory=list)  # keys in write order


def stats_path(out: str, name: str) -> str:
    return storage.join(out, "_build", "shards", os.path.basename(name).replace(".tar", ".json"))


def is_done(out: str, name: str) -> bool:
    return storage.exists(stats_path(out, name)) and storage.exists(storage.join(out, name))


def encode_image(img: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        # Level 3: half the time of the default 6 for 10 % larger files (bench/build.py).
        Image.fromarray(img).save(buf, format="PNG", compress_level=3)
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def encode_flac(wave: np.ndarray, sr: int) -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(wave, -1, 1), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


class MelStats:
    """Mergeable log-mel statistics: per-band sums, extremes and a global histogram."""

    def __init__(self, n_mels: int | None = None) -> None:
        if n_mels is None:
            from .features import N_MELS as n_mels
        self.count = 0
        self.sum = np.zeros(n_mels, np.float64)
        self.sumsq = np.zeros(n_mels, np.float64)
        self.min = np.inf
        self.max = -np.inf
        self.hist = np.zeros(len(HIST_EDGES) - 1, np.int64)

    def add(self, mel: np.ndarray) -> None:
        m = mel.reshape(-1, mel.shape[-1]).astype(np.float64)
        self.count += m.shape[0]
        self.sum += m.sum(0)
        self.sumsq += (m * m).sum(0)
        self.min = min(self.min, float(m.min()))
        self.max = max(self.max, float(m.max()))
        # Fixed-width bins: an index computation and a bincount, no sort as np.histogram does.
        width = HIST_EDGES[1] - HIST_EDGES[0]
        idx = np.clip(((m - HIST_EDGES[0]) / width).astype(np.int64), 0, len(self.hist) - 1)
        self.hist += np.bincount(idx.ravel(), minlength=len(self.hist))

    def to_dict(self) -> dict:
        return {"count": self.count, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist(),
                "min": self.min if self.count else None, "max": self.max if self.count else None,
                "hist": self.hist.tolist()}

    @classmethod
    def merge(cls, dicts: list[dict]) -> "MelStats":
        sized = [d for d in dicts if d and d["count"]]
        out = cls(len(sized[0]["sum"]) if sized else 0)
        for d in dicts:
            if not d or not d["count"]:
                continue
            out.count += d["count"]
            out.sum += np.asarray(d["sum"])
            out.sumsq += np.asarray(d["sumsq"])
            out.min = min(out.min, d["min"])
            out.max = max(out.max, d["max"])
            out.hist += np.asarray(d["hist"], np.int64)
        return out

    def summary(self) -> dict:
        """What a loader needs to normalise: per-band mean/std, global extremes and percentiles."""
        if not self.count:
            return {"count": 0}
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0))
        cdf = np.cumsum(self.hist) / self.hist.sum()
        pct = {f"p{p:g}": float(HIST_EDGES[1:][np.searchsorted(cdf, p / 100)]) for p in (0.1, 1, 50, 99, 99.9)}
        n = self.count * len(mean)
        global_mean = self.sum.sum() / n
        global_std = np.sqrt(max(self.sumsq.sum() / n - global_mean**2, 0))
        return {"count": int(self.count), "mean": mean.tolist(), "std": std.tolist(),
                "global_mean": float(global_mean), "global_std": float(global_std),
                "min": self.min, "max": self.max, **pct}


def _decode_video(video: dict, cfg: dict) -> media.Decoded:
    """Decode one video once: the run from its first to its last selected segment, with a frame
    at every segment centre in between (the fps filter drops everything else before cropping)."""
    starts = [s["start_s"] for s in video["samples"]]
    with storage.fetched(video["source"]) as source:  # a local copy of a remote file
        return media.decode_segments(source, media.Probe.from_row(video["probe"]), starts, cfg["segment_seconds"],
                                     sample_rate=cfg["sample_rate"], image_size=cfg["image_size"])


def _video_samples(video: dict, decoded: media.Decoded, cfg: dict) -> tuple[dict[str, dict], dict[str, str]]:
    """The samples of one decoded video: {key: members} and {key: reason} for those that failed."""
    from . import features

    samples = video["samples"]
    seconds = cfg["segment_seconds"]
    starts = [s["start_s"] for s in samples]
    first = min(starts)
    steps = {s["start_s"]: int(round((s["start_s"] - first) / seconds)) for s in samples}
    frames = decoded.frames
    mels = features.log_mel_segments(decoded.audio, decoded.audio_start_s, starts, seconds, cfg["sample_rate"])
    audio_end = decoded.audio_start_s + len(decoded.audio) / cfg["sample_rate"]
    good: dict[str, dict] = {}
    bad: dict[str, str] = {}
    for s, mel in zip(samples, mels):
        k = steps[s["start_s"]]
        frame = frames[k] if k < len(frames) else None
        if frame is None:
            bad[s["key"]] = f"no video frame at {s['start_s'] + seconds / 2:.2f} s (video data ends early)"
            continue
        if s["end_s"] > audio_end + 0.02:
            bad[s["key"]] = f"audio data ends at {audio_end:.2f} s, before the segment end {s['end_s']:.2f} s"
            continue
        if not np.isfinite(mel).all():
            bad[s["key"]] = "non-finite log-mel values"
            continue
        members = {"mel.npy": mel, "image": frame, "cls": s["class_index"], "json": s}
        if cfg["keep_audio"]:
            a0 = int(round((s["start_s"] - decoded.audio_start_s) * cfg["sample_rate"]))
            n = int(round(seconds * cfg["sample_rate"]))
            wave = np.zeros(n, np.float32)
            piece = decoded.audio[max(a0, 0) : a0 + n]
            wave[max(-a0, 0) : max(-a0, 0) + len(piece)] = piece
            members["flac"] = wave
        good[s["key"]] = members
    return good, bad


def _encoded(shard: str, key: str, encode):
    """``encode()``, its error naming the shard and the sample, webdataset-style."""
    try:
        return encode()
    except Exception as e:
        raise ValueError(f"{shard}: cannot encode sample {key}: {type(e).__name__}: {e}") from e


def _members(key: str, m: dict, cfg: dict) -> dict:
    """A sample's tar members as bytes, all but its log-mel (encoded as it is written: as an
    array it is also what the shard's statistics read, and held once it costs half the memory)."""
    ext = "png" if cfg["image_format"] == "png" else "jpg"
    record = {"__key__": key, ext: encode_image(m["image"], cfg["image_format"]),
              "cls": str(int(m["cls"])).encode("ascii"),
              "json": json.dumps(m["json"], sort_keys=True).encode("utf-8")}
    if "flac" in m:
        record["flac"] = encode_flac(m["flac"], cfg["sample_rate"])
    return record


def _import_writers() -> None:
    """What turns decoded videos into tar members, imported ahead of its first use (a fresh
    worker's first shard pays these imports once, meanwhile its first ffmpeg decodes)."""
    from PIL import Image

    from . import features  # noqa: F401

    Image.preinit()  # the PNG and JPEG plugins
    _tar_writer_class()


def write_shard(task: ShardTask, out: str, cfg: dict) -> dict:
    """Extract every video of the shard once, write the tar atomically, then its stats file."""
    t0 = time.time()
    records: dict[str, tuple[dict, np.ndarray]] = {}  # key: (other tar members as bytes, log-mel)
    failed: list[dict] = []
    videos_failed: dict[str, str] = {}
    # The next video decodes (its own ffmpeg process) while this one's log-mels and images are
    # computed and encoded: one worker keeps ffmpeg busy instead of taking turns with it. The
    # bytes are the same as one video after another; only the waiting overlaps.
    with ThreadPoolExecutor(1, thread_name_prefix="s2i-decode") as decoder:
        ahead = decoder.submit(_decode_video, task.videos[0], cfg) if task.videos else None
        _import_writers()  # while the first video decodes
        for i, video in enumerate(task.videos):
            current = ahead
            if i + 1 < len(task.videos):
                ahead = decoder.submit(_decode_video, task.videos[i + 1], cfg)
            try:
                good, bad = _video_samples(video, current.result(), cfg)
            except media.MediaError as e:
                good, bad = {}, {s["key"]: str(e) for s in video["samples"]}
            for key, m in good.items():
                records[key] = (_encoded(task.name, key, lambda: _members(key, m, cfg)), m["mel.npy"])
            for key, reason in bad.items():
                failed.append({"key": key, "video_id": video["video_id"], "reason": reason})
                videos_failed.setdefault(video["video_id"], reason)

    mel_stats = MelStats()
    remote = storage.is_remote(out)
    # a shard for a URL is written in this worker's own temporary folder, then uploaded whole
    final = os.path.join(tempfile.mkdtemp(prefix="s2i-shard-") if remote else out, task.name)
    written = 0

    def write_tar(path: str) -> None:
        nonlocal written
        with open(path, "wb") as f:
            writer = _tar_writer_class()(f, encoder=False, mtime=FIXED_MTIME)
            for key in task.order:
                if key not in records:
                    continue
                record, mel = records[key]
                # the member order in the tar is TarWriter's (sorted names), not this dict's
                writer.write({**record, "mel.npy": _encoded(task.name, key, lambda: encode_npy(mel))})
                mel_stats.add(mel)  # in write order: float sums depend on it
                written += 1
            writer.close()

    storage.atomic_write(final, write_tar)
    size = os.path.getsize(final)
    if remote:
        storage.put_file(final, storage.join(out, task.name))
        shutil.rmtree(os.path.dirname(os.path.dirname(final)), ignore_errors=True)
    stats = {"shard": task.name, "written": written, "failed": failed, "videos_failed": videos_failed,
             "videos": len(task.videos), "bytes": size,
             "seconds": round(time.time() - t0, 3),
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
             "mel": mel_stats.to_dict()}
    storage.write_bytes(stats_path(out, task.name), json.dumps(stats).encode("utf-8"))  # the marker, last
    return stats
