"""imagine on hostile files: NaN and infinite samples are silence (the same windows and pictures
as a file with zeros there), a file name with a newline, control characters, rich markup or bytes
that are not UTF-8 is printed escaped on one line, and the pictures never go through a link left
in the output folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from s2i_model.imagine import sound_windows

from test_imagine import run, tone  # noqa: F401 - run: the untrained width-1/16 run folder fixture

SR = 16000  # the run's rate: ffmpeg hands the samples on as they are, NaN where the file has NaN
ROOT = Path(__file__).resolve().parents[2]


def float_wav(path: Path, audio: np.ndarray) -> Path:
    soundfile.write(path, audio.astype(np.float32), SR, subtype="FLOAT")
    return path


def broken_and_zeroed(tmp_path: Path) -> tuple[Path, Path, int]:
    """3 s: a tone, then a second of NaN, then a tone with +inf every 50th sample and -inf at the
    end; the same file with zeros where those are; and how many there are."""
    audio = tone(3.0, 440, SR)
    audio[SR:2 * SR] = np.nan
    audio[2 * SR::50] = np.inf
    audio[-100:] = -np.inf
    bad = ~np.isfinite(audio)
    zeroed = np.where(bad, np.float32(0), audio)
    return float_wav(tmp_path / "broken.wav", audio), float_wav(tmp_path / "zeroed.wav", zeroed), int(bad.sum())


def cli(*args, **kw) -> subprocess.CompletedProcess:
    # a real process with UTF-8 output, as a terminal has: what it prints must encode
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "s2i_model.cli", "imagine", *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", errors="surrogateescape", env=env, timeout=300, **kw)


def test_nan_and_inf_samples_are_heard_as_silence(tmp_path):
    broken, zeroed, _ = broken_and_zeroed(tmp_path)
    mels, starts = sound_windows(broken)
    want, want_starts = sound_windows(zeroed)
    assert starts == want_starts == [0.0, 1.0, 2.0]
    assert np.isfinite(mels).all() and np.array_equal(mels, want)


def test_a_file_with_nan_samples_gives_the_pictures_of_silence_there(run, tmp_path):  # noqa: F811
    broken, zeroed, _ = broken_and_zeroed(tmp_path)
    for f in (broken, zeroed):
        res = cli(f, "--run", run, "-n", "2", "-o", tmp_path / f"{f.stem}.png")
        assert res.returncode == 0 and res.stderr == "", res.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "broken.png")), np.asarray(Image.open(tmp_path / "zeroed.png")))
    nothing = float_wav(tmp_path / "all-nan.wav", np.full(2 * SR, np.nan, np.float32))
    res = cli(nothing, "--run", run)
    assert res.returncode == 1 and res.stderr.strip() == (
        f"error: {nothing}: silent (peak below 0.0001; its {2 * SR} NaN or infinite samples count as silence): "
        "nothing to imagine")


def test_hostile_file_names_are_printed_escaped_on_one_line(run, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    float_wav(folder / "new\nline\x1b[2J.wav", tone(1.0, 300, SR))
    os.rename(float_wav(tmp_path / "latin1.wav", tone(1.0, 500, SR)), os.fsencode(folder) + b"/not-utf8-\xff.wav")
    (folder / "x[").mkdir()
    float_wav(folder / "x[" / "]silent\r.wav", np.zeros(SR, np.float32))  # its path holds "[/]": rich markup
    res = cli(folder, "--run", run, "--out-dir", tmp_path / "out", "-n", "1")
    out = tmp_path / "out"
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines() == [f"{out}/new\\nline\\x1b[2J.wav.png", f"{out}/not-utf8-\\udcff.wav.png"]
    assert res.stderr.splitlines() == [
        f"skipped: {folder}/x[/]silent\\r.wav: silent (peak below 0.0001): nothing to imagine",
        "imagined 2 of 3 files (1 skipped)"]
    assert (out / "new\nline\x1b[2J.wav.png").is_file()  # the files keep their real names
    res = cli(folder / "x[" / "]silent\r.wav", "--run", run)  # one file: its error line
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"error: {folder}/x[/]silent\\r.wav: silent (peak below 0.0001): nothing to imagine"]


def test_pictures_are_never_written_through_a_link(run, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    sound = float_wav(tmp_path / "s.wav", tone(1.0, 440, SR))
    out = tmp_path / "out"
    out.mkdir()
    (out / "s_00000.0s_0.png").symlink_to(victim)  # a link where a picture goes
    res = cli(sound, "--run", run, "-n", "1", "-o", tmp_path / "s.png", "--out-dir", out)
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == b"keep me" and not (out / "s_00000.0s_0.png").is_symlink()
    assert Image.open(out / "s_00000.0s_0.png").size == (96, 96)
    # a folder's output: a subfolder of OUT that is a link to elsewhere is refused, not written through
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    float_wav(folder / "a" / "x.wav", tone(1.0, 440, SR))
    float_wav(folder / "y.wav", tone(1.0, 660, SR))
    out2 = tmp_path / "out2"
    out2.mkdir()
    (out2 / "a").symlink_to(elsewhere)
    res = cli(folder, "--run", run, "-n", "1", "--out-dir", out2)
    assert res.returncode == 0 and res.stdout.splitlines() == [f"{out2}/y.wav.png"], res.stdout + res.stderr
    assert res.stderr.splitlines()[0].startswith(f"skipped: {folder}/a/x.wav: cannot write its pictures: ")
    assert "leads outside" in res.stderr and list(elsewhere.iterdir()) == []
