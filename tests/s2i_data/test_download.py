"""`s2i-data download` against a real HTTP server on 127.0.0.1 (the `Mirror` below) that serves
real mp4 files made with ffmpeg, through `--url-template`, with the real yt-dlp and ffmpeg; then
`s2i-data build --source vggsound` and `verify` on what it wrote. Nothing reaches the internet.

The mirror answers by id: ``ok``: the file (200, whole body; ``Range`` ignored, as by many plain
servers); ``404``; ``410`` (Gone); ``private`` (403 with YouTube's words "Private video");
``429once``: 429 with ``Retry-After: 1`` on the first request, the file afterwards; ``reset``: the
connection reset (RST) without an answer; ``trunc``: 200 with the full Content-Length, then 8 % of
the body and a close; ``slow``: the file in small pieces over ``slow_s`` seconds. Every request is
logged as (time.monotonic(), id, status).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from s2i_data.download.fetch import check_clip, classify
from s2i_data.download.ratelimit import parse_rate
from s2i_data.download.rows import read_rows
from s2i_data.media import ffmpeg_exe

from childprocs import ctrl_c_as_at_a_terminal


class Mirror:
    def __init__(self, files: dict[str, Path], behaviour: dict[str, str], slow_s: float = 2.0) -> None:
        self.data = {k: Path(v).read_bytes() for k, v in files.items()}
        self.behaviour = dict(behaviour)
        self.slow_s = slow_s
        self.log: list[tuple[float, str, int]] = []
        self.cookies: list[tuple[str, str]] = []  # (id, Cookie header) of every request
        self.lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                mirror.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{{ytid}}.mp4"

    def __enter__(self) -> "Mirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self, ytid: str) -> list[tuple[float, int]]:
        with self.lock:
            return [(t, s) for t, i, s in self.log if i == ytid]

    def _start_mp4(self, h, ytid: str) -> bytes:
        """Answers 200 with the headers of ``ytid``'s whole file; its bytes are the caller's to send."""
        body = self.data[ytid]
        self._note(ytid, 200)
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        return body

    def _note(self, ytid: str, status: int) -> int:
        with self.lock:
            seen = sum(1 for _, i, _ in self.log if i == ytid)
            self.log.append((time.monotonic(), ytid, status))
        return seen

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        ytid = h.path.strip("/").rsplit(".", 1)[0]
        with self.lock:
            self.cookies.append((ytid, h.headers.get("Cookie", "")))
        kind = self.behaviour.get(ytid, "404")
        if kind == "429once" and not self.requests(ytid):
            self._note(ytid, 429)
            h.send_response(429, "Too Many Requests")
            h.send_header("Retry-After", "1")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind in ("404", "410", "private"):
            code, words = {"404": (404, "Not Found"), "410": (410, "Gone"),
                           "private": (403, "Private video. Sign in if you've been granted access to this video")}[kind]
            self._note(ytid, code)
            h.send_response(code, words)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind == "reset":
            self._note(ytid, 0)
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()
            return
        body = self._start_mp4(h, ytid)
        try:
            if kind == "trunc":
                h.wfile.write(body[: len(body) * 8 // 100])
                h.wfile.flush()
                h.close_connection = True
            elif kind == "slow":
                pieces = 40
                step = -(-len(body) // pieces)
                for i in range(0, len(body), step):
                    h.wfile.write(body[i:i + step])
                    h.wfile.flush()
                    time.sleep(self.slow_s / pieces)
            else:
                h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (ffmpeg has its window): normal


# ------------------------------------------------------------------------------------ fixtures

def make_video(path: Path, freq: int, seconds: float = 14.0) -> Path:
    """A real H.264 + AAC mp4: a moving test picture and a tone."""
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                    "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=16000",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-g", "50", "-c:a", "aac", "-movflags", "+faststart", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mirror-files")
    return {"dog": make_video(folder / "dog.mp4", 440), "baby": make_video(folder / "baby.mp4", 880)}


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


# One VGGSound-format CSV: ids name their behaviour on the mirror.
ROWS = {  # ytid: (label, split, behaviour, expected status)
    "dogA": ("dog barking", "train", "ok", "ok"),
    "dogB": ("dog barking", "train", "ok", "ok"),
    "dogC": ("dog barking", "train", "ok", "ok"),
    "dogT": ("dog barking", "test", "ok", "ok"),
    "babyA": ("baby crying", "train", "ok", "ok"),
    "babyB": ("baby crying", "train", "ok", "ok"),
    "babyC": ("baby crying", "train", "429once", "ok"),
    "babyT": ("baby crying", "test", "ok", "ok"),
    "gone1": ("dog barking", "train", "410", "removed"),
    "priv1": ("dog barking", "train", "private", "private"),
    "miss1": ("baby crying", "train", "404", "unavailable"),
    "reset1": ("dog barking", "train", "reset", "error"),
    "trunc1": ("baby crying", "test", "trunc", "error"),
    "celloA": ("playing cello", "train", "ok", None),  # not requested: not part of the job
}
BAD_LINES = ['../evil,2,dog barking,train', 'negT,-5,dog barking,train', 'garbage line without fields',
             'dogZ,abc,dog barking,train']
CLASSES = "dog barking,baby crying"


def write_csv(path: Path) -> Path:
    lines = [f'{y},2,"{label}",{split}' for y, (label, split, _, _) in ROWS.items()]
    path.write_text("\n".join(lines[:5] + BAD_LINES + lines[5:]) + "\n")
    return path


@pytest.fixture(scope="module")
def downloaded(videos, tmp_path_factory):
    """One download run into ROOT; the mirror stays up for the tests that re-run it."""
    base = tmp_path_factory.mktemp("download")
    files = {y: videos["dog" if label.startswith("dog") or y.startswith("cello") else "baby"]
             for y, (label, _, _, _) in ROWS.items()}
    behaviour = {y: b for y, (_, _, b, _) in ROWS.items()}
    with Mirror(files, behaviour) as mirror:
        csv = write_csv(base / "vggsound.csv")
        root = base / "vggsound"
        t0 = time.monotonic()
        run = cli("download", "--csv", str(csv), "--format", "vggsound", "--classes", CLASSES, "--out", str(root),
                  "--url-template", mirror.template, "--workers", "3", "--attempts", "3", "--backoff", "0.1",
                  "--rate", "0", "--no-progress")
        seconds = time.monotonic() - t0
        yield {"run": run, "csv": csv, "root": root, "mirror": mirror, "base": base, "seconds": seconds}


def table(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "download.parquet").set_index("key")


# ------------------------------------------------------------------------------------ tests

def test_every_status_retries_and_files(downloaded):
    run, root, mirror = downloaded["run"], downloaded["root"], downloaded["mirror"]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    print(f"download of {len(ROWS) - 1} rows: {downloaded['seconds']:.1f} s")
    t = table(root)
    for ytid, (label, split, _, status) in ROWS.items():
        key = f"{ytid}_000002"
        if status is None:
            assert key not in t.index and not mirror.requests(ytid)  # not requested, never fetched
            continue
        row = t.loc[key]
        assert row["status"] == status, (ytid, row["status"], row["reason"])
        assert row["split"] == split and row["start"] == 2 and row["end"] == 12
        cls = "dog" if label.startswith("dog") else "baby"
        assert row["class"] == cls
        clip = root / cls / f"{key}.mp4"
        if status == "ok":
            assert clip.is_file() and row["file"] == f"{cls}/{key}.mp4"
            assert row["bytes"] == clip.stat().st_size
            assert row["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
            assert 9.0 <= row["duration"] <= 10.5
            assert check_clip(clip, 10.0) >= 9.0  # both streams, the whole window
        else:
            assert not clip.exists() and row["file"] == "" and row["bytes"] == 0
    # transient failures: retried up to --attempts, then error with the reason
    assert t.loc["reset1_000002", "attempts"] == 3 and "reset" in t.loc["reset1_000002", "reason"].lower()
    assert t.loc["trunc1_000002", "attempts"] == 3 and "truncated" in t.loc["trunc1_000002", "reason"]
    assert len([r for r in mirror.requests("reset1")]) == 3
    # permanent ones: one attempt each
    for ytid in ("gone1", "priv1", "miss1"):
        assert t.loc[f"{ytid}_000002", "attempts"] == 1, ytid
    assert "Private video" in t.loc["priv1_000002", "reason"]
    # 429: retried after the Retry-After second (the backoff alone would be 0.1 s)
    babyc = mirror.requests("babyC")
    assert babyc[0][1] == 429 and babyc[1][1] == 200
    assert babyc[1][0] - babyc[0][0] >= 0.95, babyc
    assert t.loc["babyC_000002", "attempts"] == 2
    # bad lines: recorded as skipped with the line named, never fetched
    skipped = t[t["status"] == "skipped"]
    assert len(skipped) == len(BAD_LINES)
    reasons = " | ".join(skipped["reason"])
    for words in ("line 6: YouTube id '../evil'", "line 7: start -5 s is negative", "line 8: expected 4 fields",
                  "line 9: start 'abc' is not a number"):
        assert words in reasons, reasons
    assert not (root.parent / "evil").exists() and not any("evil" in str(p) for p in root.rglob("*"))
    # no work folder and no partial file is left; the journal was folded into the parquet
    assert not [p for p in root.rglob("*") if ".part" in p.name]
    assert not (root / ".download" / "journal.jsonl").exists()
    assert "ok" in run.stdout and "unavailable" in run.stdout and "skipped" in run.stdout  # the summary


def test_rerun_skips_done_and_permanent_and_retries_errors(downloaded):
    root, mirror, csv = downloaded["root"], downloaded["mirror"], downloaded["csv"]
    before = {y: len(mirror.requests(y)) for y in ROWS}
    args = ["download", "--csv", str(csv), "--classes", CLASSES, "--out", str(root), "--url-template", mirror.template,
            "--workers", "3", "--attempts", "1", "--rate", "0", "--no-progress"]
    run = cli(*args)
    assert run.returncode == 0, run.stderr
    after = {y: len(mirror.requests(y)) for y in ROWS}
    again = {y for y in ROWS if after[y] > before[y]}
    assert again == {"reset1", "trunc1"}  # errors only: ok and permanent failures are kept
    t = table(root)
    assert t.loc["reset1_000002", "attempts"] == 4  # counted over runs
    assert "0 attempted" not in run.stdout and "(2 attempted now)" in run.stdout
    run = cli(*args, "--retry-failed")
    assert run.returncode == 0, run.stderr
    retried = {y for y in ROWS if len(mirror.requests(y)) > after[y]}
    assert retried == {"reset1", "trunc1", "gone1", "priv1", "miss1"}
    assert table(root).loc["gone1_000002", "status"] == "removed"


def test_build_vggsound_reads_the_download(downloaded, tmp_path):
    root, csv = downloaded["root"], downloaded["csv"]
    out = tmp_path / "vgg2"
    run = cli("build", "--source", "vggsound", "--csv", str(csv), "--root", str(root), "--classes", CLASSES,
              "--out", str(out), "--workers", "2", "--no-progress")
    assert run.returncode == 0, run.stderr
    videos = pd.read_parquet(out / "videos.parquet").set_index("video_id")
    ok = [f"{y}_000002" for y, (*_, status) in ROWS.items() if status == "ok"]
    assert set(videos.index[videos["status"] == "ok"]) == set(ok)
    # the official test rows are the test split; train rows are split into train and val
    assert set(videos.index[videos["split"] == "test"]) == {"dogT_000002", "babyT_000002"}
    assert set(videos.loc[[v for v in ok if "T_" not in v], "split"]) == {"train", "val"}
    # rows that were not downloaded are recorded with download.parquet's reason
    assert videos.loc["trunc1_000002", "status"] == "skipped"
    assert "not downloaded (error" in videos.loc["trunc1_000002", "reason"]
    assert "not downloaded (removed" in videos.loc["gone1_000002", "reason"]
    info = json.loads((out / "build.json").read_text())
    assert "official VGGSound test rows -> test" in info["split_rule"]
    assert info["config"]["classes"] == ["dog", "baby"]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert set(manifest.loc[manifest["split"] == "test", "video_id"]) == {"dogT_000002", "babyT_000002"}
    check = cli("verify", str(out))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "verified" in check.stdout


def in_flight(folder: Path) -> list[Path]:
    """The part folders (``.part-KEY-PID-THREAD``) of clips not yet under their final name (a
    finished clip's own part folder outlives its rename for a moment)."""
    done = {p.stem for p in folder.glob("*.mp4")}
    return [p for p in folder.glob(".part-*") if p.name[len(".part-"):].rsplit("-", 2)[0] not in done]


def test_kill_9_leaves_no_partial_file_and_rerun_resumes(videos, tmp_path):
    ids = [f"slow{i}" for i in range(4)]
    with Mirror({y: videos["dog"] for y in ids}, {y: "slow" for y in ids}, slow_s=1.5) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("ytid,start,end,class\n" + "".join(f"{y},1,11,dog\n" for y in ids))
        root = tmp_path / "mirror"
        args = [sys.executable, "-m", "s2i_data.cli", "download", "--csv", str(csv), "--format", "plain",
                "--out", str(root), "--url-template", mirror.template, "--workers", "1", "--rate", "0", "--no-progress"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            # a clip finished and the next one in flight (its part folder there): the moment to
            # kill, waited for rather than guessed
            while time.monotonic() < deadline and not (list((root / "dog").glob("*.mp4")) and in_flight(root / "dog")):
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the download itself
            proc.wait()
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its ffmpeg too, so that nothing writes on
            except ProcessLookupError:
                pass
        finals = sorted((root / "dog").glob("*.mp4"))
        assert 1 <= len(finals) < len(ids)
        for clip in finals:  # whatever is under a final name is a whole clip
            assert check_clip(clip, 10.0) >= 9.0
        assert in_flight(root / "dog")  # killed mid-transfer
        run = cli(*args[3:])
        assert run.returncode == 0, run.stderr
    t = table(root)
    assert list(t["status"]) == ["ok"] * 4
    assert sorted(p.name for p in (root / "dog").iterdir()) == [f"{y}_000001.mp4" for y in ids]
    for clip in finals:  # a clip finished before the kill is kept, not fetched again
        assert t.loc[clip.stem, "sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert {y: len(mirror.requests(y)) for y in ids}[finals[0].stem.split("_")[0]] == 2  # 1 attempt: page + media


def test_bad_arguments_one_line_exit_2(downloaded, tmp_path):
    csv, template = downloaded["csv"], downloaded["mirror"].template
    cases = [
        (["--csv", str(tmp_path / "none.csv")], "no such file"),
        (["--csv", str(csv), "--classes", "dgo barking"], "did you mean: 'dog barking'"),
        (["--csv", str(csv), "--url-template", "http://127.0.0.1:9/x.mp4"], "has no {ytid}"),
        (["--csv", str(csv), "--rate", "fast"], "--rate 'fast'"),
        (["--csv", str(csv), "--format", "audioset"], "needs --classes"),
        (["--csv", str(csv), "--format", "nope"], "--format must be one of"),
        (["--csv", str(csv), "--scheduler", "tcp://127.0.0.1:1"], "needs --executor dask"),
    ]
    for extra, words in cases:
        run = cli("download", "--out", str(tmp_path / "root"), "--url-template", template, *extra)
        assert run.returncode == 2, (extra, run.stdout, run.stderr)
        assert words in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_rows_plain_and_audioset(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("# comment\nabc,0,10,Dog\nabd,5,3,dog\nabe,0,10,cat\nabf,0,10\n")
    rows = read_rows(plain, "plain", ["dog"])
    assert [(r.ytid, r.cls, r.reason.split(":")[0]) for r in rows] == [
        ("abc", "dog", ""), ("abd", "", "line 3"), ("abe", "", "line 4"), ("abf", "", "line 5")]
    assert "unknown class 'cat'" in rows[2].reason and "not after start" in rows[1].reason
    assert [r.cls for r in read_rows(plain, "plain", None)] == ["dog", "", "cat", "unlabelled"]
    seg = tmp_path / "balanced_train_segments.csv"
    seg.write_text("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=3, num_segs=3\n"
                   "# YTID, start_seconds, end_seconds, positive_labels\n"
                   '--aE2O5G5WE, 0.000, 10.000, "/m/0bt9lr,/m/05tny_"\n'
                   '--aO5cdqSAg, 30.000, 40.000, "/t/dd00003,/m/0g6b5"\n'
                   '--abc, 30.000, 40.000, "/m/0bt9lr,/m/0g6b5"\n'
                   '--def, 30.000, 40.000, "/m/04rlf"\n')
    rows = read_rows(seg, "audioset", ["dog", "fireworks"])
    assert [(r.ytid, r.cls, r.start, r.end) for r in rows][:2] == [("--aE2O5G5WE", "dog", 0.0, 10.0),
                                                                   ("--aO5cdqSAg", "fireworks", 30.0, 40.0)]
    assert "several requested classes: dog, fireworks" in rows[2].reason and len(rows) == 3
    assert rows[0].key == "--aE2O5G5WE_0_10000"  # a cut clip's name to sources/audioset.py


def test_error_mapping_on_youtube_messages():
    cases = {
        "[youtube] abc: Video unavailable. This video is private": ("private", False),
        "[youtube] abc: Private video. Sign in if you've been granted access to this video": ("private", False),
        "[youtube] abc: Video unavailable. This video has been removed by the uploader": ("removed", False),
        "[youtube] abc: Video unavailable. This video is no longer available because the YouTube account "
        "associated with this video has been terminated.": ("removed", False),
        "[youtube] abc: Video unavailable. This video contains content from X, who has blocked it on copyright grounds": ("removed", False),
        "[youtube] abc: Video unavailable": ("unavailable", False),
        "[youtube] abc: This video is not available in your country": ("unavailable", False),
        "[generic] abc: Unable to download webpage: HTTP Error 404: Not Found": ("unavailable", False),
        "[youtube] abc: Sign in to confirm you’re not a bot. Use --cookies-from-browser": ("error", True),
        "[generic] abc: Unable to download webpage: HTTP Error 429: Too Many Requests": ("error", True),
        "[generic] abc: Unable to download webpage: HTTP Error 503: Service Unavailable": ("error", True),
        "[generic] abc: Unable to download webpage: The read operation timed out": ("error", True),
        "Requested format is not available. Use --list-formats": ("unavailable", False),
        "Postprocessing: Conversion failed!": ("error", False),
    }
    for message, expected in cases.items():
        assert classify(message) == expected, message
    assert parse_rate("2/s") == 2 and parse_rate("30/min") == 0.5 and parse_rate("0") == 0
    with pytest.raises(ValueError):
        parse_rate("2/fortnight")


def test_mirror_of_cut_clips(tmp_path):
    """A mirror holding each 10 s window already cut, named by id and start: {start} in the
    template and --clips (fetch the whole file). Without --clips the window 2..12 s of a 10 s file
    holds 8 s: unavailable for good, with the length, until --retry-failed."""
    clip = make_video(tmp_path / "clip.mp4", 440, seconds=10.0)
    with Mirror({"clipA_000002": clip}, {"clipA_000002": "ok"}) as mirror:
        csv = tmp_path / "vggsound.csv"
        csv.write_text('clipA,2,"dog barking",train\n')
        template = mirror.template.replace("{ytid}", "{ytid}_{start}")
        args = ["download", "--csv", str(csv), "--out", str(tmp_path / "root"), "--url-template", template,
                "--rate", "0", "--attempts", "1", "--no-progress"]
        run = cli(*args)
        assert run.returncode == 0, run.stderr
        t = table(tmp_path / "root")
        assert t.loc["clipA_000002", "status"] == "unavailable"
        assert "the video is 10.0" in t.loc["clipA_000002", "reason"] and "holds 8.0" in t.loc["clipA_000002", "reason"]
        run = cli(*args, "--clips", "--retry-failed")
        assert run.returncode == 0, run.stderr
        t = table(tmp_path / "root")
        assert t.loc["clipA_000002", "status"] == "ok" and t.loc["clipA_000002", "duration"] >= 9.5
        assert (tmp_path / "root" / "dog" / "clipA_000002.mp4").is_file()  # no --classes: the table's alias


def test_audioset_rows_land_where_the_audioset_source_finds_them(videos, tmp_path):
    from s2i_data.classes import resolve_classes
    from s2i_data.sources.audioset import prepare_audioset

    seg = tmp_path / "balanced_train_segments.csv"
    seg.write_text("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=2, num_segs=2\n"
                   "# YTID, start_seconds, end_seconds, positive_labels\n"
                   'asDog, 1.000, 11.000, "/m/0bt9lr,/m/05tny_"\nasFire, 3.500, 13.500, "/m/0g6b5"\n')
    with Mirror({"asDog": videos["dog"], "asFire": videos["baby"]}, {"asDog": "ok", "asFire": "ok"}) as mirror:
        run = cli("download", "--csv", str(seg), "--classes", "dog,fireworks", "--out", str(tmp_path / "as"),
                  "--url-template", mirror.template, "--rate", "0", "--no-progress")  # --format auto: audioset
    assert run.returncode == 0, run.stderr
    assert sorted(p.relative_to(tmp_path / "as").as_posix() for p in (tmp_path / "as").rglob("*.mp4")) == [
        "dog/asDog_1000_11000.mp4", "fireworks/asFire_3500_13500.mp4"]
    items = prepare_audioset([seg], tmp_path / "as", resolve_classes(["dog", "fireworks"]))
    assert [(it.cls, it.start_s, it.end_s, it.reason) for it in items] == [("dog", 0.0, 10.0, None),
                                                                         ("fireworks", 0.0, 10.0, None)]


def test_ctrl_c_stops_with_one_line_and_keeps_what_finished(videos, tmp_path):
    ids = [f"slow{i}" for i in range(4)]
    with Mirror({y: videos["dog"] for y in ids}, {y: "slow" for y in ids}, slow_s=1.5) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("".join(f"{y},1,11,dog\n" for y in ids))
        root = tmp_path / "root"
        proc = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", "download", "--csv", str(csv), "--out", str(root),
                                 "--url-template", mirror.template, "--workers", "1", "--rate", "0", "--no-progress"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=ctrl_c_as_at_a_terminal)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((root / "dog").glob("*.mp4")):
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C at a terminal: the whole foreground group
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted: finished clips and their records are kept; "
                                        "re-run the same command to resume"], err
    t = table(root)  # written on the way out
    done = sorted(p.stem for p in (root / "dog").glob("*.mp4"))
    assert done and set(t.index[t["status"] == "ok"]) == set(done)
    for stem in done:
        assert check_clip(root / "dog" / f"{stem}.mp4", 10.0) >= 9.0


def test_cookies_reach_the_server(videos, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tsecret-42\n")
    with Mirror({"cook1": videos["dog"]}, {"cook1": "ok"}) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("cook1,0,10,dog\n")
        run = cli("download", "--csv", str(csv), "--out", str(tmp_path / "root"), "--url-template", mirror.template,
                  "--cookies", str(cookies), "--rate", "0", "--no-progress")
        assert run.returncode == 0, run.stderr
        assert ("cook1", "SID=secret-42") in mirror.cookies, mirror.cookies


def test_format_selection_keeps_at_most_max_height(tmp_path):
    """An HLS master playlist with a 240-line and a 480-line rendition (real segments made with
    ffmpeg, served as static files): yt-dlp takes the tallest at most --max-height."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    from s2i_data.media import probe

    folder = tmp_path / "site" / "hlsvid"
    folder.mkdir(parents=True)
    for h in (240, 480):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={h * 4 // 3}x{h}:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
                        "-t", "13", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac",
                        "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
                        "-hls_segment_filename", str(folder / f"v{h}_%03d.ts"), str(folder / f"v{h}.m3u8")], check=True)
    (folder / "master.m3u8").write_text(
        "#EXTM3U\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x240,CODECS="avc1.42c00d,mp4a.40.2"\nv240.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x480,CODECS="avc1.42c01e,mp4a.40.2"\nv480.m3u8\n')

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        csv = tmp_path / "ids.csv"
        csv.write_text("hlsvid,1,11,dog\n")
        template = f"http://127.0.0.1:{server.server_address[1]}/{{ytid}}/master.m3u8"
        for max_height, height in ((360, 240), (480, 480), (100, 240)):  # nothing that small: the smallest
            root = tmp_path / f"root{max_height}"
            run = cli("download", "--csv", str(csv), "--out", str(root), "--url-template", template,
                      "--max-height", str(max_height), "--rate", "0", "--no-progress")
            assert run.returncode == 0, run.stderr
            got = probe(str(root / "dog" / "hlsvid_000001.mp4"))
            assert got.height == height and got.duration_s >= 9.5, (max_height, got)
    finally:
        server.shutdown()
        server.server_close()

