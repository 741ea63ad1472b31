"""`s2i-data download` against mirrors that misbehave, all real servers on loopback addresses
(127.0.0.1, and 127.0.0.2 for a host the template does not name), real yt-dlp and ffmpeg:

- a mirror that trickles bytes or goes silent is cut by --read-timeout / --min-speed, a transient
  ``error`` with the reason;
- ``kill -9`` of the download leaves no ffmpeg running (the wrapper's PR_SET_PDEATHSIG);
- a plain ``http.server`` (no Range) serves an MP4 whose index is at the end, and one with it first;
- a video shorter than its window is settled once (``unavailable`` with its length), not fetched
  again by a re-run;
- a redirect to a loopback or private address other than the template's own host is refused
  before any connection to it; the user's own proxy (environment) is still used.
"""

from __future__ import annotations

import functools
import os
import signal
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from s2i_data.download import fetch as fetch_mod
from s2i_data.download.fetch import check_clip
from s2i_data.download.guard import Guard, Limits, _ip, address_class
from s2i_data.media import ffmpeg_exe

from childprocs import wait_for
from test_download import Mirror, cli, make_video, table


class Hostile(Mirror):
    """The test mirror with more behaviours: ``trickle`` (headers, then a byte every 0.2 s),
    ``silent`` (headers, then nothing), ``slowfile`` (the file in 200 pieces over 100 s), and
    ``redirect`` (302 to ``self.redirects[id]``), ``endless`` (an MP4 whose media data never ends,
    no Content-Length). They stop when the test ends. ``bind``: its
    loopback address; ``host``: how the template names it."""

    def __init__(self, files, behaviour, redirects=None, host="127.0.0.1", bind="127.0.0.1") -> None:
        self.redirects = dict(redirects or {})
        self.done = threading.Event()
        self.host = host
        super().__init__(files, behaviour)
        if bind != "127.0.0.1":
            handler = self.server.RequestHandlerClass
            self.server.server_close()
            self.server = ThreadingHTTPServer((bind, 0), handler)
            self.server.daemon_threads = True
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def template(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}/{{ytid}}.mp4"

    def __exit__(self, *exc) -> None:
        self.done.set()
        super().__exit__(*exc)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        ytid = h.path.strip("/").rsplit(".", 1)[0]
        kind = self.behaviour.get(ytid, "404")
        if kind == "redirect":
            self._note(ytid, 302)
            h.send_response(302)
            h.send_header("Location", self.redirects[ytid])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if kind == "endless":
            return self.endless(h, ytid)
        if kind not in ("trickle", "silent", "slowfile"):
            return super().handle(h)
        body = self._start_mp4(h, ytid)
        h.wfile.flush()
        pieces = {"trickle": [body[i:i + 1] for i in range(len(body))], "silent": [],
                  "slowfile": [body[i:i + len(body) // 200 + 1] for i in range(0, len(body), len(body) // 200 + 1)]}[kind]
        pause = {"trickle": 0.2, "silent": 0, "slowfile": 0.5}[kind]
        try:
            for piece in pieces:
                h.wfile.write(piece)
                h.wfile.flush()
                if self.done.wait(pause):
                    return
            self.done.wait()  # silent: hold the connection open, send nothing
        except OSError:
            pass  # the client (the guard) hung up


    def endless(self, h: BaseHTTPRequestHandler, ytid: str) -> None:
        """An ftyp box, then an mdat box that claims 2^60 bytes (the index would follow it)."""
        self._note(ytid, 200)
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Connection", "close")
        h.end_headers()
        ftyp = struct.pack(">I4s4sI8s", 24, b"ftyp", b"isom", 512, b"isomiso2")
        mdat = struct.pack(">I4sQ", 1, b"mdat", 1 << 60)
        try:
            h.wfile.write(ftyp + mdat)
            while not self.done.is_set():
                h.wfile.write(bytes(1 << 16))
        except OSError:
            pass  # the client (the guard) hung up
        h.close_connection = True


def make_tail_video(path: Path, seconds: float = 14.0) -> Path:
    """An mp4 whose index (moov) is at the end: ffmpeg's mp4 muxer without +faststart."""
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=16000",
                    "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                    "-g", "50", "-c:a", "aac", str(path)], check=True)
    data = path.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0  # the index really is at the end
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("hostile-files") / "v.mp4", 440)


def _run(csv: Path, root: Path, template: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "s2i_data.cli", "download", "--csv", str(csv), "--out", str(root),
            "--url-template", template, "--rate", "0", "--no-progress", *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=240, env=env)


# ------------------------------------------------------------------------------------ time-outs

def test_trickling_and_silent_mirrors_are_cut(video, tmp_path):
    ids = {"trickle1": "trickle", "silent1": "silent"}
    with Hostile({y: video for y in ids}, ids) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("".join(f"{y},0,10,dog\n" for y in ids))
        run = _run(csv, tmp_path / "root", mirror.template, "--read-timeout", "1.5", "--min-speed", "1",
                   "--speed-window", "2", "--attempts", "2", "--backoff", "0", "--workers", "2")
    assert run.returncode == 0, run.stderr
    t = table(tmp_path / "root")
    trickle, silent = t.loc["trickle1_000000"], t.loc["silent1_000000"]
    assert trickle["status"] == silent["status"] == "error"
    assert "under --min-speed 1 KB/s" in trickle["reason"] and "127.0.0.1" in trickle["reason"], trickle["reason"]
    assert "sent nothing for 1.5 s (--read-timeout)" in silent["reason"], silent["reason"]
    # transient: tried --attempts times, and again by a re-run
    assert trickle["attempts"] == silent["attempts"] == 2
    assert "(after 2 attempts)" in trickle["reason"]
    assert not list((tmp_path / "root").rglob("*.mp4"))


def test_an_endless_file_is_bounded(tmp_path, video):
    """A mirror whose file never ends (its index is never reached) is cut at --max-file-mb."""
    with Hostile({"endless1": video}, {"endless1": "endless"}) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("endless1,0,10,dog\n")
        run = _run(csv, tmp_path / "root", mirror.template, "--max-file-mb", "3", "--attempts", "2", "--backoff", "0")
    assert run.returncode == 0, run.stderr
    row = table(tmp_path / "root").loc["endless1_000000"]
    assert row["status"] == "error" and "larger than --max-file-mb 3" in row["reason"], row["reason"]
    assert row["attempts"] == 1  # not worth another try in this run
    assert not [p for p in (tmp_path / "root").rglob("*") if p.is_file() and p.stat().st_size > 3e6]


def test_bad_time_out_settings_are_one_line(tmp_path):
    csv = tmp_path / "ids.csv"
    csv.write_text("a1,0,10,dog\n")
    for option, value in (("--read-timeout", "0"), ("--min-speed", "-1"), ("--speed-window", "nan"),
                          ("--max-file-mb", "0")):
        run = cli("download", "--csv", str(csv), "--out", str(tmp_path / "root"), option, value)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "--read-timeout" in run.stderr, run.stderr


# ------------------------------------------------------------------------------------ kill -9

def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps it; it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_ffmpeg(pid: int) -> bool:
    try:
        return "ffmpeg" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_kill_9_of_the_download_leaves_no_ffmpeg(video, tmp_path):
    """The download is killed while its ffmpeg reads a window from a slow server (the file in 200
    pieces over 100 s): that ffmpeg is gone soon after, long before the server would be done."""
    with Hostile({"slowf1": video}, {"slowf1": "slowfile"}) as mirror:
        csv = tmp_path / "ids.csv"
        csv.write_text("slowf1,0,10,dog\n")
        proc = subprocess.Popen([sys.executable, "-m", "s2i_data.cli", "download", "--csv", str(csv), "--out",
                                 str(tmp_path / "root"), "--url-template", mirror.template, "--rate", "0", "--no-progress"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert wait_for(lambda: len(mirror.requests("slowf1")) >= 2, 60)  # the page, then ffmpeg's request
            ffmpegs = [p for p in _children(proc.pid) if _is_ffmpeg(p)]
            assert wait_for(lambda: bool(ffmpegs.extend(p for p in _children(proc.pid) if _is_ffmpeg(p)) or ffmpegs), 30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert wait_for(lambda: not any(_running(p) for p in ffmpegs), 20), [
                (p, Path(f"/proc/{p}/cmdline").read_bytes()[:200]) for p in ffmpegs if _running(p)]
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, so that nothing writes on
            except ProcessLookupError:
                pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_the_ffmpeg_the_downloader_runs_dies_with_it(tmp_path):
    """The ``ffmpeg`` of `fetch.ffmpeg_dir` (what yt-dlp runs) in a process killed with -9, busy
    with something that never ends on its own (a silent source read in real time)."""
    code = ("import subprocess, sys, time, os\n"
            "from s2i_data.download import fetch\n"
            "p = subprocess.Popen([os.path.join(fetch.ffmpeg_dir(), 'ffmpeg'), '-nostdin', '-loglevel', 'error', '-re',\n"
            "                      '-f', 'lavfi', '-i', 'anullsrc', '-f', 'null', '-'])\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        assert wait_for(lambda: _is_ffmpeg(child), 30)  # the wrapper became ffmpeg
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not _running(child), 20)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_downloaders_ffmpeg_is_the_builders():
    folder = fetch_mod.ffmpeg_dir()
    assert os.environ["PATH"].split(os.pathsep)[0] == folder
    ours = subprocess.run([os.path.join(folder, "ffmpeg"), "-version"], capture_output=True, text=True, check=True)
    real = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=True)
    assert ours.stdout == real.stdout
    assert os.stat(folder).st_mode & 0o077 == 0  # a private folder: nobody else can swap the program


# ------------------------------------------------------------------------------------ no Range

def test_plain_http_server_without_range(video, tmp_path):
    """`python -m http.server`'s handler answers every GET with 200 and the whole file, whatever
    Range asks: an MP4 with its index first is cut over HTTP; one with the index at the end is
    fetched whole and cut here."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "first.mp4").write_bytes(video.read_bytes())
    make_tail_video(site / "tail.mp4")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        csv = tmp_path / "ids.csv"
        csv.write_text("first,2,12,dog\ntail,2,12,dog\n")
        run = _run(csv, tmp_path / "root", f"http://127.0.0.1:{server.server_address[1]}/{{ytid}}.mp4",
                   "--attempts", "1")
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr
    t = table(tmp_path / "root")
    for key in ("first_000002", "tail_000002"):
        assert t.loc[key, "status"] == "ok", (key, t.loc[key, "reason"])
        assert check_clip(tmp_path / "root" / "dog" / f"{key}.mp4", 10.0) >= 9.0
    assert not [p for p in (tmp_path / "root").rglob("*") if ".part" in p.name]


# ------------------------------------------------------------------------------------ short videos

def test_a_video_shorter_than_its_window_is_settled_once(tmp_path):
    short = make_video(tmp_path / "short.mp4", 440, seconds=8.0)
    with Hostile({"short1": short}, {"short1": "ok"}) as mirror:
        csv = tmp_path / "vggsound.csv"
        csv.write_text('short1,2,"dog barking",train\n')  # the window 2-12 s of an 8 s video
        for _ in range(2):
            run = _run(csv, tmp_path / "root", mirror.template, "--attempts", "4", "--backoff", "0")
            assert run.returncode == 0, run.stderr
            if _ == 0:
                first = len(mirror.requests("short1"))
        assert len(mirror.requests("short1")) == first <= 3  # page, window, whole file; the re-run: nothing
    row = table(tmp_path / "root").loc["short1_000002"]
    assert row["status"] == "unavailable" and row["attempts"] == 1
    assert "the video is 8.0" in row["reason"] and "holds 6.0" in row["reason"], row["reason"]
    assert 5.5 <= row["duration"] <= 6.5
    assert not list((tmp_path / "root").rglob("*.mp4"))


# ------------------------------------------------------------------------------------ redirects

def test_redirects_to_other_private_hosts_are_refused(video, tmp_path):
    """The template names ``localhost``: a redirect to 127.0.0.1 (an address localhost is) is
    followed, one to 127.0.0.2 (loopback too, but another host) is refused before any connection
    to it, even with no_proxy naming it (ffmpeg would otherwise go round the guard)."""
    with Hostile({"x": video}, {"x": "ok"}, host="127.0.0.2", bind="127.0.0.2") as other:
        target = other.template.replace("{ytid}", "x")
        with Hostile({"home": video, "away": video, "homed": video}, {"home": "redirect", "away": "redirect", "homed": "ok"},
                     redirects={"away": target}, host="localhost") as mirror:
            mirror.redirects["home"] = f"http://127.0.0.1:{mirror.server.server_address[1]}/homed.mp4"
            csv = tmp_path / "ids.csv"
            csv.write_text("home,0,10,dog\naway,0,10,dog\n")
            env = dict(os.environ, no_proxy="127.0.0.2,localhost,127.0.0.1", NO_PROXY="127.0.0.2,localhost")
            run = _run(csv, tmp_path / "root", mirror.template, "--attempts", "1", env=env)
        assert run.returncode == 0, run.stderr
        assert other.requests("x") == []  # nothing ever reached the other host
    t = table(tmp_path / "root")
    assert t.loc["home_000000", "status"] == "ok", t.loc["home_000000", "reason"]
    away = t.loc["away_000000"]
    assert away["status"] == "error" and "refused to connect to 127.0.0.2" in away["reason"], away["reason"]
    assert "loopback" in away["reason"] and away["attempts"] == 1


def test_address_classes():
    """No traffic: which addresses count as not public (IPv4-mapped IPv6 seen through)."""
    cases = {"127.0.0.2": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback", "169.254.169.254": "link-local",
             "fe80::1": "link-local", "10.1.2.3": "private", "192.168.0.1": "private", "172.16.0.1": "private",
             "fd00::1": "private", "0.0.0.0": "unspecified", "224.0.0.1": "multicast", "240.0.0.1": "reserved",
             "100.64.0.1": "non-public", "8.8.8.8": "", "2001:4860:4860::8888": ""}
    assert {a: address_class(_ip(a)) for a in cases} == cases


def test_the_users_own_proxy_is_still_used_and_redirects_still_checked(video, tmp_path):
    """A proxy in the environment (here another guard on loopback that lets anything through,
    standing in for a lab's proxy) carries the download's connections as it did before the guard;
    a redirect to another loopback host is still refused, before the lab's proxy hears of it. The
    proxy URL's user and password reach the proxy (Proxy-Authorization)."""

    class LabProxy(Guard):
        def _read_head(self, client):
            head, rest = super()._read_head(client)
            self.heads.append(head)
            return head, rest

    with Hostile({"x": video}, {"x": "ok"}, host="127.0.0.2", bind="127.0.0.2") as other, \
            Hostile({"prox1": video, "away": video}, {"prox1": "ok", "away": "redirect"},
                    redirects={"away": other.template.replace("{ytid}", "x")}) as mirror, \
            LabProxy(mirror.template, Limits()) as lab_proxy:
        lab_proxy.heads = []
        lab_proxy.allowed = frozenset({_ip("127.0.0.1"), _ip("127.0.0.2")})
        csv = tmp_path / "ids.csv"
        csv.write_text("prox1,0,10,dog\naway,0,10,dog\n")
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "all_proxy")}
        env["http_proxy"] = lab_proxy.url.replace("http://", "http://lab%20user:pa%3Ass@")
        run = _run(csv, tmp_path / "root", mirror.template, "--attempts", "1", env=env)
        assert run.returncode == 0, run.stderr
        t = table(tmp_path / "root")
        assert t.loc["prox1_000000", "status"] == "ok", t.loc["prox1_000000", "reason"]
        assert lab_proxy.received >= (video.stat().st_size // 4)  # the window's bytes came through it
        assert "refused to connect to 127.0.0.2" in t.loc["away_000000", "reason"]
        assert other.requests("x") == []
        assert lab_proxy.heads and all(b"Proxy-Authorization: Basic bGFiIHVzZXI6cGE6c3M=\r\n" in h
                                       for h in lab_proxy.heads), lab_proxy.heads


# ------------------------------------------------------------------------------------ a shared ROOT

def test_a_hostile_record_is_one_line_and_nothing_is_written(tmp_path):
    """ROOT may be another lab's copy: a journal line whose attempts are not a count stops the run
    with one line naming the file and field, before anything is written."""
    root = tmp_path / "root"
    (root / ".download").mkdir(parents=True)
    journal = root / ".download" / "journal.jsonl"
    journal.write_text('{"key": "a1_000000", "status": "error", "attempts": "many"}\n')
    csv = tmp_path / "ids.csv"
    csv.write_text("a1,0,10,dog\n")
    run = _run(csv, root, "http://127.0.0.1:9/{ytid}.mp4")
    assert run.returncode == 1 and "internal error" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "journal.jsonl: line 1" in run.stderr and "attempts" in run.stderr, run.stderr
    assert journal.read_text() == '{"key": "a1_000000", "status": "error", "attempts": "many"}\n'
    assert not (root / "download.parquet").exists()


def test_links_in_root_are_not_followed(video, tmp_path):
    """A journal, a lock or a class folder that is a symbolic link to a file or folder outside
    ROOT: nothing outside is written or truncated; the run says why in one line, or records the
    row as an error."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("precious\n")
    csv = tmp_path / "ids.csv"
    csv.write_text("link1,0,10,dog\n")
    with Hostile({"link1": video}, {"link1": "ok"}) as mirror:
        for name in ("journal.jsonl", "lock"):
            root = tmp_path / f"root-{name}"
            (root / ".download").mkdir(parents=True)
            (root / ".download" / name).symlink_to(victim)
            run = _run(csv, root, mirror.template)
            assert run.returncode != 0 and len(run.stderr.strip().splitlines()) == 1, run.stderr
            assert "symbolic link" in run.stderr and "internal error" not in run.stderr, run.stderr
            assert victim.read_text() == "precious\n"
        root = tmp_path / "root-class"
        root.mkdir()
        (root / "dog").symlink_to(outside, target_is_directory=True)
        run = _run(csv, root, mirror.template)
    assert run.returncode == 0, run.stderr
    row = table(root).loc["link1_000000"]
    assert row["status"] == "error" and "leads outside" in row["reason"], row["reason"]
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"] and victim.read_text() == "precious\n"
