"""Informativity classifiers (SPEC 3.4): one binary judge per class, trained on a labelled pool.

Each class's labelled images are split 80/20 (stratified, by a hash of the image id, so adding
labels never moves an image from test to train); the network and optimiser are the paper's.
Informativity of a translator is then the share of its images that the judge of the sound's
class calls informative (SPEC 5).

A model leaves a fingerprint on its pictures, so judges that learnt from one model's pictures say
little of another's: the judges' file records the runs (and their models) whose labelled pictures
trained them (``pool_runs``, and ``pool_unattributed`` for pictures of an older pool that names no
run), and `pool_models` reads it back for the evaluation and the report.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from s2i_data import storage, untrusted

from s2i_model import checkpoint
from s2i_model.data import image_to_tensor
from s2i_model.labelling.store import pool_meta, read_image, read_labels, read_pool
from s2i_model.model import seeded_pictures
from s2i_model.nets import InformativityClassifier

FILE = "informativity.pt"
MIN_PER_LABEL = 4  # below this a class gets no judge (recorded, not an error)


@dataclass
class InformativityConfig:
    epochs: int = 100  # (ours: the paper does not say)
    batch_size: int = 32  # (ours)
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-5
    test_fraction: float = 0.2
    seed: int = 0


def _in_test(pid: str, fraction: float) -> bool:
    return int(hashlib.sha1(pid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def _load_images(pool: Path, rows: list[dict]) -> torch.Tensor:
    return torch.stack([image_to_tensor(np.asarray(Image.open(io.BytesIO(_picture(pool, r["file"]))).convert("RGB")))
                        for r in rows])


def _picture(pool: Path, file: str) -> bytes:
    data = read_image(pool, file)  # inside the pool, a PNG or JPEG by content
    if data is None:
        raise OSError(f"{pool / file}: missing, outside the pool or not a picture")
    return data


def train_informativity(pool: Path, out: Path, cfg: InformativityConfig = InformativityConfig(), device: str = "cpu",
                        log=print) -> dict:
    pool, out = Path(pool), Path(out)
    problems: list[str] = []
    labels = read_labels(pool, problems)  # a malformed line costs that label only, as on the page
    for p in problems:
        log(f"warning: {p}")
    items = {r["id"]: r for r in read_pool(pool)}
    classes = pool_meta(pool).get("classes")  # checked: plain names
    if classes is None:
        raise ValueError(f"{pool}/pool.json: missing, or names no classes")
    judges, report = {}, {}
    seen_runs: dict[str, str] = {}  # {run: model} of the pictures the judges learnt from
    unattributed = 0  # ... and how many of them an older pool's rows leave without a run
    for name in classes:
        rows = [items[i] for i in sorted(labels) if i in items and items[i]["class"] == name]
        y = torch.tensor([labels[r["id"]] == "informative" for r in rows], dtype=torch.long)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        if min(n_pos, n_neg) < MIN_PER_LABEL:
            report[name] = {"informative": n_pos, "not": n_neg, "skipped":
                            f"needs at least {MIN_PER_LABEL} images labelled of each kind"}
            log(f"{name}: {n_pos} informative + {n_neg} not labelled: too few, no classifier")
            continue
        test = torch.tensor([_in_test(r["id"], cfg.test_fraction) for r in rows])
        if test.all() or not test.any():  # tiny pools: keep at least one image on each side
            test = torch.zeros(len(rows), dtype=torch.bool)
            test[:: max(2, round(1 / cfg.test_fraction))] = True
        x = _load_images(pool, rows)
        model = _fit(x[~test], y[~test], cfg, device)
        acc = _accuracy(model, x[test], y[test], device)
        judges[name] = model.state_dict()
        learnt = [r for r, held_out in zip(rows, test.tolist()) if not held_out]
        seen_runs |= {r["run"]: r["model"] for r in learnt if "run" in r}
        unattributed += sum("run" not in r for r in learnt)
        report[name] = {"informative": n_pos, "not": n_neg, "train": int((~test).sum()), "test": int(test.sum()),
                        "test_accuracy": acc,
                        "models": dict(sorted(Counter(r["model"] for r in learnt if "model" in r).items()))}
        if any("run" not in r for r in learnt):
            report[name]["unattributed"] = sum("run" not in r for r in learnt)
        log(f"{name}: {n_pos} informative + {n_neg} not; test accuracy {acc:.1%} on {int(test.sum())} images")
    if not judges:
        raise ValueError(f"{pool}: no class has enough labels (at least {MIN_PER_LABEL} informative and "
                         f"{MIN_PER_LABEL} not): label more with s2i-model label")
    out.mkdir(parents=True, exist_ok=True)
    seen_runs = dict(sorted(seen_runs.items()))
    checkpoint.save(out / FILE, {"classes": classes, "judges": judges, "config": asdict(cfg), "report": report,
                                 "pool_runs": seen_runs, "pool_unattributed": unattributed})
    summary = {"pool": str(pool), "config": asdict(cfg), "classes": report, "pool_runs": seen_runs,
               "pool_unattributed": unattributed, "pool_models": _models_said(seen_runs, unattributed)}
    storage.atomic_write(out / "informativity.json", json.dumps(summary, indent=2))
    return summary


def _fit(x: torch.Tensor, y: torch.Tensor, cfg: InformativityConfig, device: str) -> InformativityClassifier:
    torch.manual_seed(cfg.seed)
    model = InformativityClassifier(2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return fit_classifier(model, opt, x, y, cfg.epochs, cfg.batch_size, cfg.seed, device)


def fit_classifier(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   epochs: int, batch_size: int, seed: int, device: str) -> torch.nn.Module:
    """Plain supervised training on in-memory tensors (log-probability outputs), batches
    reshuffled each epoch from ``seed``; shared by the judges and the proxy frame classifier."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two
                continue
            loss = F.nll_loss(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def _accuracy(model, x, y, device) -> float:
    pred = torch.cat([model(b.to(device)).argmax(1).cpu() for b in x.split(256)])
    return float((pred == y).float().mean())


def _models_said(runs: dict[str, str], unattributed: int) -> list[str] | None:
    """The models the judges learnt from, or None when some of their pictures name no run."""
    return None if unattributed else sorted(set(runs.values()))


def _pool_record(state: dict, where: Path) -> set[str] | None:
    """`pool_models` of a loaded judges' file, its fields checked (`untrusted.judges_pool`)."""
    if "pool_runs" not in state:
        return None  # judges from before the file said
    runs, unattributed = untrusted.judges_pool(state["pool_runs"], state.get("pool_unattributed"), str(where))
    said = _models_said(runs, unattributed)
    return None if said is None else set(said)


def pool_models(folder: Path) -> set[str] | None:
    """The models whose pictures the judges in ``folder`` (a `train_informativity` output) learnt
    from: only for these does their informativity mean what it says. None when the file does not
    say: judges trained before it recorded its pool, or on pictures of an older pool whose ids
    name no run (they may be of any model). The file may come from another lab: a value that is
    not a mapping of plain run names to model names (registry-style: a-z, 0-9, -, _), or a count
    that is not a whole number, is an `untrusted.Untrusted` naming file and field, in one line."""
    state = checkpoint.load(Path(folder) / FILE, "cpu")
    if state is None:
        raise ValueError(f"{folder} holds no informativity classifiers ({FILE}): "
                         "run s2i-model train-informativity first")
    return _pool_record(state, Path(folder) / FILE)


class Judges:
    """The trained classifiers of a folder written by `train_informativity`; ``pool_models``: the
    models their pool's pictures came from (`pool_models`; None: not said)."""

    def __init__(self, classes: list[str], models: dict[str, torch.nn.Module], report: dict,
                 pool_models: set[str] | None = None) -> None:
        self.classes, self.models, self.report, self.pool_models = classes, models, report, pool_models

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "Judges":
        state = checkpoint.load(Path(folder) / FILE, device)
        if state is None:
            raise ValueError(f"{folder} holds no informativity classifiers ({FILE}): "
                             "run s2i-model train-informativity first")
        where = Path(folder) / FILE  # judges may come from another lab: every part checked first
        classes = state.get("classes")
        if not isinstance(classes, list) or not 1 <= len(classes) <= untrusted.MAX_CLASSES:
            raise untrusted.Untrusted(f"{where}: classes is not a list of class names")
        untrusted.names(classes, f"{where}: classes")
        judges = untrusted.mapping(state.get("judges"), f"{where}: judges")
        report = untrusted.mapping(state.get("report", {}), f"{where}: report")
        seen = _pool_record(state, where)
        models = {}
        for name, weights in judges.items():
            if name not in classes:
                raise untrusted.Untrusted(f"{where}: a judge of {untrusted.printable(str(name))!r}, not one of its classes")
            models[name] = checkpoint.build(lambda: InformativityClassifier(2), weights, f"{where}: judges.{name}")
            models[name] = models[name].to(device).eval()
        return cls(classes, models, dict(report), seen)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, class_names: list[str]) -> torch.Tensor:
        """1.0 where the judge of the image's class calls it informative, 0.0 where not, NaN for a
        class without a judge."""
        out = torch.full((len(images),), float("nan"))
        for name in set(class_names):
            if name not in self.models:
                continue
            sel = torch.tensor([c == name for c in class_names])
            m = self.models[name]
            dev = next(m.parameters()).device
            out[sel] = torch.cat([m(b.to(dev)).argmax(1).float().cpu() for b in images[sel].split(256)])
        return out


@torch.no_grad()
def judge_generator(G: torch.nn.Module, z: torch.Tensor, cls: torch.Tensor, classes: list[str], judges: Judges,
                    samples: int, seed: int = 0) -> dict:
    """Informativity of G's pictures for embeddings z right now (the per-epoch history), with
    G in eval mode (dropout on) and the caller's RNG state left as it was."""
    was = G.training
    G.eval()
    dev = next(G.parameters()).device
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        imgs = torch.cat([x.flatten(0, 1).float().cpu()
                          for x in seeded_pictures(G, z.to(dev), samples, seed, per_call=64 * samples)])
    G.train(was)
    names = [classes[c] for c in cls.repeat_interleave(samples)]
    pred = judges.predict(imgs, names)
    per_class = {}
    for name in sorted(set(names)):
        sel = torch.tensor([x == name for x in names])
        if not torch.isnan(pred[sel]).any():
            per_class[name] = float(pred[sel].mean())
    return {"mean": float(np.mean(list(per_class.values()))) if per_class else None, "per_class": per_class}
