"""AIVAE and AIVAEGAN (paper 002, SPEC 6.1) trained on the same shards as S2I, in one stage.

AIVAE minimises the ELBO of eq. (3): −log p(i|f) (a Bernoulli likelihood of the picture, the
paper's sigmoid output: binary cross-entropy summed over pixels, per sample) + KL(q(f|a) ‖ N(0, I)).
``--balance paper`` (the default) scales that sum by 784/(C·H·W), the paper's 28×28 pictures
against our 96×96×3, so reconstruction, KL and α·GAN keep the paper's ratios; ``--balance sum``
leaves it whole, as every run before the option did (docs/models.md, "Balance").
AIVAEGAN adds an unconditional image discriminator D (eq. 4): each batch D takes one step on
real frames against the generator's pictures, then the generator (encoder + decoder) one step on
the non-saturating GAN term + α·reconstruction + KL, with D frozen as in the S2I translator
(`translator.frozen`: no gradient to D, its BatchNorm on running statistics).

One loop, top to bottom, with the S2I trainers' machinery: `run.open_build` (the build checked
against the nets), `ShardStream` / `resident` (the same batches streamed or held on the device),
`distributed` (DDP under torchrun), `runtime` (seeds, RNG states, AMP, refusal of non-finite
losses), `checkpoint` (atomic, weights-only) and `MetricsLog`. Re-running the same command
resumes from RUN/<model>.pt and reaches the state an uninterrupted run would have.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data import untrusted

from s2i_model import checkpoint
from s2i_model.models.aivae.config import BALANCES, AivaeConfig
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.data import Normalizer, ShardStream
from s2i_model.models.aivae.nets import MODELS, ImageDiscriminator, kl_divergence, to_picture
from s2i_model.grid import grids_folder
from s2i_model.run import open_build
from s2i_model.models.aivae import CHECKPOINTS
from s2i_model.train import distributed, resident, runtime

from s2i_model.train.metrics import MetricsLog, skipped_samples, throughput
from s2i_model.train.runtime import (TrainingError, autocast, check_precision, grad_scaler, prepare_model, rng_state,
                                     set_hyperparameters,
                                     seed_everything, set_rng_state, sole_writer, update)
from s2i_model.train.gan import draw_grid, frozen, grid_sounds


ALPHAS = (0.2, 0.5, 1.0, 2.0)
PAPER_VALUES = 28 * 28  # the values of one of the paper's pictures (a grey MNIST digit)


def reconstruction_scale(balance: str, values: int) -> float:
    """The weight on the reconstruction sum of a picture of ``values`` values (C·H·W): "paper"
    784 / values, so the term is the paper's 784-value sum at the same error per value; "sum" 1."""
    if balance not in BALANCES:
        raise ValueError(f"--balance must be {' or '.join(BALANCES)}, not {balance!r}")
    return PAPER_VALUES / values if balance == "paper" else 1.0


def reconstruction(logits: torch.Tensor, image: torch.Tensor, balance: str) -> torch.Tensor:
    """−log p(i|f) under the paper's sigmoid (Bernoulli) decoder: cross-entropy against the frame
    rescaled to [0, 1], summed over pixels, mean over the batch; times 784/(C·H·W) under
    ``balance="paper"`` (`reconstruction_scale`)."""
    target = (image + 1) / 2
    total = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="sum") / image.shape[0]
    scale = reconstruction_scale(balance, image[0].numel())
    return total if scale == 1.0 else total * scale  # "sum": every run before the option, bit for bit


class _Pictures(torch.nn.Module):
    """The VAE as a picture maker (mel → one picture per row), for `translator.draw_grid`."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vae.pictures(mel)


@sole_writer
def train_vae(cfg: AivaeConfig, log=print) -> dict:
    kind = cfg.model
    gan = kind == "aivaegan"
    run = Path(cfg.run)
    path = run / CHECKPOINTS[kind]
    # ---- set-up: processes (DDP under torchrun), device, seeds, data, networks, optimisers
    d, device = distributed.setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    batch = distributed.per_rank_batch(cfg.batch_size, d)
    if gan and cfg.alpha < 0:
        raise ValueError(f"--alpha must be at least 0 (the paper's: {', '.join(f'{a:g}' for a in ALPHAS)}), not {cfg.alpha:g}")
    if cfg.latent < 1 or cfg.width <= 0:
        raise ValueError("--latent must be at least 1 and --width above 0")
    cfg.check()  # --balance
    seed_everything(cfg.seed + d.rank)
    build = open_build(cfg)
    norm = Normalizer.from_build(build)
    train_ds = ShardStream(build, "train", norm, cfg.seed, shuffle=True, buffer=cfg.shuffle_buffer,
                           rank=d.rank, world=d.world)
    val_ds = ShardStream(build, "val", norm, cfg.seed, shuffle=False, rank=d.rank, world=d.world, equal=False)
    check_precision(cfg.precision, device)
    vae = prepare_model(MODELS[kind](cfg.latent, cfg.width), device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    scaler = grad_scaler(device, cfg.precision)
    D = opt_d = scaler_d = None
    if gan:
        D = prepare_model(ImageDiscriminator(cfg.width), device)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
        scaler_d = grad_scaler(device, cfg.precision)
    start = 0

    # ---- resume: everything the next epoch depends on
    if d.main:
        checkpoint.remove_stray(run)
    saved_rng = None
    state = checkpoint.load(path, device, log)
    if state is not None:  # every part checked before it is used (a run folder may come from elsewhere)
        old = untrusted.mapping(state.get("config"), f"{path}: config")
        for k in ("latent", "width", "data"):
            if old.get(k) != getattr(cfg, k):
                raise TrainingError(f"{path} was trained with {k}={old.get(k)!r}, not {getattr(cfg, k)!r}; use another --run")
        checkpoint.load_into(vae, state.get("vae"), f"{path}: vae")
        checkpoint.load_optimizer(opt, state.get("opt"), f"{path}: opt")
        set_hyperparameters(opt, lr=cfg.lr)
        if gan:
            checkpoint.load_into(D, state.get("D"), f"{path}: D")
            checkpoint.load_optimizer(opt_d, state.get("opt_d"), f"{path}: opt_d")
            set_hyperparameters(opt_d, lr=cfg.lr_d)
        for s, name in ((scaler, "scaler"), (scaler_d, "scaler_d")):
            runtime.load_scaler(s, state.get(name), f"{path}: {name}")
        saved_rng = runtime.saved_rng(state, d, path)
        start = untrusted.epoch(state.get("epoch"), f"{path}: epoch")
    if start >= cfg.epochs:
        log(f"{kind} already trained for {start} epochs in {run}: nothing to do")
        return state
    if state is not None:  # a run goes on with the balance it began with; before the option: "sum"
        trained_with = untrusted.mapping(state.get("config"), f"{path}: config").get("balance", "sum")
        if trained_with not in BALANCES:
            raise TrainingError(f"{path}: config.balance is not {' or '.join(BALANCES)}")
        if trained_with != cfg.balance:
            raise TrainingError(f"{path} was trained with --balance {trained_with}, not {cfg.balance}; "
                                "use the same or another --run")
    held = resident.hold(cfg.data_on_device, {"train": train_ds, "val": val_ds}, device, mel=True, image=True,
                         workers=cfg.workers, log=log)
    metrics = MetricsLog(run, kind, start) if d.main else None
    grid_rows = grid_sounds(cfg, build, norm) if d.main and cfg.grid_every > 0 else []
    vae = distributed.wrap(vae, d, device, cfg.sync_bn)
    if gan:
        D = distributed.wrap(D, d, device, cfg.sync_bn)
    if note := distributed.sync_bn_note(d, device, cfg.sync_bn):
        log(note)
    if saved_rng is not None:  # restored last: reading data above may draw (webdataset's seeds)
        set_rng_state(saved_rng)
    alpha = cfg.alpha if gan else 1.0

    for epoch in range(start, cfg.epochs):
        # ---- train one epoch
        vae.train()
        if gan:
            D.train()
        train_ds.set_epoch(epoch)
        train_ds.skipped.value = 0
        t0 = time.time()
        sums = {"recon": 0.0, "kl": 0.0, "loss": 0.0, "adv": 0.0, "d": 0.0}
        n = 0
        for step, (mel, img, _, _) in enumerate(resident.batches(train_ds, held["train"], batch, cfg.workers)):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if mel.shape[0] < 2:  # a last batch of one: BatchNorm cannot train on it
                continue
            mel, img = mel.to(device, non_blocking=True), img.to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                logits, mu, logvar = vae(mel)
                recon = reconstruction(logits, img, cfg.balance)
                kl = kl_divergence(mu.float(), logvar.float())
            adv = torch.zeros((), device=device)
            if gan:
                fake = to_picture(logits.float())
                # ---- D: real frames against the generator's pictures, one balanced batch (one
                # forward, as DDP wants), the paper's sigmoid cross-entropy
                with autocast(device, cfg.precision):
                    d_real, d_fake = D(torch.cat([img, fake.detach()])).float().chunk(2)
                    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
                update(opt_d, loss_d, "discriminator", epoch, step, d, scaler_d)
                distributed.average_buffers(D, d)
                sums["d"] += loss_d.item() * mel.shape[0]
                # ---- the generator's GAN term, non-saturating (−log D(G(f))), D frozen
                with autocast(device, cfg.precision), frozen(distributed.unwrap(D)) as Df:
                    score = Df(fake).float()
                adv = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
            loss = adv + alpha * recon + kl
            update(opt, loss, kind, epoch, step, d, scaler)
            b = mel.shape[0]
            sums["recon"] += recon.item() * b
            sums["kl"] += kl.item() * b
            sums["adv"] += adv.item() * b
            sums["loss"] += loss.item() * b
            n += b
        seconds = time.time() - t0

        # ---- validate: the ELBO's two terms on the val split
        vae.eval()
        vrec, vkl, vn = 0.0, 0.0, 0
        with torch.no_grad():  # each rank its own shards, through the bare module: no collectives
            for mel, img, _, _ in resident.batches(val_ds, held["val"], batch, cfg.workers):
                mel, img = mel.to(device), img.to(device)
                with autocast(device, cfg.precision):
                    logits, mu, logvar = distributed.unwrap(vae)(mel)
                vrec += reconstruction(logits, img, cfg.balance).item() * mel.shape[0]
                vkl += kl_divergence(mu.float(), logvar.float()).item() * mel.shape[0]
                vn += mel.shape[0]

        # ---- log, image grid, checkpoint (sums over ranks; rank 0 writes)
        keys = list(sums)
        totals = distributed.all_sum(d, [sums[k] for k in keys] + [n, vrec, vkl, vn])
        sums = dict(zip(keys, totals[:len(keys)]))
        n, vrec, vkl, vn = int(totals[len(keys)]), totals[len(keys) + 1], totals[len(keys) + 2], int(totals[len(keys) + 3])
        row = {"epoch": epoch + 1, "train_loss": sums["loss"] / max(n, 1), "recon_loss": sums["recon"] / max(n, 1),
               "kl": sums["kl"] / max(n, 1), "val_recon_loss": vrec / max(vn, 1), "val_kl": vkl / max(vn, 1)}
        if gan:
            row.update(adv_loss=sums["adv"] / max(n, 1), d_loss=sums["d"] / max(n, 1))
        row.update(throughput(n, seconds))
        if cfg.skip_bad_samples:
            row["skipped_samples"] = skipped_samples(held["train"], train_ds)
        rng = distributed.rng_for_checkpoint(d, rng_state())
        if not d.main:
            continue
        metrics.write(row)
        log(f"{kind} epoch {epoch + 1}/{cfg.epochs}: recon {row['recon_loss']:.1f} KL {row['kl']:.2f}"
            + (f" adv {row['adv_loss']:.3f} D {row['d_loss']:.3f}" if gan else "")
            + f" val recon {row['val_recon_loss']:.1f} ({row['samples_per_s']:.1f} samples/s)")
        if grid_rows and ((epoch + 1) % cfg.grid_every == 0 or epoch + 1 == cfg.epochs):
            draw_grid(_Pictures(distributed.unwrap(vae)), grid_rows, cfg.grid_images, device,
                      grids_folder(run) / f"{kind}-epoch-{epoch + 1:05d}.png")
        state = {"model": kind, "vae": distributed.unwrap(vae).state_dict(), "opt": opt.state_dict(),
                 "D": distributed.unwrap(D).state_dict() if gan else None,
                 "opt_d": opt_d.state_dict() if gan else None, "epoch": epoch + 1,
                 "scaler": scaler.state_dict() if scaler is not None else None,
                 "scaler_d": scaler_d.state_dict() if scaler_d is not None else None,
                 "rng": rng, "config": cfg.to_dict(), "normalizer": norm.to_dict(), "build": build.record(),
                 "last": row}
        checkpoint.save(path, state)
    distributed.barrier(d)
    if not d.main:
        return {}
    metrics.close()
    return state


def train_aivae(cfg: AivaeConfig, log=print) -> dict:
    return train_vae(cfg, log)


def train_aivaegan(cfg: AivaeganConfig, log=print) -> dict:
    return train_vae(cfg, log)
