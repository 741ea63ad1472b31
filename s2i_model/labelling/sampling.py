"""A labelling pool: images generated from a split's sounds, for people to mark informative or not.

POOL/pool.csv lists every image (id, file, class, key, sample); POOL/pool.json says where they
came from and the balance wanted (SPEC 3.4: 500 informative + 500 not per class). Sampling again
into the same pool with another seed adds images and never touches labels.csv, so a pool can be
grown until every class has enough of both kinds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image

from s2i_data import storage, untrusted
from s2i_data.readers import Build

from s2i_model.data import ShardStream, tensor_to_image
from s2i_model.run import load_model
from s2i_model.labelling.store import POOL_CSV, append_pool_rows, pool_meta, read_pool


def _order(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def sample_pool(run: Path, data: Build | str | Path, split: str, n: int, out: Path, seed: int = 0, target: int = 500,
                device: str = "auto", batch: int = 64) -> dict:
    """``n`` images spread evenly over the classes and, within a class, over its sounds (a sound
    gives a second picture only when every sound of its class has given one).

    Everything that names a file is checked before the first is written: the build's classes
    (`Build.open`), the pool already in ``out`` (`read_pool`), and each key; each class's folder
    must stay inside the pool, and each picture replaces its file atomically (never written
    through a link left in its place)."""
    out = Path(out)
    data = Build.open(data)
    classes = data.classes
    existing = {r["id"] for r in read_pool(out)} if (out / POOL_CSV).is_file() else set()
    if (out / "pool.json").is_file():
        pool_meta(out)  # a pool.json that breaks its schema is refused before it is replaced
    tr = load_model(run, device)
    by_class: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for mel, _, cls, key in ShardStream(data, split, tr.norm, shuffle=False):
        by_class.setdefault(cls, []).append((untrusted.name(key, f"{data}: {split} key"), mel))
    if not by_class:
        raise ValueError(f"{data}: the {split} split has no samples")
    for sounds in by_class.values():
        sounds.sort(key=lambda s: _order(s[0], seed))
    # n images dealt to classes round-robin, then to each class's sounds round-robin
    wanted: list[tuple[int, str, torch.Tensor, int, str]] = []
    present = sorted(by_class)
    for i in range(n):
        c = present[i % len(present)]
        j = i // len(present)
        key, mel = by_class[c][j % len(by_class[c])]
        k = j // len(by_class[c])
        wanted.append((c, key, mel, k, untrusted.name(f"{key}-s{seed}-{k}", f"{data}: picture id of key {key}")))

    folders = {c: Path(storage.folder_inside(out, "images", classes[c])) for c in {w[0] for w in wanted}}
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(wanted), batch):
        chunk = wanted[start:start + batch]
        chunk_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        with torch.no_grad():  # test-time dropout: each row its own picture
            images = tr.sound_pictures(torch.stack([w[2] for w in chunk]), 1, chunk_seed)[:, 0].cpu()
        for (c, key, _, k, pid), img in zip(chunk, images):
            name = classes[c]
            if pid in existing:
                continue
            picture = Image.fromarray(tensor_to_image(img))
            storage.atomic_write(folders[c] / f"{pid}.png", lambda tmp: picture.save(tmp, format="PNG"))
            rows.append({"id": pid, "file": f"images/{name}/{pid}.png", "class": name, "key": key, "sample": k})
            existing.add(pid)
    append_pool_rows(out, rows)
    meta = {"classes": classes, "run": str(run), "data": str(data), "split": split, "target": target}
    storage.atomic_write(out / "pool.json", json.dumps(meta, indent=2))
    return {"added": len(rows), "total": len(existing), "pool": str(out)}
