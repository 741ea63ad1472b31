"""Packaging: the wheel alone, installed outside the checkout, carries everything the CLI needs.

The wheel is built from a copy of the checkout's files (so the build's own ``build/`` folder and
egg-info stay out of the working tree), installed with ``--no-deps`` into a fresh virtual
environment in a temporary folder, and run from there. That environment reuses the dependencies
already installed for the tests through a ``.pth`` line naming their site-packages folder(s): such
a line only extends ``sys.path`` (the ``.pth`` files inside those folders, such as the checkout's
editable install, are not read), and it comes after the new environment's own site-packages, so
``s2i_data`` is imported from the wheel and nowhere else, which the test checks.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Files the installed package reads at run time; a wheel without any of them is broken.
PACKAGE_DATA = [
    "s2i_data/py.typed",
    "s2i_model/py.typed",
    "s2i_data/manifests/classes.csv",
    "s2i_data/manifests/audioset/ontology.json",
    "s2i_data/manifests/audioset/class_labels_indices.csv",
    "s2i_model/labelling/page.html",
    "s2i_model/live/page.html",
]


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _checkout_copy(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus untracked ones git does not ignore), copied."""
    listed = _run(["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z"])
    for name in filter(None, listed.stdout.split("\0")):
        src = REPO / name
        if not src.is_symlink() and not src.exists():  # deleted in the work tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)
    return dest


def _build_wheel(tmp: Path) -> Path:
    src = _checkout_copy(tmp / "src")
    wheels = tmp / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels, src]
    try:  # the setuptools already here (pyproject asks >= 64) builds it without an index
        if int(importlib.metadata.version("setuptools").split(".")[0]) >= 64:
            cmd.insert(4, "--no-build-isolation")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        pass
    _run(cmd, cwd=tmp)
    (wheel,) = wheels.glob("s2i-*.whl")
    return wheel


def _fresh_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "s2i-test-deps.pth").write_text("".join(f"{d}\n" for d in deps if Path(d).is_dir()))
    return venv


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.mark.slow
def test_wheel_installed_outside_the_checkout_builds_named_classes(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in PACKAGE_DATA if n not in names]
    assert not missing, f"{wheel.name} lacks {missing}"

    venv = _fresh_venv(tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])

    work = tmp_path / "work"  # outside the checkout: nothing here can be found relative to it
    work.mkdir()
    env = _clean_env()
    where = _run([python, "-c", "import s2i_data, s2i_model; print(s2i_data.__file__); print(s2i_model.__file__)"],
                 cwd=work, env=env).stdout.split()
    for module_file in where:
        assert Path(module_file).resolve().is_relative_to(venv.resolve()), f"imported from {module_file}, not the wheel"
        assert not Path(module_file).resolve().is_relative_to(REPO), module_file

    _run([bin_dir / "s2i-data", "synth", "videos", "--videos-per-class", "3", "--classes", "baby,dog",
          "--workers", "1"], cwd=work, env=env)
    _run([bin_dir / "s2i-data", "build", "--root", "videos", "--classes", "baby,dog", "--out", "shards",
          "--workers", "1", "--no-progress"], cwd=work, env=env)
    assert (work / "shards" / "stats.json").is_file()
    shards = sorted((work / "shards").rglob("*.tar"))
    assert shards, sorted(p.name for p in (work / "shards").rglob("*"))


# runtime dependencies the package reaches through another library rather than by an import of its own
THROUGH = {"tensorboard": "torch.utils.tensorboard (train/metrics.py)", "webdataset": "importlib (readers.py)"}


def test_every_runtime_dependency_is_used():
    """The dependency list says what the code uses: each runtime dependency is imported by a module of
    s2i_data or s2i_model (read from their source, not from the list), or named in THROUGH."""
    import ast
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    imported = set()
    for path in [*(REPO / "s2i_data").rglob("*.py"), *(REPO / "s2i_model").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    owners = packages_distributions()  # reads every installed distribution's file list: once, not per module
    distributions = {d.lower().replace("_", "-") for m in imported for d in owners.get(m, [])}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    unused = [d for d in declared if Requirement(d).name.lower() not in distributions | set(THROUGH)]
    assert unused == []


def test_the_cpu_torch_pin_has_one_source():
    """The exact torch that `make setup` installs is named in torch.txt alone, and satisfies the
    range pyproject.toml declares (the range lets GPU users keep a torch of their own)."""
    from packaging.requirements import Requirement

    pins = [Requirement(line) for line in (REPO / "torch.txt").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert [p.name for p in pins] == ["torch"]
    (version,) = [s.version for s in pins[0].specifier if s.operator == "=="]
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_range,) = [Requirement(d) for d in declared if Requirement(d).name == "torch"]
    assert torch_range.specifier.contains(version), (version, str(torch_range))
    assert "==" not in str(torch_range.specifier), "pyproject pins torch exactly: GPU users could not keep theirs"
    for name in ("Makefile", "README.md", ".ci/run"):
        path = REPO / name
        if path.exists():
            assert not re.search(r"torch\s*==\s*\d", path.read_text()), f"{name} names a torch version of its own"
