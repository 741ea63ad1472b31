"""Two reference rows for `make compare`, measured like the models (issue 15):

- **retrieval** (Sound2Scene's baseline C): for a test sound, the train frames whose sounds are
  nearest to it in a trained model's audio space (S2I's embedding, Sound2Scene's audio feature,
  any model with one): what copying instead of imagining scores. The n pictures of a sound are its
  n nearest train frames (Euclidean distance; for Sound2Scene's unit-norm features that is the
  cosine order), so R@1 and class agreement over n pictures read as a k-NN's.
- **real**: the test sound's own frame, the ceiling of every measure.

Each is a run folder holding RUN/reference.json (what it is, the space's run, the build), so
`evaluate`, `report` and the comparison read it as they read a model's run. Neither trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from s2i_data import storage
from s2i_data.readers import Build

from s2i_model import run as run_folder
from s2i_model.data import Normalizer, ShardStream

FILE = run_folder.REFERENCE
KINDS = ("retrieval", "real")


def sound_embedding(model, mels: torch.Tensor) -> torch.Tensor:
    """A loaded model's audio space for normalised log-mels: its ``embed``."""
    with torch.no_grad():
        return model.embed(mels.to(model.device)).float().flatten(1)


class RetrievalModel:
    """A `model.SoundToImage` that copies: n pictures of a sound are the frames of its n nearest
    train sounds in ``space``'s audio space."""

    def __init__(self, space, frames: torch.Tensor, index: torch.Tensor, build: dict) -> None:
        self.space, self.frames, self.index = space, frames, index
        self.device, self.norm, self.build = space.device, space.norm, build

    @classmethod
    def load(cls, space_run: Path, data: str, device: str = "auto", batch: int = 256) -> "RetrievalModel":
        space = run_folder.load_model(space_run, device)
        frames, embs, mels = [], [], []

        def flush() -> None:
            embs.append(sound_embedding(space, torch.stack(mels)).cpu())
            mels.clear()

        for mel, img, _, _ in ShardStream(Build.open(data), "train", space.norm, shuffle=False):
            frames.append(img.add(1).mul(127.5).round().to(torch.uint8))
            mels.append(mel)
            if len(mels) == batch:
                flush()
        if mels:
            flush()
        if not frames:
            raise run_folder.RunError(f"{data}: the train split has no samples to retrieve from")
        return cls(space, torch.stack(frames), torch.cat(embs), run_folder.build_record({"build": space.build}))

    @property
    def window(self) -> tuple[float, int]:
        """(seconds, sample rate) of the sound windows it hears: its space's (imagine and live use it)."""
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[B, n, 3, H, W]: the frames of the n nearest train sounds, nearest first (no randomness:
        ``seed`` is accepted for the protocol)."""
        z = sound_embedding(self.space, mels).cpu()
        k = min(n, len(self.index))
        near = torch.cdist(z, self.index).topk(k, dim=1, largest=False).indices
        if k < n:  # fewer train sounds than pictures asked for: repeat the nearest
            near = torch.cat([near, near[:, :1].expand(-1, n - k)], 1)
        return self.frames[near].float().div(127.5).sub(1.0).to(self.device)


class RealFrames:
    """The test sound's own frame: `evaluate` hands it the real frames (`pictures_of_real`)."""

    def __init__(self, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.norm, self.device, self.build = norm, device, build

    @staticmethod
    def pictures_of_real(real: torch.Tensor, n: int) -> torch.Tensor:
        return real.repeat_interleave(n, 0)


def write_reference(kind: str, out: Path, data: str = "", space: Path | None = None) -> dict:
    """RUN/reference.json for a reference row: ``real`` needs the build, ``retrieval`` the run whose
    audio space it searches (its build is the one searched)."""
    if kind not in KINDS:
        raise run_folder.RunError(f"a reference is {' or '.join(KINDS)}, not {kind!r}")
    if kind == "retrieval":
        if space is None:
            raise run_folder.RunError("retrieval needs --space RUN: a trained model's run folder")
        opened = run_folder.Run.open(space)
        model = opened.model("cpu")  # refuses an unfinished or foreign run in one line
        if not hasattr(model, "embed"):
            raise run_folder.RunError(f"the model in {space} has no audio space to search")
        state = opened.final()
        data = data or state["config"]["data"]
        record = {"model": "retrieval", "space": str(Path(space).resolve()), "space_model": opened.name,
                  "data": data, "build": run_folder.build_record(state)}
    else:
        if not data:
            raise run_folder.RunError("real needs --data BUILD")
        build = run_folder.check_build(Build.open(data))
        record = {"model": "real", "data": data, "build": build.record()}
    out = Path(out)
    text = json.dumps(record, indent=2)
    if (out / FILE).is_file() and (out / FILE).read_text() == text:
        return record  # unchanged: its evaluation.json stays up to date (it is stamped with this file)
    out.mkdir(parents=True, exist_ok=True)
    with run_folder.writing(out):  # not while a training or an evaluation writes there
        storage.atomic_write(out / FILE, text)
    return record


def load_reference(run: "run_folder.Run", device: torch.device):
    """The registry's loader of the reference rows (`models.get("retrieval").load`)."""
    record = run.final()["reference"]
    if record["model"] == "retrieval":
        return RetrievalModel.load(Path(record["space"]), record["data"], device)
    build = run_folder.check_build(Build.open(record["data"]))
    return RealFrames(Normalizer.from_build(build), device, build.record())

