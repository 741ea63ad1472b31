"""What the live view shows, checked by content: each hop's pictures are the ones `imagine` makes
from the same second of the same file with the same seed; two sounds give two sets of pictures
under the same dropout noise; the class line is what a real-frame classifier sees in the pictures
of each window, for a stream made of a build's own test sounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2i_data import features
from s2i_model.imagine import picture_bytes
from s2i_model.live import loop
from s2i_model.live.session import LiveOptions, run_session
from s2i_model.live.sources import ArraySource
from s2i_model.live.window import Windower
from s2i_model.run import load_model

from conftest import SR, live_cmd  # tests/s2i_model/live/conftest.py

CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def seconds_apart(count: int) -> np.ndarray:
    """``count`` seconds of loud sound, each second its own: a tone of its own pitch over noise of its
    own band, so that every 1 s window (at whole or half seconds) hears something else."""
    rng = np.random.default_rng(11)
    t = np.arange(SR) / SR
    parts = []
    for k in range(count):
        noise = np.convolve(rng.standard_normal(SR), np.ones(2 + 7 * k) / (2 + 7 * k), "same")
        parts.append(0.3 * np.sin(2 * np.pi * (220 * 1.6 ** k) * t) + 0.2 * noise)
    return np.concatenate(parts).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    import soundfile

    soundfile.write(path, audio, SR, subtype="FLOAT")  # float samples: ffmpeg hands back these very numbers
    return path


def journal(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "live.jsonl").read_text().splitlines()]


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def recorded(folder: Path) -> list[tuple[float, np.ndarray]]:
    """(window end, uint8 [n, H, W, 3]) for every window the recording made."""
    return [(x["t"], np.stack([png(folder / p) for p in x["pictures"]])) for x in journal(folder)
            if not x["dropped"] and not x["quiet"]]


def same_pictures(got: np.ndarray, want: np.ndarray) -> None:
    """The same pictures, byte for byte but for a rounding edge. Why so strict: the tiny run's
    pictures hardly depend on their sound (one epoch: two different windows under the same dropout
    noise differ in about 1 value in 5000, by one level), so any looser tolerance would also pass
    pictures of zeros or of the neighbouring window. Why not exactly: the live log-mel is computed
    frame by frame as the audio arrives and equals a file's to float rounding (5e-7 on the edge
    frames here, 1e-5 promised), which may move a value sitting on a rounding edge by one level;
    on this machine none moves."""
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).sum() <= max(2, diff.size // 200_000), \
        f"{(diff > 0).sum()} of {diff.size} values differ (by up to {diff.max()})"


@pytest.fixture(scope="module")
def model(live_run):
    return load_model(live_run, "cpu")


def test_each_hop_is_what_imagine_makes_of_that_second(live_run, tmp_path):
    # Both command-line tools on one real file, hop 1 s so the live windows are imagine's windows
    # (0-1 s, 1-2 s, ...), with a seed other than the default. -n 8: imagine draws one window per
    # generator call (PICTURES_PER_CALL = 8), as the live loop does, so the dropout noise of the
    # k-th window is the same draw in both. Both on the fast path at imagine's precision (fp32; live's
    # default is bf16 where the CPU has it).
    wav = write_wav(tmp_path / "four.wav", seconds_apart(4))
    res = subprocess.run(live_cmd(wav, "--run", live_run, "--record", tmp_path / "rec", "--hop", "1", "-n", "8",
                                  "--seed", "7", "--precision", "fp32", fast="auto"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "s2i_model.cli", "imagine", str(wav), "--run", str(live_run),
                          "-n", "8", "--seed", "7", "-o", str(tmp_path / "grid.png"), "--out-dir", str(tmp_path / "im")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    live = recorded(tmp_path / "rec")
    assert [t for t, _ in live] == [1.0, 2.0, 3.0, 4.0]
    for t, pictures in live:
        start = t - 1.0
        imagined = np.stack([png(tmp_path / "im" / f"four_{start:07.1f}s_{k}.png") for k in range(8)])
        same_pictures(pictures, imagined)
    # and the windows really differ: the comparison above is not of four copies of one picture
    assert all(not np.array_equal(live[0][1], p) for _, p in live[1:])


def reference(model, audio: np.ndarray, starts: list[float], n: int, seed: int):
    """What `imagine` makes of those seconds of ``audio``, one window per generator call in order
    (as the live loop draws them): uint8 pictures [windows, n, H, W, 3] and the float pictures the
    class line is computed from, [windows, n, 3, H, W]."""
    mels = torch.stack([model.norm(m) for m in features.log_mel_segments(audio, 0.0, starts, 1.0, SR)])
    as_bytes = picture_bytes(model, mels, n, seed, per_call=n)  # per_call = n: one window per call
    torch.manual_seed(seed)
    with torch.no_grad():
        floats = [model.sound_pictures(mels[i:i + 1], n, None)[0].float() for i in range(len(mels))]
    return as_bytes, floats


def classifier_says(classifier, pictures: torch.Tensor) -> tuple[str, float]:
    """The class a real-frame classifier sees in n pictures: its softmax averaged over them."""
    with torch.no_grad():
        p = torch.softmax(classifier(pictures), 1).mean(0)
    return CLASSES[int(p.argmax())], float(p.max())


def test_half_hops_are_the_files_windows_in_order(model, live_run, tmp_path):
    # The Python API, hop 0.5: window k is the second of the file that starts at k / 2 s, drawn
    # with the session's seed in stream order; its class line is the run's frame classifier's
    # reading of those very pictures.
    from s2i_model.live.session import load_classifier

    audio = seconds_apart(4)
    wav = write_wav(tmp_path / "four.wav", audio)
    # threads=0: torch's own setting, the one the reference below runs with in this process; the eager
    # networks, as the reference's (the fast path's own pictures: tests/s2i_model/test_fast.py)
    summary = run_session(LiveOptions(run=str(live_run), input=str(wav), hop=0.5, n=2, seed=3, serve=False,
                                      record=str(tmp_path / "rec"), threads=0, fast="eager"), log=lambda *_: None)
    assert summary.error is None and summary.made == 7 and summary.quiet == 0
    lines = journal(tmp_path / "rec")
    live = recorded(tmp_path / "rec")
    starts = [t - 1.0 for t, _ in live]
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    want, floats = reference(model, audio, starts, n=2, seed=3)
    for (_, got), ref in zip(live, want):
        same_pictures(got, ref)
    clf, _ = load_classifier(live_run, None, model, model.device)
    for line, pictures in zip(lines, floats):
        label, confidence = classifier_says(clf, pictures)
        assert (line["class"], line["confidence"]) == (label, pytest.approx(confidence, abs=1e-4)), line


def test_two_sounds_differ_under_the_same_dropout_noise(model):
    # The same seed draws the same dropout masks: the same window twice gives the same pictures, so
    # two windows whose pictures differ differ by their sound.
    audio = seconds_apart(2)

    def pictures(second: int) -> np.ndarray:
        got = []
        loop.run(ArraySource(audio[second * SR:(second + 1) * SR], SR), Windower(1.0, SR, 1.0),
                 loop.Imaginer(model, n=2, seed=5), on_result=got.append)
        assert len(got) == 1 and got[0].pictures is not None
        return got[0].pictures

    first, again, other = pictures(0), pictures(0), pictures(1)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # (by little: the tiny run hardly listens, see same_pictures)


# ---- the class line, on a stream of a build's own test sounds

@pytest.fixture(scope="module")
def copying_run(live_run, tiny_build, tmp_path_factory) -> Path:
    """A run whose pictures are real frames: the retrieval reference row over the live run's audio
    space (a test sound's pictures are the frames of its nearest train sounds), with a real-frame
    classifier trained long enough (60 epochs, as the learning tests' judge) to tell the classes'
    frames apart. The one-epoch run's own pictures all look alike to any classifier: every class
    line would name one class, and a class line fixed to one class would pass."""
    from s2i_model.evaluate.realframe import frame_classifier
    from s2i_model.evaluate.reference import write_reference

    run = tmp_path_factory.mktemp("copying") / "run"
    write_reference("retrieval", run, data=str(tiny_build), space=live_run)
    frame_classifier(tiny_build, len(CLASSES), cache=run / "frame-classifier.pt", epochs=60)
    return run


def the_test_sounds(build: Path) -> tuple[np.ndarray, list[str]]:
    """The build's test sounds one after another, each its 1 s as the builder decoded it, and
    their classes."""
    from s2i_data import deep
    from s2i_data.readers import Build

    rows = Build.open(build).manifest().query("split == 'test'").sort_values("key")
    audio = []
    for r in rows.itertuples():
        decoded = deep.decode_like_builder(r.source, [float(r.start_s)], 1.0, SR, 96)
        i = int(round((float(r.start_s) - decoded.start_s) * SR))
        audio.append(decoded.samples[i:i + SR])
        assert len(audio[-1]) == SR
    return np.concatenate(audio), list(rows["class"])


def test_the_class_line_is_what_a_real_frame_classifier_sees(copying_run, tiny_build, tmp_path):
    from s2i_model.evaluate.realframe import FrameClassifier
    from s2i_model import checkpoint
    from s2i_model.evaluate.reference import RetrievalModel
    from s2i_model.live.session import FRAME_CLASSIFIER

    audio, classes = the_test_sounds(tiny_build)
    wav = write_wav(tmp_path / "test-sounds.wav", audio)
    res = subprocess.run(live_cmd(wav, "--run", copying_run, "--record", tmp_path / "rec", "--hop", "1", "-n", "2"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = journal(tmp_path / "rec")
    assert [x["t"] for x in lines] == [float(k + 1) for k in range(len(classes))] and not any(x["quiet"] for x in lines)

    # The same windows computed here, independently: the file's seconds, the frames retrieved for
    # them, and the classifier's reading of those frames.
    space = RetrievalModel.load(json.loads((copying_run / "reference.json").read_text())["space"], str(tiny_build),
                                "cpu")
    clf = FrameClassifier(len(CLASSES))
    clf.load_state_dict(checkpoint.load(copying_run / FRAME_CLASSIFIER, "cpu")["model"])
    clf.eval()
    mels = torch.stack([space.norm(m) for m in features.log_mel_segments(audio, 0.0, list(range(len(classes))), 1.0, SR)])
    seen = []
    for k, line in enumerate(lines):
        frames = space.sound_pictures(mels[k:k + 1], 2)[0]
        shown = np.stack([png(tmp_path / "rec" / p) for p in line["pictures"]])
        assert np.array_equal(shown, frames.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()), k
        label, confidence = classifier_says(clf, frames)
        assert (line["class"], line["confidence"]) == (label, pytest.approx(confidence, abs=1e-4)), (k, line)
        assert line["shown"] == (confidence >= 2 / len(CLASSES))  # the default gate: twice chance
        seen.append(label)
    # different sounds, different class lines: a line fixed to one class, or lagging a window, fails above
    assert len(set(seen)) >= 3, seen
    assert sum(s == c for s, c in zip(seen, classes)) >= len(classes) // 2, list(zip(classes, seen))


def test_a_reference_run_live(copying_run, tiny_build, tmp_path):
    # The retrieval row hears sound like a model; the real-frames row has nothing to hear with:
    # one line, not an internal error.
    from s2i_model.evaluate.reference import write_reference

    write_wav(tmp_path / "two.wav", seconds_apart(2))
    write_reference("real", tmp_path / "real", data=str(tiny_build))
    res = subprocess.run(live_cmd(tmp_path / "two.wav", "--run", tmp_path / "real"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 1 and "real-frames reference" in res.stderr and "internal error" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    # imagine on a file: the same one line (exit 2: the run given is not one that draws)
    res = subprocess.run([sys.executable, "-m", "s2i_model.cli", "imagine", str(tmp_path / "two.wav"), "--run",
                          str(tmp_path / "real")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "real-frames reference" in res.stderr and "internal error" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
