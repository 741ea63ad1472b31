"""Evaluation of a trained translator on a split's held-out sounds (SPEC 5).

Every sound gets ``samples`` pictures (test-time dropout). Measured, streaming so that a large
test split never sits in memory:
- informativity per class and mean, when informativity classifiers are given (the paper's metric);
- proxies that need no labels, named as such: class agreement of a real-frame classifier trained
  on the train split; Fréchet and kernel distances between generated and real test images in
  that classifier's feature space; retrieval R@1/R@5 (real test frames nearest to each picture);
  diversity of the pictures of one sound; with ``fid_weights``, the standard Inception FID.
RUN/evaluation.json is the result; it is reused when nothing it depends on has changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from s2i_data import storage, untrusted
from s2i_data.readers import Build, build_file

from s2i_model import checkpoint
from s2i_model import run as run_folder
from s2i_model.data import ShardStream
from s2i_model.evaluate.fid import InceptionFeatures, frechet_distance, kernel_distance
from s2i_model.evaluate.history import aggregates, informativity_history, pixel_loss_ma, read_rows
from s2i_model.imagine import imagine_split
from s2i_model.evaluate.informativity import FILE as JUDGES_FILE
from s2i_model.evaluate.informativity import Judges
from s2i_model.evaluate.reference import RealFrames
from s2i_model.evaluate.realframe import diversity, embed_images, frame_classifier, retrieval_recall, separability

RESULT = run_folder.EVALUATION


@dataclass
class EvalConfig:
    run: str
    data: str = ""  # default: the build the translator was trained on
    split: str = "test"
    samples: int = 10  # pictures per sound
    informativity: str = ""  # folder of informativity classifiers (optional)
    fid_weights: str = ""  # Inception-v3 state dict on disk (optional)
    proxy_cache: str = ""  # where the real-frame classifier is kept (default RUN/frame-classifier.pt)
    proxy_epochs: int = 30
    seed: int = 0
    batch_sounds: int = 32
    device: str = "auto"
    skip_bad_samples: bool = False  # count, log and skip damaged samples or shards instead of stopping


def _stamp(path: str) -> list:
    p = Path(path)
    return [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else []


def measure(pictures, data: Build | str | Path, split: str, proxy: torch.nn.Module, classes: list[str], samples: int,
            norm, device: str, batch_sounds: int = 32, seed: int = 0, judges: Judges | None = None,
            inception: InceptionFeatures | None = None) -> dict:
    """The metrics of any picture maker on a split's sounds, streamed a batch at a time.

    ``pictures(mels, real)``: a batch's normalised log-mels [B, 1, 100, 128] (on ``device``) and
    real frames [B, 3, 96, 96] in [-1, 1] → ``samples`` pictures per sound, [B * samples, 3, 96, 96],
    sound by sound. `evaluate` passes the translator (encoder then generator); tests pass makers
    whose metrics are known (the real frame itself, one picture for every sound). torch is seeded
    with ``seed`` first and ``pictures`` runs under no_grad. Returns ``per_class``, ``mean`` and
    ``proxies`` as in evaluation.json, and ``sound_cls`` (the class of each sound, in stream order)."""
    torch.manual_seed(seed)
    n = samples
    acc = {"cls": [], "agree": [], "informative": [], "div": [], "gen_feat": [], "real_feat": [], "real_cls": [],
           "gen_inc": [], "real_inc": []}
    batch: list = []

    def flush() -> None:
        mels = torch.stack([b[0] for b in batch]).to(device)
        real = torch.stack([b[1] for b in batch])
        cls = torch.tensor([b[2] for b in batch])
        with torch.no_grad():
            imgs = pictures(mels, real).float().cpu()
            gcls = cls.repeat_interleave(n)
            acc["agree"].append(torch.cat([proxy(b.to(device)).argmax(1).cpu() for b in imgs.split(256)]) == gcls)
            acc["gen_feat"].append(embed_images(proxy, imgs, device))
            acc["real_feat"].append(embed_images(proxy, real, device))
            if inception is not None:
                acc["gen_inc"].append(torch.cat([inception(b.to(device)).cpu() for b in imgs.split(64)]))
                acc["real_inc"].append(inception(real.to(device)).cpu())
            if judges is not None:
                acc["informative"].append(judges.predict(imgs, [classes[c] for c in gcls]))
        if n > 1:
            s = imgs.reshape(len(batch), n, *imgs.shape[1:])
            acc["div"] += [diversity(s[i:i + 1]) for i in range(len(batch))]
        acc["cls"].append(gcls)
        acc["real_cls"].append(cls)
        batch.clear()

    for mel, img, cls, _ in ShardStream(data, split, norm, shuffle=False):
        batch.append((mel, img, cls))
        if len(batch) == batch_sounds:
            flush()
    if batch:
        flush()
    if not acc["cls"]:
        raise ValueError(f"{data}: the {split} split has no samples")

    # ---- per class, then macro means over classes
    gcls, agree = torch.cat(acc["cls"]), torch.cat(acc["agree"]).float()
    gen_feat, real_feat, real_cls = torch.cat(acc["gen_feat"]), torch.cat(acc["real_feat"]), torch.cat(acc["real_cls"])
    recall = _per_class_recall(gen_feat, gcls, real_feat, real_cls)
    informative = torch.cat(acc["informative"]) if acc["informative"] else None
    div = torch.tensor(acc["div"]) if acc["div"] else None
    per_class = {}
    for c, name in enumerate(classes):
        sel = gcls == c
        if not sel.any():
            continue
        row = {"sounds": int(sel.sum()) // n, "images": int(sel.sum()), "class_agreement": float(agree[sel].mean()),
               "retrieval_r1": recall[c][1], "retrieval_r5": recall[c][5]}
        if div is not None:
            row["diversity"] = float(div[real_cls == c].mean())
        if informative is not None:
            judged = informative[sel]
            row["informativity"] = float(judged.mean()) if not torch.isnan(judged).any() else None
        per_class[name] = row
    mean = {k: _mean([r.get(k) for r in per_class.values()]) for k in
            ("informativity", "class_agreement", "retrieval_r1", "retrieval_r5", "diversity")}
    proxies = {"frechet_distance": frechet_distance(gen_feat.numpy(), real_feat.numpy()),
               "kernel_distance": kernel_distance(gen_feat.numpy(), real_feat.numpy(), seed=seed),
               "feature_space": "real-frame classifier (32-d), trained on the train split"}
    if inception is not None:
        proxies["fid_inception"] = frechet_distance(torch.cat(acc["gen_inc"]).numpy(), torch.cat(acc["real_inc"]).numpy())
    return {"per_class": per_class, "mean": mean, "proxies": proxies, "sound_cls": real_cls}


def evaluate(cfg: EvalConfig, force: bool = False, log=print) -> dict:
    """RUN/evaluation.json (and its grid), measured while this process alone writes the run folder
    (`run.writing`: a training or another evaluation there is refused, naming its pid)."""
    run = Path(cfg.run)
    if not run.is_dir():
        raise run_folder.RunError(f"{run}: no such run folder")
    with run_folder.writing(run):
        return _evaluate(cfg, run, force, log)


def _evaluate(cfg: EvalConfig, run: Path, force: bool, log) -> dict:
    opened = run_folder.Run.open(run)  # each checkpoint read once, the model built once
    model, state = opened.name, opened.final()
    rows = read_rows(run)  # the training history, checked before any measuring
    data = cfg.data or state["config"].get("data")
    if not data:
        raise ValueError(f"{run}: its checkpoint does not name the build it was trained on: give the build with --data")
    if not storage.exists(build_file(data, "stats.json")):
        raise ValueError(f"{data} holds no s2i-data build (no stats.json): give the build with --data")
    build = run_folder.check_build(Build.open(data, skip_bad=cfg.skip_bad_samples))
    judges_path = str(Path(cfg.informativity) / JUDGES_FILE) if cfg.informativity else ""
    ident = {"config": {k: v for k, v in asdict(cfg).items() if k not in ("device", "batch_sounds", "skip_bad_samples")},
             "translator_epoch": state["epoch"], "translator": _stamp(str(opened.file)),
             "judges": _stamp(judges_path) if judges_path else [],
             "data": data if storage.is_remote(data) else str(Path(data).resolve())}
    if "reference" in state and state["reference"].get("space"):  # retrieval: its space's model counts too
        space = Path(state["reference"]["space"])
        ident["space"] = _stamp(str(run_folder.model_path(space)))
    out_path = run / RESULT
    old = _earlier_result(out_path) if not force else None
    if old is not None and old.get("ident") == ident:
        log(f"{out_path} is up to date")
        return old

    # ---- the judges: informativity classifiers, the real-frame classifier, Inception
    classes = build.classes
    tr = opened.model(cfg.device)
    dev = str(tr.device)
    judges = Judges.load(Path(cfg.informativity), dev) if cfg.informativity else None
    proxy = frame_classifier(build, len(classes), Path(cfg.proxy_cache) if cfg.proxy_cache else run / "frame-classifier.pt",
                             cfg.proxy_epochs, cfg.seed, dev)
    inception = InceptionFeatures(Path(cfg.fid_weights)).to(dev) if cfg.fid_weights else None

    # ---- the translator's pictures of every sound, measured
    n = cfg.samples
    zs: list = []

    def pictures(mels: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if isinstance(tr, RealFrames):  # the ceiling row: the sound's own frame
            return tr.pictures_of_real(real, n).float()
        if hasattr(tr, "embed"):  # the embeddings too, for the ceiling (an embedding draws no noise)
            zs.append(tr.embed(mels).float().cpu())
        return tr.sound_pictures(mels, n, seed=None).flatten(0, 1).float().cpu()

    measured = measure(pictures, build, cfg.split, proxy, classes, n, tr.norm, dev, cfg.batch_sounds, cfg.seed,
                       judges, inception)
    per_class, mean, proxies = measured["per_class"], measured["mean"], measured["proxies"]

    # ---- the ceiling: how well the sounds' embeddings alone tell the classes (nearest centroid
    # and nearest neighbour among the train embeddings cached by the trainer)
    ceiling = {"centroid": None, "nn1": None}
    train = _cached_train_embeddings(run, build, torch.cat(zs).shape[1], log) if zs else None
    if train is not None and len(train["keys"]):
        ceiling = separability(train["emb"].float(), train["cls"], torch.cat(zs), measured["sound_cls"])

    # ---- what the training history says (informativity per epoch, pixel loss)
    hist = informativity_history(rows)
    # the size of what a model draws from: the autoencoder's E its final checkpoint records, else its
    # config's latent (None where a model has neither)
    sizes = state["autoencoder"] if isinstance(state.get("autoencoder"), dict) else state["config"]
    result = {
        "ident": ident, "run": str(run), "data": str(data), "split": cfg.split, "samples_per_sound": n,
        "model": model,
        # the size of what a model draws from: S2I's embedding, a VAE's latent (None where a model has neither)
        "emb": sizes.get("emb", sizes.get("latent")), "width": sizes.get("width"), "epoch": state.get("epoch"),
        "classes": classes, "per_class": per_class, "mean": mean, "proxies": proxies,
        "embedding_separability": ceiling,
        "informativity_judges": cfg.informativity or None,
        "training": {"pixel_loss_ma50": pixel_loss_ma(rows), "informativity_history": aggregates(hist) or None},
    }
    if not isinstance(tr, RealFrames):  # the real frames are in every grid already
        grid = imagine_split(tr, build, cfg.split, run / "evaluation-grid.png", n=min(n, 6), per_class=2, seed=cfg.seed)
        result["grid"] = grid.name
    storage.atomic_write(out_path, json.dumps(result, indent=2))
    return result


def _earlier_result(path: Path) -> dict | None:
    """RUN/evaluation.json as the last evaluation left it; None (measure again, and replace it)
    for none, or for a file that is not a JSON object (torn, edited, or not ours)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or one that cannot be read: measured again
        return None
    return old if isinstance(old, dict) else None


def _cached_train_embeddings(run: Path, build: Build, width: int, log) -> dict | None:
    """The trainer's cached train embeddings (RUN/embeddings.pt), checked; None (no ceiling, with a
    warning) for a cache that is missing or not what the trainer writes."""
    path = run / run_folder.EMBEDDINGS
    try:
        cached = checkpoint.load(path) if path.exists() else None
        if not cached or "train" not in cached:
            return None
        return untrusted.embedding_split(cached["train"], f"{path}: train", width, len(build.classes),
                                         build.size("train"))
    except (checkpoint.CheckpointError, untrusted.Untrusted) as e:
        log(f"warning: {e}; the embedding ceiling is left out")
        return None


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _per_class_recall(gen_feat, gcls, real_feat, real_cls) -> dict[int, dict[int, float]]:
    out = {}
    for c in gcls.unique().tolist():
        sel = gcls == c
        out[c] = retrieval_recall(gen_feat[sel], gcls[sel], real_feat, real_cls)
    return out
