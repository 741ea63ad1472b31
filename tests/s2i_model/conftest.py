"""A tiny real build shared by the model tests (made from the session's synthetic videos)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_build(synth_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "shards"
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(synth_videos), "--classes",
                    "baby,dog,rail,fireworks,water", "--out", str(out), "--shard-size", "8", "--workers", "2",
                    "--no-progress"], check=True, capture_output=True)
    return out
