"""imagine on files from anywhere: names are files (never ffmpeg protocols or options), long
recordings stream through the shared front end in flat memory with the same numbers as a
whole-file decode, and a folder keeps each file's relative path and skips bad files one line each.

The run folder holds randomly initialised width-1/16 networks saved in the trainers' checkpoint
format: no training, so these tests cost seconds; what they check is the plumbing, and a random
generator still paints different pictures for different sounds."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from typer.testing import CliRunner

from s2i_data import features, media
from s2i_model import checkpoint
from s2i_model.cli import app
from s2i_model.models.s2i.config import AutoencoderConfig
from s2i_model.imagine import ImagineError, sound_windows
from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator
from s2i_model.models.s2i import AUTOENCODER as AE_CKPT
from s2i_model.models.s2i import TRANSLATOR as GAN_CKPT
SR = 44100
ROW = 96 + 4  # a grid row: one 96 px picture and the padding under it


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """What Translator.load reads from a finished run, with untrained width-1/16 networks (the
    paper's generator, narrow=False: its dropout makes every picture of a sound differ, which the
    seeding tests below rely on)."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    cfg = AutoencoderConfig(data="unused", run=str(run), emb=64, width=0.0625, epochs=1)
    ae, gen = AudioAutoencoder(cfg.emb, cfg.width), DenseGenerator(cfg.emb, cfg.width, narrow=False)
    checkpoint.save(run / AE_CKPT, {"model": ae.state_dict(), "epoch": 1, "config": cfg.to_dict(),
                                    "normalizer": {"lo": -13.8, "hi": 4.0}})
    checkpoint.save(run / GAN_CKPT, {"G": gen.state_dict(), "epoch": 1, "config": {}, "autoencoder": cfg.to_dict()})
    return run


def imagine(*args: str):
    r = CliRunner().invoke(app, ["imagine", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def tone(seconds: float, hz: float, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def noise(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def whole_file_windows(path: Path, max_windows: int, seconds: float = 1.0):
    """The windows as imagine took them before streaming: the whole file decoded at once."""
    audio = media.decode_audio(str(path), features.SAMPLE_RATE)
    n = int(np.floor(len(audio) / features.SAMPLE_RATE / seconds + 1e-6))
    keep = list(range(n)) if n <= max_windows else [int(round(i)) for i in np.linspace(0, n - 1, max_windows)]
    starts = [i * seconds for i in keep]
    return features.log_mel_segments(audio, 0.0, starts, seconds), starts


def ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


# ---- 1. a name is a file

def test_names_that_look_like_ffmpeg_protocols_or_options_are_files(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    soundfile.write("x.mp4", tone(3.2, 300), SR, format="WAV")  # what concat:x.mp4 would read instead
    names = {"concat:x.mp4": 2.5, "pipe:0.mp4": 1.5, "http:x.wav": 1.5, "-i.wav": 2.5}
    for i, (name, seconds) in enumerate(names.items()):
        soundfile.write(name, noise(seconds, i), SR, format="WAV")
    for name, seconds in names.items():
        got, starts = sound_windows(Path(name))  # the relative name, as typed in this folder
        want, _ = whole_file_windows(tmp_path / name, 60)
        assert len(starts) == int(seconds), name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    for name in ("concat:x.mp4", "-i.wav"):  # and through the command line
        r = imagine("--run", str(run), "-n", "1", "-o", "grid.png", "--", name)
        assert r.exit_code == 0, (name, r.output)
        with Image.open("grid.png") as im:  # a row per whole second of this file, not of x.mp4
            assert (im.size[1] - 4) // ROW == int(names[name]), name
    assert media.as_input("concat:x.mp4") == f"file:{tmp_path}/concat:x.mp4"


# ---- 2. long recordings, streamed

@pytest.mark.parametrize("max_windows", [60, 3])
def test_streamed_windows_equal_the_whole_file_windows(tmp_path, max_windows):
    path = tmp_path / "n.flac"
    soundfile.write(path, noise(7.3, 1), SR)
    want, want_starts = whole_file_windows(path, max_windows)
    for chunk in (1000, 1 << 16):  # a read shorter than a window, and the default
        got, starts = sound_windows(path, max_windows=max_windows, chunk_samples=chunk)
        assert starts == want_starts
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_headers_that_lie_or_say_nothing_still_give_the_right_windows(tmp_path):
    lying = tmp_path / "cut.mka"  # its header says 10 s; half of the file is left
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=10:r=16000:a=0.2:seed=2", "-c:a", "flac", str(lying))
    os.truncate(lying, lying.stat().st_size // 2)
    silent_header = tmp_path / "piped.mka"  # Matroska written to a pipe: no duration in it
    with open(silent_header, "wb") as f:
        subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                        "anoisesrc=d=6.5:r=16000:a=0.2:seed=3", "-f", "matroska", "pipe:1"], stdout=f, check=True)
    assert media.header_duration(lying) == pytest.approx(10, abs=0.01)
    assert media.header_duration(silent_header) is None
    for path in (lying, silent_header):
        n = len(media.decode_audio(str(path))) // features.SAMPLE_RATE
        assert 3 < n < 10
        want, want_starts = whole_file_windows(path, 3)
        got, starts = sound_windows(path, max_windows=3, chunk_samples=5000)
        assert starts == want_starts and len(set(starts)) == 3 and starts[-1] == n - 1
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def vm_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def test_an_hour_decodes_in_flat_memory(tmp_path):
    hour = tmp_path / "hour.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=3600:sample_rate=4000", "-c:a", "flac", str(hour))
    try:  # "5" resets this process's peak RSS (VmHWM) to the current RSS: the peak is then this decode's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as e:
        pytest.skip(f"cannot reset the peak RSS here ({e.strerror})")
    before = vm_kb("VmRSS:")
    mels, starts = sound_windows(hour)
    grew_mb = (vm_kb("VmHWM:") - before) / 1024
    assert len(starts) == 60 and starts[-1] == 3599.0 and mels.shape == (60, 100, 128)
    # The hour as float32 is 230 MB, and was held twice over while being decoded whole; streamed,
    # the peak hardly moves (a few seconds of audio and the 60 windows kept).
    assert grew_mb < 64, grew_mb


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_stalled_input_is_stopped_by_inactivity_not_by_length(tmp_path):
    fifo = tmp_path / "stalled.wav"
    os.mkfifo(fifo)
    wav = tmp_path / "head.wav"
    soundfile.write(wav, noise(5, 4, 16000), 16000)  # enough for ffmpeg to finish probing and start
    release = threading.Event()

    def writer():  # five seconds of sound, then nothing while the pipe stays open
        with open(fifo, "wb") as f:
            f.write(wav.read_bytes())
            f.flush()
            release.wait(30)

    threading.Thread(target=writer, daemon=True).start()
    got, t0 = 0, time.monotonic()
    with pytest.raises(media.MediaError, match="no audio for 1 s"):
        for chunk in media.stream_audio(fifo, chunk_samples=1000, idle_timeout=1.0):
            got += chunk.size
    release.set()
    assert got > 0 and time.monotonic() - t0 < 15


# ---- 3. folders

def test_a_folder_keeps_relative_paths_and_skips_bad_files(run, tmp_path):
    src, out = tmp_path / "sounds", tmp_path / "out"
    for d in ("a", "b", "c"):
        (src / d).mkdir(parents=True)
    soundfile.write(src / "a" / "same.wav", tone(2.2, 500), SR)
    soundfile.write(src / "b" / "same.wav", noise(2.2, 5), SR)
    soundfile.write(src / "a" / "same.flac", tone(1.2, 2000), SR)  # same stem, another extension
    (src / "c" / "junk.mp3").write_text("not audio\n" * 20)
    long = "x" * 250 + ".wav"  # a legal name whose grid name (+ ".png") is 258 bytes
    soundfile.write(src / "c" / long, tone(1.5, 800), SR)

    r = imagine(str(src), "--run", str(run), "-n", "2", "--out-dir", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/same.flac.png", "a/same.flac/00000.0s_0.png", "a/same.flac/00000.0s_1.png",
        "a/same.wav.png", *(f"a/same.wav/0000{t}.0s_{k}.png" for t in (0, 1) for k in (0, 1)),
        "b/same.wav.png", *(f"b/same.wav/0000{t}.0s_{k}.png" for t in (0, 1) for k in (0, 1)),
    ]
    pixels = {d: np.asarray(Image.open(out / d / "same.wav" / "00000.0s_0.png")) for d in "ab"}
    assert not np.array_equal(pixels["a"], pixels["b"])  # two sounds, two pictures, neither overwritten
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped:")]
    assert len(skipped) == 2 and "Traceback" not in r.output
    assert any("junk.mp3" in ln and "cannot decode" in ln for ln in skipped)
    assert any("258 bytes" in ln and "rename" in ln for ln in skipped)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.wav").write_text("nope\n")
    r = imagine(str(bad), "--run", str(run), "--out-dir", str(tmp_path / "out2"))
    assert r.exit_code == 1 and "skipped:" in r.stderr and "Traceback" not in r.output


def test_single_file_errors_stay_one_line(run, tmp_path):
    os.mkfifo(tmp_path / "fifo.wav")
    soundfile.write(tmp_path / "quiet.wav", np.zeros(SR * 2, np.float32), SR)
    soundfile.write(tmp_path / "short.wav", tone(0.6, 440), SR)
    for name, reason in (("fifo.wav", "not a regular file"), ("quiet.wav", "silent"), ("short.wav", "too short")):
        r = imagine(str(tmp_path / name), "--run", str(run), "-o", str(tmp_path / "g.png"))
        assert r.exit_code == 1 and reason in r.stderr, (name, r.output)
        assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(ImagineError, match="at least 1"):
        sound_windows(tmp_path / "quiet.wav", max_windows=0)


# ---- 4. what comes out: a row per second, the build's own log-mel, pictures that follow the sound

def grid_picture(grid: np.ndarray, row: int, k: int) -> np.ndarray:
    """Picture k of a grid row (s2i_model.grid's layout: column 0 is left for a real frame, which
    a file has not; rows and columns are ROW px apart)."""
    from s2i_model.grid import LABEL_W, PAD

    y, x = PAD + row * ROW, LABEL_W + PAD + (1 + k) * ROW
    return grid[y:y + 96, x:x + 96]


@pytest.mark.parametrize("seconds, rows", [(3.6, 3), (2.99, 2), (1.0, 1)])
def test_one_grid_row_per_whole_second_in_window_order(run, tmp_path, seconds, rows):
    from s2i_model.imagine import imagine_file
    from s2i_model.models.s2i.load import Translator

    path = tmp_path / "s.wav"
    soundfile.write(path, noise(seconds, 7, 16000), 16000)  # 16 kHz: 1.0 s is exactly 16000 samples
    grid = imagine_file(Translator.load(run, "cpu"), path, 2, tmp_path / "g.png", tmp_path / "pics", prefix="")
    pixels = np.asarray(Image.open(grid).convert("RGB"))
    assert pixels.shape[0] == rows * ROW + 4  # a partial last second gets no row
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [
        f"{t:07.1f}s_{k}.png" for t in range(rows) for k in range(2)]
    for t in range(rows):  # row t shows the pictures of the window starting at t s
        for k in range(2):
            assert np.array_equal(grid_picture(pixels, t, k), np.asarray(Image.open(tmp_path / "pics" / f"{t:07.1f}s_{k}.png")))


def test_imagine_hears_what_the_build_stored(tiny_build):
    """The same segment of a video gives imagine the log-mel the build wrote to the shard."""
    from s2i_data.readers import decode_sample, iter_raw, read_build_parquet, shard_urls

    manifest = read_build_parquet(tiny_build).set_index("key")
    windows: dict = {}
    checked = 0
    for raw in iter_raw(shard_urls(tiny_build, "test")):  # 10 segments from 5 videos, at 0, 1 and 2 s
        sample = decode_sample(raw)
        row = manifest.loc[sample["key"]]
        assert float(row["start_s"]).is_integer()  # imagine's windows start on whole seconds
        if row["source"] not in windows:
            windows[row["source"]] = sound_windows(Path(row["source"]))
        mels, starts = windows[row["source"]]
        got = mels[starts.index(float(row["start_s"]))]
        assert got.shape == sample["mel"].shape == (100, 128)
        # Both compute the same float32 pipeline on the same samples (the build decodes from a
        # second before the segment, imagine from 0 s); what differs is summation order in the
        # FFT and the filter-bank product, 1-2 ulp (≤ 1e-6 at |log-mel| ≤ 14). One hop off
        # (10 ms) moves values by more than 1.
        np.testing.assert_allclose(got, sample["mel"], rtol=0, atol=1e-5, err_msg=sample["key"])
        checked += 1
    assert checked == 10 and any(s > 0 for s in manifest.loc[manifest["split"] == "test", "start_s"])


def test_pictures_follow_the_sound_not_the_name_or_the_call(run, tmp_path):
    """Same run, same seed: two sounds give different pictures; a sound gives the same pictures
    every time, under any name; another seed gives others (so "the same" is the seed's doing)."""
    from s2i_model.imagine import imagine_file
    from s2i_model.models.s2i.load import Translator

    tr = Translator.load(run, "cpu")
    soundfile.write(tmp_path / "low.wav", tone(2.2, 300), SR)
    soundfile.write(tmp_path / "high.wav", tone(2.2, 2500), SR)
    soundfile.write(tmp_path / "copy.wav", tone(2.2, 300), SR)

    def pictures(name: str, out: str, seed: int = 0) -> np.ndarray:
        imagine_file(tr, tmp_path / name, 3, tmp_path / f"{out}.png", tmp_path / out, seed=seed, prefix="")
        return np.stack([np.asarray(Image.open(tmp_path / out / f"{t:07.1f}s_{k}.png"))
                         for t in range(2) for k in range(3)])

    low, high = pictures("low.wav", "low"), pictures("high.wav", "high")
    assert all(not np.array_equal(a, b) for a, b in zip(low, high))  # every picture, window and draw
    assert np.array_equal(pictures("low.wav", "low-again"), low)
    assert np.array_equal(pictures("copy.wav", "copy"), low)
    assert (tmp_path / "low.png").read_bytes() == (tmp_path / "low-again.png").read_bytes()
    other_seed = pictures("low.wav", "low-seed1", seed=1)
    assert all(not np.array_equal(a, b) for a, b in zip(low, other_seed))
