"""Factor agreement (issue 28): how much of each within-class factor a model's pictures carry.

A build of factors (`s2i_data.factors`, `Build.factors`) gives every sample of a class with factors
its video's values (manifest columns ``factor_<name>``). A *factor reader* per such class is a ridge regression on fixed image features (`image_features`:
the picture's brightness normalised to its own 5th–95th percentiles, so that hue and exposure do not
count, then its coarse layout, the share and the row and column profiles of its lighter region, its
spatial-frequency spectrum, the autocorrelation across the frame, brightness percentiles, contrast
and edge density), fitted to the **train split's real frames of that class only** (never a val or
test frame): a continuous factor as u in [0, 1], a counted one scaled from [low, high] to [0, 1] and
read back unrounded. Why not a CNN: a build has 20–60 train videos a class, and a small CNN trained
on them read its held-out videos badly (Spearman about 0.0–0.6 on real frames, against 0.6–0.99
for the ridge reader on the same build: docs/models.md); the features are where sizes, positions,
periods and counts show. Its held-out quality is measured on the **val** split's real frames
(Spearman per factor, and for a counted factor the share read right once rounded); `factor_readers`
keeps the readers beside the judges (``RUNS/factor-readers.pt``; a lone evaluate:
``RUN/factor-readers.pt``), tensors only. A ridge regression has one solution: the same build gives
the same readers.

`evaluation.measure` then reads, for each test sound, its class's factors from each of its n
pictures and averages the n reads; per (class, factor), `scores` gives the Spearman rank correlation
between the sounds' true values (the manifest's, by key) and those reads over the class's sounds
(0.0 where either is constant or fewer than two sounds count: a picture that never changes within a
class carries no factor), and for a counted factor the accuracy (the averaged read rounded and
clipped to [low, high] equals the truth). Factor agreement is the mean Spearman over every (class,
factor) pair; its interval, like every other number's, comes from the stratified video bootstrap.

Controls that score about 0 by construction: the class-mean lookup (one picture per class: its
reads are constant within the class) and the ``shuffled`` reference (each sound gets the real frame
of another video of its class: right class, unrelated factors); the real frames are the ceiling.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from s2i_data import untrusted
from s2i_data.factors import COUNT, Factor
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.data import ShardStream
from s2i_model.evaluate import intervals

FILE = "factor-readers.pt"  # beside the judges: RUNS/factor-readers.pt, or RUN/ for a lone evaluate
ALPHA = 1.0  # ridge strength, per train frame, on standardised features
SIZE = 96  # pictures are read at this size (features of a fixed length whatever the build's)
VERSION = 2  # the readers' recipe (features, regression, targets): a cache of another is fitted again


# ---- ranks and Spearman --------------------------------------------------------------------------

def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given the mean of the ranks they span (as scipy's ``rankdata``)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # the first index of each run of equal values, and the mean rank of each run
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    out = np.empty(len(x), np.float64)
    out[order] = np.repeat(mean_rank, ends - starts)
    return out


def spearman(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (the Pearson correlation of their ranks, ties
    averaged): in [-1, 1], and 0.0, never NaN, when either is constant or fewer than two pairs are
    given: values that never change carry nothing to agree with."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("spearman: values that are not finite")
    if len(x) < 2:
        return 0.0
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    sx, sy = float(np.sqrt((rx * rx).sum())), float(np.sqrt((ry * ry).sum()))
    if sx == 0.0 or sy == 0.0:
        return 0.0
    return float(np.clip((rx * ry).sum() / (sx * sy), -1.0, 1.0))


# ---- the readers ---------------------------------------------------------------------------------

_LUMA = (0.299, 0.587, 0.114)


def image_features(images: torch.Tensor) -> torch.Tensor:
    """[N, FEATURES] float64 of pictures in [-1, 1], [N, 3, H, W] (any H, W: read at ``SIZE``)."""
    x = images.float()
    if x.shape[-2:] != (SIZE, SIZE):
        x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x + 1.0) / 2.0
    lum = _LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2]  # [N, S, S]
    flat = lum.flatten(1)
    q = torch.quantile(flat, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]), dim=1).T  # [N, 5]
    lo, hi = q[:, :1, None], q[:, 4:, None]
    z = (lum - lo) / (hi - lo + 0.05)  # the frame's own brightness range: shape, not colour
    light = (z > 0.5).float()
    spec = torch.fft.rfft2(z - z.mean((1, 2), keepdim=True)).abs() ** 2
    fy, fx = torch.fft.fftfreq(SIZE).abs()[:, None], torch.fft.rfftfreq(SIZE)[None, :]
    radius = torch.sqrt(fy ** 2 + fx ** 2)
    edges = torch.linspace(0, 0.5, 17)
    ring = torch.stack([(spec * ((radius >= a) & (radius < b))).sum((1, 2)) for a, b in zip(edges[:-1], edges[1:])], 1)
    across = torch.stack([(spec[:, :1] * ((fx >= a) & (fx < b))).sum((1, 2)) for a, b in zip(edges[:-1], edges[1:])], 1)
    prof = z.mean(1) - z.mean((1, 2))[:, None]  # across the frame: periods of seams, windows, crests
    auto = torch.stack([(prof[:, :-k] * prof[:, k:]).mean(1) for k in range(2, 80, 2)], 1)
    parts = [nn.functional.avg_pool2d(z[:, None], 8).flatten(1),  # 12 × 12 layout
             light.mean((1, 2))[:, None], light.mean(2), light.mean(1),  # lighter region: share, rows, columns
             torch.log1p(100 * ring / (ring.sum(1, keepdim=True) + 1e-9)),
             torch.log1p(100 * across / (across.sum(1, keepdim=True) + 1e-9)),
             auto / (prof.pow(2).mean(1, keepdim=True) + 1e-6),
             q, flat.std(1)[:, None], (hi - lo).flatten(1),
             (z[:, :, 1:] - z[:, :, :-1]).abs().mean((1, 2))[:, None], (z[:, 1:] - z[:, :-1]).abs().mean((1, 2))[:, None]]
    return torch.cat(parts, 1).double()


FEATURES = 144 + 1 + 2 * SIZE + 16 + 16 + 39 + 5 + 1 + 1 + 2


class FactorReader(nn.Module):
    """One class's factor reader: ``image_features`` standardised (``mean``, ``scale``), then a linear
    map (``weight``, ``bias``) to one output per factor, each factor scaled to [0, 1] (`to_unit`).
    Fitted in closed form (`train_reader`); its state is four tensors."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        for name, shape in (("mean", (FEATURES,)), ("scale", (FEATURES,)), ("weight", (FEATURES, outputs)),
                            ("bias", (outputs,))):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = image_features(x.cpu()).to(self.weight.device)
        return ((f - self.mean) / self.scale) @ self.weight + self.bias


def to_unit(values: np.ndarray | torch.Tensor, f: Factor):
    """A factor's values in its own units → [0, 1] (u itself for a continuous factor)."""
    return (values - f.low) / (f.high - f.low)


def from_unit(out: torch.Tensor, f: Factor) -> torch.Tensor:
    """A reader's output → the factor's units, clipped to [low, high]; a count stays unrounded here
    (the n reads of a sound are averaged first, `scores` rounds)."""
    return f.low + out.clamp(0.0, 1.0) * (f.high - f.low)


def _by_class(factors: Sequence[Factor]) -> dict[str, list[Factor]]:
    out: dict[str, list[Factor]] = {}
    for f in factors:
        out.setdefault(f.cls, []).append(f)
    return out


class FactorReaders:
    """The factor readers of a build: ``nets[cls]`` reads class ``cls``'s factors (in ``factors``'
    order), ``record`` says how they were fitted and how well they read the val frames."""

    def __init__(self, factors: Sequence[Factor], classes: Sequence[str], nets: dict[str, nn.Module],
                 record: dict) -> None:
        self.factors, self.classes = tuple(factors), list(classes)
        self.nets, self.record = nets, record
        self.of_class = _by_class(self.factors)
        self.column = {f.name: i for i, f in enumerate(self.factors)}

    @torch.no_grad()
    def read(self, images: torch.Tensor, cls: torch.Tensor, device="cpu") -> torch.Tensor:
        """[N, len(factors)] float64: for each image its class's factors (``cls``: the class index
        whose reader reads it, the sound's class), in each factor's units, unrounded; NaN in the
        columns of other classes' factors."""
        out = torch.full((len(images), len(self.factors)), float("nan"), dtype=torch.float64)
        for c in cls.unique().tolist():
            name = self.classes[c]
            if name not in self.of_class:
                continue
            sel = (cls == c).nonzero().flatten()
            net = self.nets[name]
            raw = torch.cat([net(b.to(device).float()).float().cpu() for b in images[sel].split(256)])
            for j, f in enumerate(self.of_class[name]):
                out[sel, self.column[f.name]] = from_unit(raw[:, j], f).double()
        return out


def train_reader(frames: torch.Tensor, targets: torch.Tensor, alpha: float = ALPHA) -> FactorReader:
    """A `FactorReader` fitted to uint8 ``frames`` [N, 3, H, W] and their ``targets`` [N, factors]
    (each factor scaled to [0, 1], `to_unit`): ridge regression on the standardised features, the
    penalty ``alpha`` × N (so its strength does not change with the number of frames)."""
    feats = torch.cat([image_features(b.float().div(127.5).sub(1.0)) for b in frames.split(256)])
    y = targets.double()
    mean, scale = feats.mean(0), feats.std(0, unbiased=False) + 1e-6
    x = (feats - mean) / scale
    gram = x.T @ x + alpha * len(x) * torch.eye(x.shape[1], dtype=torch.float64)
    net = FactorReader(y.shape[1])
    net.mean.copy_(mean)
    net.scale.copy_(scale)
    net.weight.copy_(torch.linalg.solve(gram, x.T @ (y - y.mean(0))))
    net.bias.copy_(y.mean(0))
    return net.eval()


def _frames(build: Build, split: str) -> tuple[torch.Tensor, list[str]]:
    """Every frame of ``split`` as uint8 [N, 3, H, W] and its key, in the build's order (no mel is
    kept: readers see frames only)."""
    if not build.shards(split):
        return torch.zeros(0, 3, build.image_size, build.image_size, dtype=torch.uint8), []
    imgs, keys = [], []
    for _, img, _, key in ShardStream(build, split, lambda mel: torch.zeros(0), shuffle=False):
        imgs.append(img.add(1).mul(127.5).round().to(torch.uint8))
        keys.append(key)
    if not imgs:
        return torch.zeros(0, 3, build.image_size, build.image_size, dtype=torch.uint8), []
    return torch.stack(imgs), keys


def truth(manifest, factors: Sequence[Factor], keys: Sequence[str], build: Build) -> np.ndarray:
    """[len(keys), len(factors)] float64: each sample's true factor values from ``manifest`` (the
    build's, `Build.manifest`; by key; NaN in the columns of other classes' factors). A key the
    manifest lacks, or a factor column it lacks, is refused in one line."""
    columns = [f.column for f in factors]
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"{build.file('manifest.parquet')}: lacks the factor column(s) {', '.join(missing)}")
    table = manifest.set_index("key")[columns]
    try:
        return table.loc[list(keys)].to_numpy(np.float64).reshape(len(keys), len(columns))
    except KeyError:
        absent = next(k for k in keys if k not in table.index)
        raise ValueError(f"sample {absent!r} is not in {build.file('manifest.parquet')}") from None


def _values_digest(build: Build, factors: Sequence[Factor]) -> str:
    """A digest of the train and val samples' keys and factor values: the readers are fitted again
    when the values they learn from or are checked on change, whatever the build's fingerprint."""
    m = build.manifest()
    m = m[m["split"].isin(["train", "val"])]
    cols = ["key", "split"] + [f.column for f in factors if f.column in m.columns]
    return hashlib.sha256(m[cols].sort_values("key").to_csv(index=False).encode()).hexdigest()[:16]


def fit(build: Build, factors: Sequence[Factor], alpha: float = ALPHA, device: str = "cpu",
        log=print) -> tuple[dict, dict]:
    """The readers' weights ``{class: state}`` and their record (what they were fitted on, and per
    factor the val split's Spearman and, for a count, accuracy). Each class's reader learns from the
    train split's frames of that class alone (`train_reader`); the val frames only measure it, and
    no test frame is read."""
    classes = build.classes
    train_x, train_keys = _frames(build, "train")
    val_x, val_keys = _frames(build, "val")
    manifest = build.manifest()
    train_y, val_y = truth(manifest, factors, train_keys, build), truth(manifest, factors, val_keys, build)
    cls_of = dict(zip(manifest["key"], manifest["class"]))
    train_cls = np.array([cls_of[k] for k in train_keys], object)
    val_cls = np.array([cls_of[k] for k in val_keys], object)
    column = {f.name: i for i, f in enumerate(factors)}
    states, record = {}, {"trained_on": "the train split's real frames of each class (never a val or test frame)",
                          "checked_on": "the val split's real frames",
                          "reader": "ridge regression on image features", "alpha": alpha, "per_factor": {}}
    for cls, mine in _by_class(factors).items():
        cols = [column[f.name] for f in mine]
        sel = (train_cls == cls) & np.isfinite(train_y[:, cols]).all(1)
        if sel.sum() < 2:
            raise ValueError(f"{build}: the train split holds {int(sel.sum())} frame(s) of {cls} with its factors; "
                             "a factor reader needs at least 2")
        x = train_x[torch.from_numpy(np.flatnonzero(sel))]
        y = torch.from_numpy(np.stack([to_unit(train_y[sel, column[f.name]], f) for f in mine], 1)).float()
        net = train_reader(x, y, alpha)
        states[cls] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        vsel = (val_cls == cls) & np.isfinite(val_y[:, cols]).all(1)
        reads = None
        if vsel.any():
            one = FactorReaders(mine, classes, {cls: net}, {})
            imgs = val_x[torch.from_numpy(np.flatnonzero(vsel))].float().div(127.5).sub(1.0)
            reads = one.read(imgs, torch.full((len(imgs),), classes.index(cls)), device).numpy()
        for j, f in enumerate(mine):
            true = val_y[vsel, column[f.name]]
            q = {"class": cls, "kind": f.kind, "train_frames": int(sel.sum()), "val_frames": int(vsel.sum()),
                 "val_spearman": None if reads is None else spearman(true, reads[:, j])}
            if f.kind == COUNT:
                q["val_accuracy"] = None if reads is None else float((_rounded(reads[:, j], f) == true).mean())
            record["per_factor"][f.name] = q
            log(f"factor reader {f.name}: Spearman {_show(q['val_spearman'])} on {q['val_frames']} real val frames"
                + (f", {_show(q['val_accuracy'], pct=True)} counted right" if f.kind == COUNT else "")
                + f" (trained on {q['train_frames']} train frames)")
    return states, record


def _show(v, pct: bool = False) -> str:
    return "–" if v is None else f"{100 * v:.1f} %" if pct else f"{v:+.2f}"


def _rounded(reads: np.ndarray, f: Factor) -> np.ndarray:
    return np.clip(np.round(reads), f.low, f.high)


def factor_readers(data: str | Path | Build, factors: Sequence[Factor], cache: Path | None = None,
                   alpha: float = ALPHA, device: str = "cpu", log=print) -> FactorReaders:
    """`fit`'s readers, kept in ``cache`` for the build (its fingerprint and its train and val
    factor values), the factors and the settings they were fitted with (every row of a comparison
    is read by the same readers). A cache of other settings is fitted again; one that cannot be
    read or holds other shapes is fitted again with a warning. Loaded with weights only."""
    build = Build.open(data)
    factors = tuple(factors)
    ident = {"data": str(build), "fingerprint": build.fingerprint, "values": _values_digest(build, factors),
             "classes": build.classes, "factors": [[f.name, f.cls, f.kind, f.low, f.high] for f in factors],
             "alpha": alpha, "version": VERSION}
    by_class = _by_class(factors)

    def built(states: dict) -> dict:
        return {cls: checkpoint.build(lambda k=len(mine): FactorReader(k), states[cls], f"{cache}: {cls}")
                .to(device).eval() for cls, mine in by_class.items()}

    stored = _cached(cache, ident, by_class) if cache is not None else None
    nets, record = checkpoint.kept_or_fitted(cache, ident, stored, built, lambda: fit(build, factors, alpha, device, log),
                                             "factor readers")
    return FactorReaders(factors, build.classes, nets, record)


def _cached(cache: Path, ident: dict, by_class: dict) -> tuple[dict, dict] | None:
    """The cache's (states, record) when it holds readers of ``ident``; None otherwise (a cache that
    cannot be read or breaks its shape with a warning). Checked like any stored file."""
    try:
        state = checkpoint.load(cache, "cpu")
    except checkpoint.CheckpointError as e:
        print(f"warning: {e}; fitting the factor readers again", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("ident") != ident:
        return None
    try:
        states = untrusted.mapping(state.get("states"), f"{cache}: states")
        if set(states) != set(by_class):
            raise untrusted.Untrusted(f"{cache}: states are not one reader per class with factors")
        record = reader_record(state.get("record"), f"{cache}: record", [f for fs in by_class.values() for f in fs])
        return dict(states), record
    except untrusted.Untrusted as e:
        print(f"warning: {e}; fitting the factor readers again", file=sys.stderr)
        return None


def reader_record(record, where: str, factors: Sequence[Factor]) -> dict:
    """A readers' record (`fit`'s) checked against the factors it must describe."""
    record = dict(untrusted.mapping(record, where))
    per = untrusted.mapping(record.get("per_factor"), f"{where}.per_factor")
    if set(per) != {f.name for f in factors}:
        raise untrusted.Untrusted(f"{where}.per_factor: not one entry per factor")
    for f in factors:
        q = untrusted.mapping(per[f.name], f"{where}.per_factor.{f.name}")
        if q.get("val_spearman") is not None:
            untrusted.number(q["val_spearman"], f"{where}.per_factor.{f.name}.val_spearman", lo=-1, hi=1)
    return record


# ---- scoring ---------------------------------------------------------------------------------------

def scores(true: np.ndarray, reads: np.ndarray, cls: np.ndarray, factors: Sequence[Factor], classes: Sequence[str],
           sounds: np.ndarray | None = None) -> dict[str, dict]:
    """Per factor of a class with sounds here: ``spearman`` (the true values of the class's sounds
    against their averaged reads, `spearman`) and, for a counted factor, ``accuracy`` (the read
    rounded and clipped to [low, high] equals the truth), over ``sounds`` (indices, repeats counting
    twice; default all). ``true`` and ``reads``: [S, len(factors)]; ``cls``: [S] class indices. A
    sound whose truth is missing (NaN) is left out of its factor."""
    idx = np.arange(len(cls)) if sounds is None else np.asarray(sounds)
    out = {}
    for j, f in enumerate(factors):
        c = classes.index(f.cls) if f.cls in classes else -1
        mine = idx[cls[idx] == c]
        if not len(mine) and sounds is None:
            continue  # a class with no sound in the split: no entry
        t, r = true[mine, j], reads[mine, j]
        keep = np.isfinite(t)
        t, r = t[keep], r[keep]
        r = np.where(np.isfinite(r), r, f.low)  # a read is never NaN for its class; guard all the same
        got = {"sounds": int(len(t)), "spearman": spearman(t, r)}
        if f.kind == COUNT:
            got["accuracy"] = float((_rounded(r, f) == t).mean()) if len(t) else None
        out[f.name] = got
    return out


def summary(true: np.ndarray, reads: np.ndarray, cls: np.ndarray, factors: Sequence[Factor], classes: Sequence[str],
            draws: list[np.ndarray], readers_record: dict | None = None) -> tuple[dict, dict]:
    """evaluation.json's ``factors`` block and its replicates (``replicates.factors``): per factor
    the Spearman (and count accuracy) with a 95 % interval from ``draws`` (`intervals.video_draws`,
    the same draws as every other number), their mean over (class, factor) pairs (factor agreement)
    with its interval, and the readers' record."""
    point = scores(true, reads, cls, factors, classes)
    reps_each = [scores(true, reads, cls, factors, classes, d) for d in draws]
    per_factor, rep_per = {}, {}
    for f in factors:
        if f.name not in point:
            continue
        p = point[f.name]
        rs = {"spearman": [r[f.name]["spearman"] for r in reps_each]}
        entry = {"class": f.cls, "kind": f.kind, "sounds": p["sounds"], "spearman": p["spearman"],
                 "interval": intervals.interval(rs["spearman"])}
        if f.kind == COUNT:
            rs["accuracy"] = [r[f.name]["accuracy"] for r in reps_each]
            entry["accuracy"] = p["accuracy"]
            entry["accuracy_interval"] = intervals.interval(rs["accuracy"])
        per_factor[f.name], rep_per[f.name] = entry, rs
    names = list(per_factor)
    mean = float(np.mean([per_factor[n]["spearman"] for n in names])) if names else None
    rep_mean = [float(np.mean([r[n]["spearman"] for n in names])) if names else None for r in reps_each]
    block = {"mean": mean, "interval": intervals.interval(rep_mean), "per_factor": per_factor,
             "readers": readers_record or {}}
    return block, {"mean": rep_mean, "per_factor": rep_per}
