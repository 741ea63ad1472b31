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


def wrap(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    if not d.on:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


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
