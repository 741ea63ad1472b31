"""A labelling pool: images generated from a split's sounds, for people to mark informative or not.

POOL/pool.csv lists every image (id, file, class, key, sample, run, model); POOL/pool.json says
where they came from (``runs``: each run's model and folder) and the balance wanted (SPEC 3.4: 500
informative + 500 not per class). Sampling again into the same pool with another seed adds images
and never touches labels.csv, so a pool can be grown until every class has enough of both kinds.

A pool may hold the pictures of several runs, and of several models: an id is
``<run>.<key>-s<seed>-<k>`` (the run's folder name first), so it says which run drew it. The S2I
paper drew its pool from 17 translators and kept the same number of pictures per model, because
a model leaves a fingerprint on its pictures (artefacts, blur) that judges would otherwise learn
as a hint of the label; ``balance="models"`` deals the pictures the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

import torch
from PIL import Image

from s2i_data import storage, untrusted
from s2i_data.readers import Build

from s2i_model.data import ShardStream, tensor_to_image
from s2i_model.run import Run
from s2i_model.labelling.store import POOL_CSV, append_pool_rows, pool_fields, pool_meta, read_pool

BALANCE = ("runs", "models")


def _order(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def run_name(run: Path) -> str:
    """A run's name in a pool, the first part of its pictures' ids: its folder's name."""
    return untrusted.name(Path(run).resolve().name, f"{run}: the run folder's name")


def deal(n: int, runs: dict[str, str], classes: list[int], balance: str = "runs") -> list[tuple[str, int, int]]:
    """Who draws each of ``n`` pictures, as (run, class, m), m counting that run's pictures of
    that class so far. ``runs``: {run: model}, in the order given. The pictures go round-robin to
    the groups (each run, or with ``balance="models"`` each model), a group's pictures round-robin
    to the classes, and a group's pictures of one class round-robin to its runs: every group, and
    every class within a group, gets the same share give or take one."""
    if balance not in BALANCE:
        raise ValueError(f"balance {balance!r}: use one of {', '.join(BALANCE)}")
    groups: dict[str, list[str]] = {}
    for run, model in runs.items():
        groups.setdefault(model if balance == "models" else run, []).append(run)
    order = list(groups.values())
    taken: Counter = Counter()
    out = []
    for i in range(n):
        members = order[i % len(order)]
        j = i // len(order)  # this group's j-th picture
        c = classes[j % len(classes)]
        run = members[(j // len(classes)) % len(members)]
        out.append((run, c, taken[run, c]))
        taken[run, c] += 1
    return out


def _pool_runs(out: Path, runs: dict[str, tuple[Path, str]]) -> tuple[set[str], dict]:
    """The ids already in the pool and pool.json's ``runs``, checked against the runs of this
    call: a pool from before ids named their run cannot be grown, and a run's name must keep
    meaning the same run folder and model."""
    existing: set[str] = set()
    known: dict[str, dict] = {}
    if (out / POOL_CSV).is_file():
        rows = read_pool(out)
        fields = pool_fields(out)
        if fields and not {"run", "model"} <= set(fields):
            raise ValueError(f"{out}/{POOL_CSV} is an older pool whose ids do not name their run: it can still be "
                             "labelled and trained on, but sample into a new pool to add pictures")
        existing = {r["id"] for r in rows}
        known = {r["run"]: {"model": r["model"]} for r in rows if "run" in r}
    if (out / "pool.json").is_file():
        # a pool.json that breaks its schema is refused before it is replaced
        meta_runs = pool_meta(out).get("runs", {})
        known = {run: {**meta_runs.get(run, {}), **rec} for run, rec in known.items()} | \
                {run: rec for run, rec in meta_runs.items() if run not in known}
    for run, (path, model) in runs.items():
        had = known.get(run)
        if had is None:
            continue
        if had["model"] != model:
            raise ValueError(f"{out} holds pictures of a run named {run!r} of model {had['model']!r}, and {path} is "
                             f"of {model!r}: give one of them a folder of another name")
        if "path" in had and had["path"] != str(path.resolve()):
            raise ValueError(f"{out} holds pictures of another run named {run!r} ({untrusted.printable(had['path'])}): "
                             f"give {path} a folder of another name")
    return existing, {run: dict(rec) for run, rec in known.items()}


def sample_pool(runs: Path | list[Path], data: Build | str | Path, split: str, n: int, out: Path, seed: int = 0,
                target: int = 500, device: str = "auto", batch: int = 64, balance: str = "runs") -> dict:
    """``n`` images of one or several runs (each picture's id starts with its run's folder name),
    dealt over the runs, or with ``balance="models"`` over their models (`deal`), then evenly over
    the classes and, within a class, over its sounds (a sound gives a run a second picture only
    when every sound of its class has given one).

    Everything that names a file is checked before the first is written: the build's classes
    (`Build.open`), the pool already in ``out`` (`read_pool`), each run's name and model, and each
    key; each class's folder must stay inside the pool, and each picture replaces its file
    atomically (never written through a link left in its place). The rows are appended once
    every run has drawn its pictures, so a failing run leaves the pool as it was."""
    out = Path(out)
    data = Build.open(data)
    classes = data.classes
    paths = [Path(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]
    if not paths:
        raise ValueError("no run to sample from")
    if balance not in BALANCE:
        raise ValueError(f"balance {balance!r}: use one of {', '.join(BALANCE)}")
    models: dict[str, tuple[Path, str]] = {}
    for path in paths:
        name = run_name(path)
        if name in models:
            raise ValueError(f"two runs named {name!r} ({models[name][0]}, {path}): pictures are told apart by "
                             "their run's folder name")
        opened = Run.open(path)
        if not opened.file.is_file():
            raise ValueError(f"{path} holds no trained {opened.name} ({opened.file.name}): train it first")
        models[name] = (path, opened.name)
    existing, known = _pool_runs(out, models)

    by_class: dict[int, list[tuple[str, np.ndarray]]] = {}  # raw log-mels: each run normalises its own
    for mel, _, cls, key in ShardStream(data, split, lambda m: np.asarray(m, np.float32), shuffle=False):
        by_class.setdefault(cls, []).append((untrusted.name(key, f"{data}: {split} key"), mel))
    if not by_class:
        raise ValueError(f"{data}: the {split} split has no samples")
    for sounds in by_class.values():
        sounds.sort(key=lambda s: _order(s[0], seed))
    wanted: dict[str, list[tuple[int, str, np.ndarray, int, str]]] = {name: [] for name in models}
    for name, c, m in deal(n, {name: model for name, (_, model) in models.items()}, sorted(by_class), balance):
        key, mel = by_class[c][m % len(by_class[c])]
        k = m // len(by_class[c])
        wanted[name].append((c, key, mel, k, untrusted.name(f"{name}.{key}-s{seed}-{k}",
                                                           f"{data}: picture id of run {name}, key {key}")))

    used = {w[0] for ws in wanted.values() for w in ws}
    folders = {c: Path(storage.folder_inside(out, "images", classes[c])) for c in used}
    rows = []
    for name, (path, model) in models.items():
        if not wanted[name]:
            continue
        tr = Run.open(path).model(device)
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, len(wanted[name]), batch):
            chunk = wanted[name][start:start + batch]
            chunk_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            with torch.no_grad():  # test-time dropout: each row its own picture
                images = tr.sound_pictures(torch.stack([tr.norm(w[2]) for w in chunk]), 1, chunk_seed)[:, 0].cpu()
            for (c, key, _, k, pid), img in zip(chunk, images):
                cls = classes[c]
                if pid in existing:
                    continue
                picture = Image.fromarray(tensor_to_image(img))
                storage.atomic_write(folders[c] / f"{pid}.png", lambda tmp: picture.save(tmp, format="PNG"))
                rows.append({"id": pid, "file": f"images/{cls}/{pid}.png", "class": cls, "key": key, "sample": k,
                             "run": name, "model": model})
                existing.add(pid)
        del tr
    append_pool_rows(out, rows)
    for name, (path, model) in models.items():
        known[name] = {"model": model, "path": str(path.resolve())}
    meta = {"classes": classes, "runs": known, "data": str(data), "split": split, "target": target}
    storage.atomic_write(out / "pool.json", json.dumps(meta, indent=2))
    held = read_pool(out)
    return {"added": len(rows), "total": len(existing), "pool": str(out),
            "runs": dict(Counter(r["run"] for r in held)), "models": dict(Counter(r["model"] for r in held))}
