"""The train-* commands: thin wrappers whose options become their trainer's config."""

import subprocess
import sys

import pytest

TRAINERS = ["train-autoencoder", "train-translator", "train-aivae", "train-aivaegan", "train-mmgan",
            "train-sound2scene"]


@pytest.mark.parametrize("command", TRAINERS)
def test_every_option_reaches_the_config_and_a_missing_build_is_one_line(command, tmp_path):
    # `_train` checks that each option names a config field before it looks at the data, so an
    # option without a field would end this run in a TypeError traceback instead of the one line
    missing = tmp_path / "no-build"
    r = subprocess.run([sys.executable, "-m", "s2i_model.cli", command, "--data", str(missing),
                        "--run", str(tmp_path / "run"), "--seed", "1"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    assert str(missing) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "run").exists()
