"""`s2i-model sample` on a build, a pool or a pool folder from somebody else: a class or pool row
that is not a plain name is one line and a non-zero exit with nothing written anywhere, a class
folder that leads out of the pool is refused before any picture is drawn, and a link left where a
picture goes is replaced, not written through."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.labelling.sampling import sample_pool
from s2i_model.labelling.store import read_pool
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.s2i.train_translator import train_translator

REPO = Path(__file__).resolve().parents[3]
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def translator(tiny_build, tmp_path_factory) -> Path:
    """A translator trained for one epoch at the smallest width: pictures to sample, quickly."""
    run = tmp_path_factory.mktemp("sample") / "run"
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=64, width=0.0625, epochs=1,
                                        batch_size=8, workers=0), **QUIET)
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=1, batch_size=8, workers=0), **QUIET)
    return run


def sample(run: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", "sample", "--run", str(run), "--data", str(data),
                           "--split", "train", "-n", "10", "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, env=env)


def one_line(res: subprocess.CompletedProcess) -> str:
    out = (res.stdout + res.stderr).strip()
    assert res.returncode != 0 and len(out.splitlines()) == 1 and "Traceback" not in out, out
    assert "internal error" not in out, out
    return out


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_build_whose_class_is_a_path_is_refused_before_anything_is_written(translator, tiny_build, tmp_path):
    data = tmp_path / "shared" / "build"
    shutil.copytree(tiny_build, data)
    stats = json.loads((data / "stats.json").read_text())
    stats["classes"][0] = "../../x"
    (data / "stats.json").write_text(json.dumps(stats))
    before = files(tmp_path)
    out = one_line(sample(translator, data, tmp_path / "shared" / "pool"))
    assert "classes[0]" in out and "../../x" in out
    assert files(tmp_path) == before  # no pool, no pictures beside it


def test_a_hostile_pool_already_in_the_folder_is_refused_before_anything_is_written(translator, tiny_build, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "pool.csv").write_text("id,file,class,key,sample\nx,images/../../../x.png,dog,x,0\n")
    before = {p: p.read_bytes() for p in pool.iterdir()}
    out = one_line(sample(translator, tiny_build, pool))
    assert "pool.csv line 2: file" in out
    assert {p: p.read_bytes() for p in pool.iterdir()} == before


def test_a_class_folder_that_leads_out_of_the_pool_is_refused(translator, tiny_build, tmp_path):
    pool, outside = tmp_path / "pool", tmp_path / "outside"
    (pool / "images").mkdir(parents=True)
    outside.mkdir()
    (pool / "images" / "dog").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match="leads outside"):
        sample_pool(translator, str(tiny_build), "train", 10, pool, device="cpu")
    assert list(outside.iterdir()) == []
    assert not (pool / "pool.csv").exists() and not list((pool / "images").rglob("*.png"))


def test_a_link_where_a_picture_goes_is_replaced_not_written_through(translator, tiny_build, tmp_path):
    first = sample_pool(translator, str(tiny_build), "train", 10, tmp_path / "first", device="cpu")
    assert first["added"] == 10
    victims = tmp_path / "victims"
    victims.mkdir()
    pool = tmp_path / "pool"
    for r in read_pool(tmp_path / "first"):  # the same run, build and seed: the same files
        (pool / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        (victims / r["id"]).write_text("precious")
        (pool / r["file"]).symlink_to(victims / r["id"])
    sample_pool(translator, str(tiny_build), "train", 10, pool, device="cpu")
    assert all(v.read_text() == "precious" for v in victims.iterdir())
    for r in read_pool(pool):
        assert not (pool / r["file"]).is_symlink()
        assert (pool / r["file"]).read_bytes() == (tmp_path / "first" / r["file"]).read_bytes()
