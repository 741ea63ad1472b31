"""The model registry: a model is one name, whatever package it comes from.

Each built-in model is one folder, ``s2i_model/models/<name>/``, whose ``__init__`` defines
``MODEL``, a `ModelSpec`: its paper, the labels its training reads, its training stages (each a
config dataclass and a trainer), its loader (a run folder → a `model.SoundToImage`), its networks
for ``describe`` and its presets (``paper``, ``cpu``, ``test``) as data. Models from other installed
packages join through the entry-point group ``s2i.models`` (``name = package.module:MODEL``), the
way fsspec finds its implementations; nothing is imported until a model is asked for by name, so a
broken outside package cannot stop the others. In the manner of torchvision's
``register_model`` / ``get_model`` / ``list_models`` and timm's registry: `register`, `get`, `names`.

Trainers and loaders are named as ``"module:function"`` strings (an entry point's syntax) or given
as callables: inference imports no trainer, and `s2i-model models` imports no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata

GROUP = "s2i.models"
BUILTIN = ("s2i", "aivae", "aivaegan", "mmgan", "sound2scene")
DEFAULT = "s2i"  # the model of a run folder or evaluation from before models were named
# reference rows (evaluate/reference.py): registered, never trained; table order, floor to ceiling
REFERENCES = ("chance", "lookup", "nearest-sound", "nearest-image", "shuffled", "real")
OLD_REFERENCES = {"retrieval": "nearest-sound"}  # earlier names of a reference row: what they mean now
PRESETS = ("paper", "cpu", "test")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


class RegistryError(ValueError):
    """An unknown model, a preset it does not have, or a registration that is not a model: one line."""


@dataclass(frozen=True)
class Stage:
    """One training stage of a model: ``s2i-model train-<name>`` is generated from ``config``'s fields
    (``help`` gives each option's text), and ``train(config, log)`` trains or resumes it."""

    name: str
    config: type  # a dataclass: every field a command-line option, saved in every checkpoint
    train: str | Callable  # "module:function" or the function: (config, log) -> last state
    help: str = ""
    options: Mapping[str, str] = field(default_factory=dict)  # field name -> its --help text
    # the config's int fields that count its phases' epochs, in training order (s2i's translator: its
    # ``epochs``; a three-phase stage names three); an epoch is one pass over the train split, so they
    # state the stage's budget (`ModelSpec.passes`). None: ``("epochs",)`` where the config has that field
    epoch_fields: tuple[str, ...] | None = None

    def phase_fields(self) -> tuple[str, ...]:
        """The fields that count this stage's epochs (none: its budget is not stated)."""
        if self.epoch_fields is not None:
            return tuple(self.epoch_fields)
        return ("epochs",) if "epochs" in {f.name for f in dataclasses.fields(self.config)} else ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str  # one line: what it is
    paper: str  # the reference, as docs cite it
    labels_used: str  # what its training reads besides the sound-frame pairs
    checkpoint: str  # the file in a run folder that holds the trained model (its final stage)
    load: str | Callable  # "module:function": (run.Run, torch.device) -> a model.SoundToImage
    stages: tuple[Stage, ...] = ()  # none: a reference row (nothing is trained)
    presets: Mapping[str, Mapping[str, Mapping[str, object]]] = field(default_factory=dict)  # preset -> stage -> field -> value
    describe: str | Callable | None = None  # "module:function": (emb=, width=, latent=, flops=, model=) -> JSON for describe
    retrieval_space: bool = False  # its sounds' embedding is a space `make compare` builds a nearest-sound row in
    # its loaded model's `embed_image` puts frames in the space its `embed` maps sounds to: `make
    # compare` builds a nearest-image row there (Sound2Scene's baseline C)
    image_space: bool = False

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise RegistryError(f"{self.name} has no stage {name!r} (its stages: {', '.join(s.name for s in self.stages)})")

    def preset(self, name: str) -> dict[str, dict[str, object]]:
        """Each stage's settings under preset ``name`` (``paper``: its config's own defaults)."""
        if name == "paper":
            return {s.name: dict(self.presets.get("paper", {}).get(s.name, {})) for s in self.stages}
        if name not in self.presets:
            raise RegistryError(f"{self.name} has no preset {name!r} (it has: {', '.join(['paper', *self.presets])})")
        return {s.name: dict(self.presets[name].get(s.name, {})) for s in self.stages}

    def phase_passes(self, preset: str) -> dict[str, int]:
        """Passes over the train split each phase trains under ``preset``, in training order:
        ``{"stage.field": epochs}`` (the preset's value, else the config's default). A phase with
        early stopping (Sound2Scene's audio stage) may stop before its count: the count is its budget."""
        settings = self.preset(preset)
        out: dict[str, int] = {}
        for s in self.stages:
            fields = s.phase_fields()
            if not fields:
                raise RegistryError(f"{self.name}: stage {s.name!r} names no epoch fields (Stage.epoch_fields): "
                                    "its budget is not stated")
            defaults = {f.name: f.default for f in dataclasses.fields(s.config)}
            for f in fields:
                out[f"{s.name}.{f}"] = int(settings[s.name].get(f, defaults[f]))
        return out

    def passes(self, preset: str) -> int:
        """Passes over the train split that ``preset`` trains, every stage and phase summed: its budget in
        training samples seen is this times the train split's size (docs/models.md, "Budgets")."""
        return sum(self.phase_passes(preset).values())


_REGISTRY: dict[str, ModelSpec] = {}
# The comparison's reference rows: run folders holding RUN/reference.json, evaluated like models.
_REFERENCE_ROWS = {
    "chance": ModelSpec("chance", "a train frame drawn at random for each picture: what a picture that ignores the sound "
                        "scores", "ours: chance", "none (draws train frames at random)", "reference.json",
                        "s2i_model.evaluate.reference:load_reference"),
    "lookup": ModelSpec("lookup", "the mean train frame of the class a sound classifier picks for the sound",
                        "ours: class-mean lookup", "class labels (its sound classifier learns the train sounds' "
                        "classes; the pictures are class means of train frames)", "reference.json",
                        "s2i_model.evaluate.reference:load_reference"),
    "nearest-sound": ModelSpec("nearest-sound", "the train frames of the nearest train sounds in a model's audio space",
                               "ours: audio-to-audio retrieval", "none (copies train frames; the space is its model's)",
                               "reference.json", "s2i_model.evaluate.reference:load_reference"),
    "nearest-image": ModelSpec("nearest-image", "the train frames nearest to the sound's embedding in a model's visual "
                               "space", "003: Sound2Scene's baseline (C), retrieval",
                               "none (copies train frames; the spaces are its model's)", "reference.json",
                               "s2i_model.evaluate.reference:load_reference"),
    "shuffled": ModelSpec("shuffled", "the real frame of another video of the sound's class: the right class, "
                          "unrelated within-class factors (issue 28)", "ours: shuffled real frames",
                          "class labels (it shows a real frame of the sound's own class, by its label)",
                          "reference.json", "s2i_model.evaluate.reference:load_reference"),
    "real": ModelSpec("real", "the test sound's own frame: the ceiling of every measure", "ours",
                      "none (the test sound's own frame: the ceiling)", "reference.json",
                      "s2i_model.evaluate.reference:load_reference"),
}


def resolve(target: str | Callable | None):
    """A ``"module:attribute"`` string imported (once asked for), or the callable itself."""
    if target is None or callable(target):
        return target
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _checked(spec, where: str) -> ModelSpec:
    """``spec`` once it is a model description this package can use; refused in one line otherwise."""
    if not isinstance(spec, ModelSpec):
        raise RegistryError(f"{where} is not an s2i_model.models.ModelSpec but {type(spec).__name__}")
    if not _NAME.fullmatch(spec.name):
        raise RegistryError(f"{where}: model name {spec.name!r} is not a lower-case name (a-z, 0-9, -, _)")
    if "/" in spec.checkpoint or spec.checkpoint.startswith(".") or not spec.checkpoint.endswith((".pt", ".json")):
        raise RegistryError(f"{where}: checkpoint {spec.checkpoint!r} is not a file name in the run folder")
    for s in spec.stages:
        if not dataclasses.is_dataclass(s.config) or not {"data", "run"} <= {f.name for f in dataclasses.fields(s.config)}:
            raise RegistryError(f"{where}: stage {s.name!r}'s config is not a dataclass with data and run fields")
        try:
            hints = typing.get_type_hints(s.config)
        except Exception as e:  # an annotation that names nothing importable
            raise RegistryError(f"{where}: stage {s.name!r}'s config cannot be read: {e}") from None
        odd = [f.name for f in dataclasses.fields(s.config) if hints.get(f.name) not in (int, float, str, bool)]
        if odd:  # every field is a command-line option
            raise RegistryError(f"{where}: stage {s.name!r}'s config fields {odd} are not int, float, str or bool")
        if s.epoch_fields is not None and (isinstance(s.epoch_fields, str)
                                           or any(hints.get(f) is not int for f in s.epoch_fields)):
            raise RegistryError(f"{where}: stage {s.name!r}'s epoch_fields {s.epoch_fields!r} are not int fields "
                                "of its config")
    for preset, stages in spec.presets.items():
        for stage, values in stages.items():
            known = {f.name for f in dataclasses.fields(spec.stage(stage).config)}
            if unknown := set(values) - known:
                raise RegistryError(f"{where}: preset {preset!r} sets {sorted(unknown)}, which {stage}'s config lacks")
    return spec


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model under its name (usable as a decorator's target or called directly); a second,
    different model under a taken name is refused."""
    spec = _checked(spec, f"model {getattr(spec, 'name', spec)!r}")
    held = _REGISTRY.get(spec.name)
    if held is not None and held is not spec:
        raise RegistryError(f"a model called {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def _entry_points() -> dict:
    return {ep.name: ep for ep in metadata.entry_points(group=GROUP)}


def names(include_references: bool = False) -> list[str]:
    """Every model that can be asked for: the built-in ones, then those other packages declare
    (not imported yet), then any registered by hand."""
    out = list(BUILTIN)
    out += sorted(n for n in _entry_points() if n not in out and n not in REFERENCES)
    out += sorted(n for n in _REGISTRY if n not in out and n not in REFERENCES)
    return out + list(REFERENCES) if include_references else out


def get(name: str) -> ModelSpec:
    """The model called ``name``: a built-in folder, or an entry point of another package (loaded now)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"{name!r} is not a model name")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN:
        return register(importlib.import_module(f"{__name__}.{name}").MODEL)
    if name in REFERENCES or name in OLD_REFERENCES:
        name = OLD_REFERENCES.get(name, name)  # an older row's evaluation.json names its kind as it was called then
        return _REGISTRY.get(name) or register(_REFERENCE_ROWS[name])
    ep = _entry_points().get(name)
    if ep is None:
        raise RegistryError(f"unknown model {name!r}: the models are {', '.join(names())}")
    try:
        spec = ep.load()
    except Exception as e:  # somebody else's package: its failure is one line, not ours
        raise RegistryError(f"model {name!r} ({ep.value}) cannot be loaded: {type(e).__name__}: {e}") from None
    spec = _checked(spec, f"entry point {name} = {ep.value}")
    if spec.name != name:
        raise RegistryError(f"entry point {name} = {ep.value} describes a model called {spec.name!r}")
    return register(spec)


def model_files() -> dict[str, str]:
    """The built-in models' checkpoint file names (how a run folder from before `RUN/model.json` is told)."""
    return {n: get(n).checkpoint for n in BUILTIN}
