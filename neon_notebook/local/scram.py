"""SCRAM-SHA-256 (RFC 5802, RFC 7677) for the local proxy, both ways.

Neon's proxy authenticates the client itself before it wakes the compute, so a
wrong password fails fast and wakes nothing; then it logs in to the compute on
the client's behalf. The local proxy does the same: ``verify_client`` plays the
server to the client, ``login`` plays the client to PostgreSQL or PgBouncer.
Without TLS there is no channel binding (gs2 header ``n,,`` or ``y,,``). Both
ways hash the password after SASLprep, as PostgreSQL and libpq do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import stringprep
import struct
import unicodedata
from functools import lru_cache

from . import wire

MECHANISM = b"SCRAM-SHA-256"
ITERATIONS = 4096
AUTH_OK, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 10, 11, 12


class AuthFailed(Exception):
    """The client's proof did not match the password."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _prohibited(c: str) -> bool:
    """SASLprep's prohibited output (RFC 4013 section 2.3) and unassigned code points (A.1)."""
    return (stringprep.in_table_c12(c) or stringprep.in_table_c21_c22(c) or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c) or stringprep.in_table_c5(c) or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c) or stringprep.in_table_c8(c) or stringprep.in_table_c9(c)
            or stringprep.in_table_a1(c))


def saslprep(password: str) -> str:
    """The password SCRAM hashes: SASLprep (RFC 4013) as PostgreSQL and libpq apply it.

    As they do, a pure-ASCII password is taken as it is, the checks look at the
    mapped password before NFKC, and a password SASLprep refuses is used raw.
    """
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c  # non-ASCII spaces first, as PostgreSQL
                     for c in password if stringprep.in_table_c12(c) or not stringprep.in_table_b1(c))
    if not mapped or any(map(_prohibited, mapped)):
        return password
    if any(map(stringprep.in_table_d1, mapped)) and (
            any(map(stringprep.in_table_d2, mapped))
            or not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1]))):
        return password  # mixed or badly bracketed right-to-left text
    return unicodedata.normalize("NFKC", mapped)


@lru_cache(maxsize=32)
def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)


def _attrs(message: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.decode().split(",") if "=" in part)


def auth_message(kind: int, payload: bytes = b"") -> bytes:
    """An Authentication ('R') message."""
    body = struct.pack("!i", kind) + payload
    return b"R" + struct.pack("!i", len(body) + 4) + body


def verify_client(sock: socket.socket, password: str, salt: bytes) -> bytes:
    """Authenticate the client; returns the AuthenticationSASLFinal to send after the wake.

    Raises ``AuthFailed`` on a wrong proof, ``wire.ProtocolError`` on garbage.
    """
    sock.sendall(auth_message(AUTH_SASL, MECHANISM + b"\0\0"))
    kind, body = wire.read_message(sock)
    if kind != b"p" or not body.startswith(MECHANISM + b"\0"):
        raise wire.ProtocolError("expected a SASLInitialResponse for SCRAM-SHA-256")
    (length,) = struct.unpack("!i", body[len(MECHANISM) + 1:len(MECHANISM) + 5])
    client_first = body[len(MECHANISM) + 5:len(MECHANISM) + 5 + length]
    parts = client_first.split(b",", 2)
    if len(parts) != 3 or parts[0] not in (b"n", b"y"):
        raise wire.ProtocolError("channel binding is not available without TLS")
    gs2_header, client_first_bare = parts[0] + b"," + parts[1] + b",", parts[2]
    nonce = _attrs(client_first_bare)["r"] + base64.b64encode(os.urandom(18)).decode()
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}".encode()
    sock.sendall(auth_message(AUTH_SASL_CONTINUE, server_first))
    kind, client_final = wire.read_message(sock)
    if kind != b"p":
        raise wire.ProtocolError("expected a SASLResponse")
    attrs = _attrs(client_final)
    without_proof = client_final[: client_final.rindex(b",p=")]
    if attrs.get("r") != nonce or base64.b64decode(attrs.get("c", "")) != gs2_header:
        raise AuthFailed("nonce or channel binding mismatch")
    salted = _salted(password, salt, ITERATIONS)
    client_key = _hmac(salted, b"Client Key")
    message = client_first_bare + b"," + server_first + b"," + without_proof
    signature = _hmac(hashlib.sha256(client_key).digest(), message)
    proof = base64.b64decode(attrs.get("p", ""))
    if len(proof) != len(signature):
        raise AuthFailed("malformed proof")
    recovered = bytes(a ^ b for a, b in zip(proof, signature))
    if not hmac.compare_digest(hashlib.sha256(recovered).digest(), hashlib.sha256(client_key).digest()):
        raise AuthFailed("wrong password")
    server_signature = _hmac(_hmac(salted, b"Server Key"), message)
    return auth_message(AUTH_SASL_FINAL, b"v=" + base64.b64encode(server_signature))


def login(sock: socket.socket, password: str) -> None:
    """Answer the server's SCRAM exchange with ``password``, up to AuthenticationOk.

    Raises ``wire.ServerError`` with the server's ErrorResponse if it refuses.
    """
    while True:
        kind, body = wire.read_message(sock)
        if kind == b"E":
            raise wire.ServerError(b"E" + struct.pack("!i", len(body) + 4) + body)
        if kind != b"R":
            raise wire.ProtocolError(f"unexpected message {kind!r} during authentication")
        (code,) = struct.unpack("!i", body[:4])
        if code == AUTH_OK:
            return
        if code == AUTH_SASL:
            if MECHANISM not in body[4:].split(b"\0"):
                raise wire.ProtocolError("the server does not offer SCRAM-SHA-256")
            client_nonce = base64.b64encode(os.urandom(18)).decode()
            client_first_bare = f"n=,r={client_nonce}".encode()
            client_first = b"n,," + client_first_bare
            payload = MECHANISM + b"\0" + struct.pack("!i", len(client_first)) + client_first
            sock.sendall(b"p" + struct.pack("!i", len(payload) + 4) + payload)
        elif code == AUTH_SASL_CONTINUE:
            server_first = body[4:]
            attrs = _attrs(server_first)
            if not attrs["r"].startswith(client_nonce):
                raise wire.ProtocolError("server nonce does not extend ours")
            salted = _salted(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
            without_proof = f"c=biws,r={attrs['r']}".encode()
            message = client_first_bare + b"," + server_first + b"," + without_proof
            client_key = _hmac(salted, b"Client Key")
            signature = _hmac(hashlib.sha256(client_key).digest(), message)
            proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature)))
            final = without_proof + b",p=" + proof
            sock.sendall(b"p" + struct.pack("!i", len(final) + 4) + final)
        elif code == AUTH_SASL_FINAL:
            continue  # the server's signature; AuthenticationOk follows
        else:
            raise wire.ProtocolError(f"unsupported authentication request {code}")
