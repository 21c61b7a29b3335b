"""One write, all or nothing and never twice: the transaction, its COMMIT, and the one retry.

A write is one transaction on one connection: its transaction id first
(``pg_current_xact_id()``, with the server's incarnation: when it started and
when crash recovery last reset its statistics), then the plan's statements and
the COPY, then COMMIT. If the connection is lost:

- before COMMIT was sent, the transaction cannot have committed: PostgreSQL
  rolls it back when the connection goes, so nothing stays;
- during COMMIT, the outcome is unknown. Another connection asks
  ``pg_xact_status(xid)``; a transaction still "in progress" (its backend has
  not yet noticed its client is gone) is ended with ``pg_terminate_backend``,
  which cannot undo a commit that happened, then asked again. Committed: the
  write is done. Aborted: it provably did not commit. Unknown (the compute
  cannot be reached): :class:`~neon_notebook.errors.CommitUncertain`, with the
  transaction id to check by hand.

A crash loses the WAL not yet flushed, and with it every trace of a transaction
that had not committed: after recovery its id is "in the future", which proves
it did not commit, and the server hands the id out again, so "committed" or
"in progress" may then be another transaction's. So when the server restarted
since the write began, only "committed" needs proof, from the write's own rows
(or its table's catalog row) carrying its id; without it, CommitUncertain.

A write that provably did not commit runs once more when its data can be read
again (a frame, a table, a file) or was not read yet; a stream already consumed
cannot, and the error says so. Nothing is retried that might have committed.
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
from . import _pgtypes, _plan, _table
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

# The server's incarnation, fixed-width: a restart changes its start time; crash recovery
# (also of one crashed backend, which keeps the start time) resets its statistics.
_STAMP = "'YYYYMMDDHH24MISSUS'"
_INCARNATION = (f"to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', {_STAMP}) || "
                f"coalesce(to_char(pg_stat_get_bgwriter_stat_reset_time() AT TIME ZONE 'UTC', {_STAMP}), '')")
_BEGIN = f"SELECT pg_current_xact_id()::text, {_INCARNATION}"
# Raises 22023 for an id at or past the next one to be handed out: "in the future". (A
# snapshot's xmax is no test for that: it is one past the latest *completed* transaction.)
_STATUS = f"SELECT pg_xact_status(%s::xid8), {_INCARNATION}"


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

    def __init__(self, cause: BaseException, rows: int, consumed: bool) -> None:
        super().__init__(str(cause))
        self.cause, self.rows, self.consumed = cause, rows, consumed


@dataclass
class _Attempt:
    """How far one attempt got: what its COMMIT verification needs, and what it reports."""

    xid: str | None = None
    incarnation: str | None = None
    target: _table.TableInfo | _table.TableName | None = None  # the table written, schema-qualified
    created: bool = False  # the table (or, replacing, its new definition) is the write's own
    consumed: bool = False  # the source's batches were asked for
    rows: int = 0
    nbytes: int = 0
    committing: bool = False  # COMMIT was sent


def write(borrow: Borrow, source: Source, table: object, *, mode: str, key: object,
          progress: Progress | None) -> Written:
    """Write ``source`` into ``table`` (see the module); ``borrow()`` lends a connection."""
    name = _table.parse(table)
    key_columns = _plan.check_arguments(mode, key, source.schema)
    if mode == "create" or mode == "replace":  # the types a new table gets: known before connecting
        _pgtypes.create_targets(source.schema)
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            done = _attempt(borrow, source, name, mode, key_columns, progress)
        except _NotCommitted as failed:
            again = source.replayable or not failed.consumed
            if attempt == 1 and again:
                log.info("write lost its connection and did not commit (%s); running it once more",
                         classify(failed.cause).reason)
                continue
            raise _interrupted(failed, retried=attempt > 1, replayable=again) from failed.cause
        return Written(done.rows, done.nbytes, time.perf_counter() - started, str(done.target), mode)
    raise AssertionError("unreachable: the second attempt returns or raises")


def _attempt(borrow: Borrow, source: Source, name: _table.TableName, mode: str,
             key: tuple[str, ...], progress: Progress | None) -> _Attempt:
    """One attempt; raises ``_NotCommitted`` when it provably did not commit.

    A lost connection leaves the ``borrow()`` block as the driver's error, so that the
    session sees it (its state, its pool), and is judged here after.
    """
    state = _Attempt()
    conn: psycopg.Connection | None = None
    try:
        with borrow() as conn:
            _run(conn, state, source, name, mode, key, progress)
            state.committing = True
            conn.commit()
        return state
    except psycopg.OperationalError as exc:
        if conn is None or not lost(conn, exc):
            raise
        if not state.committing:  # COMMIT was never sent: PostgreSQL rolls the transaction back
            raise _NotCommitted(exc, state.rows, state.consumed) from exc
        commit_error = exc
    # Lost during COMMIT: the connection went back to its pool broken; ask another.
    if _status(borrow, state, commit_error) == "committed":
        log.info("write's COMMIT answer was lost, but transaction %s committed", state.xid)
        return state
    raise _NotCommitted(commit_error, state.rows, True)


def _run(conn: psycopg.Connection, state: _Attempt, source: Source, name: _table.TableName,
         mode: str, key: tuple[str, ...], progress: Progress | None) -> None:
    """Everything before COMMIT, on ``conn``, noting in ``state`` how far it got."""
    state.xid, state.incarnation = conn.execute(_BEGIN).fetchone()
    info = _table.inspect(conn, name)
    plan = _plan.plan(mode, name, info, source.schema, key)
    state.created = plan.created or mode == "replace"
    with conn.cursor() as cur:
        for statement in plan.before:
            cur.execute(statement)
        state.target = info if info is not None else _table.qualified(conn, name)
        encoder = Encoder(source.schema, plan.targets)
        report = None if progress is None else (
            lambda rows, nbytes: progress(rows, nbytes, source.rows))
        state.consumed = True
        try:
            state.nbytes = copy_in(cur, plan.copy, encoder, source.batches(), report)
        finally:
            state.rows = encoder.rows
        for statement in plan.after:
            _run_after(cur, statement, info)


def _run_after(cur: psycopg.Cursor, statement: sql.Composable, info: _table.TableInfo | None) -> None:
    try:
        cur.execute(statement)
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise ConfigurationError(
            f"mode='replace' would drop table {info} but other objects depend on it "
            f"({exc.diag.message_detail or exc}); drop or redefine them first, or empty the table "
            "(TRUNCATE) and use mode='append'. Nothing was written.") from exc


def _status(borrow: Borrow, state: _Attempt, cause: BaseException) -> str:
    """Whether the transaction committed ("committed" or "aborted"), once known; CommitUncertain if not."""
    xid = state.xid
    deadline = time.monotonic() + IN_PROGRESS_GRACE
    terminated = False
    try:
        while True:
            with borrow() as conn:
                try:
                    status, incarnation = conn.execute(_STATUS, (xid,)).fetchone()
                except psycopg.errors.InvalidParameterValue:  # in the future: no WAL of it survived
                    conn.rollback()  # a crash, so neither did a commit
                    return "aborted"
                if incarnation != state.incarnation:
                    # Restarted: a commit of ours would have survived, and its id not been reused.
                    if status != "committed":
                        return "aborted"
                    if _its_own(conn, state):
                        return "committed"
                    reason = ("the compute restarted since, and nothing in the table shows that "
                              "'committed' is this write's transaction and not a later one given its id")
                    break
                if status in ("committed", "aborted"):
                    return status
                if status is None:
                    reason = "its status is no longer kept"
                    break
                if time.monotonic() >= deadline and not terminated:
                    # Our own transaction, whose client is gone: end it, so that it settles.
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE backend_xid = (%s::xid8)::xid", (xid,))
                    terminated, deadline = True, time.monotonic() + SETTLE_TIMEOUT
                elif time.monotonic() >= deadline:
                    reason = f"its status stayed {status!r}"
                    break
            time.sleep(0.05)
    except psycopg.OperationalError as exc:
        reason = f"its status could not be checked ({classify(exc).reason})"
    raise CommitUncertain(
        f"The connection was lost during the write's COMMIT ({classify(cause).reason}) and "
        f"{reason}, so the write may or may not have happened; it was not retried. Check with "
        f"SELECT pg_xact_status('{xid}') ('committed': the rows are there) before writing again.") from cause


def _its_own(conn: psycopg.Connection, state: _Attempt) -> bool:
    """Whether the table shows the write's transaction: its catalog row (a table the write made)
    or a row of data (an existing table) carrying its id. No rows to show: nothing to tell apart."""
    target = state.target
    if target is None:
        return False
    if state.created:
        query = sql.SQL("SELECT EXISTS (SELECT FROM pg_class WHERE oid = to_regclass({}) "
                        "AND xmin = (%s::xid8)::xid)").format(sql.Literal(target.identifier.as_string(conn)))
    elif state.rows == 0:
        return True
    else:
        query = sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE xmin = (%s::xid8)::xid)").format(target.identifier)
    try:
        return bool(conn.execute(query, (state.xid,)).fetchone()[0])
    except psycopg.OperationalError:
        raise
    except psycopg.Error:  # the table is gone or out of reach: no proof
        conn.rollback()
        return False


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
