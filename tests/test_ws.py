"""The local compute's WebSocket endpoint (``ws_url``) against Neon's behaviour, frame by frame.

Ports of Neon's test_runner/regress/test_proxy_websockets.py (the frame grouping
it asserts: R 3 alone, AuthenticationOk opening the second frame, the query's
T/D/C/Z in a later one; the pipelined start-up), plus the rest of
proxy/src/serverless/websocket.rs and pglb/ in WebSocket mode. The client is a
few lines of raw RFC 6455 over a socket, so every frame boundary is visible.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from neon_notebook.local import LocalCompute
from neon_notebook.local.wsproxy import compute_params

pytestmark = [pytest.mark.pgbouncer, pytest.mark.local_compute, pytest.mark.usefixtures("pgbouncer")]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
AUTH_OK = b"R\0\0\0\x08\0\0\0\0"
AUTH_CLEARTEXT = b"R\0\0\0\x08\0\0\0\x03"
TERMINATE = b"X\0\0\0\x04"
TIMEOUT = 15.0


@pytest.fixture(scope="module")
def lc():
    c = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2)
    yield c
    c.close()


def password(lc) -> str:
    return unquote(urlsplit(lc.direct_url).password)


def port(url: str) -> int:
    return urlsplit(url).port


class Ws:
    """A raw WebSocket client: masked frames out, each server frame seen as it came."""

    def __init__(self, lc, path: str = "/v2", query: str = "", extra_headers: str = "") -> None:
        u = urlsplit(lc.ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=TIMEOUT)
        self.key = base64.b64encode(os.urandom(16)).decode()
        target = path + ("?" + query if query else "")
        self.sock.sendall((
            f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed during the handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status_line, *lines = head.decode().split("\r\n")
        self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}

    def send(self, payload: bytes, opcode: int = 2, fin: bool = True) -> None:
        n, mask = len(payload), os.urandom(4)
        b0 = (0x80 if fin else 0) | opcode
        if n < 126:
            header = struct.pack("!BB", b0, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", b0, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes] | None:
        """The next server frame ``(opcode, payload)``; None when the connection ends without one."""
        head = self._read(2)
        if head is None:
            return None
        assert head[0] & 0x80 and not head[1] & 0x80, "server frames are final and unmasked"
        n = head[1] & 0x7F
        if n >= 126:
            n = int.from_bytes(self._read(2 if n == 126 else 8), "big")
        return head[0] & 0x0F, self._read(n)

    def data(self) -> bytes:
        got = self.frame()
        assert got is not None and got[0] == 2, f"expected a binary frame, got {got!r}"
        return got[1]

    def close(self) -> None:
        self.sock.close()


def startup(**params: str) -> bytes:
    body = b"\0\3\0\0" + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def query(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\0")


def messages(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    while data:
        (n,) = struct.unpack("!i", data[1:5])
        out.append((data[:1], data[5:1 + n]))
        data = data[1 + n:]
    return out


def rows(data: bytes) -> list[list[str | None]]:
    result = []
    for kind, body in messages(data):
        if kind == b"D":
            (ncols,), pos, row = struct.unpack("!h", body[:2]), 2, []
            for _ in range(ncols):
                (n,) = struct.unpack("!i", body[pos:pos + 4])
                row.append(None if n < 0 else body[pos + 4:pos + 4 + n].decode())
                pos += 4 + max(n, 0)
            result.append(row)
    return result


def error_fields(data: bytes) -> dict[str, str]:
    kinds = dict(messages(data))
    assert b"E" in kinds, f"expected an ErrorResponse in {data!r}"
    return {f[:1].decode(): f[1:].decode() for f in kinds[b"E"].split(b"\0") if f}


def until_ready(ws: Ws) -> bytes:
    """Binary frames up to ReadyForQuery, joined."""
    data = b""
    while not any(kind == b"Z" for kind, _ in messages(data)):
        data += ws.data()
    return data


def connect(lc, sql: str | None = None, *, pw: str | None = None, query_string: str = "",
            path: str = "/v2", **params: str) -> tuple[Ws, bytes]:
    """A pipelined start-up (as the driver's): returns the client and the greeting frame."""
    ws = Ws(lc, path, query_string)
    assert ws.status_line.startswith("HTTP/1.1 101"), ws.status_line
    params = {"user": "postgres", "database": "postgres", **params}
    first = startup(**params) + msg(b"p", (pw or password(lc)).encode() + b"\0")
    ws.send(first + (query(sql) if sql else b""))
    assert ws.data() == AUTH_CLEARTEXT
    return ws, ws.data()


def backend_key(greeting: bytes) -> tuple[int, int]:
    return struct.unpack("!ii", dict(messages(greeting))[b"K"])


# -- the handshake --------------------------------------------------------------------------------


def test_handshake_accepts_without_extension_or_subprotocol(lc):
    ws = Ws(lc, extra_headers="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                              "Sec-WebSocket-Protocol: chat\r\n")
    assert ws.status_line.startswith("HTTP/1.1 101")
    expected = base64.b64encode(hashlib.sha1(ws.key.encode() + GUID).digest()).decode()
    assert ws.headers["sec-websocket-accept"] == expected
    assert ws.headers["upgrade"].lower() == "websocket"
    assert "sec-websocket-extensions" not in ws.headers
    assert "sec-websocket-protocol" not in ws.headers
    ws.close()


@pytest.mark.parametrize("bad", ["Sec-WebSocket-Key: nope", "Sec-WebSocket-Version: 8"])
def test_bad_handshake_is_400(lc, bad):
    u = urlsplit(lc.ws_url)
    headers = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    name, value = bad.split(": ")
    headers[name] = value
    with socket.create_connection((u.hostname, u.port), timeout=TIMEOUT) as s:
        s.sendall((f"GET /v2 HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b'{"msg": ' in answer


# -- Neon's test_proxy_websockets.py ----------------------------------------------------------------


def check_select_1(data: bytes) -> None:
    """test_proxy_websockets.py's checks of ``SELECT 1``'s answer, byte for byte."""
    assert data[0:1] == b"T", "should be row description message"
    n = int.from_bytes(data[1:5], "big") + 1
    row_description, data = data[:n], data[n:]
    assert row_description[5:7] == b"\x00\x01"
    assert row_description[7:16] == b"?column?\0"
    assert row_description[22:26] == b"\x00\x00\x00\x17"
    n = int.from_bytes(data[1:5], "big") + 1
    assert data[:n] == b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x011"
    data = data[n:]
    n = int.from_bytes(data[1:5], "big") + 1
    assert data[:n] == b"C\x00\x00\x00\x0dSELECT 1\0"
    assert data[n:n + 6] == b"Z\x00\x00\x00\x05I"


def expect_close_after_terminate(ws: Ws) -> None:
    ws.send(TERMINATE)
    assert ws.frame() == (8, struct.pack("!H", 1000)), "the server closes after Terminate"
    ws.send(struct.pack("!H", 1000), opcode=8)
    assert ws.frame() is None


def test_websockets(lc):
    ws = Ws(lc, "/sql")
    ws.send(startup(user="postgres", database="postgres", client_encoding="UTF8"))
    assert ws.data() == AUTH_CLEARTEXT  # alone in its frame: 9 bytes
    ws.send(msg(b"p", password(lc).encode() + b"\0"))
    greeting = ws.data()
    assert greeting.startswith(AUTH_OK)
    assert [k for k, _ in messages(greeting)][-2:] == [b"K", b"Z"] and greeting.endswith(b"Z\0\0\0\x05I")
    ws.send(query("SELECT 1"))
    check_select_1(ws.data())
    expect_close_after_terminate(ws)


def test_websockets_pipelined(lc):
    ws, greeting = connect(lc, "SELECT 1", client_encoding="UTF8")
    assert greeting.startswith(AUTH_OK) and greeting.endswith(b"Z\0\0\0\x05I")
    check_select_1(ws.data())
    expect_close_after_terminate(ws)


# -- inside the tunnel -------------------------------------------------------------------------


def test_ssl_and_gss_requests_are_refused_with_N(lc):
    ws = Ws(lc)
    ws.send(struct.pack("!ii", 8, 80877103))
    assert ws.data() == b"N"
    ws.send(struct.pack("!ii", 8, 80877104))
    assert ws.data() == b"N"
    ws.send(startup(user="postgres", database="postgres") + msg(b"p", password(lc).encode() + b"\0"))
    assert ws.data() == AUTH_CLEARTEXT
    assert ws.data().startswith(AUTH_OK)
    expect_close_after_terminate(ws)


def test_text_frame_drops_the_connection(lc):
    ws, _ = connect(lc)
    ws.send(b"SELECT 1", opcode=1)
    assert ws.frame() is None, "dropped without a Close frame, as Neon does"


def test_client_close_is_echoed(lc):
    ws, _ = connect(lc)
    ws.send(struct.pack("!H", 1001) + b"bye", opcode=8)
    assert ws.frame() == (8, struct.pack("!H", 1001))
    assert ws.frame() is None


def test_fragments_pings_and_long_frames(lc):
    ws = Ws(lc)
    first = startup(user="postgres", database="postgres") + msg(b"p", password(lc).encode() + b"\0")
    ws.send(first[:5], fin=False)
    ws.send(b"ping!", opcode=9)
    ws.send(first[5:20], opcode=0, fin=False)
    ws.send(first[20:], opcode=0)
    assert ws.frame() == (10, b"ping!")
    assert ws.data() == AUTH_CLEARTEXT
    assert ws.data().startswith(AUTH_OK)
    long_text = "x" * 70_000  # a 64-bit length each way; 16-bit ones below
    ws.send(query(f"select length('{long_text}'), repeat('y', 70000)"))
    assert rows(until_ready(ws)) == [["70000", "y" * 70_000]]
    ws.send(query("select '" + "z" * 300 + "'"))
    assert rows(until_ready(ws)) == [["z" * 300]]
    expect_close_after_terminate(ws)


@pytest.mark.parametrize("path", ["/v1", "/sql", "/anything"])
def test_any_path_upgrades(lc, path):
    ws, _ = connect(lc, "select 1", path=path)
    assert rows(until_ready(ws)) == [["1"]]
    expect_close_after_terminate(ws)


def test_startup_parameters_forwarded_as_neon_does(lc):
    sql = ("select current_setting('application_name'), current_setting('client_encoding'), "
           "current_setting('search_path'), current_setting('DateStyle')")
    ws, _ = connect(lc, sql, application_name="wsapp", client_encoding="LATIN1", DateStyle="SQL, DMY",
                    options="-c search_path=ws_path endpoint=ep-foo neon_lsn:0/2")
    [[app, encoding, search_path, datestyle]] = rows(until_ready(ws))
    assert (app, encoding, search_path) == ("wsapp", "UTF8", "ws_path")
    assert not datestyle.startswith("SQL"), "other parameters are dropped"
    expect_close_after_terminate(ws)


def test_later_minor_version_is_negotiated_down(lc):
    ws = Ws(lc)
    body = b"\0\3\0\2" + b"user\0postgres\0database\0postgres\0_pq_.feature\0on\0\0"
    ws.send(struct.pack("!i", len(body) + 4) + body + msg(b"p", password(lc).encode() + b"\0"))
    assert ws.data() == msg(b"v", struct.pack("!ii", 3 << 16, 1) + b"_pq_.feature\0")
    assert ws.data() == AUTH_CLEARTEXT
    assert ws.data().startswith(AUTH_OK)
    expect_close_after_terminate(ws)


def test_other_roles_are_checked_by_postgres(lc):
    with psycopg.connect(lc.direct_url, autocommit=True) as conn:
        conn.execute("drop role if exists ws_bob")
        conn.execute("create role ws_bob login password 'bob-secret'")
    ws, _ = connect(lc, "select current_user", user="ws_bob", pw="bob-secret")
    assert rows(until_ready(ws)) == [["ws_bob"]]
    expect_close_after_terminate(ws)
    ws, answer = connect(lc, "select 1", user="ws_bob", pw="wrong")
    assert error_fields(answer)["M"] == "password authentication failed for user 'ws_bob'"
    assert ws.frame()[0] == 8


def test_compute_params():
    assert compute_params({"user": "u", "database": "d", "TimeZone": "UTC", "replication": "false"}) == {
        "client_encoding": "UTF8", "user": "u", "database": "d", "replication": "false"}
    assert compute_params({"options": "project=foo"}) == {"client_encoding": "UTF8"}
    assert compute_params({"options": r"\  project=foo \ "})["options"] == r"\  \ "
    assert compute_params({"options": "project = foo neon_endpoint_type:read_write   neon_lsn:0/2"})[
        "options"] == "project = foo"
    assert compute_params({"options": "neon_proxy_params_compat:true", "TimeZone": "UTC",
                           "client_encoding": "LATIN1"}) == {"TimeZone": "UTC", "client_encoding": "LATIN1"}


# -- routing by ?address= ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["direct", "pooled", "none", "unknown"])
def test_address_picks_the_backend(lc, target):
    address = {"direct": f"ep-x.localtest.me:{port(lc.direct_url)}", "pooled": f"127.0.0.1:{port(lc.pooled_url)}",
               "none": None, "unknown": "ep-x.localtest.me:5432"}[target]
    ws, greeting = connect(lc, "select pg_backend_pid()", query_string=f"address={address}" if address else "")
    [[pid]] = rows(until_ready(ws))
    key_pid, _ = backend_key(greeting)
    if target == "pooled":  # PgBouncer's own BackendKeyData: not the PostgreSQL backend's
        assert key_pid != int(pid)
    else:
        assert key_pid == int(pid)
    expect_close_after_terminate(ws)


# -- authentication, wake and suspension ---------------------------------------------------------------


def test_wrong_password_wakes_nothing(lc):
    lc.suspend()
    wakes = lc.wakes
    ws, answer = connect(lc, "select 1", pw="wrong")
    assert error_fields(answer)["M"] == "password authentication failed for user 'postgres'"
    assert ws.frame()[0] == 8
    assert (lc.state, lc.wakes) == ("suspended", wakes)


def test_suspended_compute_wakes_for_the_query(lc):
    lc.suspend()
    wakes = lc.wakes
    ws, greeting = connect(lc, "select 41 + 1")
    assert greeting.startswith(AUTH_OK)
    assert rows(until_ready(ws)) == [["42"]]
    assert (lc.state, lc.wakes) == ("active", wakes + 1)
    expect_close_after_terminate(ws)


def test_failed_wake_is_an_error(lc):
    lc.suspend()
    lc.fail_next_wakes(1)
    ws, answer = connect(lc, "select 1")
    assert error_fields(answer)["M"] == "Couldn't connect to compute node"
    assert lc.state == "suspended"


def test_suspension_closes_an_open_connection(lc):
    ws, _ = connect(lc)
    lc.suspend()
    started = time.monotonic()
    got = ws.frame()
    if got is not None and got[0] == 2:  # PostgreSQL's goodbye: terminating connection (57P01)
        assert error_fields(got[1])["C"] == "57P01"
        got = ws.frame()
    assert got is not None and got[0] == 8, "a clear Close frame, not a hang"
    assert time.monotonic() - started < 5


def cancel(lc, pid: int, key: int) -> None:
    canceller = Ws(lc, query="address=" + f"ep-x.localtest.me:{port(lc.direct_url)}")
    canceller.send(struct.pack("!iiii", 16, 80877102, pid, key))
    assert canceller.frame() is None  # nothing is said about a cancel


def test_open_transaction_keeps_the_compute_awake_then_idle_suspends(make_compute):
    c = make_compute(suspend_after=0.8, start_active=True)
    ws, _ = connect(c, "begin")
    until_ready(ws)
    time.sleep(1.2)  # idle in transaction past suspend_after: activity, as over TCP
    assert (c.state, c.suspensions) == ("active", 0)
    ws.send(query("commit"))
    until_ready(ws)
    got = ws.frame()  # idle now: the monitor suspends the compute, which ends the connection
    if got is not None and got[0] == 2:
        assert error_fields(got[1])["C"] == "57P01"
        got = ws.frame()
    assert got is not None and got[0] == 8
    deadline = time.monotonic() + 5  # the counter moves once PostgreSQL has stopped
    while c.suspensions == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.suspensions == 1


def test_cancel_request_over_websocket(lc):
    ws, greeting = connect(lc, "select pg_sleep(30)")
    pid, key = backend_key(greeting)
    started = time.monotonic()
    with psycopg.connect(lc.direct_url, autocommit=True) as conn:  # a cancel only stops a running query
        while conn.execute("select wait_event is distinct from 'PgSleep' from pg_stat_activity where pid = %s",
                           [pid]).fetchone()[0]:
            time.sleep(0.02)
    cancel(lc, pid, key)
    assert error_fields(until_ready(ws))["C"] == "57014"
    assert time.monotonic() - started < 10
    expect_close_after_terminate(ws)


def test_cancel_request_never_wakes(lc):
    ws, greeting = connect(lc)
    pid, key = backend_key(greeting)
    ws.close()
    lc.suspend()
    wakes = lc.wakes
    cancel(lc, pid, key)
    assert (lc.state, lc.wakes) == ("suspended", wakes)
