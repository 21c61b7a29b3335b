"""The error tree is true: every exception class of the package is in it, as errors.py's docstring draws it,
and driver errors are translated at each boundary (connect, checkout, read) ``from`` the driver's error."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import psycopg
import psycopg_pool
import pytest

import neon_notebook as nn
from neon_notebook import errors
from neon_notebook._pool import Pool

#: Exception classes outside the tree on purpose: internal control flow or fault
#: injection that never reaches a user. Each with the reason.
INTERNAL = {
    "neon_notebook.readers._copy.NotCopyable":
        "raised and caught inside the reader: the statement takes the row path instead of COPY",
    "neon_notebook.readers._pgcopy.DecimalOverflow":
        "raised by the C decoder, caught by the reader and re-raised as UnrepresentableValue",
    "neon_notebook.writers._pgcopy_encode.EncodeError":
        "raised by the C encoder, caught by writers._encode and re-raised as UnrepresentableValue",
    "neon_notebook.writers._write._NotCommitted":
        "raised and caught inside a write: the attempt provably did not commit (re-run or WriteInterrupted)",
    "neon_notebook.local.relay.Cut":
        "fault injection: the relay cuts a connection; the client sees a plain EOF, not this class",
    "neon_notebook.local.wire.ProtocolError":
        "the local compute's daemon drops a client that sent garbage; it is caught in the daemon",
    "neon_notebook.local.wire.ServerError":
        "carries the server's ErrorResponse inside the daemon, which relays it to the client",
    "neon_notebook.local.scram.AuthFailed":
        "the daemon's SCRAM exchange failed; the client gets PostgreSQL's 28P01, not this class",
    "neon_notebook.http._client.LostAnswer":
        "an HTTP answer lost after sending; HttpSession re-sends a read-only read or raises CommitUncertain",
    "neon_notebook.http._client.NotSent":
        "an HTTP request that never left; re-sent until wake_timeout, then WakeTimeout",
    "neon_notebook.http._client.GaveUp":
        "the compute stayed unreachable until wake_timeout; HttpSession raises WakeTimeout for it",
    "neon_notebook.http._protocol.ServerError":
        "a non-2xx HTTP answer; HttpSession raises the SQL error, ConnectError or ConfigurationError for it",
    "neon_notebook.http._transport._Refused":
        "carries PostgreSQL's refusal inside the transport, which raises the SQL error it holds",
    "neon_notebook.local.httpd.BadRequest":
        "the local compute's HTTP server answers 400 to a malformed request; caught in the daemon",
    "neon_notebook.local.pgclient.Cancelled":
        "the daemon's own PostgreSQL client: a query cancelled because the HTTP client left",
    "neon_notebook.local.pgclient.ConnectionLost":
        "the daemon's own PostgreSQL client lost its backend; the HTTP client gets Neon's error JSON",
    "neon_notebook.local.pgclient.PgError":
        "an ErrorResponse inside the daemon; the HTTP client gets it as Neon's error JSON",
    "neon_notebook.local.sqlhttp.SqlError":
        "an error answer (status and JSON) inside the daemon's /sql handler",
    "neon_notebook.local.sqljson.JsonConversionError":
        "a value Neon's JSON mode cannot convert; the HTTP client gets a 500 JSON answer",
    "neon_notebook.local.websocket.FrameError":
        "a WebSocket framing fault or text frame: the daemon drops the connection, as Neon does",
    "neon_notebook.local.websocket.HandshakeError":
        "a broken WebSocket upgrade: the daemon answers 400",
    "neon_notebook.local.wsproxy._Refused":
        "carries the ErrorResponse the WebSocket client gets before the daemon closes",
}


#: Classes that stand for the driver's own, outside NeonError as the driver's are.
DRIVER_LIKE = {
    "neon_notebook.errors.SQLError":
        "a server's SQL error where psycopg is not installed; psycopg's classes are not NeonErrors either",
}


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package, by qualified name."""
    found = {}
    for info in pkgutil.walk_packages(nn.__path__, "neon_notebook."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_exception_class_is_a_neon_error_or_warning_or_listed_internal():
    found = defined_exceptions()
    outside = {name for name, cls in found.items()
               if not issubclass(cls, (errors.NeonError, errors.NeonWarning))}
    assert outside == set(INTERNAL) | set(DRIVER_LIKE), "a class outside the tree (or a stale INTERNAL entry)"
    warnings = {name for name, cls in found.items() if issubclass(cls, Warning)}
    assert all(issubclass(found[name], errors.NeonWarning) for name in warnings)
    assert len(found) > len(INTERNAL) + 15  # the walk did find the package's classes


_DRIVER = {
    "ValueError": ValueError, "RuntimeError": RuntimeError, "UserWarning": UserWarning,
    "psycopg.OperationalError": psycopg.OperationalError, "psycopg.DataError": psycopg.DataError,
    "psycopg.NotSupportedError": psycopg.NotSupportedError, "psycopg.InternalError": psycopg.InternalError,
    "psycopg_pool.PoolTimeout": psycopg_pool.PoolTimeout, "psycopg.DatabaseError": psycopg.DatabaseError,
}


def docstring_tree() -> list[tuple[str, str | None, list[str], str | None]]:
    """(class, parent, also-bases, module named on the line) for each node drawn in errors.py's docstring."""
    nodes, stack = [], []  # stack: (column, name)
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(?P<indent>[\s│├└─]*?)(?P<name>[A-Z]\w+)\s{2,}(?P<rest>.*)$", line)
        if not match or not re.search(r"(Error|Warning|Closed|Timeout|Exhausted|Interrupted|Uncertain|"
                                      r"Value|Changed|Refused|Statement|NotFound)$", match["name"]):
            continue
        column = len(match["indent"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        also = re.findall(r"\((?:also )?([\w.]+(?:Error|Warning|Timeout))\)", match["rest"])
        module = re.search(r"\((neon_notebook\.[\w.]+)\)", match["rest"])
        nodes.append((match["name"], parent, also, module[1] if module else None))
        stack.append((column, match["name"]))
    return nodes


def test_each_class_in_the_docstring_exists_with_the_bases_it_states():
    nodes = docstring_tree()
    named = {name for name, *_ in nodes}
    assert {"NeonError", "SessionClosed", "DecodeError", "NeonWarning", "CellError", "BinariesNotFound"} <= named
    for name, parent, also, module in nodes:
        cls = getattr(importlib.import_module(module or "neon_notebook.errors"), name)
        assert inspect.isclass(cls) and issubclass(cls, BaseException), name
        if parent is not None:
            assert issubclass(cls, getattr(errors, parent)), f"{name} should subclass {parent}"
        for base in also:
            assert issubclass(cls, _DRIVER[base]), f"{name} should also be a {base}"
    assert parent_of(nodes, "SessionClosed") == "ConnectError"
    assert parent_of(nodes, "PoolExhausted") == "ConnectError"
    assert parent_of(nodes, "NeonWarning") is None
    # and every public error of errors.py is drawn
    public_errors = {n for n in errors.__all__ if inspect.isclass(c := getattr(errors, n)) and issubclass(c, BaseException)}
    assert public_errors <= named and "SQLError" in public_errors


def parent_of(nodes, name):
    return next(parent for n, parent, *_ in nodes if n == name)


# --- the boundaries -----------------------------------------------------------


def test_a_closed_session_raises_session_closed_at_checkout(make_session, direct_url):
    session = make_session(direct_url, suspend_after=None)
    assert session.read_arrow("select 1 as x", progress=False).num_rows == 1
    session.close()
    for use in (session.connection, session.direct):
        with pytest.raises(errors.SessionClosed, match="closed") as err:
            with use():
                pass
        assert isinstance(err.value, errors.ConnectError) and isinstance(err.value, psycopg.OperationalError)
    with pytest.raises(errors.SessionClosed):
        session.read_arrow("select 1 as x", progress=False)


def test_a_closed_pool_raises_session_closed_not_a_bare_operational_error():
    opened = []
    pool = Pool("pooled", lambda: opened.append(1), max_size=1, timeout=1, max_idle=None)
    pool.close()
    with pytest.raises(errors.SessionClosed, match="pooled pool is closed"):
        pool.getconn()
    assert opened == []  # refused before connecting


def test_connect_errors_are_translated_from_the_driver_error_without_the_password(make_session, direct_url):
    secret = "Wr0ngPassw0rdXYZ"
    url = re.sub(r"(://[^:/@]+)(:[^@]*)?@", rf"\1:{secret}@", direct_url, count=1)
    session = make_session(url, suspend_after=None, wake_timeout=5)
    with pytest.raises(errors.PermanentConnectError) as err:
        session.read_arrow("select 1", progress=False)
    assert isinstance(err.value.__cause__, psycopg.OperationalError)
    assert not isinstance(err.value.__cause__, errors.NeonError)
    assert secret not in str(err.value) and "password" in str(err.value).lower()


def test_server_sql_errors_pass_through_as_psycopg_classes(make_session, direct_url):
    session = make_session(direct_url, suspend_after=None)
    with pytest.raises(psycopg.errors.UndefinedTable) as err:
        session.read_arrow("select * from no_such_table_here", progress=False)
    assert not isinstance(err.value, errors.NeonError)
