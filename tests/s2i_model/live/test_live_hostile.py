"""`s2i-model live` on hostile input: NaN and infinite samples are silence and never reach the
journal or the page's events as invalid JSON, a recording never replaces files already in its
folder nor writes through a link, a name with control characters is shown escaped on one line,
and the page carries its safety headers (nosniff, a Content-Security-Policy it still works under)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from s2i_model.live.loop import Result
from s2i_model.live.server import Hub, start_server
from s2i_model.live.sources import ArraySource, FfmpegSource
from s2i_model.live.window import Windower

from conftest import SR, live_cmd, sound  # tests/s2i_model/live/conftest.py
from test_live_page import get, window_result
from test_live_stream import one_line


def strict(text: str):
    """JSON as the standard has it: ``NaN``, ``Infinity`` and ``-Infinity`` are errors."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def strict_journal(folder: Path) -> list[dict]:
    text = (folder / "live.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [strict(line) for line in text.splitlines()]


def float_wav(path: Path, audio: np.ndarray) -> Path:
    soundfile.write(path, audio.astype(np.float32), SR, subtype="FLOAT")
    return path


def nan_and_inf_audio() -> tuple[np.ndarray, int]:
    """0-1.5 s sound, 1.5-3 s NaN, 3-4 s sound with every 100th sample +inf and the last 10 ms -inf;
    and how many samples are not finite."""
    tail = sound(1.0, 1)
    tail[::100] = np.inf
    tail[-160:] = -np.inf
    audio = np.concatenate([sound(1.5), np.full(int(1.5 * SR), np.nan, np.float32), tail])
    return audio, int((~np.isfinite(audio)).sum())


def test_nan_and_inf_samples_are_silence_in_the_recording(live_run, tmp_path):
    audio, bad = nan_and_inf_audio()
    wav = float_wav(tmp_path / "broken.wav", audio)
    res = subprocess.run(live_cmd(wav, "--run", live_run, "--record", tmp_path / "rec"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert f"({bad} NaN or infinite samples heard as silence)" in res.stdout
    lines = strict_journal(tmp_path / "rec")
    assert [x["t"] for x in lines] == [1.0 + 0.5 * k for k in range(7)]
    assert all(isinstance(x["loudness"], float) and math.isfinite(x["loudness"]) for x in lines)
    by_t = {x["t"]: x for x in lines}
    assert by_t[2.5]["quiet"] and by_t[3.0]["quiet"]  # windows wholly inside the NaN stretch: silence
    assert not by_t[1.0]["quiet"] and not by_t[4.0]["quiet"]
    session = strict((tmp_path / "rec" / "live.json").read_text())
    assert session["ended"]["invalid_samples"] == bad and session["ended"]["error"] is None


def raw_f32le(path: Path, audio: np.ndarray) -> Path:
    path.write_bytes(audio.astype("<f4").tobytes())
    return path


@pytest.mark.parametrize("kind", ["float wav", "raw f32le"])
def test_the_page_events_of_nan_samples_are_json(tmp_path, kind):
    # The real decode (ffmpeg: a float WAV, or raw f32le read with --format's path) and the real
    # windower feed the page's server; every event a page receives must parse as strict JSON.
    audio, _ = nan_and_inf_audio()
    if kind == "float wav":
        source = FfmpegSource(str(float_wav(tmp_path / "x.wav", audio)), SR)
    else:  # ffmpeg's f32le demuxer reads mono at 44.1 kHz unless told otherwise
        source = FfmpegSource(str(raw_f32le(tmp_path / "x.f32", audio)), SR, fmt="f32le")
    hub = Hub(strip=1000)  # a page that connects after the windows gets them all from the strip
    server = start_server(hub, "127.0.0.1", 0, title=source.name)
    windower = Windower(1.0, SR, 0.5)
    for chunk in source.chunks():
        for w in windower.push(chunk):
            hub.publish(Result(w, quiet=bool(w.loudness_db < -50)))
    for w in windower.finish():
        hub.publish(Result(w, quiet=bool(w.loudness_db < -50)))
    conn, r = get(server, f"/events?token={server.token}")
    try:
        hub.end("the input ended")
        events = []
        while not events or events[-1]["type"] != "end":
            line = r.fp.readline().decode()
            assert line, "the stream ended before its end event"
            if line.startswith("data: "):
                events.append(strict(line[6:]))
    finally:
        conn.close()
        server.shutdown()
        server.server_close()
    windows = [e for e in events if e["type"] == "window"]
    assert len(windows) == windower.next >= 1 and all(math.isfinite(e["loudness"]) for e in windows)
    assert windower.invalid > 0


def test_a_classifier_that_gives_nan_names_no_class(live_run, tmp_path):
    # A frame classifier whose weights are NaN (a damaged or hostile file): the window gets no
    # class line, and the journal stays JSON.
    import torch

    from s2i_model.live import loop
    from s2i_model.live.record import Recorder
    from s2i_model.run import load_model

    class NaNClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.full((1,), float("nan")))

        def forward(self, x):
            return self.w.expand(len(x), 5)

    imaginer = loop.Imaginer(load_model(live_run, "cpu"), classifier=NaNClassifier(), class_names=list("abcde"))
    rec = Recorder(tmp_path / "rec", {"run": "test"})
    summary = loop.run(ArraySource(sound(2.0), SR), Windower(1.0, SR, 0.5), imaginer, record=rec)
    rec.close({"windows": summary.windows})
    lines = strict_journal(tmp_path / "rec")
    assert len(lines) == 3 and not any(x["quiet"] for x in lines)
    assert all("class" not in x and "confidence" not in x and len(x["pictures"]) == 1 for x in lines)


def pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def snapshot(folder: Path) -> dict:
    """Every entry of a folder and what it holds (a link: where it points)."""
    return {p.name: ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() for p in folder.iterdir()}


def test_a_folder_that_holds_anything_is_refused_and_left_as_it_was(live_run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("not a picture")
    earlier = tmp_path / "earlier"  # an earlier recording killed before its journal was made
    earlier.mkdir()
    (earlier / "live.json").write_text('{"run": "an earlier one"}')
    (earlier / "0001.00s_0.png").write_bytes(b"an earlier picture")
    (earlier / "notes.txt").write_text("mine")
    trap = tmp_path / "trap"  # a link where the first picture's temporary would go
    trap.mkdir()
    (trap / ".0001.00s_0.png.tmp").symlink_to(victim)
    for folder, said in ((earlier, "already holds a recording (live.json)"), (trap, "already holds 1 entry")):
        before = snapshot(folder)
        res = subprocess.run(live_cmd("-", "--run", live_run, "--record", folder), input=pcm(sound(1.5)),
                             capture_output=True, timeout=120)
        res = subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(), res.stderr.decode())
        assert res.returncode == 1 and said in one_line(res), res.stderr
        assert snapshot(folder) == before
    assert victim.read_text() == "not a picture"


def test_pictures_of_windows_closer_than_their_names_round_are_all_kept(live_run, tmp_path):
    # A hop of 5 ms: window ends 1.000, 1.005, ... share a name rounded to 10 ms; none replaces another.
    res = subprocess.run(live_cmd("-", "--run", live_run, "--record", tmp_path / "rec", "--hop", "0.005"),
                         input=pcm(sound(1.05)), capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = strict_journal(tmp_path / "rec")
    names = [p for x in lines for p in x["pictures"]]
    assert len(lines) == 11 and len(names) == 11 and len(set(names)) == 11
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.png")) == sorted(names)


def test_a_name_with_control_characters_is_one_escaped_line(live_run, tmp_path):
    wav = float_wav(tmp_path / "tone\n\x1b[31m[bold]red\x07.wav", sound(1.5))
    shown = f"{tmp_path}/tone\\n\\x1b[31m[bold]red\\x07.wav"
    res = subprocess.run(live_cmd(wav, "--run", live_run, "--record", tmp_path / "rec"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stdout + res.stderr
    assert res.stdout.startswith(f"hearing {shown} (every window is made)"), res.stdout
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout and len(res.stdout.splitlines()) == 2
    assert strict((tmp_path / "rec" / "live.json").read_text())["input"] == shown
    empty = tmp_path / "empty\n[" / "]\x1b.wav"  # a path holding "[/]", which rich would take for markup
    empty.parent.mkdir()
    empty.write_bytes(b"")
    res = subprocess.run(live_cmd(empty, "--run", live_run), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and one_line(res) == f"error: {tmp_path}/empty\\n[/]\\x1b.wav: empty file (0 bytes)"


def raw_request(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_every_response_says_nosniff_and_the_page_has_a_csp(tmp_path):
    hub = Hub()
    server = start_server(hub, "127.0.0.1", 0)
    try:
        token = server.token
        seen = {}
        for path in ("/", f"/?token={token}", f"/nothing?token={token}", "/favicon.ico", f"/events?token={token}"):
            conn, r = get(server, path)
            seen[path] = (r.status, dict(r.getheaders()))
            conn.close()
        host = f"127.0.0.1:{server.port}".encode()
        # http.server's own answers too: a method it lacks, a request with too many headers
        for req in (b"PUT / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"):
            head = raw_request(server, req).split(b"\r\n\r\n")[0].decode()
            seen[req] = (int(head.split()[1]), dict(x.split(": ", 1) for x in head.splitlines()[1:]))
    finally:
        hub.end("test over")
        server.shutdown()
        server.server_close()
    assert [s for s, _ in seen.values()] == [403, 200, 404, 204, 200, 501, 431]
    for what, (_, headers) in seen.items():
        assert headers.get("X-Content-Type-Options") == "nosniff", (what, headers)
    csp = seen[f"/?token={token}"][1]["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "unsafe" not in csp
    assert "image" not in seen["/favicon.ico"][1].get("Content-Type", "")  # nothing claims to be an image


def test_the_page_works_under_its_csp_and_shows_a_hostile_name_as_text(chromium, tmp_path):
    name = "tone\n<img src=x onerror=window.pwned=1>.wav"
    float_wav(tmp_path / name, sound(1.0))
    source = FfmpegSource(str(tmp_path / name), SR)  # the name as the live command shows it
    hub = Hub()
    server = start_server(hub, "127.0.0.1", 0, title=source.name)
    try:
        chromium.get(server.url)
        from selenium.webdriver.support.ui import WebDriverWait

        title = "return document.getElementById('title').textContent"
        WebDriverWait(chromium, 30).until(lambda d: d.execute_script(title) != "s2i live: what could be making this sound")
        hub.publish(window_result(1.0, 200))
        # the page's script ran (it took the event) and the picture, a data: URL, loaded
        WebDriverWait(chromium, 30).until(lambda d: d.execute_script(
            "return window.liveLog.length === 1 && document.getElementById('picture').naturalWidth === 96"))
        shown = chromium.execute_script(title)
        state = chromium.execute_script(
            "return [window.pwned === undefined, document.querySelectorAll('h1 *').length,"
            "        getComputedStyle(document.body).backgroundColor];")
    finally:
        hub.end("test over")
        server.shutdown()
        server.server_close()
    assert shown == "s2i live: " + str(tmp_path / name).replace("\n", "\\n")  # one line, the markup as text
    assert state == [True, 0, "rgb(17, 17, 17)"]  # no script from the name ran; the page's style applies
