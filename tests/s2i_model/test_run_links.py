"""Writes into a run folder never follow a link somebody left there: the files the trainers and
`evaluate` write are replaced whole (a new file renamed over the link) or refused, and the file a
link points at is left exactly as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.evaluate.evaluation import EvalConfig, evaluate
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.s2i.train_translator import train_translator

QUIET = dict(log=lambda *_: None)
PNG = b"\x89PNG\r\n\x1a\n"


def ae_cfg(data, run, **kw):
    return AutoencoderConfig(data=str(data), run=str(run), emb=16, width=0.0625, batch_size=8, workers=0, **kw)


def gan_cfg(data, run, **kw):
    return TranslatorConfig(data=str(data), run=str(run), batch_size=8, workers=0, optimizer="adam", grid_every=1,
                            grid_images=2, **kw)


@pytest.fixture(scope="module")
def trained(tiny_build, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("links") / "run"
    train_autoencoder(ae_cfg(tiny_build, run, epochs=1), **QUIET)
    train_translator(gan_cfg(tiny_build, run, epochs=1), **QUIET)
    return run


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the run folder that a link in it points at."""
    v = tmp_path / "elsewhere" / "victim.txt"
    v.parent.mkdir()
    v.write_bytes(b"precious, not a run's\n")
    return v


def copy_run(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def test_evaluate_replaces_a_linked_grid_and_result_instead_of_writing_through_them(trained, tiny_build, tmp_path,
                                                                                   victim):
    run = copy_run(trained, tmp_path)
    other = victim.with_name("other.json")
    other.write_text("{}")
    (run / "evaluation-grid.png").symlink_to(victim)
    (run / "evaluation.json").symlink_to(other)
    evaluate(EvalConfig(run=str(run), data=str(tiny_build), samples=2, proxy_epochs=1, device="cpu"), **QUIET)
    assert victim.read_bytes() == b"precious, not a run's\n" and other.read_text() == "{}"
    for name in ("evaluation-grid.png", "evaluation.json"):
        assert not (run / name).is_symlink()
    assert (run / "evaluation-grid.png").read_bytes().startswith(PNG)


def test_a_linked_metrics_log_is_refused_and_what_it_points_at_untouched(trained, tiny_build, tmp_path, victim):
    run = copy_run(trained, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="metrics.jsonl: it is a symbolic link; refusing to follow it"):
        train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    assert victim.read_bytes() == b"precious, not a run's\n"
    # a link to a file that does not exist yet: appending through it would create that file
    (run / "metrics.jsonl").unlink()
    planted = victim.with_name("planted.jsonl")
    (run / "metrics.jsonl").symlink_to(planted)
    with pytest.raises(OSError, match="symbolic link"):
        train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    assert not planted.exists()


@pytest.mark.parametrize("folder", ["grids", "tensorboard"])
def test_a_linked_grids_or_tensorboard_folder_is_refused(trained, tiny_build, tmp_path, folder):
    run = copy_run(trained, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(run / folder)
    (run / folder).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match=f"{folder} leads outside"):
        train_translator(gan_cfg(tiny_build, run, epochs=2), **QUIET)
    assert not any(outside.iterdir())


def test_training_replaces_a_linked_autoencoder_json(tiny_build, tmp_path, victim):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "autoencoder.json").symlink_to(victim)
    train_autoencoder(ae_cfg(tiny_build, run, epochs=1), **QUIET)
    assert victim.read_bytes() == b"precious, not a run's\n"
    assert not (run / "autoencoder.json").is_symlink() and '"config"' in (run / "autoencoder.json").read_text()


def test_a_fifo_in_place_of_the_metrics_log_is_refused_not_waited_on(tmp_path):
    """A FIFO named metrics.jsonl would block a reader for ever: it is refused as not a file."""
    import threading

    from s2i_model.evaluate.history import read_rows

    os.mkfifo(tmp_path / "metrics.jsonl")
    said = []
    reader = threading.Thread(target=lambda: said.append(_raised(read_rows, tmp_path)), daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # free the blocked reader so that the session can end
        os.close(os.open(tmp_path / "metrics.jsonl", os.O_WRONLY | os.O_NONBLOCK))
    assert said and isinstance(said[0], OSError) and "not a regular file" in str(said[0]), said


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 (the test looks at what was raised)
        return e
    return None
