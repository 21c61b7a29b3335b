"""The local compute's HTTP endpoint: Neon's ``/sql`` and the WebSocket upgrade on one port.

A minimal HTTP/1.1 server in the daemon (keep-alive, ``Content-Length`` or
chunked request bodies under the request limit), routed as Neon's proxy routes
(proxy/src/serverless/mod.rs): any WebSocket upgrade (GET, ``Connection:
upgrade``, ``Upgrade: websocket``, any path) first; ``POST /sql``; ``OPTIONS
/sql`` (CORS preflight); anything else 400 ``"query is not supported"``. Every
response carries ``neon-request-id``.

The WebSocket side is served elsewhere, through exactly this interface::

    from .wsproxy import serve as serve_websocket
    serve_websocket(client_sock, request, endpoint)

``client_sock`` is then owned by ``serve_websocket`` (it closes it);
``request`` is a ``Request`` (``method``, ``path``, ``query``: the raw query
string without ``?``, ``headers``: lower-cased names, ``extra``: bytes already
read past the header block); ``endpoint`` is the ``HttpEndpoint``: ``compute``
(the daemon's Compute), ``backends`` (TCP port of the direct endpoint -> direct
Unix socket path; of the pooled endpoint -> PgBouncer's socket path, or None
without PgBouncer), ``direct_backend``, ``pooled_missing`` (the refusal message
when there is no PgBouncer, else None).

Faults (``cut_after``/``latency`` on endpoint ``"http"``) are decided at accept:
the client goes through ``relay_faulty`` to one end of a ``socketpair()`` and
the server works on the other end, so relay.py applies them unchanged.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from .listener import Listener
from .relay import TappedSocket, relay_faulty
from .sqlhttp import Limits, Response, SqlOverHttp, not_supported, preflight

log = logging.getLogger("neon_notebook.local")

_MAX_HEAD = 64 << 10


class BadRequest(Exception):
    """Not HTTP/1.x we can read: answered with a plain 400 and the connection closed."""


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    extra: bytes
    version: str = "HTTP/1.1"

    @property
    def is_websocket(self) -> bool:
        """hyper's ``is_upgrade_request``: GET, ``Connection`` lists upgrade, ``Upgrade: websocket``."""
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return (self.method == "GET" and "upgrade" in connection
                and self.headers.get("upgrade", "").strip().lower() == "websocket")

    @property
    def keep_alive(self) -> bool:
        connection = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class _Conn:
    """A client connection's bytes, buffered: what was read past the last request stays."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _more(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def head(self) -> bytes | None:
        """The header block up to the blank line; None at a clean EOF between requests."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[:end + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise BadRequest("header block too large")
            if not self._more():
                if self.buf.strip():
                    raise BadRequest("connection closed mid-request")
                return None

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise BadRequest("connection closed mid-body")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                data = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return data
            if len(self.buf) > _MAX_HEAD or not self._more():
                raise BadRequest("bad chunked body")


def parse_head(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("bad request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("bad header line")
        headers.setdefault(name.lower(), value.strip())  # hyper's get(): the first of repeated headers
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, b"", version)


def _status_line(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return f"HTTP/1.1 {status} {reason}\r\n"


def write_response(sock: socket.socket, response: Response, close: bool) -> None:
    head = [_status_line(response.status)]
    head += [f"{name}: {value}\r\n" for name, value in response.headers]
    head.append(f"content-length: {len(response.body)}\r\n")
    head.append(f"neon-request-id: {uuid.uuid4()}\r\n")
    head.append(f"date: {email.utils.formatdate(usegmt=True)}\r\n")
    if close:
        head.append("connection: close\r\n")
    head.append("\r\n")
    sock.sendall("".join(head).encode("latin-1") + response.body)


def _drain(sock: socket.socket, seconds: float = 2.0) -> None:
    """After answering a body too large: read what the client still sends (briefly), so closing
    with unread bytes does not reset the connection and lose the answer."""
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    except OSError:
        pass


class HttpEndpoint(Listener):
    """The TCP listener for ``/sql`` and WebSocket upgrades."""

    name = "http"

    def __init__(self, compute: Any, faults: Any, backends: dict[int, Path | None], direct_backend: Path,
                 pooled_missing: str | None, limits: Limits) -> None:
        super().__init__()
        self.compute, self.faults, self.limits = compute, faults, limits
        self.backends, self.direct_backend, self.pooled_missing = backends, direct_backend, pooled_missing
        self.sql = SqlOverHttp(compute, direct_backend, limits)

    def _handle(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.faults.any:  # decided at accept: the whole connection goes through the faulty relay
            tapped = TappedSocket.adopt(client, self.faults.tap(self.compute.count))
            outer, client = socket.socketpair()
            relay_faulty(tapped, outer, lambda: self.faults.latency, name="http")
        handed_off = False
        try:
            handed_off = self._serve(client)
        except (OSError, BadRequest) as exc:
            if isinstance(exc, BadRequest):
                try:
                    write_response(client, Response(400, str(exc).encode()), close=True)
                except OSError:
                    pass
        except Exception:
            log.exception("http connection failed")
        finally:
            if not handed_off:
                client.close()

    def _serve(self, client: socket.socket) -> bool:
        """Answer requests until the client closes; True when a WebSocket took the socket over."""
        conn = _Conn(client)
        while True:
            head = conn.head()
            if head is None:
                return False
            request = parse_head(head)
            if request.is_websocket:
                from .wsproxy import serve as serve_websocket

                request.extra = bytes(conn.buf)
                serve_websocket(client, request, self)
                return True
            body = self._body(conn, request)
            close = not request.keep_alive or body is None
            write_response(client, self._route(request, body, client), close)
            if body is None:
                _drain(client)
            if close:
                return False

    def _body(self, conn: _Conn, request: Request) -> bytes | None:
        """The request body; None past the limit (then the connection is closed after the answer)."""
        limit = self.limits.request_bytes
        headers = request.headers
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise BadRequest("bad content-length") from None
            if length < 0:
                raise BadRequest("bad content-length")
            if length > limit:
                return None
        if headers.get("expect", "").lower() == "100-continue":
            conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not chunked:
            return conn.exactly(length)
        body = bytearray()
        while True:
            try:
                size = int(conn.line().split(b";")[0], 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while conn.line():  # trailers
                    pass
                return bytes(body)
            if len(body) + size > limit:
                return None
            body += conn.exactly(size)
            conn.exactly(2)

    def _route(self, request: Request, body: bytes | None, client: socket.socket) -> Response:
        if request.path == "/sql" and request.method == "POST":
            return self.sql.handle(request.headers, body, client)
        if request.path == "/sql" and request.method == "OPTIONS":
            return preflight()
        return not_supported()

