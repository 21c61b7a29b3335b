"""RFC 6455, server side: the upgrade handshake and a byte stream over binary frames.

Neon's proxy carries the PostgreSQL protocol in WebSocket frames
(proxy/src/serverless/websocket.rs): binary and continuation payloads are one
byte stream, a text frame is an error that drops the connection, a Close frame
is the end of the stream, and each write goes out as one binary frame.
``WsStream`` has the socket methods local/wire.py and local/scram.py call
(``recv``, ``sendall``), so they run on it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL = 1000
MAX_FRAME = 64 << 20  # bounds one frame's memory; the driver's frames are a few KB
_RECV = 1 << 16


class HandshakeError(Exception):
    """The upgrade request is not a valid RFC 6455 handshake."""


class FrameError(Exception):
    """The client broke the framing rules, or sent a text frame (Neon drops the connection)."""


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode()


def handshake_response(method: str, headers: Mapping[str, str]) -> bytes:
    """The 101 answer to a valid upgrade request (no extension, no subprotocol).

    ``headers`` has lower-cased names. Raises ``HandshakeError`` naming the fault.
    """
    if method != "GET":
        raise HandshakeError("MethodNotAllowed")
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError("InvalidUpgradeHeader")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError("InvalidConnectionHeader")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError("InvalidSecWebsocketVersion")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except (binascii.Error, ValueError):
        raise HandshakeError("MissingSecWebSocketKey") from None
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode()


def bad_request(message: str) -> bytes:
    """Neon's answer to a broken upgrade: 400 with ``{"msg": ...}`` (http_util.rs HttpErrorBody)."""
    body = json.dumps({"msg": message}).encode()
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One unmasked, final frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class WsStream:
    """The PostgreSQL byte stream inside a server-side WebSocket connection.

    ``recv(n)`` returns stream bytes, ``b""`` at the end (a Close frame or the
    peer's EOF); ``FrameError`` on a text frame or a framing fault. Pings are
    answered; a Close is echoed. ``sendall(b)`` sends one binary frame and is
    safe to call from another thread while one thread reads.
    """

    def __init__(self, sock: socket.socket, extra: bytes = b"") -> None:
        self.sock = sock
        self._raw = bytearray(extra)  # socket bytes not yet parsed into frames
        self._data = bytearray()  # stream bytes not yet returned by recv
        self._eof = False
        self._send_lock = threading.Lock()
        self.close_sent = False
        self.ended = threading.Event()  # set once the read side has ended (Close frame or EOF)

    # -- reading -----------------------------------------------------------
    def _fill(self, n: int) -> bool:
        """Read until ``_raw`` holds ``n`` bytes; False at the peer's EOF."""
        while len(self._raw) < n:
            chunk = self.sock.recv(_RECV)
            if not chunk:
                return False
            self._raw += chunk
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self._raw[:n])
        del self._raw[:n]
        return out

    def _next_frame(self) -> tuple[int, bytes] | None:
        """The next client frame ``(opcode, payload)``, or None at EOF."""
        if not self._fill(2):
            return None
        b0, b1 = self._take(2)
        if b0 & 0x70:
            raise FrameError("reserved bits set without an extension")
        if not b1 & 0x80:
            raise FrameError("client frames must be masked")
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n >= 126:
            size = 2 if n == 126 else 8
            if not self._fill(size):
                return None
            n = int.from_bytes(self._take(size), "big")
        if opcode >= 0x8 and (n > 125 or not b0 & 0x80):
            raise FrameError("control frames are short and never fragmented")
        if n > MAX_FRAME:
            raise FrameError(f"frame of {n} bytes is over the limit")
        if not self._fill(4 + n):
            return None
        mask = self._take(4)
        return opcode, _unmask(self._take(n), mask)

    def _read_frames(self) -> None:
        """Read frames until there are stream bytes or the stream ends."""
        while not self._data and not self._eof:
            got = self._next_frame()
            if got is None:
                self._eof = True
                self.ended.set()
                return
            opcode, payload = got
            if opcode in (OP_BINARY, OP_CONTINUATION):
                self._data += payload
            elif opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_PONG:
                pass
            elif opcode == OP_CLOSE:
                self.close(payload[:2])  # echoed, unless ours went first
                self._eof = True
                self.ended.set()
            elif opcode == OP_TEXT:
                raise FrameError("unexpected text message in the websocket")
            else:
                raise FrameError(f"unknown opcode {opcode}")

    def recv(self, n: int) -> bytes:
        self._read_frames()
        out = bytes(self._data[:n])
        del self._data[:n]
        return out

    def buffered(self) -> bytes:
        """Stream bytes already received and not yet read (the pipelined part); taken out."""
        out = bytes(self._data)
        self._data.clear()
        return out

    # -- writing -----------------------------------------------------------
    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            if self.close_sent:
                return  # nothing may follow a Close frame
            if opcode == OP_CLOSE:
                self.close_sent = True
            self.sock.sendall(frame(opcode, payload))

    def sendall(self, data: bytes) -> None:
        """Send ``data`` as one binary frame (dropped once a Close frame has gone out)."""
        self._send(OP_BINARY, bytes(data))

    def close(self, code: bytes | int = CLOSE_NORMAL) -> None:
        """Send a Close frame (once): ``code`` as a status number or the client's echoed bytes."""
        payload = struct.pack("!H", code) if isinstance(code, int) else bytes(code)
        try:
            self._send(OP_CLOSE, payload)
        except OSError:
            pass
