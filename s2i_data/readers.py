"""Read shards back, with bounded memory, decoding only the members of the contract and never
unpickling.

Shards travel between people, so the project's own readers (verify, inspect, the trainer's
loader) read each tar themselves (`iter_raw`: every header checked against the build's
`Contract` before any data is read, so no header can make a reader hold more than the contract
allows) and decode each known member themselves: ``.npy`` with its header checked first and
``allow_pickle=False``, images with Pillow after their header says they have the build's size,
``.cls`` as ASCII, ``.json`` as small UTF-8. Members they do not know are never decoded
(`unknown_members` names them, and verify fails on them). Shard names read from a build are
checked against the contract before they are used in a path or a command.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import shlex
import stat
import sys
import tarfile
import types
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
MAX_OTHER = 64 * 1024  # a member outside the contract: read only to be named in the refusal
NPY_HEADER_MAX = 4096  # numpy writes 128 bytes for a 2-d float32 array


class SampleError(ValueError):
    """A sample or shard that does not decode: the message names the shard, the key and the member."""


class ShardError(SampleError):
    """A whole shard that cannot be read (not a tar, truncated, its command failed)."""


@dataclass(frozen=True)
class Contract:
    """What every sample of one build must hold (from its build.json): decoding checks these
    before it allocates anything, so a hostile header cannot make it decode a 12000² image.

    It also bounds what a shard's tar may make a reader hold (`member_bytes`), checked from each
    member's header before its data is read: a mel.npy is frames × mel_bins float32 plus its .npy
    header (at most 4 KiB); an image at most 8 bytes a pixel (16-bit RGBA, more than any PNG or
    JPEG of the build's size takes) plus 1 MiB of chunks; .json 64 KiB; .cls 16 bytes; .flac the
    segment as 16-bit stereo PCM (what FLAC stores at worst) plus 64 KiB of metadata; a member
    outside the contract 64 KiB (it is refused, read only to be named). A sample may hold all of
    the contract's at once (`sample_bytes`), no more."""

    frames: int
    mel_bins: int = 128
    image_size: int = 96
    sample_rate: int = 16000

    @classmethod
    def of(cls, out: "str | Path | Build") -> "Contract":
        return Build.open(out).contract

    @classmethod
    def widest(cls) -> "Contract":
        """The largest contract a build.json may claim (`untrusted.build_settings`): the bounds a
        reader that was not told its build's contract holds shards to."""
        return cls(frames=round(untrusted.MAX_SEGMENT_SECONDS * 100), image_size=untrusted.MAX_IMAGE_SIZE,
                   sample_rate=untrusted.MAX_SAMPLE_RATE)

    def member_bytes(self, ext: str) -> int:
        """The most bytes the member ``KEY.ext`` of this build may have."""
        if ext == "mel.npy":
            return self.frames * self.mel_bins * 4 + NPY_HEADER_MAX
        if ext in IMAGE_EXTS:
            return self.image_size ** 2 * 8 + (1 << 20)
        if ext == "flac":
            return self.frames * self.sample_rate // 100 * 4 + (64 << 10)
        return {"json": MAX_JSON, "cls": MAX_CLS}.get(ext, MAX_OTHER)

    def sample_bytes(self) -> int:
        return sum(self.member_bytes(ext) for ext in ("mel.npy", "png", "json", "cls", "flac"))


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
    def factors(self) -> tuple:
        """The within-class factors (`s2i_data.factors.Factor`, issue 28) every sample of this build
        carries as a manifest column ``factor_<name>`` (and a KEY.json field), from build.json's
        ``factors`` record (checked when the build was opened: a preset defined in code, columns of
        it); ``()`` for a build without factors."""
        rec = self.build_json.get("factors")
        if rec is None:
            return ()
        try:
            return untrusted.build_factors(rec, f"{self.file('build.json')}: factors")
        except untrusted.Untrusted as e:
            raise SampleError(str(e)) from None

    @property
    def contract(self) -> "Contract":
        return Contract(frames=int(round(self.segment_seconds * 100)), image_size=self.image_size,
                        sample_rate=self.sample_rate)

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

    def manifest(self, columns: list[str] | None = None, name: str = "manifest.parquet", check_factors: bool = True):
        """A table of the build; manifest.parquet and videos.parquet checked whole against the
        contract (`untrusted.samples_table`, `untrusted.videos_table`) before any row is used, and
        in a build of factors (unless ``check_factors`` is False: verify reports each problem
        itself) every row's factor values too (`untrusted.factor_columns`; videos.parquet's usable
        rows)."""
        checks = {"manifest.parquet": lambda t: untrusted.samples_table(t, self.file(name), self.classes,
                                                                         self.segment_seconds),
                  "videos.parquet": lambda t: untrusted.videos_table(t, self.file(name), self.classes)}
        table = read_build_parquet(self.location, name, None if name in checks else columns)
        if name in checks:
            try:
                checks[name](table)
                if check_factors and self.factors:
                    video = name == "videos.parquet"
                    untrusted.factor_columns(table, self.file(name), self.factors, key="video_id" if video else "key",
                                             rows=(table["status"] == "ok").to_numpy() if video else None)
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
    if "__error__" in raw:  # a member the tar reader refused from its header (`iter_raw`)
        raise SampleError(raw["__error__"])
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
             names: dict[str, str] | None = None, contract: Contract | None = None) -> Iterator[dict]:
    """Raw samples of the given shards, in order: dicts as webdataset makes them (``__key__``,
    ``__url__``, and each member's bytes under its extension), plus ``__shard__``.

    The caller decides which shards a process reads (the trainer deals them to workers and
    ranks itself). URLs may be paths, ``pipe:`` commands, or any fsspec URL (opened by
    webdataset's ``gopen``); with ``cache_dir`` remote shards are kept there (webdataset's file
    cache) and read from disk on later epochs.

    Shards are hostile until read: each is read as a plain tar stream whose every header is
    checked before its data is read (`_TarStream`), so memory stays bounded by ``contract``
    (`Contract.member_bytes`; without one, the widest a build may claim) whatever the headers
    claim. A member over its bound, a link or device, or a second member of one name spoils its
    sample: the sample comes with ``__error__`` (one line naming shard, key and member) instead
    of that member's bytes, and `decode_sample` raises it.

    A shard that cannot be read (not a plain tar, compressed, truncated, a sparse member, a
    failing command) raises `ShardError` naming it, after the samples read before the damage;
    with ``on_shard_error`` that is called instead and the next shard is read. ``names`` (URL →
    shard name, e.g. ``train/train-000000.tar``) is how shards are named in errors, here and in
    `decode_sample`; without it, by their URLs.
    """
    contract = contract or Contract.widest()
    for url in urls:
        name = (names or {}).get(url, url)
        try:
            yield from _shard_samples(url, name, cache_dir, contract)
        except ShardError as err:
            if on_shard_error is None:
                raise
            on_shard_error(err)


def _shard_samples(url: str, name: str, cache_dir: str | None, contract: Contract) -> Iterator[dict]:
    try:
        f = _open_shard(url, cache_dir)
    except Exception as e:  # fsspec backends and commands fail with their own exception types
        raise ShardError(f"{name}: unreadable shard ({_first_line(e)})") from None
    try:
        for raw in _samples(_TarStream(f), contract, name):
            raw["__url__"], raw["__shard__"] = url, name
            yield raw
    except _Refused as e:
        raise ShardError(f"{name}: unreadable shard ({e})") from None
    except Exception as e:  # an OSError from a pipe or a remote file mid-read: this shard is bad
        raise ShardError(f"{name}: unreadable shard ({_first_line(e)})") from None
    finally:
        with contextlib.suppress(Exception):  # a command stopped early exits with SIGPIPE: not news
            f.close()


def _open_shard(url: str, cache_dir: str | None):
    """A binary stream of the shard at ``url``: a local file only when it is a regular file (a
    FIFO or a device named like a shard would hang or never end); anything else through
    webdataset's ``gopen``, via its file cache with ``cache_dir``."""
    gopen = _register_fsspec()
    if storage.is_remote(url) or url.startswith("pipe:"):
        if not cache_dir:
            return gopen.gopen(url)
        os.makedirs(cache_dir, exist_ok=True)
        url = webdataset_module("cache").FileCache(cache_dir, validator=None).get_file(url)  # our reader checks what it holds
    fd = os.open(storage.local_path(url), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{url} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _Refused(Exception):
    """A tar that is not read any further; the message says why, naming the member when known."""


_BLOCK = 512
_EXTENSION_MAX = 64 * 1024  # a pax or GNU long-name header: a name and a few numbers
_MEMBERS_MAX = 16  # a sample of the contract has four or five
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_NO_DATA = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a device",
            tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO"}
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
               b"\x04\x22\x4d\x18": "lz4", b"PK\x03\x04": "zip"}


class _TarStream:
    """A tar read front to back from any byte stream (no seeking), header by header: each
    member's name, type and size are known, and checked by the caller, before its data is read.

    Only what an uncompressed ustar, pax or GNU tar of regular files holds is read: pax and
    long-name headers up to 64 KiB, no sparse members, nothing that is not a tar header where
    one is due, and the archive must end with its two zero blocks (tarfile reads a tar cut at a
    member boundary, or followed by garbage, as a shorter valid one)."""

    def __init__(self, f) -> None:
        self.f = f
        self.offset = 0

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            chunk = self.f.read(min(n, 1 << 20))
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
            self.offset += len(chunk)
        return b"".join(parts)

    def next(self) -> tarfile.TarInfo | None:
        """The next member (name and size as its pax or GNU headers say), None at the end."""
        pax: dict[str, str] = {}
        longname, sparse = None, False
        while True:
            at = self.offset
            block = self.read(_BLOCK)
            kind = next((v for m, v in _COMPRESSED.items() if block.startswith(m)), None) if at == 0 else None
            if kind:
                raise _Refused(f"a {kind}-compressed stream: a shard is a plain, uncompressed tar")
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.EOFHeaderError:
                if self.read(_BLOCK).count(0) != _BLOCK:
                    raise _Refused(f"truncated: one zero block at byte {at}, not the two that end a tar") from None
                return None
            except tarfile.EmptyHeaderError:
                raise _Refused("truncated: no end-of-archive blocks" if at else "empty") from None
            except tarfile.TruncatedHeaderError:
                raise _Refused(f"truncated: the shard ends inside the header at byte {at}") from None
            except tarfile.HeaderError as e:
                raise _Refused(f"not a tar header at byte {at} ({e})") from None
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                             tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = self._extension(info, at)
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    longname = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                elif info.type != tarfile.GNUTYPE_LONGLINK:
                    records = _pax_records(data, at)
                    sparse |= any(k.startswith("GNU.sparse.") for k in records)
                    if info.type != tarfile.XGLTYPE:
                        pax.update(records)
                continue
            # (GNU.sparse.name: the name of a pax 1.0 sparse member, refused just below)
            info.name = pax.get("GNU.sparse.name", pax.get("path", longname if longname is not None else info.name))
            if "size" in pax:
                try:
                    info.size = int(pax["size"])
                except ValueError:
                    raise _Refused(f"{untrusted.printable(info.name)}: pax size {pax['size'][:20]!r}") from None
            if info.size < 0:
                raise _Refused(f"{untrusted.printable(info.name)}: negative size")
            if sparse or info.type == tarfile.GNUTYPE_SPARSE:
                raise _Refused(f"{untrusted.printable(info.name)}: a sparse member; a shard holds regular files only")
            if info.type not in _REGULAR and info.type not in _NO_DATA and info.type != tarfile.DIRTYPE:
                raise _Refused(f"{untrusted.printable(info.name)}: tar member type {info.type!r}; "
                               "a shard holds regular files only")
            return info

    def _extension(self, info: tarfile.TarInfo, at: int) -> bytes:
        if info.size > _EXTENSION_MAX:
            raise _Refused(f"an extended header of {info.size} bytes at byte {at}, more than {_EXTENSION_MAX}")
        return self.data(info)

    def data(self, info: tarfile.TarInfo) -> bytes:
        """The member's bytes (the caller has checked its size), its padding skipped."""
        data = self.read(info.size)
        if len(data) < info.size:
            raise _Refused(f"truncated: {untrusted.printable(info.name)} ends after {len(data)} of its {info.size} bytes")
        self.read(-info.size % _BLOCK)
        return data

    def skip(self, info: tarfile.TarInfo) -> None:
        """Read past the member's data a MiB at a time, keeping none of it."""
        if info.type not in _REGULAR:
            return  # links, devices and folders have no data (as tarfile reads them)
        left = info.size + (-info.size % _BLOCK)
        while left > 0:
            chunk = self.read(min(left, 1 << 20))
            if not chunk:
                raise _Refused(f"truncated: the shard ends inside {untrusted.printable(info.name)}")
            left -= len(chunk)


def _pax_records(data: bytes, at: int) -> dict[str, str]:
    """A pax header's ``LENGTH KEY=VALUE\\n`` records."""
    out, pos = {}, 0
    while pos < len(data) and data[pos]:
        space = data.find(b" ", pos, pos + 21)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        record = data[space + 1:pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise _Refused(f"a malformed pax header at byte {at}")
        key, value = record[:-1].split(b"=", 1)
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _samples(tar: _TarStream, contract: Contract, shard: str) -> Iterator[dict]:
    """Members grouped into samples as webdataset groups them (consecutive members of one key),
    each member's size checked against ``contract`` before it is read."""
    sample: dict | None = None
    held = 0  # bytes of the current sample
    while (info := tar.next()) is not None:
        if info.type == tarfile.DIRTYPE:
            continue  # a folder entry of a tar made by hand holds nothing
        try:
            key, ext = untrusted.tar_member(info.name)
        except untrusted.Untrusted as e:
            raise _Refused(str(e)) from None
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample, held = {"__key__": key}, 0
        problem = _member_problem(info, ext, sample, held, contract)
        if problem is None:
            sample[ext] = tar.data(info)
            held += info.size
            continue
        where = f"{shard}: {untrusted.printable(info.name)}"
        sample.setdefault("__error__", f"{where}: {problem}")
        try:
            tar.skip(info)
        except _Refused:
            raise _Refused(f"{untrusted.printable(info.name)}: {problem}, and the shard ends inside it") from None
    if sample is not None:
        yield sample


def _member_problem(info: tarfile.TarInfo, ext: str, sample: dict, held: int, contract: Contract) -> str | None:
    """Why the member cannot join its sample (None: it can), from its header alone."""
    if info.type in _NO_DATA:
        return f"{_NO_DATA[info.type]}, not a regular file"
    if ext.startswith("__"):
        return "an extension of the names readers keep for themselves (__key__, __url__...)"
    if ext in sample:
        return "a second member of that name in the sample"
    most = contract.member_bytes(ext)
    if info.size > most:
        what = f"a {ext}" if ext in MEMBERS else "a member outside the contract"
        return f"{info.size} bytes, more than the {most} {what} of this build may take; not read"
    if held + info.size > contract.sample_bytes() or len(sample) > _MEMBERS_MAX:
        return f"more members or bytes than a sample of this build holds ({contract.sample_bytes()} bytes); not read"
    if "__error__" in sample:
        return "the sample is already refused"
    return None


def _first_line(e: Exception) -> str:
    # webdataset appends " @ <stream object>" and the URL to the arguments: keep the cause only
    msg = str(e.args[0]) if e.args else ""
    msg = (msg.split(" @ <")[0].splitlines() or [""])[0][:160]
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _gopen_fsspec(url, mode="rb", bufsize=8192, **kw):
    import fsspec

    return fsspec.open(url, mode).open()


def _register_fsspec():
    """webdataset's gopen module, made to open every URL scheme fsspec knows and it does not."""
    import fsspec

    gopen = webdataset_module("gopen")
    for proto in fsspec.available_protocols():
        gopen.gopen_schemes.setdefault(proto, _gopen_fsspec)
    return gopen


def webdataset_module(name: str):
    """The module ``webdataset.<name>`` (gopen, cache), imported without running webdataset's
    package ``__init__``: that imports torch (seconds, and a few hundred MB a reader of shards
    does not need). The modules stay in ``sys.modules``, so a later ``import webdataset`` reuses
    them (the same trick as `shards._tar_writer_class`)."""
    if "webdataset" in sys.modules:
        return importlib.import_module(f"webdataset.{name}")
    spec = importlib.util.find_spec("webdataset")
    shell = types.ModuleType("webdataset")
    shell.__path__ = list(spec.submodule_search_locations)
    sys.modules["webdataset"] = shell
    try:
        return importlib.import_module(f"webdataset.{name}")
    finally:
        del sys.modules["webdataset"]


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
