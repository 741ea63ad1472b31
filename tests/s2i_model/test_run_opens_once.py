"""A run opens once (`run.Run`): `s2i-model imagine` on an S2I run reads each checkpoint file once
and opens the build once (before the Run object, the build was opened four times and the checkpoint
read four times on this path); an old run folder without RUN/model.json still loads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from handmade_runs import s2i_run, vae_run
from s2i_data import readers
from s2i_model import checkpoint, run as run_folder
from s2i_model.cli import app


def test_imagine_reads_each_checkpoint_and_the_build_once(tiny_build, tmp_path, monkeypatch):
    run = s2i_run(tiny_build, tmp_path / "run")
    reads: Counter = Counter()
    opens: Counter = Counter()
    load, open_build = checkpoint.load, readers.Build.open.__func__

    def counted_load(path, *a, **kw):
        reads[Path(path).name] += 1
        return load(path, *a, **kw)

    def counted_open(cls, data, *a, **kw):
        if not isinstance(data, readers.Build):  # an opened build handed on is not opened again
            opens[str(data)] += 1
        return open_build(cls, data, *a, **kw)

    monkeypatch.setattr(checkpoint, "load", counted_load)
    monkeypatch.setattr(readers.Build, "open", classmethod(counted_open))
    res = CliRunner().invoke(app, ["imagine", "--data", str(tiny_build), "--run", str(run), "-n", "2", "-o",
                                   str(tmp_path / "grid.png"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert reads == {"autoencoder.pt": 1, "translator.pt": 1}
    assert opens == {str(tiny_build): 1}


def test_a_run_without_a_model_record_is_told_by_its_checkpoint(tiny_build, tmp_path):
    old = vae_run(tiny_build, tmp_path / "old", model="aivaegan")
    assert not (old / run_folder.MODEL_RECORD).exists()
    opened = run_folder.Run.open(old)
    assert opened.name == "aivaegan" and opened.file == old / "aivaegan.pt"
    assert opened.model("cpu").sound_pictures is not None
    plain = s2i_run(tiny_build, tmp_path / "s2i")
    assert run_folder.Run.open(plain).name == "s2i"


def test_the_model_record_names_the_model_and_refuses_another(tiny_build, tmp_path):
    run = vae_run(tiny_build, tmp_path / "run")
    run_folder.record_model(run, "aivae")
    assert (run / run_folder.MODEL_RECORD).read_text() == '{"model": "aivae"}'
    try:
        run_folder.record_model(run, "mmgan")
    except run_folder.RunError as e:
        assert "holds a aivae run" in str(e)
    else:
        raise AssertionError("a run folder holding aivae took mmgan")
    (run / run_folder.MODEL_RECORD).write_text('{"model": "../../etc"}')
    try:
        run_folder.Run.open(run)
    except run_folder.RunError as e:
        assert "model.json" in str(e)
    else:
        raise AssertionError("a model name that is a path was taken")
