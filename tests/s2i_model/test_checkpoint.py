"""Checkpoints from other people: never unpickled, damage falls back to the previous good copy."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s2i_model import checkpoint
from s2i_model.train.runtime import rng_state, set_rng_state
from shardcraft import Planted


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "payload": Planted(marker)}, path)


def test_round_trip_with_rng_state_and_previous_copy(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = tmp_path / "run" / "translator.pt"
    checkpoint.save(path, {"epoch": 1, "rng": rng_state(), "config": {"lam": 0.1, "data": "x"}})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.save(path, {"epoch": 2, "rng": rng_state()})
    state = checkpoint.load(path)
    assert state["epoch"] == 2 and checkpoint.load(checkpoint.previous(path))["epoch"] == 1
    first = checkpoint.load(checkpoint.previous(path))
    set_rng_state(first["rng"])  # plain lists and tensors restore every generator
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert not list(path.parent.glob(".*tmp*"))


def test_a_planted_pickle_runs_nothing_and_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "run" / "autoencoder.pt"
    plant(path, marker)
    checkpoint.save(tmp_path / "other.pt", {"epoch": 1})
    with pytest.raises(checkpoint.CheckpointError, match=r"autoencoder\.pt: refused.*posix\.system|autoencoder\.pt: refused"):
        checkpoint.load(path)
    assert not marker.exists()
    # refused even when a readable previous copy is there: tampering is not damage to paper over
    checkpoint.save(checkpoint.previous(path), {"epoch": 0})
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(path)
    assert not marker.exists()


def test_planted_pickle_through_the_cli_is_one_line(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    plant(run / "translator.pt", marker)
    plant(run / "autoencoder.pt", marker)
    wav = tmp_path / "x.wav"
    soundfile.write(wav, np.random.default_rng(0).uniform(-0.5, 0.5, 24000), 16000)
    for args in (["evaluate", "--run", str(run)], ["imagine", str(wav), "--run", str(run)]):
        r = subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True)
        err = r.stderr.strip()
        assert r.returncode != 0 and ".pt: refused" in err, err
        assert "Traceback" not in err and "internal error" not in err and len(err.splitlines()) == 1, err
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    path = tmp_path / "translator.pt"
    checkpoint.save(path, {"epoch": 1, "w": torch.arange(1000.0)})
    checkpoint.save(path, {"epoch": 2, "w": torch.arange(1000.0)})
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint\n" * 9}[damage])
    said = []
    state = checkpoint.load(path, log=said.append)
    assert state["epoch"] == 1
    assert len(said) == 1 and "translator.pt" in said[0] and "translator.prev.pt" in said[0]
    # without the previous copy: one line naming the file and what to do
    checkpoint.previous(path).unlink()
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load(path)
    assert str(e.value).startswith(str(path)) and "delete it" in str(e.value) and "\n" not in str(e.value)


def test_a_save_killed_between_its_renames_resumes_from_the_previous(tmp_path):
    path = tmp_path / "autoencoder.pt"
    checkpoint.save(path, {"epoch": 3})
    os.replace(path, checkpoint.previous(path))  # the first rename happened, the second did not
    said = []
    assert checkpoint.load(path, log=said.append)["epoch"] == 3 and "missing" in said[0]


def test_stray_temporary_files_are_removed_but_a_live_save_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = tmp_path / f".translator.pt.tmp-{dead.pid}"
    live = tmp_path / f".translator.pt.tmp-{os.getppid()}"
    stray.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    assert checkpoint.remove_stray(tmp_path) == [stray]
    assert not stray.exists() and live.exists()


def test_a_checkpoint_written_before_this_format_still_loads(tmp_path):
    """Older runs stored numpy's RNG state as an array: a plain uint32 array is let in, nothing else."""
    path = tmp_path / "autoencoder.pt"
    np.random.seed(5)
    old = {"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    torch.save(old, path)
    expected = np.random.rand()
    set_rng_state(checkpoint.load(path)["rng"])
    assert np.random.rand() == expected
    # an object array would unpickle its items: still refused
    torch.save({"x": np.array([Planted(tmp_path / "pwned")], dtype=object)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_holding_no_dict_is_refused(tmp_path):
    path = tmp_path / "translator.pt"
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(checkpoint.CheckpointError, match="not an s2i checkpoint"):
        checkpoint.load(path)
