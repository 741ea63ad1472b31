"""Checkpoints: plain tensors and containers only, written atomically, one good copy kept back.

Run folders are passed between people, so a checkpoint is never unpickled: it is read with
``torch.load(weights_only=True)``, which rebuilds tensors, numbers, strings, lists, tuples and
dicts and refuses any other object (a planted pickle runs nothing and is refused with one line).
Everything the trainers store fits that: RNG states are converted to lists and tensors
(`runtime.rng_state`), configs are plain dicts.

A save writes a temporary file, fsyncs it, moves the current checkpoint to ``NAME.prev.pt`` and
renames the new one into place, then fsyncs the folder; so after a crash at any moment one
complete checkpoint is on disk. ``load`` falls back to the previous one, with a warning, when the
current one is unreadable (empty, truncated).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from s2i_data import storage, untrusted


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: one line naming the file and what to do."""


def previous(path: Path) -> Path:
    """``translator.pt`` → ``translator.prev.pt``: the checkpoint the last save replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _tmp_prefix(path: Path) -> str:
    return f".{Path(path).name}.tmp-"


def save(path: Path, state: dict) -> None:
    path = Path(path)
    storage.atomic_write(path, lambda tmp: torch.save(state, tmp), keep_previous=previous(path))


def remove_stray(folder: Path) -> list[Path]:
    """Delete the temporary files of saves killed before their rename (``.NAME.tmp-PID`` whose
    process is gone); a save in progress in a live process is left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Checkpoints written before RNG states were stored as lists hold the numpy generator's state as
# a uint32 array. Rebuilding a plain numeric array runs no code, so exactly these are let in;
# object arrays (which would unpickle their items) still need globals that stay refused.
def _legacy_numpy() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [dtypes.UInt32DType]
    return allowed


def _read(path: Path, device) -> dict:
    with torch.serialization.safe_globals(_legacy_numpy()):
        state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not an s2i checkpoint")
    return state


def _reason(path: Path, e: Exception) -> tuple[str, bool]:
    """(one line, whether a previous checkpoint may stand in for it)."""
    import pickle

    if isinstance(e, CheckpointError):
        return str(e), False
    # A pickle that names a class or function (code) is refused, not treated as damage.
    m = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", str(e))
    if isinstance(e, pickle.UnpicklingError) and m:
        return (f"{path}: refused: holds objects other than tensors and plain data (it asks for "
                f"{m.group(1) or m.group(2)}); "
                "s2i never unpickles a checkpoint, so this file was not written by s2i or was tampered with"), False
    size = path.stat().st_size if path.exists() else 0
    if size == 0:
        return f"{path}: empty file (a save was cut short)", True
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{path}: unreadable checkpoint, truncated or not a checkpoint ({first[:120]})", True


def load(path: Path, device: str | torch.device = "cpu", log=None) -> dict | None:
    """The checkpoint at ``path`` (None when neither it nor its previous copy exists).

    An unreadable file (empty, truncated) is replaced by ``NAME.prev.pt`` when that one reads,
    with a warning through ``log`` (stderr by default); a file that asks to run code is refused
    outright: it is not damage that an older copy should paper over.
    """
    path = Path(path)
    prev = previous(path)
    warn = log or (lambda m: print(m, file=sys.stderr))
    if not path.exists():
        if not prev.exists():
            return None
        # A save killed between its two renames: the previous checkpoint is the last complete one.
        warn(f"warning: {path} is missing; resuming from {prev.name}")
        return load(prev, device, log)
    try:
        return _read(path, device)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, zip errors...
        reason, may_fall_back = _reason(path, e)
    if may_fall_back and prev.exists():
        try:
            state = _read(prev, device)
        except Exception:
            pass
        else:
            warn(f"warning: {reason}; using the previous checkpoint {prev.name} instead")
            return state
    hint = (f"; delete it (and {prev.name}) to start this stage again" if prev.exists()
            else "; delete it to start this stage again")
    raise CheckpointError(reason + (hint if may_fall_back else ""))


# ---- a checkpoint's networks and optimisers, checked before they are loaded or even built
def check_net(make, stored, where: str) -> None:
    """Refuse ``stored`` (a state dict from a checkpoint) unless it holds exactly the tensors of
    the network ``make()`` builds (`untrusted.tensor_shapes`). The network is built on the meta
    device, so sizes claimed by a hostile config allocate nothing; callers bound them first
    (`untrusted.net_config`)."""
    try:
        with torch.device("meta"):
            shapes = make().state_dict()
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError, OverflowError) as e:
        raise CheckpointError(f"{where}: its config describes no network that can be built ({_first(e)})") from None
    untrusted.tensor_shapes(shapes, stored, where)


def build(make, stored, where: str) -> torch.nn.Module:
    """The network ``make()`` builds, holding ``stored``, once `check_net` has compared them."""
    check_net(make, stored, where)
    net = make()
    net.load_state_dict(stored)
    return net


def kept_or_fitted(cache: Path | None, ident: dict, stored, built, fit, what: str):
    """``(built(states), record)`` from ``stored`` (a cache's ``(states, record)``, or None) when
    its nets fit; otherwise ``fit()``'s, saved to ``cache`` with ``ident`` first. A cache of other
    shapes (edited, or not ours) is fitted again with a warning naming ``what``, never loaded."""
    if stored is not None:
        states, record = stored
        try:
            return built(states), record
        except (CheckpointError, untrusted.Untrusted) as e:
            print(f"warning: {e}; fitting the {what} again", file=sys.stderr)
    states, record = fit()
    if cache is not None:
        save(cache, {"ident": ident, "states": states, "record": record})
    return built(states), record


def load_into(net: torch.nn.Module, stored, where: str) -> torch.nn.Module:
    """``stored`` loaded into ``net`` (built from the command's settings) when it holds exactly
    ``net``'s tensors: a resumed checkpoint of other sizes is one line, not a failed copy."""
    untrusted.tensor_shapes(net.state_dict(), stored, where)
    net.load_state_dict(stored)
    return net


def load_optimizer(opt: torch.optim.Optimizer, saved, where: str) -> torch.optim.Optimizer:
    """``saved`` loaded into ``opt`` when it is a state ``opt`` can step with (`untrusted.optimizer_state`)."""
    shapes = [tuple(p.shape) for g in opt.param_groups for p in g["params"]]
    kind = type(opt).__name__
    if kind not in untrusted.OPT_STATE_KEYS:  # pragma: no cover - a trainer's optimiser without a schema
        raise TypeError(f"no schema for {kind}'s saved state")
    untrusted.optimizer_state(saved, opt.state_dict(), shapes, kind, where)
    opt.load_state_dict(saved)
    return opt


def _first(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]
