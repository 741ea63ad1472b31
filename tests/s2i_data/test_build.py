"""build end to end: synth → build → verify → inspect, awkward inputs, bad arguments, refusal
to mix configurations, and resumption after kill -9 giving the same bytes as a clean build."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from badcorpus import make_bad_corpus
from childprocs import ctrl_c_as_at_a_terminal

CLASSES = "baby,dog,rail,fireworks,water"


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"s2i-data {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every shard and manifest (not build.json: it records library versions)."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tar"))
    names += ["manifest.parquet", "videos.parquet", "stats.json"]
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def on_disk(folder: Path) -> dict[str, tuple]:
    """Every file and folder below ``folder`` as the filesystem sees it: (mtime ns, inode,
    bytes). Equal before and after means nothing was written, replaced or touched."""
    got = {}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        got[str(p.relative_to(folder))] = (st.st_mtime_ns, st.st_ino, p.read_bytes() if p.is_file() else None)
    return got


@pytest.fixture(scope="module")
def built(synth_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "shards"
    cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(out),
        "--shard-size", "16", "--workers", "2", "--keep-audio")
    return out


def test_build_layout_and_contract(built):
    for name in ("manifest.parquet", "videos.parquet", "stats.json", "build.json"):
        assert (built / name).is_file()
    manifest = pd.read_parquet(built / "manifest.parquet")
    assert list(manifest.columns)[:10] == ["key", "split", "shard", "class", "class_index", "video_id",
                                           "segment_index", "start_s", "end_s", "source"]
    counts = manifest.groupby(["split", "class"]).size().unstack()
    assert set(counts.index) == {"train", "val", "test"}
    assert (counts.nunique(axis=1) == 1).all()  # balanced in every split
    stats = json.loads((built / "stats.json").read_text())
    assert stats["complete"] and stats["balanced"]
    assert len(stats["train_logmel"]["mean"]) == 128
    assert stats["train_logmel"]["count"] == 100 * int(counts.loc["train"].sum())


def test_plain_webdataset_reads_the_shards(built):
    import webdataset as wds

    urls = sorted(str(p) for p in (built / "train").glob("*.tar"))
    n = 0
    classes = set()
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        assert sample["mel.npy"].shape == (100, 128) and sample["mel.npy"].dtype == np.float32
        assert sample["png"].shape == (96, 96, 3) and sample["png"].dtype == np.uint8
        assert "." not in sample["__key__"]
        assert sample["json"]["key"] == sample["__key__"]
        classes.add(int(sample["cls"]))
        n += 1
    assert n == json.loads((built / "stats.json").read_text())["counts"]["train"]["dog"] * 5
    assert classes == {0, 1, 2, 3, 4}


def test_flac_member_holds_the_segment_waveform(built):
    import io

    import soundfile
    import webdataset as wds

    url = sorted(str(p) for p in (built / "test").glob("*.tar"))[0]
    sample = next(iter(wds.WebDataset([url], shardshuffle=False)))
    wave, sr = soundfile.read(io.BytesIO(sample["flac"]))
    assert sr == 16000 and wave.shape == (16000,)


def test_verify_and_inspect(built, tmp_path):
    v = cli("verify", str(built))
    assert "FAIL" not in v.stdout and "verified" in v.stdout
    png = tmp_path / "sheet.png"
    i = cli("inspect", str(built), "--png", str(png))
    assert "train" in i.stdout
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 500 and im.size[1] > 5 * 128


def test_verify_catches_a_tampered_shard(built, tmp_path):
    import shutil
    import tarfile

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    victim = sorted((copy / "val").glob("*.tar"))[0]
    with tarfile.open(victim) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(victim, "w") as tf:  # drop one sample's members
        first_key = members[0][0].name.split(".")[0]
        for m, data in members:
            if not m.name.startswith(first_key + "."):
                import io

                tf.addfile(m, io.BytesIO(data))
    r = cli("verify", str(copy), check=False)
    assert r.returncode == 1 and "missing" in r.stdout


def test_rebuild_is_reproducible_and_a_rerun_is_a_noop(built, synth_videos, tmp_path):
    before = digest(built)
    files = on_disk(built)
    assert files["_build/lock"][2] == b""  # the lock file stays, empty while no build runs
    r = cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(built),
            "--shard-size", "16", "--workers", "1", "--keep-audio")
    assert "resumed" in r.stdout and "already complete: nothing written" in r.stdout
    # Not one file rewritten (not even with the same bytes), created, removed or touched,
    # the lock file included.
    assert on_disk(built) == files
    other = tmp_path / "again"
    cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(other),
        "--shard-size", "16", "--workers", "1", "--keep-audio")
    assert digest(other) == before


def test_a_different_configuration_is_refused_and_nothing_is_touched(built, synth_videos):
    before = digest(built)
    r = cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(built),
            "--shard-size", "16", "--seed", "5", check=False)
    assert r.returncode == 2
    assert "different build" in r.stderr and "seed" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert digest(built) == before


@pytest.mark.parametrize("args,message", [
    (["--classes", "dog,unicorn"], "unicorn"),
    (["--root", "/no/such/folder"], "no such folder"),
    (["--splits", "0.5,0.5,0.5"], "splits"),
    (["--image-format", "gif"], "image-format"),
])
def test_bad_arguments_fail_fast_with_one_line(synth_videos, tmp_path, args, message):
    base = {"--root": str(synth_videos), "--classes": "dog,water", "--out": str(tmp_path / "o")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    r = cli("build", *flat, check=False)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_empty_audioset_csv_fails_fast(synth_videos, tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    r = cli("build", "--source", "audioset", "--csv", str(csv), "--root", str(synth_videos),
            "--classes", "dog", "--out", str(tmp_path / "o"), check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_output_folder_with_other_files_is_refused(synth_videos, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "precious.txt").write_text("keep me")
    r = cli("build", "--root", str(synth_videos), "--classes", "dog,water", "--out", str(tmp_path / "o"), check=False)
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (tmp_path / "o" / "precious.txt").read_text() == "keep me"


def test_awkward_inputs_are_built_or_recorded(tmp_path):
    cases = make_bad_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    r = cli("build", "--root", str(tmp_path / "corpus"), "--classes", "dog,water", "--out", str(out),
            "--shard-size", "8", "--workers", "2")
    assert "Traceback" not in r.stderr
    videos = pd.read_parquet(out / "videos.parquet")
    by_source = {Path(s).name: row for s, row in zip(videos["source"], videos.to_dict("records"))}
    for case in cases:
        # an unknown class folder is recorded once, as the folder
        row = by_source.get(case.path.name) or by_source.get(case.path.parent.name)
        assert row is not None, f"{case.name} not recorded"
        if case.expect == "ok":
            assert row["status"] == "ok", f"{case.name}: {row['reason']}"
            if case.segments is not None:
                assert int(np.floor(row["duration_s"] + 1e-4)) == case.segments, case.name
        else:
            assert row["status"] in ("skipped", "failed") and row["reason"], case.name
            assert row["segments"] == 0
    cli("verify", str(out))
    strict = cli("build", "--root", str(tmp_path / "corpus"), "--classes", "dog,water", "--out", str(out),
                 "--shard-size", "8", "--strict", check=False)
    assert strict.returncode == 1 and "--strict" in strict.stderr


def unfinished_tar(path: Path) -> str | None:
    """Why ``path`` is not a whole tar archive, or None: every member's header and data read to
    the end, then nothing but the end-of-archive zero blocks (at least two) up to the file's end."""
    import tarfile

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "gone"
    if not data or len(data) % 512:
        return f"{len(data)} bytes, not a whole number of 512-byte blocks"
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if m.isfile() and len(tf.extractfile(m).read()) != m.size:
                    return f"member {m.name} cut short"
            end = tf.offset  # just after the last member's data
    except (tarfile.TarError, OSError) as e:
        return f"unreadable: {e}"
    if len(data) - end < 1024 or data[end:].count(0) != len(data) - end:
        return "no end-of-archive blocks after the last member"
    return None


def shards_in_flight(folder: Path) -> tuple[list[Path], list[Path]]:
    """Shards being written: (temporary files, final-named tars still without their marker)."""
    markers = {p.stem for p in (folder / "_build" / "shards").glob("*.json")} if folder.is_dir() else set()
    tmp, unmarked = [], []
    for split in ("train", "val", "test"):
        for p in (folder / split).iterdir() if (folder / split).is_dir() else []:
            if ".tmp-" in p.name:
                tmp.append(p)
            elif p.suffix == ".tar" and p.stem not in markers:
                unmarked.append(p)
    return tmp, unmarked


def partial_under_final_names(folder: Path) -> dict[str, str]:
    """Every final-named shard that is not a whole tar, and every marker whose tar is missing."""
    bad = {}
    for split in ("train", "val", "test"):
        for p in sorted((folder / split).glob("*.tar")) if (folder / split).is_dir() else []:
            if why := unfinished_tar(p):
                bad[str(p.relative_to(folder))] = why
    for m in (folder / "_build" / "shards").glob("*.json"):
        tar = folder / m.stem.split("-")[0] / f"{m.stem}.tar"
        if not tar.exists():
            bad[str(m.relative_to(folder))] = "marker written before its shard"
    return bad


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_resume_after_kill_gives_the_clean_result(synth_videos, tmp_path, sig):
    args = ["build", "--root", str(synth_videos), "--classes", CLASSES, "--shard-size", "4",
            "--workers", "1", "--no-progress"]
    clean = tmp_path / "clean"
    cli(*args, "--out", str(clean))
    killed = tmp_path / "killed"
    # SIGINT back to its default in the child: a test runner started in the background (nohup,
    # `cmd &` in a script) hands its children an ignored SIGINT, which Python then keeps ignoring.
    proc = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ctrl_c_as_at_a_terminal)
    marker_dir = killed / "_build" / "shards"
    total = len(list(clean.rglob("*.tar")))
    # Watched while it runs: a final-named tar without its marker yet (the one being finished)
    # must already be whole whenever we look; a file written in place under its final name would
    # show here part-written. The kill then lands while a shard is being written (its temporary
    # file is there), the moment a partial file would sit under a final name.
    seen_partial: dict[str, str] = {}
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = len(list(marker_dir.glob("*.json"))) if marker_dir.is_dir() else 0
        tmp, unmarked = shards_in_flight(killed)
        for p in unmarked:
            if (why := unfinished_tar(p)) and p.exists():
                seen_partial[str(p.relative_to(killed))] = why
        if done >= 3 and (tmp or seen_partial or done >= total - 2):
            break
        time.sleep(0.002)
    # Frozen first (the CLI and its workers), so that what is checked is what the signal finds;
    # then the whole process group, as a terminal's Ctrl-C or a kill of the job would: the CLI
    # and its workers, mid-shard.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        writing = bool(shards_in_flight(killed)[0])
        assert seen_partial == {} and partial_under_final_names(killed) == {}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
            os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    done = len(list(marker_dir.glob("*.json")))
    assert 3 <= done < total, "the build finished before it could be killed"
    print(f"killed with {done} of {total} shards done, a shard in flight: {writing}")
    r = cli(*args, "--out", str(killed))
    assert "resumed" in r.stdout
    assert digest(killed) == digest(clean)
    cli("verify", str(killed))


def test_audioset_source_end_to_end(synth_videos, tmp_path):
    """Whole videos cut at the CSV window, pre-cut clips, missing files and unknown labels."""
    import shutil

    root = tmp_path / "videos"
    root.mkdir()
    rows = []
    dogs = sorted((synth_videos / "dog").glob("*.mp4"))
    waters = sorted((synth_videos / "water").glob("*.mp4"))
    for i, src in enumerate(dogs):  # whole videos: window 1.0 .. 2.2 s of the file → 1 segment
        ytid = f"dogVideo{i:03d}"
        shutil.copy(src, root / f"{ytid}.mp4")
        rows.append(f'{ytid}, 1.000, 2.200, "/m/05tny_,/m/0jbk"')  # Bark: a descendant of Dog
    for i, src in enumerate(waters):  # already cut, named <YTID>_<start ms>_<end ms>
        ytid = f"wat-Video{i:02d}"
        shutil.copy(src, root / f"{ytid}_30000_40000.mp4")
        rows.append(f'{ytid}, 30.000, 40.000, "/m/0j6m2"')
    rows.append('missingVid1, 0.000, 10.000, "/m/0bt9lr"')
    rows.append('notOurClass, 0.000, 10.000, "/m/09x0r"')  # Speech: not part of the corpus
    csv = tmp_path / "segments.csv"
    csv.write_text("# Segments csv created Sun Mar  5 10:54:31 2017\n"
                   "# num_ytids=9, num_segs=9, num_unique_labels=3, num_positive_labels=9\n"
                   "# YTID, start_seconds, end_seconds, positive_labels\n" + "\n".join(rows) + "\n")
    out = tmp_path / "as"
    cli("build", "--source", "audioset", "--csv", str(csv), "--root", str(root), "--classes", "dog,water",
        "--out", str(out), "--shard-size", "8")
    cli("verify", str(out))
    manifest = pd.read_parquet(out / "manifest.parquet")
    dog = manifest[manifest["class"] == "dog"]
    assert (dog["start_s"] >= 1.0).all() and (dog["end_s"] <= 2.2 + 1e-6).all()
    assert (dog["segment_index"] == 0).all()
    videos = pd.read_parquet(out / "videos.parquet")
    missing = videos[videos["video_id"].str.startswith("missingVid1")]
    assert len(missing) == 1 and missing["status"].iloc[0] == "skipped" and "no video file" in missing["reason"].iloc[0]
    assert not videos["video_id"].str.startswith("notOurClass").any()


def test_file_name_that_is_not_utf8_is_recorded_not_fatal(synth_videos, tmp_path):
    import shutil

    root = tmp_path / "v"
    for cls in ("dog", "water"):
        shutil.copytree(synth_videos / cls, root / cls)
    latin1 = os.fsencode(str(root / "dog")) + b"/chien_\xe9t\xe9.mp4"  # Latin-1 bytes, not UTF-8
    shutil.copy(sorted((synth_videos / "dog").glob("*.mp4"))[0], latin1)
    out = tmp_path / "o"
    r = cli("build", "--root", str(root), "--classes", "dog,water", "--out", str(out), "--shard-size", "8")
    assert "Traceback" not in r.stderr
    videos = pd.read_parquet(out / "videos.parquet")
    bad = videos[videos["reason"].fillna("").str.contains("UTF-8")]
    assert len(bad) == 1 and bad["status"].iloc[0] == "skipped"
    cli("verify", str(out))
