"""Data resident on the device: a split read once into device memory, then drawn by index.

Streaming decodes every PNG and .npy of a split every epoch; a GPU then waits on the CPU (about
600 samples/s a loader worker, docs/performance.md). A split that fits a memory budget is read
once instead: log-mels as the normalised float32 the networks take (bit for bit what the stream
gives), frames as uint8 (turned into [-1, 1] per batch with the stream's own arithmetic). VEGAS's
49k pairs are ~1.4 GB of frames and ~2.5 GB of float32 log-mels.

Each epoch's batches are the stream's batches, key for key: `ShardStream.epoch_keys` deals the
shards to (rank, worker) slots and shuffles each slot's keys exactly as the stream's workers
would, and `interleave` forms the batches in the order a DataLoader takes them from its workers.
So losses are the same to the last bit with or without it (tested), resume included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from s2i_data.readers import Build

from s2i_model.data import ShardStream, loader

CHOICES = ("auto", "on", "off")


def interleave(per_worker: list[list[str]], batch_size: int, drop_last: bool = False) -> list[list[str]]:
    """The batches a DataLoader forms from iterable-style workers: each worker batches its own
    samples (its last batch short unless ``drop_last``), and batches are taken from the workers
    in turn; a worker that has no more drops out of the turn."""
    queues = []
    for keys in per_worker:
        batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        queues.append(batches)
    out, i = [], [0] * len(queues)
    active = [w for w in range(len(queues)) if queues[w]]
    while active:
        still = []
        for w in active:
            out.append(queues[w][i[w]])
            i[w] += 1
            if i[w] < len(queues[w]):
                still.append(w)
        active = still
    return out


def split_bytes(data: Build | str, split: str, mel: bool, image: bool) -> int:
    build = Build.open(data)
    n, c = build.size(split), build.contract
    return n * ((c.frames * c.mel_bins * 4 if mel else 0) + (3 * c.image_size ** 2 if image else 0))


BUDGET_ENV = "S2I_DATA_ON_DEVICE_MIB"


def budget(device: torch.device) -> int:
    """Bytes a resident split may take: 40 % of the GPU's free memory (the rest is the networks'
    and their activations'), or 25 % of the memory the system has available on a CPU; or
    $S2I_DATA_ON_DEVICE_MIB MiB when set (a machine shared with other jobs, and the tests)."""
    if asked := os.environ.get(BUDGET_ENV, "").strip():
        try:
            mib = float(asked)
        except ValueError:
            mib = -1.0
        if not 0 <= mib < float("inf"):
            raise ValueError(f"{BUDGET_ENV} must be a number of MiB, 0 or more, not {asked!r}")
        return int(mib * 2**20)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(0.4 * free)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return int(0.25 * avail)


def wanted(choice: str, data: str, splits: tuple[str, ...], device: torch.device, mel: bool, image: bool,
           log=print) -> bool:
    """Whether to hold ``splits`` on the device: ``on``, ``off``, or ``auto`` (when they fit)."""
    if choice not in CHOICES:
        raise ValueError(f"--data-on-device must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice != "auto":
        return choice == "on"
    need = sum(split_bytes(data, s, mel, image) for s in splits)
    room = budget(device)
    if need > room:
        log(f"data streamed from the shards: the {'+'.join(splits)} split needs {need / 2**30:.2f} GiB, "
            f"more than the {room / 2**30:.2f} GiB budget on {device.type}")
        return False
    return True


@dataclass
class ResidentSplit:
    """One split in device memory, in the order it was read, with each shard's keys."""

    keys: list[str]
    keys_of: dict[str, list[str]]  # shard URL -> its keys in tar order
    mel: torch.Tensor | None  # float32 [N, 1, 128, frames], normalised
    image: torch.Tensor | None  # uint8 [N, 3, H, W]
    cls: torch.Tensor  # int64 [N]
    skipped: int = 0  # damaged samples left out when it was read (--skip-bad-samples)
    index: dict[str, int] = field(init=False)  # key -> row

    def __post_init__(self) -> None:
        self.index = {k: i for i, k in enumerate(self.keys)}

    @classmethod
    def load(cls, stream: ShardStream, device: torch.device, mel: bool = True, image: bool = True,
             workers: int = 2) -> "ResidentSplit":
        """Read every sample of ``stream``'s split once (in parallel, through the stream's own
        decoding) and keep what is asked for on ``device``."""
        reader = ShardStream(stream.build, stream.split, stream.norm, shuffle=False)
        keys, mels, images, classes = [], [], [], []
        with torch.random.fork_rng(devices=[]):  # the reading DataLoader's seed draw leaves training's RNG alone
            read = list(loader(reader, 256, workers))
        for m, img, c, k in read:
            keys += list(k)
            classes.append(c)
            if mel:
                mels.append(m)
            if image:  # back to the bytes the shard held: a quarter of the memory
                images.append(img.add(1.0).mul(127.5).round().to(torch.uint8))
        read_keys = set(keys)  # a skipped bad sample is in no epoch
        keys_of = {u: [k for k in ks if k in read_keys] for u, ks in _keys_in_tar_order(stream).items()}
        return cls(keys, keys_of,
                   torch.cat(mels).to(device) if mel and mels else None,
                   torch.cat(images).to(device) if image and images else None,
                   torch.cat(classes).to(device) if classes else torch.zeros(0, dtype=torch.long, device=device),
                   reader.skipped.value)

    def batches(self, stream: ShardStream, batch_size: int, workers: int, drop_last: bool = False):
        """This epoch's batches as (mel, image, class, keys), exactly those of ``loader(stream,
        batch_size, workers)``; images in [-1, 1] float32 as the stream gives them."""
        nw = min(workers, len(stream.urls))
        # A DataLoader draws its workers' base seed from the global generator when an epoch's
        # iteration starts; drawing it here too keeps every later random number (dropout) the same.
        torch.empty((), dtype=torch.int64).random_()
        for keys in interleave(stream.epoch_keys(nw, self.keys_of), batch_size, drop_last):
            idx = torch.tensor([self.index[k] for k in keys], device=self.cls.device)
            mel = self.mel[idx] if self.mel is not None else None
            img = self.image[idx].float().div(127.5).sub(1.0) if self.image is not None else None
            yield mel, img, self.cls[idx], keys

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.mel, self.image) if t is not None)


def _keys_in_tar_order(stream: ShardStream) -> dict[str, list[str]]:
    """Each shard's keys in the order its tar holds them, from the manifest (the builder writes a
    shard's samples in its plan order, which the manifest keeps)."""
    man = stream.build.manifest(columns=["key", "shard"])
    by_name: dict[str, list[str]] = {}
    for k, s in zip(man["key"], man["shard"]):
        by_name.setdefault(s, []).append(k)
    return {u: by_name.get(stream.names[u], []) for u in stream.urls}


def hold(choice: str, streams: dict[str, ShardStream], device: torch.device, mel: bool, image: bool,
         workers: int, log=print) -> dict[str, "ResidentSplit | None"]:
    """The splits of ``streams`` read into device memory when ``choice`` (auto|on|off) says so."""
    if not streams:
        return {}
    data = next(iter(streams.values())).data
    if not wanted(choice, data, tuple(streams), device, mel, image, log):
        return {name: None for name in streams}
    held = {name: ResidentSplit.load(ds, device, mel, image, workers) for name, ds in streams.items()}
    log(f"data on {device.type}: {' + '.join(held)} split, {sum(r.nbytes for r in held.values()) / 2**20:.0f} MiB, "
        "read once")
    return held


def batches(stream: ShardStream, held: "ResidentSplit | None", batch_size: int, workers: int, drop_last: bool = False):
    """An epoch's batches from device memory when the split is held there, else streamed: the
    same batches either way."""
    if held is not None:
        return held.batches(stream, batch_size, workers, drop_last)
    return loader(stream, batch_size, workers, drop_last)
