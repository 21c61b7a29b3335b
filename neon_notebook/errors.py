"""The errors neon_notebook raises, in one tree.

Users catch by meaning ("could not connect", "bad configuration") rather than by
driver detail, and code written for psycopg keeps working: connection errors are
still ``psycopg.OperationalError`` and pool exhaustion is still
``psycopg_pool.PoolTimeout``::

    NeonError                      base of every error this package raises
    ├── ConfigurationError         (also ValueError) malformed URL or bad parameter
    ├── ConnectError               (also psycopg.OperationalError) no working connection
    │   ├── PermanentConnectError  retrying cannot help: wrong password, unknown
    │   │                          database or role, disabled endpoint, quota, ...
    │   ├── WakeTimeout            the compute did not answer within wake_timeout
    │   └── PoolExhausted          (also psycopg_pool.PoolTimeout) no free pooled
    │                              connection within pool_timeout, or the calling
    │                              thread itself holds them all
    └── ResultInterrupted          (also psycopg.OperationalError) a read was cut off
                                   after rows arrived; the partial result was discarded

Errors that wrap a driver error are raised ``from`` it, so the original stays
available as ``__cause__``. Their own text never contains a password: the code
that raises them scrubs it with ``neon_notebook._config.redact``.
"""

from __future__ import annotations

import psycopg
import psycopg_pool

__all__ = [
    "ConfigurationError",
    "ConnectError",
    "NeonError",
    "PermanentConnectError",
    "PoolExhausted",
    "ResultInterrupted",
    "WakeTimeout",
]


class NeonError(Exception):
    """Base class of every error raised by neon_notebook."""


class ConfigurationError(NeonError, ValueError):
    """A URL or parameter is malformed; the message says what is wrong and how to fix it."""


class ConnectError(NeonError, psycopg.OperationalError):
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


class PoolExhausted(ConnectError, psycopg_pool.PoolTimeout):
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


class ResultInterrupted(NeonError, psycopg.OperationalError):
    """A read lost its connection after rows had arrived; the partial result was discarded."""

    def __init__(self, message: str = "", *, rows: int | None = None) -> None:
        self.rows = rows
        received = f"after {rows} rows arrived" if rows is not None else "part-way"
        super().__init__(
            message
            or f"The connection was lost {received}; the partial result was discarded "
            "so it cannot be mistaken for a complete one. Run the query again."
        )
