"""Judges that never saw what they judge (issue 27): real-frame classifiers cross-fitted over the
evaluated split by video.

The evaluated split's videos are dealt into ``k`` folds, class by class (so every fold holds every
class that has at least ``k`` videos there). The judge of fold f is trained on the frames of the
other splits that no row can return or is judged on (``val`` when the test split is judged) and on
the other folds' frames of the judged split; it judges only the sounds of fold f. No judge sees a
train frame, which is what the nearest-sound, nearest-image, lookup and chance rows return, nor a
frame of a video whose sounds it judges; the real frames' row, judged the same way, is each judge's
own held-out accuracy: a true ceiling.

Each fold has two judges: one looks at the picture as it is (``full``), one at a 4x-blurred copy
(``blurred``, `realframe.FrameClassifier`'s pooling). ``blurred`` is the headline: trained on sharp
real frames, a full-resolution judge reads generated pictures' texture (transposed-convolution
checkerboards) rather than what they show; both are reported.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data import untrusted
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.evaluate.informativity import fit_classifier
from s2i_model.evaluate.realframe import FrameClassifier, load_split

FOLDS = 3
BLURS = {"blurred": 4, "full": 1}  # judge name -> average-pooling factor
HEADLINE = "blurred"


def video_folds(videos: dict[str, int], k: int, seed: int = 0) -> dict[str, int]:
    """``{video: fold}`` for ``{video: class}``: within each class the videos ordered by a hash of
    (seed, video) and dealt round-robin, the count carried on from class to class so that folds
    stay equal in size."""
    out, turn = {}, 0
    for cls in sorted(set(videos.values())):
        mine = sorted((v for v, c in videos.items() if c == cls),
                      key=lambda v: hashlib.sha1(f"{seed}:{v}".encode()).hexdigest())
        for v in mine:
            out[v] = turn % k
            turn += 1
    return out


class CrossFitted:
    """``k`` folds × the judges of `BLURS`: ``judges[name][f]`` judges the sounds of fold f."""

    def __init__(self, judges: dict[str, list[torch.nn.Module]], video_of_key: dict[str, str],
                 fold_of_video: dict[str, int], held_out: dict) -> None:
        self.judges, self.video_of_key, self.fold_of_video, self.held_out = judges, video_of_key, fold_of_video, held_out
        self.k = len(next(iter(judges.values())))

    @classmethod
    def single(cls, judge: torch.nn.Module) -> "CrossFitted":
        """One judge for every sound, under both names (tests that hand `measure` a classifier)."""
        return cls({name: [judge] for name in BLURS}, {}, {}, {})

    def folds(self, keys: Sequence[str]) -> torch.Tensor:
        """Each sound's fold, by its video; a key of a video the folds never saw is refused."""
        if self.k == 1:
            return torch.zeros(len(keys), dtype=torch.long)
        try:
            return torch.tensor([self.fold_of_video[self.video_of_key[k]] for k in keys])
        except KeyError as e:
            raise ValueError(f"sample {e.args[0]!r} is in no fold of the judges: they were fitted on another build") from None

    def _each_fold(self, name: str, images: torch.Tensor, folds: torch.Tensor, fn, device) -> torch.Tensor:
        out = None
        for f in folds.unique().tolist():
            sel = (folds == f).nonzero().flatten()
            got = torch.cat([fn(self.judges[name][f], b.to(device)).cpu() for b in images[sel].split(256)])
            if out is None:
                out = torch.zeros((len(images), *got.shape[1:]), dtype=got.dtype)
            out[sel] = got
        return out

    @torch.no_grad()
    def predict(self, name: str, images: torch.Tensor, folds: torch.Tensor, device="cpu") -> torch.Tensor:
        """The class the fold's judge ``name`` reads in each image."""
        return self._each_fold(name, images, folds, lambda m, b: m(b).argmax(1), device)

    @torch.no_grad()
    def features(self, images: torch.Tensor, folds: torch.Tensor, device="cpu") -> torch.Tensor:
        """The headline judges' 32-d features (each image in its own fold's space)."""
        return self._each_fold(HEADLINE, images, folds, _features, device)


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    blur = getattr(model, "blur", 1)
    if blur > 1:
        x = F.interpolate(F.avg_pool2d(x, blur), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return model.net.features(x).flatten(1)


def _pool_splits(split: str) -> list[str]:
    # every split no row returns (train is what the copying rows return) and that is not judged
    return [s for s in ("val", "test") if s != split]


def fit(build: Build, split: str, n_classes: int, k: int = FOLDS, epochs: int = 30, seed: int = 0,
        device: str = "cpu", log=print) -> tuple[dict, dict]:
    """The judges' weights and what they were measured at: ``(states, record)``."""
    manifest = build.manifest(["key", "split", "class_index", "video_id"])
    mine = manifest[manifest["split"] == split]
    videos = dict(zip(mine["video_id"], mine["class_index"].astype(int)))
    fold_of_video = video_folds(videos, k, seed)
    _, images, classes, keys = load_split(build, split)
    if not len(keys):
        raise ValueError(f"{build}: the {split} split has no samples to judge")
    video_of_key = dict(zip(mine["key"], mine["video_id"]))
    folds = torch.tensor([fold_of_video[video_of_key[key]] for key in keys])
    extra = [load_split(build, s) for s in _pool_splits(split)]
    extra_images = torch.cat([images[:0]] + [e[1] for e in extra])
    extra_classes = torch.cat([classes[:0]] + [e[2] for e in extra])
    states, record = {}, {"folds": k, "epochs": epochs, "seed": seed, "headline": HEADLINE,
                          "trained_on": f"{' and '.join(_pool_splits(split)) or 'no other split'} frames and the "
                                        f"other folds' {split} frames (never a train frame, never a judged video)"}
    for name, blur in BLURS.items():
        states[name], hits = [], torch.zeros(len(keys), dtype=torch.bool)
        for f in range(k):
            torch.manual_seed(seed + f)
            out = folds == f
            x, y = torch.cat([extra_images, images[~out]]), torch.cat([extra_classes, classes[~out]])
            model = FrameClassifier(n_classes, blur).to(device)
            fit_classifier(model, torch.optim.Adam(model.parameters(), lr=1e-3), x, y, epochs, 32, seed + f, device)
            with torch.no_grad():
                if out.any():
                    hits[out] = torch.cat([model(b.to(device)).argmax(1).cpu() for b in images[out].split(256)]) == classes[out]
            states[name].append(model.cpu().state_dict())
        per_class = {int(c): float(hits[classes == c].float().mean()) for c in classes.unique().tolist()}
        record[name] = {"blur": blur, "held_out_accuracy": sum(per_class.values()) / len(per_class),
                        "per_class": {build.classes[c]: v for c, v in per_class.items()}}
        log(f"{name} judges ({k} folds): held-out accuracy on the real {split} frames "
            f"{100 * record[name]['held_out_accuracy']:.1f} %")
    return states, record


def cross_fitted(data: str | Path | Build, split: str, n_classes: int, cache: Path | None = None, k: int = FOLDS,
                 epochs: int = 30, seed: int = 0, device: str = "cpu", log=print) -> CrossFitted:
    """`fit`'s judges, kept in ``cache`` for the build, split and settings they were fitted with (every
    row of a comparison is judged by the same judges)."""
    build = Build.open(data)
    ident = {"data": str(build), "fingerprint": build.fingerprint, "split": split, "classes": n_classes,
             "folds": k, "epochs": epochs, "seed": seed, "blurs": BLURS}
    def built(states: dict) -> dict:
        return {name: [checkpoint.build(lambda b=BLURS[name]: FrameClassifier(n_classes, b), s,
                                        f"{cache}: {name}[{f}]").to(device).eval() for f, s in enumerate(states[name])]
                for name in BLURS}

    stored = _cached(cache, ident, device) if cache is not None else None
    judges, record = checkpoint.kept_or_fitted(cache, ident, stored, built,
                                               lambda: fit(build, split, n_classes, k, epochs, seed, device, log), "judges")
    manifest = build.manifest(["key", "split", "class_index", "video_id"])
    mine = manifest[manifest["split"] == split]
    videos = dict(zip(mine["video_id"], mine["class_index"].astype(int)))
    return CrossFitted(judges, dict(zip(mine["key"], mine["video_id"])), video_folds(videos, k, seed), record)


def _cached(cache: Path, ident: dict, device) -> tuple[dict, dict] | None:
    """The cache's (states, record) when it holds judges of ``ident``; None (fitted again, with a
    warning for a cache that cannot be read) otherwise. A cache is checked like any stored file."""
    try:
        state = checkpoint.load(cache, device)
    except checkpoint.CheckpointError as e:
        print(f"warning: {e}; fitting the judges again", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("ident") != ident:
        return None
    try:
        states = untrusted.mapping(state.get("states"), f"{cache}: states")
        record = untrusted.mapping(state.get("record"), f"{cache}: record")
        if set(states) != set(BLURS) or any(not isinstance(states[n], list) or len(states[n]) != ident["folds"]
                                             for n in BLURS):
            raise untrusted.Untrusted(f"{cache}: not {ident['folds']} judges of each kind")
        for name in BLURS:
            held = untrusted.mapping(record.get(name), f"{cache}: record.{name}")
            untrusted.number(held.get("held_out_accuracy"), f"{cache}: record.{name}.held_out_accuracy", lo=0, hi=1)
        return dict(states), dict(record)
    except untrusted.Untrusted as e:
        print(f"warning: {e}; fitting the judges again", file=sys.stderr)
        return None


class Ensemble(torch.nn.Module):
    """One kind of the cross-fitted judges as one classifier: the mean of the folds' probabilities
    (log), for a reader that has no fold to ask (the live view's class line)."""

    def __init__(self, judges: list[torch.nn.Module]) -> None:
        super().__init__()
        self.judges = torch.nn.ModuleList(judges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([j(x).exp() for j in self.judges]).mean(0).log()


def load_ensemble(path: Path, device="cpu") -> tuple[Ensemble, dict]:
    """The headline judges of a ``judges.pt`` (`cross_fitted`'s cache) as an `Ensemble`, and the
    ident they were fitted with; every stored tensor checked against the network first."""
    state = checkpoint.load(path, device)
    if not isinstance(state, dict):
        raise untrusted.Untrusted(f"{path}: not the judges of s2i-model evaluate")
    ident = untrusted.mapping(state.get("ident"), f"{path}: ident")
    n = untrusted.number(ident.get("classes"), f"{path}: ident.classes", lo=1, hi=untrusted.MAX_CLASSES, integer=True)
    states = untrusted.mapping(state.get("states"), f"{path}: states").get(HEADLINE)
    if not isinstance(states, list) or not 1 <= len(states) <= untrusted.MAX_FOLDS:
        raise untrusted.Untrusted(f"{path}: states.{HEADLINE} is not a list of judges")
    judges = [checkpoint.build(lambda: FrameClassifier(n, BLURS[HEADLINE]), s, f"{path}: {HEADLINE}[{f}]")
              for f, s in enumerate(states)]
    return Ensemble(judges).to(device).eval(), dict(ident)
