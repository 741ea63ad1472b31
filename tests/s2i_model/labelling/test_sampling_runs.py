"""A pool of several runs' pictures (issue 27): every id starts with the run that drew it, every row
and pool.json name that run's model, `--balance models` gives every model the same number of
pictures however many runs it has, a run's name keeps meaning one run folder and model, and an
older pool (ids without a run) stays readable but is not grown. The S2I paper kept the same number
of pictures per model in its pool because a model leaves a fingerprint on its pictures."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from s2i_data.untrusted import Untrusted
from s2i_model.labelling.sampling import sample_pool
from s2i_model.labelling.store import read_pool
from s2i_model.models.aivae.config import AivaeConfig
from s2i_model.models.aivae.train import train_aivae
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.s2i.train_translator import train_translator

from test_labelling import make_pool

REPO = Path(__file__).resolve().parents[3]
QUIET = dict(log=lambda *_: None)
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]  # the tiny build's
MODEL_OF = {"s2i_a": "s2i", "s2i_b": "s2i", "vae": "aivae"}  # what the fixture trains, by folder name


@pytest.fixture(scope="module")
def runs(tiny_build, tmp_path_factory) -> dict[str, Path]:
    """Two S2I runs (the second a copy of the first under another name) and one AIVAE run, each
    trained one epoch at the smallest width: two models, one of them with twice the runs."""
    root = tmp_path_factory.mktemp("runs")
    a = root / "s2i_a"
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(a), emb=64, width=0.0625, epochs=1,
                                        batch_size=8, workers=0), **QUIET)
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(a), epochs=1, batch_size=8, workers=0), **QUIET)
    shutil.copytree(a, root / "s2i_b")
    train_aivae(AivaeConfig(data=str(tiny_build), run=str(root / "vae"), width=0.0625, epochs=1, batch_size=8,
                            workers=0, grid_every=1, grid_images=2), **QUIET)
    return {name: root / name for name in MODEL_OF}


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}  # --help's words whole, none cut to fit a narrow terminal
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def one_line(res: subprocess.CompletedProcess) -> str:
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0 and len(out.splitlines()) == 1 and "Traceback" not in out, out
    return out


def pictures_on_disk(pool: Path) -> list[tuple[str, str]]:
    """(run, class) of every picture file, read from the file's folder and name alone: the run is
    the name's part before its first dot (none of the fixture's run names holds a dot)."""
    return [(p.name.partition(".")[0], p.parent.name) for p in (pool / "images").glob("*/*.png")]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_ids_and_rows_name_the_run_and_its_model(runs, tiny_build, tmp_path):
    pool = tmp_path / "pool"
    res = sample_pool([runs["s2i_a"], runs["vae"]], str(tiny_build), "train", 10, pool, device="cpu")
    rows = read_pool(pool)
    assert res["added"] == len(rows) == 10
    for r in rows:
        run = r["id"].partition(".")[0]
        assert run in ("s2i_a", "vae") and r["run"] == run and r["model"] == MODEL_OF[run]
        assert r["id"] == f"{run}.{r['key']}-s0-{r['sample']}" and r["file"] == f"images/{r['class']}/{r['id']}.png"
        assert (pool / r["file"]).is_file()
    meta = json.loads((pool / "pool.json").read_text())
    assert meta["runs"] == {"s2i_a": {"model": "s2i", "path": str(runs["s2i_a"].resolve())},
                            "vae": {"model": "aivae", "path": str(runs["vae"].resolve())}}
    assert res["models"] == {"s2i": 5, "aivae": 5}
    # the same sound drawn by both runs is two pictures, not one id twice (the second once skipped)
    keys = Counter((r["key"], r["sample"]) for r in rows)
    assert set(keys.values()) == {2}


@pytest.mark.parametrize("n", [20, 23])
def test_balance_models_gives_every_model_the_same_share(runs, tiny_build, tmp_path, n):
    three = [runs["s2i_a"], runs["s2i_b"], runs["vae"]]  # s2i has two runs, aivae one
    by_models = tmp_path / "by-models"
    sample_pool(three, str(tiny_build), "train", n, by_models, device="cpu", balance="models")
    on_disk = pictures_on_disk(by_models)
    assert len(on_disk) == n
    per_model = Counter(MODEL_OF[run] for run, _ in on_disk)
    assert sorted(per_model.values()) == sorted([n // 2, n - n // 2])  # the same share, give or take one
    if n % 10 == 0:  # each model's share spread evenly over the classes, and over its runs
        assert Counter((MODEL_OF[run], cls) for run, cls in on_disk) == \
            {(m, c): n // 2 // len(CLASSES) for m in ("s2i", "aivae") for c in CLASSES}
        assert Counter(run for run, _ in on_disk) == {"s2i_a": n // 4, "s2i_b": n // 4, "vae": n // 2}
    by_runs = tmp_path / "by-runs"
    sample_pool(three, str(tiny_build), "train", n, by_runs, device="cpu", balance="runs")
    per_run = Counter(run for run, _ in pictures_on_disk(by_runs))
    assert sorted(per_run.values()) == sorted(n // 3 + (i < n % 3) for i in range(3))  # s2i gets two shares


def test_a_run_name_keeps_meaning_one_run_and_model(runs, tiny_build, tmp_path):
    pool = tmp_path / "pool"
    sample_pool(runs["s2i_a"], str(tiny_build), "train", 5, pool, device="cpu")
    before = files(pool)
    impostor = tmp_path / "elsewhere" / "s2i_a"  # an AIVAE run in a folder of the same name
    shutil.copytree(runs["vae"], impostor)
    with pytest.raises(ValueError, match="of model 's2i'"):
        sample_pool(impostor, str(tiny_build), "train", 5, pool, device="cpu")
    twin = tmp_path / "other-sweep" / "s2i_a"  # another S2I run of the same name
    shutil.copytree(runs["s2i_b"], twin)
    with pytest.raises(ValueError, match="another run named 's2i_a'"):
        sample_pool(twin, str(tiny_build), "train", 5, pool, device="cpu", seed=1)
    with pytest.raises(ValueError, match="two runs named 's2i_a'"):
        sample_pool([runs["s2i_a"], twin], str(tiny_build), "train", 5, tmp_path / "new", device="cpu")
    assert files(pool) == before and not (tmp_path / "new").exists()
    grown = sample_pool([runs["s2i_a"], runs["vae"]], str(tiny_build), "train", 10, pool, device="cpu", seed=1)
    assert grown["added"] == 10 and grown["models"] == {"s2i": 10, "aivae": 5}


def test_an_older_pool_is_read_and_labelled_but_not_grown(runs, tiny_build, tmp_path):
    pool = make_pool(tmp_path / "older")  # ids without a run, no run or model column
    rows = read_pool(pool)
    assert rows and all("run" not in r and "model" not in r for r in rows)
    before = files(pool)
    out = one_line(cli("sample", "--run", runs["s2i_a"], "--data", tiny_build, "--split", "train", "-n", 5,
                       "--out", pool, "--device", "cpu"))
    assert "older pool whose ids do not name their run" in out
    assert files(pool) == before


def test_sample_command_takes_several_runs_and_a_balance(runs, tiny_build, tmp_path):
    help_text = cli("sample", "--help")
    assert help_text.returncode == 0
    flat = " ".join(help_text.stdout.replace("│", " ").split())
    assert "--balance" in flat and "fingerprint" in flat and "repeat --run" in flat
    pool = tmp_path / "pool"
    res = cli("sample", "--run", runs["s2i_a"], "--run", runs["s2i_b"], "--run", runs["vae"], "--balance", "models",
              "--data", tiny_build, "--split", "train", "-n", 12, "--out", pool, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "by model: aivae 6, s2i 6" in res.stdout
    assert Counter(r["model"] for r in read_pool(pool)) == {"s2i": 6, "aivae": 6}
    out = one_line(cli("sample", "--run", runs["vae"], "--balance", "classes", "--data", tiny_build, "-n", 5,
                       "--out", tmp_path / "p2"))
    assert "--balance 'classes'" in out and not (tmp_path / "p2").exists()


ROW_BREAKS = {
    "id without its run": {"id": "dog_000-clip-0"},
    "id of another run": {"id": "other.dog_000-clip-0"},
    "run a path": {"run": "../x", "id": "../x.dog_000-clip-0"},
    "model markup": {"model": "<img src=x onerror=alert(1)>"},
    "model with a capital": {"model": "S2I"},
    "model empty": {"model": ""},
    "one run, two models": {"model": "aivae"},
}


@pytest.mark.parametrize("case", ROW_BREAKS, ids=list(ROW_BREAKS))
def test_a_pool_row_whose_run_or_model_is_not_honest_is_refused(tmp_path, case):
    pool = tmp_path / "pool"
    (pool / "images" / "dog").mkdir(parents=True)
    rows = [{"id": f"s2i_a.dog_00{i}-clip-0", "file": f"images/dog/s2i_a.dog_00{i}-clip-0.png", "class": "dog",
             "key": f"dog_00{i}", "sample": "0", "run": "s2i_a", "model": "s2i"} for i in range(2)]
    rows[1].update(ROW_BREAKS[case])
    rows[1]["file"] = f"images/dog/{rows[1]['id']}.png" if "/" not in rows[1]["id"] else rows[1]["file"]
    if case.startswith("model"):  # every row alike: not refused for naming a second model of its run
        rows[0]["model"] = rows[1]["model"]
    with open(pool / "pool.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(Untrusted, match=f"pool.csv line {2 if case.startswith('model') else 3}") as e:
        read_pool(pool)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("runs_field", [{"../x": {"model": "s2i"}}, {"a": {"model": "<b>x</b>"}}, {"a": "s2i"},
                                        ["a"], {"a": {"model": "s2i", "path": "x\n<script>"}}])
def test_a_pool_json_whose_runs_break_the_schema_is_refused(tmp_path, runs_field):
    pool = make_pool(tmp_path / "pool")
    (pool / "pool.json").write_text(json.dumps({"classes": ["baby", "dog", "rail"], "runs": runs_field}))
    from s2i_model.labelling.store import pool_meta

    with pytest.raises(Untrusted, match="pool.json: runs") as e:
        pool_meta(pool)
    assert "\n" not in str(e.value)
