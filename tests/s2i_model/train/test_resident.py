"""Data held on the device gives the streaming loader's batches, key for key and bit for bit."""

from __future__ import annotations

import pytest
import torch

from s2i_model.data import Normalizer, ShardStream, loader
from s2i_model.train.resident import ResidentSplit, interleave, wanted


@pytest.mark.parametrize("workers,batch", [(0, 8), (2, 5), (3, 8)])
def test_epochs_from_memory_are_the_streamed_epochs(tiny_build, workers, batch):
    norm = Normalizer.from_build(tiny_build)
    ds = ShardStream(tiny_build, "train", norm, seed=3, shuffle=True, buffer=7)
    held = ResidentSplit.load(ds, torch.device("cpu"), mel=True, image=True, workers=2)
    assert held.mel.dtype == torch.float32 and held.image.dtype == torch.uint8 and len(held.keys) == 30
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        torch.manual_seed(epoch)
        streamed = list(loader(ds, batch, workers))
        after_stream = torch.rand(3)
        torch.manual_seed(epoch)
        resident = list(held.batches(ds, batch, workers))
        after_resident = torch.rand(3)
        assert [list(b[3]) for b in streamed] == [b[3] for b in resident]
        for (m1, i1, c1, _), (m2, i2, c2, _) in zip(streamed, resident):
            assert torch.equal(m1, m2) and torch.equal(i1, i2) and torch.equal(c1, c2)
        assert torch.equal(after_stream, after_resident)  # the same draws from the global generator


def test_interleave_takes_worker_batches_in_turn():
    per_worker = [list("abcdefg"), list("hij"), [], list("klmnopqrstu")]
    assert interleave(per_worker, 3) == [list("abc"), list("hij"), list("klm"), list("def"), list("nop"),
                                         list("g"), list("qrs"), list("tu")]
    assert interleave(per_worker, 3, drop_last=True) == [list("abc"), list("hij"), list("klm"), list("def"),
                                                         list("nop"), list("qrs")]


def test_auto_holds_a_split_only_when_it_fits(tiny_build):
    said = []
    cpu = torch.device("cpu")
    assert wanted("auto", str(tiny_build), ("train",), cpu, True, True, said.append)
    assert not wanted("off", str(tiny_build), ("train",), cpu, True, True, said.append)
    with pytest.raises(ValueError, match="--data-on-device"):
        wanted("sometimes", str(tiny_build), ("train",), cpu, True, True)
    assert not said
