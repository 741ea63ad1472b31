"""Proxy metrics that need no human labels (clearly not informativity, SPEC 5).

Class agreement: a classifier trained on the real frames of the train split names the class of
each image generated from a held-out sound; the share that matches the sound's class. The paper
shows why this over-reports (a plain classifier calls mostly uninformative images "matches"), so
it is reported as a proxy, never as informativity.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from s2i_data import untrusted
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.data import Normalizer, ShardStream
from s2i_model.evaluate.informativity import fit_classifier
from s2i_model.nets import InformativityClassifier


def load_split(data: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """All (mel, image, class, key) of a split in memory (small splits: tests, evaluation)."""
    mels, imgs, classes, keys = [], [], [], []
    for mel, img, cls, key in ShardStream(data, split, Normalizer.from_build(data), shuffle=False):
        mels.append(mel)
        imgs.append(img)
        classes.append(cls)
        keys.append(key)
    return torch.stack(mels), torch.stack(imgs), torch.tensor(classes), keys


class FrameClassifier(torch.nn.Module):
    """The informativity architecture with one output per class, looking at colour and layout.

    It sees every image at a quarter of its resolution (4x4 average pooling, scaled back up),
    in training and in use: a plain CNN trained on sharp real frames judges generated images by
    their texture (transposed-convolution checkerboards) rather than by what they show, and
    calls them all one class.
    """

    def __init__(self, n_classes: int, blur: int = 4) -> None:
        super().__init__()
        self.blur = blur
        self.net = InformativityClassifier(n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur > 1:
            x = F.interpolate(F.avg_pool2d(x, self.blur), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.net(x)


def train_frame_classifier(data: str | Path, n_classes: int, epochs: int = 30, seed: int = 0,
                           device: str = "cpu") -> torch.nn.Module:
    """A `FrameClassifier` trained on the train split's real frames (Adam, 1e-3)."""
    torch.manual_seed(seed)
    _, images, classes, _ = load_split(data, "train")
    model = FrameClassifier(n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return fit_classifier(model, opt, images, classes, epochs, 32, seed, device)


def frame_classifier(data: str | Path, n_classes: int, cache: Path | None = None, epochs: int = 30,
                     seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """`train_frame_classifier`, kept in ``cache`` for the build it was trained on (a sweep
    evaluates every embedding size with one judge)."""
    data = Build.open(data)
    ident = {"data": str(data), "fingerprint": data.fingerprint,
             "classes": n_classes, "epochs": epochs, "seed": seed}
    state = None
    if cache is not None:
        try:
            state = checkpoint.load(cache, device)
        except checkpoint.CheckpointError as e:  # a cache: trained again rather than trusted or fatal
            print(f"warning: {e}; training the frame classifier again", file=sys.stderr)
    if state is not None and state.get("ident") == ident:
        try:  # a cache of other shapes (edited, or not ours) is trained again, not loaded
            return checkpoint.build(lambda: FrameClassifier(n_classes), state.get("model"), f"{cache}: model").to(device).eval()
        except (checkpoint.CheckpointError, untrusted.Untrusted) as e:
            print(f"warning: {e}; training the frame classifier again", file=sys.stderr)
    model = train_frame_classifier(data, n_classes, epochs, seed, device)
    if cache is not None:
        checkpoint.save(cache, {"ident": ident, "model": model.state_dict()})
    return model


@torch.no_grad()
def embed_images(classifier: FrameClassifier, images: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """The classifier's 32-d convolutional features of [N, 3, 96, 96] images (the space of the
    domain-specific Fréchet and kernel distances and of retrieval)."""
    size = images.shape[-2:]
    out = []
    for b in images.split(256):
        x = F.interpolate(F.avg_pool2d(b.to(device), classifier.blur), size=size, mode="bilinear", align_corners=False)
        out.append(classifier.net.features(x).flatten(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 32)


def frame_hits(query: torch.Tensor, query_cls: torch.Tensor, gallery: torch.Tensor, gallery_cls: torch.Tensor,
               ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """Image → real-frame retrieval by cosine similarity: for each query, whether a frame of its
    class is among its k nearest gallery frames (``frame R@k``: not CLIP's class-name retrieval)."""
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    top = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices
    hit = gallery_cls[top] == query_cls[:, None]
    return {k: hit[:, :k].any(1) for k in ks}


def retrieval_recall(query: torch.Tensor, query_cls: torch.Tensor, gallery: torch.Tensor, gallery_cls: torch.Tensor,
                     ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Frame R@k: the share of generated images with a frame of the sound's class among their k
    nearest real frames (`frame_hits`)."""
    return {k: float(v.float().mean()) for k, v in frame_hits(query, query_cls, gallery, gallery_cls, ks).items()}


def diversity(images: torch.Tensor) -> float:
    """Mean pixel RMS distance (images in [-1, 1]) between the pictures imagined for one sound,
    averaged over sounds: [sounds, n, 3, H, W], n ≥ 2. 0 means dropout changes nothing."""
    s, n = images.shape[:2]
    if n < 2:
        raise ValueError("diversity needs at least two images per sound")
    flat = images.reshape(s, n, -1).float()
    d = torch.cdist(flat, flat) / flat.shape[-1] ** 0.5  # [s, n, n]
    return float(d.sum((1, 2)).div(n * (n - 1)).mean())


@torch.no_grad()
def class_agreement(classifier: torch.nn.Module, generated: torch.Tensor, classes: torch.Tensor) -> float:
    """Share of generated images [N, 3, 96, 96] the classifier assigns to the sound's class."""
    pred = torch.cat([classifier(b).argmax(1) for b in generated.split(256)])
    return float((pred.cpu() == classes).float().mean())


@torch.no_grad()
def separability(train_z: torch.Tensor, train_cls: torch.Tensor, test_z: torch.Tensor,
                 test_cls: torch.Tensor) -> dict[str, float]:
    """How well the held-out sounds' embeddings alone tell their classes: nearest class centroid
    and nearest train neighbour (1-NN), Euclidean. The ceiling of any generator that reads only
    the embedding: a class the embedding does not separate cannot be drawn from it."""
    if not len(test_z) or not len(train_z):
        return {"centroid": None, "nn1": None}
    classes = sorted(set(train_cls.tolist()))
    centroids = torch.stack([train_z[train_cls == c].mean(0) for c in classes])
    by_centroid = torch.tensor(classes)[torch.cdist(test_z, centroids).argmin(1)]
    by_neighbour = train_cls[torch.cdist(test_z, train_z).argmin(1)]
    return {"centroid": float((by_centroid == test_cls).float().mean()),
            "nn1": float((by_neighbour == test_cls).float().mean())}


@torch.no_grad()
def linear_decoder_agreement(classifier: torch.nn.Module, train_z: torch.Tensor, train_images: torch.Tensor,
                             test_z: torch.Tensor, test_cls: torch.Tensor, ridge: float = 1.0) -> float:
    """`class_agreement` of the pictures a linear map draws from the held-out embeddings: ridge
    regression from the embedding (standardised per dimension) to the picture, fitted on the train
    pairs. What the embedding gives a decoder that learns nothing beyond least squares: a reference,
    not a bound. A translator below it has not yet learnt what its embedding carries even linearly;
    one above it draws more than a linear map can (docs/training.md, "What limits the CPU runs")."""
    mu, sd = train_z.mean(0), train_z.std(0) + 1e-6

    def design(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([(z.double() - mu.double()) / sd.double(), torch.ones(len(z), 1, dtype=torch.float64)], 1)

    x = design(train_z)
    weights = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64),
                                 x.T @ train_images.flatten(1).double())
    drawn = (design(test_z) @ weights).float().clamp(-1, 1).view(len(test_z), *train_images.shape[1:])
    return class_agreement(classifier, drawn, test_cls)


def embedding_separability(run: str | Path, data: str | Path, split: str = "test", device: str = "cpu",
                           classifier: torch.nn.Module | None = None) -> dict:
    """`separability` of a run's frozen encoder: train embeddings against ``split``'s; with a
    real-frame ``classifier``, also ``linear``: `linear_decoder_agreement`."""
    from s2i_model.run import load_model

    embed = load_model(Path(run), device).embed
    out = {}
    for name in ("train", split):
        mels, images, cls, _ = load_split(data, name)
        with torch.no_grad():
            z = torch.cat([embed(b.to(device)).float().cpu() for b in mels.split(256)]) if len(mels) else torch.zeros(0)
        out[name] = (z, cls, images)
    (train_z, train_cls, train_images), (test_z, test_cls, _) = out["train"], out[split]
    found = separability(train_z, train_cls, test_z, test_cls)
    if classifier is not None:
        found["linear"] = (linear_decoder_agreement(classifier, train_z, train_images, test_z, test_cls)
                           if len(train_z) and len(test_z) else None)
    return found
