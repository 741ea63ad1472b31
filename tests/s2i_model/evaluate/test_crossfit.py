"""The comparison's judges never saw what they judge (evaluate/crossfit.py): fold f's judges were
trained on no frame of a train video (what the copying rows return) and no frame of a fold-f test
video, and on every val frame and every other fold's test frame, checked against the frames read
independently from the shards; the folds split videos, not segments; and the real frames' row, as
`measure` judges it, is exactly each judge's held-out accuracy."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from s2i_data.readers import Build

from s2i_model.data import Normalizer
from s2i_model.evaluate import crossfit
from s2i_model.evaluate.evaluation import measure
from s2i_model.evaluate.realframe import load_split


def _digests(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images]


def test_folds_deal_each_class_videos_evenly():
    videos = {f"v{i}": i % 3 for i in range(14)}  # classes of 5, 5 and 4 videos
    folds = crossfit.video_folds(videos, 3)
    assert set(folds) == set(videos)
    sizes = np.bincount(list(folds.values()), minlength=3)
    assert sizes.max() - sizes.min() <= 1
    for c in range(3):  # within a class too: its videos reach every fold (it has ≥ 3)
        mine = [folds[v] for v, k in videos.items() if k == c]
        assert set(mine) == {0, 1, 2}
    assert crossfit.video_folds(videos, 3) == folds  # the same folds every time
    assert crossfit.video_folds(videos, 3, seed=1) != folds


def test_no_judge_saw_a_train_frame_or_a_video_it_judges(tiny_build, monkeypatch):
    seen = []
    real_fit = crossfit.fit_classifier

    def recording(model, opt, x, y, epochs, batch, seed, device):
        seen.append((model.blur, _digests(x)))
        return real_fit(model, opt, x, y, 1, batch, seed, device)

    monkeypatch.setattr(crossfit, "fit_classifier", recording)
    build = Build.open(tiny_build)
    _, record = crossfit.fit(build, "test", 5, k=3, epochs=1)

    # the frames as the shards hold them, with each test frame's video, read here independently
    manifest = pq.read_table(tiny_build / "manifest.parquet").to_pandas()
    video_of = dict(zip(manifest["key"], manifest["video_id"]))
    train = set(_digests(load_split(build, "train")[1]))
    val = _digests(load_split(build, "val")[1])
    _, test_images, test_cls, test_keys = load_split(build, "test")
    test = _digests(test_images)
    test_videos = {video_of[k]: c for k, c in zip(test_keys, test_cls.tolist())}
    folds = crossfit.video_folds(test_videos, 3)
    assert len(set(folds.values())) == 3  # the tiny build's test videos fill three folds

    assert [b for b, _ in seen] == [4, 4, 4, 1, 1, 1]  # three folds of blurred judges, then of full ones
    for i, (_, frames) in enumerate(seen):
        f = i % 3
        judged = {d for d, k in zip(test, test_keys) if folds[video_of[k]] == f}
        others = [d for d, k in zip(test, test_keys) if folds[video_of[k]] != f]
        assert not set(frames) & train, "a judge saw a train frame"
        assert not set(frames) & judged, "a judge saw a frame of a video it judges"
        assert sorted(frames) == sorted(val + others)
    assert record["folds"] == 3 and record["headline"] == "blurred"


def test_the_real_frames_row_is_the_judges_held_out_accuracy(tiny_build):
    build = Build.open(tiny_build)
    judge = crossfit.cross_fitted(build, "test", 5, k=3, epochs=3)
    found = measure(lambda mels, real: real, build, "test", judge, build.classes, 1, Normalizer.from_build(build),
                    "cpu", replicates=20)
    for name, key in (("blurred", "class_agreement"), ("full", "class_agreement_full")):
        held = judge.held_out[name]
        for c, row in found["per_class"].items():
            assert row[key] == pytest.approx(held["per_class"][c]), (name, c)
        assert found["mean"][key] == pytest.approx(held["held_out_accuracy"])


@pytest.mark.slow
def test_the_distances_lie_inside_their_intervals(learning_data):
    """Four pictures a sound, each a real frame of the batch drawn at random (as the chance row draws), on the learning
    data (6 test videos a class): a resample repeats videos, which raises both distances, so the
    raw replicates lie above the value; shifted by the bootstrap's bias estimate, each interval
    holds its value. (Any feature space shows it: one untrained judge.)"""
    from s2i_model.evaluate.realframe import FrameClassifier

    build = Build.open(learning_data)
    torch.manual_seed(0)
    judge = FrameClassifier(len(build.classes)).eval()
    found = measure(lambda mels, real: real[torch.randint(len(real), (4 * len(real),))], build, "test", judge, build.classes, 4,
                    Normalizer.from_build(build), "cpu", batch_sounds=64, replicates=100)
    for k in ("frechet_distance", "kernel_distance"):
        lo, hi = found["intervals"]["proxies"][k]
        assert lo < hi and lo <= found["proxies"][k] <= hi, (k, lo, found["proxies"][k], hi)
