"""Read shards back, decoding only the members of the contract and never unpickling.

Shards travel between people, so the project's own readers (verify, inspect, the trainer's
loader) take raw bytes from webdataset and decode each known member themselves: ``.npy`` with
``allow_pickle=False``, images with Pillow, ``.cls`` as ASCII, ``.json`` as UTF-8. Members they do
not know are ignored.
"""

from __future__ import annotations

import io
import os
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import storage

IMAGE_EXTS = ("png", "jpg", "jpeg")


class SampleError(ValueError):
    """A member that does not decode: the message names the key and the member."""


def decode_sample(raw: dict) -> dict:
    """Raw webdataset sample (bytes per member) → {key, url, mel, image, cls, meta, [flac]}."""
    key = raw.get("__key__", "?")
    out = {"key": key, "url": raw.get("__url__")}
    try:
        mel_bytes = raw["mel.npy"]
    except KeyError:
        raise SampleError(f"{key}: no mel.npy member") from None
    try:
        out["mel"] = np.load(io.BytesIO(mel_bytes), allow_pickle=False)
    except Exception as e:
        raise SampleError(f"{key}.mel.npy: cannot decode ({type(e).__name__}: {e})") from None
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    if ext is None:
        raise SampleError(f"{key}: no image member (.png or .jpg)")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw[ext])) as im:
            out["image_mode"] = im.mode
            out["image"] = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise SampleError(f"{key}.{ext}: cannot decode ({type(e).__name__}: {e})") from None
    try:
        out["cls"] = int(raw["cls"].decode("ascii"))
        out["meta"] = json.loads(raw["json"].decode("utf-8"))
    except KeyError as e:
        raise SampleError(f"{key}: no {e.args[0]} member") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleError(f"{key}: bad cls/json member ({e})") from None
    if "flac" in raw:
        out["flac"] = raw["flac"]
    return out


def iter_raw(urls: list[str], cache_dir: str | None = None) -> Iterator[dict]:
    """Raw samples of the given shards, in order, through plain webdataset.

    The caller decides which shards a process reads (the trainer deals them to workers and
    ranks itself), so webdataset's own node and worker splitting is switched off. URLs may be
    paths, ``pipe:`` commands, or any fsspec URL; with ``cache_dir`` remote shards are kept
    there (webdataset's file cache) and read from disk on later epochs.
    """
    import webdataset as wds

    _register_fsspec()
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None,
                        cache_dir=cache_dir)
    yield from ds


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
    return storage.read_json(build_file(out, name))


def read_build_parquet(out: str | Path, name: str = "manifest.parquet", columns: list[str] | None = None):
    return storage.read_parquet(build_file(out, name), columns)


def shard_list(out: str | Path, split: str | None = None, shard_url: str | None = None) -> list[tuple[str, str]]:
    """(name, URL) of a build's shards, name as in the manifest ("train/train-000000.tar").

    ``shard_url`` opens them another way, e.g. ``"pipe:curl -s https://host/build/{shard}"``:
    the names then come from the build's stats.json.
    """
    splits = [split] if split else ["train", "val", "test"]
    if shard_url:
        shards = read_build_json(out)["shards"]
        return [(n, shard_url.format(shard=n)) for s in splits for n in shards.get(s, [])]
    out = str(out)
    found = []
    for s in splits:
        names = [n for n in storage.listdir(storage.join(out, s)) if n.startswith(f"{s}-") and n.endswith(".tar")]
        found += [(f"{s}/{n}", storage.join(out, s, n)) for n in names]
    return found


def shard_urls(out: str | Path, split: str | None = None, shard_url: str | None = None) -> list[str]:
    return [u for _, u in shard_list(out, split, shard_url)]
