"""Where driver and OS errors become this package's errors: the one translation point.

Three boundaries meet the driver, and each asks here what an error means:

- connecting (``_retry.retry_call``): ``classify`` reads the error, then
  ``connect_error`` makes the ``PermanentConnectError`` (retrying cannot help) or
  the ``WakeTimeout`` (retries ran out), its text scrubbed of secrets;
- borrowing a connection (``Session``, ``_pool.Pool``): a closed session or pool
  is ``closed_error``'s ``SessionClosed``;
- reading (``Session``): a connection the read lost is ``lost`` (and the read is
  retried once), or ``read_error``'s ``ResultInterrupted`` once rows reached the
  caller; ``connection_lost`` names a loss found only after the work was done.

Most specific first, everywhere: a ``NeonError`` is already ours and passes as
it is; permanent signs win over transient ones. What is translated is raised
``from`` the driver's error; server SQL errors pass untouched.

``classify`` reads the SQLSTATE *and* the message: Neon's proxy reports every
connect-time error as XX000, and psycopg reports a failed connection without a
SQLSTATE at all, one line per address tried. A permanent sign on any line wins.
Errors nothing here recognises are permanent unless they look like network
trouble: a wrong guess costs one re-run rather than a minute of retrying.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._redact import redact
from .errors import (CommitUncertain, ConnectError, OperationalError, PermanentConnectError, ResultInterrupted,
                     SessionClosed, WakeTimeout)

if TYPE_CHECKING:
    import psycopg

__all__ = ["Verdict", "classify", "closed_error", "connect_error", "connection_lost", "lost", "read_error"]


@dataclass(frozen=True)
class Verdict:
    """What an error means for retrying: transient or not, back off longer or not, and why."""

    transient: bool
    slow: bool
    reason: str
    refused: bool = False  # "connection refused": nothing listens at that address


_REFUSED = r"connection refused"
_PASSWORD = "The server rejected the user name or password. Check them in the URL (the Neon console shows the current ones)."
_CONNINFO = "The connection settings are invalid: {detail}"
_DNS = "The host name could not be resolved. Check the host in the URL and your network connection."
_EOF = "The server closed the connection without a word (the compute was suspended or restarted)."
_SLOTS = "The compute has no free connection slots. Use the pooled endpoint or close idle connections."

# Regular expressions searched case-insensitively in the whole message, permanent ones first:
# (pattern, reason) and (pattern, slow, reason).
_PERMANENT: Sequence[tuple[str, str]] = (
    (r"authentication failed", _PASSWORD),
    (r"is not permitted to log in", _PASSWORD),
    (r"no password supplied", "The server wants a password and none was given: put it in the URL, PGPASSWORD or ~/.pgpass."),
    (r'role ".*" does not exist', "The user (role) in the URL does not exist on this branch. Check the user name."),
    (r'database ".*" does not exist', "The database in the URL does not exist on this branch. Check the database name."),
    (r"permission denied for database", "This user may not connect to this database. Grant CONNECT or use another user."),
    (r"no pg_hba\.conf entry", "The server's pg_hba.conf refuses this user, database or address (or needs TLS). Check sslmode and the server's rules."),
    (r"endpoint is disabled", "This Neon endpoint is disabled. Enable it in the Neon console; retrying will not help."),
    (r"endpoint (?:cannot|could not) be found", "Neon has no endpoint by this name (or you lack access). Check the host in the URL against the Neon console."),
    (r"quota", "Neon will not start the compute: a quota or plan limit is exceeded. Check usage in the Neon console."),
    (r"is not allowed to connect", "Neon's IP allow list rejects this address. Add your IP to the project's allow list in the Neon console."),
    (r"endpoint id is not specified", "Neon could not tell which endpoint to use (no SNI). Add options=endpoint%3D<endpoint-id> to the URL or use a newer libpq."),
    (r"connection is insecure", "Neon accepts only TLS connections. Use sslmode=require."),
    (r"unsupported startup parameter", "The connection pooler (PgBouncer) rejected a startup option. Use the direct endpoint for session settings, or drop the option (e.g. options=-csearch_path=...)."),
    (r"could not translate host name|failed to resolve host|name or service not known|nodename nor servname|no address associated", _DNS),
    (r"server does not support ssl", "The server does not offer TLS, but sslmode asks for it. Use sslmode=prefer or disable for this server (never for Neon)."),
    (r"certificate verify failed|root certificate file|does not match host name|server certificate for", "The server's TLS certificate could not be verified. Check sslrootcert, or use sslmode=require instead of verify-ca/verify-full."),
    (r"channel binding", "SCRAM channel binding, which channel_binding=require asks for, is not available here. Drop channel_binding=require or connect over TLS."),
    (r"invalid connection option|missing \"=\" after|invalid uri|invalid percent-encoded|invalid \w+ value|invalid port number|bad value for", _CONNINFO),
)
_TRANSIENT: Sequence[tuple[str, bool, str]] = (
    (r"failed to acquire permit", True, "Neon's proxy is limiting concurrent compute wake-ups."),
    (r"too many connections? attempts", True, "Neon's proxy is rate-limiting connection attempts."),
    (r"too many connections to this endpoint", True, "Neon's proxy limits connections to this endpoint."),
    (r"too many clients already|remaining connection slots|too many connections for", True, _SLOTS),
    (r"no more connections allowed", True, "The connection pooler is full (max_client_conn)."),
    (r"query_wait_timeout", True, "The connection pooler's queue timed out: every server connection was busy."),
    (r"server login has been failing", True, "The connection pooler cannot log in to Postgres right now and waits before trying again."),
    (r"couldn't get a connection after", True, "No pooled connection became free in time."),
    (r"pgbouncer cannot connect to server", False, "The connection pooler cannot reach Postgres yet (the compute may be starting)."),
    (r"couldn't connect to compute node", False, "Neon's proxy cannot reach the compute yet (it may be starting)."),
    (r"control plane request failed", False, "Neon's control plane did not answer the wake-up request."),
    (r"the database system is (?:starting up|not yet accepting)", False, "Postgres is starting up (cold start)."),
    (r"the database system is (?:shutting down|in recovery)", False, "The compute is shutting down or restarting. It will be woken again."),
    (r"terminating connection due to administrator command", False, "The compute closed the connection (suspended or restarted by Neon)."),
    (r"timeout expired|timed out", False, "No answer within the connect timeout (the compute may be waking up)."),
    (_REFUSED, False, "The connection was refused (nothing listening yet)."),
    (r"server closed the connection|eof detected|closed unexpectedly|unexpected eof|connection reset|broken pipe", False, _EOF),
    (r"could not (?:receive|send) data|consuming input failed|connection to server .*lost", False, _EOF),
    (r"no route to host|network is unreachable|host is unreachable", False, "The network cannot reach the server right now."),
)
_PERMANENT_CODES = {
    "28P01": _PASSWORD,
    "28000": "The server refused the login (invalid authorization). Check the user and password.",
    "3D000": "The database in the URL does not exist. Check the database name.",
}
_TRANSIENT_CODES = {
    "57P01": (False, "The compute closed the connection (suspended or restarted by Neon)."),
    "57P02": (False, "The server crashed and is restarting."),
    "57P03": (False, "Postgres is not accepting connections yet (cold start)."),
    "53300": (True, _SLOTS),
    "53400": (True, "The server hit a configured limit."),
}


def classify(exc: BaseException) -> Verdict:
    """Tell whether ``exc`` from connecting is worth retrying, and say why in plain words."""
    message = str(exc)
    detail = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)[:300]
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, socket.gaierror):
        return Verdict(False, False, _DNS)
    for pattern, reason in _PERMANENT:
        if re.search(pattern, message, re.IGNORECASE):
            return Verdict(False, False, reason.format(detail=detail))
    if sqlstate in _PERMANENT_CODES:
        return Verdict(False, False, _PERMANENT_CODES[sqlstate])
    for pattern, slow, reason in _TRANSIENT:
        if re.search(pattern, message, re.IGNORECASE):
            return Verdict(True, slow, reason, refused=pattern is _REFUSED)
    if sqlstate in _TRANSIENT_CODES:
        return Verdict(True, *_TRANSIENT_CODES[sqlstate])
    driver = sys.modules.get("psycopg")  # not loaded: exc is none of its errors
    timeouts = (driver.errors.ConnectionTimeout,) if driver is not None else ()
    if (sqlstate or "").startswith("08") or isinstance(exc, (*timeouts, ConnectionError, TimeoutError)):
        return Verdict(True, False, f"The connection failed ({detail}).")
    return Verdict(False, False, f"Unrecognised error while connecting, not retried: {detail}")


def connect_error(exc: BaseException, verdict: Verdict, *, secrets: Sequence[str | None] = (),
                  attempts: int | None = None, waited: float = 0.0) -> ConnectError:
    """The error to raise ``from`` a failed connection attempt ``exc``, told ``verdict`` by ``classify``.

    Permanent, or with ``attempts`` given (retries ran out): a ``WakeTimeout``.
    """
    reason = redact(verdict.reason, *secrets)
    if attempts is None:
        return PermanentConnectError(reason)
    return WakeTimeout(attempts=attempts, waited=waited, last_reason=reason)


def closed_error(what: str = "this session is closed") -> SessionClosed:
    """A connection asked of a closed session (or, ``what`` says, of its closed pool)."""
    return SessionClosed(f"{what}; make a new session with neon_notebook.connect()")


def lost(conn: psycopg.Connection, exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself died (suspension, crash, network)."""
    return (conn.broken or conn.closed) and classify(exc).transient


def connection_lost(pgconn: psycopg.pq.abc.PGconn, encoding: str = "utf-8") -> OperationalError:
    """The driver's error for a connection libpq found dead, in libpq's words."""
    message = pgconn.error_message.decode(encoding, "replace").strip()
    return OperationalError(message or "the connection to server was lost")


def read_error(exc: OperationalError, *, rows_delivered: int) -> BaseException | None:
    """What a read lost with ``exc`` raises, or None when it may run again (nothing delivered or committed).

    Most specific first: a possible commit is never re-run (``CommitUncertain``
    as it is); rows already delivered make a ``ResultInterrupted`` (raise it
    ``from exc``).
    """
    if isinstance(exc, CommitUncertain):
        return exc
    if rows_delivered:
        return ResultInterrupted(
            f"The connection was lost after {rows_delivered:,} rows had been delivered "
            f"({classify(exc).reason}); the result is incomplete. Run the read again.",
            rows=rows_delivered)
    return None
