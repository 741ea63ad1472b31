"""Read shards back, decoding only the members of the contract and never unpickling.

Shards travel between people, so the project's own readers (verify, inspect, the trainer's
loader) take raw bytes from webdataset and decode each known member themselves: ``.npy`` with
its header checked first and ``allow_pickle=False``, images with Pillow after their header says
they have the build's size, ``.cls`` as ASCII, ``.json`` as small UTF-8. Members they do not know
are never decoded (`unknown_members` names them, and verify fails on them). Shard names read from
a build are checked against the contract before they are used in a path or a command.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import storage, untrusted

IMAGE_EXTS = ("png", "jpg")
MEMBERS = frozenset({"mel.npy", "png", "jpg", "cls", "json", "flac"})  # SPEC 2.6
SHARD_NAME = untrusted.SHARD_NAME
MAX_JSON = 64 * 1024  # a sample's metadata is a few hundred bytes
MAX_CLS = 16


class SampleError(ValueError):
    """A sample or shard that does not decode: the message names the shard, the key and the member."""


class ShardError(SampleError):
    """A whole shard that cannot be read (not a tar, truncated, its command failed)."""


@dataclass(frozen=True)
class Contract:
    """What every sample of one build must hold (from its build.json): decoding checks these
    before it allocates anything, so a hostile header cannot make it decode a 12000² image."""

    frames: int
    mel_bins: int = 128
    image_size: int = 96

    @classmethod
    def of(cls, out: "str | Path | Build") -> "Contract":
        return Build.open(out).contract


@dataclass(frozen=True)
class Build:
    """One s2i-data build, opened once from a folder or a URL: its settings (build.json), classes
    and statistics (stats.json), shard URLs and manifest.

    How its shards are reached belongs to the opened build, not to the process: ``shard_url`` a
    template such as ``"pipe:curl -s https://host/build/{shard}"``, ``cache_dir`` a local folder
    keeping remote shards after their first read, ``skip_bad`` whether a reader counts, logs and
    skips a damaged sample or shard instead of stopping.
    """

    location: str
    build_json: dict
    stats: dict
    shard_url: str | None = None
    cache_dir: str | None = None
    skip_bad: bool = False

    @classmethod
    def open(cls, location: "str | Path | Build", shard_url: str | None = None, cache_dir: str | None = None,
             skip_bad: bool = False) -> "Build":
        if isinstance(location, Build):
            return location
        location = str(location)
        if not storage.exists(build_file(location, "stats.json")):
            raise SampleError(f"{location} holds no s2i-data build (no stats.json)")
        build_json, stats = read_build_json(location, "build.json"), read_build_json(location, "stats.json")
        try:  # somebody else's build: everything readers rely on, checked once here (untrusted)
            untrusted.build_settings(build_json, build_file(location, "build.json"))
            untrusted.build_stats(stats, build_file(location, "stats.json"))
        except untrusted.Untrusted as e:
            raise SampleError(str(e)) from None
        return cls(location, build_json, stats, shard_url or None, cache_dir or None, bool(skip_bad))

    def __str__(self) -> str:
        return self.location

    @property
    def config(self) -> dict:
        return self.build_json["config"]

    @property
    def fingerprint(self) -> str | None:
        return self.build_json.get("fingerprint")

    @property
    def classes(self) -> list[str]:
        return list(self.stats["classes"])

    @property
    def segment_seconds(self) -> float:
        return float(self.config["segment_seconds"])

    @property
    def sample_rate(self) -> int:
        return int(self.config.get("sample_rate", 16000))

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def contract(self) -> "Contract":
        return Contract(frames=int(round(self.segment_seconds * 100)), image_size=self.image_size)

    def record(self) -> dict:
        """What a model trained on this build must know of it (saved in every checkpoint)."""
        c = self.contract
        return {"location": self.location, "fingerprint": self.fingerprint, "segment_seconds": self.segment_seconds,
                "sample_rate": self.sample_rate, "frames": c.frames, "mel_bins": c.mel_bins, "image_size": c.image_size}

    def size(self, split: str) -> int:
        return int(sum(self.stats["counts"].get(split, {}).values()))

    def file(self, name: str) -> str:
        return build_file(self.location, name)

    def shards(self, split: str | None = None) -> list[tuple[str, str]]:
        """(name, URL) of the shards of ``split`` (all with None), reached as this build says."""
        return shard_list(self.location, split, self.shard_url)

    def manifest(self, columns: list[str] | None = None, name: str = "manifest.parquet"):
        """A table of the build; the sample tables (manifest.parquet) checked whole against the
        contract (`untrusted.samples_table`) before any row is used."""
        table = read_build_parquet(self.location, name, None if name == "manifest.parquet" else columns)
        if name == "manifest.parquet":
            try:
                untrusted.samples_table(table, self.file(name), self.classes, self.segment_seconds)
            except untrusted.Untrusted as e:
                raise SampleError(str(e)) from None
            if columns is not None:
                table = table[columns]
        return table

    def with_access(self, shard_url: str | None = None, cache_dir: str | None = None,
                    skip_bad: bool | None = None) -> "Build":
        """The same build reached another way (settings given here win, others are kept)."""
        return Build(self.location, self.build_json, self.stats, shard_url or self.shard_url,
                     cache_dir or self.cache_dir, self.skip_bad if skip_bad is None else bool(skip_bad))


def check_shard_name(name: str) -> str:
    """``name`` when it is a shard name of the contract (``train/train-000000.tar``), else SampleError."""
    try:
        return untrusted.shard_name(name)
    except untrusted.Untrusted as e:
        raise SampleError(str(e)) from None


def shard_location(template: str, name: str) -> str:
    """A --shard-url template with ``{shard}`` filled: shell-quoted inside ``pipe:`` commands, and
    only ever with a name that passed `check_shard_name` (the name comes from somebody's build)."""
    check_shard_name(name)
    value = shlex.quote(name) if template.startswith("pipe:") else name
    return template.replace("{shard}", value)  # not str.format: a shell command may hold braces


def unknown_members(raw: dict) -> list[str]:
    return sorted(k for k in raw if not k.startswith("__") and k not in MEMBERS)


def _where(raw: dict) -> str:
    shard = raw.get("__shard__") or raw.get("__url__")
    return f"{shard}: {raw.get('__key__', '?')}" if shard else str(raw.get("__key__", "?"))


def load_npy(data: bytes, what: str) -> np.ndarray:
    """A .npy member: its header read and checked (a plain numeric dtype, a shape whose size the
    bytes really hold) before any array is made; never unpickles."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = header(f)
    except Exception as e:
        raise SampleError(f"{what}: not a .npy array ({type(e).__name__}: {str(e)[:80]})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise SampleError(f"{what}: dtype {dtype} is not a plain numeric array")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - f.tell() != expected:
        raise SampleError(f"{what}: header says {dtype}{list(shape)} ({expected} bytes) but {len(data) - f.tell()} follow")
    arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=f.tell())
    return arr.reshape(shape, order="F" if fortran else "C").copy()


def _image(data: bytes, what: str, size: int | None) -> tuple[np.ndarray, str]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            if size is not None and im.size != (size, size):
                raise SampleError(f"{what}: image is {im.size[0]}x{im.size[1]}, the build's are {size}x{size}; not decoded")
            if im.size[0] * im.size[1] > 4096 * 4096:
                raise SampleError(f"{what}: image is {im.size[0]}x{im.size[1]}; not decoded")
            mode = im.mode
            return np.asarray(im.convert("RGB")), mode
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(f"{what}: cannot decode ({type(e).__name__}: {str(e)[:80]})") from None


def decode_sample(raw: dict, contract: Contract | None = None) -> dict:
    """Raw webdataset sample (bytes per member) → {key, url, mel, image, cls, meta, [flac]}.

    With a ``contract`` the mel's shape and dtype and the image's size are checked too, so that
    a sample the networks cannot take fails here, naming itself, and not inside a network."""
    key = raw.get("__key__", "?")
    where = _where(raw)
    out = {"key": key, "url": raw.get("__url__")}
    if "mel.npy" not in raw:
        raise SampleError(f"{where}: no mel.npy member")
    out["mel"] = mel = load_npy(raw["mel.npy"], f"{where}.mel.npy")
    if contract is not None:
        want = (contract.frames, contract.mel_bins)
        if mel.shape != want or mel.dtype != np.float32:
            raise SampleError(f"{where}.mel.npy: {mel.dtype}{list(mel.shape)}, the build's are float32{list(want)}")
        if not np.isfinite(mel).all():
            raise SampleError(f"{where}.mel.npy: non-finite values")
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        raise SampleError(f"{where}: no image member (.png or .jpg)")
    out["image"], out["image_mode"] = _image(raw[ext], f"{where}.{ext}", contract.image_size if contract else None)
    for member in ("cls", "json"):
        if member not in raw:
            raise SampleError(f"{where}: no {member} member")
    cls_bytes, json_bytes = raw["cls"], raw["json"]
    try:
        if len(cls_bytes) > MAX_CLS:
            raise ValueError(f"{len(cls_bytes)} bytes")
        out["cls"] = int(cls_bytes.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleError(f"{where}.cls: not a class index ({str(e)[:60]})") from None
    if len(json_bytes) > MAX_JSON:
        raise SampleError(f"{where}.json: {len(json_bytes)} bytes, more than the {MAX_JSON} a sample's metadata may take")
    try:
        meta = json.loads(json_bytes.decode("utf-8"))
    except RecursionError:
        raise SampleError(f"{where}.json: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleError(f"{where}.json: not JSON ({str(e)[:60]})") from None
    if not isinstance(meta, dict):
        raise SampleError(f"{where}.json: a {type(meta).__name__}, not an object")
    out["meta"] = meta
    if "flac" in raw:
        out["flac"] = raw["flac"]
    return out


def iter_raw(urls: list[str], cache_dir: str | None = None,
             on_shard_error: Callable[[ShardError], None] | None = None,
             names: dict[str, str] | None = None) -> Iterator[dict]:
    """Raw samples of the given shards, in order, through plain webdataset.

    The caller decides which shards a process reads (the trainer deals them to workers and
    ranks itself), so webdataset's own node and worker splitting is switched off. URLs may be
    paths, ``pipe:`` commands, or any fsspec URL; with ``cache_dir`` remote shards are kept
    there (webdataset's file cache) and read from disk on later epochs.

    A shard that cannot be read (not a tar, truncated, a failing command) raises `ShardError`
    naming it, after the samples read before the damage; with ``on_shard_error`` that is called
    instead and the next shard is read. ``names`` (URL → shard name, e.g. ``train/train-000000.tar``)
    is how shards are named in errors, here and in `decode_sample` (each raw sample carries its
    shard's name as ``__shard__``); without it, by their URLs.
    """
    import webdataset as wds

    _register_fsspec()
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    for url in urls:
        name = (names or {}).get(url, url)
        # One pipeline per shard, so that a failure is known to be this shard's.
        it = iter(wds.WebDataset([url], shardshuffle=False, empty_check=False, nodesplitter=None,
                                 workersplitter=None, cache_dir=cache_dir))
        err = None
        while True:
            try:
                raw = next(it)
            except StopIteration:
                break
            except Exception as e:  # tarfile, zlib, OSError from a pipe: all mean this shard is bad
                err = ShardError(f"{name}: unreadable shard ({_first_line(e)})")
                break
            raw["__shard__"] = name
            yield raw
        if err is None and not storage.is_remote(url) and not url.startswith("pipe:") and not _tar_complete(url):
            # tarfile reads a tar cut at a member boundary as a shorter, valid one
            err = ShardError(f"{name}: unreadable shard (truncated: no end-of-archive blocks)")
        if err is not None:
            if on_shard_error is None:
                raise err
            on_shard_error(err)


def _tar_complete(path: str) -> bool:
    """A finished tar ends with two zero blocks (then zero padding to its record size)."""
    try:
        with open(storage.local_path(path), "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 1024 or size % 512:
                return False
            f.seek(size - 1024)
            return not any(f.read(1024))
    except OSError:
        return False


def _first_line(e: Exception) -> str:
    # webdataset appends " @ <stream object>" and the URL to the arguments: keep the cause only
    msg = str(e.args[0]) if e.args else ""
    msg = (msg.split(" @ <")[0].splitlines() or [""])[0][:160]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _gopen_fsspec(url, mode="rb", bufsize=8192, **kw):
    import fsspec

    return fsspec.open(url, mode).open()


def _register_fsspec() -> None:
    """Let webdataset open every URL scheme fsspec knows and webdataset itself does not."""
    import fsspec
    import importlib

    gopen = importlib.import_module("webdataset.gopen")  # the module: the package re-exports a function of that name

    for proto in fsspec.available_protocols():
        gopen.gopen_schemes.setdefault(proto, _gopen_fsspec)


def build_file(out: str | Path, name: str) -> str:
    """A file of a build (stats.json, manifest.parquet...), whether the build is local or a URL."""
    return storage.join(str(out), name)


def read_build_json(out: str | Path, name: str = "stats.json") -> dict:
    where = build_file(out, name)
    try:
        obj = storage.read_json(where)
    except RecursionError:
        raise SampleError(f"{where}: nested too deeply") from None
    except UnicodeDecodeError as e:
        raise SampleError(f"{where}: not UTF-8 JSON ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise SampleError(f"{where}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise SampleError(f"{where}: a JSON {type(obj).__name__}, not an object")
    return obj


def read_build_parquet(out: str | Path, name: str = "manifest.parquet", columns: list[str] | None = None):
    return storage.read_parquet(build_file(out, name), columns)


def shard_list(out: str | Path, split: str | None = None, shard_url: str | None = None) -> list[tuple[str, str]]:
    """(name, URL) of a build's shards, name as in the manifest ("train/train-000000.tar").

    ``shard_url`` opens them another way, e.g. ``"pipe:curl -s https://host/build/{shard}"``:
    the names then come from the build's stats.json.
    """
    splits = [split] if split else ["train", "val", "test"]
    if shard_url:
        # names from somebody's stats.json: each checked before it goes into a URL or a command
        shards = read_build_json(out)["shards"]
        if not isinstance(shards, dict) or not all(isinstance(shards.get(s, []), list) for s in splits):
            raise SampleError(f"{out}: stats.json 'shards' is not a list per split")
        named = [(n, s) for s in splits for n in shards.get(s, [])]
        for n, s in named:
            if check_shard_name(n).split("/")[0] != s:
                raise SampleError(f"shard name {n!r} is listed under {s!r}; refusing to use it")
        return [(n, shard_location(shard_url, n)) for n, _ in named]
    out = str(out)
    found = []
    for s in splits:
        names = [n for n in storage.listdir(storage.join(out, s)) if SHARD_NAME.fullmatch(f"{s}/{n}")
                 and n.startswith(f"{s}-")]
        found += [(f"{s}/{n}", storage.join(out, s, n)) for n in names]
    return found


def shard_urls(out: str | Path, split: str | None = None, shard_url: str | None = None) -> list[str]:
    return [u for _, u in shard_list(out, split, shard_url)]
