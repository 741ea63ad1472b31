"""The reference rows of `make compare`, measured like the models, that say what a number means
(issues 15, 27). Floor to ceiling:

- **chance**: each picture a train frame drawn uniformly at random: what a real-looking picture
  that ignores the sound scores (class agreement near the train split's class shares, the Fréchet
  distance of real frames of no particular sound).
- **lookup** (class-mean lookup): a sound classifier trained on the train sounds picks a class; all
  n pictures of the sound are that class's mean train frame. What knowing the class alone, and
  drawing its average, scores; its classifier's accuracy on the test split is in its record.
- **nearest-sound** (ours, called ``retrieval`` before issue 27): the frames of the test sound's
  nearest train *sounds* in a trained model's audio space (S2I's embedding, Sound2Scene's audio
  feature, any model with one): what copying instead of imagining scores. The n pictures are its
  n nearest train frames (Euclidean distance; for unit-norm features that is the cosine order), so
  R@1 and class agreement over n pictures read as a k-NN's.
- **nearest-image** (Sound2Scene's baseline C, paper 003 Table 1): the test sound's audio embedding
  → the train *frames* nearest to it in the model's visual space (its image encoder's embedding of
  the train frames, cosine), for models whose audio is mapped into an image space
  (``ModelSpec.image_space``).
- **shuffled** (issue 28, for builds of within-class factors): each test sound gets the real frame
  of *another* video of its class in the same split (`ShuffledFrames`: a fixed derangement of the
  class's videos, within the judges' fold): the right class, shown as real frames show it, with
  factors unrelated to the sound's. Its class agreement is about the real row's, its factor
  agreement about 0: the floor of factor agreement for a picture that is right about the class.
- **real**: the test sound's own frame, the ceiling of every measure.

Each is a run folder holding RUN/reference.json (what it is, the space's run, the build), so
`evaluate`, `report` and the comparison read it as they read a model's run. None trains a
generator; lookup fits its sound classifier (seconds) when it is written and again, identically,
when it is loaded.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from s2i_data import storage
from s2i_data.readers import Build

from s2i_model import run as run_folder
from s2i_model.data import Normalizer, ShardStream

FILE = run_folder.REFERENCE
KINDS = ("chance", "lookup", "nearest-sound", "nearest-image", "shuffled", "real")
OLD_KINDS = {"retrieval": "nearest-sound"}  # a reference's earlier name: what it means now
SPACES = ("nearest-sound", "nearest-image")  # the kinds that search a trained model's space


def sound_embedding(model, mels: torch.Tensor) -> torch.Tensor:
    """A loaded model's audio space for normalised log-mels: its ``embed``."""
    with torch.no_grad():
        return model.embed(mels.to(model.device)).float().flatten(1)


class NearestSound:
    """The nearest-sound row, a `model.SoundToImage` that copies: n pictures of a sound are the
    frames of its n nearest train sounds in ``space``'s audio space."""

    def __init__(self, space, frames: torch.Tensor, index: torch.Tensor, build: dict) -> None:
        self.space, self.frames, self.index = space, frames, index
        self.device, self.norm, self.build = space.device, space.norm, build

    @classmethod
    def load(cls, space_run: Path, data: str, device: str = "auto", batch: int = 256) -> "NearestSound":
        space = run_folder.load_model(space_run, device)
        frames, embs = _train_index(data, space.norm, lambda mels: sound_embedding(space, mels), 0, batch)
        return cls(space, frames, embs, run_folder.build_record({"build": space.build}))

    @property
    def window(self) -> tuple[float, int]:
        """(seconds, sample rate) of the sound windows it hears: its space's (imagine and live use it)."""
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[B, n, 3, H, W]: the frames of the n nearest train sounds, nearest first (no randomness:
        ``seed`` is accepted for the protocol)."""
        z = sound_embedding(self.space, mels).cpu()
        k = min(n, len(self.index))
        near = torch.cdist(z, self.index).topk(k, dim=1, largest=False).indices
        if k < n:  # fewer train sounds than pictures asked for: repeat the nearest
            near = torch.cat([near, near[:, :1].expand(-1, n - k)], 1)
        return self.frames[near].float().div(127.5).sub(1.0).to(self.device)


RetrievalModel = NearestSound  # its name before issue 27


def _nearest(score: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n] indices of the n highest scores of each row, highest first; when there are fewer than
    n columns, the highest repeats for the pictures beyond them."""
    k = min(n, score.shape[1])
    near = score.topk(k, dim=1).indices
    if k < n:
        near = torch.cat([near, near[:, :1].expand(-1, n - k)], 1)
    return near


def _train_split(build: Build, norm: Normalizer):
    """(mel, frame in [-1, 1], class) of every train sample, in the build's order."""
    for mel, img, cls, _ in ShardStream(build, "train", norm, shuffle=False):
        yield mel, img, cls


def _as_bytes(img: torch.Tensor) -> torch.Tensor:
    return img.add(1).mul(127.5).round().to(torch.uint8)


def _train_index(data: str, norm, embed, part: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every train frame (uint8) and ``embed`` of its sound (``part`` 0: the normalised log-mel) or
    of the frame itself (``part`` 1), in batches of ``batch``: what a copying row searches."""
    frames, embs, pending = [], [], []

    def flush() -> None:
        embs.append(embed(torch.stack(pending)).cpu())
        pending.clear()

    for sample in _train_split(Build.open(data), norm):
        frames.append(_as_bytes(sample[1]))
        pending.append(sample[part])
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if not frames:
        raise run_folder.RunError(f"{data}: the train split has no samples to retrieve from")
    return torch.stack(frames), torch.cat(embs)


class NearestImage:
    """The nearest-image row (Sound2Scene's baseline C): n pictures of a sound are the n train
    frames whose visual embeddings (``space.embed_image``) are nearest, by cosine, to the sound's
    audio embedding (``space.embed``) in that shared space, nearest first."""

    def __init__(self, space, frames: torch.Tensor, index: torch.Tensor, build: dict) -> None:
        self.space, self.frames, self.index = space, frames, index  # index: unit-norm frame embeddings
        self.device, self.norm, self.build = space.device, space.norm, build

    @classmethod
    def load(cls, space_run: Path, data: str, device: str = "auto", batch: int = 256) -> "NearestImage":
        space = run_folder.load_model(space_run, device)
        if not hasattr(space, "embed_image") or not hasattr(space, "embed"):
            raise run_folder.RunError(f"the model in {space_run} maps no sounds into an image space")
        def embed(imgs: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return space.embed_image(imgs.to(space.device)).float().flatten(1)

        frames, embs = _train_index(data, space.norm, embed, 1, batch)
        return cls(space, frames, torch.nn.functional.normalize(embs, dim=1),
                   run_folder.build_record({"build": space.build}))

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[B, n, 3, H, W]: the n train frames nearest to each sound in the visual space, nearest
        first (no randomness: ``seed`` is accepted for the protocol)."""
        z = torch.nn.functional.normalize(sound_embedding(self.space, mels).cpu(), dim=1)
        near = _nearest(z @ self.index.T, n)
        return self.frames[near].float().div(127.5).sub(1.0).to(self.device)


class SoundClassifier(torch.nn.Module):
    """The lookup row's sound classifier: multinomial logistic regression on 2 × 128 numbers per
    sound, the mean and the standard deviation over time of each band of the normalised log-mel,
    standardised with the train split's statistics. Fitted in float64 by full-batch L-BFGS from
    all-zero weights with an L2 penalty of ``L2`` on the weights: no randomness at all, so the same
    train split gives the same classifier bit for bit (seconds on a CPU). A class with no train
    sound is never picked."""

    L2 = 1e-2
    DESCRIPTION = "logistic regression on the per-band mean and std of the normalised log-mel (L-BFGS, L2 0.01)"

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(features, classes, dtype=torch.float64)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)
        self.register_buffer("mean", torch.zeros(features, dtype=torch.float64))
        self.register_buffer("std", torch.ones(features, dtype=torch.float64))
        self.register_buffer("present", torch.ones(classes, dtype=torch.bool))

    @staticmethod
    def features(mels: torch.Tensor) -> torch.Tensor:
        """[B, 1, bands, frames] → [B, 2 × bands]: each band's mean and std over time."""
        x = mels.detach().to("cpu", torch.float64).flatten(1, -2)
        return torch.cat([x.mean(-1), x.std(-1, correction=0)], 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.linear((features - self.mean) / self.std)
        return logits.masked_fill(~self.present, float("-inf"))

    def predict(self, mels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self(self.features(mels)).argmax(1)

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 500) -> "SoundClassifier":
        net = cls(features.shape[1], classes)
        net.mean.copy_(features.mean(0))
        net.std.copy_(features.std(0, correction=0).clamp_min(1e-6))
        net.present.copy_(torch.bincount(labels, minlength=classes) > 0)
        opt = torch.optim.LBFGS(net.linear.parameters(), lr=1.0, max_iter=steps, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        x = (features - net.mean) / net.std

        def loss() -> torch.Tensor:
            opt.zero_grad()
            logits = net.linear(x).masked_fill(~net.present, -1e30)
            out = torch.nn.functional.cross_entropy(logits, labels) + cls.L2 * net.linear.weight.pow(2).sum()
            out.backward()
            return out

        with torch.enable_grad():
            opt.step(loss)
        return net.eval()


class ClassMeanLookup:
    """The lookup row, a `model.SoundToImage`: its `SoundClassifier` picks a class for each sound,
    and all n pictures of the sound are that class's mean train frame (the pixel mean of the
    class's train frames)."""

    def __init__(self, classifier: SoundClassifier, means: torch.Tensor, norm: Normalizer, device: torch.device,
                 build: dict, train_sounds: int) -> None:
        self.classifier, self.means, self.norm, self.device, self.build = classifier, means, norm, device, build
        self.train_sounds = train_sounds

    @classmethod
    def load(cls, data: "str | Build", device: torch.device | str = "cpu") -> "ClassMeanLookup":
        build = run_folder.check_build(Build.open(data) if isinstance(data, str) else data)
        norm, classes = Normalizer.from_build(build), len(build.classes)
        feats, labels, sums = [], [], None
        for mel, img, c in _train_split(build, norm):
            feats.append(SoundClassifier.features(mel[None])[0])
            labels.append(int(c))
            if sums is None:
                sums = torch.zeros(classes, *img.shape, dtype=torch.float64)
            sums[c] += img.double()
        if not labels:
            raise run_folder.RunError(f"{build}: the train split has no sounds to learn classes from")
        labels = torch.tensor(labels)
        counts = torch.bincount(labels, minlength=classes).double().clamp_min(1)
        means = (sums / counts.view(-1, *[1] * (sums.dim() - 1))).float()
        classifier = SoundClassifier.fit(torch.stack(feats), labels, classes)
        return cls(classifier, means, norm, torch.device(device), build.record(), len(labels))

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    def sound_classes(self, mels: torch.Tensor) -> torch.Tensor:
        """The class its classifier picks for each sound."""
        return self.classifier.predict(mels)

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[B, n, 3, H, W]: n copies of the picked class's mean train frame (no randomness)."""
        picked = self.means[self.sound_classes(mels)]
        return picked[:, None].expand(-1, n, *picked.shape[1:]).to(self.device)

    def accuracy(self, data: "str | Build", split: str = "test") -> dict:
        """Its classifier's accuracy on ``split``'s sounds (None for an empty split), and their count."""
        build = Build.open(data) if isinstance(data, str) else data
        right = total = 0
        for mel, _, c, _ in ShardStream(build, split, self.norm, shuffle=False):
            right += int(self.sound_classes(mel[None])[0] == c)
            total += 1
        return {f"{split}_accuracy": right / total if total else None, f"{split}_sounds": total}


class ChanceFrames:
    """The chance row, a `model.SoundToImage` that ignores the sound: each picture is a train frame
    drawn uniformly at random (with replacement), so it measures what a real-looking picture of no
    particular sound scores: class agreement near the train split's class shares (1 / classes when
    balanced), the Fréchet and kernel distances of the train frames to the test frames, the
    diversity of unrelated frames. ``seed`` seeds the draw (`seeded_pictures`' rule: the same seed
    gives the same frames; None goes on with torch's global RNG), and the n pictures of a sound
    are independent draws."""

    def __init__(self, frames: torch.Tensor, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.frames, self.norm, self.device, self.build = frames, norm, device, build

    @classmethod
    def load(cls, data: "str | Build", device: torch.device | str = "cpu") -> "ChanceFrames":
        build = run_folder.check_build(Build.open(data) if isinstance(data, str) else data)
        norm = Normalizer.from_build(build)
        frames = [_as_bytes(img) for _, img, _ in _train_split(build, norm)]
        if not frames:
            raise run_folder.RunError(f"{build}: the train split has no frames to draw")
        return cls(torch.stack(frames), norm, torch.device(device), build.record())

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        """[B, n, 3, H, W]: B × n train frames drawn uniformly at random (the sounds are not heard)."""
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        drawn = torch.randint(len(self.frames), (len(mels), n), generator=rng)
        return self.frames[drawn].float().div(127.5).sub(1.0).to(self.device)


class RealFrames:
    """The test sound's own frame: `evaluate` hands it the real frames (`pictures_of_real`)."""

    def __init__(self, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.norm, self.device, self.build = norm, device, build

    @staticmethod
    def pictures_of_real(real: torch.Tensor, n: int) -> torch.Tensor:
        return real.repeat_interleave(n, 0)


class ShuffledFrames:
    """The shuffled row: each sound's n pictures are the real frame of one other video of its class
    in its split (the sample at the same place among that video's samples, by segment, wrapping
    round). The videos of a class are ordered by a hash of their ids and each is sent to the next
    within its group (a derangement: no video keeps its own frames), the group being the class's
    videos in one fold of the judges (`partners`' ``fold_of_video``) so that no judge sees a frame it
    was trained on; a video alone in its fold goes to the next video of its class in another fold,
    and a class's only video keeps its own frame (there is no other to show). Fixed: no randomness.

    `evaluation.measure` hands it the batch's keys (`pictures_of_keys`); it has no ``sound_pictures``
    (it cannot picture a sound it does not know), so the side-by-side grid leaves it out as it does
    the real frames."""

    SALT = "shuffled"

    def __init__(self, build: Build, norm: Normalizer, device: torch.device, record: dict) -> None:
        self.data, self.norm, self.device, self.build = build, norm, device, record
        self._manifest = None
        self._split_of: dict[str, str] = {}
        self._frames: dict[str, dict[str, torch.Tensor]] = {}  # split -> key -> uint8 frame
        self._partners: dict[tuple, dict[str, str]] = {}  # (split, folds) -> partners

    def _rows(self):
        if self._manifest is None:
            m = self.data.manifest(["key", "split", "class_index", "video_id", "segment_index"])
            self._manifest = m.sort_values(["split", "video_id", "segment_index", "key"])
            self._split_of = dict(zip(m["key"], m["split"]))
        return self._manifest

    def partners(self, split: str, fold_of_video: dict[str, int] | None = None) -> dict[str, str]:
        """``{key: the key whose frame stands in for it}`` over ``split``'s samples."""
        m = self._rows()
        m = m[m["split"] == split]
        samples = {v: list(g["key"]) for v, g in m.groupby("video_id", sort=True)}
        cls_of = dict(zip(m["video_id"], m["class_index"].astype(int)))
        folds = fold_of_video or {}
        video_to: dict[str, str] = {}
        for c in sorted(set(cls_of.values())):
            mine = sorted((v for v in cls_of if cls_of[v] == c),
                          key=lambda v: hashlib.sha1(f"{self.SALT}:{v}".encode()).hexdigest())
            for f in sorted({folds.get(v, 0) for v in mine}):
                group = [v for v in mine if folds.get(v, 0) == f]
                for i, v in enumerate(group):
                    if len(group) > 1:
                        video_to[v] = group[(i + 1) % len(group)]
                    else:  # alone in its fold: the next video of its class, or itself when it is the only one
                        video_to[v] = mine[(mine.index(v) + 1) % len(mine)]
        out = {}
        for v, keys in samples.items():
            theirs = samples[video_to[v]]
            for i, k in enumerate(keys):
                out[k] = theirs[i % len(theirs)]
        return out

    def _split_frames(self, split: str) -> dict[str, torch.Tensor]:
        if split not in self._frames:
            self._frames[split] = {key: _as_bytes(img) for _, img, _, key in
                                   ShardStream(self.data, split, self.norm, shuffle=False)}
        return self._frames[split]

    def pictures_of_keys(self, keys: list[str], n: int, fold_of_video: dict[str, int] | None = None) -> torch.Tensor:
        """[len(keys) * n, 3, H, W] in [-1, 1], sound by sound: n copies of each partner's frame."""
        self._rows()
        folds = tuple(sorted((fold_of_video or {}).items()))
        out = []
        for k in keys:
            if k not in self._split_of:
                raise ValueError(f"sample {k!r} is not in {self.data}'s manifest: the shuffled row shows its build's "
                                 "frames only")
            split = self._split_of[k]
            if (split, folds) not in self._partners:
                self._partners[(split, folds)] = self.partners(split, fold_of_video)
            out.append(self._split_frames(split)[self._partners[(split, folds)][k]])
        frames = torch.stack(out).float().div(127.5).sub(1.0)
        return frames.repeat_interleave(n, 0)


def write_reference(kind: str, out: Path, data: str = "", space: Path | None = None) -> dict:
    """RUN/reference.json for a reference row: ``real``, ``shuffled``, ``chance`` and ``lookup`` need the build
    (lookup fits its sound classifier here and records its test accuracy), ``nearest-sound`` and
    ``nearest-image`` the run whose space they search (its build is the one searched unless
    ``data`` says otherwise). ``retrieval`` is nearest-sound's earlier name."""
    kind = OLD_KINDS.get(kind, kind)
    if kind not in KINDS:
        raise run_folder.RunError(f"a reference is one of {', '.join(KINDS)}, not {kind!r}")
    out = Path(out)
    if kind in SPACES:
        if space is None:
            raise run_folder.RunError(f"{kind} needs --space RUN: a trained model's run folder")
        opened = run_folder.Run.open(space)
        model = opened.model("cpu")  # refuses an unfinished or foreign run in one line
        if not hasattr(model, "embed"):
            raise run_folder.RunError(f"the model in {space} has no audio space to search")
        if kind == "nearest-image" and not (opened.spec.image_space and hasattr(model, "embed_image")):
            raise run_folder.RunError(f"the model in {space} ({opened.name}) embeds no frames in the space it maps "
                                      "sounds to: nearest-image needs one that does (ModelSpec.image_space)")
        state = opened.final()
        data = data or state["config"]["data"]
        record = {"model": kind, "space": str(Path(space).resolve()), "space_model": opened.name,
                  "data": data, "build": run_folder.build_record(state)}
    else:
        if not data:
            raise run_folder.RunError(f"{kind} needs --data BUILD")
        build = run_folder.check_build(Build.open(data))
        record = {"model": kind, "data": data, "build": build.record()}
        if kind == "lookup":
            old = _written(out)
            if old is not None and {k: old.get(k) for k in record} == record and "classifier" in old:
                return old  # the same build: the same classifier (its fit has no randomness)
            lookup = ClassMeanLookup.load(build)
            record["classifier"] = {"kind": SoundClassifier.DESCRIPTION, "train_sounds": lookup.train_sounds,
                                    **lookup.accuracy(build, "test")}
    text = json.dumps(record, indent=2)
    if (out / FILE).is_file() and (out / FILE).read_text() == text:
        return record  # unchanged: its evaluation.json stays up to date (it is stamped with this file)
    out.mkdir(parents=True, exist_ok=True)
    with run_folder.writing(out):  # not while a training or an evaluation writes there
        storage.atomic_write(out / FILE, text)
    return record


def _written(out: Path) -> dict | None:
    """The reference record already in ``out`` (checked), or None where there is none to keep."""
    try:
        return run_folder.read_reference(out) if (out / FILE).is_file() else None
    except run_folder.RunError:
        return None  # not ours: written afresh


def load_reference(run: "run_folder.Run", device: torch.device):
    """The registry's loader of the reference rows (`models.get("nearest-sound").load`, ...)."""
    record = run.final()["reference"]
    kind = OLD_KINDS.get(record["model"], record["model"])
    if kind == "nearest-sound":
        return NearestSound.load(Path(record["space"]), record["data"], device)
    if kind == "nearest-image":
        return NearestImage.load(Path(record["space"]), record["data"], device)
    build = run_folder.check_build(Build.open(record["data"]))
    if kind == "lookup":
        return ClassMeanLookup.load(build, device)
    if kind == "chance":
        return ChanceFrames.load(build, device)
    if kind == "shuffled":
        return ShuffledFrames(build, Normalizer.from_build(build), torch.device(device), build.record())
    return RealFrames(Normalizer.from_build(build), device, build.record())
