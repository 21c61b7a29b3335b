"""``HttpSession``: a Session whose reads and statements go over Neon's SQL-over-HTTP endpoint.

Each read or ``execute`` is one HTTPS request (one round trip once the
connection is up): no TCP connection to PostgreSQL, no pool to keep, nothing
held between requests, so nothing keeps the compute awake. A request waits
through a cold start (retried while the proxy says the compute is not
reachable yet, up to ``wake_timeout``); a read whose answer was lost is re-sent
once only when it ran in a read-only transaction. Results come as PostgreSQL's
text output and are decoded by the same kinds as the COPY path, so types and
values are the same. No psycopg is needed (Pyodide, JupyterLite).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from ._config import Settings
from ._endpoint import Endpoint, summary
from ._lifecycle import Lifecycle
from ._state import ComputeState
from ._status import QueryStats, Status
from . import errors
from .errors import CommitUncertain, ConfigurationError, ConnectError, PermanentConnectError, WakeTimeout
from .session import NEON_SUSPEND_AFTER, ProgressArg, Session, WarmUpReport, _progress

if TYPE_CHECKING:
    import os

    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from .http._transport import Exchange, HttpTransport

__all__ = ["HttpSession"]

log = logging.getLogger("neon_notebook")

#: SQLSTATEs of a compute going away under a request (suspension, crash, restart): the state follows.
_GONE = frozenset({"57P01", "57P02", "57P03"})


class HttpResources(Lifecycle):
    """An HTTP session's transport (one per endpoint role) and what it records."""

    def __init__(self, settings: Settings, suspend_after: float | None, http_url: str | None) -> None:
        from .http._transport import HttpTransport

        super().__init__(settings, suspend_after)
        self.transports = {role: HttpTransport(self.endpoint(role), settings,
                                               http_url or _derived_url(self.endpoint(role)))
                           for role in ("pooled", "direct")}

    def close(self) -> None:
        super().close()
        for transport in self.transports.values():
            transport.close()


def _derived_url(endpoint: Endpoint) -> str:
    from .http._protocol import http_url_for

    if not endpoint.is_neon:
        raise ConfigurationError(
            f"{summary(endpoint)} is not a Neon host, so its SQL-over-HTTP URL cannot be derived: "
            "pass http_url= (for a local compute: LocalCompute.http_url).")
    return http_url_for(endpoint.host)


class HttpSession(Session):
    """A Session over Neon's HTTP endpoint: ``read_*``, ``iter_batches``, ``to_parquet`` and ``execute``."""

    def __init__(self, settings: Settings, *, http_url: str | None = None,
                 suspend_after: float | None = NEON_SUSPEND_AFTER) -> None:
        from .session import _check_suspend_after

        _check_suspend_after(suspend_after)
        self.settings = settings
        self.suspend_after = suspend_after
        self._resources = HttpResources(settings, suspend_after, http_url)
        self._catalog: dict[int, tuple] = {}
        self._started()

    @property
    def http_url(self) -> str:
        """The ``/sql`` URL the requests go to."""
        return self._resources.transports["pooled"].url

    # -- no connections over HTTP ----------------------------------------------------
    def _no_connections(self, what: str) -> NoReturn:
        raise ConfigurationError(
            f"{what} needs a PostgreSQL connection, which an HTTP session does not have: use "
            "execute() and the read_* methods, or connect(..., transport=\"tcp\").")

    @contextmanager
    def connection(self) -> Iterator[Any]:
        self._no_connections("connection()")
        yield

    @contextmanager
    def direct(self) -> Iterator[Any]:
        self._no_connections("direct()")
        yield

    def write(self, data: Any, table: str | tuple[str, str], **options: Any) -> int:
        """Not over HTTP: writes are binary COPY, which needs a PostgreSQL connection."""
        self._no_connections("write() (binary COPY)")

    def pool_stats(self) -> dict[str, dict[str, int]]:
        return {}

    def status(self) -> Status:
        """The snapshot, saying the session talks SQL over HTTP, and to which URL."""
        return replace(super().status(), transport=self._redact(f"SQL over HTTP ({self.http_url})"))

    # -- requests ----------------------------------------------------------------------
    def _exchange(self, sql: str, params: Any, direct: bool, *, read: bool) -> Exchange:
        """One request, the state following it: waking while the proxy retries, then active."""
        from .http._client import GaveUp, LostAnswer
        from .http._protocol import ServerError

        resources = self._resources
        if resources.closed:
            from .errors import SessionClosed

            raise SessionClosed("The session is closed; connect() again.")
        if not isinstance(sql, str):
            raise TypeError(f"the query must be SQL text (str), not {type(sql).__name__}")
        transport = resources.transports["direct" if direct else "pooled"]
        endpoint = self._endpoint("direct" if direct else "pooled")

        def on_retry(attempt: int, reason: str, delay: float) -> None:
            log.info("HTTP attempt %d to %s failed (%s); retrying in %.2f s", attempt, summary(endpoint),
                     self._redact(reason), delay)
            resources.set_state(ComputeState.WAKING, self._redact(reason))

        try:
            exchange = transport.exchange(sql, params, retry_lost=read, on_retry=on_retry)
        except GaveUp as exc:
            error = WakeTimeout(attempts=exc.attempts, waited=self.settings.wake_timeout,
                                last_reason=self._redact(exc.reason))
            resources.set_state(ComputeState.ERROR, str(error))
            raise error from None
        except LostAnswer as exc:
            resources.set_state(ComputeState.UNKNOWN, self._redact(str(exc)))
            if getattr(exc, "resent", False):  # a read-only read, lost twice: nothing was written
                raise ConnectError(self._redact(
                    f"{exc}; the read (read-only) was sent twice and lost twice; run it again.")) from None
            raise CommitUncertain(self._redact(
                f"{exc}. The text may have run and committed; it was not re-run. "
                "Check before running it again.")) from None
        except ServerError as err:
            raise self._proxy_error(err) from None
        except errors.Error as exc:  # PostgreSQL refused the SQL: the compute answered, or went away
            if getattr(exc, "sqlstate", None) in _GONE:
                resources.set_state(ComputeState.SUSPENDED, self._redact(str(exc).splitlines()[0]))
            else:
                resources.set_state(ComputeState.ACTIVE)
            raise
        resources.set_state(ComputeState.ACTIVE)
        return exchange

    def _proxy_error(self, err: Any) -> Exception:
        """A refusal by the proxy itself (no SQLSTATE): a wrong password, a bad string, a size limit."""
        message = self._redact(err.message or f"HTTP {err.status}")
        if err.status in (413, 507):
            limit = "request" if err.status == 413 else "result"
            error: Exception = ConfigurationError(
                f"Neon's HTTP endpoint refused the {limit}: {message}. Over HTTP a {limit} is limited "
                "(10 MiB on Neon); read a large result over TCP (connect(..., transport=\"tcp\")), "
                "or select fewer rows or columns.")
        elif err.status == 400:
            hint = " Check the password in the URL." if "password" in message else ""
            error = PermanentConnectError(f"Neon's HTTP endpoint refused the connection: {message}.{hint}")
        else:
            error = ConnectError(f"Neon's HTTP endpoint answered HTTP {err.status}: {message}")
        self._resources.set_state(ComputeState.ERROR, str(error))
        return error

    def _catalog_lookup(self, direct: bool) -> Callable[[list[int]], list[tuple]]:
        """Asks ``pg_type`` over HTTP about OIDs the registry does not know (enums, domains, extensions)."""
        from .readers._catalog import CATALOG_QUERY

        def lookup(oids: list[int]) -> list[tuple]:
            missing = [o for o in oids if o not in self._catalog]
            if missing:
                exchange = self._exchange(CATALOG_QUERY.format("%s"), [missing], direct, read=True)
                for row in exchange.results[-1].rows:
                    oid, name, typtype, base, basemod, elem, category, delim = row
                    self._catalog[int(oid)] = (int(oid), name, typtype, int(base), int(basemod), int(elem),
                                               category, delim)
            return [self._catalog[o] for o in oids if o in self._catalog]

        return lookup

    def _table(self, sql: str, params: Any, direct: bool, progress: ProgressArg, views: bool = False) -> pa.Table:
        from .http._arrow import to_table
        from .readers._output import check_output

        started = time.monotonic()
        with _progress(progress) as shown:
            exchange = self._exchange(sql, params, direct, read=True)
            index = _rows_index(exchange)
            if index is None:
                table = _empty()
            else:
                def check(columns: list) -> None:
                    check_output(exchange.text, columns, exchange.settings, index, len(exchange.results))

                table = to_table(exchange.results[index], exchange.settings, self._catalog_lookup(direct),
                                 views=views, check=check)
            if shown is not None:
                shown(table.num_rows, exchange.bytes, None)
        self.last_query = QueryStats(table.num_rows, exchange.bytes, time.monotonic() - started)
        return table

    # -- reads -------------------------------------------------------------------------
    def read_arrow(self, sql: str, params: Any = None, *, direct: bool = False,
                   progress: ProgressArg = "auto", copy_format: str = "binary") -> pa.Table:
        """The whole result as a ``pyarrow.Table``, in the COPY path's exact types (``copy_format`` is moot)."""
        return self._table(sql, params, direct, progress)

    def read_pandas(self, sql: str, params: Any = None, *, direct: bool = False,
                    dtype_backend: str = "numpy_nullable", progress: ProgressArg = "auto",
                    copy_format: str = "binary") -> pd.DataFrame:
        """The whole result as a ``pandas.DataFrame``, as the TCP session gives it."""
        from .readers._frames import to_pandas

        return to_pandas(self._table(sql, params, direct, progress), dtype_backend)

    def read_polars(self, sql: str, params: Any = None, *, direct: bool = False,
                    progress: ProgressArg = "auto", copy_format: str = "binary") -> pl.DataFrame:
        """The whole result as a ``polars.DataFrame``, as the TCP session gives it."""
        from .readers._frames import to_polars

        return to_polars(self._table(sql, params, direct, progress))

    def iter_batches(self, sql: str, params: Any = None, *, batch_rows: int | None = None,
                     direct: bool = False, progress: ProgressArg = "auto",
                     copy_format: str = "binary") -> Generator[pa.RecordBatch, None, pa.Schema]:
        """The result in record batches of at most ``batch_rows`` (one HTTP answer, sliced)."""
        table = self._table(sql, params, direct, progress)
        size = batch_rows or 100_000
        for batch in table.to_batches(max_chunksize=size):
            yield batch
        return table.schema

    def to_parquet(self, sql: str, path: str | os.PathLike[str], params: Any = None, *,
                   direct: bool = False, progress: ProgressArg = "auto", batch_rows: int | None = None,
                   compression: str = "zstd", copy_format: str = "binary") -> int:
        """The result written to a Parquet file (it appears only when complete); returns the row count.

        ``batch_rows`` sizes the file's row groups; ``copy_format`` is moot over HTTP.
        """
        from . import readers
        from .readers._frames import for_parquet

        target = readers.parquet_target(path)  # before the request: a bad path costs no wake-up
        table = for_parquet(self._table(sql, params, direct, progress))
        _write_parquet(table, target, compression, batch_rows)
        return table.num_rows

    # -- statements --------------------------------------------------------------------
    def execute(self, sql: str, params: Any = None, *, direct: bool = False) -> int:
        """Run a statement over HTTP (parameters bound, never pasted); its row count, -1 when it has none.

        One request, one transaction; never re-sent once it may have run.
        """
        started = time.monotonic()
        exchange = self._exchange(sql, params, direct, read=False)
        last = exchange.results[-1] if exchange.results else None
        count = last.row_count if last is not None and last.row_count is not None else -1
        self.last_query = QueryStats(max(count, 0), exchange.bytes, time.monotonic() - started,
                                     write=f"execute ({max(count, 0)} rows)")
        return count

    # -- warm-up -------------------------------------------------------------------------
    def _warm(self, role: str) -> WarmUpReport:
        was = self.state
        started = time.monotonic()
        exchange = self._exchange("SHOW server_version", None, role == "direct", read=True)
        elapsed = time.monotonic() - started
        ping_started = time.perf_counter()
        self._exchange("SELECT 1", None, role == "direct", read=True)
        ping = time.perf_counter() - ping_started
        self.last_ping = ping
        version = exchange.results[-1].rows[0][0] if exchange.results and exchange.results[-1].rows else ""
        return WarmUpReport(f"{summary(self._endpoint(role))} over HTTP", exchange.attempts, elapsed, ping,
                            version or "", was is not ComputeState.ACTIVE)

    def _ping_for_keep_warm(self) -> None:
        try:
            self._exchange("SELECT 1", None, False, read=True)
        except Exception as exc:
            log.warning("keep-warm ping failed: %s", self._redact(str(exc)))

    def __repr__(self) -> str:
        return f"<Session over HTTP {self._endpoints()} state={self.state}>"


def _rows_index(exchange: Exchange) -> int | None:
    """Which statement's rows a read returns: the last that returns rows (as the TCP row path), else None."""
    for i in range(len(exchange.results) - 1, -1, -1):
        result = exchange.results[i]
        if result.fields or result.command in ("SELECT", "FETCH", "SHOW"):
            return i
    return None


def _empty() -> pa.Table:
    import pyarrow as pa

    return pa.table({})


def _write_parquet(table: pa.Table, target: str, compression: str, batch_rows: int | None) -> None:
    """``table`` into ``target``, through ``target.partial`` renamed when complete (as the TCP path)."""
    import os

    import pyarrow.parquet as pq

    partial = f"{target}.partial"
    try:
        pq.write_table(table, partial, compression=compression, row_group_size=batch_rows)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
