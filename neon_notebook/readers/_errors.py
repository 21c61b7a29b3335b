"""What the readers raise and warn, beyond the driver's own exceptions.

    psycopg.DataError
     └── UnrepresentableValue   a value cannot be held exactly by the column's
                                Arrow type (fixed by a stream's first batch)
    UserWarning
     └── TypeFallbackWarning    a column is returned as text because its values
                                do not fit the type the table in TYPES.md names

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
