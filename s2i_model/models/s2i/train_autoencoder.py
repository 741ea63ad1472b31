"""Stage 1: the audio autoencoder on the train split's spectrograms (SPEC 4.1).

One loop, top to bottom. Re-running the same command resumes from RUN/autoencoder.pt (models,
optimiser, epoch, RNG states) and reaches the state an uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data import storage, untrusted

from s2i_model import checkpoint
from s2i_model.run import open_build
from s2i_model.models.s2i import AUTOENCODER
from s2i_model.train import distributed
from s2i_model.models.s2i.config import AutoencoderConfig
from s2i_model.train import resident, runtime
from s2i_model.data import Normalizer, ShardStream
from s2i_model.train.metrics import MetricsLog, skipped_samples, throughput
from s2i_model.models.s2i.nets import AudioAutoencoder
from s2i_model.train.runtime import (TrainingError, autocast, check_precision, grad_scaler, make_optimizer, optimizer_settings,
                      prepare_model, rng_state, seed_everything, set_hyperparameters, set_rng_state, sole_writer, update)

__all__ = ["train_autoencoder"]


@sole_writer
def train_autoencoder(cfg: AutoencoderConfig, log=print) -> dict:
    run = Path(cfg.run)
    # ---- set-up: processes (DDP under torchrun), device, seeds, data, model, optimiser
    d, device = distributed.setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    batch = distributed.per_rank_batch(cfg.batch_size, d)
    seed_everything(cfg.seed + d.rank)
    build = open_build(cfg)  # DDP copies rank 0's initial weights to the others
    norm = Normalizer.from_build(build)
    train_ds = ShardStream(build, "train", norm, cfg.seed, shuffle=True, buffer=cfg.shuffle_buffer,
                           rank=d.rank, world=d.world)
    val_ds = ShardStream(build, "val", norm, cfg.seed, shuffle=False, rank=d.rank, world=d.world, equal=False)
    check_precision(cfg.precision, device)
    model = prepare_model(AudioAutoencoder(cfg.emb, cfg.width), device)
    opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.adam_lr)
    scaler = grad_scaler(device, cfg.precision)
    start = 0

    # ---- resume: everything the next epoch depends on
    if d.main:
        checkpoint.remove_stray(run)  # temporary files of a save that was killed
    saved_rng = None
    path = run / AUTOENCODER
    state = checkpoint.load(path, device, log)
    if state is not None:  # every part checked before it is used (a run folder may come from elsewhere)
        old = untrusted.mapping(state.get("config"), f"{path}: config")
        for k in ("emb", "width", "data", "optimizer"):
            if old.get(k) != getattr(cfg, k):
                raise TrainingError(f"{path} was trained with {k}={old.get(k)!r}, not {getattr(cfg, k)!r}; use another --run")
        checkpoint.load_into(model, state.get("model"), f"{path}: model")
        checkpoint.load_optimizer(opt, state.get("optimizer"), f"{path}: optimizer")
        set_hyperparameters(opt, **optimizer_settings(cfg.optimizer, cfg.lr, cfg.momentum, cfg.adam_lr))
        saved_rng = runtime.saved_rng(state, d, path)
        runtime.load_scaler(scaler, state.get("scaler"), f"{path}: scaler")
        start = untrusted.epoch(state.get("epoch"), f"{path}: epoch")
    if start >= cfg.epochs:
        log(f"autoencoder already trained for {start} epochs in {run}: nothing to do")
        return state
    held = resident.hold(cfg.data_on_device, {"train": train_ds, "val": val_ds}, device, mel=True, image=False,
                         workers=cfg.workers, log=log)
    metrics = MetricsLog(run, "autoencoder", start) if d.main else None
    model = distributed.wrap(model, d, device, cfg.sync_bn)
    if note := distributed.sync_bn_note(d, device, cfg.sync_bn):
        log(note)
    if saved_rng is not None:  # restored last: reading data above may draw (webdataset's seeds)
        set_rng_state(saved_rng)

    for epoch in range(start, cfg.epochs):
        # ---- train one epoch
        model.train()
        train_ds.set_epoch(epoch)
        train_ds.skipped.value = 0
        t0, total, n = time.time(), 0.0, 0
        for step, (mel, _, _, _) in enumerate(resident.batches(train_ds, held["train"], batch, cfg.workers)):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if mel.shape[0] < 2:  # a last batch of one: BatchNorm cannot train on it
                continue
            mel = mel.to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                recon, _ = model(mel)
                loss = F.mse_loss(recon.float(), mel)
            update(opt, loss, "autoencoder", epoch, step, d, scaler)
            total += loss.item() * mel.shape[0]
            n += mel.shape[0]
        train_time = time.time() - t0

        # ---- validate: reconstruction loss on the val split
        model.eval()
        vtotal, vn = 0.0, 0
        with torch.no_grad():  # each rank its own shards, through the bare module: no collectives
            for mel, _, _, _ in resident.batches(val_ds, held["val"], batch, cfg.workers):
                mel = mel.to(device)
                with autocast(device, cfg.precision):
                    recon, _ = distributed.unwrap(model)(mel)
                vtotal += F.mse_loss(recon.float(), mel, reduction="sum").item() / mel[0].numel()
                vn += mel.shape[0]

        # ---- log and checkpoint (sums over ranks; rank 0 writes)
        total, n, vtotal, vn = distributed.all_sum(d, [total, n, vtotal, vn])
        n, vn = int(n), int(vn)
        row = {"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_loss": vtotal / max(vn, 1),
               **throughput(n, train_time)}
        if cfg.skip_bad_samples:
            # held in memory, a damaged sample was left out once, when the split was read
            row["skipped_samples"] = skipped_samples(held["train"], train_ds)
        rng = distributed.rng_for_checkpoint(d, rng_state())
        if not d.main:
            continue
        metrics.write(row)
        log(f"autoencoder epoch {epoch + 1}/{cfg.epochs}: train {row['train_loss']:.4f} val {row['val_loss']:.4f} "
            f"({row['samples_per_s']:.1f} samples/s)")
        state = {"model": distributed.unwrap(model).state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                 "scaler": scaler.state_dict() if scaler is not None else None,
                 "rng": rng, "config": cfg.to_dict(), "normalizer": norm.to_dict(), "build": build.record(),
                 "last": row}
        checkpoint.save(run / AUTOENCODER, state)
    distributed.barrier(d)  # the others leave once rank 0 has written the last checkpoint
    if not d.main:
        return {}
    metrics.close()
    storage.atomic_write(run / "autoencoder.json", json.dumps({"config": cfg.to_dict(), "last": state["last"]}, indent=2))
    return state
