"""The reference rows that say what a number means (issue 27), each computed again independently:
the class-mean lookup's picture is the pixel mean (numpy) of the train frames of the class its
sound classifier picks; chance draws train frames uniformly (a chi-square over many draws) and
reproducibly; nearest-image (Sound2Scene's baseline C) returns the train frames whose visual
embeddings are cosine-nearest (brute force here, from the nets rebuilt) to the sound's audio
embedding; a reference.json from before the renaming (``retrieval``) still loads, as nearest-sound;
`plan` names the rows; hostile reference.json values are refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s2i_data.readers import Build
from s2i_data.untrusted import Untrusted, reference as checked_reference

from s2i_model import checkpoint, models
from s2i_model import run as run_folder
from s2i_model.data import Normalizer
from s2i_model.evaluate.realframe import load_split
from s2i_model.evaluate.reference import (ChanceFrames, ClassMeanLookup, NearestImage, NearestSound, SoundClassifier,
                                          write_reference)
from s2i_model.evaluate.suite import CompareConfig, plan

from handmade_runs import WIDTH, s2i_run

S2S = "sound2scene"  # the built-in model whose audio is mapped into an image space


def as_bytes(pictures: torch.Tensor) -> torch.Tensor:
    return pictures.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


@pytest.fixture(scope="module")
def split(tiny_build) -> dict:
    return {name: load_split(tiny_build, name) for name in ("train", "test")}


# ---- lookup ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lookup(tiny_build, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("refs") / "lookup"
    record = write_reference("lookup", run, data=str(tiny_build))
    return {"run": run, "record": record, "model": run_folder.load_model(run, "cpu")}


def test_lookup_draws_the_class_mean_train_frame_of_the_class_its_classifier_picks(lookup, split):
    train_mels, train_frames, train_cls, _ = split["train"]
    test_mels, _, test_cls, _ = split["test"]
    model = lookup["model"]
    assert isinstance(model, ClassMeanLookup)
    # the class it picks, by hand from its classifier's weights: each band's mean and (population)
    # std over time, standardised by the train split's, then the linear layer's argmax
    def features(mels: torch.Tensor) -> np.ndarray:
        x = mels[:, 0].double().numpy()
        return np.concatenate([x.mean(-1), x.std(-1)], 1)

    f_train = features(train_mels)
    mu, sd = f_train.mean(0), np.maximum(f_train.std(0), 1e-6)
    w, b = (p.detach().numpy() for p in (model.classifier.linear.weight, model.classifier.linear.bias))
    picked = ((features(test_mels) - mu) / sd @ w.T + b).argmax(1)
    assert np.array_equal(model.sound_classes(test_mels).numpy(), picked)
    # the premise: it learnt the classes (the tiny build's sounds are easy), so it picks several
    assert ((f_train - mu) / sd @ w.T + b).argmax(1).tolist() == train_cls.tolist()
    assert len(set(picked.tolist())) == 5

    frames = as_bytes(train_frames).numpy().astype(np.float64)  # the uint8 levels the build holds
    means = {c: frames[train_cls.numpy() == c].mean(0) / 127.5 - 1.0 for c in range(5)}
    n = 3
    got = model.sound_pictures(test_mels, n)
    assert got.shape == (len(test_mels), n, 3, 96, 96)
    for i, c in enumerate(picked):
        for j in range(n):
            np.testing.assert_allclose(got[i, j].double().numpy(), means[c], atol=1e-6, rtol=0)
    # its record holds its classifier's accuracy on the test split, which is what it scores here
    clf = lookup["record"]["classifier"]
    assert clf["test_accuracy"] == pytest.approx(float((picked == test_cls.numpy()).mean()), abs=1e-12)
    assert clf["test_sounds"] == len(test_mels) and clf["train_sounds"] == len(train_mels)
    assert clf["kind"] == SoundClassifier.DESCRIPTION


def test_lookups_classifier_is_the_same_each_time_it_is_fitted(lookup, tiny_build):
    """Loaded again (as `evaluate` loads it), the classifier is fitted again bit for bit: the
    accuracy in the record is the loaded classifier's."""
    again = ClassMeanLookup.load(str(tiny_build))
    for k, v in lookup["model"].classifier.state_dict().items():
        assert torch.equal(v, again.classifier.state_dict()[k]), k
    assert torch.equal(lookup["model"].means, again.means)


# ---- chance ------------------------------------------------------------------------------------

def test_chance_draws_train_frames_uniformly_and_reproducibly(tiny_build, split, tmp_path):
    from scipy.stats import chi2

    train_frames = as_bytes(split["train"][1])
    test_mels = split["test"][0][:4]
    write_reference("chance", tmp_path / "chance", data=str(tiny_build))
    model = run_folder.load_model(tmp_path / "chance", "cpu")
    assert isinstance(model, ChanceFrames)
    known: dict[bytes, list[int]] = {}
    for i, frame in enumerate(train_frames):
        known.setdefault(frame.numpy().tobytes(), []).append(i)
    n = 400
    got = as_bytes(model.sound_pictures(test_mels, n, seed=11))
    assert got.shape == (4, n, 3, 96, 96)
    # every picture is a train frame; over 1600 draws each distinct frame comes up as often as its
    # copies among the N train frames make likely (chi-square, p > 0.001), each sound's n differ
    counts = dict.fromkeys(known, 0)
    for picture in got.flatten(0, 1):
        counts[picture.numpy().tobytes()] += 1  # a KeyError: a picture that is no train frame
    total, frames = 4 * n, len(train_frames)
    expected = np.array([total * len(known[k]) / frames for k in counts])
    seen = np.array([counts[k] for k in counts])
    stat = float(((seen - expected) ** 2 / expected).sum())
    assert chi2.sf(stat, len(counts) - 1) > 1e-3, (stat, len(counts))
    assert min(seen) > 0
    for i in range(4):
        assert len({p.numpy().tobytes() for p in got[i]}) > len(known) // 2
    # the seed decides the draw: the same seed the same frames, another seed others
    assert torch.equal(as_bytes(model.sound_pictures(test_mels, n, seed=11)), got)
    assert not torch.equal(as_bytes(model.sound_pictures(test_mels, n, seed=12)), got)
    torch.manual_seed(5)  # no seed: torch's own RNG goes on (evaluate seeds it once)
    first = model.sound_pictures(test_mels, 3, seed=None)
    torch.manual_seed(5)
    assert torch.equal(model.sound_pictures(test_mels, 3, seed=None), first)


# ---- nearest-image (Sound2Scene's baseline C) -------------------------------------------------

def s2s_run(data, run, split: dict, seed: int = 0):
    """RUN/sound2scene.pt of an untrained Sound2Scene (seeded), at its audio stage, as its trainer
    saves it; and the nets. Its batch norms hold the train split's statistics (one pass in
    training mode), so that its features differ from sound to sound and frame to frame (with the
    initial ones every sound lands next to the same frame)."""
    from s2i_model.models.sound2scene.config import Sound2SceneConfig
    from s2i_model.models.sound2scene.nets import Sound2Scene

    build = Build.open(str(data))
    torch.manual_seed(seed)
    net = Sound2Scene(WIDTH)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative mean: the statistics of the one pass
    with torch.no_grad():
        net.audio_encoder(split["train"][0])
        net.frame_encoder(split["train"][1])
    net.eval()
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save(run / models.get(S2S).checkpoint, {
        "model": S2S, "stage": "audio", "epoch": 1, "nets": net.state_dict(),
        "config": Sound2SceneConfig(data=str(data), run=str(run), width=WIDTH).to_dict(),
        "normalizer": Normalizer.from_build(build).to_dict(), "build": build.record()})
    return net


def test_nearest_image_returns_the_train_frames_nearest_to_the_sound_in_the_visual_space(tiny_build, split,
                                                                                         tmp_path):
    net = s2s_run(tiny_build, tmp_path / S2S, split, seed=4)
    write_reference("nearest-image", tmp_path / f"nearest-image-{S2S}", space=tmp_path / S2S)
    model = run_folder.load_model(tmp_path / f"nearest-image-{S2S}", "cpu")
    assert isinstance(model, NearestImage) and run_folder.Run.open(tmp_path / f"nearest-image-{S2S}").name == \
        "nearest-image"
    train_mels, train_frames, _, _ = split["train"]
    test_mels = split["test"][0]
    # by brute force, from the nets themselves: each test sound's audio feature against every
    # train frame's visual feature, cosine in float64, one pair at a time
    with torch.no_grad():
        audio = net.audio_encoder(test_mels).double().numpy()
        visual = net.frame_encoder(train_frames).double().numpy()
    sim = np.array([[a @ v / (np.linalg.norm(a) * np.linalg.norm(v)) for v in visual] for a in audio])
    order = np.argsort(-sim, axis=1, kind="stable")
    n = 4
    # the premise: a clear order (no near ties among the first n + 1), not one frame for all sounds
    gaps = -np.diff(np.take_along_axis(sim, order[:, :n + 1], 1), axis=1)
    assert gaps.min() > 1e-6, gaps.min()
    assert len(set(order[:, 0].tolist())) >= 3, order[:, :n]
    got = as_bytes(model.sound_pictures(test_mels, n))
    want = as_bytes(train_frames[torch.from_numpy(order[:, :n].copy())])
    assert all(not torch.equal(want[i, 0], want[i, 1]) for i in range(len(want)))  # an order that shows
    assert torch.equal(got, want)
    # it is another row than nearest-sound: the frames of the nearest train *sounds* differ
    write_reference("nearest-sound", tmp_path / f"nearest-sound-{S2S}", space=tmp_path / S2S)
    sounds = as_bytes(run_folder.load_model(tmp_path / f"nearest-sound-{S2S}", "cpu").sound_pictures(test_mels, n))
    assert not torch.equal(sounds, got)


def test_nearest_image_needs_a_model_whose_sounds_map_into_an_image_space(tiny_build, tmp_path):
    s2i_run(tiny_build, tmp_path / "s2i")
    with pytest.raises(run_folder.RunError, match="embeds no frames") as e:
        write_reference("nearest-image", tmp_path / "ni", space=tmp_path / "s2i")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "ni").exists()


# ---- the renaming, the plan ---------------------------------------------------------------------

def test_a_retrieval_reference_from_before_the_renaming_loads_as_nearest_sound(tiny_build, tmp_path):
    space = s2i_run(tiny_build, tmp_path / "s2i", seed=3)
    old = tmp_path / "retrieval-s2i"
    old.mkdir()
    (old / "reference.json").write_text(json.dumps({  # as `s2i-model reference retrieval` wrote it
        "model": "retrieval", "space": str(space.resolve()), "space_model": "s2i", "data": str(tiny_build),
        "build": run_folder.build_record(checkpoint.load(space / "translator.pt"))}, indent=2))
    opened = run_folder.Run.open(old)
    assert opened.name == "nearest-sound" and opened.spec is models.get("nearest-sound")
    loaded = opened.model("cpu")
    assert isinstance(loaded, NearestSound)
    new = tmp_path / "nearest-sound-s2i"
    assert write_reference("retrieval", new, space=space)["model"] == "nearest-sound"  # the old spelling
    mels = load_split(tiny_build, "test")[0][:4]
    assert torch.equal(loaded.sound_pictures(mels, 3), run_folder.load_model(new, "cpu").sound_pictures(mels, 3))
    assert models.get("retrieval") is models.get("nearest-sound")  # an old evaluation.json's model name


def test_plan_names_the_reference_rows():
    specs, refs = plan(CompareConfig(data="d", runs="r", models=["s2i", "aivae", S2S]))
    assert refs == [("real", "real", ""), ("lookup", "lookup", ""), ("chance", "chance", ""),
                    ("nearest-sound-s2i", "nearest-sound", "s2i"), (f"nearest-sound-{S2S}", "nearest-sound", S2S),
                    (f"nearest-image-{S2S}", "nearest-image", S2S)]
    _, refs = plan(CompareConfig(data="d", runs="r", models=["s2i", "aivae"],
                                 references=["chance", "retrieval-s2i", "nearest-sound-aivae", "nearest-sound-s2i"]))
    assert refs == [("chance", "chance", ""), ("nearest-sound-s2i", "nearest-sound", "s2i"),
                    ("nearest-sound-aivae", "nearest-sound", "aivae")]
    for bad in ("nearest-image-s2i", "nearest-sound-mmgan", "retrieval", "lookup-s2i", "nearest-sound"):
        with pytest.raises(models.RegistryError) as e:
            plan(CompareConfig(data="d", runs="r", models=["s2i", "aivae"], references=[bad]))
        assert repr(bad) in str(e.value) and "\n" not in str(e.value)


# ---- hostile reference.json ------------------------------------------------------------------------

GOOD = {"lookup": {"model": "lookup", "data": "shards", "build": {"location": "shards"},
                   "classifier": {"kind": "logistic regression", "train_sounds": 40, "test_sounds": 20,
                                  "test_accuracy": 0.9}},
        "nearest-image": {"model": "nearest-image", "data": "shards", "space": "/runs/x", "space_model": "x"}}
HOSTILE = [  # (kind, field, value (None: removed), the field the refusal names)
    ("lookup", "model", "lookup\n<script>", "model"),
    ("lookup", "model", ["lookup"], "model"),
    ("lookup", "data", "shards\u202e", "data"),
    ("lookup", "build", "shards", "build"),
    ("lookup", "classifier", None, "classifier"),
    ("lookup", "classifier", [1, 2], "classifier"),
    ("lookup", "classifier.kind", "fit\u2066", "classifier.kind"),
    ("lookup", "classifier.kind", 7, "classifier.kind"),
    ("lookup", "classifier.test_accuracy", 1.5, "classifier.test_accuracy"),
    ("lookup", "classifier.test_accuracy", -0.1, "classifier.test_accuracy"),
    ("lookup", "classifier.test_accuracy", "NaN", "classifier.test_accuracy"),
    ("lookup", "classifier.test_accuracy", True, "classifier.test_accuracy"),
    ("lookup", "classifier.train_sounds", -1, "classifier.train_sounds"),
    ("lookup", "classifier.test_sounds", 2.5, "classifier.test_sounds"),
    ("lookup", "classifier.test_sounds", None, "classifier.test_sounds"),
    ("nearest-image", "space", None, "space"),
    ("nearest-image", "space", {"a": 1}, "space"),
    ("nearest-image", "space_model", "../x", "space_model"),
    ("nearest-image", "space_model", "x\ny", "space_model"),
]


@pytest.mark.parametrize("kind,field,value,named", HOSTILE)
def test_a_hostile_reference_json_is_refused_in_one_line(kind, field, value, named, tmp_path):
    record = json.loads(json.dumps(GOOD[kind]))
    assert checked_reference(record, "reference.json")["model"] == kind  # the premise: the rest is good
    *parents, last = field.split(".")
    held = record
    for p in parents:
        held = held[p]
    if value is None:
        del held[last]
    else:
        held[last] = value
    with pytest.raises(Untrusted, match=f"reference.json: {named}"):
        checked_reference(record, "reference.json")
    (tmp_path / "reference.json").write_text(json.dumps(record))
    with pytest.raises(run_folder.RunError) as e:  # how a run folder reads it
        run_folder.Run.open(tmp_path)
    assert "\n" not in str(e.value) and f"reference.json: {named}" in str(e.value)
