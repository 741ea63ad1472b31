"""Sound2Scene (paper 003, SPEC 6.2) trained from scratch on the same shards as S2I, in three
stages kept in one checkpoint (RUN/sound2scene.pt, with the stage and its epoch):

1. ``visual``: the frame encoder learns a visual space without labels (SimCLR: two augmented
   views of each train frame, NT-Xent), standing in for the paper's SwAV ResNet-50. Frozen after.
2. ``generator``: IC-GAN (the paper's image generator): G(noise, h_i) learns to paint the
   neighbourhood of the instance feature h_i (the k train frames nearest to frame i in the frozen
   space), against a projection D that sees (frame, h_i); hinge loss, spectral norm, BigGAN's
   Adam (G 1e-4, D 4e-4, β = (0, 0.999)) and its two D steps per G step. Images only. Frozen after.
3. ``audio``: the audio encoder (ResNet-18) learns to land on the frozen feature of its paired
   frame, with the paper's symmetric InfoNCE on negative L2 distances of unit-norm features
   (equations 1-2), Adam 1e-3, weight decay 1e-5, batch 64, 50 epochs with early stopping on the
   validation loss (the best epoch's encoder is the one kept).

No stage reads a class label. The loop and its machinery are the other trainers' (`run.open_build`,
`ShardStream` / `resident`, `distributed` for DDP under torchrun, `runtime`, `checkpoint`,
`MetricsLog`); re-running the same command resumes from RUN/sound2scene.pt and reaches the state
an uninterrupted run would have. Stage 2 samples frames by index, so the train frames are held in
memory for it whatever --data-on-device says (VEGAS's 39k frames are 1.1 GB as uint8).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data import untrusted

from s2i_model import checkpoint
from s2i_model.models.sound2scene.config import Sound2SceneConfig
from s2i_model.data import Normalizer, ShardStream
from s2i_model.models.sound2scene.nets import NOISE, Sound2Scene
from s2i_model.grid import grids_folder
from s2i_model.run import open_build
from s2i_model.models.sound2scene import CHECKPOINT
from s2i_model.train import distributed, resident, staged
from s2i_model.train.gan import draw_grid, frozen, grid_sounds
from s2i_model.train.metrics import MetricsLog, skipped_samples
from s2i_model.train.runtime import (autocast, check_precision, grad_scaler, optimiser_states,
                                     prepare_model, restore_optimisers, rng_state, seed_everything, set_rng_state, sole_writer,
                                     update)

STAGES = ("visual", "generator", "audio")
TRAIN_KEYS = {"visual": ("ntxent", "view_acc"), "generator": ("d_loss", "g_loss", "d_real", "d_fake"),
              "audio": ("infonce", "pair_acc")}
VAL_KEYS = {"visual": ("val_ntxent",), "generator": ("val_d_real", "val_d_fake"), "audio": ("val_infonce", "val_pair_acc")}


# ---- stage 1: SimCLR
def augment(x: torch.Tensor, crop_scale: float) -> torch.Tensor:
    """A random view of each frame: resized crop (area crop_scale..1, aspect 3/4..4/3), horizontal
    flip, brightness and contrast ±20 %. No hue, saturation or grey-scale changes (SimCLR has
    them): colour is what separates many sound sources' frames, and the generator paints from this
    space, so it must keep colour."""
    b, dev = x.shape[0], x.device
    area = torch.empty(b, device=dev).uniform_(crop_scale, 1.0)
    ratio = torch.exp(torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx = (1 - w) * (torch.rand(b, device=dev) * 2 - 1)
    cy = (1 - h) * (torch.rand(b, device=dev) * 2 - 1)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    zero = torch.zeros(b, device=dev)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    y = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False,
                      padding_mode="reflection")
    mean = y.mean((1, 2, 3), keepdim=True)
    contrast = torch.empty(b, 1, 1, 1, device=dev).uniform_(0.8, 1.2)
    brightness = torch.empty(b, 1, 1, 1, device=dev).uniform_(-0.2, 0.2)
    return ((y - mean) * contrast + mean + 2 * brightness).clamp(-1, 1)


def nt_xent(p: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's loss on [2B, d] projections (view 1 of every frame, then view 2): each view's
    positive is the other view of its frame, the other 2B − 2 views its negatives. Also returns how
    many views find their partner first."""
    z = F.normalize(p.float(), dim=1)
    n = z.shape[0]
    sim = (z @ z.T / temperature).masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    target = (torch.arange(n, device=z.device) + n // 2) % n
    return F.cross_entropy(sim, target), (sim.argmax(1) == target).float().sum()


class _TwoViews(torch.nn.Module):
    """Both views through the frame encoder in one forward (DDP counts one forward per backward)."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.encoder.project(views)


# ---- stage 3: the paper's InfoNCE
def infonce(a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Equations (1)-(2): the symmetric InfoNCE whose similarity is −‖â − v̂‖₂ of unit-norm
    features (no temperature in the paper), averaged over both directions; also how many sounds
    find their own frame first."""
    a, v = F.normalize(a.float(), dim=1), F.normalize(v.float(), dim=1)
    logits = -torch.cdist(a, v)
    target = torch.arange(a.shape[0], device=a.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    return loss, (logits.argmax(1) == target).float().sum()


# ---- stage 2: IC-GAN's neighbourhoods
@torch.no_grad()
def frame_features(encoder, frames: torch.Tensor, device, precision: str, chunk: int = 256) -> torch.Tensor:
    """Unit-norm features of uint8 frames [N, 3, H, W] by the frozen encoder (eval mode)."""
    out = []
    for part in frames.split(chunk):
        with autocast(device, precision):
            out.append(encoder(part.to(device).float().div(127.5).sub(1.0)).float())
    return torch.cat(out)


def neighbourhoods(features: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k] indices of each instance's k nearest frames by cosine similarity (itself included),
    the sets IC-GAN's D takes its real frames from."""
    k = max(1, min(k, features.shape[0]))
    return torch.cat([(part @ features.T).topk(k, dim=1).indices for part in features.split(1024)])


class _FramePictures(torch.nn.Module):
    """G from a frame's own feature (IC-GAN's view of stage 2), for the stage's image grids."""

    def __init__(self, model: Sound2Scene) -> None:
        super().__init__()
        self.model = model

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        f = self.model.frame_encoder(frame)
        return self.model.generator(torch.randn(frame.shape[0], NOISE, device=frame.device), f)


class _Pictures(_FramePictures):
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.pictures(mel)


def _modes(model: Sound2Scene, stage: str, training: bool) -> None:
    """Earlier stages' nets stay in eval mode (frozen: their BatchNorm statistics are final)."""
    model.eval()
    if training:
        {"visual": lambda: model.frame_encoder.train(),
         "generator": lambda: (model.generator.train(), model.discriminator.train()),
         "audio": lambda: model.audio_encoder.train()}[stage]()


def saved_best(best, model: Sound2Scene, path: Path) -> dict | None:
    """The checkpoint's best audio encoder so far (early stopping), checked: its epoch, its
    validation loss and weights of the audio encoder's shapes."""
    if best is None:
        return None
    best = dict(untrusted.mapping(best, f"{path}: best"))
    untrusted.epoch(best.get("epoch"), f"{path}: best.epoch")
    untrusted.number(best.get("val_infonce"), f"{path}: best.val_infonce")
    untrusted.tensor_shapes(model.audio_encoder.state_dict(), best.get("audio_encoder"), f"{path}: best.audio_encoder")
    if not isinstance(best.get("stopped", False), bool):
        raise untrusted.Untrusted(f"{path}: best.stopped is not true or false")
    if best.get("last_encoder") is not None:  # the last epoch's weights, kept when it finished without stopping
        untrusted.tensor_shapes(model.audio_encoder.state_dict(), best["last_encoder"], f"{path}: best.last_encoder")
    return best


@sole_writer
def train_sound2scene(cfg: Sound2SceneConfig, log=print) -> dict:
    run = Path(cfg.run)
    path = run / CHECKPOINT
    d, device = distributed.setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    batch = distributed.per_rank_batch(cfg.batch_size, d)
    if cfg.width <= 0:
        raise ValueError("--width must be above 0")
    if min(cfg.epochs_visual, cfg.epochs_generator, cfg.epochs) < 0 or cfg.d_steps < 1 or cfg.neighbours < 1 \
            or cfg.temperature <= 0 or not 0 < cfg.crop_scale <= 1 or cfg.patience < 1:
        raise ValueError("epochs must be at least 0, --d-steps, --neighbours and --patience at least 1, "
                         "--temperature above 0 and --crop-scale in (0, 1]")
    seed_everything(cfg.seed + d.rank)
    build = open_build(cfg)
    norm = Normalizer.from_build(build)
    train_ds = ShardStream(build, "train", norm, cfg.seed, shuffle=True, buffer=cfg.shuffle_buffer,
                           rank=d.rank, world=d.world)
    val_ds = ShardStream(build, "val", norm, cfg.seed, shuffle=False, rank=d.rank, world=d.world, equal=False)
    check_precision(cfg.precision, device)
    model = prepare_model(Sound2Scene(cfg.width), device)

    # ---- resume: the stage, its epoch, every net, the stage's optimisers, the best audio encoder, the RNG
    state, stage_i, start, opt_states, saved_rng = staged.resume(path, cfg, d, device, STAGES, log)
    best = None
    if state is not None:
        checkpoint.load_into(model, state.get("nets"), f"{path}: nets")
        best = saved_best(state.get("best"), model, path)
        if best and best.get("last_encoder") is not None and STAGES[stage_i] == "audio" \
                and start < cfg.stage_epochs("audio") and not best.get("stopped"):
            # given more epochs than it finished with (a learning curve's next point): on from its last
            # weights, as if it had not paused; the best so far stays the one to beat
            model.audio_encoder.load_state_dict(best.pop("last_encoder"))
    if start >= cfg.stage_epochs(STAGES[stage_i]) or (STAGES[stage_i] == "audio" and best and best.get("stopped")):
        log(f"sound2scene already trained ({', '.join(f'{s} {cfg.stage_epochs(s)}' for s in STAGES)} epochs) in "
            f"{run}: nothing to do")
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
        frames = feats = near = None
        # ---- the stage's trained modules (wrapped for DDP) and optimisers
        if stage == "visual":
            net = distributed.wrap(_TwoViews(model.frame_encoder), d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr_visual)}
            lrs = {"opt": cfg.lr_visual}
        elif stage == "generator":
            # IC-GAN draws frames by index: every rank holds the whole train split's frames (in the
            # order read, so the neighbourhoods are the same on every rank)
            everything = ShardStream(build, "train", norm, cfg.seed, shuffle=False)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                frames = resident.ResidentSplit.load(everything, device, mel=False, image=True,
                                                     workers=cfg.workers).image
            model.frame_encoder.eval()
            feats = frame_features(model.frame_encoder, frames, device, cfg.precision)
            near = neighbourhoods(feats, cfg.neighbours)
            net = distributed.wrap(model.generator, d, device, cfg.sync_bn)
            D = distributed.wrap(model.discriminator, d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr_g, betas=(0.0, 0.999)),
                    "opt_d": torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(0.0, 0.999))}
            lrs = {"opt": cfg.lr_g, "opt_d": cfg.lr_d}
        else:
            net = distributed.wrap(model.audio_encoder, d, device, cfg.sync_bn)
            opts = {"opt": torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}
            lrs = {"opt": cfg.lr}
        scalers = {k: grad_scaler(device, cfg.precision) for k in opts}
        restore_optimisers(opts, scalers, opt_states, lrs, path)
        metrics = MetricsLog(run, f"sound2scene-{stage}", start) if d.main else None
        for epoch in range(start, epochs):
            _modes(model, stage, True)
            train_ds.set_epoch(epoch)
            train_ds.skipped.value = 0
            t0 = time.time()
            sums: dict[str, float] = {}
            n = 0

            def add(name, v, b):
                sums[name] = sums.get(name, 0.0) + float(v) * b

            if stage == "generator":
                # ---- IC-GAN: an epoch is as many G steps as the split has batches
                steps = max(1, math.ceil(len(frames) / (batch * d.world)))
                for step in range(steps):
                    if cfg.max_steps and step >= cfg.max_steps:
                        break
                    for _ in range(cfg.d_steps):
                        i = torch.randint(len(frames), (batch,), device=device)
                        j = near[i, torch.randint(near.shape[1], (batch,), device=device)]
                        real, h = frames[j].float().div(127.5).sub(1.0), feats[i]
                        with torch.no_grad(), autocast(device, cfg.precision):
                            fake = net(torch.randn(batch, NOISE, device=device), h)
                        with autocast(device, cfg.precision):
                            s_real, s_fake = D(torch.cat([real, fake.float()]), torch.cat([h, h])).float().chunk(2)
                            loss_d = F.relu(1 - s_real).mean() + F.relu(1 + s_fake).mean()
                        update(opts["opt_d"], loss_d, "sound2scene discriminator", epoch, step, d, scalers["opt_d"])
                    h = feats[torch.randint(len(frames), (batch,), device=device)]
                    with autocast(device, cfg.precision), frozen(distributed.unwrap(D)) as Df:
                        loss_g = -Df(net(torch.randn(batch, NOISE, device=device), h), h).float().mean()
                    update(opts["opt"], loss_g, "sound2scene generator", epoch, step, d, scalers["opt"])
                    for k, v in (("d_loss", loss_d), ("g_loss", loss_g), ("d_real", s_real.mean()),
                                 ("d_fake", s_fake.mean())):
                        add(k, v.item(), batch)
                    n += batch
            else:
                for step, (mel, img, _, _) in enumerate(resident.batches(train_ds, held["train"], batch, cfg.workers)):
                    if cfg.max_steps and step >= cfg.max_steps:
                        break
                    if img.shape[0] < 2:  # one sample has no negatives (and BatchNorm cannot train on it)
                        continue
                    img = img.to(device, non_blocking=True)
                    b = img.shape[0]
                    if stage == "visual":
                        with autocast(device, cfg.precision):
                            p = net(torch.cat([augment(img, cfg.crop_scale), augment(img, cfg.crop_scale)]))
                        loss, hits = nt_xent(p, cfg.temperature)
                        update(opts["opt"], loss, "sound2scene visual", epoch, step, d, scalers["opt"])
                        add("ntxent", loss.item(), b), add("view_acc", hits.item() / (2 * b), b)
                    else:
                        mel = mel.to(device, non_blocking=True)
                        with torch.no_grad():  # the frozen visual space: the target, not trained
                            v = model.frame_encoder(img)
                        with autocast(device, cfg.precision):
                            loss, hits = infonce(net(mel), v)
                        update(opts["opt"], loss, "sound2scene audio", epoch, step, d, scalers["opt"])
                        add("infonce", loss.item(), b), add("pair_acc", hits.item() / b, b)
                    n += b
            seconds = time.time() - t0

            # ---- validate (each rank its own shards, bare modules: no collectives)
            _modes(model, stage, False)
            vsums: dict[str, float] = {}
            vn = 0
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)  # the same views and noise at every epoch; training's RNG untouched
                for mel, img, _, _ in resident.batches(val_ds, held["val"], batch, cfg.workers):
                    mel, img = mel.to(device), img.to(device)
                    b = img.shape[0]
                    if b < 2:
                        continue
                    with autocast(device, cfg.precision):
                        if stage == "visual":
                            p = model.frame_encoder.project(torch.cat([augment(img, cfg.crop_scale),
                                                                       augment(img, cfg.crop_scale)]))
                            vals = {"val_ntxent": nt_xent(p, cfg.temperature)[0]}
                        elif stage == "generator":
                            h = model.frame_encoder(img)
                            fake = model.generator(torch.randn(b, NOISE, device=device), h)
                            vals = {"val_d_real": model.discriminator(img, h).float().mean(),
                                    "val_d_fake": model.discriminator(fake, h).float().mean()}
                        else:
                            loss, hits = infonce(model.audio_encoder(mel), model.frame_encoder(img))
                            vals = {"val_infonce": loss, "val_pair_acc": hits / b}
                    for k, v in vals.items():
                        vsums[k] = vsums.get(k, 0.0) + float(v) * b
                    vn += b

            # ---- log, early stopping, grid, checkpoint (sums over ranks; rank 0 writes)
            row, n, vn = staged.epoch_row(d, epoch, TRAIN_KEYS[stage], sums, VAL_KEYS[stage], vsums, n, vn, seconds)
            if cfg.skip_bad_samples:
                row["skipped_samples"] = skipped_samples(held["train"], train_ds)
            stop = False
            if stage == "audio":
                # the paper's early stopping: the encoder of the best validation epoch is kept
                if vn and (best is None or row["val_infonce"] < best["val_infonce"]):
                    best = {"epoch": epoch + 1, "val_infonce": row["val_infonce"],
                            "audio_encoder": copy.deepcopy(distributed.unwrap(net).state_dict())}
                stop = best is not None and epoch + 1 - best["epoch"] >= cfg.patience
                row["best_epoch"] = best["epoch"] if best else None
                if (stop or epoch + 1 == epochs) and best is not None:
                    if stop:
                        best["stopped"] = True
                    else:  # its epochs done, not stopped: a run given more epochs goes on from the last weights
                        best["last_encoder"] = copy.deepcopy(distributed.unwrap(net).state_dict())
                    model.audio_encoder.load_state_dict(best["audio_encoder"])
            rng = distributed.rng_for_checkpoint(d, rng_state())
            if d.main:
                metrics.write(row)
                log(f"sound2scene {stage} epoch {epoch + 1}/{epochs}: "
                    + " ".join(f"{k} {v:.3f}" for k, v in row.items()
                               if k not in ("epoch", "samples", "seconds", "samples_per_s") and isinstance(v, float))
                    + f" ({row['samples_per_s']:.1f} samples/s)" + ("; early stop, best epoch "
                                                                      f"{best['epoch']}" if stop else ""))
                last = epoch + 1 == epochs or stop
                if grid_rows and stage != "visual" and ((epoch + 1) % cfg.grid_every == 0 or last):
                    if stage == "generator":
                        rows, maker = [(k, f, f, c) for k, f, _, c in grid_rows], _FramePictures(model)
                    else:
                        rows, maker = grid_rows, _Pictures(model)
                    draw_grid(maker, rows, cfg.grid_images, device,
                              grids_folder(run) / f"sound2scene-{stage}-epoch-{epoch + 1:05d}.png")
                saved_opts = optimiser_states(opts, scalers)
                state = {"model": "sound2scene", "stage": stage, "epoch": epoch + 1, "nets": model.state_dict(),
                         "opts": saved_opts, "best": best, "rng": rng, "config": cfg.to_dict(),
                         "normalizer": norm.to_dict(), "build": build.record(), "last": row,
                         "adapted": "frame encoder (SimCLR) and IC-GAN generator trained on the build's train "
                                    "frames in place of the paper's ImageNet SwAV and BigGAN; the centre frame in "
                                    "place of sound-source-localised frame selection; 1 s of sound (the paper's "
                                    "1 s ablation) in place of 10 s"}
                checkpoint.save(path, state)
            if stop:
                break
        if metrics is not None:
            metrics.close()
        start, opt_states = 0, {}
    distributed.barrier(d)
    if not d.main:
        return {}
    return state
