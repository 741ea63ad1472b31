"""Read shards back, decoding only the members of the contract and never unpickling.

Shards travel between people, so the project's own readers (verify, inspect, the trainer's
loader) take raw bytes from webdataset and decode each known member themselves: ``.npy`` with
``allow_pickle=False``, images with Pillow, ``.cls`` as ASCII, ``.json`` as UTF-8. Members they do
not know are ignored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


def iter_raw(urls: list[str]) -> Iterator[dict]:
    """Raw samples of the given shards, in order, through plain webdataset.

    The caller decides which shards a process reads (the trainer deals them to workers and
    ranks itself), so webdataset's own node and worker splitting is switched off.
    """
    import webdataset as wds

    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None)
    yield from ds


def shard_urls(out: Path, split: str | None = None) -> list[str]:
    splits = [split] if split else ["train", "val", "test"]
    return [str(p) for s in splits for p in sorted((out / s).glob(f"{s}-*.tar"))]
