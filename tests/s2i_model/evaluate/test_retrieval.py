"""Retrieval, computed again independently: the nearest-sound row's pictures of a whole batch of test
sounds are the frames of their nearest train sounds in the encoder's space (torch.cdist over the
embeddings, in order), and R@k (realframe.retrieval_recall, and per class as `evaluate` measures
it) is a cosine k-nearest-neighbour count done here by brute force in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model import run as run_folder
from s2i_model.evaluate.realframe import FrameClassifier, embed_images, load_split, retrieval_recall
from s2i_model.evaluate.reference import write_reference

from handmade_runs import s2i_run

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]  # the tiny build's


def as_bytes(pictures: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1] as the uint8 levels they show."""
    return pictures.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


@pytest.fixture(scope="module")
def retrieval(tiny_build, tmp_path_factory) -> dict:
    """The nearest-sound row in an (untrained, seeded) S2I's space, loaded as `evaluate` loads it; and
    that S2I's encoder rebuilt here from its checkpoint, with the split's sounds and frames."""
    from s2i_model.models.s2i.nets import AudioAutoencoder

    root = tmp_path_factory.mktemp("retrieval")
    space = s2i_run(tiny_build, root / "s2i", seed=3)
    write_reference("nearest-sound", root / "nearest-sound-s2i", space=space)
    state = checkpoint.load(space / "autoencoder.pt")
    ae = AudioAutoencoder(state["config"]["emb"], state["config"]["width"])
    ae.load_state_dict(state["model"])
    split = {name: load_split(tiny_build, name) for name in ("train", "test")}  # the build's normaliser, as saved
    with torch.no_grad():
        z = {name: ae.encoder.eval()(mels).flatten(1) for name, (mels, *_) in split.items()}
    return {"model": run_folder.load_model(root / "nearest-sound-s2i", "cpu"), "z": z, "split": split}


def test_a_batch_of_sounds_retrieves_the_frames_of_its_nearest_train_sounds_in_order(retrieval):
    train_mels, train_frames, _, _ = retrieval["split"]["train"]
    test_mels, _, _, _ = retrieval["split"]["test"]
    n = 5
    dist = torch.cdist(retrieval["z"]["test"].double(), retrieval["z"]["train"].double())
    order = dist.sort(dim=1, stable=True).indices
    # the premise: the order is clear (no near ties among the first n + 1), the sounds do not all
    # find the same train sounds, and neighbouring train frames differ (a shift would show)
    gaps = dist.gather(1, order[:, :n + 1]).diff(dim=1)
    assert float(gaps.min()) > 1e-5 * float(dist.max()), gaps.min()
    assert len(set(order[:, 0].tolist())) >= len(test_mels) // 2, order[:, 0]
    want = as_bytes(train_frames[order[:, :n]])  # [sounds, n, 3, 96, 96]
    assert all(not torch.equal(want[i, 0], want[i, 1]) for i in range(len(want)))
    assert not torch.equal(want, want.roll(1, 0))

    got = retrieval["model"].sound_pictures(test_mels, n)
    assert got.shape == (len(test_mels), n, 3, 96, 96)
    assert torch.equal(as_bytes(got), want)
    # a train sound's own frame comes first: it is at distance 0 from itself
    got = retrieval["model"].sound_pictures(train_mels[:8], 2)
    assert torch.equal(as_bytes(got[:, 0]), as_bytes(train_frames[:8]))


def test_asked_for_more_pictures_than_train_sounds_the_nearest_one_repeats(retrieval):
    """Every train frame once, then the nearest again for each picture beyond them."""
    train_mels, train_frames, _, _ = retrieval["split"]["train"]
    test_mels = retrieval["split"]["test"][0][:3]
    nearest = torch.cdist(retrieval["z"]["test"][:3].double(), retrieval["z"]["train"].double()).argmin(1)
    n = len(train_mels) + 2
    got = as_bytes(retrieval["model"].sound_pictures(test_mels, n))
    frames = as_bytes(train_frames)
    for i in range(len(test_mels)):
        assert torch.equal(got[i, 0], frames[nearest[i]])
        assert sorted(map(bytes_of, got[i, :len(train_mels)])) == sorted(map(bytes_of, frames))
        assert all(torch.equal(extra, frames[nearest[i]]) for extra in got[i, len(train_mels):])


def bytes_of(picture: torch.Tensor) -> bytes:
    return picture.numpy().tobytes()


# ---- R@k ---------------------------------------------------------------------------------------

def recall_by_hand(query: np.ndarray, query_cls: np.ndarray, gallery: np.ndarray, gallery_cls: np.ndarray,
                   k: int) -> float:
    """The share of queries with a gallery item of their class among their k most cosine-similar,
    one query at a time."""
    hits = 0
    for q, c in zip(query, query_cls):
        sim = [float(q @ g) / (np.linalg.norm(q) * np.linalg.norm(g)) for g in gallery]
        nearest = sorted(range(len(gallery)), key=lambda i: -sim[i])[:k]
        hits += any(gallery_cls[i] == c for i in nearest)
    return hits / len(query)


def test_recall_at_k_on_a_case_worked_by_hand():
    """Unit vectors on a circle, so the neighbours' order is read off the angles. Gallery at 0°,
    40°, 90°, 180°, 270°, of classes 0, 1, 2, 0, 3. Nearest first, by angle:
    query at  10° (class 1): 0° (0), 40° (1), ...            a hit from k = 2;
    query at  85° (class 3): 90°, 40°, 0°, 180°, 270° (3)   a hit only at k = 5;
    query at 175° (class 0): 180° (0), ...                   a hit from k = 1;
    query at 260° (class 2): 270°, 180°, 0°, 40°, 90° (2)   a hit only at k = 5."""
    def at(*degrees):
        r = np.radians(degrees)
        return torch.tensor(np.stack([np.cos(r), np.sin(r)], 1), dtype=torch.float32)

    gallery, gallery_cls = at(0, 40, 90, 180, 270), torch.tensor([0, 1, 2, 0, 3])
    query, query_cls = at(10, 85, 175, 260), torch.tensor([1, 3, 0, 2])
    got = retrieval_recall(query, query_cls, gallery, gallery_cls, ks=(1, 2, 3, 4, 5))
    assert got == {1: 0.25, 2: 0.5, 3: 0.5, 4: 0.5, 5: 1.0}
    # by angle alone (cosine): lengths change nothing (by Euclidean distance, the query at 10° of
    # length 7 would find the long 40° vector first)
    longer = torch.tensor([[0.5], [3.0], [1.0], [2.0], [0.2]])
    assert retrieval_recall(query * torch.tensor([[7.0], [0.3], [2.0], [1.0]]), query_cls, gallery * longer, gallery_cls,
                            ks=(1, 2, 3, 4, 5)) == got


def test_recall_at_k_is_a_brute_force_cosine_knn():
    rng = np.random.default_rng(5)
    gallery, query = rng.normal(size=(40, 6)), rng.normal(size=(60, 6))
    gallery_cls, query_cls = rng.integers(0, 4, 40), rng.integers(0, 4, 60)
    ks = (1, 2, 3, 5, 8)
    got = retrieval_recall(torch.tensor(query), torch.tensor(query_cls), torch.tensor(gallery),
                           torch.tensor(gallery_cls), ks=ks)
    want = {k: recall_by_hand(query, query_cls, gallery, gallery_cls, k) for k in ks}
    assert len(set(want.values())) == len(ks)  # every k a different answer: an off-by-one shows
    assert got == pytest.approx(want, abs=1e-6)  # a float32 mean of counts: 1/60 apart


def test_evaluate_measures_recall_per_class_as_a_cosine_knn_over_the_real_test_frames(tiny_build):
    """`measure` (what `evaluate` runs) on pictures that are seeded random train frames: its R@1 and
    R@5 per class are those counted here over the same features, the sound's class against the
    classes of the real test frames."""
    from s2i_data.readers import read_build_json
    from s2i_model.data import Normalizer
    from s2i_model.evaluate.evaluation import measure

    torch.manual_seed(0)
    judge = FrameClassifier(len(CLASSES)).eval()  # untrained: any feature space will do
    _, train_frames, _, _ = load_split(tiny_build, "train")
    _, real, real_cls, _ = load_split(tiny_build, "test")
    drawn = []
    pick = torch.Generator().manual_seed(1)

    def pictures(mels, frames):
        p = train_frames[torch.randint(len(train_frames), (2 * len(frames),), generator=pick)]
        drawn.append(p)
        return p

    m = measure(pictures, Build.open(str(tiny_build)), "test", judge, read_build_json(tiny_build)["classes"], 2,
                Normalizer.from_build(tiny_build), "cpu", batch_sounds=4)
    gen = embed_images(judge, torch.cat(drawn)).double().numpy()
    gallery = embed_images(judge, real).double().numpy()
    gen_cls = real_cls.repeat_interleave(2).numpy()
    for c, name in enumerate(CLASSES):
        sel = gen_cls == c
        for k in (1, 5):
            want = recall_by_hand(gen[sel], gen_cls[sel], gallery, real_cls.numpy(), k)
            assert m["per_class"][name][f"frame_r{k}"] == pytest.approx(want, abs=1e-12), (name, k)
    r1 = [m["per_class"][n]["frame_r1"] for n in CLASSES]
    r5 = [m["per_class"][n]["frame_r5"] for n in CLASSES]
    assert r1 != r5 and len(set(r1)) > 1, (r1, r5)  # the case tells R@1 from R@5 and one class from another
