"""DDP in a handful of names. Under torchrun (WORLD_SIZE > 1) every process joins one group
(NCCL on GPUs, gloo on CPUs); otherwise everything here is a no-op and training is the plain
single-process loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:  # rank 0 alone writes logs, grids and checkpoints
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def launched_rank() -> int:
    """This process's rank as torchrun launched it (0 outside torchrun), known before `setup`
    joins the group: the run folder is locked before anything else happens."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def setup(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if world <= 1:
        return Dist(), torch.device("cuda" if cuda else ("cpu" if device_name == "auto" else device_name))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local), torch.device(f"cuda:{local}" if cuda else "cpu")


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, sync_bn: bool = False) -> torch.nn.Module:
    """DDP around ``model``; with ``sync_bn`` (GPUs only: PyTorch's SyncBatchNorm has no CPU
    kernel) its BatchNorm layers compute statistics over the global batch, as one process on the
    whole batch would (the paper's 64)."""
    if not d.on:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_bn_note(d: Dist, device: torch.device, sync_bn: bool) -> str | None:
    """What to tell the user when --sync-bn cannot apply."""
    if d.on and sync_bn and device.type != "cuda":
        return ("note: --sync-bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel): "
                "BatchNorm statistics stay per process on CPUs")
    return None


def average_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Every rank's BatchNorm running statistics replaced by their mean over ranks. D's running
    statistics score G's pictures (D frozen, evaluation mode), so all ranks must hold the same
    ones, the ones the checkpoint keeps, or a resumed run would differ from an uninterrupted one;
    the mean over ranks is also the closest to statistics over the global batch."""
    if not d.on:
        return
    for name, buf in unwrap(model).named_buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(d.world)
        elif name.endswith("num_batches_tracked"):
            dist.broadcast(buf, src=0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Sums over ranks of a few numbers (losses × samples, counts) for logging."""
    if not d.on:
        return list(values)
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


def gather(d: Dist, obj) -> list:
    """Every rank's ``obj`` on every rank (RNG states for the checkpoint)."""
    if not d.on:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(d: Dist, obj):
    """Rank 0's ``obj`` on every rank."""
    if not d.on:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.on:
        dist.barrier()


def teardown(d: Dist) -> None:
    if d.on and dist.is_initialized():
        dist.destroy_process_group()


def my_rng(saved, d: Dist):
    """This rank's RNG state from a checkpoint: one per rank under DDP, a single one otherwise
    (a run resumed on another number of processes reuses rank 0's)."""
    if isinstance(saved, list):
        return saved[d.rank] if len(saved) == d.world else saved[0]
    return saved


def rng_for_checkpoint(d: Dist, state: dict):
    states = gather(d, state)
    return states if d.on else states[0]


def per_rank_batch(batch_size: int, d: Dist) -> int:
    """--batch-size is the global batch (the paper's 64): each rank takes its share."""
    if batch_size % d.world:
        raise ValueError(f"--batch-size {batch_size} does not divide over {d.world} processes")
    return batch_size // d.world
