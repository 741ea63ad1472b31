"""The plan step at AudioSet scale: a 2,000,000-row segment CSV → items → plan (< 1 min, < 2 GB).

Probing needs the videos, so it is replaced here by its result: every matching row is taken to
have a 10 s file on disk (the worst case for the planner: every row becomes 10 candidate
segments). Timed: reading and matching the CSV, and planning splits, balance and shards.

    python bench/plan.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audioset_csv import write_csv  # noqa: E402

from s2i_data.classes import resolve_classes  # noqa: E402
from s2i_data.config import BuildConfig  # noqa: E402
from s2i_data.plan import plan  # noqa: E402
from s2i_data.sources.audioset import prepare_audioset  # noqa: E402

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "unbalanced_train_segments.csv"
        write_csv(csv, args.rows)
        root = Path(tmp) / "videos"
        root.mkdir()
        t0 = time.perf_counter()
        items = prepare_audioset([csv], root, resolve_classes(CLASSES))
        t1 = time.perf_counter()
        usable = [it for it in items if it.cls]  # rows of exactly one class (files "exist")
        videos = pd.DataFrame({"video_id": [it.video_id for it in usable],
                               "source": [f"/videos/{it.video_id}.mp4" for it in usable],
                               "class": [it.cls for it in usable], "status": "ok", "reason": "",
                               "window_start_s": 0.0, "window_end_s": 10.0})
        t2 = time.perf_counter()
        vids, samples, _ = plan(videos, BuildConfig(classes=CLASSES, shard_size=1000))
        t3 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.rows:,} CSV rows → {len(items):,} matching items → {len(videos):,} videos planned")
    print(f"read + match CSV: {t1 - t0:.1f} s; plan ({len(videos) * 10:,} candidate segments → "
          f"{len(samples):,} samples in {samples['shard'].nunique()} shards): {t3 - t2:.1f} s")
    print(f"total {t3 - t0:.1f} s (target < 60 s), peak RSS {rss:.0f} MiB (target < 2048 MiB)")


if __name__ == "__main__":
    main()
