"""A trained Sound2Scene loaded back from its run folder as a `model.SoundToImage`."""

from __future__ import annotations

import torch

from s2i_data import untrusted

from s2i_model import checkpoint, run as run_folder
from s2i_model.models.aivae.load import VaeModel, trained_parts
from s2i_model.models.sound2scene.nets import Sound2Scene


class Sound2SceneModel(VaeModel):
    """A trained Sound2Scene as a `model.SoundToImage`: sound → the audio encoder's feature → the
    frozen IC-GAN generator; n pictures of a sound are n noise vectors (the paper's inference)."""

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The audio features (unit norm) of normalised log-mels: where sounds land in the visual space."""
        return self.vae.audio_encoder(mels.to(self.device))

    @torch.no_grad()
    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """The frame encoder's features (unit norm) of frames in [-1, 1]: the visual space itself."""
        return self.vae.frame_encoder(images.to(self.device))


def load(run: run_folder.Run, device: torch.device) -> Sound2SceneModel:
    """The registry's loader (`ModelSpec.load`): only a run whose audio stage has begun."""
    state, where, norm = trained_parts(run, device, stage="audio")
    width = untrusted.net_config(state["config"], where, "width")["width"]
    net = checkpoint.build(lambda: Sound2Scene(width), state.get("nets"), f"{where}: nets")
    return Sound2SceneModel(run.name, net.to(device).eval(), norm, device, run_folder.build_record(state))
