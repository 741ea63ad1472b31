"""Every connection of a download attempt goes through a guard: a small HTTP proxy on 127.0.0.1
that yt-dlp (its ``proxy``) and the ffmpeg it runs (``http_proxy``) are pointed at, one per attempt.

Why a proxy: two clients talk to a mirror (yt-dlp for the page and for whole files, ffmpeg for a
window and for HLS), and each follows redirects and times out on its own terms; a socket time-out
starts again with every byte, so a mirror that trickles a byte every few seconds held both for
ever. The guard sees every connection of both before it is made and every byte after it:

- **Addresses.** The host of every request (the template's, or wherever a redirect leads) is
  resolved, and the request is refused (403) when an address is not public (loopback, link-local,
  private, reserved, multicast, unspecified) unless the template's own host resolves to that very
  address: a mirror on a lab's network works, but it cannot send the downloader on to any other
  machine there (or to another loopback address). The connection goes to the addresses checked,
  never to a second look-up of the name.
- **Read time-out and minimum speed.** A connection whose server sends nothing for
  ``read_timeout_s`` seconds, or less than ``min_speed_Bps`` over ``window_s`` seconds, is cut.
  Only time spent waiting for the server counts: while the client is slow to take the bytes
  (ffmpeg encoding), the guard is blocked handing them on, and that time is not the mirror's.
  An idle kept-alive connection is cut the same way, which costs its client a new connection.
- **Size.** ``max_bytes`` (when set) bounds what the attempt may receive over all connections.

What it cut or refused is kept as `events`, the first being the attempt's reason when it fails.
An environment proxy (``http_proxy``/``https_proxy``/``no_proxy``; ``http://`` ones) is still used:
the guard connects through it.
"""

from __future__ import annotations

import base64
import ipaddress
import select
import socket
import struct
import threading
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

HEAD_MAX = 64 * 1024  # a request head from yt-dlp or ffmpeg is a few hundred bytes
BLOCK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    read_timeout_s: float = 30.0
    min_speed_Bps: float = 10_000.0  # 0: no minimum
    window_s: float = 60.0


@dataclass(frozen=True)
class Event:
    kind: str  # refused | timeout | slow | size | connect | reset
    reason: str

    @property
    def transient(self) -> bool:
        """Worth another attempt: a slow or unreachable server may do better later."""
        return self.kind in ("timeout", "slow", "connect", "reset")


class _Stop(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.event = Event(kind, reason)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
    return mapped or ip


def address_class(ip) -> str:
    """'' for a public address, else the kind of address it is."""
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):  # most telling first
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "" if ip.is_global else "non-public"


def template_addresses(url_template: str) -> frozenset:
    """The addresses the template's host resolves to (an unresolvable host: none)."""
    host = urlsplit(url_template.replace("{ytid}", "x").replace("{start}", "000000")).hostname
    if not host:
        return frozenset()
    try:
        return frozenset(_ip(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, ValueError):
        return frozenset()


def _host_port(target: str, default_port: int) -> tuple[str, int]:
    u = urlsplit(f"//{target}")
    return u.hostname or "", u.port or default_port


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    auth: bytes = b""  # a Proxy-Authorization header line, when the URL names a user

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _env_proxy(scheme: str, host: str) -> _Proxy | None:
    """The user's own proxy for ``scheme`` (environment), if any and not bypassed for ``host``."""
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    u = urlsplit(url if "://" in url else f"http://{url}")
    if u.scheme != "http" or not u.hostname:
        return None
    auth = b""
    if u.username is not None:
        token = base64.b64encode(f"{unquote(u.username)}:{unquote(u.password or '')}".encode()).decode()
        auth = f"Proxy-Authorization: Basic {token}\r\n".encode()
    return _Proxy(u.hostname, u.port or 8080, auth)


def _reply(sock: socket.socket, code: int, words: str, text: str) -> None:
    body = (text + "\n").encode("utf-8", "replace")
    head = (f"HTTP/1.1 {code} {words}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.sendall(head + body)
    except OSError:
        pass


class Guard:
    """One attempt's proxy: ``with Guard(template, limits) as g:`` hand ``g.url`` to the clients."""

    def __init__(self, url_template: str, limits: Limits, max_bytes: int | None = None) -> None:
        self.allowed = template_addresses(url_template)
        self.limits = limits
        self.max_bytes = max_bytes
        self.received = 0
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._accept, daemon=True, name="s2i-download-guard")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    @property
    def failure(self) -> Event | None:
        with self._lock:
            return self.events[0] if self.events else None

    def __enter__(self) -> "Guard":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._closed = True
            socks = list(self._open)
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (close alone does not)
        except OSError:
            pass
        self._server.close()
        for s in socks:  # wakes relays blocked in recv/send; they close and end
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    # -------------------------------------------------------------------------------- plumbing

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._open.add(sock)
            return True

    def _close(self, *socks: socket.socket | None) -> None:
        for s in socks:
            if s is None:
                continue
            with self._lock:
                self._open.discard(s)
            s.close()

    def _note(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed by __exit__
            if not self._track(client):
                client.close()
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="s2i-download-relay").start()

    # -------------------------------------------------------------------------------- one connection

    def _serve(self, client: socket.socket) -> None:
        upstream = relaying = None
        try:
            head, rest = self._read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                scheme, (host, port) = "https", _host_port(target, 443)
            else:
                u = urlsplit(target)
                if u.scheme != "http" or not u.hostname:
                    raise _Stop("refused", f"the guard forwards http:// URLs only, not {target[:80]!r}")
                scheme, host, port = "http", u.hostname, u.port or 80
            proxy = _env_proxy(scheme, host)
            addrs = self._check(host, port, proxy)
            upstream = self._connect(host, port, addrs, proxy, tunnel=method == "CONNECT")
            if method == "CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:
                first = _forward_head(head, method, target, version, proxy) + rest
            if first:
                upstream.sendall(first)
            relaying = True
            self._relay(client, upstream, host)
        except _Stop as stop:
            self._note(stop.event)
            if relaying:
                return  # mid-answer: closing is all the client can be told
            code, words = (403, "Forbidden") if stop.event.kind == "refused" else (504, "Gateway Timeout")
            _reply(client, code, words, stop.event.reason)
        except (OSError, ValueError, UnicodeError):
            pass  # a client or server that went away: its own side reports it
        finally:
            self._close(client, upstream)

    def _read_head(self, client: socket.socket) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > HEAD_MAX:
                raise ValueError("request head too long")
            ready, _, _ = select.select([client], [], [], self.limits.read_timeout_s)
            chunk = client.recv(BLOCK) if ready else b""
            if not chunk:
                raise ValueError("no request")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n", rest

    def _check(self, host: str, port: int, proxy) -> list[tuple]:
        """The addresses to connect to; `_Stop` when one of them is not for this template."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            if proxy is not None:
                return []  # the user's proxy resolves names this machine cannot
            raise _Stop("connect", f"cannot resolve {host}: {e.strerror or e}") from None
        for info in infos:
            ip = _ip(info[4][0])
            kind = address_class(ip)
            if kind and ip not in self.allowed:
                raise _Stop("refused", f"refused to connect to {host} ({ip}, a {kind} address): only the "
                                       "--url-template's own host may be a loopback, link-local or private address")
        return infos

    def _connect(self, host: str, port: int, infos: list[tuple], proxy, tunnel: bool) -> socket.socket:
        timeout = self.limits.read_timeout_s
        if proxy is not None:
            sock = socket.create_connection(proxy.address, timeout=timeout)
            if tunnel:
                sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + proxy.auth + b"\r\n")
                answer, _ = self._read_head(sock)
                if answer.split(b" ", 2)[1:2] != [b"200"]:
                    sock.close()
                    raise _Stop("connect", f"proxy {proxy.host}:{proxy.port} refused {host}:{port}: "
                                           f"{answer.splitlines()[0].decode('latin-1')[:80]}")
        else:
            sock, error = None, None
            for family, kind, proto, _, sockaddr in infos:
                s = socket.socket(family, kind, proto)
                s.settimeout(timeout)
                try:
                    s.connect(sockaddr)
                    sock = s
                    break
                except OSError as e:
                    s.close()
                    error = e
            if sock is None:
                why = "timed out" if isinstance(error, TimeoutError) else (getattr(error, "strerror", None) or error)
                raise _Stop("connect", f"cannot connect to {host}:{port}: {why}")
        sock.settimeout(None)
        if not self._track(sock):
            sock.close()
            raise OSError("guard closed")
        return sock

    def _relay(self, client: socket.socket, upstream: socket.socket, host: str) -> None:
        """Bytes both ways until one side closes; cut a silent or slow server."""
        lim = self.limits
        silent = waited = 0.0  # seconds waiting on select (never the time spent handing bytes on)
        got = 0  # bytes from upstream in the current speed window
        while True:
            t0 = time.monotonic()
            ready, _, _ = select.select([client, upstream], [], [], max(0.0, lim.read_timeout_s - silent))
            spent = time.monotonic() - t0
            silent, waited = silent + spent, waited + spent
            if not ready and silent >= lim.read_timeout_s:
                raise _Stop("timeout", f"{host} sent nothing for {lim.read_timeout_s:g} s (--read-timeout)")
            for sock in ready:
                try:
                    data = sock.recv(BLOCK)
                except ConnectionResetError:
                    if sock is upstream:  # the client hears of it as it would without the guard
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        raise _Stop("reset", f"{host} reset the connection") from None
                    raise
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)
                silent = 0.0
                if sock is upstream:
                    got += len(data)
                    self._count(len(data))
            if waited >= lim.window_s:
                if got < lim.min_speed_Bps * waited:
                    raise _Stop("slow", f"{host} sent {got / waited / 1000:.3g} KB/s over {waited:.0f} s, under "
                                        f"--min-speed {lim.min_speed_Bps / 1000:g} KB/s")
                waited, got = 0.0, 0

    def _count(self, n: int) -> None:
        with self._lock:
            self.received += n
            over = self.max_bytes is not None and self.received > self.max_bytes
        if over:
            raise _Stop("size", f"the file is larger than --max-file-mb {self.max_bytes / 1e6:g}")


def _forward_head(head: bytes, method: str, target: str, version: str, proxy: _Proxy | None) -> bytes:
    """The request as the server (or the user's proxy) gets it: one request, then close."""
    if proxy is None:
        u = urlsplit(target)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    drop = (b"proxy-connection:", b"proxy-authorization:", b"connection:", b"keep-alive:")
    lines = [line for line in head.split(b"\r\n")[1:] if line and not line.lower().startswith(drop)]
    if proxy is not None and proxy.auth:
        lines.append(proxy.auth.rstrip())
    return b"\r\n".join([f"{method} {target} {version}".encode("latin-1"), *lines, b"Connection: close", b"", b""])
