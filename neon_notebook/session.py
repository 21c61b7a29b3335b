"""``Session``: a notebook's handle on one Neon database, its two pools and its state.

The session opens nothing until asked. Queries go to the pooled endpoint
(``connection()``), DDL and session work to the direct one (``direct()``).
Connecting rides out cold starts (see ``_retry``); reads cut by a suspension
before any row reached the caller are retried once; writes never are.
It never pings, refills or keeps a compute awake on its own: an idle
notebook lets its compute suspend — except for ``keep_warm(minutes)``, which the
user asks for and which ends by itself.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, Literal, Sequence, TypeVar, Union

from ._config import Settings
from ._durations import is_seconds
from ._endpoint import Endpoint, summary
from ._redact import redact
from ._state import ComputeState, StateChange
from .errors import ConfigurationError
from ._status import Endpoints, EndpointSummary, PoolStats, QueryStats, Status

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

    import pandas as pd
    import polars as pl
    import psycopg
    import pyarrow as pa

    from ._read_attempt import Progress, ReadAttempt
    from ._retry import Attempts
    from .readers import CopyFormat

log = logging.getLogger("neon_notebook")
T = TypeVar("T")
#: ``progress=`` of the reads: a callback, or whether to draw a bar ("auto": in a
#: notebook or on a terminal, not in a plain script).
ProgressArg = Union["Progress", bool, str, None]
#: ``mode=`` of ``write``.
WriteMode = Literal["create", "append", "replace", "upsert"]


#: Neon's default: a compute suspends after 5 minutes without activity.
NEON_SUSPEND_AFTER = 300.0


@dataclass(frozen=True)
class WarmUpReport:
    """What a warm-up took: attempts, seconds to the first answer, one ping's latency."""

    endpoint: str  # summary of the endpoint warmed (no password)
    attempts: int
    elapsed: float  # seconds from the first attempt to the first answer
    ping: float  # seconds for one round trip once connected
    server_version: str
    woke: bool  # True when the compute was not known to be awake before

    def __str__(self) -> str:
        return (f"{self.endpoint}: answered after {self.elapsed:.2f} s in {self.attempts} "
                f"attempt{'s' if self.attempts != 1 else ''}; ping {self.ping * 1e3:.1f} ms; "
                f"PostgreSQL {self.server_version}")


class Session:
    """Pooled and direct connections to one database, with cold-start handling."""

    def __init__(self, settings: Settings, *, suspend_after: float | None = NEON_SUSPEND_AFTER) -> None:
        from ._resources import Resources

        _check_suspend_after(suspend_after)
        self.settings = settings
        self.suspend_after = suspend_after
        # The pools' callbacks and the finalizer hold these, never the session, so
        # that an unreferenced session is collected and its connections closed.
        self._resources = Resources(settings, suspend_after)
        self._started()

    def _started(self) -> None:
        self.last_ping: float | None = None
        self.last_query: QueryStats | None = None
        self._finalizer = weakref.finalize(self, self._resources.close)

    # -- endpoints and state -------------------------------------------------
    def _endpoint(self, role: str) -> Endpoint:
        return self._resources.endpoint(role)

    @property
    def state(self) -> ComputeState:
        """What the session last saw of the compute (no query is sent to find out)."""
        return self._resources.tracker.state

    @property
    def state_detail(self) -> str | None:
        return self._resources.tracker.detail

    @property
    def last_error(self) -> str | None:
        """The last failure's message (password masked), cleared by the next success."""
        return self._resources.last_error

    def observe(self, observer: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``observer(change)`` on every state change, from any thread; returns an unsubscribe."""
        return self._resources.tracker.observe(observer)

    # -- connections ---------------------------------------------------------
    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection to the pooled endpoint; committed at exit, rolled back on error."""
        with self._borrow("pooled") as conn:
            yield conn

    @contextmanager
    def direct(self) -> Iterator[psycopg.Connection]:
        """A connection to the direct endpoint, for DDL, migrations and session state."""
        with self._borrow("direct") as conn:
            yield conn

    @contextmanager
    def _borrow(self, role: str) -> Iterator[psycopg.Connection]:
        import psycopg

        from ._translate import closed_error, connection_lost

        resources = self._resources
        if resources.closed:
            raise closed_error()
        with resources.pools[role].connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if conn.broken:
                    resources.connection_lost(exc)
                raise
            else:
                if conn.broken:  # lost once the work was done (a read's COMMIT answer, when it wrote nothing)
                    resources.connection_lost(connection_lost(conn.pgconn))
                else:
                    resources.set_state(ComputeState.ACTIVE)

    # -- reads ---------------------------------------------------------------
    def read_arrow(self, sql: str, params: Any = None, *, direct: bool = False,
                   progress: ProgressArg = "auto", copy_format: CopyFormat = "binary") -> pa.Table:
        """The whole result as a ``pyarrow.Table``, streamed with COPY, exact types.

        ``copy_format="text"`` moves fewer bytes for tables of small integers
        and short strings, which can pay over a slow link; the types are the same.
        """
        from . import readers

        return self._read(lambda conn, p: readers.read_arrow(conn, sql, params, progress=p,
                                                             copy_format=copy_format),
                          direct, progress, lambda t: t.num_rows)

    def read_pandas(self, sql: str, params: Any = None, *, direct: bool = False,
                    dtype_backend: str = "numpy_nullable", progress: ProgressArg = "auto",
                    copy_format: CopyFormat = "binary") -> pd.DataFrame:
        """The whole result as a ``pandas.DataFrame`` (``dtype_backend``: numpy_nullable or pyarrow)."""
        from . import readers

        return self._read(lambda conn, p: readers.read_pandas(conn, sql, params, dtype_backend=dtype_backend,
                                                              progress=p, copy_format=copy_format),
                          direct, progress, len)

    def read_polars(self, sql: str, params: Any = None, *, direct: bool = False,
                    progress: ProgressArg = "auto", copy_format: CopyFormat = "binary") -> pl.DataFrame:
        """The whole result as a ``polars.DataFrame``, zero-copy from Arrow where possible."""
        from . import readers

        return self._read(lambda conn, p: readers.read_polars(conn, sql, params, progress=p,
                                                              copy_format=copy_format),
                          direct, progress, len)

    def to_parquet(self, sql: str, path: str | os.PathLike[str], params: Any = None, *,
                   direct: bool = False, progress: ProgressArg = "auto", **options: Any) -> int:
        """Stream the result into a Parquet file in bounded memory; returns the row count.

        The file appears only when complete, so an interrupted read leaves none.
        ``options``: ``batch_rows``, ``compression``, ``copy_format``, as in
        ``neon_notebook.readers.to_parquet``.
        """
        from . import readers

        path = readers.parquet_target(path)  # before connecting: a bad path costs no wake-up
        return self._read(lambda conn, p: readers.to_parquet(conn, sql, path, params, progress=p, **options),
                          direct, progress, lambda rows: rows)

    def iter_batches(self, sql: str, params: Any = None, *, batch_rows: int | None = None,
                     direct: bool = False, progress: ProgressArg = "auto",
                     copy_format: CopyFormat = "binary") -> Generator[pa.RecordBatch, None, pa.Schema]:
        """Arrow record batches as they arrive, in memory bounded by ``batch_rows``.

        Stopping early (``close()`` or leaving the loop) cancels the query. If the
        connection is lost before the first batch, the read is retried once;
        after that, ``ResultInterrupted`` says how many rows arrived. An empty
        result yields no batch; the generator returns the result's schema
        (``StopIteration.value``), so a caller can still show its columns.
        """
        options: dict[str, Any] = {"copy_format": copy_format}
        if batch_rows is not None:
            options["batch_rows"] = batch_rows
        role = "direct" if direct else "pooled"
        with _progress(progress) as shown:
            return (yield from self._batches(sql, params, role, shown, options))

    def _batches(self, sql: str, params: Any, role: str, progress: Progress | None,
                 options: dict[str, Any]) -> Generator[pa.RecordBatch, None, pa.Schema]:
        from . import readers

        for attempt in self._attempts(role, progress):
            with attempt.connection() as conn:
                stream = readers.iter_batches(conn, sql, params, progress=attempt.tracker, **options)
                with stream:
                    for batch in stream:
                        attempt.rows_delivered += batch.num_rows
                        yield batch
            if not attempt.retry:
                self.last_query = QueryStats(stream.rows, stream.bytes, attempt.seconds())
                return stream.schema
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _read(self, run: Callable[[psycopg.Connection, Progress], T], direct: bool,
              progress: ProgressArg, count: Callable[[T], int]) -> T:
        """Run a whole read, retried once if the connection is lost before it completes.

        Nothing reaches the caller before a whole read completes, so the retry
        can never duplicate or drop rows.
        """
        with _progress(progress) as shown:
            for attempt in self._attempts("direct" if direct else "pooled", shown):
                with attempt.connection() as conn:
                    result = run(conn, attempt.tracker)
                if not attempt.retry:
                    self.last_query = QueryStats(count(result), attempt.tracker.bytes, attempt.seconds())
                    return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempts(self, role: str, progress: Progress | None) -> Iterator[ReadAttempt]:
        """The one "retry the read once": a first attempt, and a second only when the first
        lost its connection before any row reached the caller and nothing may have committed."""
        from ._read_attempt import ReadAttempt

        for number in (1, 2):
            attempt = ReadAttempt(lambda: self._borrow(role), progress, last=number == 2)
            yield attempt
            if not attempt.retry:
                return

    # -- statements ------------------------------------------------------------
    def execute(self, sql: str, params: Any = None, *, direct: bool = False) -> int:
        """Run a statement (parameters bound, never pasted) and return its row count; -1 when it has none.

        With several statements, the count is the last one's.

        It runs once, in its own transaction (committed when it succeeds), on the
        pooled endpoint, or the direct one with ``direct=True``; a connection lost
        mid-statement is never retried: the statement may have run.
        """
        started = time.monotonic()
        with self._borrow("direct" if direct else "pooled") as conn:
            count = _execute(conn, sql, params)
        self.last_query = QueryStats(max(count, 0), 0, time.monotonic() - started,
                                     write=f"execute ({max(count, 0)} rows)")
        return count

    # -- writes --------------------------------------------------------------
    def write(self, data: Any, table: str | tuple[str, str], *, mode: WriteMode = "append",
              key: str | Sequence[str] | None = None, direct: bool = False,
              progress: ProgressArg = "auto") -> int:
        """Write ``data`` into ``table`` with binary COPY, in one transaction; returns the rows written.

        ``data``: a pandas or polars DataFrame, a pyarrow Table or RecordBatchReader,
        an iterable of record batches (``iter_batches`` of another query) or a
        Parquet file's path. ``table``: ``"name"`` or ``"schema.name"``.
        ``mode``: ``"append"`` (creates a missing table), ``"create"`` (the table
        must not exist), ``"replace"`` (definition and rows, atomically) or
        ``"upsert"`` (``key=`` columns: new keys inserted, existing ones updated).
        ``key`` also becomes the primary key of a table the write creates.
        Either every row is written or none; a write is re-run only when it
        provably did not commit (see ``WRITE_TYPES.md`` for the types).
        """
        from . import writers

        source = writers.source(data)  # bad data is refused before anything connects
        role = "direct" if direct else "pooled"
        with _progress(progress, kind="write") as shown:
            written = writers.write(lambda: self._borrow(role), source, table, mode=mode, key=key,
                                    progress=shown)
        self.last_query = QueryStats(written.rows, written.bytes, written.seconds,
                                     write=f"{written.mode} into {written.table}")
        return written.rows

    # -- warm-up -------------------------------------------------------------
    def warm_up(self, background: bool = False, *, direct: bool = False) -> WarmUpReport | Future:
        """Wake the compute and wait until it answers; returns what it took.

        ``background=True`` returns a ``concurrent.futures.Future`` at once, so the
        next cell finds the compute awake. ``direct=True`` warms the direct
        endpoint instead of the pooled one (both reach the same compute).
        """
        role = "direct" if direct else "pooled"
        if not background:
            return self._warm(role)
        future: Future = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._warm(role))
                except BaseException as exc:
                    future.set_exception(exc)

        threading.Thread(target=run, name="neon-warm-up", daemon=True).start()
        return future

    def _warm(self, role: str) -> WarmUpReport:
        started = time.monotonic()
        with self._borrow(role) as conn:
            attempts: Attempts | None = getattr(conn, "_nn_attempts", None)
            woke = getattr(conn, "_nn_woke", False)
            conn._nn_attempts = None  # a reused connection reports 0 attempts next time
            elapsed = time.monotonic() - started
            ping_started = time.perf_counter()
            conn.execute("")
            ping = time.perf_counter() - ping_started
            version = conn.info.parameter_status("server_version") or ""
        self.last_ping = ping
        return WarmUpReport(summary(self._endpoint(role)), attempts.count if attempts else 0,
                            elapsed, ping, version, woke)

    def keep_warm(self, minutes: float) -> None:
        """Keep the compute awake for ``minutes`` (billed!), then let it suspend; 0 stops now.

        It pings every third of ``suspend_after`` (at least every minute, at
        most ten times a second); ``minutes`` must be a finite number >= 0.
        """
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
            raise TypeError(f"keep_warm(minutes) takes a number of minutes, got {minutes!r}.")
        if not is_seconds(minutes):
            raise ConfigurationError(
                f"keep_warm(minutes) needs a finite number of minutes >= 0 (0 stops), got {minutes!r}.")
        self._resources.stop_keep_warm()
        if minutes == 0:
            return
        stop = self._resources.keep_warm = threading.Event()  # set by close(), or when collected
        until = time.monotonic() + minutes * 60
        # Ping well inside the suspend window (a third of it, at most once a minute).
        interval = 60.0 if self.suspend_after is None else max(0.1, min(60.0, self.suspend_after / 3))
        ref = weakref.ref(self)  # a forgotten session stops warming and can be collected

        def run() -> None:
            while not stop.wait(min(interval, max(0.0, until - time.monotonic()))):
                session = ref()
                if time.monotonic() >= until or session is None:
                    return
                session._ping_for_keep_warm()
                del session  # held only while it pings

        threading.Thread(target=run, name="neon-keep-warm", daemon=True).start()

    def _ping_for_keep_warm(self) -> None:
        """One keep-warm ping; a failure is logged, and the pinging goes on until the time is up."""
        try:
            with self._borrow("pooled") as conn:
                conn.execute("")
        except Exception as exc:
            log.warning("keep-warm ping failed: %s", self._redact(str(exc)))

    # -- status and display ------------------------------------------------------
    def status(self) -> Status:
        """A frozen snapshot for the views (state, endpoints, ping, pools, last query and error), masked."""
        def masked(text: str | None) -> str | None:
            return None if text is None else self._redact(text)

        return Status(state=self.state, endpoints=self._endpoints(), detail=masked(self.state_detail),
                      ping=self.last_ping,
                      pools=tuple(PoolStats(role, **stats) for role, stats in self.pool_stats().items()),
                      last_query=self.last_query, last_error=masked(self.last_error), closed=self.closed)

    def _endpoints(self) -> Endpoints:
        pooled, direct = (EndpointSummary.of(self._endpoint(role), self._redact) for role in ("pooled", "direct"))
        return Endpoints(pooled, direct)

    def _redact(self, text: str) -> str:
        """``text`` with the session's secrets as ``****``: the one place that knows them, for the
        snapshot and for what the views show beside it (errors, warnings, a warm-up's report)."""
        return redact(text, *(s for role in ("pooled", "direct") for s in self._endpoint(role).secrets))

    # The model touches the views only here and in ``_progress`` (a read's bar), each
    # with a lazy import when asked for: the model never reads a view.
    def widget(self) -> Any:
        """A live status panel (ipywidgets) for this session; ``close()`` it to stop its updates."""
        from .ui.widgets import status_widget

        return status_widget(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        """In Jupyter: the live status panel with its ``text/plain`` twin; elsewhere: the text."""
        from .ui.widgets import repr_mimebundle

        return repr_mimebundle(self)

    # -- housekeeping ----------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._resources.closed

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Per pool: its size, connections in use, idle connections."""
        return {role: {"size": p.max_size, "in_use": p.in_use, "idle": p.idle}
                for role, p in self._resources.pools.items()}

    def close(self) -> None:
        """Close both pools (borrowed connections close when returned); idempotent."""
        resources = self._resources
        if resources.closed:
            return
        resources.stop_keep_warm()
        resources.closed = True
        # Final: we no longer watch the compute, and a read still running cannot change it.
        resources.tracker.close(ComputeState.UNKNOWN, "session closed")
        self._finalizer()  # resources.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self._endpoints()} state={self.state}>"


def _execute(conn: psycopg.Connection, sql: str, params: Any) -> int:
    """The statement's row count; one that refuses a transaction block (VACUUM...) runs in autocommit."""
    import psycopg

    try:
        return _last_count(conn.execute(sql, params))
    except psycopg.errors.ActiveSqlTransaction:
        conn.rollback()  # nothing ran: PostgreSQL refused it before it began
    conn.autocommit = True  # refused, with what to do, on a pooled connection with SET LOCAL settings
    try:
        return _last_count(conn.execute(sql, params))
    finally:
        if not conn.closed:
            conn.autocommit = False


def _last_count(cur: psycopg.Cursor) -> int:
    """The row count of the text's last statement (psycopg's cursor stands on the first)."""
    while cur.nextset():
        pass
    return cur.rowcount


def _check_progress(progress: object) -> None:
    """Refuse a ``progress=`` that is not True, False, None, "auto" or a callable."""
    if progress is None or isinstance(progress, bool) or progress == "auto" or callable(progress):
        return
    message = f'progress= takes True, False, None, "auto" or a callable(rows, bytes, estimate), got {progress!r}.'
    raise ConfigurationError(message) if isinstance(progress, str) else TypeError(message)


def _check_suspend_after(value: object) -> None:
    """``suspend_after``: None (the compute never suspends) or a finite number of seconds > 0."""
    if value is None:
        return
    if not is_seconds(value, positive=True):
        raise ConfigurationError(
            f"suspend_after must be the compute's suspend window in seconds (more than 0), or None "
            f"if it never suspends; got {value!r}.")


@contextmanager
def _progress(progress: ProgressArg, kind: Literal["read", "write"] = "read") -> Iterator[Progress | None]:
    """The callback to hand the readers: the user's, or a progress bar closed with the read.

    A bad ``progress`` is refused here, before the read connects. A bar is a view: the third
    and last lazy touch of ``ui/``, as ``"auto"`` is the reads' default and no caller above chooses.
    """
    _check_progress(progress)
    if progress is None or progress is False or callable(progress):
        yield progress or None
        return
    from .ui.progress import progress_bar

    with progress_bar(progress, kind=kind) as bar:  # turns red on errors and interrupts
        # Nothing to draw on ("auto" in a plain script): no callback, so a read asks for no
        # row estimate (an EXPLAIN, one more round trip).
        yield bar if bar.view is not None else None
