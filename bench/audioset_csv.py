"""Benchmark: `prepare_audioset` on a synthetic AudioSet segment CSV of unbalanced_train size.

Writes a CSV in the real format (three ``#`` lines, ``YTID, start, end, "label,label"`` rows with
random 11-character YTIDs and 1-4 labels drawn from ``class_labels_indices.csv``) to a temporary
folder, then times `prepare_audioset` on it with an empty video folder (so every matching row
becomes a "no video file" item). Prints rows/s, wall time and peak RSS.

    python bench/audioset_csv.py [--rows 2000000] [--classes baby dog rail fireworks water]
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from s2i_data.classes import manifest_path, resolve_classes
from s2i_data.sources.audioset import prepare_audioset

_YTID_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))


def _mids() -> np.ndarray:
    with open(manifest_path("audioset/class_labels_indices.csv"), encoding="utf-8") as f:
        return np.array([row["mid"] for row in csv.DictReader(f)])


def write_csv(path: Path, rows: int, seed: int = 0, block: int = 200_000) -> None:
    rng = np.random.default_rng(seed)
    mids = _mids()
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Segments csv created Sun Mar  5 10:54:31 2017\n")
        f.write(f"# num_ytids={rows}, num_segs={rows}, num_unique_labels=527, "
                f"num_positive_labels={rows * 2}\n")
        f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        for first in range(0, rows, block):
            n = min(block, rows - first)
            ytids = _YTID_CHARS[rng.integers(0, 64, (n, 11))].view("<U11").ravel()
            starts = rng.integers(0, 60, n) * 10
            counts = rng.integers(1, 5, n)
            labels = mids[rng.integers(0, len(mids), (n, 4))]
            lines = [
                f'{y}, {s}.000, {s + 10}.000, "{",".join(lab[:c])}"\n'
                for y, s, c, lab in zip(ytids, starts, counts, labels, strict=True)
            ]
            f.write("".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--classes", nargs="+", default=["baby", "dog", "rail", "fireworks", "water"])
    args = parser.parse_args(argv)
    classes = resolve_classes(args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, root = Path(tmp) / "unbalanced_train_segments.csv", Path(tmp) / "videos"
        root.mkdir()
        t0 = time.perf_counter()
        write_csv(csv_path, args.rows)
        print(f"wrote {args.rows:,} rows ({csv_path.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f} s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        items = prepare_audioset([csv_path], root, classes)
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"prepare_audioset: {wall:.2f} s, {args.rows / wall:,.0f} rows/s, "
          f"{len(items):,} items ({sum(i.reason is None for i in items):,} usable)")
    print(f"peak RSS: {peak / 1024:.0f} MiB (before prepare_audioset: {rss_before / 1024:.0f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
