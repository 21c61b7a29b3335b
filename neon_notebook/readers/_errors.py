"""What the readers raise and warn, beyond the driver's own exceptions.

    psycopg.DataError
     ├── UnrepresentableValue   a value cannot be held exactly by the column's
     │                          Arrow type, fixed by a stream's first batch;
     │                          names the column
     └── OutputSettingChanged   the query text set an output format (e.g.
                                extra_float_digits = 0) in which a column's
                                text cannot be read exactly
    psycopg.NotSupportedError
     ├── SessionStateRefused    on a pooled connection, a statement that would
     │                          leave session state (LISTEN, PREPARE, temp
     │                          tables...) for other clients; nothing ran
     └── UnsupportedStatement   a statement a read cannot run as asked (COPY
                                FROM STDIN, VACUUM inside a transaction...)
    psycopg.OperationalError
     └── CommitUncertain        the connection was lost after the text may have
                                committed: a retry could repeat a write
    UserWarning
     ├── TypeFallbackWarning    a column is returned as text because its values
     │                          do not fit the type the table in TYPES.md names
     └── SessionSettingWarning  a plain SET on a pooled connection ran as SET LOCAL

Connection and query errors (``psycopg.OperationalError``, ``QueryCanceled``,
syntax errors...) are the driver's, raised untouched, so that a caller (the
Session's retry logic) can classify them.
"""

from __future__ import annotations

import psycopg


class UnrepresentableValue(psycopg.DataError):
    """A value that the column's Arrow type cannot hold without losing information."""


class TypeFallbackWarning(UserWarning):
    """A column is returned as PostgreSQL's text instead of its usual Arrow type."""


class SessionStateRefused(psycopg.NotSupportedError):
    """A statement would leave session state on a pooler's shared server connection; not run."""


class UnsupportedStatement(psycopg.NotSupportedError):
    """A statement a read cannot run (``COPY ... FROM STDIN``...); the message says what to do."""


class CommitUncertain(psycopg.OperationalError):
    """The connection was lost after the read's text may have committed; it was not re-run."""


class OutputSettingChanged(psycopg.DataError):
    """The text changed an output setting so that a column's values cannot be read exactly."""


class SessionSettingWarning(UserWarning):
    """A plain ``SET`` on the pooled endpoint was run as ``SET LOCAL`` (it lasts for the read)."""
