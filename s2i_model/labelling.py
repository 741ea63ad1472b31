"""The labelling page of the informativity study: people mark pool images "informative" or "not".

Labels live in POOL/labels.csv, append-only (``id,label,time``; the last line for an id wins), so a
relabel is one more line and a crash can at worst tear the line being written. The web app uses
the standard library only: it must run on a laptop beside the pool with nothing to install.

It answers only requests addressed to it by name (the Host header: a web page elsewhere cannot
rebind a name of its own to 127.0.0.1 and read the pool), takes labels only as JSON from its own
page (a form on another site can neither post JSON nor fake the Origin), and serves only files
that lie inside the pool when they are read.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import mimetypes
import os
import re
import socket
import stat
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

LABELS = ("informative", "not")
HEADER = "id,label,time\n"
DEFAULT_TARGET = 500
MAX_BODY = 4096
# A refused body up to this size is read before the answer: closing on unread bytes resets the
# connection, and the client may lose the answer.
MAX_DRAIN = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("", "0.0.0.0", "::")

# One server, many handler threads: appends must not interleave.
_write_lock = threading.Lock()


def read_pool(pool: Path) -> list[dict]:
    with open(Path(pool) / "pool.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: set[str] = set()
    for n, r in enumerate(rows, 2):
        if not r.get("id") or not r.get("file") or not r.get("class"):
            raise ValueError(f"{pool}/pool.csv line {n}: needs id, file and class")
        if r["id"] in seen:
            raise ValueError(f"{pool}/pool.csv line {n}: duplicate id {r['id']!r}")
        seen.add(r["id"])
    return rows


def _meta(pool: Path) -> dict:
    path = Path(pool) / "pool.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _label_row(line: bytes) -> tuple[list[str], str | None]:
    """One line of labels.csv as its fields, and what is wrong with it (None: nothing)."""
    try:
        # Line by line: a stray quote or a bad byte then spoils its own line, not the rest of the file.
        row = next(csv.reader([line.decode().removesuffix("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return [], "not UTF-8 CSV"
    if len(row) != 3:
        return row, f"{len(row)} fields, expected 3: {HEADER.strip()}"
    return row, None if row[1] in LABELS else f"unknown label {row[1]!r}"


def read_labels(pool: Path, problems: list[str] | None = None) -> dict[str, str]:
    """Each id's label (its last line wins). A malformed line raises ValueError; given ``problems``,
    it is skipped instead and described there in one line. A bad header always raises."""
    path = Path(pool) / "labels.csv"
    if not path.is_file():
        return {}
    data = path.read_bytes()
    # A crash mid-write leaves a final line without its newline; that click was never confirmed.
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    labels: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        row, wrong = _label_row(line)
        if n == 1:
            if row != HEADER.strip().split(","):
                raise ValueError(f"{path}: header is {row}, expected {HEADER.strip()}")
        elif not wrong:
            labels[row[0]] = row[1]
        elif not line.strip():
            continue  # a blank line holds no label to lose
        elif problems is None:
            raise ValueError(f"{path} line {n}: malformed ({wrong})")
        else:
            problems.append(f"{path} line {n}: malformed ({wrong}), skipped")
    return labels


def append_label(pool: Path, id: str, label: str, ids: set[str] | None = None) -> None:
    """Append one label and fsync it. ``ids``: the pool's ids, when the caller already has them."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}: use one of {', '.join(LABELS)}")
    if id not in (ids if ids is not None else {r["id"] for r in read_pool(pool)}):
        raise ValueError(f"unknown id {id!r}: not in {pool}/pool.csv")
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([id, label, datetime.now(timezone.utc).isoformat(timespec="seconds")])
    with _write_lock, open(Path(pool) / "labels.csv", "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - 65536))
        tail = f.read()
        if tail and not tail.endswith(b"\n"):
            # Cut a torn line before appending, or the new line would be glued onto it.
            end = end - len(tail) + tail.rfind(b"\n") + 1
            f.truncate(end)
        f.write(((HEADER if end == 0 else "") + line.getvalue()).encode())
        f.flush()
        os.fsync(f.fileno())


def _progress(rows: list[dict], labels: dict[str, str], classes: list[str], target: int) -> dict:
    out = {c: {"informative": 0, "not": 0, "unlabelled": 0, "target": target} for c in classes}
    for r in rows:
        counts = out.setdefault(r["class"], {"informative": 0, "not": 0, "unlabelled": 0, "target": target})
        counts[labels.get(r["id"], "unlabelled")] += 1
    return out


def progress(pool: Path) -> dict[str, dict[str, int]]:
    meta = _meta(pool)
    return _progress(read_pool(pool), read_labels(pool), meta.get("classes", []), int(meta.get("target", DEFAULT_TARGET)))


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


def _fd_path(fd: int) -> str | None:
    """Where an open file really is, where the system says (Linux); None elsewhere."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops connections when a page asks for many images at once while the
    # accept loop is busy; each drop costs the browser a 1 s SYN retry.
    request_queue_size = 128

    def __init__(self, pool: Path, address: tuple[str, int]):
        self.pool = Path(pool).resolve()
        self.rows = read_pool(self.pool)
        self.ids = {r["id"] for r in self.rows}
        meta = _meta(self.pool)
        self.target = int(meta.get("target", DEFAULT_TARGET))
        self.classes = list(_progress(self.rows, {}, meta.get("classes", []), self.target))
        self.label_problems: list[str] = []
        read_labels(self.pool, self.label_problems)
        # Only the files pool.csv lists are served; whether they lie inside the pool is checked when
        # each is read, since a file can be swapped for a symlink while the server runs.
        self.files = {"/" + r["file"]: r["file"] for r in self.rows}
        host = address[0].lower()
        # Any IP address is a fine Host when bound to all of them: a rebound name is never an address.
        self.any_ip = host in WILDCARD
        self.hosts = {f"[{host}]" if ":" in host else host}
        if self.any_ip or host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback):
            self.hosts |= set(LOOPBACK)
        if self.any_ip:
            self.hosts.add(socket.gethostname().lower())
        if ":" in host:
            self.address_family = socket.AF_INET6
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)
        self.port = self.server_address[1]
        shown = "127.0.0.1" if self.any_ip else f"[{address[0]}]" if ":" in host else address[0]
        self.url = f"http://{shown}:{self.port}/"

    def accepts(self, host: tuple[str, int]) -> bool:
        name, port = host
        return port == self.port and (name in self.hosts or (self.any_ip and _is_ip(name)))

    def read_inside(self, file: str) -> bytes | None:
        """POOL/file's bytes, or None when it is missing or, now, not a plain file inside the pool."""
        try:
            path = (self.pool / file).resolve()
            if not path.is_relative_to(self.pool):
                return None
            # O_NOFOLLOW: the file cannot turn into a symlink between resolve and open; O_NONBLOCK:
            # a FIFO put in its place cannot hang the thread.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            return None
        with open(fd, "rb") as f:
            # A folder above it may have been swapped between resolve and open: ask where the file is.
            where = _fd_path(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode) or (where is not None and not Path(where).is_relative_to(self.pool)):
                return None
            return f.read()

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
        items = [{"id": r["id"], "class": r["class"], "src": quote("/" + r["file"]), "label": labels.get(r["id"])}
                 for r in self.rows]
        return {"items": items, "classes": self.classes, "target": self.target,
                "progress": _progress(self.rows, labels, self.classes, self.target)}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # a client that connects and never finishes its request does not hold a thread for ever

    def log_message(self, format, *args):  # one line per image request would drown the terminal
        pass

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
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
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(self.server.state())
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon", "max-age=86400")
        elif path in self.server.files:
            file = self.server.files[path]
            body = self.server.read_inside(file)
            if body is None:
                return self._error(404, f"missing image {path}")
            self._send(200, body, mimetypes.guess_type(file)[0] or "application/octet-stream", "max-age=600")
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
        try:
            append_label(self.server.pool, msg.get("id"), msg.get("label"), self.server.ids)
        except (ValueError, TypeError) as e:  # TypeError: an id that cannot be looked up, such as a list
            return self._error(400, str(e).splitlines()[0])
        except OSError as e:
            return self._error(500, f"label not saved: {e.strerror or e}")
        srv = self.server
        self._json({"progress": _progress(srv.rows, read_labels(srv.pool, []), srv.classes, srv.target)})


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


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>s2i informativity labelling</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
header { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em; background: #2b2d31; color: #eee; }
header h1 { font-size: 1.05em; margin: 0; font-weight: 600; }
header .keys { margin-left: auto; opacity: .75; font-size: .9em; }
main { display: flex; gap: 2em; padding: 1.2em; flex-wrap: wrap; }
#viewer { text-align: center; }
#class { font-size: 2.2em; font-weight: 700; margin: .1em 0 .3em; letter-spacing: .02em; }
#image { width: 384px; height: 384px; image-rendering: pixelated; background: #ccc; border: 6px solid #bbb;
         border-radius: 4px; display: block; margin: 0 auto; }
#image.informative { border-color: #2e9d4a; } #image.not { border-color: #c9423a; }
#meta { color: #666; margin: .5em 0; font-size: .9em; }
#current.informative { color: #2e9d4a; font-weight: 600; } #current.not { color: #c9423a; font-weight: 600; }
.buttons { display: flex; gap: 1em; justify-content: center; margin: .6em 0; }
button { font-size: 1.1em; padding: .6em 1.4em; border: 0; border-radius: 6px; color: white; cursor: pointer; }
#informative { background: #2e9d4a; } #not { background: #c9423a; } #prev, #next { background: #777; }
#done { background: #e3f4e6; border: 1px solid #2e9d4a; padding: .7em; border-radius: 6px; margin: .5em 0; }
#error { color: #c9423a; font-weight: 600; min-height: 1.2em; }
#strip { display: flex; gap: 3px; justify-content: center; margin-top: .6em; }
#strip img { width: 32px; height: 32px; image-rendering: pixelated; border: 3px solid #ddd; cursor: pointer; }
#strip img.informative { border-color: #2e9d4a; } #strip img.not { border-color: #c9423a; }
#strip img.here { outline: 2px solid #222; }
table { border-collapse: collapse; background: white; }
th, td { padding: .35em .8em; border-bottom: 1px solid #e2e2e2; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.selected td { background: #fff6d6; } tr.met td:last-child { color: #2e9d4a; font-weight: 600; }
</style></head>
<body>
<header><h1>Can you tell what sound this picture shows?</h1>
<label>class <select id="filter"><option value="">all classes</option></select></label>
<span class="keys"><b>i</b> informative &middot; <b>n</b> not &middot; <b>&larr;</b>/<b>&rarr;</b> move</span></header>
<main>
<section id="viewer">
  <div id="class">&nbsp;</div>
  <img id="image" alt="">
  <div id="meta"><span id="position"></span> &middot; <span id="id"></span> &middot; <span id="current"></span></div>
  <div class="buttons"><button id="prev" title="&larr;">&larr;</button>
    <button id="informative">Informative (i)</button><button id="not">Not informative (n)</button>
    <button id="next" title="&rarr;">&rarr;</button></div>
  <div id="done" hidden></div><div id="error"></div>
  <div id="strip"></div>
</section>
<section><table id="progress"><thead><tr><th>class</th><th>informative</th><th>not</th><th>unlabelled</th>
  <th>informative + not of target</th></tr></thead><tbody></tbody></table></section>
</main>
<script>
"use strict";
const $ = s => document.querySelector(s);
let all = [], items = [], idx = 0, progress = {}, queue = Promise.resolve(), pending = 0, failures = 0;

function setPending(d) { pending += d; document.body.dataset.pending = pending; }

// Every action waits for the one before, so keys pressed while a label is saving apply, in order,
// to the images the page then shows. A failed save drops the actions queued behind it: they were
// meant for images the page never moved on to.
function later(action) {
  const seen = failures;
  setPending(1);
  queue = queue.then(() => { if (seen === failures) return action(); })
    .catch(e => { $('#error').textContent = e.message; })
    .finally(() => setPending(-1));
}

// Searching forward from the current image (and wrapping) keeps the labeller moving through the pool.
function nextUnlabelled(from) {
  for (let k = 1; k <= items.length; k++) {
    const j = (from + k) % items.length;
    if (!items[j].label) return j;
  }
  return -1;
}

function applyFilter() {
  const c = $('#filter').value;
  history.replaceState(null, '', c ? '#' + encodeURIComponent(c) : location.pathname);
  items = c ? all.filter(x => x.class === c) : all;
  idx = Math.max(0, nextUnlabelled(-1));
  render();
}

function renderProgress() {
  const body = $('#progress tbody');
  body.innerHTML = '';
  for (const [c, p] of Object.entries(progress)) {
    const tr = body.insertRow();
    tr.dataset.class = c;
    if (c === $('#filter').value) tr.className = 'selected';
    if (p.informative >= p.target && p.not >= p.target) tr.classList.add('met');
    for (const v of [c, p.informative, p.not, p.unlabelled,
                     `${p.informative} + ${p.not} of ${p.target} + ${p.target}`]) tr.insertCell().textContent = v;
  }
}

function renderStrip() {
  const strip = $('#strip');
  strip.innerHTML = '';
  const lo = Math.max(0, Math.min(idx - 8, items.length - 17));
  for (let j = lo; j < Math.min(items.length, lo + 17); j++) {
    const t = document.createElement('img');
    t.src = items[j].src; t.title = items[j].id;
    t.className = (items[j].label || '') + (j === idx ? ' here' : '');
    t.onclick = () => later(() => { idx = j; render(); });
    strip.appendChild(t);
  }
}

function render() {
  const it = items[idx], c = $('#filter').value;
  const left = items.filter(x => !x.label).length;
  $('#done').hidden = left > 0;
  $('#done').textContent = `All ${items.length} ${c ? c + ' ' : ''}images are labelled. ` +
    (c ? 'Pick another class, or use \\u2190/\\u2192 to revise.' : 'Use \\u2190/\\u2192 to revise.');
  if (!it) { $('#class').textContent = 'no images in this pool'; renderProgress(); return; }
  $('#image').src = it.src; $('#image').alt = it.id; $('#image').className = it.label || '';
  $('#class').textContent = it.class;
  $('#position').textContent = `${idx + 1} / ${items.length}`;
  $('#id').textContent = it.id;
  $('#current').textContent = it.label ? 'labelled ' + it.label : 'unlabelled';
  $('#current').className = it.label || '';
  renderProgress(); renderStrip();
}

// The page moves on only once the server has answered that the label is on disk (it fsyncs before
// answering); a failed save keeps the page on the image and says so.
async function label(lab) {
  const it = items[idx];
  if (!it) return;
  try {
    const r = await fetch('/api/label', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                         body: JSON.stringify({id: it.id, label: lab})});
    const text = await r.text();
    if (!r.ok) throw new Error(text.trim() || `HTTP ${r.status}`);
    progress = JSON.parse(text).progress;
  } catch (e) {
    failures++;
    const why = e instanceof TypeError ? 'no answer (is the server running?)' : e.message;
    $('#error').textContent = `${it.id} NOT saved: ${why}`;
    render();
    return;
  }
  it.label = lab;
  $('#error').textContent = '';
  const next = nextUnlabelled(idx);
  if (next >= 0) idx = next;
  render();
}

function move(d) { idx = Math.min(items.length - 1, Math.max(0, idx + d)); render(); }

document.addEventListener('keydown', e => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const act = {i: () => label('informative'), n: () => label('not'),
               ArrowLeft: () => move(-1), ArrowRight: () => move(1)}[e.key];
  if (act) { e.preventDefault(); later(act); }
});
$('#informative').onclick = () => later(() => label('informative'));
$('#not').onclick = () => later(() => label('not'));
$('#prev').onclick = () => later(() => move(-1));
$('#next').onclick = () => later(() => move(1));
// Blur so that i/n/arrows label and move instead of changing the selected class.
$('#filter').onchange = e => { e.target.blur(); later(applyFilter); };

fetch('/api/state', {cache: 'no-store'}).then(r => r.json()).then(s => {
  all = s.items; progress = s.progress;
  for (const c of s.classes) $('#filter').add(new Option(c, c));
  const c = decodeURIComponent(location.hash.slice(1));
  if (s.classes.includes(c)) $('#filter').value = c;
  applyFilter();
  document.body.dataset.ready = '1';
}).catch(e => { $('#error').textContent = 'Cannot load the pool: ' + e.message; });
</script>
</body></html>
"""
