"""A model from another package is one name: tests/tiny_model (its own pyproject.toml, an entry point
in the group s2i.models) is installed with pip into a temporary folder put on the path, and
`s2i-model compare --models s2i,tiny` trains, evaluates and reports it beside S2I, `imagine` draws
from its run, and no file of s2i_model/ names it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow(1)  # two test-preset trainings, five evaluations, a report, and a second run

REPO = Path(__file__).resolve().parents[3]


def cli(*args: str, path: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """tiny installed by pip from a copy of its source (a build leaves nothing in the checkout)."""
    tmp = tmp_path_factory.mktemp("tiny")
    shutil.copytree(REPO / "tests" / "tiny_model", tmp / "src")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(tmp / "src")], check=True, capture_output=True)
    assert (next(target.glob("s2i_tiny-*.dist-info")) / "entry_points.txt").read_text().split() == \
        ["[s2i.models]", "tiny", "=", "s2i_tiny:MODEL"]
    return target


@pytest.fixture(scope="module")
def compared(tiny_build, installed, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    runs = tmp_path_factory.mktemp("compare") / "runs"
    done = cli("compare", "--data", str(tiny_build), "--runs", str(runs), "--models", "s2i,tiny", "--preset", "test",
               path=installed)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, done


def test_the_registry_lists_it_only_when_installed(installed):
    listed = cli("models", path=installed)
    assert listed.returncode == 0 and "tiny" in listed.stdout and "worked example" in listed.stdout
    bare = cli("models", path=Path("/nonexistent"))
    assert bare.returncode == 0 and "tiny" not in bare.stdout
    unknown = cli("train", "--model", "tiny", "--data", "x", "--run", "y", path=Path("/nonexistent"))
    assert unknown.returncode == 2 and "unknown model 'tiny'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1 and "Traceback" not in unknown.stderr


def test_compare_trains_evaluates_and_reports_it_beside_s2i(compared):
    runs, _ = compared
    rows = json.loads((runs / "report" / "report.json").read_text())["comparison"]["rows"]
    assert [(r["model"], r["name"]) for r in rows] == [
        ("s2i", "s2i"), ("tiny", "tiny"), ("chance", "chance"), ("lookup", "lookup"),
        ("nearest-sound", "nearest-sound-s2i"), ("nearest-sound", "nearest-sound-tiny"), ("real", "real")]
    tiny = rows[1]
    assert tiny["epoch"] == 2 and tiny["labels_used"] == "none (sound-frame pairs only)"
    assert 0.0 <= tiny["class_agreement"]["value"] <= 1.0 and tiny["training_samples"] > 0
    # its parameters, counted by the report, are those of its one linear layer: 128 → 3 × 12 × 12
    assert tiny["parameters"] == 128 * 3 * 12 * 12 + 3 * 12 * 12
    assert json.loads((runs / "tiny" / "model.json").read_text()) == {"model": "tiny"}
    state = torch.load(runs / "tiny" / "tiny.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["epochs"] == 2  # its own test preset, from its own package


def test_a_second_compare_trains_and_measures_nothing(compared, installed, tiny_build):
    runs, _ = compared
    # every file but the run folders' locks (each step takes its folder's lock, and says so in it)
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file() and p.name != ".lock"}
    again = cli("compare", "--data", str(tiny_build), "--runs", str(runs), "--models", "s2i,tiny", "--preset", "test",
                path=installed)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "tiny already trained for 2 epochs" in again.stderr and "report is up to date" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file() and p.name != ".lock"} == stamps


def test_imagine_draws_from_its_run(compared, installed, tiny_build, tmp_path):
    runs, _ = compared
    grid = tmp_path / "tiny.png"
    done = cli("imagine", "--data", str(tiny_build), "--run", str(runs / "tiny"), "-n", "2", "-o", str(grid),
               path=installed)
    assert done.returncode == 0, done.stderr
    assert Image.open(grid).size[0] > 2 * 96


def test_no_file_of_the_package_names_it():
    # the model's name as a string, or its package ("tiny pools" in a comment is English, not the model)
    naming = re.compile(r"""["']tiny["']|s2i_tiny|TinyConfig""")
    named = [p for p in (REPO / "s2i_model").rglob("*") if p.is_file() and p.suffix in (".py", ".html", ".toml")
             and naming.search(p.read_text())]
    assert named == []
