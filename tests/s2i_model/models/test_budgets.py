"""Training budgets (issue 27, docs/models.md "Budgets"): a preset's budget is the passes over the
train split it trains, every stage and phase summed (`ModelSpec.passes`); the built-in models' cpu
presets give them all the same number, and that number is what a real training's metrics rows say
it drew (the sum of their ``samples`` over the train split's size)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from s2i_model import models
from s2i_model.config import Runtime
from s2i_model.train.entry import train_model


def test_every_builtin_model_trains_the_same_passes_at_cpu():
    budgets = {n: models.get(n).passes("cpu") for n in models.BUILTIN}
    assert len(set(budgets.values())) == 1, budgets
    # every preset states a budget for every phase (an epoch field the registry does not know fails here)
    for name in models.BUILTIN:
        spec = models.get(name)
        for preset in models.PRESETS:
            phases = spec.phase_passes(preset)
            assert sum(phases.values()) == spec.passes(preset) and all(v >= 1 for v in phases.values())
        assert spec.passes("test") <= 5  # the test presets stay tiny (S2I's 1 + 4: a learning curve's four points)


@dataclasses.dataclass
class _Cfg(Runtime):  # a config with no epochs field
    data: str = ""
    run: str = ""
    size: int = 3


def _spec(*fields) -> models.ModelSpec:
    stage = models.Stage("mine", _Cfg, "x:train", epoch_fields=fields or None)
    return models.ModelSpec(name="mine", title="t", paper="p", labels_used="none", checkpoint="mine.pt", load="x:y",
                            stages=(stage,))


def test_a_stage_without_epochs_states_no_budget_and_a_wrong_field_is_refused():
    with pytest.raises(models.RegistryError, match="names no epoch fields"):
        _spec().passes("paper")
    with pytest.raises(models.RegistryError, match="epoch_fields .* are not int fields"):
        models.register(_spec("data"))
    assert _spec("size").passes("paper") == 3


def _train_size(build: Path) -> int:
    """The train split's size, read from the build's own stats (not through the registry or a trainer)."""
    return sum(json.loads((build / "stats.json").read_text())["counts"]["train"].values())


@pytest.mark.parametrize("name", models.BUILTIN)
def test_passes_are_what_a_training_draws(name, tiny_build, tmp_path):
    spec = models.get(name)
    run = tmp_path / name
    train_model(spec, str(tiny_build), str(run), "test", log=lambda *_: None)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    n = _train_size(tiny_build)
    # the phases in the order the rows were written (each trainer's own stage names), their samples
    phases: dict[str, list[int]] = {}
    for r in rows:
        phases.setdefault(r["stage"], []).append(r["samples"])
    expected = list(spec.phase_passes("test").values())
    # a phase's epoch may draw up to a batch less (a last batch of one is skipped) or more (IC-GAN's
    # whole G steps): within a batch of a pass, so each phase's samples / n rounds to its epochs
    assert [round(sum(s) / n) for s in phases.values()] == expected, (phases, n)
    assert [len(s) for s in phases.values()] == expected  # one row an epoch
    assert round(sum(r["samples"] for r in rows) / n) == spec.passes("test")
