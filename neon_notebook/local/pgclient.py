"""A minimal PostgreSQL frontend for the local proxy's SQL-over-HTTP path.

It speaks to the compute's Unix socket exactly as Neon's proxy does for a
``/sql`` request (tokio-postgres' ``query_raw_txt``): Parse with no parameter
types + Describe + Flush, then Bind (all parameters and results as text) +
Execute + Sync. ``simple`` runs START TRANSACTION/COMMIT; ``cancel`` sends a
CancelRequest with the backend's key. A ``watch`` socket, when set, is polled
for hang-up while the backend is awaited: the query is then cancelled.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from . import scram, wire

_CANCEL_WAIT = 0.1  # what Neon's proxy waits for a cancelled query (sql_over_http.rs)
_RECV = 1 << 18
_HANGUP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class PgError(Exception):
    """An ErrorResponse: ``fields`` maps each field's code letter (S V C M D H P p q W s t c d n F L R)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", ""))
        self.fields = fields

    @property
    def code(self) -> str:
        return self.fields.get("C", "")


class ConnectionLost(Exception):
    """The backend went away without an ErrorResponse."""


class Cancelled(Exception):
    """The watched client hung up; the query was cancelled and the connection must be discarded."""


@dataclass(frozen=True)
class Column:
    """One RowDescription field."""

    name: str
    table_oid: int
    attnum: int
    type_oid: int
    typlen: int
    typmod: int


def parse_error(body: bytes) -> PgError:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return PgError(fields)


def _message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


class PgConnection:
    """One backend connection over a Unix socket, logged in."""

    def __init__(self, path: Path, user: str, database: str, password: str, timeout: float = 30.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self._buf = bytearray()
        self._pos = 0
        self.watch: socket.socket | None = None
        self.client_gone = False
        self._deadline: float | None = None
        self.backend_key: bytes | None = None
        self.params: dict[str, str] = {}
        self._prepared: set[str] = set()
        try:
            self.sock.connect(str(path))
            self.sock.settimeout(None)
            body = struct.pack("!i", 196608) + _cstr("user") + _cstr(user) + _cstr("database") + \
                _cstr(database) + b"\0"
            self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
            scram.login(self.sock, password)
            self._until_ready()
        except wire.ServerError as exc:
            self.close()
            raise parse_error(exc.raw[5:]) from None
        except BaseException:
            self.close()
            raise

    # -- reading ------------------------------------------------------------
    def _fill(self) -> None:
        if self.watch is not None or self._deadline is not None:
            self._wait()
        try:
            chunk = self.sock.recv(_RECV)
        except OSError as exc:
            raise ConnectionLost(str(exc) or "connection closed") from None
        if not chunk:
            raise ConnectionLost("connection closed")
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += chunk

    def _wait(self) -> None:
        """Block until the backend has data; cancel once if the watched client hangs up."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if self.watch is not None:
            poller.register(self.watch, _HANGUP)
        while True:
            timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
            events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            if any(fd == self.sock.fileno() for fd, _ in events):
                return
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise Cancelled("query cancelled: the client went away")
            if events:  # the client hung up
                poller.unregister(self.watch)
                self.watch = None
                self.client_gone = True
                self.cancel()
                self._deadline = time.monotonic() + _CANCEL_WAIT

    def _read(self) -> tuple[int, bytes]:
        """One message: (type byte, body)."""
        while True:
            avail = len(self._buf) - self._pos
            if avail >= 5:
                kind = self._buf[self._pos]
                (length,) = struct.unpack_from("!i", self._buf, self._pos + 1)
                if avail >= length + 1:
                    start = self._pos + 5
                    self._pos += length + 1
                    return kind, bytes(memoryview(self._buf)[start:self._pos])
            self._fill()

    def _until_ready(self) -> None:
        """Read start-up messages up to ReadyForQuery, keeping BackendKeyData and parameters."""
        while True:
            kind, body = self._read()
            if kind == 0x4B:  # K
                self.backend_key = body
            elif kind == 0x53:  # S
                key, value = body.split(b"\0")[:2]
                self.params[key.decode()] = value.decode()
            elif kind == 0x45:  # E
                raise parse_error(body)
            elif kind == 0x5A:  # Z
                return

    def _sync_after_error(self, error: PgError) -> PgError:
        """Read on to ReadyForQuery after an error so the connection stays in step."""
        try:
            while self._read()[0] != 0x5A:
                pass
        except (ConnectionLost, Cancelled):
            pass
        return error

    # -- queries --------------------------------------------------------------
    def query_text(self, sql: str, params: Sequence[str | None]) -> Query:
        """Parse + Describe + Flush now; the returned ``Query`` has the columns, then binds on ``rows()``."""
        self.sock.sendall(_message(b"P", b"\0" + _cstr(sql) + b"\0\0") + _message(b"D", b"S\0")
                          + _message(b"H"))
        columns: list[Column] = []
        while True:
            kind, body = self._read()
            if kind == 0x31 or kind == 0x74:  # ParseComplete, ParameterDescription
                continue
            if kind == 0x6E:  # NoData
                break
            if kind == 0x54:  # RowDescription
                columns = _row_description(body)
                break
            if kind == 0x45:
                error = parse_error(body)
                self.sock.sendall(_message(b"S"))
                raise self._sync_after_error(error)
            if kind in (0x4E, 0x53, 0x41):  # NoticeResponse, ParameterStatus, NotificationResponse
                continue
            raise ConnectionLost(f"unexpected message {chr(kind)!r} after Describe")
        return Query(self, columns, params)

    def fetch(self, name: str, sql: str, params: Sequence[str | None]) -> list[list[str | None]]:
        """Run ``sql`` as the named statement ``name`` (parsed once per connection): the rows.

        A named statement leaves the unnamed one, described and not yet bound, in place.
        """
        if name not in self._prepared:
            self.sock.sendall(_message(b"P", _cstr(name) + _cstr(sql) + b"\0\0"))
            self._prepared.add(name)
        return list(Query(self, [], params, name).rows())

    def simple(self, sql: str) -> None:
        """Run one simple-protocol query whose result is not needed (START TRANSACTION, COMMIT)."""
        self.sock.sendall(_message(b"Q", _cstr(sql)))
        error = None
        while True:
            try:
                kind, body = self._read()
            except ConnectionLost:
                if error is not None:
                    raise error from None
                raise
            if kind == 0x45 and error is None:
                error = parse_error(body)
            elif kind == 0x5A:
                break
        if error is not None:
            raise error

    def cancel(self) -> None:
        """Ask the server to cancel this connection's running query (a CancelRequest)."""
        if self.backend_key is None:
            return
        body = struct.pack("!i", wire.CANCEL_REQUEST) + self.backend_key
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.path))
                sock.sendall(struct.pack("!i", len(body) + 4) + body)
                sock.recv(1)  # the server closes when it has read the request
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.sendall(_message(b"X"))
        except OSError:
            pass
        self.sock.close()


class Query:
    """A described statement: ``columns`` now, ``rows()`` to bind and run it, then ``tag``."""

    def __init__(self, conn: PgConnection, columns: list[Column], params: Sequence[str | None],
                 statement: str = "") -> None:
        self.conn, self.columns, self.params, self.statement = conn, columns, params, statement
        self.tag: str | None = None
        """The CommandComplete tag; None after an EmptyQueryResponse."""

    def rows(self) -> Iterator[list[str | None]]:
        """Bind + Execute + Sync, and yield each DataRow's values as text (None for NULL)."""
        conn = self.conn
        bind = bytearray(b"\0" + _cstr(self.statement) + struct.pack("!hh", 1, 0) + struct.pack("!h", len(self.params)))
        for value in self.params:
            if value is None:
                bind += struct.pack("!i", -1)
            else:
                data = value.encode()
                bind += struct.pack("!i", len(data)) + data
        bind += struct.pack("!hh", 1, 0)
        conn.sock.sendall(_message(b"B", bytes(bind)) + _message(b"E", b"\0\0\0\0\0")
                          + _message(b"S"))
        error = None
        while True:
            try:
                kind, body = conn._read()
            except ConnectionLost:
                if error is not None:  # a FATAL error (shutdown, terminated backend) ends the connection
                    raise error from None
                raise
            if kind == 0x44:  # DataRow
                if error is None:
                    yield _data_row(body)
            elif kind == 0x43:  # CommandComplete
                self.tag = body[:-1].decode()
            elif kind == 0x45:
                error = error or parse_error(body)
            elif kind == 0x5A:
                if error is not None:
                    raise error
                return
            # ParseComplete, BindComplete, EmptyQueryResponse, PortalSuspended, notices: nothing to keep


def _row_description(body: bytes) -> list[Column]:
    (count,) = struct.unpack_from("!h", body)
    pos, columns = 2, []
    for _ in range(count):
        end = body.index(b"\0", pos)
        name = body[pos:end].decode()
        table, attnum, oid, typlen, typmod, _fmt = struct.unpack_from("!IhIhih", body, end + 1)
        columns.append(Column(name, table, attnum, oid, typlen, typmod))
        pos = end + 19
    return columns


def _data_row(body: bytes, _unpack=struct.unpack_from) -> list[str | None]:
    """A DataRow's values as text (the database encoding is UTF-8), None for NULL."""
    (count,) = _unpack("!h", body)
    pos, values = 2, []
    append = values.append
    for _ in range(count):
        (length,) = _unpack("!i", body, pos)
        pos += 4
        if length < 0:
            append(None)
        else:
            append(body[pos:pos + length].decode())
            pos += length
    return values
