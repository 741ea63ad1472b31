"""Benchmark: `prepare_audioset` on a synthetic AudioSet segment CSV of unbalanced_train size.

Writes a CSV in the real format (three ``#`` lines, ``YTID, start, end, "label,label"`` rows with
random 11-character YTIDs and 1-4 labels drawn from ``class_labels_indices.csv``) to a temporary
folder, then times `prepare_audioset` on it, in a fresh process, with an empty video folder (so
every matching row becomes a "no video file" item). Prints rows/s, wall time and peak RSS.

    python bench/audioset_csv.py [--rows 2000000] [--classes baby dog rail fireworks water]
    python bench/audioset_csv.py --csv unbalanced_train_segments.csv   # time a real CSV
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Heavy imports live in the functions: ru_maxrss survives fork+exec, so the parent must stay small
# for the child's figure to be prepare_audioset's own.

PAPER_CLASSES = ["baby", "dog", "rail", "fireworks", "water"]
_YTID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def write_csv(path: Path, rows: int, seed: int = 0, block: int = 200_000, most_labels: int = 4,
              odd_windows: float = 0.0) -> None:
    """A synthetic segment CSV in the real format: 1 to ``most_labels`` labels a row, windows
    starting on a whole second, ``odd_windows`` of them at a millisecond instead (the real CSVs
    have both)."""
    import numpy as np

    from s2i_data.classes import manifest_path

    with open(manifest_path("audioset/class_labels_indices.csv"), encoding="utf-8") as f:
        mids = np.array([row["mid"] for row in csv.DictReader(f)])
    chars = np.array(list(_YTID_CHARS))
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Segments csv created Sun Mar  5 10:54:31 2017\n")
        f.write(f"# num_ytids={rows}, num_segs={rows}, num_unique_labels=527, "
                f"num_positive_labels={rows * (1 + most_labels) // 2}\n")
        f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        for first in range(0, rows, block):
            n = min(block, rows - first)
            ytids = chars[rng.integers(0, 64, (n, 11))].view("<U11").ravel()
            ms = rng.integers(0, 590, n) * 1000 + np.where(rng.random(n) < odd_windows, rng.integers(0, 1000, n), 0)
            counts = rng.integers(1, most_labels + 1, n)
            labels = mids[rng.integers(0, len(mids), (n, most_labels))]
            f.write("".join(
                f'{y}, {s // 1000}.{s % 1000:03d}, {s // 1000 + 10}.{s % 1000:03d}, "{",".join(lab[:c])}"\n'
                for y, s, c, lab in zip(ytids.tolist(), ms.tolist(), counts.tolist(), labels.tolist(), strict=True)))


def time_prepare(csv_path: Path, root: Path, class_names: list[str]) -> None:
    """Time `prepare_audioset` in this process and print the figures."""
    from s2i_data.classes import resolve_classes
    from s2i_data.sources.audioset import prepare_audioset

    classes = resolve_classes(class_names)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    items = prepare_audioset([csv_path], root, classes)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open(csv_path, "rb") as f:
        rows = sum(1 for line in f if not line.startswith(b"#"))
    print(f"prepare_audioset: {wall:.2f} s, {rows / wall:,.0f} rows/s, "
          f"{len(items):,} items ({sum(i.reason is None for i in items):,} usable)")
    print(f"peak RSS: {peak / 1024:.0f} MiB (after imports: {rss_before / 1024:.0f} MiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--classes", nargs="+", default=PAPER_CLASSES)
    parser.add_argument("--csv", type=Path, help="time this CSV instead of generating one")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)  # child: generate only
    args = parser.parse_args(argv)
    if args.write is not None:
        write_csv(args.write, args.rows)
        return
    if args.csv is not None:
        with tempfile.TemporaryDirectory() as root:
            time_prepare(args.csv, Path(root), args.classes)
        return
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "unbalanced_train_segments.csv"
        t0 = time.perf_counter()
        write = [sys.executable, __file__, "--write", str(csv_path), "--rows", str(args.rows)]
        subprocess.run(write, check=True)
        print(f"wrote {args.rows:,} rows ({csv_path.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f} s")
        # A fresh process, so that peak RSS is prepare_audioset's and not the generator's.
        cmd = [sys.executable, __file__, "--csv", str(csv_path), "--classes", *args.classes]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    sys.exit(main())
