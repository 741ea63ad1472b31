"""The labelling page of the informativity study: people mark pool images "informative" or "not".

The labels go to the pool's label store (`store`); the page itself is `page.html`. The web app uses
the standard library only: it must run on a laptop beside the pool with nothing to install.

It answers only requests addressed to it by name (the Host header: a web page elsewhere cannot
rebind a name of its own to 127.0.0.1 and read the pool), takes labels only as JSON from its own
page (a form on another site can neither post JSON nor fake the Origin), and serves only files
that lie inside the pool when they are read and are the pictures `sample` made (PNG or JPEG by
content, whatever their names). Every answer says ``nosniff`` (a browser never guesses a type
other than the one sent), and the page comes with a Content-Security-Policy that lets nothing but
its own inline script and style run (`security_headers`, shared with the live page).

Labelling is blind to the model (issue 27's pools name the run in every id, ``RUN.KEY-sSEED-K``,
and a model leaves a fingerprint on its pictures that a labeller who knew the source could learn
to see): nothing the browser gets names a picture's run, model, key or file. Each picture is known
to the page by an opaque id drawn at random when the server starts (`opaque_ids`), its image is
``/picture/<opaque id>``, and a label posted for an opaque id is stored against the real id
(labels.csv is as before). The pictures are shown in a fixed shuffled order (`shown_order`),
whereas pool.csv holds each run's pictures together.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from s2i_data import untrusted

from s2i_model.labelling.store import (DEFAULT_TARGET, append_label, count_progress, pool_meta, read_image, read_labels,
                                       read_pool)

PAGE_FILE = Path(__file__).with_name("page.html")  # shipped as package data

MAX_BODY = 4096
# A refused body up to this size is read before the answer: closing on unread bytes resets the
# connection, and the client may lose the answer.
MAX_DRAIN = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("", "0.0.0.0", "::")
PICTURE = "/picture/"  # + a picture's opaque id: its image
ORDER_SEED = "labelling order 1"  # fixed: the same pool is shown in the same order every time



def _host_port(value: str) -> tuple[str, int] | None:
    """A Host header (``name[:port]``, IPv6 in brackets) as (lowercase name, port); None if it is none."""
    m = re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?", value.strip().lower())
    return (m[1], int(m[2] or 80)) if m else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def allowed_hosts(bind: str) -> tuple[bool, set[str]]:
    """(bound to every address?, the Host headers a page served from ``bind`` accepts): the bind
    address itself, the loopback names when it is loopback or a wildcard, and this machine's name
    for a wildcard. Any IP address is a fine Host when bound to all of them: a rebound name is
    never an address. Shared by the labelling and the live pages."""
    host = bind.lower()
    any_ip = host in WILDCARD
    hosts = {f"[{host}]" if ":" in host else host}
    if any_ip or host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
        hosts |= set(LOOPBACK)
    if any_ip:
        hosts.add(socket.gethostname().lower())
    return any_ip, hosts


def shown_order(rows: list[dict]) -> list[dict]:
    """Pool rows in the order the page shows them: a shuffle with a fixed seed (sorted by a hash
    of the seed and the id), so that the runs and models of a pool, which pool.csv holds together,
    come interleaved, and a labeller cannot tell a picture's source by where it comes. It depends
    on the ids alone, not on pool.csv's order, and a grown pool keeps its pictures' order."""
    return sorted(rows, key=lambda r: hashlib.sha256(f"{ORDER_SEED}:{r['id']}".encode()).digest())


def opaque_ids(ids: list[str]) -> dict[str, str]:
    """{real id: opaque id}: for each picture a random token (16 hex digits, no two alike), new
    for every server, by which the page knows it; nothing of the real id (run, model, key) is in it."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for id in ids:
        while (token := secrets.token_hex(8)) in taken:
            pass
        taken.add(token)
        out[id] = token
    return out


def _hashes(page: bytes, tag: str) -> str:
    """CSP sources for each inline ``<tag>`` element of ``page``: the SHA-256 of its text (with the
    line ends a browser's parser makes of it, so that a checkout with CRLF still matches)."""
    bodies = [b.replace(b"\r\n", b"\n").replace(b"\r", b"\n") for b in
              re.findall(rb"<%s(?:\s[^>]*)?>(.*?)</%s>" % (tag.encode(), tag.encode()), page, re.S | re.I)]
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in bodies) or "'none'"


def security_headers(page: bytes | None = None) -> list[tuple[str, str]]:
    """The headers every answer of a page server of ours carries: ``nosniff`` (a picture or a
    JSON answer is never run as a page or script whatever its bytes), no embedding by other
    sites' pages, and, for ``page`` (an HTML page of ours), a Content-Security-Policy allowing
    only its own inline scripts and styles (by hash), pictures and connections to this server
    (and data: pictures), no plugins, forms, frames or base URL. Shared by the labelling and live
    pages; a hash changes with the page, so an edited page needs no edit here."""
    headers = [("X-Content-Type-Options", "nosniff"), ("Cross-Origin-Resource-Policy", "same-origin")]
    if page is not None:
        csp = (f"default-src 'none'; script-src {_hashes(page, 'script')}; style-src {_hashes(page, 'style')}; "
               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        headers += [("Content-Security-Policy", csp), ("Referrer-Policy", "no-referrer")]
    return headers


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops connections when a page asks for many images at once while the
    # accept loop is busy; each drop costs the browser a 1 s SYN retry.
    request_queue_size = 128

    def __init__(self, pool: Path, address: tuple[str, int]):
        self.pool = Path(pool).resolve()
        self.rows = shown_order(read_pool(self.pool))
        self.ids = {r["id"] for r in self.rows}
        # The browser sees only the opaque ids; a label posted for one is stored against the real one.
        self.opaque = opaque_ids([r["id"] for r in self.rows])
        self.real = {token: id for id, token in self.opaque.items()}
        meta = pool_meta(self.pool)
        self.target = int(meta.get("target", DEFAULT_TARGET))
        self.classes = list(count_progress(self.rows, {}, meta.get("classes", []), self.target))
        self.label_problems: list[str] = []
        read_labels(self.pool, self.label_problems)
        # Only the files pool.csv lists are served, each by its picture's opaque id; whether they lie
        # inside the pool is checked when each is read, since a file can be swapped for a symlink
        # while the server runs.
        self.files = {PICTURE + self.opaque[r["id"]]: r["file"] for r in self.rows}
        self.any_ip, self.hosts = allowed_hosts(address[0])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)
        self.port = self.server_address[1]
        shown = "127.0.0.1" if self.any_ip else f"[{address[0]}]" if ":" in address[0] else address[0]
        self.url = f"http://{shown}:{self.port}/"

    def accepts(self, host: tuple[str, int]) -> bool:
        name, port = host
        return port == self.port and (name in self.hosts or (self.any_ip and _is_ip(name)))

    def handle_error(self, request, client_address):
        # A browser that goes away mid-request (tab closed, server stopping) is not an error of
        # ours: no traceback on the console for it.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError)):
            return
        super().handle_error(request, client_address)

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self):
        # Browsers open spare connections ahead of need; left open, a stopped server would still
        # take labels on them.
        super().server_close()
        with self._open_lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def state(self) -> dict:
        labels = read_labels(self.pool, [])  # malformed lines were reported at start
        items = [{"id": self.opaque[r["id"]], "class": r["class"], "src": PICTURE + self.opaque[r["id"]],
                  "label": labels.get(r["id"])} for r in self.rows]
        return {"items": items, "classes": self.classes, "target": self.target,
                "progress": count_progress(self.rows, labels, self.classes, self.target)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a client that connects and never finishes its request does not hold a thread for ever

    def log_message(self, format, *args):  # one line per image request would drown the terminal
        pass

    _page: bytes | None = None  # the page being answered, whose policy end_headers sends

    def end_headers(self) -> None:
        # here, so that every answer has them: the library's own (a bad request line, an unknown
        # method) as well as ours
        for header, value in security_headers(self._page):
            self.send_header(header, value)
        self._page = None
        super().end_headers()

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store", page: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self._page = body if page else None
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj) -> None:
        self._send(200, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, (message[:240] + "\n").encode(), "text/plain; charset=utf-8")

    def _host(self) -> tuple[str, int] | None:
        """The Host the request names, when it is one of this server's addresses."""
        hosts = self.headers.get_all("Host") or []
        host = _host_port(hosts[0]) if len(hosts) == 1 else None
        return host if host and self.server.accepts(host) else None

    def _host_refusal(self) -> tuple[int, str]:
        shown = ", ".join(self.headers.get_all("Host") or ["(none)"])
        return 403, f"refused: Host {shown!r} is not this server; open {self.server.url}"

    def _drain(self, size: int) -> None:
        if 0 < size <= MAX_DRAIN:
            while size > 0 and (chunk := self.rfile.read(min(size, 65536))):
                size -= len(chunk)

    def do_GET(self) -> None:
        if not self._host():
            return self._error(*self._host_refusal())
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            self._send(200, PAGE_FILE.read_bytes(), "text/html; charset=utf-8", page=True)
        elif path == "/api/state":
            self._json(self.server.state())
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon", "max-age=86400")
        elif path in self.server.files:
            file = self.server.files[path]
            body = read_image(self.server.pool, file)  # checked as it is read: files change while serving
            if body is None:  # gone, not a file of the pool's own, or not a picture whatever its name
                return self._error(404, f"missing image {path}")
            self._send(200, body, untrusted.image_type(body), "max-age=600")
        else:
            self._error(404, f"not found: {path}")

    def _refusal(self) -> tuple[int, str] | None:
        """Why this POST is not taken: (status, message); None when it is."""
        host = self._host()
        if not host:
            return self._host_refusal()
        origins = self.headers.get_all("Origin") or []
        # Same origin means the very Host the browser put in the request, not just any name of ours.
        if origins and not (len(origins) == 1 and origins[0][:7].lower() == "http://" and _host_port(origins[0][7:]) == host):
            return 403, f"refused: Origin {', '.join(origins)!r} is not this page"
        if self.headers.get_content_type() != "application/json":
            return 415, f"refused: labels are posted as application/json, not {self.headers.get_content_type()}"
        if urlsplit(self.path).path != "/api/label":
            return 404, "not found"
        return None

    def do_POST(self) -> None:
        try:
            size = int(self.headers.get("Content-Length", 0))
        except ValueError:
            size = -1
        refusal = self._refusal() or (None if 0 < size <= MAX_BODY else (400, f"body must be 1 to {MAX_BODY} bytes"))
        if refusal:
            self._drain(size)
            return self._error(*refusal)
        try:
            msg = json.loads(self.rfile.read(size))
        except RecursionError:
            return self._error(400, "bad JSON: nested too deeply")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return self._error(400, "bad JSON: " + str(e).splitlines()[0])
        if not isinstance(msg, dict):
            return self._error(400, 'expected {"id": ..., "label": ...}')
        # The page names a picture by its opaque id; the real one is never sent, nor echoed back.
        token = msg.get("id")
        id = self.server.real.get(token) if isinstance(token, str) else None
        if id is None:
            return self._error(400, "unknown picture: not one this server showed (reload the page)")
        try:
            append_label(self.server.pool, id, msg.get("label"), self.server.ids)
        except (ValueError, TypeError) as e:  # TypeError: a label that cannot be compared, should one be
            return self._error(400, str(e).splitlines()[0])
        except OSError as e:
            return self._error(500, f"label not saved: {e.strerror or e}")
        srv = self.server
        self._json({"progress": count_progress(srv.rows, read_labels(srv.pool, []), srv.classes, srv.target)})


def make_server(pool: Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """The app, bound but not yet serving (port 0: any free port; see ``server.server_address``).
    It answers requests addressed to ``host``: 127.0.0.1 and localhost answer to the loopback names,
    0.0.0.0 to those and any IP address."""
    return _Server(pool, (host, port))


def serve(pool: Path, host: str = "127.0.0.1", port: int = 8765, log=print) -> None:
    server = make_server(pool, host, port)
    for problem in server.label_problems:
        log(problem)
    log(f"labelling {len(server.rows)} images of {Path(pool)} at {server.url}  (Ctrl-C stops; every click is saved)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped; labels are in " + str(Path(pool) / "labels.csv"))
    finally:
        server.server_close()
