"""PostgreSQL over WebSocket, as Neon's proxy serves it on ``/v2`` (any path).

The flow of proxy/src/pglb and proxy/src/proxy/mod.rs in WebSocket mode:
SSLRequest and GSSENCRequest answered ``N``; CancelRequest passed to the
backend (never waking the compute); AuthenticationCleartextPassword (R 3) in
its own frame; the password checked before the wake (a wrong one wakes
nothing); the compute woken and logged in to with SCRAM; AuthenticationOk,
the backend's ParameterStatus/BackendKeyData/ReadyForQuery in one frame; then
bytes both ways, whatever the client pipelined first included. The backend's
EOF (after Terminate, or a suspension) closes the WebSocket with a Close frame.

Chosen differences: the backend is picked by ``?address=``'s port (Neon ignores
it and takes the endpoint from Host/options); BackendKeyData is the backend's
own (Neon substitutes its key), so a CancelRequest goes to the backend of its
``?address=``; roles other than ``postgres`` are checked by PostgreSQL after
the wake; a refusal ends with a Close frame (Neon drops the TCP connection).
"""

from __future__ import annotations

import hmac
import re
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from . import scram, wire
from .websocket import FrameError, HandshakeError, WsStream, bad_request, handshake_response

from .wire import COULD_NOT_CONNECT
AUTH_CLEARTEXT = 3
_FORWARDED = ("user", "database", "application_name", "replication")  # compute/mod.rs set_startup_params
_PARAMS_COMPAT = "neon_proxy_params_compat:"
_NEON_OPTION = re.compile(r"neon_(\w+):(.+)")  # proxy/mod.rs neon_option
_CLOSE_WAIT = 2.0  # seconds the client has to answer our Close frame
_CHUNK = 1 << 16


class _Refused(Exception):
    """End the session with an ErrorResponse carrying ``raw``."""

    def __init__(self, raw: bytes) -> None:
        super().__init__("refused")
        self.raw = raw


def serve(client_sock: socket.socket, request: Any, endpoint: Any) -> None:
    """Serve one WebSocket upgrade request on ``client_sock`` until the connection ends; closes it.

    ``request`` has ``method``, ``path``, ``query``, ``headers`` (lower-cased names) and
    ``extra`` (bytes read past the header block); ``endpoint`` has ``compute``,
    ``backends`` (TCP port -> Unix socket path or None), ``direct_backend``, ``pooled_missing``.
    """
    try:
        client_sock.settimeout(None)
        try:
            client_sock.sendall(handshake_response(request.method, request.headers))
        except HandshakeError as exc:
            client_sock.sendall(bad_request(str(exc)))
            return
        ws = WsStream(client_sock, request.extra)
        try:
            _session(ws, request.query, endpoint)
        except _Refused as exc:
            ws.sendall(exc.raw)
            ws.close()
            _await_close(ws)
    except (FrameError, wire.ProtocolError, OSError):
        pass  # a text frame, a framing fault or a vanished client: dropped, as Neon does
    finally:
        client_sock.close()


def _await_close(ws: WsStream) -> None:
    """Read (and drop) what the client still sends until its Close answer, for at most ``_CLOSE_WAIT``.

    Closing a socket with unread bytes (a pipelined Query behind a refused
    password) would reset the connection and could lose the error in flight.
    """
    deadline = time.monotonic() + _CLOSE_WAIT
    try:
        while (left := deadline - time.monotonic()) > 0:
            ws.sock.settimeout(left)
            if not ws.recv(_CHUNK):
                return
    except (FrameError, wire.ProtocolError, OSError):
        pass


def _backend(query: str, endpoint: Any) -> Path | None:
    """The backend socket for ``?address=host:port``: the pooled port's PgBouncer (None when
    PgBouncer is missing), else PostgreSQL (no address, or a port of neither endpoint)."""
    address = parse_qs(query).get("address", [""])[0]
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and int(port) in endpoint.backends:
        return endpoint.backends[int(port)]
    return endpoint.direct_backend


def _session(ws: WsStream, query: str, endpoint: Any) -> None:
    """Start-up, authentication, wake and login, then the pump; ``_Refused`` ends it with an error."""
    compute = endpoint.compute
    code, packet = wire.read_startup(ws)
    backend = _backend(query, endpoint)
    if code == wire.CANCEL_REQUEST:
        return _cancel(packet, backend, compute)
    if backend is None:
        raise _Refused(wire.error_response(endpoint.pooled_missing))
    params = _negotiate(ws, code, wire.startup_params(packet))
    user = params.get("user", "")
    ws.sendall(scram.auth_message(AUTH_CLEARTEXT))
    kind, body = wire.read_message(ws)
    if kind != b"p":
        raise wire.ProtocolError("expected a PasswordMessage")
    password = body.split(b"\0", 1)[0]
    if user == "postgres" and not hmac.compare_digest(password, compute.password.encode()):
        raise _Refused(wire.error_response(f"password authentication failed for user '{user}'"))
    error = compute.ensure_active()
    if error:
        raise _Refused(wire.error_response(error))
    compute.note_connection()
    server = _login(backend, params, password.decode("utf-8", "replace"), user)
    try:
        ws.sendall(scram.auth_message(scram.AUTH_OK) + _greeting(server))
        _pump(ws, server)
    finally:
        server.close()


def _negotiate(ws: WsStream, code: int, params: dict[str, str]) -> dict[str, str]:
    """Protocol 3.0 only: a later 3.x gets NegotiateProtocolVersion without its ``_pq_.`` options."""
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise wire.ProtocolError(f"unsupported protocol version {major}.{minor}")
    if minor:
        unsupported = [k for k in params if k.startswith("_pq_.")]
        body = struct.pack("!ii", 3 << 16, len(unsupported)) + b"".join(k.encode() + b"\0" for k in unsupported)
        ws.sendall(b"v" + struct.pack("!i", len(body) + 4) + body)
        params = {k: v for k, v in params.items() if not k.startswith("_pq_.")}
    return params


def _split_options(options: str) -> list[str]:
    """``options`` split on unescaped whitespace, escapes kept (PostgreSQL's pg_split_opts)."""
    parts, current, escaped = [], [], False
    for c in options:
        if c in " \t\n\r\f\v" and not escaped:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        escaped = c == "\\" and not escaped
    parts.append("".join(current))
    return [p for p in parts if p]


def _is_neon_option(opt: str) -> bool:
    """Neon's own options, never forwarded: ``endpoint=``/``project=`` and ``neon_<key>:<value>``."""
    return opt.startswith(("endpoint=", "project=")) or _NEON_OPTION.match(opt) is not None


def compute_params(params: dict[str, str]) -> dict[str, str]:
    """The start-up parameters Neon forwards to the compute (compute/mod.rs ``set_startup_params``).

    ``user``, ``database``, ``application_name``, ``replication`` and ``options``
    without Neon's own, with ``client_encoding=UTF8`` forced; everything, when
    ``options`` holds ``neon_proxy_params_compat:<any>``.
    """
    options = _split_options(params.get("options", ""))
    compat = any(o.startswith(_PARAMS_COMPAT) and len(o) > len(_PARAMS_COMPAT) for o in options)
    out = {} if compat else {"client_encoding": "UTF8"}
    for key, value in params.items():
        if key == "options":
            kept = " ".join(o for o in options if not _is_neon_option(o))
            if kept:
                out[key] = kept
        elif compat or key in _FORWARDED:
            out[key] = value
    return out


def _startup_packet(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", 3 << 16) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def _login(backend: Path, params: dict[str, str], password: str, user: str) -> socket.socket:
    """Connect to the backend and log in with SCRAM; ``_Refused`` with the reason if that fails."""
    server = socket.socket(socket.AF_UNIX)
    try:
        server.connect(str(backend))
        server.sendall(_startup_packet(compute_params(params)))
        scram.login(server, password)
        return server
    except wire.ServerError as exc:
        server.close()
        if _sqlstate(exc.raw) == "28P01":  # a role the proxy left to PostgreSQL: Neon's wording
            raise _Refused(wire.error_response(f"password authentication failed for user '{user}'")) from None
        raise _Refused(exc.raw) from None
    except (OSError, wire.ProtocolError):
        server.close()
        raise _Refused(wire.error_response(COULD_NOT_CONNECT)) from None


def _sqlstate(raw: bytes) -> str:
    for field in raw[5:].split(b"\0"):
        if field[:1] == b"C":
            return field[1:].decode("ascii", "replace")
    return ""


def _greeting(server: socket.socket) -> bytes:
    """The backend's messages after AuthenticationOk, up to ReadyForQuery, raw.

    ParameterStatus, NoticeResponse and BackendKeyData (the backend's own key, so
    a CancelRequest over this endpoint reaches it) pass; an ErrorResponse refuses.
    """
    out = bytearray()
    while True:
        kind, body = wire.read_message(server)
        raw = kind + struct.pack("!i", len(body) + 4) + body
        if kind == b"E":
            raise _Refused(raw)
        if kind not in b"SNKZ":
            raise wire.ProtocolError(f"unexpected message {kind!r} before ReadyForQuery")
        out += raw
        if kind == b"Z":
            return bytes(out)


def _cancel(packet: bytes, backend: Path | None, compute: Any) -> None:
    """Pass a CancelRequest to the backend; nothing to cancel on a compute that is not up."""
    if compute.state != "active" or backend is None:
        return
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.connect(str(backend))
            server.sendall(packet)
            server.recv(1)  # the backend closes once it has read the request
        except OSError:
            pass


def _pump(ws: WsStream, server: socket.socket) -> None:
    """Bytes both ways until either side ends; the backend's end closes the WebSocket."""
    to_client = threading.Thread(target=_backend_to_client, args=(server, ws), daemon=True,
                                 name="ws-backend")
    to_client.start()
    try:
        data = ws.buffered()  # what the client pipelined behind its password, replayed first
        while data or not ws.ended.is_set():
            if data:
                server.sendall(data)
            data = ws.recv(_CHUNK)
    except (FrameError, OSError):
        _shutdown(ws.sock)  # a text frame or a broken client: dropped, no Close frame
    finally:
        ws.ended.set()
        _shutdown(server)
        to_client.join()


def _backend_to_client(server: socket.socket, ws: WsStream) -> None:
    try:
        while True:
            data = server.recv(_CHUNK)
            if not data:
                break
            ws.sendall(data)
    except OSError:
        pass
    if not ws.close_sent:
        ws.close()
        if not ws.ended.wait(_CLOSE_WAIT):
            _shutdown(ws.sock)  # the client never answered: unblock the reader


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
