"""The run folder, whatever model it holds: which model that is, its checkpoints read once, its build.

    RUN/model.json       {"model": NAME}: the registry name of the model trained here (s2i_model.models)
    RUN/<checkpoint>     the model's own files, named in its folder (S2I: autoencoder.pt, translator.pt)
    RUN/embeddings.pt    a model's cached embedding of every split, where it keeps one (S2I)
    RUN/reference.json   a reference row instead of a model (evaluate/reference.py)
    RUN/metrics.jsonl, RUN/tensorboard/, RUN/grids/      what training logged
    RUN/evaluation.json, RUN/evaluation-grid.png         what `s2i-model evaluate` measured
    RUN/.lock            held (flock) by the one training or evaluation writing the folder

`Run.open` reads the folder once: which model (RUN/model.json; for runs from before it, the
built-in checkpoint names), each checkpoint loaded once and handed on, the model loaded once
(`Run.model`, through the model's own loader). Inference never imports a trainer.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from s2i_data import lock, storage, untrusted
from s2i_data.readers import Build

from s2i_model import checkpoint, models

EMBEDDINGS = "embeddings.pt"
EVALUATION = "evaluation.json"
REFERENCE = "reference.json"  # a reference row of a comparison (evaluate/reference.py): retrieval or real frames
MODEL_RECORD = "model.json"
LOCK = ".lock"


# What the S2I networks take (SPEC 3): 1 s of log-mel at a 10 ms hop, 128 mel bands, 96 px frames.
# The sample rate is free: the front end keeps 128 bands and a 10 ms hop at any rate.
NET_INPUT = {"frames": 100, "mel_bins": 128, "image_size": 96}
# For runs trained before checkpoints recorded their build.
LEGACY_BUILD = {"segment_seconds": 1.0, "sample_rate": 16000, **NET_INPUT}


class RunError(Exception):
    """A run folder that cannot serve what was asked (a stage missing or unfinished, a build the
    run was not trained for): one line for the user."""


class RunLockError(RunError):
    """Another process writes the run folder (or it cannot be written): one line, exit 2."""


@contextlib.contextmanager
def writing(run: str | Path, hold: bool = True) -> Iterator[Path]:
    """``run`` held by this process alone while the block runs: the build's folder lock
    (`s2i_data.lock.FolderLock`) on RUN/.lock, its holder named in the refusal a second writer
    gets. The kernel frees it when the holder dies, however it dies (kill -9 leaves nothing stale).
    ``hold=False`` (a DDP rank other than 0, which writes nothing) takes nothing."""
    run = Path(run)
    if not hold:
        yield run
        return
    guard = lock.FolderLock(run, run / LOCK, what="training or evaluation", option="--run")
    try:
        guard.acquire()
    except lock.LockError as e:
        raise RunLockError(str(e)) from None
    try:
        guard.claim()
        yield run
    finally:
        guard.release()


def check_build(build: Build) -> Build:
    """``build`` when the networks can take its samples (every model here takes S2I's windows and
    frames); otherwise one line naming the setting."""
    rec = build.record()
    if rec["frames"] != NET_INPUT["frames"]:
        raise RunError(f"{build} was built with --segment-seconds {rec['segment_seconds']:g} "
                       f"({rec['frames']} log-mel frames); the S2I networks take 1 s windows (100 frames): "
                       "rebuild with --segment-seconds 1")
    if rec["image_size"] != NET_INPUT["image_size"]:
        raise RunError(f"{build} was built with --image-size {rec['image_size']}; the S2I networks draw "
                       f"{NET_INPUT['image_size']} px pictures: rebuild with --image-size 96")
    if rec["mel_bins"] != NET_INPUT["mel_bins"]:
        raise RunError(f"{build} holds {rec['mel_bins']} mel bands; the S2I networks take 128")
    return build


def open_build(cfg) -> Build:
    """A trainer's build, reached as its config says and checked against the networks."""
    return check_build(Build.open(cfg.data, cfg.shard_url, cfg.cache_dir, cfg.skip_bad_samples))


def build_record(state: dict) -> dict:
    """The build a checkpoint was trained on (segment seconds, sample rate, shapes, fingerprint),
    checked: a run folder comes from somebody else, and these numbers go to ffmpeg."""
    given = state.get("build") or {}
    rec = {**LEGACY_BUILD, **(given if isinstance(given, dict) else {})}
    try:
        seconds, rate = float(rec["segment_seconds"]), int(rec["sample_rate"])
    except (TypeError, ValueError):
        seconds, rate = -1.0, -1
    if not (0 < seconds <= 60 and 8000 <= rate <= 384000):
        raise RunError(f"the checkpoint's build record is not usable (segment_seconds {rec['segment_seconds']!r}, "
                       f"sample_rate {rec['sample_rate']!r})")
    return {**rec, "segment_seconds": seconds, "sample_rate": rate}


def common(state: dict, where: Path | str) -> dict:
    """What every checkpoint of a run holds and readers use: whole epochs, a config (naming its
    build, where it does)."""
    untrusted.epoch(state.get("epoch"), f"{where}: epoch")
    cfg = untrusted.mapping(state.get("config"), f"{where}: config")
    if "data" in cfg and not isinstance(cfg["data"], str):
        raise untrusted.Untrusted(f"{where}: config.data {cfg['data']!r} is not the location of a build")
    return cfg


def read_reference(run: str | Path) -> dict:
    """RUN/reference.json, checked (`untrusted.reference`): what a reference row is, its build, its space."""
    path = Path(run) / REFERENCE
    try:
        record = untrusted.json_value(untrusted.capped_read(path, 1 << 20, str(path)), str(path))
        return dict(untrusted.reference(record, str(path)))
    except OSError as e:
        raise RunError(f"{path} cannot be read: {e.strerror or e}") from None
    except untrusted.Untrusted as e:
        raise RunError(f"{e}: not a reference written by `s2i-model reference`") from None


def record_model(run: str | Path, name: str) -> None:
    """RUN/model.json names the model trained in ``run`` (written before its first stage trains);
    a folder that holds another model is refused."""
    run = Path(run)
    recorded = _recorded_model(run)
    held = recorded if recorded is not None else _checkpoint_model(run)
    if held is not None and held != name:
        raise RunError(f"{run} holds a {held} run: train {name} in another --run")
    if recorded is None:
        storage.atomic_write(run / MODEL_RECORD, json.dumps({"model": name}))


def _checkpoint_model(run: Path) -> str | None:
    """The built-in model whose final checkpoint (or its previous copy) a run from before
    RUN/model.json holds; another model's before S2I's, whose run may hold the others' too."""
    found = [m for m, file in models.model_files().items()
             if (run / file).exists() or checkpoint.previous(run / file).exists()]
    return next((m for m in found if m != models.DEFAULT), found[0] if found else None)


def _recorded_model(run: Path) -> str | None:
    path = run / MODEL_RECORD
    if not path.is_file() and not path.is_symlink():
        return None
    try:
        record = untrusted.json_value(untrusted.capped_read(path, 4096, str(path)), str(path))
        name = untrusted.name(untrusted.mapping(record, str(path)).get("model"), f"{path}: model")
    except OSError as e:
        raise RunError(f"{path} cannot be read: {e.strerror or e}") from None
    except untrusted.Untrusted as e:
        raise RunError(str(e)) from None
    if name in models.REFERENCES:
        raise RunError(f"{path}: {name!r} is a reference row, not a trained model")
    return name


def run_model(run: str | Path) -> str:
    """Which model a run folder holds: a reference row's kind, RUN/model.json's name, or (for a run
    from before that file) the built-in model whose checkpoint is there (S2I when none is)."""
    run = Path(run)
    if (run / REFERENCE).is_file():
        return read_reference(run)["model"]
    if (named := _recorded_model(run)) is not None:
        return named
    return _checkpoint_model(run) or models.DEFAULT


class Run:
    """A run folder opened once: its model's name and registry entry, each checkpoint read once
    (`state`), the final one checked (`final`), the model built once per device (`model`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reference = read_reference(self.path) if (self.path / REFERENCE).is_file() else None
        self.name = self.reference["model"] if self.reference else run_model(self.path)
        try:
            self.spec = models.get(self.name)
        except models.RegistryError as e:
            raise RunError(f"{self.path}: {e}") from None
        self._states: dict[str, dict | None] = {}
        self._loaded: dict[str, object] = {}

    @classmethod
    def open(cls, path: "str | Path | Run") -> "Run":
        return path if isinstance(path, Run) else cls(path)

    def __str__(self) -> str:
        return str(self.path)

    def state(self, file: str, device: torch.device | str = "cpu", log=None) -> dict | None:
        """RUN/``file`` loaded once (weights only, `checkpoint.load`), or None when the run holds none."""
        if file not in self._states:
            self._states[file] = checkpoint.load(self.path / file, device, log)
        return self._states[file]

    def final(self, device: torch.device | str = "cpu", log=None) -> dict:
        """The model's final checkpoint, its epoch and config checked (a reference row: its record)."""
        if self.reference is not None:
            record = self.reference
            return {"config": {"data": record["data"]}, "epoch": None, "build": record.get("build"), "reference": record}
        state = self.state(self.spec.checkpoint, device, log)
        if state is None:
            raise RunError(f"{self.path} holds no trained {self.name} ({self.spec.checkpoint}): train it first "
                           f"(s2i-model train --model {self.name})")
        common(state, self.path / self.spec.checkpoint)
        return state

    @property
    def file(self) -> Path:
        """The file the trained model lives in: its final checkpoint, or a reference row's record."""
        return self.path / (REFERENCE if self.reference is not None else self.spec.checkpoint)

    def model(self, device: torch.device | str = "auto"):
        """The trained model as a `model.SoundToImage`, through its own loader, built once per device."""
        from s2i_model.device import pick_device

        dev = pick_device(str(device))
        if str(dev) not in self._loaded:
            self._loaded[str(dev)] = models.resolve(self.spec.load)(self, dev)
        return self._loaded[str(dev)]


def model_state(run: "str | Path | Run", device: torch.device | str = "cpu", log=None) -> tuple[str, dict]:
    """(model name, its final checkpoint) of a run folder."""
    r = Run.open(run)
    return r.name, r.final(device, log)


def model_path(run: "str | Path | Run", model: str | None = None) -> Path:
    """The file a run's model lives in: its checkpoint, or a reference row's record."""
    return Run.open(run).file


def load_model(run: "str | Path | Run", device: torch.device | str = "auto"):
    """Any run's trained model as a `model.SoundToImage` (`Run.model`)."""
    return Run.open(run).model(device)


def labels_used(model: str) -> str:
    """What a model's training reads besides the sound-frame pairs, as its registry entry says."""
    try:
        return models.get(model).labels_used
    except models.RegistryError:
        return "not declared"


def parameter_count(model) -> int:
    """Parameters of the networks a loaded model (`load_model`) draws with: those of every module
    that runs while it pictures one sound. Training-only nets (S2I's audio decoder and D, AIVAEGAN's
    D, the multimodal GAN's frame encoder and Ds) sit in the same objects but never run here, and a
    layer shared by two nets counts once."""
    if not hasattr(model, "sound_pictures"):  # real frames: no network draws them
        return 0
    used: dict[int, int] = {}

    def seen(module, _inputs, _output) -> None:
        used.update((id(p), p.numel()) for p in module.parameters(recurse=False))

    # the model's own nets, and those of an object it draws through (retrieval's space model)
    held = list(vars(model).values())
    held += [v for h in held if not isinstance(h, torch.nn.Module) and hasattr(h, "sound_pictures")
             for v in vars(h).values()]
    hooks = [m.register_forward_hook(seen) for net in held if isinstance(net, torch.nn.Module) for m in net.modules()]
    dev = torch.device(model.device)
    try:  # a picture drawn on the side: the caller's random state is left as it was
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            rec = getattr(model, "build", None) or LEGACY_BUILD
            model.sound_pictures(torch.zeros(1, 1, int(rec.get("mel_bins", 128)), int(rec.get("frames", 100)),
                                             device=dev), 1, None)
    finally:
        for h in hooks:
            h.remove()
    return sum(used.values())
