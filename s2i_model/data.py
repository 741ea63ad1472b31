"""Shards → tensors: a deterministic, resumable streaming dataset, normalisation, embeddings.

The order of an epoch is a function of (seed, epoch) alone: shards are permuted per epoch and
dealt to DataLoader workers round-robin, each worker shuffles through a seeded buffer, and the
DataLoader interleaves workers in a fixed order. So a run resumed at an epoch boundary sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from s2i_data.readers import Build, SampleError, decode_sample, iter_raw


class Normalizer:
    """Raw log-mel ↔ [-1, 1], from the train split's statistics recorded at build time (SPEC 2.3).

    Min-max over robust extremes (the 0.1 and 99.9 percentiles of all train values), clipped:
    the autoencoder's tanh output covers [-1, 1] and a few outliers must not squash the rest.
    """

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = float(lo), float(hi)

    @classmethod
    def from_build(cls, data: "Build | Path | str") -> "Normalizer":
        build = Build.open(data)
        stats = build.stats["train_logmel"]
        if not stats.get("count"):
            raise ValueError(f"{build}: the train split is empty, nothing to normalise with")
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
    """Samples of one split as (mel [1,128,100], image [3,96,96] in [-1,1], class, key).

    Whole shards are dealt, each epoch afresh, to (rank, DataLoader worker) slots, so no sample
    is read twice. Under DDP (``world`` > 1) with ``equal``, every rank must take the same number
    of steps with the same batch sizes: shards go to the slot with the fewest samples so far, and
    worker w of every rank yields as many samples as the smallest worker w of all ranks; the few
    samples past that sit the epoch out, others the next epoch (like DistributedSampler's
    drop_last).
    """

    def __init__(self, data: "Build | str | Path", split: str, normalizer: Normalizer, seed: int = 0,
                 shuffle: bool = True, buffer: int = 1000, rank: int = 0, world: int = 1,
                 equal: bool = True) -> None:
        self.build = build = Build.open(data)
        named = build.shards(split)
        if not named:
            raise ValueError(f"{build}: no {split} shards")
        self.data, self.split = build, split
        self.urls = [u for _, u in named]
        self.names = {u: n for n, u in named}
        self.contract = build.contract
        self.skip_bad = build.skip_bad
        # shared with the DataLoader's (forked) workers, so the main process can report the count
        self.skipped = multiprocessing.get_context().Value("i", 0)
        self.cache_dir = build.cache_dir
        self.norm = normalizer
        self.seed, self.shuffle, self.buffer = seed, shuffle, buffer
        self.rank, self.world, self.equal = rank, world, equal
        self.epoch = 0
        self.counts = shard_counts(build, named) if world > 1 else {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slots(self, workers: int) -> tuple[list[list[list[str]]], list[int] | None]:
        """This epoch's shards of every (rank, DataLoader worker), and with ``equal`` the samples
        each worker yields, the same on every rank so that every rank forms the same batches."""
        urls = list(self.urls)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}:shards").shuffle(urls)
        n = self.world * workers
        if self.world == 1 or not self.equal:
            flat = [urls[i::n] for i in range(n)]
            return [flat[r * workers:(r + 1) * workers] for r in range(self.world)], None
        # greedy: the emptiest (rank, worker) slot takes the next shard (ties: the lowest slot)
        flat = [[] for _ in range(n)]
        totals = [0] * n
        for u in urls:
            i = min(range(n), key=lambda k: (totals[k], k))
            flat[i].append(u)
            totals[i] += self.counts[u]
        caps = [min(totals[r * workers + w] for r in range(self.world)) for w in range(workers)]
        return [flat[r * workers:(r + 1) * workers] for r in range(self.world)], caps

    def _my_part(self) -> tuple[list[str], int, int | None]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        shards, caps = self.slots(nw)
        return shards[self.rank][wid], self.rank * nw + wid, None if caps is None else caps[wid]

    def __iter__(self):
        urls, slot, cap = self._my_part()
        rng = random.Random(f"{self.seed}:{self.epoch}:{slot}:samples")
        yield from buffer_shuffle(self._decoded(urls, cap), rng, self.buffer, self.shuffle)

    def _decoded(self, urls: list[str], cap: int | None):
        raws = (iter_raw(urls, self.cache_dir, self._bad if self.skip_bad else None, names=self.names,
                         contract=self.contract)
                if urls and cap != 0 else [])
        for i, raw in enumerate(raws):
            if cap is not None and i >= cap:
                break
            try:
                s = decode_sample(raw, self.contract)
            except SampleError as e:
                if not self.skip_bad:
                    raise e from None
                self._bad(e)
                continue
            yield (self.norm(s["mel"]), image_to_tensor(s["image"]), s["cls"], s["key"])

    def epoch_keys(self, workers: int, keys_of: dict[str, list[str]]) -> list[list[str]]:
        """The keys each of this rank's ``workers`` DataLoader workers yields this epoch, in order,
        computed from each shard's keys (``keys_of``) without reading a shard: the very order
        `__iter__` gives, for data held in memory (`resident.ResidentSplit`)."""
        shards, caps = self.slots(max(workers, 1))
        out = []
        for w, urls in enumerate(shards[self.rank]):
            cap = None if caps is None else caps[w]
            keys = [k for u in urls for k in keys_of.get(u, [])] if cap != 0 else []
            rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank * max(workers, 1) + w}:samples")
            out.append(list(buffer_shuffle(keys if cap is None else keys[:cap], rng, self.buffer, self.shuffle)))
        return out

    def _bad(self, e: SampleError) -> None:
        with self.skipped.get_lock():
            self.skipped.value += 1
        print(f"warning: skipped: {e}", file=sys.stderr, flush=True)


def buffer_shuffle(items, rng: random.Random, buffer: int, shuffle: bool = True):
    """webdataset-style shuffle through a buffer of ``buffer`` items, driven by ``rng`` alone (so
    the order is the same for samples and for their keys)."""
    if not shuffle:
        yield from items
        return
    buf: list = []
    for item in items:
        if len(buf) < buffer:
            buf.append(item)
            continue
        i = rng.randrange(len(buf))
        buf[i], item = item, buf[i]
        yield item
    rng.shuffle(buf)
    yield from buf


def shard_counts(build: Build, named: list[tuple[str, str]]) -> dict[str, int]:
    """Samples in each shard (by URL), from the build's manifest."""
    per = build.manifest(columns=["shard"]).groupby("shard").size()
    return {u: int(per.get(name, 0)) for name, u in named}


class _Loader(DataLoader):
    def __iter__(self):
        # A damaged sample found in a worker comes back wrapped in the worker's traceback: stop
        # with the one line that names the shard and the key instead.
        try:
            yield from super().__iter__()
        except SampleError as e:
            raise SampleError(_worker_message(e)) from None


def _worker_message(e: Exception) -> str:
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    return last.split("Error: ", 1)[1] if "Error: " in last else last


def loader(ds: ShardStream, batch_size: int, workers: int, drop_last: bool = False) -> DataLoader:
    # Workers are re-created each epoch (not persistent) so they see the new epoch number.
    return _Loader(ds, batch_size=batch_size, num_workers=min(workers, len(ds.urls)),
                   drop_last=drop_last, pin_memory=torch.cuda.is_available())


@torch.no_grad()
def compute_embeddings(encoder: torch.nn.Module, data: "Build | str | Path", split: str, norm: Normalizer,
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
