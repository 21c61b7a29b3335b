"""The errors and warnings neon_notebook raises, in one tree.

Users catch by meaning ("could not connect", "bad configuration") rather than by
driver detail, and code written for psycopg keeps working: each error that has a
driver counterpart is also that driver class (a lost connection is still a
``psycopg.OperationalError``, pool exhaustion still a ``psycopg_pool.PoolTimeout``)::

    NeonError                      base of every error this package raises
    ├── ConfigurationError         (also ValueError) malformed URL, bad parameter or argument
    ├── ConnectError               (also psycopg.OperationalError) no working connection
    │   ├── PermanentConnectError  retrying cannot help: wrong password, unknown
    │   │                          database or role, disabled endpoint, quota, ...
    │   ├── WakeTimeout            the compute did not answer within wake_timeout
    │   ├── PoolExhausted          (also psycopg_pool.PoolTimeout) no free pooled
    │   │                          connection within pool_timeout, or the calling
    │   │                          thread itself holds them all
    │   └── SessionClosed          the session (or its pool) was closed
    ├── ResultInterrupted          (also psycopg.OperationalError) a read was cut off
    │                              after rows arrived; the partial result was discarded
    ├── WriteInterrupted           (also psycopg.OperationalError) a write lost its
    │                              connection before it committed: nothing was written
    ├── CommitUncertain            (also psycopg.OperationalError) the connection was lost
    │                              after the text, or a write, may have committed: not re-run
    ├── UnrepresentableValue       (also psycopg.DataError) a value the column's Arrow
    │                              type cannot hold exactly; names the column
    ├── OutputSettingChanged       (also psycopg.DataError) the text set an output format
    │                              in which a column's text cannot be read exactly
    ├── SessionStateRefused        (also psycopg.NotSupportedError) on the pooled endpoint,
    │                              a statement that would leave session state for other
    │                              clients (LISTEN, PREPARE, temp tables...); nothing ran
    ├── UnsupportedStatement       (also psycopg.NotSupportedError) a statement a read
    │                              cannot run as asked (COPY FROM STDIN...)
    ├── DecodeError                (also psycopg.InternalError) the server's rows did not
    │                              match their description; a bug to report
    ├── CellError                  a %%sql cell failed; shown psql-style (neon_notebook.ui.magics)
    └── LocalComputeError          (also RuntimeError) the local compute could not do
        │                          what was asked (neon_notebook.local)
        └── BinariesNotFound       a server binary it needs is not installed

    SQLError                       (also psycopg.DatabaseError) what the server said about
                                   the SQL, over HTTP where psycopg is not installed

    NeonWarning                    (UserWarning) base of this package's warnings
    ├── TypeFallbackWarning        a column is returned as text: its values do not fit
    │                              the type TYPES.md names
    └── SessionSettingWarning      a plain SET on the pooled endpoint ran as SET LOCAL

Two kinds of error keep Python's own class, because that is what they mean: a
``TypeError`` for an argument of the wrong type (a query that is not text, an unknown
keyword), and the ``OSError`` about the user's own files (a Parquet path that is a
directory or in a missing folder).

What the server reports about the SQL itself (a syntax error, an unknown table, a
cancelled statement...) is not ours to rename: it comes through as psycopg's own
class (``psycopg.errors.UndefinedTable``...), with its SQLSTATE and position, on
every transport (``sql_error`` makes it from the fields an HTTP response carries).
Only where psycopg is not installed (Pyodide) is it a ``SQLError``, with the same
``sqlstate`` and ``diag`` attributes (``Diagnostic``: psycopg's names), so code that
reads them runs in both places. Neither is a ``NeonError``: like the driver's, they
are told transient or not by ``_translate.classify``.

psycopg is optional. Where it is not installed (Pyodide), the classes above keep
their place in the tree but their driver bases are stand-ins of the same names
defined here (``Error``, ``DatabaseError``, ``OperationalError``, ``DataError``,
``NotSupportedError``, ``InternalError``, ``ProgrammingError``, ``PoolTimeout``);
where it is, those names are psycopg's and psycopg_pool's own classes.

Driver and OS errors are translated in one place, ``neon_notebook._translate``, at
each boundary (connecting, borrowing a connection, reading). Errors that wrap a
driver or OS error are raised ``from`` it, so the original stays available as
``__cause__``. Their own text never contains a password: the code
that raises them scrubs it with ``neon_notebook._redact.redact``.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

try:
    import psycopg
    from psycopg import (DatabaseError, DataError, Error, InternalError, NotSupportedError, OperationalError,
                         ProgrammingError)
except ImportError:  # Pyodide: no libpq, no psycopg
    psycopg = None

    class Error(Exception):  # type: ignore[no-redef]
        """Stands for ``psycopg.Error`` where psycopg is not installed."""

        sqlstate: str | None = None

    class DatabaseError(Error):  # type: ignore[no-redef]
        """Stands for ``psycopg.DatabaseError`` where psycopg is not installed."""

    class OperationalError(DatabaseError):  # type: ignore[no-redef]
        """Stands for ``psycopg.OperationalError`` where psycopg is not installed."""

    class DataError(DatabaseError):  # type: ignore[no-redef]
        """Stands for ``psycopg.DataError`` where psycopg is not installed."""

    class NotSupportedError(DatabaseError):  # type: ignore[no-redef]
        """Stands for ``psycopg.NotSupportedError`` where psycopg is not installed."""

    class InternalError(DatabaseError):  # type: ignore[no-redef]
        """Stands for ``psycopg.InternalError`` where psycopg is not installed."""

    class ProgrammingError(DatabaseError):  # type: ignore[no-redef]
        """Stands for ``psycopg.ProgrammingError`` where psycopg is not installed."""

try:
    from psycopg_pool import PoolTimeout
except ImportError:

    class PoolTimeout(OperationalError):  # type: ignore[no-redef]
        """Stands for ``psycopg_pool.PoolTimeout`` where psycopg_pool is not installed."""


__all__ = [
    "BinariesNotFound",
    "CommitUncertain",
    "ConfigurationError",
    "ConnectError",
    "DecodeError",
    "Diagnostic",
    "LocalComputeError",
    "NeonError",
    "NeonWarning",
    "OutputSettingChanged",
    "PermanentConnectError",
    "PoolExhausted",
    "ResultInterrupted",
    "SQLError",
    "SessionClosed",
    "SessionSettingWarning",
    "SessionStateRefused",
    "TypeFallbackWarning",
    "UnrepresentableValue",
    "UnsupportedStatement",
    "WakeTimeout",
    "WriteInterrupted",
    "sql_error",
]


class NeonError(Exception):
    """Base class of every error raised by neon_notebook."""


class ConfigurationError(NeonError, ValueError):
    """A URL or parameter is malformed; the message says what is wrong and how to fix it."""


class ConnectError(NeonError, OperationalError):
    """No working connection could be obtained."""


class PermanentConnectError(ConnectError):
    """The connection was refused for a reason retrying cannot fix; the message says what to fix."""


class WakeTimeout(ConnectError):
    """The compute did not answer within the wake-up deadline, despite retries."""

    def __init__(
        self, message: str = "", *, attempts: int = 0, waited: float = 0.0, last_reason: str = ""
    ) -> None:
        self.attempts = attempts
        self.waited = waited
        self.last_reason = last_reason
        super().__init__(
            message
            or f"The database did not answer within {waited:.1f} s "
            f"({attempts} attempt{'s' if attempts != 1 else ''}). Last error: {last_reason} "
            "The compute may still be starting, or the network may be down: run again, "
            "or pass a larger wake_timeout."
        )


class PoolExhausted(ConnectError, PoolTimeout):
    """Every pooled connection stayed busy for pool_timeout seconds (or the calling thread holds them all)."""

    def __init__(
        self, message: str = "", *, pool_size: int = 0, timeout: float | None = None
    ) -> None:
        self.pool_size = pool_size
        self.timeout = timeout
        waited = f" for {timeout:g} s" if timeout is not None else ""
        super().__init__(
            message
            or f"All {pool_size} pooled connections stayed busy{waited}. "
            "Close cursors or results you no longer need, or raise the pool size "
            "(connection_limit in the URL, pool_size=...) or pool_timeout."
        )


class ResultInterrupted(NeonError, OperationalError):
    """A read lost its connection after rows had arrived; the partial result was discarded."""

    def __init__(self, message: str = "", *, rows: int | None = None) -> None:
        self.rows = rows
        received = f"after {rows} rows arrived" if rows is not None else "part-way"
        super().__init__(
            message
            or f"The connection was lost {received}; the partial result was discarded "
            "so it cannot be mistaken for a complete one. Run the query again."
        )


class WriteInterrupted(NeonError, OperationalError):
    """A write lost its connection before it committed: nothing was written."""

    def __init__(self, message: str = "", *, rows: int | None = None) -> None:
        self.rows = rows  # rows sent before the connection was lost (none of them stayed)
        super().__init__(message or "The write lost its connection before it committed; nothing was written.")


class SessionClosed(ConnectError):
    """The session, or the pool a connection was asked of, has been closed."""


class CommitUncertain(NeonError, OperationalError):
    """The connection was lost after the work may have committed (a read's text, a write's
    COMMIT whose outcome could not be learnt); it was not re-run."""


class UnrepresentableValue(NeonError, DataError):
    """A value that the column's Arrow type cannot hold without losing information."""


class OutputSettingChanged(NeonError, DataError):
    """The text changed an output setting so that a column's values cannot be read exactly."""


class SessionStateRefused(NeonError, NotSupportedError):
    """A statement would leave session state on a pooler's shared server connection; not run."""


class UnsupportedStatement(NeonError, NotSupportedError):
    """A statement a read cannot run (``COPY ... FROM STDIN``...); the message says what to do."""


class DecodeError(NeonError, InternalError):
    """The server's rows did not match their description (row count, value layout): a bug."""


class LocalComputeError(NeonError, RuntimeError):
    """The local compute could not start, stop or change state as asked."""


class BinariesNotFound(LocalComputeError):
    """A server binary the local compute needs is not installed."""


class NeonWarning(UserWarning):
    """Base class of this package's warnings."""


class TypeFallbackWarning(NeonWarning):
    """A column is returned as PostgreSQL's text instead of its usual Arrow type."""


class SessionSettingWarning(NeonWarning):
    """A plain ``SET`` on the pooled endpoint was run as ``SET LOCAL`` (it lasts for the read)."""


@dataclass(frozen=True)
class Diagnostic:
    """What the server reported about an error, by the names of ``psycopg.errors.Diagnostic`` (text or None)."""

    severity: str | None = None
    severity_nonlocalized: str | None = None
    sqlstate: str | None = None
    message_primary: str | None = None
    message_detail: str | None = None
    message_hint: str | None = None
    statement_position: str | None = None  # 1-based, in characters, as text (as psycopg gives it)
    internal_position: str | None = None
    internal_query: str | None = None
    context: str | None = None
    schema_name: str | None = None
    table_name: str | None = None
    column_name: str | None = None
    datatype_name: str | None = None
    constraint_name: str | None = None
    source_file: str | None = None
    source_line: str | None = None
    source_function: str | None = None


class SQLError(DatabaseError):
    """An error the server reported about the SQL, where psycopg is not installed to name its class.

    ``sqlstate`` and ``diag`` read as a psycopg error's do; ``position`` is the
    1-based character offset in the statement the server pointed at, or None.
    """

    def __init__(self, message: str = "", *, diag: Diagnostic | None = None) -> None:
        self._diagnostic = diag or Diagnostic()
        super().__init__(message or self._diagnostic.message_primary or "the server reported an error")
        self.sqlstate = self._diagnostic.sqlstate

    @property
    def diag(self) -> Diagnostic:  # type: ignore[override]
        """The fields of the server's report."""
        return self._diagnostic

    @property
    def position(self) -> int | None:
        """``diag.statement_position`` as a number, None when the server named no position."""
        text = self.diag.statement_position
        return int(text) if text and text.isdigit() else None


def sql_error(diag: Diagnostic, message: str | None = None) -> Error:
    """The error for a server's error report: psycopg's class for its SQLSTATE, else a ``SQLError``.

    ``message`` (default: the primary message) is the error's text. A psycopg
    error made here has ``sqlstate`` and ``diag`` as if libpq had received the report.
    """
    text = message or diag.message_primary or "the server reported an error"
    if psycopg is None:
        return SQLError(text, diag=diag)
    from psycopg.errors import get_base_exception, lookup
    from psycopg.pq import DiagnosticField

    code = diag.sqlstate or ""
    try:
        cls = lookup(code)
    except KeyError:
        cls = get_base_exception(code)
    info = {DiagnosticField[f.name.upper()]: value.encode()
            for f, value in zip(fields(diag), astuple(diag)) if value is not None}
    return cls(text, info=info)
