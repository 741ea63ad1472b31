"""verify: prove that a built folder keeps the data contract (SPEC 2.6).

Reads every shard back (`readers.iter_raw`: a bounded tar reader, webdataset's grouping) and
checks it against the manifests. Every
violation becomes one line in the report; the CLI exits non-zero if there is any.

The content of samples is checked too: by default `deep.DEFAULT_PER_SPLIT` samples per split
(chosen by a hash of their key, the same every run), with ``deep`` every sample, are recomputed
from their sources apart from the builder and compared (see `deep`). A source that is gone or
remote is a note ("cannot check"), not a failure: shards may outlive the files they came from.

A build of within-class factors (build.json's ``factors``, issue 28) has each sample's factor
values checked against their definitions (`s2i_data.factors`), in the manifest and videos.parquet,
and in each KEY.json against its manifest row (an empty factor is null there).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .deep import DEFAULT_PER_SPLIT, ContentCheck, Sample, sampled_keys, segment_starts
from .plan import SPLITS
from .readers import IMAGE_EXTS, MEMBERS, Build, SampleError, decode_sample, iter_raw, unknown_members
from .shards import MelStats
from .untrusted import factor_problems


@dataclass
class Report:
    checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why: not failures
    samples: int = 0
    shards: int = 0

    def check(self, ok: bool, what: str, detail: str = "") -> None:
        (self.checks if ok else self.errors).append(what if ok else f"{what}: {detail}")


def verify(build: Build | str | Path, max_errors: int = 50, shard_url: str | None = None, cache_dir: str | None = None,
           deep: bool = False, content_samples: int = DEFAULT_PER_SPLIT, workers: int | None = None) -> Report:
    """Every check of the shard contract on a `Build` (or a folder or fsspec URL to open as one;
    ``shard_url`` and ``cache_dir`` override how its shards are reached). ``content_samples`` per
    split (every sample with ``deep``; 0: none) are recomputed from their sources, ``workers``
    sources at a time."""
    rep = Report()
    build = Build.open(build).with_access(shard_url, cache_dir)
    cfg, stats = build.config, build.stats
    # factor values are checked below, each problem a line of its own, not refused whole
    manifest = build.manifest(check_factors=False)
    videos = build.manifest(name="videos.parquet", check_factors=False)

    rep.check(manifest["key"].is_unique, "manifest keys are unique",
              f"{manifest['key'].duplicated().sum()} duplicates")
    rep.check(not manifest["key"].str.contains(r"\.", regex=True).any(), "keys contain no dots")
    rep.check(stats.get("complete", False), "all planned shards are written",
              f"pending: {', '.join(stats.get('pending_shards', [])[:5])} (re-run the build to finish)")

    rows = manifest.set_index("key")
    content_keys = set(manifest["key"]) if deep else sampled_keys(manifest, content_samples)
    content = ContentCheck(sample_rate=int(cfg["sample_rate"]), seconds=float(cfg["segment_seconds"]),
                           image_size=build.image_size, workers=workers or min(8, os.cpu_count() or 1),
                           segments=segment_starts(manifest))  # each video decoded from where the builder began
    seen: Counter = Counter()
    mel = MelStats()
    bad: list[str] = []
    named = build.shards()
    urls = [u for _, u in named]
    name_of = {u: n for n, u in named}
    rep.shards = len(urls)
    on_disk = set(name_of.values())
    listed = {name for split in SPLITS for name in stats["shards"].get(split, [])}
    rep.check(on_disk == listed and set(manifest["shard"]) <= listed,
              "the shards on disk are exactly those of this build",
              f"unexpected {sorted(on_disk - listed)[:3]}, missing {sorted(listed - on_disk)[:3]}")
    contract = build.contract
    # a damaged shard is one problem of its own; the shards after it are still read
    read_from: Counter = Counter()
    for raw in iter_raw(urls, build.cache_dir, on_shard_error=lambda e: bad.append(str(e)), names=name_of,
                        contract=contract) if urls else []:
        key = raw["__key__"]
        shard = raw["__shard__"]
        seen[key] += 1
        read_from[shard] += 1
        if key not in rows.index:
            bad.append(f"{shard}: {key}: not in manifest.parquet")
            continue
        extra = unknown_members(raw)
        if extra:
            bad.append(f"{shard}: {key}: member(s) {', '.join(extra)} outside the contract "
                       f"({', '.join(sorted(MEMBERS))}); a reader that decodes them could run code")
            continue
        try:
            s = decode_sample(raw, contract)
        except SampleError as e:
            bad.append(str(e))
            continue
        row = rows.loc[key]
        problems = []
        if shard != row["shard"]:
            problems.append(f"in {shard}, manifest says {row['shard']}")
        m = s["mel"]
        if s["image_mode"] != "RGB":
            problems.append(f"image is {s['image_mode']}, expected RGB")
        if s["cls"] != row["class_index"]:
            problems.append(f"cls {s['cls']} != class_index {row['class_index']}")
        meta_expected = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        meta_expected["key"] = key
        for k, v in meta_expected.items():
            got = s["meta"].get(k)
            if isinstance(v, float) and math.isnan(v):  # an empty factor: null (or absent) in KEY.json
                if got is not None:
                    problems.append(f"json {k}={got!r} != manifest empty")
            elif isinstance(v, float) and isinstance(got, (int, float)):
                if abs(v - got) > 1e-6:
                    problems.append(f"json {k}={got} != manifest {v}")
            elif got != v:
                problems.append(f"json {k}={got!r} != manifest {v!r}")
        if problems:
            bad.append(f"{shard}: {key}: " + "; ".join(problems))
        else:
            if row["split"] == "train":
                mel.add(m)
            if key in content_keys:
                content.add(Sample(shard=shard, key=key, source=str(row["source"]), start_s=float(row["start_s"]),
                                   mel=m, image=s["image"], image_ext=next(e for e in IMAGE_EXTS if e in raw),
                                   flac=s.get("flac")))
        rep.samples += 1
    content.flush()
    per_shard = manifest.groupby("shard").size()
    for shard in sorted(set(name_of.values()) & set(per_shard.index)):
        if read_from[shard] < per_shard[shard]:
            bad.append(f"{shard}: {read_from[shard]} of its {per_shard[shard]} samples read (damaged or truncated)")
    if bad:  # one line per problem, each naming its shard and key
        rep.errors += _capped(bad, max_errors, "problems")
    else:
        rep.checks.append("every sample decodes and matches its manifest row")
    # one line per sample whose content differs from its source, each naming shard, key and by how much
    rep.errors += _capped(content.errors, max_errors, "samples whose content differs")
    if content.checked and not content.errors:
        what = "every sample" if deep else f"{content_samples} sampled per split (--deep: every sample)"
        rep.checks.append(f"content of {what}: {content.checked} recomputed from their sources match "
                          "(mel.npy, image, flac when kept)")
    rep.notes += content.notes
    missing = set(rows.index) - set(seen)
    dup = [k for k, n in seen.items() if n > 1]
    rep.check(not missing, "every manifest row is present in the shards",
              f"{len(missing)} missing, e.g. {sorted(missing)[:3]}")
    rep.check(not dup, "no sample appears twice", f"{len(dup)} duplicated, e.g. {dup[:3]}")

    counts = manifest.groupby(["split", "class"]).size().unstack(fill_value=0)
    balanced = True
    for split in SPLITS:
        per = counts.loc[split].to_dict() if split in counts.index else {}
        full = {c: int(per.get(c, 0)) for c in stats["classes"]}
        balanced &= len(set(full.values())) <= 1
        rep.check(len(set(full.values())) <= 1, f"{split}: every class has the same count ({next(iter(full.values()), 0)})",
                  f"counts {full}")
        rep.check(full == stats["counts"][split], f"{split}: stats.json counts match the manifest",
                  f"stats {stats['counts'][split]} vs manifest {full}")
    # the flag is what a reader of stats.json sees (README: a failed video can unbalance a split)
    rep.check(stats.get("balanced") is balanced, f"stats.json says balanced: {str(balanced).lower()}, as the counts are",
              f"it says {json.dumps(stats.get('balanced'))}")
    splits_per_video = manifest.groupby("video_id")["split"].nunique()
    rep.check((splits_per_video <= 1).all(), "no video is in two splits",
              f"{(splits_per_video > 1).sum()} videos span splits")
    vsplit = videos.set_index("video_id")["split"]
    mism = manifest[manifest["split"] != manifest["video_id"].map(vsplit)]
    rep.check(mism.empty, "manifest splits agree with videos.parquet", f"{len(mism)} rows disagree")
    used = manifest.groupby("video_id").size()
    vs = videos.set_index("video_id")["segments"]
    rep.check(bool((used == vs.reindex(used.index)).all()) and int(vs.sum()) == len(manifest),
              "videos.parquet segment counts match the manifest")
    rep.check(set(videos["status"]) <= {"ok", "skipped", "failed"}, "video statuses are ok|skipped|failed")
    no_reason = videos[(videos["status"] != "ok") & (videos["reason"].fillna("") == "")]
    rep.check(no_reason.empty, "every skipped or failed input has a reason", f"{len(no_reason)} without")

    _check_factors(rep, build, manifest, videos, max_errors)

    tl = stats.get("train_logmel", {})
    if mel.count and tl.get("count"):
        summ = mel.summary()
        close = (tl["count"] == summ["count"]
                 and np.allclose(tl["mean"], summ["mean"], rtol=1e-6, atol=1e-6)
                 and np.allclose(tl["std"], summ["std"], rtol=1e-5, atol=1e-5))
        rep.check(close, "train log-mel statistics match the shards", "stats.json train_logmel differs")
    return rep


def _check_factors(rep: Report, build: Build, manifest, videos, max_errors: int) -> None:
    """A build of within-class factors (issue 28): every manifest row of a class with factors holds
    each of its class's factors, in range (whole when counted), and the other classes' empty; so
    does every usable row of videos.parquet. One FAIL line per problem."""
    fs = build.factors
    if not fs:
        return
    problems = factor_problems(manifest, "manifest.parquet", fs)
    problems += factor_problems(videos, "videos.parquet", fs, key="video_id",
                                rows=(videos["status"] == "ok").to_numpy())
    rep.errors += _capped(problems, max_errors, "factor problems")
    if not problems:
        preset = build.build_json["factors"]["preset"]
        rep.checks.append(f"every sample carries its class's factors of preset {preset!r} in range "
                          f"({', '.join(f.column for f in fs)}), other classes' empty")


def _capped(lines: list[str], most: int, what: str) -> list[str]:
    return lines[:most] + ([f"... and {len(lines) - most} more {what}"] if len(lines) > most else [])
