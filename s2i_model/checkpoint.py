"""Checkpoints that hold everything needed to resume, written atomically.

A checkpoint is replaced only by a complete newer one (temporary file, fsync, rename), so a
crash or a non-finite loss never leaves the run without its last good state.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path, device: str | torch.device = "cpu") -> dict | None:
    if not path.exists():
        return None
    # Our own files, holding RNG states (numpy arrays, tuples): not weights-only.
    return torch.load(path, map_location=device, weights_only=False)
