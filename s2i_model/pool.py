"""A labelling pool: images generated from a split's sounds, for people to mark informative or not.

POOL/pool.csv lists every image (id, file, class, key, sample); POOL/pool.json says where they
came from and the balance wanted (SPEC 3.4: 500 informative + 500 not per class). Sampling again
into the same pool with another seed adds images and never touches labels.csv, so a pool can be
grown until every class has enough of both kinds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import torch
from PIL import Image

from s2i_data.readers import read_build_json

from .data import ShardStream, tensor_to_image
from .imagine import Translator

FIELDS = ("id", "file", "class", "key", "sample")


def _order(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def sample_pool(run: Path, data: str | Path, split: str, n: int, out: Path, seed: int = 0, target: int = 500,
                device: str = "auto", batch: int = 64) -> dict:
    """``n`` images spread evenly over the classes and, within a class, over its sounds (a sound
    gives a second picture only when every sound of its class has given one)."""
    classes = read_build_json(data)["classes"]
    tr = Translator.load(run, device)
    by_class: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for mel, _, cls, key in ShardStream(data, split, tr.norm, shuffle=False):
        by_class.setdefault(cls, []).append((key, mel))
    if not by_class:
        raise ValueError(f"{data}: the {split} split has no samples")
    for sounds in by_class.values():
        sounds.sort(key=lambda s: _order(s[0], seed))
    # n images dealt to classes round-robin, then to each class's sounds round-robin
    wanted: list[tuple[int, str, torch.Tensor, int]] = []
    present = sorted(by_class)
    for i in range(n):
        c = present[i % len(present)]
        j = i // len(present)
        key, mel = by_class[c][j % len(by_class[c])]
        wanted.append((c, key, mel, j // len(by_class[c])))

    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "pool.csv"
    existing = {r["id"] for r in read_pool_rows(index_path)}
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(wanted), batch):
        chunk = wanted[start:start + batch]
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            z = tr.encoder(torch.stack([m for _, _, m, _ in chunk]).to(tr.device))
            images = tr.generator(z).cpu()  # test-time dropout: each row its own picture
        for (c, key, _, k), img in zip(chunk, images):
            name = classes[c]
            pid = f"{key}-s{seed}-{k}"
            if pid in existing:
                continue
            rel = f"images/{name}/{pid}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(tensor_to_image(img)).save(out / rel)
            rows.append({"id": pid, "file": rel, "class": name, "key": key, "sample": k})
            existing.add(pid)
    _append_rows(index_path, rows)
    meta = {"classes": classes, "run": str(run), "data": str(data), "split": split, "target": target}
    tmp = out / ".pool.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / "pool.json")
    return {"added": len(rows), "total": len(existing), "pool": str(out)}


def read_pool_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
