"""Device, precision, seeds and RNG state: the handful of names the training loops share."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from pathlib import Path

import numpy as np
import torch

from s2i_data import untrusted

from s2i_model import checkpoint
from s2i_model.run import RunError, writing
from s2i_model.train import distributed


class TrainingError(RunError):
    """A run that cannot go on (non-finite loss, missing stage): one line for the user."""


def sole_writer(train):
    """Every trainer's entry point: its run folder (``cfg.run``) held for the whole training
    (`run.writing`), before anything there is read, removed or written, so that a second training
    into the same folder is refused naming this one. Under torchrun rank 0 holds it (the others
    write nothing there)."""
    @functools.wraps(train)
    def holding(cfg, log=print):
        with writing(Path(cfg.run), hold=distributed.launched_rank() == 0):
            return train(cfg, log)
    return holding


def update(opt: torch.optim.Optimizer, loss: torch.Tensor, what: str, epoch: int, step: int, d=None,
           scaler: "torch.amp.GradScaler | None" = None) -> None:
    """One optimiser step, refused for a non-finite loss: the run stops and the checkpoint on disk
    (written at the end of the last complete epoch) stays its last good state. Under DDP every
    rank stops when any rank's loss is not finite (a lone rank stopping would hang the others).
    With fp16 the ``scaler`` scales the loss (and skips a step whose gradients overflowed)."""
    finite = torch.isfinite(loss.detach()).float()
    if d is not None and d.on:
        import torch.distributed as dist

        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not bool(finite):
        raise TrainingError(f"non-finite {what} loss at epoch {epoch + 1}, step {step + 1}; "
                            f"the last good checkpoint ({epoch} epochs) is kept")
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("--precision fp16 needs a GPU; use fp32 (or bf16) on a CPU")


def autocast(device: torch.device, precision: str = "fp32"):
    """fp32: plain float32, the paper's arithmetic. bf16 / fp16: autocast (float32 master weights;
    fp16 with a loss scaler, see `grad_scaler`). bf16 runs on CPUs too, but gains nothing there."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(device: torch.device, precision: str):
    """fp16's gradients underflow without loss scaling; bf16 has float32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    if device.type == "cuda":  # cuDNN's fastest convolution layout; the values are unchanged
        model = model.to(memory_format=torch.channels_last)
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if os.environ.get("S2I_DETERMINISTIC"):
        torch.use_deterministic_algorithms(True)


def rng_state() -> dict:
    """Every generator's state as tensors, lists and numbers: checkpoints are read without
    unpickling (`checkpoint.load`), so no numpy array is stored."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def saved_rng(state: dict, d, where) -> dict:
    """This rank's RNG state from a checkpoint (`distributed.my_rng`), checked before the run goes
    on: every generator's state of the size that generator takes."""
    saved = state.get("rng")
    if isinstance(saved, list) and not saved:
        raise untrusted.Untrusted(f"{where}: rng is an empty list")
    cuda = torch.cuda.get_rng_state().numel() if torch.cuda.is_available() else None
    return untrusted.rng_state(distributed.my_rng(saved, d), f"{where}: rng", torch.get_rng_state().numel(), cuda)


def load_scaler(scaler: "torch.amp.GradScaler | None", saved, where) -> None:
    """An fp16 loss scaler's saved state, checked, into ``scaler`` (nothing without one or a state)."""
    if scaler is not None and saved:
        scaler.load_state_dict(untrusted.grad_scaler_state(saved, f"{where}"))


def set_rng_state(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]  # keys: a tensor, or an older checkpoint's array
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    # a checkpoint loaded with map_location=cuda brings these onto the GPU; the setters want CPU bytes
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def make_optimizer(params, kind: str, lr: float, momentum: float, adam_lr: float) -> torch.optim.Optimizer:
    """SGD with the paper's rate and momentum, or Adam (ours) for short runs such as CPU tests:
    the paper's SGD needs far more updates than a few CPU minutes give."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if kind == "adam":
        return torch.optim.Adam(params, lr=adam_lr, betas=(0.5, 0.999))
    raise ValueError(f"--optimizer must be sgd or adam, got {kind!r}")


def optimizer_settings(kind: str, lr: float, momentum: float, adam_lr: float) -> dict:
    return {"lr": lr, "momentum": momentum} if kind == "sgd" else {"lr": adam_lr}


def set_hyperparameters(opt: torch.optim.Optimizer, **values) -> None:
    # A resumed optimiser brings back its momentum buffers and also its old settings: the
    # settings of the command being run win, so a rate can be changed on resume.
    for group in opt.param_groups:
        group.update(values)


def restore_optimisers(opts: dict, scalers: dict, saved: dict, lrs: dict, where="the checkpoint") -> None:
    """A stage's optimisers and fp16 loss scalers as the checkpoint ``where`` left them (``saved``,
    from `optimiser_states`), each checked and at the learning rate of ``lrs`` (the command's: a
    resumed run may change it). Optimisers the checkpoint does not hold start fresh."""
    saved = untrusted.mapping(saved, f"{where}: opts")
    for k, o in opts.items():
        if k in saved:
            checkpoint.load_optimizer(o, saved[k], f"{where}: opts.{k}")
            set_hyperparameters(o, lr=lrs[k])
            load_scaler(scalers.get(k), saved.get(f"{k}_scaler"), f"{where}: opts.{k}_scaler")


def optimiser_states(opts: dict, scalers: dict) -> dict:
    """What `restore_optimisers` reads back: each optimiser's state and its loss scaler's."""
    states = {k: o.state_dict() for k, o in opts.items()}
    states.update({f"{k}_scaler": s.state_dict() for k, s in scalers.items() if s is not None})
    return states
