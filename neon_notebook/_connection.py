"""Opening one connection to an endpoint: cold-start retries, pooler-safe settings.

On the pooled endpoint (PgBouncer in transaction mode) session state does not
survive a transaction and startup ``options`` are refused, so the schema and the
statement timeout are set with ``SET LOCAL`` at the start of every transaction,
sent with the ``BEGIN`` in the same round trip; prepared statements are off. On
the direct endpoint they are ordinary session settings, set once per connection.
An endpoint not known to be direct is treated as pooled (``conn.pooled``).

Riding with the ``BEGIN`` means overriding psycopg's private transaction-start
hooks; they are used in this file only, their shape is checked at import
(``HOOKS``), and without them every transaction pays one explicit ``SET LOCAL``
round trip instead. pyproject.toml bounds psycopg to the releases checked.

A refused connection is retried only briefly on hosts other than Neon's: Neon's
proxy always listens, but a refused local port means a typo or a server that is
not running, which waiting will not fix.
"""

from __future__ import annotations

import inspect
import ipaddress
import itertools
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import psycopg
from psycopg import generators, pq, sql
from psycopg import transaction as _transaction

from .errors import ConfigurationError, PermanentConnectError
from ._retry import Attempts, Deadline, retry_call
from ._translate import Verdict
from ._config import Settings
from ._endpoint import Endpoint

#: Seconds of "connection refused" in a row after which a non-Neon host is given
#: up on: long enough for a server restarting on the spot (pg_ctl restart, a
#: PgBouncer reload), short enough that a typo in the port is reported at once.
REFUSED_WINDOW = 3.0
#: The same for Neon hosts, whose proxy never refuses: a refusal there is a
#: firewall or a wrong port, but a network blip deserves a little more patience.
NEON_REFUSED_WINDOW = 15.0


def _hooks_fit() -> bool:
    """Whether psycopg's private transaction-start hooks have the shape NeonConnection relies on.

    psycopg opens a transaction (``_start_query``, ``Transaction``) with
    ``_exec_command(_get_tx_start_command())``, queued when ``_pipeline`` is set;
    the override sends that command itself with ``_check_connection_ok``,
    ``generators.execute`` and ``pgconn._encoding``.
    """
    base = psycopg.Connection
    shapes = (
        (lambda: base._get_tx_start_command, ["self"]),
        (lambda: base._exec_command, ["self", "command", "result_format"]),
        (lambda: base._check_connection_ok, ["self"]),
        (lambda: generators.execute, ["pgconn"]),
    )
    callers = (  # the code that must call the hooks, and the names it must use
        (lambda: base._start_query, {"_exec_command", "_get_tx_start_command", "_pipeline"}),
        (lambda: _transaction.BaseTransaction._get_enter_commands, {"_get_tx_start_command"}),
        (lambda: _transaction.BaseTransaction._enter_gen, {"_exec_command"}),
    )
    try:
        return (all(list(inspect.signature(get()).parameters) == names for get, names in shapes)
                and all(names <= set(get().__code__.co_names) for get, names in callers)
                and hasattr(pq.PGconn, "_encoding"))
    except (AttributeError, TypeError, ValueError):
        return False


#: Whether new connections send their SET LOCALs with psycopg's BEGIN (the hooks
#: fit this psycopg), or in a round trip of their own. Tests set it to False.
HOOKS = _hooks_fit()


class NeonConnection(psycopg.Connection):
    """A psycopg connection that opens every transaction with ``SET LOCAL``s.

    With ``HOOKS``, the ``SET LOCAL`` statements ride in the same simple-protocol
    message as psycopg's ``BEGIN`` (in a pipeline, they are queued after it), so
    they cost no extra round trip. Without, its cursors (``_SetLocalCursor``)
    send them before the first statement of each transaction.
    """

    _tx_statements: tuple[bytes, ...] = ()
    #: Whether this connection sends its SET LOCALs through psycopg's hooks (HOOKS when opened).
    _tx_hooks: bool = True
    #: The fallback's "the open transaction has no SET LOCALs yet" (for transaction() blocks).
    _tx_pending: bool = False
    #: False only when the endpoint is known to be direct; readers consult it.
    pooled: bool = False

    @property
    def autocommit(self) -> bool:
        return psycopg.Connection.autocommit.fget(self)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.set_autocommit(value)

    def set_autocommit(self, value: bool) -> None:
        """psycopg's, refusing autocommit where the per-transaction SET LOCALs would not apply."""
        if value and self._tx_statements:
            raise ConfigurationError(
                "autocommit=True is refused on this pooled connection: through PgBouncer, schema= and "
                "statement_timeout= are set per transaction (SET LOCAL), so in autocommit they would "
                "silently not apply. Use session.direct() for autocommit work such as VACUUM or "
                "CREATE INDEX CONCURRENTLY (give the direct URL as direct_url= or DIRECT_URL if you passed "
                "only one), or keep transactions here.")
        super().set_autocommit(value)

    # -- with the hooks: the SET LOCALs in the BEGIN's message -------------------------
    def _get_tx_start_command(self) -> bytes:
        begin = super()._get_tx_start_command()
        if not (self._tx_statements and self._tx_hooks):
            return begin
        return b"; ".join((begin, *self._tx_statements))

    def _exec_command(self, command: Any, result_format: pq.Format = pq.Format.TEXT) -> Any:
        if not (self._tx_statements and self._tx_hooks) or command != self._get_tx_start_command():
            return (yield from super()._exec_command(command, result_format))
        if self._pipeline:
            result = yield from super()._exec_command(super()._get_tx_start_command())
            for statement in self._tx_statements:
                result = yield from super()._exec_command(statement)
            return result
        self._check_connection_ok()
        self.pgconn.send_query(command)
        results = yield from generators.execute(self.pgconn)
        for result in results:
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise psycopg.errors.error_from_result(result, encoding=self.pgconn._encoding)
        return results[-1]

    # -- without: one SET LOCAL round trip, through public API only -----------------------
    @contextmanager
    def transaction(self, savepoint_name: str | None = None,
                    force_rollback: bool = False) -> Iterator[psycopg.Transaction]:
        outermost = self.pgconn.transaction_status == pq.TransactionStatus.IDLE
        with super().transaction(savepoint_name, force_rollback) as tx:
            if outermost and not self._tx_hooks:
                self._tx_pending = True  # the BEGIN was psycopg's own: the first statement sets them
            yield tx

    def _set_local(self, cursor: psycopg.Cursor) -> None:
        """The fallback: send the SET LOCALs when ``cursor``'s statement is the transaction's first."""
        if self._tx_hooks or not self._tx_statements or self.autocommit:
            return
        status = self.pgconn.transaction_status
        if status == pq.TransactionStatus.IDLE or (status == pq.TransactionStatus.INTRANS and self._tx_pending):
            self._tx_pending = False
            for statement in self._tx_statements:  # psycopg sends its BEGIN before the first
                psycopg.Cursor.execute(cursor, statement, prepare=False)


class _SetLocalCursor(psycopg.Cursor):
    """The fallback's cursor: the connection's SET LOCALs go first in each transaction."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.connection._set_local(self)
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        self.connection._set_local(self)
        return super().executemany(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.connection._set_local(self)
        return super().stream(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        self.connection._set_local(self)
        return super().copy(*args, **kwargs)


def _session_settings(settings: Settings) -> list[tuple[str, str]]:
    found = []
    if settings.schema:
        found.append(("search_path", sql.Identifier(settings.schema).as_string(None)))
    if settings.statement_timeout:
        # Whole milliseconds, never 0 (which would mean no limit at all).
        found.append(("statement_timeout", str(max(1, round(settings.statement_timeout * 1000)))))
    return found


def _addresses(host: str, port: int) -> list[str | None]:
    """Resolve once, so that each attempt tries one address and the deadline holds.

    libpq tries every address a name resolves to, each with its own
    connect_timeout; pinning ``hostaddr`` bounds one attempt to one timeout.
    """
    if host.startswith("/") or "," in host:
        return [None]
    try:
        ipaddress.ip_address(host)
        return [None]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos)) or [None]


def open_connection(
    endpoint: Endpoint,
    settings: Settings,
    *,
    on_attempt: Callable[[int], None] | None = None,
    on_retry: Callable[[int, BaseException, Verdict, float], None] | None = None,
    attempts: Attempts | None = None,
) -> NeonConnection:
    """Connect, retrying transient failures until ``settings.wake_timeout``."""
    deadline = Deadline(settings.wake_timeout)
    addresses: itertools.cycle | None = None
    counter = itertools.count(1)
    kwargs: dict[str, Any] = {"autocommit": False}
    if endpoint.pooled:
        kwargs["prepare_threshold"] = None

    def attempt(timeout: float) -> NeonConnection:
        nonlocal addresses
        if on_attempt is not None:
            on_attempt(next(counter))
        if addresses is None:
            addresses = itertools.cycle(_addresses(endpoint.host, endpoint.port))
        hostaddr = next(addresses)
        overrides: dict[str, Any] = {"connect_timeout": timeout}
        if hostaddr is not None:
            overrides["hostaddr"] = hostaddr
        return NeonConnection.connect(endpoint.conninfo(**overrides), **kwargs)

    conn = retry_call(attempt, deadline=deadline, attempt_timeout=settings.connect_timeout,
                      on_retry=on_retry, attempts=attempts, secrets=endpoint.secrets,
                      give_up=_RefusedWindow(endpoint).check)
    conn.pooled = endpoint.pooled
    pairs = _session_settings(settings)
    if pairs and endpoint.pooled:
        conn._tx_statements = tuple(f"SET LOCAL {name} TO {value}".encode() for name, value in pairs)
        conn._tx_hooks = HOOKS
        if not HOOKS:
            conn.cursor_factory = _SetLocalCursor
    elif pairs:
        try:
            conn.execute(
                "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in pairs),
                [item for pair in pairs for item in pair])
            conn.commit()
        except BaseException:
            conn.close()
            raise
    return conn


class _RefusedWindow:
    """Gives up on an endpoint that kept refusing connections for a few seconds in a row."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.window = NEON_REFUSED_WINDOW if endpoint.is_neon else REFUSED_WINDOW
        self.since: float | None = None

    def check(self, exc: BaseException, verdict: Verdict) -> None:
        """Raise ``PermanentConnectError`` when ``exc`` is a refusal ending the window."""
        if not verdict.refused:
            self.since = None
            return
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since < self.window:
            return
        where = f"{self.endpoint.host}:{self.endpoint.port}"
        if self.endpoint.is_neon:
            likely = ("Neon's proxy never refuses connections, so something between here and Neon does: "
                      "check the port in the URL (Neon listens on 5432) and whether a firewall or VPN "
                      "blocks outgoing connections to port 5432.")
        else:
            likely = ("Check the port in the URL for a typo and that the server is running; for a local "
                      "compute, keep `python -m neon_notebook local` (or the LocalCompute) running and "
                      "use the URLs it prints.")
        raise PermanentConnectError(
            f"Nothing listens at {where}: the connection was refused for {self.window:g} s. {likely}"
        ) from exc
