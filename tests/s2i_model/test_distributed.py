"""DDP: shards dealt to ranks and workers without overlap and in equal measure, and real
torchrun runs (gloo, 2 CPU processes) that log once, resume, and learn like one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from s2i_model import checkpoint
from s2i_model.data import Normalizer, ShardStream


def keys_of_rank(data: Path, rank: int, world: int, workers: int, epoch: int) -> list[str]:
    ds = ShardStream(data, "train", Normalizer.from_build(data), seed=0, rank=rank, world=world, buffer=4)
    ds.set_epoch(epoch)
    batches = DataLoader(ds, batch_size=4, num_workers=workers)
    return [k for _, _, _, keys in batches for k in keys], [len(keys) for _, _, _, keys in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_get_disjoint_equal_shares(tiny_build, workers):
    everything, _ = keys_of_rank(tiny_build, 0, 1, workers, 0)
    for epoch in (0, 1):
        seen = [keys_of_rank(tiny_build, r, 2, workers, epoch) for r in (0, 1)]
        (k0, b0), (k1, b1) = seen
        assert len(k0) == len(k1) > 0 and b0 == b1  # same steps with the same batch sizes: DDP stays in step
        assert not set(k0) & set(k1) and len(set(k0)) == len(k0)  # nobody sees a sample twice
        assert set(k0) | set(k1) <= set(everything)
        assert len(k0) + len(k1) >= 0.7 * len(everything)  # only a few sit the epoch out


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "s2i_model.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def train(nproc: int, data: Path, run: Path, ae_epochs: int, gan_epochs: int) -> None:
    common = ["--data", data, "--run-dir", run, "--batch-size", 8, "--workers", 1, "--device", "cpu",
              "--optimizer", "adam"]
    if ae_epochs:
        res = torchrun(nproc, "train-autoencoder", *common, "--emb", 128, "--width", 0.0625, "--epochs", ae_epochs)
        assert res.returncode == 0, res.stderr[-3000:]
    res = torchrun(nproc, "train-translator", *common, "--epochs", gan_epochs, "--n-gd", 2, "--grid-every", 1)
    assert res.returncode == 0, res.stderr[-3000:]


def rows(run: Path, stage: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


@pytest.fixture(scope="module")
def runs(tiny_build, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    train(2, tiny_build, root / "ddp", 3, 3)
    train(1, tiny_build, root / "single", 3, 3)
    return {"ddp": root / "ddp", "single": root / "single"}


def test_ddp_logs_once_and_counts_every_rank(runs, tiny_build):
    ddp, single = runs["ddp"], runs["single"]
    assert [r["epoch"] for r in rows(ddp, "autoencoder")] == [1, 2, 3]  # rank 0 alone writes
    assert [r["epoch"] for r in rows(ddp, "translator")] == [1, 2, 3]
    for stage in ("autoencoder", "translator"):
        n_ddp = [r["samples"] for r in rows(ddp, stage)]
        n_one = [r["samples"] for r in rows(single, stage)]
        assert all(n % 2 == 0 and 0.7 * m <= n <= m for n, m in zip(n_ddp, n_one)), (n_ddp, n_one)
    # the discriminator keeps its schedule: every n_gd = 2 global steps, as in one process
    g = rows(ddp, "translator")
    state = checkpoint.load(ddp / "translator.pt")
    assert sum(r["d_updates"] for r in g) == state["g_steps"] // 2
    assert len(state["rng"]) == 2  # one RNG state per rank
    assert sorted(p.name for p in (ddp / "grids").glob("*.png")) == [f"epoch-0000{i}.png" for i in (1, 2, 3)]


def test_ddp_learns_like_one_process(runs):
    for stage, key in (("autoencoder", "train_loss"), ("translator", "pixel_loss")):
        a = [r[key] for r in rows(runs["ddp"], stage)]
        b = [r[key] for r in rows(runs["single"], stage)]
        assert a[-1] < a[0] and b[-1] < b[0], (stage, a, b)  # both go down
        assert all(abs(x - y) <= 0.25 * y for x, y in zip(a, b)), (stage, a, b)  # and stay close


def test_ddp_resume_reaches_the_uninterrupted_state(runs, tiny_build, tmp_path):
    run = tmp_path / "resumed"
    run.mkdir()
    for f in ("autoencoder.pt", "autoencoder.json"):  # the same finished stage 1
        shutil.copy(runs["ddp"] / f, run / f)
    train(2, tiny_build, run, 0, 2)  # "killed" after translator epoch 2
    train(2, tiny_build, run, 0, 3)
    a, b = checkpoint.load(runs["ddp"] / "translator.pt"), checkpoint.load(run / "translator.pt")
    assert all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])
    assert a["adv_history"] == b["adv_history"]
