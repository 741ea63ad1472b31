"""The live page: its server's safety rules (token, Host, Origin), pictures pushed as server-sent
events, and the page in a real headless Chromium watching a live stream."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time

import numpy as np
import pytest

from s2i_model.live.loop import Result, png_bytes
from s2i_model.live.server import Hub, start_server
from s2i_model.live.window import Window

from conftest import Streamer, live_cmd  # tests/s2i_model/live/conftest.py


@pytest.fixture
def served():
    hub = Hub(strip=4)
    server = start_server(hub, "127.0.0.1", 0)
    yield hub, server
    hub.end("test over")
    server.shutdown()
    server.server_close()


def get(server, path, headers=None, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{server.port}")
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn, conn.getresponse()


def window_result(t: float, colour: int) -> Result:
    img = np.full((96, 96, 3), colour, np.uint8)
    w = Window(int(t * 2), t, np.zeros((100, 128), np.float32), -20.0, time.monotonic())
    return Result(w, pictures=img[None], png=[png_bytes(img)], shown=True)


def test_the_server_refuses_what_is_not_its_page(served):
    _, server = served
    token = server.token
    assert server.url == f"http://127.0.0.1:{server.port}/?token={token}"
    for path, headers, host, why in (
            ("/", None, None, "token"),
            ("/?token=wrong", None, None, "token"),
            (f"/events?token={token[:-1]}", None, None, "token"),
            (f"/?token={token}", None, f"evil.example:{server.port}", "Host"),  # DNS rebinding
            (f"/?token={token}", None, "127.0.0.1:1", "Host"),
            (f"/events?token={token}", {"Origin": "http://evil.example"}, None, "Origin")):
        conn, r = get(server, path, headers, host)
        body = r.read().decode()
        assert r.status == 403 and why in body, (path, host, body)
        conn.close()
    conn, r = get(server, f"/?token={token}", {"Origin": f"http://127.0.0.1:{server.port}"})
    assert r.status == 200 and b"EventSource" in r.read()
    conn.close()
    conn, r = get(server, f"/?token={token}", host=f"localhost:{server.port}")  # a loopback name is fine
    assert r.status == 200
    conn.close()


def test_pictures_are_pushed_as_events(served):
    hub, server = served
    hub.publish(window_result(1.0, 10))  # before the page connects: replayed from the strip
    conn, r = get(server, f"/events?token={server.token}")
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"

    def event():
        kind = data = None
        while True:
            line = r.fp.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and kind:
                return kind, data

    assert event()[0] == "hello"
    kind, ev = event()
    assert kind == "window" and ev["t"] == 1.0 and ev["pictures"][0].startswith("data:image/png;base64,")
    hub.publish(window_result(1.5, 200))
    kind, ev2 = event()
    assert kind == "window" and ev2["t"] == 1.5 and ev2["pictures"] != ev["pictures"]
    hub.end("the input ended")
    assert event() == ("end", {"type": "end", "reason": "the input ended"})
    conn.close()


def test_the_page_shows_pictures_change_and_quiet(chromium, live_run, talk_and_silence):
    stream = Streamer(talk_and_silence)
    proc = subprocess.Popen(live_cmd(stream.url, "--run", live_run, "--gate", "0", "--hop", "0.25"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        url = re.search(r"page at (http://\S+)", first)
        assert url, first + proc.stderr.read()
        chromium.get(url[1])
        seen = []
        while proc.poll() is None:  # what the page shows, looked at every 0.1 s while the sound plays
            seen.append(chromium.execute_script(
                "const p = document.getElementById('picture'), q = document.getElementById('quiet');"
                "return [p.classList.contains('hidden') ? null : p.src, !q.classList.contains('hidden'),"
                "        document.getElementById('class').textContent];"))
            time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, out + err
    finally:
        if proc.poll() is None:
            proc.kill()
        stream.close()
    pictures = [src for src, _, _ in seen if src]
    assert len(set(pictures)) >= 2, "the polls never saw the picture change"
    assert any(quiet and src is None for src, quiet, _ in seen), "never showed 'quiet'"
    assert any(re.fullmatch(r"(baby|dog|rail|fireworks|water) \d+ %", line) for src, _, line in seen if src)
    # every window the page rendered (its own log: what it displayed, after displaying it), polls
    # or not: pictures during sound, "quiet" with no picture in the silence
    shown = chromium.execute_script("return window.liveLog")
    srcs = [x["src"] for x in shown if x["src"]]
    changes = sum(a != b for a, b in zip(srcs, srcs[1:]))
    assert changes >= 5, f"the picture changed {changes} times"
    assert all(x["quietShown"] == x["quiet"] and (x["src"] is None) == x["quiet"] for x in shown)
    assert sum(x["quiet"] for x in shown) >= 3
    assert chromium.execute_script("return window.liveEnded") is True
    assert "ended" in chromium.find_element("id", "status").text


def test_the_page_ships_as_package_data():
    # tests/test_packaging.py installs a wheel; this names the page in the package-data it builds from
    import tomllib
    from pathlib import Path

    from s2i_model.live.server import PAGE_FILE

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert "live/page.html" in pyproject["tool"]["setuptools"]["package-data"]["s2i_model"]
    assert PAGE_FILE.is_file() and PAGE_FILE.parent.name == "live"
