"""Stage 2: the sound-to-image translator (SPEC 4.2) on top of the frozen audio encoder.

One loop, top to bottom. The encoder is frozen, so every sample's embedding is computed once and
cached (RUN/embeddings.pt). The generator G minimises pixel MSE + λ · L_ma, where L_ma is the
batch adversarial loss averaged with the mean adversarial losses of the previous k-1 epochs; the
discriminator D sees balanced real/fake batches and is updated once every n_gd G updates. For G's
update D is frozen (Algorithm 1, line 12): no gradient to its weights, and evaluation mode, so
that its last BatchNorm scores G's pictures with its running statistics instead of normalising
them away over a batch of fakes (docs/training.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F


from s2i_data import untrusted
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.run import EMBEDDINGS, open_build
from s2i_model.models.s2i import TRANSLATOR
from s2i_model.models.s2i.load import check_translator, generator_narrow, load_encoder
from s2i_model.train import distributed
from s2i_model.models.s2i.config import TranslatorConfig
from s2i_model.train import resident, runtime
from s2i_model.data import Normalizer, ShardStream, compute_embeddings
from s2i_model.grid import grids_folder
from s2i_model.evaluate.informativity import Judges, judge_generator
from s2i_model.train.metrics import MetricsLog, skipped_samples, throughput
from s2i_model.models.s2i.nets import DenseGenerator, Discriminator
from s2i_model.train.runtime import (TrainingError, autocast, check_precision, grad_scaler, make_optimizer, optimizer_settings, prepare_model,
                      rng_state, seed_everything, set_hyperparameters, set_rng_state, sole_writer, update)
from s2i_model.train.gan import draw_grid, frozen

def embedding_cache(run: Path, encoder, build: Build, norm: Normalizer, device, workers: int,
                    splits: tuple[str, ...] = ("train", "val"), log=None) -> dict:
    """The frozen encoder's embeddings of ``splits``, kept in RUN/embeddings.pt with the build's
    fingerprint: a cache made from another build (rebuilt in place, other settings) is recomputed."""
    path = run / EMBEDDINGS
    try:
        cache = checkpoint.load(path, log=log) or {}
        if cache and cache.get("fingerprint") == build.fingerprint:
            check_embeddings(cache, path, encoder, build)
    except (checkpoint.CheckpointError, untrusted.Untrusted) as e:  # a cache: computed again, not trusted or fatal
        (log or print)(f"warning: {e}; computing the embeddings again")
        cache = {}
    if cache and cache.get("fingerprint") != build.fingerprint:
        (log or print)(f"{path} was computed from another build: computing the embeddings again")
        cache = {}
    cache["fingerprint"] = build.fingerprint
    missing = [s for s in splits if s not in cache]
    for split in missing:
        cache[split] = compute_embeddings(encoder, build, split, norm, device, workers=workers)
    if missing:
        checkpoint.save(path, cache)
    return cache


def check_embeddings(cache: dict, path: Path, encoder, build: Build) -> None:
    """Refuse a cache whose splits are not the encoder's embeddings of this build's samples in
    shape: plain unique keys, no more than the split holds, [keys, E] finite (E: the encoder's
    output size), class indices of the build."""
    for split in ("train", "val", "test"):
        if split in cache:
            untrusted.embedding_split(cache[split], f"{path}: {split}", encoder.emb, len(build.classes), build.size(split))


NARROW = {"auto": None, "on": True, "off": False}  # --narrow-generator → DenseGenerator's narrow


def lookup(cache: dict) -> dict[str, int]:
    return {k: i for i, k in enumerate(cache["keys"])}


def rows_of(index: dict[str, int], keys, path: Path) -> list[int]:
    """The cache rows of a batch's keys; a key the cache lacks is one line (the cache was edited)."""
    try:
        return [index[k] for k in keys]
    except KeyError as e:
        raise TrainingError(f"{path} holds no embedding of sample {e.args[0]!r}: delete it to compute them again") from None


def adversarial_loss(D: torch.nn.Module, fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Equation (4): mean((r_max − D(G(x), x))²), with D frozen."""
    with frozen(D):
        return torch.mean((1.0 - D(fake, z).float()) ** 2)


@sole_writer
def train_translator(cfg: TranslatorConfig, log=print) -> dict:
    run = Path(cfg.run)
    # ---- set-up: processes (DDP under torchrun), device, frozen encoder and its cached
    # embeddings (computed by rank 0), data, G, D, optimisers
    d, device = distributed.setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    batch = distributed.per_rank_batch(cfg.batch_size, d)
    build = open_build(cfg)
    if d.main:
        checkpoint.remove_stray(run)  # temporary files of a save that was killed
    encoder, ae_cfg, norm = load_encoder(run, device, log)
    judges = Judges.load(Path(cfg.informativity), str(device)) if cfg.informativity and d.main else None
    splits = ("train", "val", "test") if cfg.informativity else ("train", "val")
    if d.main:
        embedding_cache(run, encoder, build, norm, device, cfg.workers, splits, log)
    distributed.barrier(d)
    emb = embedding_cache(run, encoder, build, norm, device, cfg.workers, splits, log)
    # seeded only now: computing the embeddings draws from the RNG (the loader's base seed), and a
    # run must be the same whether they were cached already or not
    seed_everything(cfg.seed + d.rank)
    classes = build.classes
    train_index = lookup(emb["train"])
    train_emb = emb["train"]["emb"].to(device)
    train_ds = ShardStream(build, "train", norm, cfg.seed, shuffle=True, buffer=cfg.shuffle_buffer,
                           rank=d.rank, world=d.world)
    check_precision(cfg.precision, device)
    # a resumed run keeps the generator it was started with (narrow-width adaptations or not)
    state = checkpoint.load(run / TRANSLATOR, device, log)
    if cfg.narrow_generator not in NARROW:
        raise ValueError(f"--narrow-generator must be auto, on or off, not {cfg.narrow_generator!r}")
    narrow = generator_narrow(state) if state is not None else NARROW[cfg.narrow_generator]
    G = prepare_model(DenseGenerator(ae_cfg.emb, ae_cfg.width, narrow=narrow), device)
    D = prepare_model(Discriminator(ae_cfg.emb, ae_cfg.width), device)
    opt_g = make_optimizer(G.parameters(), cfg.optimizer, cfg.lr_g, cfg.momentum_g, cfg.adam_lr)
    opt_d = make_optimizer(D.parameters(), cfg.optimizer, cfg.lr_d, cfg.momentum_d, cfg.adam_lr)
    scaler_g, scaler_d = grad_scaler(device, cfg.precision), grad_scaler(device, cfg.precision)
    start, g_steps, adv_history = 0, 0, []

    # ---- resume
    saved_rng = None
    if state is not None:  # every part checked before it is used (a run folder may come from elsewhere)
        path = run / TRANSLATOR
        check_translator(state, path)  # what it claims, against what it holds
        trained_with = untrusted.mapping(state.get("config"), f"{path}: config").get("optimizer", "sgd")
        if trained_with != cfg.optimizer:
            raise TrainingError(f"{path} was trained with --optimizer {trained_with!r}; use the same or another --run")
        checkpoint.load_into(G, state.get("G"), f"{path}: G")
        checkpoint.load_into(D, state.get("D"), f"{path}: D")
        checkpoint.load_optimizer(opt_g, state.get("opt_g"), f"{path}: opt_g")
        checkpoint.load_optimizer(opt_d, state.get("opt_d"), f"{path}: opt_d")
        set_hyperparameters(opt_g, **optimizer_settings(cfg.optimizer, cfg.lr_g, cfg.momentum_g, cfg.adam_lr))
        set_hyperparameters(opt_d, **optimizer_settings(cfg.optimizer, cfg.lr_d, cfg.momentum_d, cfg.adam_lr))
        saved_rng = runtime.saved_rng(state, d, path)
        for scaler, name in ((scaler_g, "scaler_g"), (scaler_d, "scaler_d")):
            runtime.load_scaler(scaler, state.get(name), f"{path}: {name}")
        start = untrusted.epoch(state.get("epoch"), f"{path}: epoch")
        g_steps = untrusted.number(state.get("g_steps"), f"{path}: g_steps", lo=0, integer=True)
        adv_history = untrusted.finite_list(state.get("adv_history"), f"{path}: adv_history")
    if start >= cfg.epochs:
        log(f"translator already trained for {start} epochs in {run}: nothing to do")
        return state
    held = resident.hold(cfg.data_on_device, {"train": train_ds}, device, mel=False, image=True,
                         workers=cfg.workers, log=log)["train"]
    metrics = MetricsLog(run, "translator", start) if d.main else None
    grid_rows = fixed_validation_sounds(cfg, build, emb["val"], norm) if d.main and cfg.grid_every > 0 else []
    G, D = distributed.wrap(G, d, device, cfg.sync_bn), distributed.wrap(D, d, device, cfg.sync_bn)
    if note := distributed.sync_bn_note(d, device, cfg.sync_bn):
        log(note)
    if saved_rng is not None:  # restored last: reading data above may draw (webdataset's seeds)
        set_rng_state(saved_rng)

    for epoch in range(start, cfg.epochs):
        G.train()
        D.train()
        train_ds.set_epoch(epoch)
        train_ds.skipped.value = 0
        t0 = time.time()
        sums = {"pixel": 0.0, "adv": 0.0, "g": 0.0, "d": 0.0}
        n = d_updates = 0
        past = adv_history[-(cfg.ma_k - 1):] if cfg.ma_k > 1 else []
        for step, (_, real, _, keys) in enumerate(resident.batches(train_ds, held, batch, cfg.workers)):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            if real.shape[0] < 2:  # a last batch of one: BatchNorm cannot train on it
                continue
            z = train_emb[rows_of(train_index, keys, run / EMBEDDINGS)]
            real = real.to(device, non_blocking=True)

            # ---- generator update: pixel MSE + λ · moving-average adversarial loss, D frozen
            with autocast(device, cfg.precision):
                fake = G(z)
                pixel = F.mse_loss(fake.float(), real)
                # D's own module (no DDP wrapper: it takes no gradient here, so there is nothing
                # to synchronise). With λ = 0 the term is only logged, and its backward through D
                # (as costly as G's own) is skipped: the same weights result.
                with torch.set_grad_enabled(cfg.lam != 0):
                    adv = adversarial_loss(distributed.unwrap(D), fake, z)
            l_ma = (adv + sum(past)) / (1 + len(past))  # only the batch term carries a gradient
            loss_g = pixel + cfg.lam * l_ma
            update(opt_g, loss_g, "generator", epoch, step, d, scaler_g)
            g_steps += 1

            # ---- discriminator update, once every n_gd generator updates (or through every
            # n_gd-th epoch with d_schedule "epoch"), real and fake halves
            if (g_steps % cfg.n_gd == 0) if cfg.d_schedule == "step" else ((epoch + 1) % cfg.n_gd == 0):
                with autocast(device, cfg.precision):  # one balanced batch: real half, fake half
                    d_real, d_fake = D(torch.cat([real, fake.detach()]), torch.cat([z, z])).float().chunk(2)
                    loss_d = F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, -torch.ones_like(d_fake))
                update(opt_d, loss_d, "discriminator", epoch, step, d, scaler_d)
                distributed.average_buffers(D, d)  # the running statistics that score G's next pictures
                sums["d"] += loss_d.item()
                d_updates += 1
            b = real.shape[0]
            sums["pixel"] += pixel.item() * b
            sums["adv"] += adv.item() * b
            sums["g"] += loss_g.item() * b
            n += b
        seconds = time.time() - t0

        # ---- log, image grid, checkpoint (sums over ranks; rank 0 writes)
        sums["pixel"], sums["adv"], sums["g"], sums["d"], n, d_updates = distributed.all_sum(
            d, [sums["pixel"], sums["adv"], sums["g"], sums["d"], n, d_updates])
        n, d_updates = int(n), int(d_updates) // d.world  # every rank updates D at the same steps
        sums["d"] /= d.world
        adv_history.append(sums["adv"] / max(n, 1))
        row = {"epoch": epoch + 1, "pixel_loss": sums["pixel"] / max(n, 1), "adv_loss": adv_history[-1],
               "g_loss": sums["g"] / max(n, 1), "d_loss": sums["d"] / max(d_updates, 1), "d_updates": d_updates,
               **throughput(n, seconds)}
        if cfg.skip_bad_samples:
            row["skipped_samples"] = skipped_samples(held, train_ds)
        rng = distributed.rng_for_checkpoint(d, rng_state())
        if not d.main:
            continue
        if judges is not None and len(emb["test"]["keys"]) and (epoch + 1) % cfg.informativity_every == 0:
            row["informativity"] = judge_generator(distributed.unwrap(G), emb["test"]["emb"], emb["test"]["cls"], classes, judges,
                                                   cfg.informativity_samples, cfg.seed)
            if len(emb["val"]["keys"]):  # the same on val: the best moving average selected without the test split
                row["informativity_val"] = judge_generator(distributed.unwrap(G), emb["val"]["emb"], emb["val"]["cls"],
                                                           classes, judges, cfg.informativity_samples, cfg.seed)
        metrics.write(row)
        log(f"translator epoch {epoch + 1}/{cfg.epochs}: pixel {row['pixel_loss']:.4f} adv {row['adv_loss']:.4f} "
            f"D {row['d_loss']:.4f} ({row['samples_per_s']:.1f} samples/s)"
            + (f" informativity {row['informativity']['mean']:.1%}" if row.get("informativity", {}).get("mean")
               is not None else ""))
        if grid_rows and ((epoch + 1) % cfg.grid_every == 0 or epoch + 1 == cfg.epochs):
            draw_grid(distributed.unwrap(G), grid_rows, cfg.grid_images, device, grids_folder(run) / f"epoch-{epoch + 1:05d}.png")
        state = {"G": distributed.unwrap(G).state_dict(), "D": distributed.unwrap(D).state_dict(), "opt_g": opt_g.state_dict(),
                 "opt_d": opt_d.state_dict(), "epoch": epoch + 1, "g_steps": g_steps, "adv_history": adv_history,
                 "scaler_g": scaler_g.state_dict() if scaler_g is not None else None,
                 "scaler_d": scaler_d.state_dict() if scaler_d is not None else None,
                 "rng": rng,
                 "config": cfg.to_dict(), "autoencoder": ae_cfg.to_dict(), "normalizer": norm.to_dict(),
                 "generator": {"narrow": distributed.unwrap(G).narrow},
                 "build": build.record(),
                 "last": row}
        checkpoint.save(run / TRANSLATOR, state)
    distributed.barrier(d)
    if not d.main:
        return {}
    metrics.close()
    return state


def fixed_validation_sounds(cfg: TranslatorConfig, build: Build, val: dict, norm: Normalizer) -> list[tuple]:
    """The first few validation sounds of each class (by key), with their real frames."""
    if not len(val["keys"]):
        return []
    order = sorted(range(len(val["keys"])), key=lambda i: val["keys"][i])
    picked: dict[int, list[int]] = {}
    for i in order:
        c = int(val["cls"][i])
        if len(picked.setdefault(c, [])) < cfg.grid_sounds_per_class:
            picked[c].append(i)
    wanted = {val["keys"][i] for idx in picked.values() for i in idx}
    frames = {}
    for _, img, _, key in ShardStream(build, "val", norm, shuffle=False):
        if key in wanted:
            frames[key] = img
    return [(val["keys"][i], frames.get(val["keys"][i]), val["emb"][i], c)
            for c in sorted(picked) for i in picked[c]]


