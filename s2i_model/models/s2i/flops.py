"""Multiply-adds per sample of each network and of a training step (`s2i-model describe --flops`).

Counted, not derived by hand: `torch.utils.flop_counter.FlopCounterMode` watches a forward pass
(and, for training, the backward too) and adds up the FLOPs of every convolution, transposed
convolution and matrix product, 2 per multiply-add; we report MACs = FLOPs / 2. BatchNorm,
activations, dropout, concatenation and the optimiser are not counted: they are a few % of the
arithmetic, though on a GPU they cost memory traffic rather than multiply-adds.

The passes run on the meta device: the networks' own forward code and the same aten calls,
with shapes and no arithmetic, so the full-width networks are counted in well under a second
(the count is the same as on a CPU: tested). A batch of 2, because BatchNorm in training mode
refuses a single sample; the count is linear in the batch, so it is divided by 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

BATCH = 2

STAGE1_FORMULA = "3 × (encoder + decoder): a backward pass costs about two forwards (input and weight gradients)"
STAGE2_FORMULA = ("3 × G + 2 × D + 3 × D × 2 / n_gd: G forward and backward; D forward on G's pictures and "
                  "backward to its input only (frozen for G's update: no weight gradients, so 2 × D, not 3 ×); "
                  "every n_gd-th step a D update, forward and backward, on a balanced batch of 2 × batch")
COUNTING = ("MACs = FLOPs / 2 from torch.utils.flop_counter.FlopCounterMode over a real pass (meta device, "
            "batch 2, divided by 2): convolutions, transposed convolutions and matrix products; BatchNorm, "
            "activations, dropout and the optimiser are not counted")


def count_macs(fn, batch: int = BATCH) -> int:
    """Multiply-adds per sample of whatever ``fn()`` runs (forward, or forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2 // batch


def _nets(emb: int, width: float, device: str | torch.device):
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator, Discriminator
    from s2i_model.nets import InformativityClassifier

    with torch.device(device):
        ae = AudioAutoencoder(emb, width)
        return ae, DenseGenerator(emb, width), Discriminator(emb, width), InformativityClassifier()


def _inputs(emb: int, device, batch: int = BATCH):
    with torch.device(device):
        return (torch.rand(batch, 1, 128, 100) * 2 - 1, torch.rand(batch, emb) * 2 - 1,
                torch.rand(batch, 3, 96, 96) * 2 - 1)


def net_macs(emb: int = 512, width: float = 1.0, device: str | torch.device = "meta") -> dict[str, int]:
    """Forward multiply-adds per sample of each network, keyed as `describe` names them."""
    ae, G, D, C = _nets(emb, width, device)
    mel, z, img = _inputs(emb, device)
    with torch.no_grad():
        return {"autoencoder.encoder": count_macs(lambda: ae.encoder(mel)),
                "autoencoder.decoder": count_macs(lambda: ae.decoder(z)),
                "generator": count_macs(lambda: G(z)),
                "discriminator": count_macs(lambda: D(img, z)),
                "informativity_classifier": count_macs(lambda: C(img))}


def training_macs(emb: int = 512, width: float = 1.0, n_gd: int = 5, lam: float = 0.1,
                  device: str | torch.device = "meta") -> dict:
    """Per-sample cost of a training step of each stage: by formula from the forward counts, and
    counted over the trainers' own step (forward and backward) as a check of the formula."""
    from s2i_model.models.s2i.train_translator import adversarial_loss

    fwd = net_macs(emb, width, device)
    ae, G, D, _ = _nets(emb, width, device)
    mel, z, real = _inputs(emb, device)

    def stage1():  # train_autoencoder's step
        recon, _ = ae(mel)
        F.mse_loss(recon, mel).backward()

    fake = {}

    def g_update():  # train_translator's generator update, D frozen
        fake["x"] = G(z)
        (F.mse_loss(fake["x"], real) + lam * adversarial_loss(D, fake["x"], z)).backward()

    def d_update():  # its discriminator update: real half, fake half
        d_real, d_fake = D(torch.cat([real, fake["x"].detach()]), torch.cat([z, z])).chunk(2)
        (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, -torch.ones_like(d_fake))).backward()

    s1_counted = count_macs(stage1)
    g_counted, d_counted = count_macs(g_update), count_macs(d_update)
    enc, dec, g, d = fwd["autoencoder.encoder"], fwd["autoencoder.decoder"], fwd["generator"], fwd["discriminator"]
    return {
        "counting": COUNTING,
        "stage1_autoencoder": {"formula": STAGE1_FORMULA, "formula_macs": 3 * (enc + dec),
                               "counted_macs": s1_counted},
        "stage2_translator": {"formula": STAGE2_FORMULA, "n_gd": n_gd,
                              "formula_macs": 3 * g + 2 * d + (3 * d * 2) // n_gd,
                              # d_update's count is per sample of G's batch: it already holds the 2 ×
                              "counted_macs": g_counted + d_counted // n_gd},
        "embeddings_once": {"formula": "encoder forward, once per sample before stage 2 (cached)", "macs": enc},
    }


def describe(emb: int = 512, width: float = 1.0, flops: bool = False, **_) -> dict:
    """`s2i-model describe` for S2I: conv layers and parameters of each network of SPEC 3 (the paper's
    counts at E = 512, width 1), with ``flops`` their multiply-adds and a training step's."""
    from s2i_model.models.s2i.config import TranslatorConfig
    from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator, Discriminator
    from s2i_model.nets import InformativityClassifier
    from s2i_model.nets.blocks import conv_layers, n_params

    ae = AudioAutoencoder(emb, width)
    nets = {"autoencoder.encoder": ae.encoder, "autoencoder.decoder": ae.decoder,
            "generator": DenseGenerator(emb, width), "discriminator": Discriminator(emb, width),
            "informativity_classifier": InformativityClassifier()}
    out = {k: {"conv_layers": conv_layers(m), "params": n_params(m)} for k, m in nets.items()}
    if flops:
        for k, macs in net_macs(emb, width).items():
            out[k]["macs_per_sample"] = macs
        cfg = TranslatorConfig()
        out["training_macs_per_sample"] = training_macs(emb, width, n_gd=cfg.n_gd, lam=cfg.lam)
    return out
