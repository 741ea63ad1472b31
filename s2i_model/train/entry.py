"""Training any registered model by name: a stage's config from its defaults, a preset and the
user's options; the run folder told which model it holds (RUN/model.json); the stage's trainer
imported and run. `s2i-model train`, the generated `train-<stage>` commands and `s2i-model compare`
all come through here."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from pathlib import Path

from s2i_model import models, run as run_folder

FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def field_types(config: type) -> dict[str, type]:
    """Each option of a stage's config and its type (int, float, str or bool: the CLI's four)."""
    hints = typing.get_type_hints(config)
    out = {}
    for f in dataclasses.fields(config):
        t = hints.get(f.name, str)
        if t not in (int, float, str, bool):
            raise TypeError(f"{config.__name__}.{f.name}: a config field is int, float, str or bool, not {t}")
        out[f.name] = t
    return out


def stage_config(spec: models.ModelSpec, stage: models.Stage, data: str, run: str, preset: str = "paper",
                 options: dict | None = None):
    """``stage``'s config: its defaults, then ``preset``'s settings, then ``options`` (field → value)."""
    values = {**spec.preset(preset)[stage.name], **(options or {}), "data": str(data), "run": str(run)}
    known = field_types(stage.config)
    if unknown := set(values) - set(known):
        raise ValueError(f"{spec.name} ({stage.name}) has no option {', '.join('--' + u.replace('_', '-') for u in sorted(unknown))}")
    cfg = stage.config(**values)
    if callable(check := getattr(cfg, "check", None)):
        check()  # a stage's own checks of its settings (ValueError: one line)
    return cfg


def train_stage(spec: models.ModelSpec, stage: models.Stage, cfg, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one stage: RUN/model.json written first, under the run folder's lock (a
    folder another process writes is refused before anything in it is read or written), by rank 0
    only under torchrun."""
    if os.environ.get("RANK", "0") == "0":
        Path(cfg.run).mkdir(parents=True, exist_ok=True)
        with run_folder.writing(cfg.run):
            run_folder.record_model(cfg.run, spec.name)
    return models.resolve(stage.train)(cfg, log=log)


def train_model(spec: models.ModelSpec, data: str, run: str, preset: str = "paper",
                options: dict[str, dict] | None = None, log: Callable[[str], None] = print) -> None:
    """Every stage of ``spec`` in order (a finished stage says so and is skipped by its trainer)."""
    configs = [stage_config(spec, s, data, run, preset, (options or {}).get(s.name)) for s in spec.stages]
    for stage, cfg in zip(spec.stages, configs):
        train_stage(spec, stage, cfg, log)
