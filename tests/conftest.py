"""Shared fixtures: small real corpora made with ffmpeg, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Every torch process of the suite, in-process and children, on one thread, set before torch is
# imported: the learning tests' figures are then the same whatever runs beside them (two threads
# sum floats in another order, and spin waiting for each other on a loaded machine), and `make
# test`'s two pytest-xdist workers fill the two cores between them (docs/testing.md).
os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np
import pytest

from s2i_data.media import ffmpeg_exe


def encode_frames(path: Path, frames: np.ndarray, fps: float = 25.0, codec: str = "ffv1",
                  audio: np.ndarray | None = None, sr: int = 16000, extra: list[str] | None = None) -> Path:
    """Write uint8 [n, h, w, 3] frames (and optional mono float audio) to a real video file."""
    n, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    tmp_wav = None
    if audio is not None:
        import soundfile

        tmp_wav = path.with_suffix(".in.wav")
        soundfile.write(tmp_wav, audio, sr, subtype="FLOAT")
        cmd += ["-i", str(tmp_wav)]
    vcodec = ["-c:v", "ffv1"] if codec == "ffv1" else ["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast"]
    cmd += vcodec + (["-c:a", "flac"] if audio is not None else []) + (extra or []) + [str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    if tmp_wav:
        tmp_wav.unlink()
    return path


def under_ci() -> bool:
    """CI set (CI services set it; .ci/run too): `make test` has installed what every test needs."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _failed_skip(report) -> None:
    """A skipped report, failed instead: under CI a missing browser, package, device or anything else
    a test would skip for is a broken set-up, not a reason to pass without that test."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{reason} (CI={os.environ['CI']}: no test may skip, so this fails instead)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI no test skips: pytest.skip in a test or a fixture, skipif, importorskip all fail."""
    report = (yield).get_result()
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        _failed_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """... and neither does a module that skips itself as a whole."""
    report = (yield).get_result()
    if report.skipped and under_ci():
        _failed_skip(report)


def pytest_collection_modifyitems(config, items):
    """The longest tests first, the longest of all first (``slow(minutes)``; ``slow`` alone: 1):
    `make test`'s pytest-xdist workers take whole modules in this order (``--dist loadscope
    --no-loadscope-reorder``), so the two longest learning runs start at once on different workers
    and the short tests fill in around them, instead of one starting last and running alone."""
    def minutes(item) -> float:
        mark = item.get_closest_marker("slow")
        return 0 if mark is None else (mark.args[0] if mark.args else 1)

    items.sort(key=minutes, reverse=True)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _environment_as_found():
    """Each test leaves os.environ as it found it: every later subprocess of the session inherits
    it (a LocalCluster's nannies once left OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_=65536
    there, and every training run after them took twice as long)."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(autouse=True)
def _torch_threads_as_found():
    """Each test leaves torch's thread count as it found it: `s2i-model live`'s session sets one
    thread for the process (docs/performance.md), and a test that runs a session in-process
    otherwise left every later in-process training on one thread, with other float sums (the
    learning judge drew other agreements and the adversarial-term test saw no step)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory) -> Path:
    from s2i_data.synth import synth

    root = tmp_path_factory.mktemp("synth")
    synth(root, videos_per_class=5, seed=1, min_seconds=2.2, max_seconds=3.6)
    return root


@pytest.fixture(scope="session")
def tiny_build(synth_videos, tmp_path_factory) -> Path:
    """A tiny real build (shards of 8) shared by the model tests and the damaged-shard tests."""
    out = tmp_path_factory.mktemp("tiny") / "shards"
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(synth_videos), "--classes",
                    "baby,dog,rail,fireworks,water", "--out", str(out), "--shard-size", "8", "--workers", "2",
                    "--no-progress"], check=True, capture_output=True)
    return out


def find_browser() -> tuple[str, str] | None:
    """Debian's chromium and its chromedriver (.ci/install-browser puts them there)."""
    import shutil

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
                                                    if Path(p).is_file()), None)
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium():
    """A real headless Chromium driven by Selenium, for the pages the tools write and serve.

    Missing, the tests that need it are skipped with the advice (under CI they fail, as every
    skip does: `make test` installs the browser there)."""
    found = find_browser()
    if not found:
        pytest.skip("no chromium + chromedriver found: run .ci/install-browser (apt-get install chromium chromium-driver)")
    from selenium import webdriver  # not importorskip: with a browser present, a missing selenium is a failure
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,820"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(found[1]), options=opts)  # an explicit driver: no Selenium Manager download
    yield d
    d.quit()


LEARNING_CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def made_once(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` done once for the whole session, also under pytest-xdist, whose workers are
    separate processes with a session fixture each: the first worker to ask makes it in the folder
    the workers share, under a lock, and the others wait for it and use the same files. Only for
    what the tests read and never change."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    import fcntl
    import shutil

    folder = tmp_path_factory.getbasetemp().parent / name  # this run's, shared by its workers
    with open(folder.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def learning_data(tmp_path_factory) -> Path:
    """The learning tests' data, built once: 20 synthetic videos a class, seed 3, 30 % of the
    videos held out for test (~100 test sounds): bench/learning.py's seed-3 data, on which the
    thresholds are calibrated."""
    from s2i_data.synth import synth

    def make(root: Path) -> None:
        synth(root / "videos", videos_per_class=20, seed=3)
        subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root / "videos"), "--classes",
                        ",".join(LEARNING_CLASSES), "--out", str(root / "shards"), "--shard-size", "32",
                        "--splits", "0.6,0.1,0.3", "--no-progress"], check=True, capture_output=True)
    return made_once(tmp_path_factory, "learn", make) / "shards"


@pytest.fixture(scope="session")
def learning_judge(learning_data, tmp_path_factory):
    """The independent judge of the learning tests, trained once for all of them: a classifier of
    the real train frames of `learning_data` (60 epochs, seeded). Made apart from the data so that
    the two longest learning tests, which ask for it after their training
    (``request.getfixturevalue``), both start training as soon as the data exist instead of one
    waiting ~40 s for the other worker to train the judge too."""
    import torch

    from s2i_model.evaluate.realframe import FrameClassifier

    def make(folder: Path) -> None:
        # in a fresh process, as bench/learning.py trains it (in this one, earlier in-process tests
        # leave global torch state behind, deterministic algorithms from a trainer's seeding, which
        # gave another judge and other agreements than the calibration's)
        code = ("import sys, torch; from s2i_model.evaluate.realframe import train_frame_classifier; "
                "m = train_frame_classifier(sys.argv[1], int(sys.argv[2]), epochs=60); "
                "torch.save(m.state_dict(), sys.argv[3])")
        subprocess.run([sys.executable, "-c", code, str(learning_data), str(len(LEARNING_CLASSES)),
                        str(folder / "judge.pt")], check=True, capture_output=True)

    judge = FrameClassifier(len(LEARNING_CLASSES))
    judge.load_state_dict(torch.load(made_once(tmp_path_factory, "learn-judge", make) / "judge.pt", weights_only=True))
    return judge.eval()
