"""DDP: shards dealt to ranks and workers without overlap and in equal measure, and real
torchrun runs (gloo, 2 CPU processes) that log once, log the losses of both ranks combined,
resume to the very state of an uninterrupted run, and learn."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from s2i_model import checkpoint
from s2i_model.data import Normalizer, ShardStream

from runfolders import same_autoencoder


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


# Run under torchrun instead of `-m s2i_model.cli`: the same CLI, with every call to
# `distributed.all_sum` (once an epoch: the sums a rank logs, summed over ranks) written down by
# each rank, what went in and what came out. Only observed: the real all_sum does the work.
PROBE = """
import json, os, sys

from s2i_model.train import distributed

_all_sum = distributed.all_sum


def all_sum(d, values):
    out = _all_sum(d, values)
    with open(os.path.join(os.environ["S2I_TEST_ALL_SUM"], f"rank{d.rank}.jsonl"), "a") as f:
        f.write(json.dumps({"world": d.world, "in": list(values), "out": list(out)}) + "\\n")
    return out


distributed.all_sum = all_sum
from s2i_model.cli import main

sys.argv[0] = "s2i-model"
main()
"""


def torchrun(nproc: int, *args: str, probe: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    target = ["-m", "s2i_model.cli"]
    if probe is not None:
        probe.mkdir(parents=True)
        (probe / "run.py").write_text(PROBE)
        env["S2I_TEST_ALL_SUM"] = str(probe)
        target = [str(probe / "run.py")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *target, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def train(nproc: int, data: Path, run: Path, ae_epochs: int, gan_epochs: int, probe: Path | None = None) -> str:
    """Both stages under torchrun; the translator's log (stderr)."""
    common = ["--data", data, "--run-dir", run, "--batch-size", 8, "--workers", 1, "--device", "cpu",
              "--optimizer", "adam"]
    if ae_epochs:
        res = torchrun(nproc, "train-autoencoder", *common, "--emb", 128, "--width", 0.0625, "--epochs", ae_epochs,
                       probe=probe / "autoencoder" if probe else None)
        assert res.returncode == 0, res.stderr[-3000:]
    res = torchrun(nproc, "train-translator", *common, "--epochs", gan_epochs, "--n-gd", 2, "--grid-every", 1,
                   probe=probe / "translator" if probe else None)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


def rows(run: Path, stage: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


@pytest.fixture(scope="module")
def runs(tiny_build, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    (root / "ddp.log").write_text(train(2, tiny_build, root / "ddp", 3, 3, probe=root / "all_sum"))
    (root / "single.log").write_text(train(1, tiny_build, root / "single", 3, 3))
    return {"ddp": root / "ddp", "single": root / "single", "all_sum": root / "all_sum",
            "ddp_log": root / "ddp.log", "single_log": root / "single.log"}


@pytest.mark.slow  # the same torchrun runs as below
def test_sync_bn_is_on_by_default_and_says_so_where_it_cannot_apply(runs):
    # --sync-bn defaults on (issue 11: statistics over the global batch, as in the paper); PyTorch's
    # SyncBatchNorm has no CPU kernel, so two CPU processes run without it and the log says so,
    # once; one process has nothing to synchronise and says nothing
    assert checkpoint.load(runs["ddp"] / "translator.pt")["config"]["sync_bn"] is True
    assert runs["ddp_log"].read_text().count("--sync-bn needs GPUs") == 1
    assert "--sync-bn" not in runs["single_log"].read_text()


@pytest.mark.slow  # real torchrun runs: ~50 s together on 2 CPU cores
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


def per_rank(runs, stage: str) -> list[list[dict]]:
    """[epoch][rank] -> {"in": that rank's own sums, "out": what all_sum gave it back}."""
    logs = [[json.loads(line) for line in (runs["all_sum"] / stage / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)]
    assert len(logs[0]) == len(logs[1]) == 3 and all(e["world"] == 2 for log in logs for e in log)
    return [list(epoch) for epoch in zip(*logs)]


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.slow  # real torchrun runs: ~50 s together on 2 CPU cores
def test_ddp_logs_the_losses_of_both_ranks_combined(runs):
    """Each logged figure is the two ranks' own sums added, then divided: the loss over every
    sample of the epoch, as one process would log it, to float64 rounding."""
    for stage, fields in (("autoencoder", {"train_loss": (0, 1), "val_loss": (2, 3)}),
                          ("translator", {"pixel_loss": (0, 4), "adv_loss": (1, 4), "g_loss": (2, 4)})):
        logged = rows(runs["ddp"], stage)
        for row, (r0, r1) in zip(logged, per_rank(runs, stage)):
            total = [a + b for a, b in zip(r0["in"], r1["in"])]
            assert r0["out"] == r1["out"] == total  # the reduction is a sum over both ranks, on both
            n = 1 if stage == "autoencoder" else 4  # where the sample count sits
            assert r0["in"][n] == r1["in"][n] > 0 and row["samples"] == total[n]  # equal shares, both counted
            for field, (num, den) in fields.items():
                assert close(row[field], total[num] / total[den]), (stage, row["epoch"], field, row[field], total)
                own = [r["in"][num] / r["in"][den] for r in (r0, r1)]
                assert own[0] != own[1] and min(own) < row[field] < max(own)  # not one rank's alone
            if stage == "translator":
                d_updates = int(total[5]) // 2  # both ranks update D at the same steps
                assert r0["in"][5] == r1["in"][5] and row["d_updates"] == d_updates
                assert close(row["d_loss"], total[3] / 2 / d_updates)
    state = checkpoint.load(runs["ddp"] / "translator.pt")
    assert state["adv_history"] == [r["adv_loss"] for r in rows(runs["ddp"], "translator")]


@pytest.mark.slow  # real torchrun runs: ~50 s together on 2 CPU cores
def test_ddp_learns(runs):
    for stage, key in (("autoencoder", "train_loss"), ("translator", "pixel_loss")):
        a = [r[key] for r in rows(runs["ddp"], stage)]
        assert a[-1] < a[0], (stage, a)


def differences(a, b, path: str = "") -> list[str]:
    """Where two checkpoint trees differ: tensors bit for bit (dtype and shape too), the rest by ==."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [path]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [path]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


@pytest.mark.slow  # real torchrun runs: ~50 s together on 2 CPU cores
def test_ddp_resume_reaches_the_uninterrupted_state(runs, tiny_build, tmp_path):
    run = same_autoencoder(runs["ddp"], tmp_path / "resumed")  # the same finished stage 1
    train(2, tiny_build, run, 0, 2)  # "killed" after translator epoch 2
    killed = checkpoint.load(run / "translator.pt")
    train(2, tiny_build, run, 0, 3)
    a, b = checkpoint.load(runs["ddp"] / "translator.pt"), checkpoint.load(run / "translator.pt")
    for state in (a, b, killed):  # the generators training draws from (dropout, loader seeds), per rank;
        # not Python's own, which rank 0's grid set-up advances after a resume (webdataset draws a seed)
        state["rng"] = [{k: r[k] for k in ("torch", "numpy")} for r in state["rng"]]
    compared = ("G", "D", "opt_g", "opt_d", "epoch", "g_steps", "adv_history", "rng")
    assert {k: differences(a[k], b[k]) for k in compared} == {k: [] for k in compared}
    # and epoch 3 was really trained by the resumed run: every part moved on from epoch 2
    assert all(differences(killed[k], b[k]) for k in compared), [k for k in compared if not differences(killed[k], b[k])]
