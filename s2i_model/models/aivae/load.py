"""A trained AIVAE or AIVAEGAN loaded back from its run folder as a `model.SoundToImage` (`VaeModel`)."""

from __future__ import annotations

import torch

from s2i_data import untrusted

from s2i_model import checkpoint, run as run_folder
from s2i_model.data import Normalizer
from s2i_model.model import seeded_pictures
from s2i_model.models.aivae.nets import MODELS


class VaeModel:
    """A trained AIVAE / AIVAEGAN as a `model.SoundToImage`: n pictures of a sound are n draws of
    the latent f ~ q(f|a), decoded (`seeded_pictures`' seeding rule)."""

    def __init__(self, name: str, vae: torch.nn.Module, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.name, self.vae, self.norm, self.device, self.build = name, vae, norm, device, build

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The posterior means μ of normalised log-mels: what the sound says, without the draw."""
        return self.vae.encode(mels.to(self.device))[0]

    @torch.no_grad()
    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        return next(seeded_pictures(self.vae.pictures, mels.to(self.device), n, seed))


def trained_parts(run: run_folder.Run, device: torch.device, stage: str | None = None) -> tuple[dict, str, Normalizer]:
    """(final checkpoint, where it is, normaliser): checked; a staged model not at its last ``stage`` refused."""
    state = run.final(device)
    where = str(run.file)
    if stage is not None:
        if not isinstance(state.get("stage"), str):
            raise untrusted.Untrusted(f"{where}: stage {state.get('stage')!r} is not a stage name")
        if state["stage"] != stage:
            raise run_folder.RunError(f"{run.spec.title} in {run.path} is still at its {state['stage']} stage: "
                                      "finish training it first")
    return state, where, Normalizer(**untrusted.normaliser(state.get("normalizer"), f"{where}: normalizer"))


def load(run: run_folder.Run, device: torch.device) -> VaeModel:
    """The registry's loader for aivae and aivaegan (`ModelSpec.load`)."""
    state, where, norm = trained_parts(run, device)
    cfg = untrusted.net_config(state["config"], where, "latent", "width")
    vae = checkpoint.build(lambda: MODELS[run.name](cfg["latent"], cfg["width"]), state.get("vae"), f"{where}: vae")
    return VaeModel(run.name, vae.to(device).eval(), norm, device, run_folder.build_record(state))
