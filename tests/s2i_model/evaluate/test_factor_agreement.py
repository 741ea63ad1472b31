"""Factor agreement (issue 28) against answers known in advance.

- `spearman` is scipy's ``spearmanr`` (ties averaged), and 0.0, never NaN, for constant values;
- a factor reader trained on frames drawn here with a known factor (a disc's radius, a count of
  dots) reads it back from frames it never saw;
- the readers of a build learn from its train frames only (no test frame is ever read), report
  their quality on the val frames, are the same for the same seed and are cached as tensors;
- `measure` with readers that read perfectly (`factorbuild.oracle`, pixels counted): the real frames
  score ρ ≈ 1 and every count right; the class-mean lookup scores exactly 0 (one picture per class);
  the shuffled row shows each sound another video of its class and fold, and scores what the
  truth of those other videos correlates with the sound's (small), not the real row's.

The build (`factorbuild`) is made of videos drawn here whose every factor can be read off a frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2i_data.factors import COUNT, Factor
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.data import Normalizer, ShardStream
from s2i_model.evaluate import factors as fe
from s2i_model.evaluate.crossfit import BLURS, CrossFitted, video_folds
from s2i_model.evaluate.evaluation import measure, picture_maker
from s2i_model.evaluate.realframe import FrameClassifier
from s2i_model.evaluate.reference import ClassMeanLookup, RealFrames, ShuffledFrames

import factorbuild as fb


@pytest.fixture(scope="session")
def factor_build(tmp_path_factory) -> Build:
    return Build.open(str(fb.factor_build_at(tmp_path_factory.getbasetemp())))


# ---- Spearman ---------------------------------------------------------------------------------------

def test_spearman_is_scipys_with_ties_and_zero_when_constant():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 50):
        for _ in range(20):
            x = rng.integers(0, 5, n).astype(float)  # many ties
            y = x + rng.normal(0, 2, n)
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                continue
            assert fe.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    # by hand: ranks [1, 2, 3] and [1.5, 1.5, 3], centred [-1, 0, 1] and [-.5, -.5, 1]: 1.5 / (√2 √1.5) = √3/2
    assert fe.spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(np.sqrt(3) / 2, abs=1e-12)
    assert fe.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0, abs=1e-12)
    # constant reads or truth, one pair, none: 0.0 (scipy says NaN)
    assert fe.spearman([0.3, 0.3, 0.3], [1, 2, 3]) == 0.0
    assert fe.spearman([1, 2, 3], [7, 7, 7]) == 0.0
    assert fe.spearman([1], [2]) == 0.0 and fe.spearman([], []) == 0.0
    with pytest.raises(ValueError):
        fe.spearman([1, np.nan], [1, 2])


# ---- a reader learns a factor it can see ------------------------------------------------------------

def drawn(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """n uint8 frames [n, 3, 96, 96]: on a ground of a random dark colour, a disc of radius
    8 + 28 u (u uniform, a random bright colour, anywhere it fits) and k ∈ {1, 2, 3} small dots in
    a row along the bottom; and u, k."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96]
    u, k = rng.uniform(0, 1, n), rng.integers(1, 4, n)
    out = np.empty((n, 96, 96, 3), np.uint8)
    for i in range(n):
        out[i] = rng.integers(0, 70, 3)
        r = 8 + 22 * u[i]
        cy, cx = rng.uniform(r + 1, 70 - r), rng.uniform(r + 1, 94 - r)
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(150, 256, 3)
        for j in range(k[i]):
            out[i][(yy - 84) ** 2 + (xx - 16 - 30 * j) ** 2 <= 25] = (255, 255, 255)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), u, k.astype(float)


def test_a_reader_reads_back_the_factors_of_frames_it_never_saw():
    size, count = Factor("disc_size", "x", "continuous", 0.0, 1.0, "", ""), Factor("dots", "x", COUNT, 1, 3, "", "")
    x, u, k = drawn(480, seed=0)
    targets = torch.from_numpy(np.stack([fe.to_unit(u, size), fe.to_unit(k, count)], 1)).float()
    net = fe.train_reader(x, targets)
    held, hu, hk = drawn(120, seed=1)
    reads = fe.FactorReaders([size, count], ["x"], {"x": net}, {}).read(held.float().div(127.5).sub(1),
                                                                       torch.zeros(120, dtype=torch.long)).numpy()
    assert fe.spearman(hu, reads[:, 0]) >= 0.8, fe.spearman(hu, reads[:, 0])
    assert fe.spearman(hk, reads[:, 1]) >= 0.8, fe.spearman(hk, reads[:, 1])
    assert (np.clip(np.round(reads[:, 1]), 1, 3) == hk).mean() >= 0.8
    # reads are in each factor's units: u within [0, 1], a count within [1, 3] (unrounded)
    assert 0 <= reads[:, 0].min() and reads[:, 0].max() <= 1 and 1 <= reads[:, 1].min() and reads[:, 1].max() <= 3


def test_a_reader_is_the_ridge_solution():
    """The fitted weights solve the ridge normal equations, computed here with numpy's lstsq on the
    stacked system [X; sqrt(alpha N) I] w = [y - mean; 0]."""
    x, u, _ = drawn(40, seed=2)
    y = torch.from_numpy(u[:, None]).float()
    net = fe.train_reader(x, y, alpha=0.5)
    f = fe.image_features(x.float().div(127.5).sub(1.0)).numpy()
    z = (f - f.mean(0)) / (f.std(0) + 1e-6)
    a = np.vstack([z, np.sqrt(0.5 * len(z)) * np.eye(z.shape[1])])
    b = np.concatenate([u - u.mean(), np.zeros(z.shape[1])])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    assert np.allclose(net.weight.numpy()[:, 0], w, atol=1e-6)
    assert np.isclose(net.bias.item(), u.mean())
    assert all(torch.equal(v, fe.train_reader(x, y, alpha=0.5).state_dict()[k]) for k, v in net.state_dict().items())


# ---- the build's readers: train frames only, val quality, the cache ----------------------------------

def test_readers_learn_from_the_train_frames_only_and_are_checked_on_the_val_frames(factor_build, monkeypatch):
    asked = []
    frames = fe._frames

    def spy(build, split):
        asked.append(split)
        return frames(build, split)

    monkeypatch.setattr(fe, "_frames", spy)
    states, record = fe.fit(factor_build, factor_build.factors, log=lambda m: None)
    assert sorted(asked) == ["train", "val"]  # no test frame is ever read
    m = factor_build.manifest()
    assert set(states) == {"baby", "fireworks"}
    for f in factor_build.factors:
        q = record["per_factor"][f.name]
        assert q["train_frames"] == int(((m["split"] == "train") & (m["class"] == f.cls)).sum()) > 0
        assert q["val_frames"] == int(((m["split"] == "val") & (m["class"] == f.cls)).sum()) > 0
        assert -1 <= q["val_spearman"] <= 1 and q["class"] == f.cls and q["kind"] == f.kind
        assert ("val_accuracy" in q) == (f.kind == COUNT)
    assert "train split" in record["trained_on"] and "val split" in record["checked_on"]


def test_readers_are_kept_as_tensors_and_a_cache_of_other_shapes_is_fitted_again(factor_build, tmp_path, monkeypatch,
                                                                                 capsys):
    cache = tmp_path / fe.FILE
    first = fe.factor_readers(factor_build, factor_build.factors, cache, log=lambda m: None)
    stored = torch.load(cache, weights_only=True)  # tensors and plain data only
    assert set(stored["states"]) == {"baby", "fireworks"} and stored["ident"]["alpha"] == fe.ALPHA

    def refit(*a, **k):
        raise AssertionError("fitted again")

    with monkeypatch.context() as mp:
        mp.setattr(fe, "fit", refit)
        again = fe.factor_readers(factor_build, factor_build.factors, cache, log=lambda m: None)
    for cls, net in first.nets.items():
        for key, v in net.state_dict().items():
            assert torch.equal(v, again.nets[cls].state_dict()[key]), (cls, key)
    assert again.record == first.record

    # a cache whose tensors have other shapes (edited, or not ours): a warning, then fitted again
    stored["states"]["baby"]["head.3.weight"] = torch.zeros(5, 32)
    checkpoint.save(cache, stored)
    fitted = []
    real_fit = fe.fit
    monkeypatch.setattr(fe, "fit", lambda *a, **k: fitted.append(1) or real_fit(*a, **k))
    fe.factor_readers(factor_build, factor_build.factors, cache, log=lambda m: None)
    assert fitted and "fitting the factor readers again" in capsys.readouterr().err
    # other settings (alpha): fitted again, and the cache now holds those
    fitted.clear()
    fe.factor_readers(factor_build, factor_build.factors, cache, alpha=2.0, log=lambda m: None)
    assert fitted and torch.load(cache, weights_only=True)["ident"]["alpha"] == 2.0


# ---- factor agreement on readers that read perfectly --------------------------------------------------

class Oracle(torch.nn.Module):
    """Reads ``cls``'s factors off each frame's pixels (`factorbuild.oracle`), scaled to [0, 1]."""

    def __init__(self, cls: str, factors) -> None:
        super().__init__()
        self.cls, self.factors = cls, [f for f in factors if f.cls == cls]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [fb.oracle(img.numpy(), self.cls) for img in x.cpu()]
        return torch.tensor([[fe.to_unit(r[f.name], f) for f in self.factors] for r in rows])


@pytest.fixture(scope="module")
def oracle(factor_build):
    return fe.FactorReaders(factor_build.factors, factor_build.classes,
                            {c: Oracle(c, factor_build.factors) for c in ("baby", "fireworks")}, {"per_factor": {}})


@pytest.fixture(scope="module")
def judge(factor_build) -> CrossFitted:
    """Three folds of untrained judges over the test videos (their class calls do not matter here;
    their folds do: the shuffled row stays within them)."""
    m = factor_build.manifest()
    test = m[m["split"] == "test"]
    torch.manual_seed(0)
    nets = {name: [FrameClassifier(2, blur).eval() for _ in range(3)] for name, blur in BLURS.items()}
    return CrossFitted(nets, dict(zip(test["key"], test["video_id"])),
                       video_folds(dict(zip(test["video_id"], test["class_index"])), 3), {})


def measured(maker, build: Build, judge, readers, samples: int = 2) -> dict:
    return measure(maker, build, "test", judge, build.classes, samples, Normalizer.from_build(build), "cpu",
                   batch_sounds=16, readers=readers)


def truth_of_test(build: Build) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The test sounds' keys in stream order, classes, and true factor values, read here."""
    keys = [key for *_, key in ShardStream(build, "test", Normalizer.from_build(build), shuffle=False)]
    m = build.manifest().set_index("key").loc[keys]
    return keys, m["class"].to_numpy(), m[[f.column for f in build.factors]].to_numpy(np.float64)


def test_the_real_frames_carry_every_factor(factor_build, oracle, judge):
    m = measured(lambda mels, frames: frames.repeat_interleave(2, 0), factor_build, judge, oracle)
    keys, cls, true = truth_of_test(factor_build)
    block = m["factors"]
    assert list(block["per_factor"]) == [f.name for f in factor_build.factors]
    for j, f in enumerate(factor_build.factors):
        got = block["per_factor"][f.name]
        assert got["class"] == f.cls and got["kind"] == f.kind and got["sounds"] == int((cls == f.cls).sum())
        assert got["spearman"] >= 0.99, (f.name, got)
        lo, hi = got["interval"]  # a bootstrap of videos: ties from repeats pull ρ ≈ 1 below the point
        assert 0.95 <= lo <= hi <= 1.0, (f.name, got)
        if f.kind == COUNT:
            assert got["accuracy"] == 1.0
    assert block["mean"] == pytest.approx(np.mean([e["spearman"] for e in block["per_factor"].values()]), abs=1e-12)
    reps = m["replicates"]["factors"]
    assert len(reps["mean"]) == len(m["replicates"]["mean"]["class_agreement"]) == 200
    assert 0.95 <= block["interval"][0] <= block["interval"][1] <= 1.0
    # without readers: no factors at all (a build without factors measures as before)
    plain = measured(lambda mels, frames: frames.repeat_interleave(2, 0), factor_build, judge, None)
    assert "factors" not in plain and "factors" not in plain["replicates"]
    assert plain["mean"] == m["mean"]


def test_the_class_mean_lookup_scores_zero(factor_build, oracle, judge):
    lookup = ClassMeanLookup.load(factor_build)
    keys, cls, _ = truth_of_test(factor_build)
    mels = torch.stack([mel for mel, *_ in ShardStream(
        factor_build, "test", lookup.norm, shuffle=False)])
    names = np.array(factor_build.classes)[lookup.sound_classes(mels).numpy()]
    assert (names == cls).all()  # the premise: its sound classifier names every test sound's class
    m = measured(picture_maker(lookup, 2), factor_build, judge, oracle)
    for f in factor_build.factors:
        got = m["factors"]["per_factor"][f.name]
        assert got["spearman"] == 0.0 and got["interval"] == [0.0, 0.0], (f.name, got)  # constant reads
    assert m["factors"]["mean"] == 0.0
    assert m["mean"]["class_agreement"] is not None  # measured like any row


def test_the_shuffled_row_shows_another_video_of_the_class_and_fold(factor_build, oracle, judge):
    shuffled = ShuffledFrames(factor_build, Normalizer.from_build(factor_build), torch.device("cpu"),
                              factor_build.record())
    keys, cls, true = truth_of_test(factor_build)
    m = factor_build.manifest().set_index("key")
    video = m["video_id"].to_dict()
    partner = shuffled.partners("test", judge.fold_of_video)
    assert set(partner) == set(keys)
    moved = {video[k]: video[p] for k, p in partner.items()}
    assert all(v != w for v, w in moved.items())  # a derangement: no video keeps its frames
    assert sorted(moved.values()) == sorted(moved)  # ... and every video stands in for exactly one
    for k, p in partner.items():
        assert m.loc[p, "class"] == m.loc[k, "class"] and m.loc[p, "split"] == "test"
        assert judge.fold_of_video[video[p]] == judge.fold_of_video[video[k]]

    got = measured(picture_maker(shuffled, 2, fold_of_video=judge.fold_of_video), factor_build, judge, oracle)
    # what it must score: the truth of the sounds against the truth of the videos they are shown
    # (read off the frames by a perfect reader), class by class
    index = {k: i for i, k in enumerate(keys)}
    theirs = true[[index[partner[k]] for k in keys]]
    for j, f in enumerate(factor_build.factors):
        mine = cls == f.cls
        want = fe.spearman(true[mine, j], theirs[mine, j])
        rho = got["factors"]["per_factor"][f.name]["spearman"]
        assert rho == pytest.approx(want, abs=0.03), (f.name, rho, want)
        assert abs(rho) < 0.45, (f.name, rho)  # unrelated videos: near 0 (32 videos a class)
    assert abs(got["factors"]["mean"]) < 0.2, got["factors"]["mean"]
    # its pictures are real frames of the class: frame by frame those of the partner's sample
    frames = shuffled.pictures_of_keys(keys[:3], 1, judge.fold_of_video)
    real = {k: img for _, img, _, k in ShardStream(
        factor_build, "test", Normalizer.from_build(factor_build), shuffle=False)}
    for k, pic in zip(keys[:3], frames):
        assert torch.allclose(pic, real[partner[k]], atol=1 / 127.5)
