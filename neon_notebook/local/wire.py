"""The few PostgreSQL wire-protocol messages the local proxy reads or writes.

The proxy answers SSL/GSS negotiation itself (it speaks plain TCP on loopback),
recognises cancel requests, and writes start-up errors the way Neon's proxy does:
an ErrorResponse whose SQLSTATE is XX000 whatever went wrong.
"""

from __future__ import annotations

import socket
import struct

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_MAX_STARTUP = 10_000  # PostgreSQL's own limit on a start-up packet


class ProtocolError(Exception):
    """The client sent something that is not a PostgreSQL start-up."""


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("the peer closed the connection mid-message")
        buf += chunk
    return bytes(buf)


def read_startup(sock: socket.socket) -> tuple[int, bytes]:
    """Read the client's first real packet, refusing SSL and GSS encryption.

    Returns ``(code, packet)`` where ``packet`` is the raw bytes to forward and
    ``code`` is the protocol version or ``CANCEL_REQUEST``.
    """
    while True:
        header = _recv_exactly(sock, 8)
        length, code = struct.unpack("!ii", header)
        if not 8 <= length <= _MAX_STARTUP:
            raise ProtocolError(f"invalid start-up packet length {length}")
        body = _recv_exactly(sock, length - 8)
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            sock.sendall(b"N")
            continue
        return code, header + body


def startup_params(packet: bytes) -> dict[str, str]:
    """The key/value parameters of a StartupMessage (user, database, options...)."""
    parts = packet[8:].split(b"\0")
    return {
        parts[i].decode("utf-8", "replace"): parts[i + 1].decode("utf-8", "replace")
        for i in range(0, len(parts) - 1, 2)
        if parts[i]
    }


#: What Neon's proxy answers when it cannot wake or reach the compute (every endpoint says it).
COULD_NOT_CONNECT = "Couldn't connect to compute node"


def error_response(message: str, sqlstate: str = "XX000", severity: str = "FATAL") -> bytes:
    """An ErrorResponse ('E') message, as a server sends it during start-up."""
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


class ServerError(Exception):
    """The server answered with an ErrorResponse; ``raw`` is the message to relay."""

    def __init__(self, raw: bytes) -> None:
        super().__init__("server error")
        self.raw = raw


def read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    """One typed message after start-up: ``(type byte, body)``."""
    header = _recv_exactly(sock, 5)
    (length,) = struct.unpack("!i", header[1:])
    if not 4 <= length <= 1 << 24:
        raise ProtocolError(f"invalid message length {length}")
    return header[:1], _recv_exactly(sock, length - 4)
