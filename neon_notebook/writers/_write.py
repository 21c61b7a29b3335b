"""One write, all or nothing and never twice: the transaction, its COMMIT, and the one retry.

A write is one transaction on one connection: its transaction id first
(``pg_current_xact_id()``), then the plan's statements and the COPY, then
COMMIT. If the connection is lost:

- before COMMIT was sent, the transaction cannot have committed: PostgreSQL
  rolls it back when the connection goes, so nothing stays;
- during COMMIT, the outcome is unknown. Another connection asks
  ``pg_xact_status(xid)``; a transaction still "in progress" (its backend has
  not yet noticed its client is gone) is ended with ``pg_terminate_backend``,
  which cannot undo a commit that happened, then asked again. Committed: the
  write is done. Aborted: it provably did not commit. Unknown (the compute
  cannot be reached): :class:`~neon_notebook.errors.CommitUncertain`, with the
  transaction id to check by hand.

A write that provably did not commit runs once more when its data can be read
again (a frame, a table, a file); a stream already consumed cannot, and the
error says so. Nothing is retried that might have committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .._translate import classify, lost
from ..errors import CommitUncertain, ConfigurationError, WriteInterrupted
from . import _plan, _table
from ._encode import Encoder
from ._input import Source
from ._send import copy_in

log = logging.getLogger("neon_notebook")

Borrow = Callable[[], AbstractContextManager[psycopg.Connection]]
#: ``progress(rows, bytes, total rows or None)``, as the readers report it.
Progress = Callable[[int, int, "int | None"], object]

#: How long a transaction whose client is gone may stay "in progress" before it is terminated.
IN_PROGRESS_GRACE = 2.0
#: How long, after terminating it, its status may take to settle.
SETTLE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Written:
    """What a write did: rows, COPY bytes, seconds, and the table (qualified) it wrote."""

    rows: int
    bytes: int
    seconds: float
    table: str
    mode: str


class _NotCommitted(Exception):
    """The attempt provably did not commit (carries the driver's error)."""

    def __init__(self, cause: BaseException, rows: int) -> None:
        super().__init__(str(cause))
        self.cause, self.rows = cause, rows


def write(borrow: Borrow, source: Source, table: object, *, mode: str, key: object,
          progress: Progress | None) -> Written:
    """Write ``source`` into ``table`` (see the module); ``borrow()`` lends a connection."""
    name = _table.parse(table)
    key_columns = _plan.check_arguments(mode, key, source.schema)
    if mode == "create" or mode == "replace":  # the types a new table gets: known before connecting
        _plan._pgtypes.create_targets(source.schema)
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            rows, nbytes, where = _attempt(borrow, source, name, mode, key_columns, progress)
        except _NotCommitted as failed:
            if attempt == 1 and source.replayable:
                log.info("write lost its connection and did not commit (%s); running it once more",
                         classify(failed.cause).reason)
                continue
            raise _interrupted(failed, retried=attempt > 1, replayable=source.replayable) from failed.cause
        return Written(rows, nbytes, time.perf_counter() - started, where, mode)
    raise AssertionError("unreachable: the second attempt returns or raises")


def _attempt(borrow: Borrow, source: Source, name: _table.TableName, mode: str,
             key: tuple[str, ...], progress: Progress | None) -> tuple[int, int, str]:
    encoder: Encoder | None = None
    xid: str | None = None
    with borrow() as conn:
        try:
            xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
            info = _table.inspect(conn, name)
            plan = _plan.plan(mode, name, info, source.schema, key)
            where = str(info) if info is not None else _qualified(conn, name)
            with conn.cursor() as cur:
                for statement in plan.before:
                    cur.execute(statement)
                encoder = Encoder(source.schema, plan.targets)
                report = None if progress is None else (
                    lambda rows, nbytes: progress(rows, nbytes, source.rows))
                nbytes = copy_in(cur, plan.copy, encoder, source.batches(), report)
                for statement in plan.after:
                    _run_after(cur, statement, info)
        except psycopg.OperationalError as exc:
            if lost(conn, exc):  # COMMIT was never sent: PostgreSQL rolls the transaction back
                raise _NotCommitted(exc, encoder.rows if encoder else 0) from exc
            raise
        try:
            conn.commit()
        except psycopg.OperationalError as exc:
            if not lost(conn, exc):
                raise
            commit_error = exc
        else:
            return encoder.rows, nbytes, where
    # Lost during COMMIT: the connection went back to its pool broken; ask another.
    status = _status(borrow, xid, commit_error)
    if status == "committed":
        log.info("write's COMMIT answer was lost, but transaction %s committed", xid)
        return encoder.rows, nbytes, where
    raise _NotCommitted(commit_error, encoder.rows)


def _qualified(conn: psycopg.Connection, name: _table.TableName) -> str:
    """The table just created, schema-qualified (for the status panel)."""
    info = _table.inspect(conn, name)
    return str(info) if info is not None else str(name)


def _run_after(cur: psycopg.Cursor, statement: sql.Composable, info: _table.TableInfo | None) -> None:
    try:
        cur.execute(statement)
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise ConfigurationError(
            f"mode='replace' would drop table {info} but other objects depend on it "
            f"({exc.diag.message_detail or exc}); drop or redefine them first, or empty the table "
            "(TRUNCATE) and use mode='append'. Nothing was written.") from exc


def _status(borrow: Borrow, xid: str, cause: BaseException) -> str:
    """``pg_xact_status(xid)`` once settled ("committed" or "aborted"); CommitUncertain if unknown."""
    deadline = time.monotonic() + IN_PROGRESS_GRACE
    terminated = False
    try:
        while True:
            with borrow() as conn:
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
                status = row[0] if row else None
                if status in ("committed", "aborted"):
                    return status
                if status is None:
                    break
                if time.monotonic() >= deadline and not terminated:
                    # Our own transaction, whose client is gone: end it, so that it settles.
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE backend_xid = (%s::xid8)::xid", (xid,))
                    terminated, deadline = True, time.monotonic() + SETTLE_TIMEOUT
                elif time.monotonic() >= deadline:
                    break
            time.sleep(0.05)
    except psycopg.OperationalError as exc:
        reason = f"its status could not be checked ({classify(exc).reason})"
    else:
        reason = f"its status stayed {status!r}"
    raise CommitUncertain(
        f"The connection was lost during the write's COMMIT ({classify(cause).reason}) and "
        f"{reason}, so the write may or may not have happened; it was not retried. Check with "
        f"SELECT pg_xact_status('{xid}') ('committed': the rows are there) before writing again.") from cause


def _interrupted(failed: _NotCommitted, *, retried: bool, replayable: bool) -> WriteInterrupted:
    reason = classify(failed.cause).reason
    if retried:
        tail = "It was run twice and lost its connection both times; run it again when the compute answers."
    elif not replayable:
        tail = ("Its data was a stream (an iterator or RecordBatchReader) that has been consumed, "
                "so it was not retried: make the stream again and call write() once more.")
    else:
        tail = "Run it again."
    return WriteInterrupted(
        f"The write lost its connection after {failed.rows:,} rows had been sent ({reason}); it did "
        f"not commit, so nothing was written. {tail}", rows=failed.rows)
