"""``Session``: a notebook's handle on one Neon database, its two pools and its state.

The session opens nothing until asked. Queries go to the pooled endpoint
(``connection()``), DDL and session work to the direct one (``direct()``).
Connecting rides out cold starts (see ``retry``); reads cut by a suspension
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
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, TypeVar, Union

import psycopg

from ._connection import open_connection
from ._durations import is_seconds
from .errors import ConfigurationError, ConnectError, NeonError, ResultInterrupted
from ._pool import Pool
from ._retry import Attempts, Verdict, classify
from ._config import Endpoint, Settings, redact, resolve, summary
from ._state import ComputeState, StateChange, StateTracker
from ._status import Endpoints, EndpointSummary, PoolStats, QueryStats, Status

if TYPE_CHECKING:
    import os

    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from .readers import CopyFormat

log = logging.getLogger("neon_notebook")
T = TypeVar("T")
Progress = Callable[[int, int, "int | None"], object]
#: ``progress=`` of the reads: a callback, or whether to draw a bar ("auto": in a
#: notebook or on a terminal, not in a plain script).
ProgressArg = Union[Progress, bool, str, None]

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
        _check_suspend_after(suspend_after)
        self.settings = settings
        self.suspend_after = suspend_after
        self._tracker = StateTracker(suspend_after)
        # Retire idle connections before the compute's suspend window ends,
        # so a connection killed by a suspension is never handed out.
        max_idle = None if suspend_after is None else max(1.0, suspend_after * 0.8)
        # The pools and the finalizer hold the session only weakly, so that an
        # unreferenced session is collected and its connections closed.
        ref = weakref.ref(self)
        self._pools: dict[str, Pool] = {}
        for role in ("pooled", "direct"):
            endpoint = self._endpoint(role)
            self._pools[role] = Pool(role, _connector(ref, endpoint), max_size=settings.pool_size,
                                     timeout=settings.pool_timeout, max_idle=max_idle,
                                     on_dead=lambda exc: _call_alive(ref, Session._connection_lost, exc))
        self.last_ping: float | None = None
        self.last_query: QueryStats | None = None
        self.last_error: str | None = None
        self._keep_warm: threading.Event | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_pools, list(self._pools.values()), self._tracker)

    # -- endpoints and state -------------------------------------------------
    def _endpoint(self, role: str) -> Endpoint:
        endpoint = getattr(self.settings, role) or self.settings.direct or self.settings.pooled
        assert endpoint is not None
        return endpoint

    @property
    def state(self) -> ComputeState:
        """What the session last saw of the compute (no query is sent to find out)."""
        return self._tracker.state

    @property
    def state_detail(self) -> str | None:
        return self._tracker.detail

    def observe(self, observer: Callable[[StateChange], None]) -> Callable[[], None]:
        """Call ``observer(change)`` on every state change, from any thread; returns an unsubscribe."""
        return self._tracker.observe(observer)

    def _set_state(self, state: ComputeState, detail: str | None = None) -> None:
        """Record what was seen; a success clears ``last_error``; a closed session stays closed."""
        if self._closed:
            return
        if state is ComputeState.ERROR:
            self.last_error = detail
        elif state is ComputeState.ACTIVE:
            self.last_error = None
        self._tracker.set(state, detail)

    def _open(self, endpoint: Endpoint) -> psycopg.Connection:
        """A new connection to ``endpoint``, the state following the attempts."""
        attempts = Attempts()
        was = self.state

        def on_attempt(n: int) -> None:
            if n == 1 and self.state is not ComputeState.ACTIVE:
                self._set_state(ComputeState.WAKING, f"connecting to {summary(endpoint)}")

        def on_retry(n: int, exc: BaseException, verdict: Verdict, delay: float) -> None:
            log.info("attempt %d to %s failed (%s); retrying in %.2f s", n, summary(endpoint),
                     verdict.reason, delay)
            self._set_state(ComputeState.WAKING, verdict.reason)

        try:
            conn = open_connection(endpoint, self.settings, on_attempt=on_attempt,
                                   on_retry=on_retry, attempts=attempts)
        except ConnectError as exc:
            self._set_state(ComputeState.ERROR, str(exc))
            raise
        except BaseException as exc:  # Ctrl-C, or a bug: we no longer know what the compute does
            if self.state is ComputeState.WAKING:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
                self._set_state(ComputeState.UNKNOWN, f"the connection attempt was {why}")
            raise
        conn._nn_attempts = attempts  # read by warm_up
        conn._nn_woke = was is not ComputeState.ACTIVE
        self._set_state(ComputeState.ACTIVE)
        return conn

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
        if self._closed:
            raise NeonError("this session is closed; make a new one with neon_notebook.connect()")
        with self._pools[role].connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if conn.broken:
                    self._connection_lost(exc)
                raise
            else:
                if conn.broken:  # lost once the work was done (a read's COMMIT answer, when it wrote nothing)
                    message = conn.pgconn.error_message.decode(errors="replace").strip()
                    self._connection_lost(psycopg.OperationalError(message or "the connection to server was lost"))
                else:
                    self._set_state(ComputeState.ACTIVE)

    def _connection_lost(self, exc: BaseException) -> None:
        """A connection died under us: a transient cause means the compute suspended."""
        verdict = classify(exc)
        if verdict.transient:
            self._set_state(ComputeState.SUSPENDED, verdict.reason)

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

        for attempt in (1, 2):
            tracker = _Tracker(progress)
            started = time.perf_counter()
            lost, stream = False, None
            try:
                with self._borrow(role) as conn:
                    stream = readers.iter_batches(conn, sql, params, progress=tracker, **options)
                    try:
                        with stream:
                            yield from stream
                    except psycopg.OperationalError as exc:
                        lost = _lost(conn, exc)
                        raise
            except psycopg.OperationalError as exc:
                _retry_or_raise(exc, attempt, lost, stream.rows_delivered if stream else 0)
                continue
            self.last_query = QueryStats(stream.rows, stream.bytes, time.perf_counter() - started)
            return stream.schema

    def _read(self, run: Callable[[psycopg.Connection, Progress], T], direct: bool,
              progress: ProgressArg, count: Callable[[T], int]) -> T:
        """Run a whole read, retried once if the connection is lost before it completes.

        Nothing reaches the caller before a whole read completes, so the retry
        can never duplicate or drop rows.
        """
        with _progress(progress) as shown:
            return self._read_once_or_twice(run, "direct" if direct else "pooled", shown, count)

    def _read_once_or_twice(self, run: Callable[[psycopg.Connection, Progress], T], role: str,
                            progress: Progress | None, count: Callable[[T], int]) -> T:
        for attempt in (1, 2):
            tracker = _Tracker(progress)
            started = time.perf_counter()
            lost = False
            try:
                with self._borrow(role) as conn:
                    try:
                        result = run(conn, tracker)
                    except psycopg.OperationalError as exc:
                        lost = _lost(conn, exc)
                        raise
            except psycopg.OperationalError as exc:
                _retry_or_raise(exc, attempt, lost, rows_delivered=0)
                continue
            self.last_query = QueryStats(count(result), tracker.bytes, time.perf_counter() - started)
            return result
        raise AssertionError("unreachable")

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
        if self._keep_warm is not None:
            self._keep_warm.set()
            self._keep_warm = None
        if minutes == 0:
            return
        stop = threading.Event()
        self._keep_warm = stop
        until = time.monotonic() + minutes * 60
        # Ping well inside the suspend window (a third of it, at most once a minute).
        interval = 60.0 if self.suspend_after is None else max(0.1, min(60.0, self.suspend_after / 3))
        ref = weakref.ref(self)  # a forgotten session stops warming and can be collected

        def run() -> None:
            while not stop.wait(min(interval, max(0.0, until - time.monotonic()))):
                if time.monotonic() >= until or _call_alive(ref, Session._ping_for_keep_warm) is None:
                    return

        threading.Thread(target=run, name="neon-keep-warm", daemon=True).start()

    def _ping_for_keep_warm(self) -> bool:
        """One keep-warm ping; a failure is logged, and the pinging goes on until the time is up."""
        try:
            with self._borrow("pooled") as conn:
                conn.execute("")
        except Exception as exc:
            log.warning("keep-warm ping failed: %s", self._redact(str(exc)))
        return True

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
        return self._closed

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Per pool: its size, connections in use, idle connections."""
        return {role: {"size": p.max_size, "in_use": p.in_use, "idle": p.idle}
                for role, p in self._pools.items()}

    def close(self) -> None:
        """Close both pools (borrowed connections close when returned); idempotent."""
        if self._closed:
            return
        self.keep_warm(0)
        self._closed = True
        # Final: we no longer watch the compute, and a read still running cannot change it.
        self._tracker.close(ComputeState.UNKNOWN, "session closed")
        self._finalizer()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self._endpoints()} state={self.state}>"


class _Tracker:
    """Progress callback wrapper that remembers the last counts, for ``last_query``."""

    def __init__(self, inner: Progress | None) -> None:
        self.inner, self.rows, self.bytes = inner, 0, 0

    def __call__(self, rows: int, nbytes: int, estimate: int | None) -> None:
        self.rows, self.bytes = rows, nbytes
        if self.inner is not None:
            self.inner(rows, nbytes, estimate)


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


def _connector(ref: weakref.ReferenceType[Session], endpoint: Endpoint) -> Callable[[], psycopg.Connection]:
    """The pool's ``connect``: opens through the session, which it holds only weakly."""
    def connect() -> psycopg.Connection:
        conn = _call_alive(ref, Session._open, endpoint)
        if conn is None:
            raise ConnectError("this session was garbage-collected; make a new one with neon_notebook.connect()")
        return conn

    return connect


def _call_alive(ref: weakref.ReferenceType[Session], method: Callable[..., T], *args: Any) -> T | None:
    """``method(session, *args)`` if the session still exists, else None (nothing is pinned meanwhile)."""
    session = ref()
    return None if session is None else method(session, *args)


@contextmanager
def _progress(progress: ProgressArg) -> Iterator[Progress | None]:
    """The callback to hand the readers: the user's, or a progress bar closed with the read.

    A bad ``progress`` is refused here, before the read connects. A bar is a view: the third
    and last lazy touch of ``ui/``, as ``"auto"`` is the reads' default and no caller above chooses.
    """
    _check_progress(progress)
    if progress is None or progress is False or callable(progress):
        yield progress or None
        return
    from .ui.progress import progress_bar

    with progress_bar(progress) as bar:  # turns red on errors and interrupts
        yield bar


def _retry_or_raise(exc: psycopg.OperationalError, attempt: int, lost: bool, rows_delivered: int) -> None:
    """Return when a read cut by ``exc`` may run again (once, only if nothing was delivered or committed)."""
    from .readers import CommitUncertain

    if not lost or isinstance(exc, CommitUncertain):
        raise exc
    if rows_delivered:
        raise ResultInterrupted(
            f"The connection was lost after {rows_delivered:,} rows had been delivered "
            f"({classify(exc).reason}); the result is incomplete. Run the read again.",
            rows=rows_delivered) from exc
    if attempt == 2:
        raise exc
    log.info("read interrupted before any row arrived (%s); retrying once", classify(exc).reason)


def _lost(conn: psycopg.Connection, exc: BaseException) -> bool:
    """Whether ``exc`` means the connection itself died (suspension, crash, network)."""
    return (conn.broken or conn.closed) and classify(exc).transient


def _close_pools(pools: list[Pool], tracker: StateTracker) -> None:
    tracker.close()
    for pool in pools:
        pool.close()


def connect(url: str | None = None, *, direct_url: str | None = None, schema: str | None = None,
            connect_timeout: float | None = None, wake_timeout: float | None = None,
            pool_size: int | None = None, pool_timeout: float | None = None,
            statement_timeout: float | None = None, suspend_after: float | None = NEON_SUSPEND_AFTER,
            **resolve_kwargs: Any) -> Session:
    """A ``Session`` for a Neon database; nothing is opened until first use.

    With no ``url``, ``DATABASE_URL`` and ``DIRECT_URL`` come from the
    environment or a ``.env`` file, as Prisma reads them. ``suspend_after`` is
    the compute's suspend window (Neon's default 300 s; ``None`` if disabled).
    """
    settings = resolve(url, direct_url=direct_url, schema=schema, connect_timeout=connect_timeout,
                       wake_timeout=wake_timeout, pool_size=pool_size, pool_timeout=pool_timeout,
                       statement_timeout=statement_timeout, **resolve_kwargs)
    return Session(settings, suspend_after=suspend_after)
