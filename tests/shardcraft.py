"""Damaged and hostile shards for the tests, made from a real build by rewriting its tar files."""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np


class Planted:
    """A pickle that runs a command when unpickled: what a hostile shard would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def copy_build(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]


def write_members(shard: Path, items: list[tuple[str, bytes]]) -> None:
    with tarfile.open(shard, "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def replace_member(shard: Path, suffix: str, data: bytes, index: int = 0, add: bool = False) -> str:
    """Replace (or with ``add`` add) the member ``KEY.suffix`` of the ``index``-th sample of
    ``shard``; returns that sample's key."""
    items = members(shard)
    key = list(dict.fromkeys(name.split(".", 1)[0] for name, _ in items))[index]
    name = f"{key}.{suffix}"
    if add:
        last = max(i for i, (n, _) in enumerate(items) if n.startswith(key + "."))
        items.insert(last + 1, (name, data))
    else:
        assert any(n == name for n, _ in items), f"{shard} has no {name}"
        items = [(n, data if n == name else d) for n, d in items]
    write_members(shard, items)
    return key


def object_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real 2x2 PNG whose header claims ``width`` x ``height`` (CRC fixed, so it parses)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8  # after the signature: length, b"IHDR", 13 bytes of data, CRC
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", width, height)
    data[ihdr + 21:ihdr + 25] = struct.pack(">I", zlib.crc32(bytes(data[ihdr + 4:ihdr + 21])))
    return bytes(data)


def nested_json(depth: int = 30_000) -> bytes:
    return b"[" * depth + b"]" * depth


# ---- edits that keep a build readable but change what it holds (the content and contract tests)

def keys_of(shard: Path) -> list[str]:
    return list(dict.fromkeys(name.split(".", 1)[0] for name, _ in members(shard)))


def member(shard: Path, key: str, suffix: str) -> bytes:
    return dict(members(shard))[f"{key}.{suffix}"]


def set_member(shard: Path, key: str, suffix: str, data: bytes) -> None:
    name = f"{key}.{suffix}"
    items = members(shard)
    assert any(n == name for n, _ in items), f"{shard} has no {name}"
    write_members(shard, [(n, data if n == name else d) for n, d in items])


def swap_members(shard: Path, suffix: str, a: str, b: str) -> None:
    """Give sample ``a`` the ``suffix`` member of ``b`` and the other way round; all else stays."""
    da, db = member(shard, a, suffix), member(shard, b, suffix)
    set_member(shard, a, suffix, db)
    set_member(shard, b, suffix, da)


def drop_sample(shard: Path, key: str) -> None:
    write_members(shard, [(n, d) for n, d in members(shard) if n.split(".", 1)[0] != key])


def repeat_sample(shard: Path, key: str) -> None:
    """Append a second copy of sample ``key`` at the end of ``shard`` (a separate sample for a
    reader: members of one key are grouped only while they are adjacent)."""
    items = members(shard)
    write_members(shard, items + [(n, d) for n, d in items if n.split(".", 1)[0] == key])


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def write_parquet(df, path: Path) -> None:
    """As the builder writes its manifests (fixed Arrow types, no pandas metadata)."""
    from s2i_data.build import _write_parquet

    _write_parquet(Path(path), df)
