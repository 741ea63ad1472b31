"""Shards → tensors: a deterministic, resumable streaming dataset, normalisation, embeddings.

The order of an epoch is a function of (seed, epoch) alone: shards are permuted per epoch and
dealt to DataLoader workers round-robin, each worker shuffles through a seeded buffer, and the
DataLoader interleaves workers in a fixed order. So a run resumed at an epoch boundary sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from s2i_data.readers import decode_sample, iter_raw, shard_urls


class Normalizer:
    """Raw log-mel ↔ [-1, 1], from the train split's statistics recorded at build time (SPEC 2.3).

    Min-max over robust extremes (the 0.1 and 99.9 percentiles of all train values), clipped:
    the autoencoder's tanh output covers [-1, 1] and a few outliers must not squash the rest.
    """

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)

    @classmethod
    def from_build(cls, data: Path | str) -> "Normalizer":
        stats = json.loads((Path(data) / "stats.json").read_text())["train_logmel"]
        if not stats.get("count"):
            raise ValueError(f"{data}: the train split is empty, nothing to normalise with")
        return cls(stats["p0.1"], stats["p99.9"])

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi}

    def __call__(self, mel: np.ndarray) -> torch.Tensor:
        """[time, mel] raw log-mel → [1, mel, time] in [-1, 1] (the networks' orientation)."""
        x = (np.asarray(mel, np.float32).T - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0
        return torch.from_numpy(np.clip(x, -1.0, 1.0)[None].copy())


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [-1, 1] → uint8 [H, W, 3]."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class ShardStream(IterableDataset):
    """Samples of one split as (mel [1,128,100], image [3,96,96] in [-1,1], class, key)."""

    def __init__(self, data: str | Path, split: str, normalizer: Normalizer, seed: int = 0,
                 shuffle: bool = True, buffer: int = 1000, rank: int = 0, world: int = 1) -> None:
        self.urls = shard_urls(Path(data), split)
        if not self.urls:
            raise ValueError(f"{data}: no {split} shards")
        self.norm = normalizer
        self.seed, self.shuffle, self.buffer = seed, shuffle, buffer
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_urls(self) -> tuple[list[str], int]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(urls)
        slot, slots = self.rank * nw + wid, self.world * nw
        return urls[slot::slots], slot

    def __iter__(self):
        urls, slot = self._my_urls()
        rng = random.Random(f"{self.seed}:{self.epoch}:{slot}:samples")
        buf: list = []
        for raw in iter_raw(urls) if urls else []:
            s = decode_sample(raw)
            item = (self.norm(s["mel"]), image_to_tensor(s["image"]), s["cls"], s["key"])
            if not self.shuffle:
                yield item
                continue
            if len(buf) < self.buffer:
                buf.append(item)
                continue
            i = rng.randrange(len(buf))
            buf[i], item = item, buf[i]
            yield item
        rng.shuffle(buf)
        yield from buf


def loader(ds: ShardStream, batch_size: int, workers: int, drop_last: bool = False) -> DataLoader:
    # Workers are re-created each epoch (not persistent) so they see the new epoch number.
    return DataLoader(ds, batch_size=batch_size, num_workers=min(workers, len(ds.urls)),
                      drop_last=drop_last, pin_memory=torch.cuda.is_available())


@torch.no_grad()
def compute_embeddings(encoder: torch.nn.Module, data: str | Path, split: str, norm: Normalizer,
                       device: torch.device, batch_size: int = 128, workers: int = 2) -> dict:
    """{key: embedding} of every sample of a split through the frozen encoder, and their classes."""
    encoder.eval()
    ds = ShardStream(data, split, norm, shuffle=False)
    keys, embs, classes = [], [], []
    for mel, _, cls, key in loader(ds, batch_size, workers):
        embs.append(encoder(mel.to(device)).float().cpu())
        keys += list(key)
        classes.append(cls)
    return {"keys": keys, "emb": torch.cat(embs) if embs else torch.zeros(0),
            "cls": torch.cat(classes) if classes else torch.zeros(0, dtype=torch.long)}
