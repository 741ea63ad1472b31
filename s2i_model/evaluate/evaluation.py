"""Evaluation of a trained translator on a split's held-out sounds (SPEC 5).

Every sound gets ``samples`` pictures (test-time dropout). Measured, streaming the sounds:
- informativity per class and mean, when informativity classifiers are given (the paper's metric);
- proxies that need no labels, named as such, all by judges that never saw the frames they
  judge (`crossfit`: real-frame classifiers cross-fitted over the split by video, never trained on
  a train frame): class agreement (the blurred judges' headline, and the full-resolution judges');
  Fréchet and kernel distances between generated and real frames in each fold's judge's feature
  space; frame R@1/R@5 (a real frame of the sound's class among the k nearest real frames of its
  fold: not CLIP's class-name R@k); diversity of the pictures of one sound; with ``fid_weights``,
  the standard Inception FID;
- a 95 % interval on every number (`intervals`: a stratified bootstrap over the split's videos) and
  the replicates behind it, so that a report can combine seeds;
- for a build of within-class factors (issue 28), factor agreement (`factors`): factor readers
  fitted on the train frames read each sound's class's factors from its pictures; the Spearman
  correlation of the reads with the true values per (class, factor), count accuracy, their mean.
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
from s2i_model.evaluate.informativity import Judges, pool_models
from s2i_model.evaluate.reference import RealFrames, ShuffledFrames
from s2i_model.evaluate import factors as factor_eval
from s2i_model.evaluate import intervals
from s2i_model.evaluate.crossfit import FOLDS, HEADLINE, CrossFitted, cross_fitted
from s2i_model.evaluate.realframe import diversity, frame_hits, separability

RESULT = run_folder.EVALUATION
JUDGES = "judges.pt"  # the cross-fitted judges of a run evaluated on its own


@dataclass
class EvalConfig:
    run: str
    data: str = ""  # default: the build the translator was trained on
    split: str = "test"
    samples: int = 10  # pictures per sound
    informativity: str = ""  # folder of informativity classifiers (optional)
    fid_weights: str = ""  # Inception-v3 state dict on disk (optional)
    proxy_cache: str = ""  # where the cross-fitted judges are kept (default RUN/judges.pt)
    proxy_epochs: int = 30
    folds: int = FOLDS  # folds of the judged split's videos (crossfit.py)
    judge_seed: int = 0  # the judges' (one set for every row and seed of a comparison)
    seed: int = 0
    batch_sounds: int = 32
    device: str = "auto"
    skip_bad_samples: bool = False  # count, log and skip damaged samples or shards instead of stopping
    factor_alpha: float = factor_eval.ALPHA  # the factor readers' ridge strength (a build of factors only)


def _stamp(path: str) -> list:
    p = Path(path)
    return [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else []


def measure(pictures, data: Build | str | Path, split: str, judge, classes: list[str], samples: int,
            norm, device: str, batch_sounds: int = 32, seed: int = 0, judges: Judges | None = None,
            inception: InceptionFeatures | None = None, replicates: int = intervals.REPLICATES,
            readers: "factor_eval.FactorReaders | None" = None) -> dict:
    """The metrics of any picture maker on a split's sounds, streamed a batch at a time.

    ``pictures(mels, real)``: a batch's normalised log-mels [B, 1, 100, 128] (on ``device``) and
    real frames [B, 3, 96, 96] in [-1, 1] → ``samples`` pictures per sound, [B * samples, 3, 96, 96],
    sound by sound; a maker whose ``needs_keys`` is true is called ``pictures(mels, real, keys)`` with
    the batch's sample keys too (the shuffled reference row picks frames by key). `evaluate` passes
    the translator (encoder then generator); tests pass makers whose metrics are known (the real
    frame itself, one picture for every sound). ``judge``: the cross-fitted judges
    (`crossfit.CrossFitted`: each sound judged by its fold's judges, the distances and frame R@k
    measured in that fold's space against that fold's real frames), or one classifier for every
    sound. torch is seeded with ``seed`` first and ``pictures`` runs under
    no_grad. Returns ``per_class``, ``mean``, ``proxies``, ``intervals`` and ``replicates`` as in
    evaluation.json (`intervals`: a bootstrap over the split's videos), and ``sound_cls`` (the class
    of each sound, in stream order). With ``readers`` (`factors.FactorReaders`, a build of factors),
    also ``factors``: each sound's class's factors read from each of its pictures, the reads averaged
    over its pictures and scored against the manifest's values (`factors.summary`; its replicates in
    ``replicates["factors"]``)."""
    torch.manual_seed(seed)
    judge = judge if isinstance(judge, CrossFitted) else CrossFitted.single(judge)
    n = samples
    acc = {k: [] for k in ("cls", "fold", "keys", "agree", "agree_full", "informative", "div", "gen_feat",
                           "real_feat", "gen_inc", "real_inc", "reads")}
    batch: list = []

    def flush() -> None:
        mels = torch.stack([b[0] for b in batch]).to(device)
        real = torch.stack([b[1] for b in batch])
        cls = torch.tensor([b[2] for b in batch])
        folds = judge.folds([b[3] for b in batch])
        with torch.no_grad():
            keys = [b[3] for b in batch]
            imgs = (pictures(mels, real, keys) if getattr(pictures, "needs_keys", False)
                    else pictures(mels, real)).float().cpu()
            gcls, gfold = cls.repeat_interleave(n), folds.repeat_interleave(n)
            for name, key in ((HEADLINE, "agree"), ("full", "agree_full")):
                hit = judge.predict(name, imgs, gfold, device) == gcls
                acc[key].append(hit.view(len(batch), n).float().mean(1))
            acc["gen_feat"].append(judge.features(imgs, gfold, device))
            acc["real_feat"].append(judge.features(real, folds, device))
            if inception is not None:
                acc["gen_inc"].append(torch.cat([inception(b.to(device)).cpu() for b in imgs.split(64)]))
                acc["real_inc"].append(inception(real.to(device)).cpu())
            if judges is not None:
                acc["informative"].append(judges.predict(imgs, [classes[c] for c in gcls]).float().view(len(batch), n))
            if readers is not None:  # each picture read by its sound's class's reader, then averaged per sound
                acc["reads"].append(readers.read(imgs, gcls, device).view(len(batch), n, -1).mean(1))
        if n > 1:
            s = imgs.reshape(len(batch), n, *imgs.shape[1:])
            acc["div"] += [diversity(s[i:i + 1]) for i in range(len(batch))]
        acc["cls"].append(cls)
        acc["fold"].append(folds)
        acc["keys"] += [b[3] for b in batch]
        batch.clear()

    for mel, img, cls, key in ShardStream(data, split, norm, shuffle=False):
        batch.append((mel, img, cls, key))
        if len(batch) == batch_sounds:
            flush()
    if batch:
        flush()
    if not acc["cls"]:
        raise ValueError(f"{data}: the {split} split has no samples")

    # ---- per sound: each metric's value for every sound (a sound's pictures averaged)
    cls, fold = torch.cat(acc["cls"]).numpy(), torch.cat(acc["fold"]).numpy()
    gen_feat, real_feat = torch.cat(acc["gen_feat"]), torch.cat(acc["real_feat"])
    hits = _frame_hits(gen_feat, real_feat, torch.from_numpy(cls), torch.from_numpy(fold), n)
    sound = {"class_agreement": torch.cat(acc["agree"]).numpy(), "class_agreement_full": torch.cat(acc["agree_full"]).numpy(),
             "frame_r1": hits[1], "frame_r5": hits[5]}
    if acc["div"]:
        sound["diversity"] = np.array(acc["div"], float)
    if acc["informative"]:
        info = torch.cat(acc["informative"])
        sound["informativity"] = torch.where(torch.isnan(info).any(1), torch.nan, info.nanmean(1)).numpy()

    # ---- per class, then means over classes (each class counts alike)
    per_class = {}
    for c, name in enumerate(classes):
        sel = cls == c
        if not sel.any():
            continue
        row = {"sounds": int(sel.sum()), "images": int(sel.sum()) * n}
        for k, v in sound.items():
            row[k] = None if np.isnan(v[sel]).any() else float(v[sel].mean())
        per_class[name] = row
    mean = {k: _mean([r.get(k) for r in per_class.values()]) for k in sound}

    def distances(sel: np.ndarray) -> dict[str, float | None]:
        """Fréchet and kernel distances of the pictures of sounds ``sel`` (indices, repeats allowed)
        to their real frames, in each fold's space, averaged over folds by real frames."""
        out = {"frechet_distance": [], "kernel_distance": [], "weight": []}
        for f in np.unique(fold[sel]):
            mine = sel[fold[sel] == f]
            if len(mine) < 2:
                continue
            pics = (mine[:, None] * n + np.arange(n)).ravel()
            g, r = gen_feat[pics].numpy(), real_feat[mine].numpy()
            out["frechet_distance"].append(frechet_distance(g, r))
            out["kernel_distance"].append(kernel_distance(g, r, seed=seed))
            out["weight"].append(len(mine))
        if not out["weight"]:
            return {"frechet_distance": None, "kernel_distance": None}
        return {k: float(np.average(out[k], weights=out["weight"])) for k in ("frechet_distance", "kernel_distance")}

    everyone = np.arange(len(cls))
    proxies = {**distances(everyone),
               "feature_space": f"cross-fitted {HEADLINE} judges' 32-d features, each fold in its own space"}
    if inception is not None:
        proxies["fid_inception"] = frechet_distance(torch.cat(acc["gen_inc"]).numpy(), torch.cat(acc["real_inc"]).numpy())

    # ---- 95 % intervals: a stratified bootstrap over the split's videos (the same draws for every model)
    video_of_key = judge.video_of_key or _videos(data, split)  # the judges' folds were cut from the same manifest
    video = np.array([video_of_key.get(k, k) for k in acc["keys"]])
    draws = intervals.video_draws(video, cls, replicates)
    reps = {"mean": {k: intervals.replicate(v, cls, draws) for k, v in sound.items()},
            "proxies": {}, "per_class": {}}
    dist_reps = [distances(d) for d in draws]
    for k in ("frechet_distance", "kernel_distance"):
        # a resample repeats videos, and fewer distinct frames raise both distances: the replicates
        # are shifted by the bootstrap's estimate of that bias (their mean minus the point value),
        # or the interval would lie above the value it is for
        values = [r[k] for r in dist_reps]
        known = [v for v in values if v is not None]
        bias = float(np.mean(known)) - proxies[k] if known and proxies[k] is not None else 0.0
        reps["proxies"][k] = [None if v is None else v - bias for v in values]
    for c, name in enumerate(classes):
        if name in per_class:
            reps["per_class"][name] = {k: [intervals.class_mean(sound[k][d][cls[d] == c], cls[d][cls[d] == c])
                                           for d in draws] for k in PER_CLASS_INTERVALS if k in sound}
    found = {part: {k: intervals.interval(v) for k, v in reps[part].items()} for part in ("mean", "proxies")}
    found["per_class"] = {c: {k: intervals.interval(v) for k, v in m.items()} for c, m in reps["per_class"].items()}
    found["videos"] = len(set(video.tolist()))
    found["replicates"] = replicates
    out = {"per_class": per_class, "mean": mean, "proxies": proxies, "intervals": found, "replicates": reps,
           "sound_cls": torch.from_numpy(cls)}
    if readers is not None:  # factor agreement, on the same draws
        build = Build.open(data)
        true = factor_eval.truth(build.manifest(), readers.factors, acc["keys"], build)
        out["factors"], reps["factors"] = factor_eval.summary(true, torch.cat(acc["reads"]).numpy(), cls,
                                                              readers.factors, classes, draws, readers.record)
    return out


PER_CLASS_INTERVALS = ("class_agreement", "informativity")  # the per-class plot's error bars


def _videos(data, split: str) -> dict[str, str]:
    """``{key: video}`` of a split, from the build's manifest (a key it lacks is its own video)."""
    m = Build.open(data).manifest(["key", "split", "video_id"])
    m = m[m["split"] == split]
    return dict(zip(m["key"], m["video_id"]))


def _frame_hits(gen_feat, real_feat, cls, fold, n) -> dict[int, np.ndarray]:
    """Frame R@k per sound: the share of its pictures with a real frame of its class among their k
    nearest real frames of the same fold (cosine, in that fold's judge's space)."""
    out = {k: np.zeros(len(cls)) for k in (1, 5)}
    gcls, gfold = cls.repeat_interleave(n), fold.repeat_interleave(n)
    for f in fold.unique().tolist():
        q, g = gfold == f, fold == f
        got = frame_hits(gen_feat[q], gcls[q], real_feat[g], cls[g])
        for k in out:
            out[k][(fold == f).numpy()] = got[k].view(-1, n).float().mean(1).numpy()
    return out


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
    ident = {"config": {k: v for k, v in asdict(cfg).items()
                        if k not in ("device", "batch_sounds", "skip_bad_samples", "factor_alpha")},
             "translator_epoch": state["epoch"], "translator": _stamp(str(opened.file)),
             "judges": _stamp(judges_path) if judges_path else [],
             "data": data if storage.is_remote(data) else str(Path(data).resolve())}
    factor_cache = (Path(cfg.proxy_cache).parent if cfg.proxy_cache else run) / factor_eval.FILE
    if build.factors:  # the readers' settings (only here: a build without factors keeps its ident)
        ident["factors"] = {"names": [f.name for f in build.factors], "alpha": cfg.factor_alpha,
                            "cache": str(factor_cache.resolve())}
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
    judge = cross_fitted(build, cfg.split, len(classes), Path(cfg.proxy_cache) if cfg.proxy_cache else run / JUDGES,
                         cfg.folds, cfg.proxy_epochs, cfg.judge_seed, dev, log)
    inception = InceptionFeatures(Path(cfg.fid_weights)).to(dev) if cfg.fid_weights else None
    readers = (factor_eval.factor_readers(build, build.factors, factor_cache, cfg.factor_alpha, dev, log) if build.factors else None)

    # ---- the translator's pictures of every sound, measured
    n = cfg.samples
    zs: list = []

    pictures = picture_maker(tr, n, zs, judge.fold_of_video)
    measured = measure(pictures, build, cfg.split, judge, classes, n, tr.norm, dev, cfg.batch_sounds, cfg.seed,
                       judges, inception, readers=readers)
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
        "training_seed": state["config"].get("seed") if isinstance(state.get("config"), dict) else None,
        "classes": classes, "per_class": per_class, "mean": mean, "proxies": proxies,
        "judge": judge.held_out, "intervals": measured["intervals"], "replicates": measured["replicates"],
        **({"factors": measured["factors"]} if "factors" in measured else {}),
        "embedding_separability": ceiling,
        "informativity_judges": cfg.informativity or None,
        # the models the judges' pool held pictures of (None: the judges do not say): a report shows
        # informativity only for these
        "informativity_pool": sorted(pool_models(Path(cfg.informativity))) if cfg.informativity
        and pool_models(Path(cfg.informativity)) is not None else None,
        "training": {"pixel_loss_ma50": pixel_loss_ma(rows), "informativity_history": aggregates(hist) or None},
    }
    if not isinstance(tr, (RealFrames, ShuffledFrames)):  # real frames (its own, or another video's) are in every grid
        grid = imagine_split(tr, build, cfg.split, run / "evaluation-grid.png", n=min(n, 6), per_class=2, seed=cfg.seed)
        result["grid"] = grid.name
    storage.atomic_write(out_path, json.dumps(result, indent=2))
    return result


def picture_maker(tr, n: int, zs: list | None = None, fold_of_video: dict[str, int] | None = None):
    """``measure``'s ``pictures`` for a loaded model or reference row; ``zs`` collects the sounds'
    embeddings where the model has them (the embedding ceiling); ``fold_of_video``: the judges'
    folds, within which the shuffled row picks its other videos."""
    if isinstance(tr, ShuffledFrames):  # another video's real frame, found by the sound's key
        def shuffled(mels: torch.Tensor, real: torch.Tensor, keys: list[str]) -> torch.Tensor:
            return tr.pictures_of_keys(keys, n, fold_of_video)
        shuffled.needs_keys = True
        return shuffled

    def pictures(mels: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if isinstance(tr, RealFrames):  # the ceiling row: the sound's own frame
            return tr.pictures_of_real(real, n).float()
        if zs is not None and hasattr(tr, "embed"):  # an embedding draws no noise
            zs.append(tr.embed(mels).float().cpu())
        return tr.sound_pictures(mels, n, seed=None).flatten(0, 1).float().cpu()
    return pictures


def agreement(run: Path, data: Build, split: str, judge: CrossFitted, samples: int, seed: int = 0,
              device: str = "auto") -> dict:
    """Class agreement (both judges) of a run's pictures of a split, without intervals: a learning
    curve's point (curve.py)."""
    tr = run_folder.Run.open(run).model(device)
    found = measure(picture_maker(tr, samples), data, split, judge, data.classes, samples, tr.norm, str(tr.device),
                    seed=seed, replicates=0)
    return {k: found["mean"][k] for k in ("class_agreement", "class_agreement_full")}


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
