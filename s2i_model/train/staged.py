"""What the staged trainers (mmgan, Sound2Scene) share: where a run goes on from, and an epoch's
metrics row over every rank. Each trainer keeps its own stages, losses, checks and checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from s2i_data import untrusted

from s2i_model import checkpoint
from s2i_model.train import distributed, runtime
from s2i_model.train.metrics import throughput
from s2i_model.train.runtime import TrainingError


class Resumed(NamedTuple):
    state: dict | None  # the checkpoint as loaded (None: a fresh run); its nets are the caller's to load
    stage: int  # index of the stage to go on with
    epoch: int  # that stage's epochs already done
    opt_states: dict  # that stage's optimisers, when it is the saved one
    rng: list | None  # this rank's RNG state, restored once the data is open


def resume(path: Path, cfg, d: distributed.Dist, device: torch.device, stages: tuple[str, ...],
           log) -> Resumed:
    """Read ``path``'s checkpoint, refuse one of another width or build, and find the first stage
    not finished: a finished stage hands on to the next, without its optimiser state."""
    if d.main:
        checkpoint.remove_stray(path.parent)  # temporary files of a save that was killed
    stage, epoch, opt_states, rng = 0, 0, {}, None
    state = checkpoint.load(path, device, log)
    if state is not None:  # every part checked before it is used (a run folder may come from elsewhere)
        old = untrusted.mapping(state.get("config"), f"{path}: config")
        for k in ("width", "data"):
            if old.get(k) != getattr(cfg, k):
                raise TrainingError(f"{path} was trained with {k}={old.get(k)!r}, not {getattr(cfg, k)!r}; use another --run")
        if state.get("stage") not in stages:
            raise untrusted.Untrusted(f"{path}: stage {state.get('stage')!r} is not one of {', '.join(stages)}")
        stage, epoch = stages.index(state["stage"]), untrusted.epoch(state.get("epoch"), f"{path}: epoch")
        opt_states = untrusted.mapping(state.get("opts"), f"{path}: opts")
        rng = runtime.saved_rng(state, d, path)
    while stage < len(stages) - 1 and epoch >= cfg.stage_epochs(stages[stage]):
        stage, epoch, opt_states = stage + 1, 0, {}
    return Resumed(state, stage, epoch, opt_states, rng)


def epoch_row(d: distributed.Dist, epoch: int, keys: tuple[str, ...], sums: dict, vkeys: tuple[str, ...],
              vsums: dict, n: int, vn: int, seconds: float) -> tuple[dict, int, int]:
    """(row, train samples, val samples) of one epoch over every rank: each named sum divided by
    the samples it was summed over. Every rank sends the same names, whatever it saw (a rank may
    hold no val shard), or the sums over ranks would not line up."""
    totals = distributed.all_sum(d, [sums.get(k, 0.0) for k in keys] + [vsums.get(k, 0.0) for k in vkeys] + [n, vn])
    n, vn = int(totals[-2]), int(totals[-1])
    row = {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in zip(keys, totals)},
           **{k: v / max(vn, 1) for k, v in zip(vkeys, totals[len(keys):])}, **throughput(n, seconds)}
    return row, n, vn
