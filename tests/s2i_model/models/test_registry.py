"""The model registry (s2i_model/models/__init__.py): the five built-in models by name, each the
same model the old hand-written lists named; what a registration must be; an outside package's
entry point that is broken costs one line, never the other models."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2i_model import models
from s2i_model.config import Runtime


def test_builtin_models_by_name():
    assert models.names() == ["s2i", "aivae", "aivaegan", "mmgan", "sound2scene"]
    files = {n: models.get(n).checkpoint for n in models.names()}
    # the file names every run folder trained before the registry holds (old runs must still load)
    assert files == {"s2i": "translator.pt", "aivae": "aivae.pt", "aivaegan": "aivaegan.pt", "mmgan": "mmgan.pt",
                     "sound2scene": "sound2scene.pt"}
    assert [s.name for s in models.get("s2i").stages] == ["autoencoder", "translator"]
    assert models.get("mmgan").labels_used == "class labels"
    assert [n for n in models.names() if models.get(n).retrieval_space] == ["s2i", "sound2scene"]
    assert models.names(include_references=True)[-6:] == ["chance", "lookup", "nearest-sound", "nearest-image",
                                                          "shuffled", "real"]


def test_presets_are_the_settings_the_makefile_used():
    """The cpu preset of S2I is make demo's run (issue 11's command) at the comparison's equal budget
    (issue 27: 10 + 50 epochs); make demo keeps its 40 + 240 by naming them."""
    cpu = models.get("s2i").preset("cpu")
    assert cpu["autoencoder"] == {"emb": 128, "width": 0.0625, "epochs": 10, "batch_size": 16, "optimizer": "adam",
                                  "workers": 2}
    assert cpu["translator"] == {"epochs": 50, "batch_size": 16, "optimizer": "adam", "lam": 0.1, "workers": 2}
    demo = (Path(__file__).parents[3] / "Makefile").read_text().split("\ndemo:")[1].split("\n\n")[0]
    assert "--model s2i --preset cpu --autoencoder-epochs 40 --translator-epochs 240" in demo
    assert models.get("aivaegan").preset("cpu")["aivaegan"]["lr_d"] == 1e-3
    assert models.get("aivae").preset("paper") == {"aivae": {}}  # the config's own defaults
    with pytest.raises(models.RegistryError, match="no preset 'fast'"):
        models.get("aivae").preset("fast")


@dataclasses.dataclass
class _Cfg(Runtime):
    data: str = ""
    run: str = ""
    size: int = 3


@dataclasses.dataclass
class _Odd(Runtime):
    data: str = ""
    run: str = ""
    sizes: list = dataclasses.field(default_factory=list)


def _spec(**kw) -> models.ModelSpec:
    base = dict(name="mine", title="t", paper="p", labels_used="none", checkpoint="mine.pt", load="x:y",
                stages=(models.Stage("mine", _Cfg, "x:train"),))
    return models.ModelSpec(**{**base, **kw})


@pytest.mark.parametrize("bad, message", [
    (dict(name="../up"), "not a lower-case name"),
    (dict(name="S2I"), "not a lower-case name"),
    (dict(checkpoint="../escape.pt"), "not a file name in the run folder"),
    (dict(checkpoint=".lock"), "not a file name in the run folder"),
    (dict(presets={"cpu": {"mine": {"sizes": 4}}}), "lacks"),
    (dict(stages=(models.Stage("mine", _Odd, "x:train"),)), "are not int, float, str or bool"),
])
def test_a_registration_that_is_not_usable_is_refused(bad, message):
    with pytest.raises(models.RegistryError, match=message):
        models.register(_spec(**bad))


def test_a_taken_name_is_refused():
    with pytest.raises(models.RegistryError, match="registered already"):
        models.register(_spec(name="s2i"))
    with pytest.raises(models.RegistryError, match="not a model name"):
        models.get("../s2i")


def _broken_package(tmp_path: Path) -> Path:
    """A dist-info on the path whose entry point names a module that does not exist."""
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[s2i.models]\nbroken = no_such_module_here:MODEL\n")
    return tmp_path


def test_a_broken_outside_model_is_one_line(tmp_path, tiny_build):
    env = {**os.environ, "PYTHONPATH": str(_broken_package(tmp_path))}
    listed = subprocess.run([sys.executable, "-m", "s2i_model.cli", "models"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "broken" in listed.stdout and "cannot be loaded" in listed.stdout
    assert "s2i" in listed.stdout and "sound2scene" in listed.stdout  # the others are still there
    done = subprocess.run([sys.executable, "-m", "s2i_model.cli", "compare", "--data", str(tiny_build), "--runs",
                           str(tmp_path / "runs"), "--models", "s2i,broken", "--preset", "test"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    assert "model 'broken' (no_such_module_here:MODEL) cannot be loaded: ModuleNotFoundError" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "s2i").exists()  # refused before anything trained
