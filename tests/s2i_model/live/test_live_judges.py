"""The live view's class line from the cross-fitted judges `evaluate` keeps in a run since issue
27 (RUN/judges.pt) when the run has no older frame-classifier.pt: their blurred judges as one
classifier (the mean of the folds' probabilities, checked here against each judge run alone), the
build's class names, and a judges file of other shapes refused in one line."""

from __future__ import annotations

import shutil

import pytest
import torch

from s2i_model import checkpoint
from s2i_model.evaluate.crossfit import cross_fitted
from s2i_model.evaluate.realframe import FrameClassifier
from s2i_model.live.session import LiveError, load_classifier

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


@pytest.fixture(scope="module")
def judged_run(live_run, tiny_build, tmp_path_factory):
    run = tmp_path_factory.mktemp("judged") / "run"
    shutil.copytree(live_run, run)
    (run / "frame-classifier.pt").unlink()
    cross_fitted(tiny_build, "test", len(CLASSES), run / "judges.pt", k=3, epochs=1, log=lambda *_: None)
    return run


def test_the_class_line_is_the_mean_of_the_folds_judges(judged_run):
    clf, names = load_classifier(judged_run, None, None, "cpu")
    assert names == CLASSES  # from the build the judges were fitted on
    torch.manual_seed(0)
    x = torch.rand(6, 3, 96, 96) * 2 - 1
    each = []
    for state in checkpoint.load(judged_run / "judges.pt")["states"]["blurred"]:
        judge = FrameClassifier(len(CLASSES), 4)
        judge.load_state_dict(state)
        each.append(judge.eval()(x).exp())
    with torch.no_grad():
        assert torch.allclose(clf(x).exp(), torch.stack(each).mean(0), atol=1e-6)
        assert torch.allclose(clf(x).exp().sum(1), torch.ones(6), atol=1e-5)


def test_judges_of_other_shapes_are_one_line(judged_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(judged_run, run)
    state = checkpoint.load(run / "judges.pt")
    first = next(k for k, v in state["states"]["blurred"][0].items() if v.is_floating_point())
    state["states"]["blurred"][0][first] = torch.zeros(3)
    torch.save(state, run / "judges.pt")
    with pytest.raises(LiveError, match="judges.pt") as err:
        load_classifier(run, None, None, "cpu")
    assert "\n" not in str(err.value)
