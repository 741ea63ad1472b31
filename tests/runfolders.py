"""Run folders the tests make from other runs."""

from __future__ import annotations

import shutil
from pathlib import Path


def same_autoencoder(src: Path, dst: Path) -> Path:
    """A new run folder holding ``src``'s finished autoencoder: training there starts the
    translator from the very same embeddings."""
    dst.mkdir()
    for name in ("autoencoder.pt", "autoencoder.json"):
        shutil.copy2(src / name, dst / name)
    return dst
