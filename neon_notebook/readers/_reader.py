"""Query -> Arrow blocks: the :class:`Reader` driving COPY, and the row path.

How one read goes (all on the caller's connection, one transaction)::

    bind params client-side (psycopg's literal quoting)   -> one SQL text
    lex it (_sqltext): refuse COPY FROM STDIN / TO STDOUT; on a pooled
        connection SET -> SET LOCAL, other session state refused (_guard)
    BEGIN (or SAVEPOINT) + read the output settings         (Scope; SET LOCAL
                                                              only for odd ones)
    Parse + Describe the text (unnamed statement)           -> column types
    [EXPLAIN (FORMAT JSON), only when a progress callback wants an estimate]
    COPY (text) TO STDOUT (FORMAT binary)                   -> CopyData rows
        (or COPY's text format, when a column's type has no binary decoder)
        rows gathered into blocks (batch_rows / batch_bytes); each block is
        decoded on a worker thread while the next block is read from the socket
    SELECT <no xid assigned?>; COMMIT  (one message: a lost COMMIT answer
        is harmless when nothing was written)   (or RELEASE + settings restored)

Statements COPY cannot wrap (SHOW, EXPLAIN, utility statements, several
statements, INSERT ... RETURNING) take the row path: the same scope and
settings, a plain execute, and PostgreSQL's text values converted by the same
:class:`~._kinds.Kind` rules, so every path gives the same Arrow types.

Nothing here keeps session state between transactions and nothing is
prepared by name, so a PgBouncer in transaction mode is fine.

Why COPY binary, and the reading loop in C: see :mod:`._copy`.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Literal, Union

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq

from ..errors import CommitUncertain, ConfigurationError, UnsupportedStatement
from . import _copy, _decode
from ._catalog import TypeResolver
from ._decode import BinaryBlockParser, Block, TextBlockParser, text_block
from ._guard import Text, apply_edits, check_copy, for_pooled
from ._kinds import Column
from ._output import READ_SETTINGS, SETTINGS_READ, check_output
from ._scope import Scope, settle
from ._sql import Params, Query, bind, check_query, copyable, strip_terminator
from .._translate import connection_lost
from ._wait import results, wait_readable

#: ``progress(rows, bytes, estimate)``: rows and bytes received so far, and the
#: planner's row estimate (``None`` when there is none, e.g. on the row path).
ProgressCallback = Callable[[int, int, Union[int, None]], object]
#: COPY's wire format: ``"binary"`` (the default; COPY text for a query with a
#: column type the decoder does not read) or ``"text"``.  Text moves fewer bytes
#: for small integers, booleans and short strings (which can pay over a slow
#: link); binary costs less CPU on both ends and fewer bytes for timestamps,
#: dates, uuids, bytea and vectors.
CopyFormat = Literal["binary", "text"]

DEFAULT_BATCH_ROWS = 100_000
DEFAULT_BATCH_BYTES = 64 * 2**20
# Block size when the whole result is wanted: small enough to overlap parsing
# with the network and to keep the transient memory (raw block + parser
# buffers, and what the allocator keeps of them) small next to the result.
# Measured on 1M mixed rows: 1 MB blocks peak ~15 MB lower than 4 MB and
# ~30 MB lower than 8 MB, at the same speed; 512 KB is slower.
COLLECT_BLOCK_BYTES = 1 * 2**20
#: ``batch_rows`` when batches are cut by bytes only: more rows than any block holds.
_NO_ROW_LIMIT = 2**62
# Blocks handed to the parsing thread and not yet collected.  With two, the
# reading loop seldom waits for the parser (measured: 5% faster than one).
MAX_PENDING_BLOCKS = 2
PROGRESS_INTERVAL_S = 0.25


class Reader:
    """Runs one query and produces :class:`Block` objects; counts what it received.

    ``blocks()`` is a generator: closing it early (or an exception, such as a
    KeyboardInterrupt, inside it) cancels the query on the server, drains the
    connection and rolls back, leaving the connection idle and usable.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        query: Query,
        params: Params = None,
        *,
        batch_rows: int | None = None,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        progress: ProgressCallback | None = None,
        views: bool = False,
        copy_format: CopyFormat = "binary",
    ):
        if copy_format not in ("binary", "text"):
            raise ConfigurationError(f"copy_format must be 'binary' or 'text', not {copy_format!r}")
        if batch_rows is not None and batch_rows < 1:
            raise ConfigurationError("batch_rows must be at least 1")
        if batch_bytes < 1:
            raise ConfigurationError("batch_bytes must be at least 1")
        check_query(query)
        self.conn = conn
        self.query = query
        self.params = params
        self.batch_rows = batch_rows  # None: blocks are cut by bytes only
        self.batch_bytes = batch_bytes
        self.progress = progress
        #: Strings as ``string_view`` where the binary path can (for polars).
        self.views = views
        self.copy_format = copy_format
        #: The result's columns, known once the query has been described.
        self.columns: list[Column] | None = None
        #: ``"copy binary"``, ``"copy text"`` or ``"rows"``: which path the read took.
        self.path: str | None = None
        self.rows = 0
        self.bytes = 0
        self.estimate: int | None = None
        #: Set once something may have committed (the text's own COMMIT, a
        #: statement run outside a transaction block, the read's COMMIT sent):
        #: from then on a lost connection is reported, never retried.
        self.committing = False
        self._text: Text | None = None
        self._bare = False  # the text ran outside a transaction block
        self._edits: list[tuple[int, int, str]] = []  # the pooled endpoint's rewrites (SET -> SET LOCAL)
        self._last_progress = 0.0

    # -- helpers -------------------------------------------------------------
    def _report(self, final: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if final or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.progress(self.rows, self.bytes, self.estimate)

    def _describe(self, text: bytes) -> list[tuple[str, int, int]]:
        """Parse + Describe as the unnamed statement: column types, nothing executed.

        Sent and awaited without blocking in libpq, so that an interrupt is
        handled, and a connection lost meanwhile is reported as lost.
        """
        conn = self.conn
        pgconn = conn.pgconn
        with conn.lock:
            pgconn.send_prepare(b"", text)
            res = self._result()
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise _copy.NotCopyable(res.error_message)
            pgconn.send_describe_prepared(b"")
            res = self._result()
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise _copy.NotCopyable(res.error_message)
        enc = conn.info.encoding
        return [(res.fname(i).decode(enc), res.ftype(i), res.fmod(i)) for i in range(res.nfields)]

    def _result(self) -> pq.abc.PGresult:
        """The one result of the command just sent (waiting in slices); lost connections raise."""
        pgconn = self.conn.pgconn
        first = None
        for res in results(pgconn):
            first = first or res
        if first is None or pgconn.status == pq.ConnStatus.BAD:
            raise connection_lost(pgconn, self.conn.info.encoding)
        return first

    def _estimate(self, text: str) -> int | None:
        cur = self.conn.cursor()
        cur.execute(("EXPLAIN (FORMAT JSON) " + text).encode(self.conn.info.encoding), prepare=False)
        plan = cur.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        rows = plan[0]["Plan"].get("Plan Rows")
        return int(rows) if rows is not None else None

    # -- the two paths -------------------------------------------------------
    def blocks(self) -> Iterator[Block]:
        """The result's blocks; a lost connection after a possible commit raises :class:`CommitUncertain`.

        A server error of a text the readers rewrote carries the edits as
        ``exc._nn_edits`` (``(start, end, replacement)`` in the bound text), so
        that its position can be mapped back (``_sqltext.original_offset``).
        """
        try:
            yield from self._blocks()
        except psycopg.OperationalError as exc:
            self._note_edits(exc)
            pgconn = self.conn.pgconn
            if self.conn.broken and str(exc) == "the connection is closed":
                # psycopg's words for a connection that died earlier in this
                # read (e.g. while a refused COPY was rolled back): say it was lost.
                exc = connection_lost(pgconn, self.conn.info.encoding)
            if self.committing and (self.conn.closed or pgconn.status == pq.ConnStatus.BAD):
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CommitUncertain(
                    f"The connection was lost ({reason}) after the query may have committed "
                    f"({self._why_committing()}). It was not run again, so that no write is "
                    "repeated: check what it changed before running it again."
                ) from exc
            raise exc
        except psycopg.Error as exc:
            self._note_edits(exc)
            raise

    def _note_edits(self, exc: psycopg.Error) -> None:
        if self._edits:
            exc._nn_edits = tuple(self._edits)

    def _why_committing(self) -> str:
        if self._text is not None and self._text.may_commit:
            return "it ends the read's transaction with COMMIT, ROLLBACK or the like"
        if self._bare:
            return "it ran outside a transaction block, where each statement commits"
        return "the read's COMMIT had been sent"

    def _blocks(self) -> Iterator[Block]:
        conn = self.conn
        text = Text.of(bind(conn, self.query, self.params))
        check_copy(text)
        if getattr(conn, "pooled", False):
            self._edits = for_pooled(text)
            if self._edits:
                text = Text.of(apply_edits(text.sql, self._edits))
        self._text = text
        several = len(self._text.statements) > 1  # COPY wraps one statement: rows at once
        text = text.sql
        if not several and copyable(text):
            gen = self._copy_blocks(strip_terminator(text))
            try:
                first = next(gen)
            except StopIteration:
                return
            except _copy.NotCopyable:
                pass
            else:
                yield first
                yield from gen
                return
        yield from self._row_blocks(text)

    def _copy_blocks(self, text: str) -> Iterator[Block]:
        conn = self.conn
        enc = conn.info.encoding
        with Scope(conn, self._committed, self._probe()) as scope:
            fields = self._describe(text.encode(enc))
            if not fields:
                raise _copy.NotCopyable("no columns")
            self.columns = TypeResolver.for_connection(conn, scope.settings).resolve(fields)
            if self.progress is not None:
                self.estimate = self._estimate(text)
            binary = self._binary_ok()
            if not binary and self._text is not None and self._text.output_changes:
                raise _copy.NotCopyable("the query changes an output setting")  # the row path checks it
            stmt = "COPY (\n" + text + "\n) TO STDOUT" + (" (FORMAT binary)" if binary else "")
            try:
                _copy.start_copy(conn, stmt.encode(enc))
            except (pgerrors.SyntaxError, pgerrors.FeatureNotSupported) as ex:
                raise _copy.NotCopyable(str(ex)) from ex
            self.path = "copy binary" if binary else "copy text"
            # On any exception (an interrupt, the consumer leaving early) the
            # scope cancels the COPY on the server and drains the connection.
            yield from self._copy_loop(binary)

    def _binary_ok(self) -> bool:
        """Binary format when the decoder is built and reads every column's type.

        Text values in the binary format are in the client encoding, unchecked
        when the server's is SQL_ASCII: only UTF-8 on both sides goes binary.
        """
        info = self.conn.info
        return (
            self.copy_format == "binary"
            and _decode._pgcopy is not None
            and info.encoding in ("utf-8", "utf8")
            and (info.parameter_status("server_encoding") or "").upper() == "UTF8"
            and all(c.wire is not None for c in self.columns)
        )

    def _copy_loop(self, binary: bool) -> Iterator[Block]:
        conn = self.conn
        pgconn = conn.pgconn
        if binary:
            parser: TextBlockParser | BinaryBlockParser = BinaryBlockParser(self.columns, self.views)
        else:
            parser = TextBlockParser(self.columns, conn.info.encoding)
        pending: deque[Future[Block]] = deque()
        executor = ThreadPoolExecutor(1, thread_name_prefix="neon-notebook-parse")
        get = pgconn.get_copy_data
        limit_rows = _NO_ROW_LIMIT if self.batch_rows is None else self.batch_rows
        limit_bytes = self.batch_bytes
        # Rows are counted as messages (one per row) when batches are cut by
        # rows, and in the binary format, which has no line ends to count.
        by_rows = self.batch_rows is not None or binary
        progress_on = self.progress is not None
        buf = bytearray()
        block_rows = 0
        done_rows = done_bytes = 0

        def submit(data: bytearray, rows: int) -> Iterator[Block]:
            nonlocal done_rows, done_bytes
            done_rows += rows
            done_bytes += len(data)
            self.rows, self.bytes = done_rows, done_bytes
            pending.append(executor.submit(parser.parse, data, rows))
            while pending and (len(pending) > MAX_PENDING_BLOCKS or pending[0].done()):
                yield pending.popleft().result()

        try:
            if _copy.native():
                pgcopy = _decode._pgcopy
                # The C loop: messages appended without the GIL until a block
                # is full or the socket has nothing more; rows counted exactly.
                # Each call holds the connection's lock, as psycopg's own calls
                # do, so no other thread uses the PGconn while the GIL is off.
                buf = pgcopy.RowBuffer()
                receive, ptr, lock = pgcopy.receive, pgconn.pgconn_ptr, conn.lock
                while True:
                    with lock:
                        status, got = receive(ptr, buf, limit_rows - block_rows, limit_bytes)
                    block_rows += got
                    if status == pgcopy.FULL:
                        yield from submit(buf, block_rows)
                        buf = pgcopy.RowBuffer()
                        block_rows = 0
                        self._report()
                    elif status == pgcopy.WAIT:
                        if progress_on and time.monotonic() - self._last_progress >= PROGRESS_INTERVAL_S:
                            self.rows, self.bytes = done_rows + block_rows, done_bytes + len(buf)
                            self._report()
                        wait_readable(pgconn)
                    elif status == pgcopy.DONE:
                        _copy.finish_copy(conn)
                        break
                    else:
                        get(0)  # raises psycopg's error for what libpq reported
                        raise psycopg.OperationalError("the COPY failed")
                by_rows = True
            else:
                # The hot loops: one CopyData message is one row; keep them lean.
                # Whole results cut blocks by bytes only, and count a block's rows
                # (lines, in COPY's text format) when it is cut.
                while True:
                    nbytes, data = get(1)
                    if nbytes > 0:
                        buf += data
                        if by_rows:
                            block_rows += 1
                            if block_rows < limit_rows and len(buf) < limit_bytes:
                                if progress_on and not block_rows & 1023:
                                    self.rows, self.bytes = done_rows + block_rows, done_bytes + len(buf)
                                    self._report()
                                continue
                            if binary and (nbytes == 2 or (nbytes == 21 and bytes(data[:6]) == b"PGCOPY")):
                                # Not a row but the trailer: alone (2 bytes), or
                                # after the header when there are no rows (19 + 2);
                                # a row holds at least 6 bytes, 25 with the header.
                                block_rows -= 1
                                if not block_rows:
                                    buf = bytearray()
                                    continue
                        elif len(buf) < limit_bytes:
                            continue
                        else:
                            block_rows = buf.count(b"\n")
                        yield from submit(buf, block_rows)
                        buf = bytearray()
                        block_rows = 0
                        self._report()
                    elif nbytes == 0:
                        # Nothing buffered: wait for the socket (Ctrl-C lands here
                        # and the scope cancels the query).
                        if progress_on and time.monotonic() - self._last_progress >= PROGRESS_INTERVAL_S:
                            partial = block_rows if by_rows else buf.count(b"\n")
                            self.rows, self.bytes = done_rows + partial, done_bytes + len(buf)
                            self._report()
                        wait_readable(pgconn)
                    else:
                        _copy.finish_copy(conn)
                        if binary and buf:
                            block_rows -= 1  # the last message is the format's trailer
                        break
            if not by_rows:
                block_rows = buf.count(b"\n")
            if block_rows:
                yield from submit(buf, block_rows)
            else:
                self.rows, self.bytes = done_rows, done_bytes
            while pending:
                yield pending.popleft().result()
            self._report(final=True)
        finally:
            for f in pending:
                f.cancel()
            executor.shutdown(wait=False)

    def _committed(self) -> None:
        self.committing = True

    def _probe(self) -> bool:
        """Whether the read's COMMIT may ask if the transaction wrote (see ``Scope._commit_probed``).

        Not for a text that ends the transaction itself (what it committed is
        out of the probe's sight), nor for one that may NOTIFY (a notification
        is sent at COMMIT without the transaction having written anything).
        """
        text = self._text
        return text is not None and not text.may_commit and not text.may_notify

    def _row_blocks(self, text: str) -> Iterator[Block]:
        conn = self.conn
        self.path = "rows"
        data = text.encode(conn.info.encoding)
        mode = ""
        try:
            with Scope(conn, self._committed, self._probe()) as scope:
                mode = scope.mode
                if self._text is not None and self._text.may_commit:
                    self.committing = True
                block = self._execute_rows(data, scope.settings)
        except pgerrors.ActiveSqlTransaction as exc:
            # VACUUM, CREATE DATABASE, CREATE INDEX CONCURRENTLY... refuse a
            # transaction block: run the text bare, where that is possible.
            block = self._run_bare(data, mode, exc)
        if block is not None:
            self._report(final=True)
            yield block

    def _run_bare(self, data: bytes, mode: str, exc: Exception) -> Block | None:
        """Run the text outside a transaction block (autocommit), the connection's mode restored after."""
        conn = self.conn
        what = str(exc).strip().splitlines()[0]
        if mode == "savepoint":
            raise UnsupportedStatement(
                f"{what}: the connection was inside a transaction when the read began. Commit or "
                "roll back first, or run it on a connection of its own (session.direct(), or "
                "direct=True / %%sql --direct)."
            ) from exc
        reported = {k: conn.info.parameter_status(k) for k in ("TimeZone", "DateStyle", "IntervalStyle")}
        settings = {k: v for k, v in reported.items() if v}
        was = conn.autocommit
        try:
            conn.autocommit = True
        except ConfigurationError:  # the session's pooled connection refuses it (see NeonConnection)
            raise UnsupportedStatement(
                f"{what}: on the pooled endpoint the session's schema= and statement_timeout= only "
                "apply inside a transaction, so it was not run without one. Run it on the direct "
                "endpoint: direct=True, session.direct(), or %%sql --direct."
            ) from exc
        self.committing = self._bare = True  # each statement commits as it runs
        try:
            return self._execute_rows(data, settings)
        finally:
            if not conn.closed:
                settle(conn)
                conn.autocommit = was

    def _execute_rows(self, data: bytes, settings: dict[str, str]) -> Block | None:
        conn = self.conn
        cur = conn.cursor()
        cur.execute(data, prepare=False)
        res = None
        index = results = 0
        while True:
            if cur.pgresult is not None and cur.pgresult.status == pq.ExecStatus.TUPLES_OK:
                res, index = cur.pgresult, results
            results += 1
            if not cur.nextset():
                break
        if res is None:
            self.columns = []
            return None
        enc = conn.info.encoding
        fields = [(res.fname(i).decode(enc), res.ftype(i), res.fmod(i)) for i in range(res.nfields)]
        settings = self._settings_after(cur, settings)
        self.columns = TypeResolver.for_connection(conn, settings).resolve(fields)
        check_output(self._text, self.columns, settings, index, results)
        n = res.ntuples
        get = res.get_value
        values = [[get(r, c) for r in range(n)] for c in range(res.nfields)]
        self.rows = n
        self.bytes = sum(len(v) for col in values for v in col if v is not None)
        if not self.columns:
            return Block([], n)  # rows without columns (SELECT FROM t): still n rows
        return text_block(self.columns, values, n, enc)

    def _settings_after(self, cur: psycopg.Cursor, settings: dict[str, str]) -> dict[str, str]:
        """The output settings the rows were printed under, when the text may have changed them."""
        if self._text is None or not self._text.output_changes:
            return settings
        cur.execute(READ_SETTINGS.encode(), prepare=False)
        return dict(zip(SETTINGS_READ, cur.fetchone()))
