"""The drop-stale scheduler on a real tiny run: a live source never queues more than the newest
window, a file makes every window; quiet windows and the confidence gate."""

from __future__ import annotations

import numpy as np
import pytest

from s2i_model.live import loop
from s2i_model.live.session import load_classifier
from s2i_model.live.sources import ArraySource
from s2i_model.live.window import Windower
from s2i_model.run import load_model

from conftest import SR, sound  # tests/s2i_model/live/conftest.py


@pytest.fixture(scope="module")
def model(live_run):
    return load_model(live_run, "cpu")


def results(model, source, hop=0.1, **kw):
    got = []
    summary = loop.run(source, Windower(1.0, SR, hop), loop.Imaginer(model, **kw), on_result=got.append)
    return summary, got


def test_a_live_source_drops_stale_windows_and_counts_them(model):
    # Sound that arrives a second at a time: each chunk completes ten windows at once, and only
    # the newest of those waiting is worth a picture.
    audio = sound(4.0)
    summary, got = results(model, ArraySource(audio, SR, realtime=True, chunk_s=1.0))
    assert summary.error is None and summary.windows == len(got) == 31  # ends 1.0, 1.1, ..., 4.0
    assert [r.window.index for r in got] == list(range(31))  # every window accounted for, in order
    assert summary.dropped == sum(r.dropped for r in got) >= 15
    assert summary.made == 31 - summary.dropped >= 3  # at least the newest of each burst (the last two come together)
    made = [r for r in got if not r.dropped]
    assert all(r.latency_ms is not None and 0 <= r.latency_ms < 60_000 for r in made)
    assert all(r.latency_ms is None and r.png == [] for r in got if r.dropped)
    assert not got[-1].dropped  # the end of the input is never stale


def test_a_file_makes_every_window(model):
    summary, got = results(model, ArraySource(sound(4.0), SR, realtime=False, chunk_s=1.0), hop=0.25, n=2)
    assert summary.dropped == 0 and summary.made == summary.windows == 13  # ends 1.0, 1.25, ..., 4.0
    assert all(r.pictures.shape == (2, 96, 96, 3) and len(r.png) == 2 for r in got)
    assert not np.array_equal(got[0].pictures[0], got[0].pictures[1])  # test-time dropout: two pictures


def test_quiet_windows_have_no_pictures(model):
    audio = np.concatenate([np.zeros(2 * SR, np.float32), sound(2.0)])
    _, got = results(model, ArraySource(audio, SR), hop=0.5)
    assert [r.quiet for r in got] == [True, True, True, False, False, False, False]  # ends 1.0 ... 4.0; sound from 2.0
    assert all(r.pictures is None and not r.shown for r in got[:3])


def test_class_line_and_confidence_gate(model, live_run):
    clf, names = load_classifier(live_run, None, model, model.device)
    assert names == ["baby", "dog", "rail", "fireworks", "water"]  # from the build the classifier learnt
    _, got = results(model, ArraySource(sound(2.0), SR), hop=0.5, classifier=clf, class_names=names, gate=0.0)
    assert all(r.label in names and 0 < r.confidence <= 1 and r.shown for r in got)
    _, gated = results(model, ArraySource(sound(2.0), SR), hop=0.5, classifier=clf, class_names=names, gate=1.01)
    assert all(r.label in names and not r.shown for r in gated)  # no confidence clears 1.01


def test_class_line_from_informativity_judges(model, tmp_path):
    # Judges in the file format train-informativity writes (untrained: which class wins does not
    # matter here, that the line comes from the judges of the classes that have one does).
    import torch

    from s2i_model import checkpoint
    from s2i_model.evaluate.informativity import FILE
    from s2i_model.live.session import load_judges
    from s2i_model.nets import InformativityClassifier

    torch.manual_seed(0)
    checkpoint.save(tmp_path / FILE, {"classes": ["baby", "dog", "rail"],
                                      "judges": {c: InformativityClassifier(2).state_dict() for c in ("baby", "rail")},
                                      "report": {}})
    scores, names = load_judges(str(tmp_path), model.device)
    assert names == ["baby", "rail"]  # dog had too few labels for a judge
    _, got = results(model, ArraySource(sound(2.0), SR), hop=0.5, classifier=scores, class_names=names, gate=0.0)
    assert all(r.label in names and 0 < r.confidence < 1 for r in got)


def test_any_model_a_run_holds(tiny_build, tmp_path):
    # A comparison model's run folder (AIVAE, one epoch) serves live as an S2I run does.
    from s2i_model.models.aivae.train import train_aivae
    from s2i_model.models.aivae.config import AivaeConfig

    run = tmp_path / "aivae"
    train_aivae(AivaeConfig(data=str(tiny_build), run=str(run), width=0.0625, batch_size=8, workers=0, epochs=1,
                            grid_every=1, grid_images=2), log=lambda *_: None)
    vae = load_model(run, "cpu")
    summary, got = results(vae, ArraySource(sound(2.0), SR), hop=0.5, n=2)
    assert summary.made == 3 and all(r.pictures.shape == (2, 96, 96, 3) for r in got)


def test_the_default_gate_is_twice_chance(live_run, talk_and_silence):
    from s2i_model.live.session import LiveOptions, prepare

    _, imaginer, _, _ = prepare(LiveOptions(run=str(live_run), input=str(talk_and_silence)))
    assert imaginer.class_names == ["baby", "dog", "rail", "fireworks", "water"] and imaginer.gate == pytest.approx(0.4)
    _, imaginer, _, _ = prepare(LiveOptions(run=str(live_run), input=str(talk_and_silence), gate=0.7))
    assert imaginer.gate == 0.7
