"""A trained multimodal-feature GAN loaded back from its run folder as a `model.SoundToImage`."""

from __future__ import annotations

import torch

from s2i_data import untrusted

from s2i_model import checkpoint, run as run_folder
from s2i_model.models.aivae.load import VaeModel, trained_parts
from s2i_model.models.mmgan.nets import MmGan


class MmganModel(VaeModel):
    """A trained multimodal-feature GAN as a `model.SoundToImage`: sound → its multimodal feature →
    G1 → G2; n pictures of a sound differ by the U-Nets' test-time dropout (pix2pix's noise)."""

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The multimodal features of normalised log-mels (the hidden layer before its activation)."""
        return self.vae.sound_feature(mels.to(self.device))


def load(run: run_folder.Run, device: torch.device) -> MmganModel:
    """The registry's loader (`ModelSpec.load`): only a run whose last stage (the cGANs) has begun."""
    state, where, norm = trained_parts(run, device, stage="gan")
    classes = untrusted.number(state.get("classes"), f"{where}: classes", **untrusted.NET_SIZES["classes"])
    width = untrusted.net_config(state["config"], where, "width")["width"]
    net = checkpoint.build(lambda: MmGan(classes, width), state.get("nets"), f"{where}: nets")
    return MmganModel(run.name, net.to(device).eval(), norm, device, run_folder.build_record(state))
