"""The normaliser of every model is made from a build's train log-mel statistics: only from
statistics that passed `untrusted.logmel_stats` (Build.open), never from a NaN, an infinity or
an empty 0.1-99.9 percentile range it would divide by."""

from __future__ import annotations

import json

import pytest

from s2i_data.readers import SampleError
from s2i_model.data import Normalizer
from shardcraft import copy_build


@pytest.mark.parametrize("key, value", [("p99.9", "p0.1"), ("p0.1", float("nan")), ("p99.9", float("inf"))])
def test_the_normaliser_takes_checked_statistics_only(tiny_build, tmp_path, key, value):
    out = copy_build(tiny_build, tmp_path / "shards")
    assert Normalizer.from_build(out).hi > Normalizer.from_build(out).lo
    stats = json.loads((out / "stats.json").read_text())
    tl = stats["train_logmel"]
    tl[key] = tl[value] if isinstance(value, str) else value  # p99.9 = p0.1: a range of zero
    (out / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(SampleError, match=rf"stats\.json: train_logmel.*{key}"):
        Normalizer.from_build(out)
