"""models/sound2scene/nets.py's spectral norm: torch's own on a real device, and on the meta device
(where checkpoint.check_net builds a loaded run's nets to compare shapes) the same state-dict names
and shapes without the power iterations torch runs at registration."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrizations
from torch.utils._python_dispatch import TorchDispatchMode

from s2i_model.models.sound2scene import nets


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _with_torchs_spectral_norm(monkeypatch, make):
    monkeypatch.setattr(nets, "spectral_norm", parametrizations.spectral_norm)
    try:
        return make()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("width", [1 / 16])
def test_meta_nets_have_torchs_names_and_shapes(width, monkeypatch):
    with torch.device("meta"):
        ours = nets.Sound2Scene(width).state_dict()
        torchs = _with_torchs_spectral_norm(monkeypatch, lambda: nets.Sound2Scene(width)).state_dict()
    assert any(k.endswith("parametrizations.weight.0._u") for k in torchs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in torchs.items()}


def test_meta_nets_run_no_power_iteration():
    with torch.device("meta"), _Ops() as ops:
        nets.Generator(nets.feature_size(1 / 16), 1 / 16)
    assert not ops.names & {"mv", "normal_", "linalg_vector_norm", "div"}, ops.names


def test_cpu_nets_are_torchs_to_the_value(monkeypatch):
    torch.manual_seed(3)
    ours = nets.Generator(nets.feature_size(1 / 16), 1 / 16).state_dict()
    torch.manual_seed(3)
    torchs = _with_torchs_spectral_norm(monkeypatch, lambda: nets.Generator(nets.feature_size(1 / 16), 1 / 16)).state_dict()
    assert ours.keys() == torchs.keys()
    for k in ours:
        assert torch.equal(ours[k], torchs[k]), k
