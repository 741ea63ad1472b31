"""The multimodal-feature GAN (paper 004, SPEC 6.3) trained on the same shards as S2I, in three
stages kept in one checkpoint (RUN/mmgan.pt, with the stage and its epoch):

1. ``features``: the frame encoder and the sound encoder, each on the build's class labels
   (cross-entropy), standing in for the paper's pretrained VGG-16 and SoundNet.
2. ``multimodal``: the multimodal layers on image-only (I), sound-only (S) and paired (B, halved)
   inputs of the frozen stage-1 features, with the paper's three losses (5.3): the hidden layer's
   L1 between I, S and B; the cross-entropy between the hidden layers of I and S, before and after
   the activation; the output classification (the build's labels, not the paper's pseudo-labels).
3. ``gan``: the two stacked pix2pix cGANs (5.2, 5.4), each a step of its PatchGAN D (its loss
   weighted 0.001 as the paper says) then a step of G (non-saturating GAN term + pix2pix's
   λ·L1 to the target), D frozen for G's term as in the S2I translator.

The loop and its machinery are the S2I trainers' (and train/aivae.py's): `run.open_build`,
`ShardStream` / `resident`, `distributed` (DDP under torchrun: the stage's trained module is
wrapped), `runtime` (seeds, RNG states, AMP, non-finite losses refused), `checkpoint`,
`MetricsLog` (one stage name per stage). Re-running the same command resumes from RUN/mmgan.pt
and reaches the state an uninterrupted run would have.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_model import checkpoint
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.data import Normalizer, ShardStream
from s2i_model.models.mmgan.nets import MmGan, feature_map
from s2i_model.grid import grids_folder
from s2i_model.run import open_build
from s2i_model.models.mmgan import CHECKPOINT
from s2i_model.train import distributed, resident, staged
from s2i_model.train.gan import draw_grid, frozen, grid_sounds
from s2i_model.train.metrics import MetricsLog, skipped_samples
from s2i_model.train.runtime import (TrainingError, autocast, check_precision, grad_scaler, optimiser_states,
                                     prepare_model, restore_optimisers, rng_state, seed_everything, set_rng_state, sole_writer,
                                     update)

STAGES = ("features", "multimodal", "gan")
# what each stage logs, train and val (metrics.jsonl)
TRAIN_KEYS = {"features": ("frame_acc", "frame_ce", "sound_acc", "sound_ce"),
              "multimodal": ("ce_hidden", "ce_out", "l1", "loss", "sound_acc"),
              "gan": ("adv_loss", "d_loss", "l1_feature", "l1_image", "loss")}
VAL_KEYS = {"features": ("val_frame_acc", "val_sound_acc"), "multimodal": ("val_sound_acc",), "gan": ("val_l1_image",)}


def soft_cross_entropy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between two hidden layers read as distributions over their units (softmax),
    both ways: I's as the target of S's and S's of I's (the paper names no direction)."""
    la, lb = F.log_softmax(a.float(), 1), F.log_softmax(b.float(), 1)
    return -0.5 * ((la.exp() * lb).sum(1) + (lb.exp() * la).sum(1)).mean()


class _ThreeInputs(torch.nn.Module):
    """The multimodal layers on I, S and B in one forward (DDP counts one forward per backward)."""

    def __init__(self, mm) -> None:
        super().__init__()
        self.mm = mm

    def forward(self, image_f, sound_f):
        return self.mm(image_f, None), self.mm(None, sound_f), self.mm(image_f, sound_f)


def multimodal_losses(outputs, cls: torch.Tensor) -> dict[str, torch.Tensor]:
    """The paper's three losses (5.3) on the outputs for I, S and B (halved) inputs."""
    (pre_i, post_i, out_i), (pre_s, post_s, out_s), (_, post_b, out_b) = outputs
    l1 = ((post_i - post_s).abs().mean() + (post_b - post_i).abs().mean() + (post_b - post_s).abs().mean())
    ce_hidden = soft_cross_entropy(pre_i, pre_s) + soft_cross_entropy(post_i, post_s)
    ce_out = sum(F.cross_entropy(o.float(), cls) for o in (out_i, out_s, out_b))
    return {"l1": l1, "ce_hidden": ce_hidden, "ce_out": ce_out, "loss": l1 + ce_hidden + ce_out,
            "acc_sound": (out_s.argmax(1) == cls).float().sum(), "acc_image": (out_i.argmax(1) == cls).float().sum()}


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


class _Pictures(torch.nn.Module):
    def __init__(self, model: MmGan) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.pictures(mel)


def _modes(model: MmGan, stage: str, training: bool) -> None:
    """Earlier stages' nets stay in eval mode (frozen: their BatchNorm statistics are final)."""
    model.eval()
    if training:
        {"features": lambda: (model.frame_encoder.train(), model.sound_encoder.train()),
         "multimodal": lambda: model.multimodal.train(),
         "gan": lambda: (model.generators.train(), model.discriminators.train())}[stage]()


def _trained(model: MmGan, stage: str) -> list[torch.nn.Module]:
    return {"features": [model.frame_encoder, model.sound_encoder], "multimodal": [model.multimodal],
            "gan": [model.generators, model.discriminators]}[stage]


class _Features(torch.nn.Module):
    """Stage 1's two encoders as one module (one DDP forward)."""

    def __init__(self, model: MmGan) -> None:
        super().__init__()
        self.frame, self.sound = model.frame_encoder, model.sound_encoder

    def forward(self, img, mel):
        return self.frame(img)[1], self.sound(mel)[1]


@sole_writer
def train_mmgan(cfg: MmganConfig, log=print) -> dict:
    run = Path(cfg.run)
    path = run / CHECKPOINT
    d, device = distributed.setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    batch = distributed.per_rank_batch(cfg.batch_size, d)
    if cfg.width <= 0:
        raise ValueError("--width must be above 0")
    if min(cfg.epochs_features, cfg.epochs_multimodal, cfg.epochs) < 0 or cfg.d_weight < 0 or cfg.l1_weight < 0:
        raise ValueError("epochs, --d-weight and --l1-weight must be at least 0")
    seed_everything(cfg.seed + d.rank)
    build = open_build(cfg)
    n_classes = len(build.classes)
    norm = Normalizer.from_build(build)
    train_ds = ShardStream(build, "train", norm, cfg.seed, shuffle=True, buffer=cfg.shuffle_buffer,
                           rank=d.rank, world=d.world)
    val_ds = ShardStream(build, "val", norm, cfg.seed, shuffle=False, rank=d.rank, world=d.world, equal=False)
    check_precision(cfg.precision, device)
    model = prepare_model(MmGan(n_classes, cfg.width), device)

    # ---- resume: the stage, its epoch, every net, the stage's optimisers, the RNG
    state, stage_i, start, opt_states, saved_rng = staged.resume(path, cfg, d, device, STAGES, log)
    if state is not None:
        if state.get("classes") != n_classes:
            raise TrainingError(f"{path} was trained on {state.get('classes')!r} classes, not {n_classes}; use another --run")
        checkpoint.load_into(model, state.get("nets"), f"{path}: nets")
    if start >= cfg.stage_epochs(STAGES[stage_i]):
        log(f"mmgan already trained ({', '.join(f'{s} {cfg.stage_epochs(s)}' for s in STAGES)} epochs) in {run}: "
            "nothing to do")
        return state
    held = resident.hold(cfg.data_on_device, {"train": train_ds, "val": val_ds}, device, mel=True, image=True,
                         workers=cfg.workers, log=log)
    grid_rows = grid_sounds(cfg, build, norm) if d.main and cfg.grid_every > 0 else []
    if note := distributed.sync_bn_note(d, device, cfg.sync_bn):
        log(note)
    if saved_rng is not None:  # restored last: reading data above may draw (webdataset's seeds)
        set_rng_state(saved_rng)

    for stage in STAGES[stage_i:]:
        epochs = cfg.stage_epochs(stage)
        # ---- the stage's trained modules (wrapped for DDP) and optimisers
        if stage == "features":
            net = distributed.wrap(_Features(model), d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr_features)}
            lrs = {"opt": cfg.lr_features}
        elif stage == "multimodal":
            net = distributed.wrap(_ThreeInputs(model.multimodal), d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr_multimodal)}
            lrs = {"opt": cfg.lr_multimodal}
        else:
            net = distributed.wrap(model.generators, d, device, cfg.sync_bn)
            D = distributed.wrap(model.discriminators, d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999)),
                    "opt_d": torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))}
            lrs = {"opt": cfg.lr, "opt_d": cfg.lr}
        scalers = {k: grad_scaler(device, cfg.precision) for k in opts}
        restore_optimisers(opts, scalers, opt_states, lrs, path)
        metrics = MetricsLog(run, f"mmgan-{stage}", start) if d.main else None
        for epoch in range(start, epochs):
            _modes(model, stage, True)
            train_ds.set_epoch(epoch)
            train_ds.skipped.value = 0
            t0 = time.time()
            sums: dict[str, float] = {}
            n = 0

            def add(name, v, b):
                sums[name] = sums.get(name, 0.0) + float(v) * b

            for step, (mel, img, cls, _) in enumerate(resident.batches(train_ds, held["train"], batch, cfg.workers)):
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                if mel.shape[0] < 2:  # a last batch of one: BatchNorm cannot train on it
                    continue
                mel, img = mel.to(device, non_blocking=True), img.to(device, non_blocking=True)
                cls = torch.as_tensor(cls).to(device)
                b = mel.shape[0]
                if stage == "features":
                    with autocast(device, cfg.precision):
                        li, ls = net(img, mel)
                        loss_i, loss_s = F.cross_entropy(li.float(), cls), F.cross_entropy(ls.float(), cls)
                    update(opts["opt"], loss_i + loss_s, "mmgan features", epoch, step, d, scalers["opt"])
                    add("frame_ce", loss_i.item(), b), add("sound_ce", loss_s.item(), b)
                    add("frame_acc", (li.argmax(1) == cls).float().mean().item(), b)
                    add("sound_acc", (ls.argmax(1) == cls).float().mean().item(), b)
                elif stage == "multimodal":
                    with torch.no_grad(), autocast(device, cfg.precision):
                        fi, fs = model.image_feature(img).float(), model.sound_encoder(mel)[0].float()
                    with autocast(device, cfg.precision):
                        losses = multimodal_losses(net(fi, fs), cls)
                    update(opts["opt"], losses["loss"], "mmgan multimodal", epoch, step, d, scalers["opt"])
                    for k in ("l1", "ce_hidden", "ce_out", "loss"):
                        add(k, losses[k].item(), b)
                    add("sound_acc", losses["acc_sound"].item() / b, b)
                else:
                    with torch.no_grad(), autocast(device, cfg.precision):
                        m_map = feature_map(model.sound_feature(mel).float())
                        f_map = feature_map(model.image_feature(img).float())
                    with autocast(device, cfg.precision):
                        f_hat, x_hat = net(m_map, f_map)
                    # ---- D1, D2: real pairs against generated ones, one balanced batch each (one
                    # forward, as DDP wants); the paper's 0.001 on D's loss
                    with autocast(device, cfg.precision):
                        s1, s2 = D(torch.cat([m_map, m_map]), torch.cat([f_map, f_hat.detach().float()]),
                                   torch.cat([f_map, f_map]), torch.cat([img, x_hat.detach().float()]))
                        (r1, g1), (r2, g2) = s1.chunk(2), s2.chunk(2)
                        loss_d = 0.5 * (_bce(r1, True) + _bce(g1, False) + _bce(r2, True) + _bce(g2, False))
                    update(opts["opt_d"], cfg.d_weight * loss_d, "mmgan discriminator", epoch, step, d, scalers["opt_d"])
                    distributed.average_buffers(D, d)
                    # ---- G1, G2: fool the frozen Ds, and pix2pix's L1 to the targets
                    with autocast(device, cfg.precision), frozen(distributed.unwrap(D)) as Df:
                        a1, a2 = Df(m_map, f_hat, f_map, x_hat)
                    adv = _bce(a1, True) + _bce(a2, True)
                    l1_f = (f_hat.float() - f_map).abs().mean()
                    l1_x = (x_hat.float() - img).abs().mean()
                    loss = adv + cfg.l1_weight * (l1_f + l1_x)
                    update(opts["opt"], loss, "mmgan generator", epoch, step, d, scalers["opt"])
                    for k, v in (("d_loss", loss_d), ("adv_loss", adv), ("l1_feature", l1_f), ("l1_image", l1_x),
                                 ("loss", loss)):
                        add(k, v.item(), b)
                n += b
            seconds = time.time() - t0

            # ---- validate (each rank its own shards, bare modules: no collectives)
            _modes(model, stage, False)
            vsums: dict[str, float] = {}
            vn = 0
            with torch.no_grad():
                for mel, img, cls, _ in resident.batches(val_ds, held["val"], batch, cfg.workers):
                    mel, img, cls = mel.to(device), img.to(device), torch.as_tensor(cls).to(device)
                    b = mel.shape[0]
                    with autocast(device, cfg.precision):
                        if stage == "features":
                            vals = {"val_frame_acc": (model.frame_encoder(img)[1].argmax(1) == cls).float().mean(),
                                    "val_sound_acc": (model.sound_encoder(mel)[1].argmax(1) == cls).float().mean()}
                        elif stage == "multimodal":
                            out_s = model.multimodal(None, model.sound_encoder(mel)[0])[2]
                            vals = {"val_sound_acc": (out_s.argmax(1) == cls).float().mean()}
                        else:
                            vals = {"val_l1_image": (model.pictures(mel).float() - img).abs().mean()}
                    for k, v in vals.items():
                        vsums[k] = vsums.get(k, 0.0) + float(v) * b
                    vn += b

            # ---- log, image grid, checkpoint (sums over ranks; rank 0 writes)
            row, n, vn = staged.epoch_row(d, epoch, TRAIN_KEYS[stage], sums, VAL_KEYS[stage], vsums, n, vn, seconds)
            if cfg.skip_bad_samples:
                row["skipped_samples"] = skipped_samples(held["train"], train_ds)
            rng = distributed.rng_for_checkpoint(d, rng_state())
            if not d.main:
                continue
            metrics.write(row)
            log(f"mmgan {stage} epoch {epoch + 1}/{epochs}: "
                + " ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("epoch", "samples", "seconds", "samples_per_s"))
                + f" ({row['samples_per_s']:.1f} samples/s)")
            if stage == "gan" and grid_rows and ((epoch + 1) % cfg.grid_every == 0 or epoch + 1 == epochs):
                draw_grid(_Pictures(model), grid_rows, cfg.grid_images, device,
                          grids_folder(run) / f"mmgan-epoch-{epoch + 1:05d}.png")
            saved_opts = optimiser_states(opts, scalers)
            state = {"model": "mmgan", "stage": stage, "epoch": epoch + 1, "nets": model.state_dict(),
                     "opts": saved_opts, "classes": n_classes, "rng": rng, "config": cfg.to_dict(),
                     "normalizer": norm.to_dict(), "build": build.record(), "last": row,
                     "adapted": "feature extractors trained on the build's train split; the build's class labels "
                                "in place of the paper's pseudo-labels"}
            checkpoint.save(path, state)
        if metrics is not None:
            metrics.close()
        start, opt_states = 0, {}
    distributed.barrier(d)
    if not d.main:
        return {}
    return state
