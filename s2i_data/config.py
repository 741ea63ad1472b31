"""BuildConfig: every option of a build with its default; saved as build.json.

Two builds with the same `identity()` produce the same samples; a build refuses to write into a
folder whose build.json has a different identity, so shards of two configurations never mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

# Fields that do not change what is written (how fast, how loud) stay out of the identity.
_RUNTIME_ONLY = {"out", "workers", "strict", "executor", "scheduler", "progress"}


@dataclass
class BuildConfig:
    source: str = "folders"  # folders | audioset
    root: str = ""
    csvs: list[str] = field(default_factory=list)
    clips: bool = False  # audioset: every <YTID>.<ext> is already cut to its segment
    classes: list[str] = field(default_factory=list)  # resolved aliases, in class_index order
    out: str = ""
    segment_seconds: float = 1.0
    sample_rate: int = 16000
    image_size: int = 96
    splits: tuple[float, float, float] = (0.80, 0.09, 0.11)  # train / val / test, by video
    per_class: int | None = None  # samples per class and split; None: the smallest class's count
    seed: int = 0
    shard_size: int = 1000  # target samples per shard; whole videos stay in one shard
    keep_audio: bool = False  # also store KEY.flac (the segment's 16 kHz mono waveform)
    image_format: str = "png"  # png (lossless) | jpg
    limit: int | None = None  # use at most this many videos per class (quick trials)
    workers: int = 0  # 0: all cores
    strict: bool = False  # any failed or skipped input makes the exit code non-zero
    executor: str = "local"
    scheduler: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.splits = tuple(float(x) for x in self.splits)  # type: ignore[assignment]
        if len(self.splits) != 3 or any(x < 0 for x in self.splits) or abs(sum(self.splits) - 1) > 1e-6:
            raise ValueError(f"--splits must be three non-negative proportions summing to 1, got {self.splits}")
        if self.segment_seconds <= 0:
            raise ValueError("--segment-seconds must be positive")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"--image-format must be png or jpg, got {self.image_format!r}")
        if self.shard_size < 1:
            raise ValueError("--shard-size must be at least 1")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError("--per-class must be at least 1")
        if self.sample_rate < 8000:
            raise ValueError("--sample-rate must be at least 8000")
        if self.image_size < 8:
            raise ValueError("--image-size must be at least 8")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["splits"] = list(self.splits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def identity(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_ONLY}

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
