"""The live page: the newest picture large, a strip of the last few, the window's spectrogram and
the class line, pushed to the browser as server-sent events (one long GET per page; no polling).

The safety rules are the labelling page's (`s2i_model.labelling.server`): bound to loopback by
default, it answers only requests addressed to it by name (Host: a page elsewhere cannot rebind a
name of its own to 127.0.0.1 and watch the microphone), a request that carries an Origin must come
from this page, and, since what a microphone hears is private, every request needs the token of
the address printed at start (another local user, or a local page that guesses the port, gets 403).

A slow or stalled browser cannot hold memory: each page has a queue of a few events and loses the
oldest when it is full; the page shows the newest anyway.
"""

from __future__ import annotations

import base64
import hmac
import queue
import secrets
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from s2i_model.labelling.server import _host_port, _is_ip, allowed_hosts, security_headers
from s2i_model.live.loop import Result, png_bytes
from s2i_model.live.record import to_json

PAGE_FILE = Path(__file__).with_name("page.html")  # shipped as package data
CLIENT_QUEUE = 8  # events waiting for one page
PING_S = 15.0  # a comment line now and then: a page whose tab is gone is noticed and let go


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _magma() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


class Hub:
    """Turns results into page events and hands them to every connected page. The last ``strip``
    events are kept, so a page opened late starts with a full strip."""

    def __init__(self, strip: int = 8, norm=None) -> None:
        self.recent: deque[dict] = deque(maxlen=strip)
        self.norm = norm  # the model's log-mel normaliser: the spectrogram's colour scale
        self._clients: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._lut = _magma()
        self.closed = False
        self.made = self.dropped = 0

    def spectrogram(self, mel: np.ndarray) -> bytes:
        lo, hi = (self.norm.lo, self.norm.hi) if self.norm is not None else (float(mel.min()), float(mel.max()) + 1e-6)
        x = np.clip((mel.T[::-1] - lo) / (hi - lo), 0, 1)  # [mel, time], low frequencies at the bottom
        return png_bytes(self._lut[(x * 255).astype(np.uint8)])

    def publish(self, res: Result) -> None:
        w = res.window
        self.made += 1
        ev = {"type": "window", "t": w.end_s, "index": w.index, "loudness": w.loudness_db, "quiet": res.quiet,
              "class": res.label, "confidence": res.confidence, "shown": res.shown,
              "pictures": [_data_url(p) for p in res.png] if res.shown else [],
              "spectrogram": _data_url(self.spectrogram(w.mel)), "made": self.made, "dropped": self.dropped}
        self.send(ev)

    def count_dropped(self, res: Result) -> None:
        if res.dropped:
            self.dropped += 1

    def send(self, ev: dict) -> None:
        with self._lock:
            if ev["type"] == "window":
                self.recent.append(ev)
            for q in self._clients:
                while True:
                    try:
                        q.put_nowait(ev)
                        break
                    except queue.Full:  # a page that does not keep up loses its oldest event
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            pass

    def subscribe(self) -> tuple[queue.Queue, list[dict]]:
        q: queue.Queue = queue.Queue(maxsize=CLIENT_QUEUE)
        with self._lock:
            self._clients.add(q)
            return q, list(self.recent)

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            self._clients.discard(q)

    def end(self, reason: str) -> None:
        self.send({"type": "end", "reason": reason})
        with self._lock:
            self.closed = True
            for q in self._clients:
                try:
                    q.put_nowait(None)
                except queue.Full:
                    pass


class LiveServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, hub: Hub, address: tuple[str, int], title: str = "") -> None:
        self.hub, self.title = hub, title
        self.token = secrets.token_urlsafe(18)
        host = address[0].lower()
        self.any_ip, self.hosts = allowed_hosts(host)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.port = self.server_address[1]
        shown = "127.0.0.1" if self.any_ip else f"[{address[0]}]" if ":" in host else address[0]
        self.url = f"http://{shown}:{self.port}/?token={self.token}"

    def accepts(self, host: tuple[str, int]) -> bool:
        name, port = host
        return port == self.port and (name in self.hosts or (self.any_ip and _is_ip(name)))

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], OSError):  # a page closed mid-answer is not our error
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: LiveServer
    timeout = 30

    def log_message(self, format, *args):
        pass

    _page: bytes | None = None  # the page being answered: its policy goes with it

    def end_headers(self) -> None:
        # here, so that every response has them: also http.server's own (400, 501) and the events
        # (the labelling page's headers: nosniff, and for the page its policy by hash)
        for header, value in security_headers(self._page):
            self.send_header(header, value)
        self._page = None
        super().end_headers()

    def _send(self, status: int, body: bytes, ctype: str | None, page: bool = False) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self._page = body if page else None
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, (message[:240] + "\n").encode(), "text/plain; charset=utf-8")

    def _refusal(self) -> tuple[int, str] | None:
        hosts = self.headers.get_all("Host") or []
        host = _host_port(hosts[0]) if len(hosts) == 1 else None
        if not host or not self.server.accepts(host):
            return 403, f"refused: Host {', '.join(hosts) or '(none)'!r} is not this server; open the address s2i-model live printed"
        origins = self.headers.get_all("Origin") or []
        if origins and not (len(origins) == 1 and origins[0][:7].lower() == "http://" and _host_port(origins[0][7:]) == host):
            return 403, f"refused: Origin {', '.join(origins)!r} is not this page"
        token = (parse_qs(urlsplit(self.path).query).get("token") or [""])[0]
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            return 403, "refused: no or wrong token; open the address s2i-model live printed (it ends in ?token=...)"
        return None

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/favicon.ico":  # no icon: nothing, and nothing that claims to be an image
            return self._send(204, b"", None)
        refusal = self._refusal()
        if refusal:
            return self._error(*refusal)
        if path in ("/", "/index.html"):
            page = PAGE_FILE.read_bytes()
            self._send(200, page, "text/html; charset=utf-8", page=True)
        elif path == "/events":
            self._events()
        else:
            self._error(404, f"not found: {path}")

    def do_POST(self) -> None:
        self._error(405, "this page takes no input")

    def _write(self, ev: dict | None, comment: str | None = None) -> None:
        if comment is not None:
            self.wfile.write(f": {comment}\n\n".encode())
        else:
            self.wfile.write(f"event: {ev['type']}\ndata: {to_json(ev)}\n\n".encode())
        self.wfile.flush()

    def _events(self) -> None:
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        q, recent = hub.subscribe()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self._write({"type": "hello", "title": self.server.title})
            for ev in recent:
                self._write(ev)
            if hub.closed:
                return self._write({"type": "end", "reason": "ended"})
            while True:
                try:
                    ev = q.get(timeout=PING_S)
                except queue.Empty:
                    self._write(None, "ping")
                    continue
                if ev is None:
                    return
                self._write(ev)
        except OSError:
            return  # the page went away
        finally:
            hub.unsubscribe(q)
            self.close_connection = True


def start_server(hub: Hub, host: str = "127.0.0.1", port: int = 8766, title: str = "") -> LiveServer:
    """The page's server, serving in a daemon thread (port 0: any free port; ``server.url``)."""
    server = LiveServer(hub, (host, port), title)
    threading.Thread(target=server.serve_forever, name="live-server", daemon=True).start()
    return server
