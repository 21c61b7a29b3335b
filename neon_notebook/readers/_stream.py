"""Query -> Arrow blocks: the COPY fast path, the row path, and the read's scope.

How one read goes (all on the caller's connection, one transaction)::

    bind params client-side (psycopg's literal quoting)   -> one SQL text
    lex it (sqltext): refuse COPY FROM STDIN / TO STDOUT; on a pooled
        connection SET -> SET LOCAL, other session state refused (_guard)
    BEGIN (or SAVEPOINT) + read the output settings         (_Scope; SET LOCAL
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
:class:`~._types.Kind` rules, so every path gives the same Arrow types.

Nothing here keeps session state between transactions and nothing is
prepared by name, so a PgBouncer in transaction mode is fine.

Why this shape (measured on a 2-core machine, 1M rows of 9 mixed columns,
local server; benchmarks/bench_readers.py): the server produces COPY's text
format in ~1.4x the time of its binary format, so binary it is wherever the
C decoder (``_pgcopy.c``) reads every column: the common scalar types, which
it writes straight into Arrow buffers (~50 ms per 1M rows, without the GIL).
Other types (arrays, inet, timetz, halfvec...) take COPY's text format,
parsed by Arrow's C++ CSV reader; so does every read when the decoder was not
built.  One CopyData message is one row; the reading loop appends messages
to a block and cuts blocks at row boundaries.  It runs in C too (``receive``,
calling the ``PQgetCopyData`` of psycopg's own libpq without the GIL): a
Python loop costs ~0.2 s of CPU per 1M rows, which on two cores shared with
the server made reads ~1.2x the floor instead of ~1.0x.  The Python loop
remains where the C one cannot bind (see :func:`native_receive`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence, Union

import psycopg
import pyarrow as pa
from psycopg import errors as pgerrors
from psycopg import pq, sql

from ..errors import ConfigurationError
from .._sqltext import end_of_block_comment
from ..errors import CommitUncertain, OutputSettingChanged, UnrepresentableValue, UnsupportedStatement
from ._guard import Text, apply_edits, check_copy, for_pooled
from ._lazy import lazy_module
from ._types import (
    SETTINGS_READ,
    TIMESTAMP_INFINITY_US,
    TIMESTAMP_NEG_INFINITY_US,
    Column,
    TypeResolver,
    affected_by,
    beyond_arrow,
    interval_text,
    output_fixes,
    timestamp_text,
)

pc = lazy_module("pyarrow.compute")
pcsv = lazy_module("pyarrow.csv")

Params = Union[Sequence[Any], Mapping[str, Any], None]
Query = Union[str, bytes, sql.Composable]
#: ``progress(rows, bytes, estimate)``: rows and bytes received so far, and the
#: planner's row estimate (``None`` when there is none, e.g. on the row path).
ProgressCallback = Callable[[int, int, Union[int, None]], object]
#: COPY's wire format: ``"binary"`` (the default; COPY text for a query with a
#: column type the decoder does not read) or ``"text"``.  Text moves fewer bytes
#: for small integers, booleans and short strings (which can pay over a slow
#: link); binary costs less CPU on both ends and fewer bytes for timestamps,
#: dates, uuids, bytea and vectors.
CopyFormat = Literal["binary", "text"]
#: A block of CopyData messages: a ``bytearray``, or a ``_pgcopy.RowBuffer`` (read-only bytes-like).
RawBlock = Any

DEFAULT_BATCH_ROWS = 100_000
DEFAULT_BATCH_BYTES = 64 * 2**20
# Block size when the whole result is wanted: small enough to overlap parsing
# with the network and to keep the transient memory (raw block + parser
# buffers, and what the allocator keeps of them) small next to the result.
# Measured on 1M mixed rows: 1 MB blocks peak ~15 MB lower than 4 MB and
# ~30 MB lower than 8 MB, at the same speed; 512 KB is slower.
COLLECT_BLOCK_BYTES = 1 * 2**20
# Blocks handed to the parsing thread and not yet collected.  With two, the
# reading loop seldom waits for the parser (measured: 5% faster than one).
MAX_PENDING_BLOCKS = 2
PROGRESS_INTERVAL_S = 0.25
# Longest wait on the socket without looking at pending signals: an interrupt
# from another thread (``_thread.interrupt_main()``, how ipykernel interrupts on
# Windows) is only handled once the wait returns to Python.
WAIT_SLICE_S = 0.1

#: Read COPY's binary format when the decoder handles every column (tests
#: turn this off to exercise the text format on the same types).
BINARY_COPY = True
#: Receive CopyData in C when the decoder is built and bound to psycopg's libpq
#: (tests turn this off to exercise the Python reading loop).
NATIVE_RECEIVE = True
_COPYABLE_FIRST_WORDS = {"select", "with", "values", "table"}
#: One query for the output settings the parsers depend on (at the start of a read, and
#: after a text that may have changed them).
_READ_SETTINGS = "SELECT " + ", ".join(f"current_setting('{k}')" for k in SETTINGS_READ)
_SAVEPOINT = "neon_notebook_read"
# The column of the probe sent with the read's COMMIT (see _Scope._commit_probed).
_PROBE_COLUMN = "neon_notebook_wrote_nothing"


@dataclass
class Block:
    """One parsed block: per column, a list of Arrow chunks (raw text for deferred kinds)."""

    columns: list[list[pa.Array]]
    num_rows: int
    #: Columns held as PostgreSQL's text in this block: a timestamp or
    #: interval past its Arrow type's range (the reader decides the column).
    text_columns: frozenset[int] = frozenset()


try:
    from . import _pgcopy
except ImportError:  # built without a C compiler: the COPY text path serves every read
    _pgcopy = None


@functools.lru_cache(maxsize=None)
def native_receive() -> bool:
    """Whether the C reading loop can run: bound to the libpq psycopg uses.

    The loop calls ``PQgetCopyData`` on psycopg's ``PGconn`` (its documented
    ``pgconn_ptr``), so it must use the very library psycopg loaded: the one
    file named libpq in this process's memory map (psycopg-binary's own copy
    when that is the implementation).  Anywhere that is not certain (no
    ``/proc``, several candidates), the reading loop stays in Python.
    """
    if _pgcopy is None:
        return False
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            fields = (line.split(None, 5) for line in maps if "libpq" in line)
            paths = {f[5].strip() for f in fields if len(f) == 6}
    except OSError:
        return False
    paths = {p for p in paths if os.path.basename(p).startswith("libpq") and ".so" in p}
    if pq.__impl__ == "binary":
        paths = {p for p in paths if "psycopg_binary" in p}
    if len(paths) != 1:
        return False
    try:
        lib = ctypes.CDLL(paths.pop())
        get, free = (ctypes.cast(f, ctypes.c_void_p).value for f in (lib.PQgetCopyData, lib.PQfreemem))
    except (OSError, AttributeError):
        return False
    _pgcopy.bind(get, free)
    return True


class _NotCopyable(Exception):
    """The statement must take the row path."""


# ---------------------------------------------------------------------------
# SQL text
# ---------------------------------------------------------------------------


def check_query(query: object) -> None:
    """Refuse a query that is not SQL text, before any round trip."""
    if not isinstance(query, (str, bytes, sql.Composable)):
        raise TypeError(
            f"the query must be SQL text (str, bytes or psycopg.sql.Composable), not "
            f"{type(query).__name__}"
        )


def bind(conn: psycopg.Connection, query: Query, params: Params) -> str:
    """The statement with its parameters merged client-side, as one SQL text.

    psycopg quotes each value as a literal with libpq's escaping for this
    connection (``ClientCursor.mogrify``), which is how it binds parameters for
    ``COPY`` too: COPY accepts no server-side parameters.
    """
    check_query(query)
    if isinstance(query, sql.Composable):
        query = query.as_string(conn)
    elif isinstance(query, bytes):
        query = query.decode(conn.info.encoding)
    if params is None:
        return query
    return psycopg.ClientCursor(conn).mogrify(query, params)


_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|\()+")


def _first_word(text: str) -> str:
    """The first keyword, past whitespace, ``--`` and nested ``/* */`` comments, parens."""
    i, n = 0, len(text)
    while i < n:
        m = _LEADING_NOISE.match(text, i)
        if m:
            i = m.end()
            continue
        if text.startswith("/*", i):
            i = end_of_block_comment(text, i)
            continue
        break
    m = re.match(r"[A-Za-z_]+", text[i:])
    return m.group(0).lower() if m else ""


def _strip_terminator(text: str) -> str:
    text = text.rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _wait_readable(pgconn: pq.abc.PGconn) -> None:
    """Wait until the server sends something, in slices so that interrupts are handled."""
    sock = pgconn.socket
    while not select.select([sock], [], [], WAIT_SLICE_S)[0]:
        pass
    pgconn.consume_input()


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Send what libpq buffered, waiting in slices when the socket is full."""
    while pgconn.flush():
        select.select([], [pgconn.socket], [], WAIT_SLICE_S)


def _closed_by_server(pgconn: pq.abc.PGconn) -> bool:
    """Whether the server has already closed the connection (what it sent is read, without waiting)."""
    for _ in range(4):  # the FATAL message, then the end of the stream
        if pgconn.status == pq.ConnStatus.BAD or not select.select([pgconn.socket], [], [], 0)[0]:
            break
        try:
            pgconn.consume_input()
        except psycopg.OperationalError:
            break
    return pgconn.status == pq.ConnStatus.BAD


def _lost_error(pgconn: pq.abc.PGconn, encoding: str) -> psycopg.OperationalError:
    """The driver's error for a connection libpq found dead."""
    message = pgconn.error_message.decode(encoding, "replace").strip()
    return psycopg.OperationalError(message or "the connection to server was lost")


def settle(conn: psycopg.Connection) -> None:
    """Bring a connection left mid-command (an interrupt, an abandoned COPY) back to idle.

    psycopg cancels a query interrupted while it waits, but may give up
    before reading the end of the server's answer; then the connection is
    still "busy" and every command fails with "another command is already in
    progress".  Cancel whatever still runs and read the rest.
    """
    pgconn = conn.pgconn
    if conn.closed or pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return
    try:
        conn.cancel_safe(timeout=5.0)
    except Exception:
        pass
    while pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
        res = pgconn.get_result()
        if res is None:
            break
        if res.status == pq.ExecStatus.COPY_OUT:
            while pgconn.get_copy_data(0)[0] >= 0:
                pass
        elif res.status == pq.ExecStatus.COPY_IN:  # end it, or get_result answers COPY_IN forever
            pgconn.put_copy_end(b"COPY FROM STDIN is not supported by the readers")


# ---------------------------------------------------------------------------
# The read's transaction and output settings
# ---------------------------------------------------------------------------


class _Scope:
    """One transaction (or savepoint) for a read, with text output PostgreSQL's way.

    * autocommit connection, idle: ``BEGIN`` ... ``COMMIT``
    * non-autocommit, idle: psycopg's implicit BEGIN ... ``commit()``
    * inside the caller's transaction: ``SAVEPOINT`` ... ``RELEASE``, with any
      setting changed below put back (a released savepoint keeps SET LOCAL).
    On any exception (KeyboardInterrupt included) the work is rolled back.

    The session's settings are read in the same round trip as ``BEGIN``; the
    query runs under them, so ``now()::date`` or ``SHOW TimeZone`` mean what
    they mean in psql.  Only an output format the parsers don't read is
    changed, with ``SET LOCAL`` (see :func:`output_fixes`).
    """

    def __init__(self, conn: psycopg.Connection, on_commit: Callable[[], None] | None = None,
                 probe: bool = False):
        self.conn = conn
        self.on_commit = on_commit  # told just before the COMMIT is sent
        # Ask, in the COMMIT's own message, whether the transaction wrote (see _commit_probed);
        # only for texts that do not end the transaction themselves.
        self.probe = probe and conn.info.server_version >= 100000
        #: True once the server said the transaction was given no transaction id (it wrote nothing).
        self.wrote_nothing = False
        self.mode = ""
        self.settings: dict[str, str] = {}
        self._restore: dict[str, str] = {}

    def __enter__(self) -> _Scope:
        conn = self.conn
        cur = conn.cursor()
        status = conn.pgconn.transaction_status
        read = _READ_SETTINGS
        if status == pq.TransactionStatus.IDLE:
            self.mode = "begin" if conn.autocommit else "implicit"
            prefix = "BEGIN; " if conn.autocommit else ""
        else:
            # INTRANS (INERROR and ACTIVE make this execute raise the driver's error).
            self.mode = "savepoint"
            prefix = f"SAVEPOINT {_SAVEPOINT}; "
        cur.execute((prefix + read).encode(), prepare=False)
        while cur.pgresult is None or cur.pgresult.status != pq.ExecStatus.TUPLES_OK:
            cur.nextset()
        self.settings = dict(zip(SETTINGS_READ, cur.fetchone()))
        fixes = output_fixes(self.settings)
        if fixes:
            cur.execute(
                "SELECT " + ", ".join(f"set_config('{k}', %s, true)" for k in fixes),
                list(fixes.values()),
                prepare=False,
            )
            self._restore = {k: self.settings[k] for k in fixes}
            self.settings.update(fixes)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._end(commit=True)
            return
        try:
            settle(self.conn)
            self._end(commit=False)
        except Exception:
            # The connection may be gone (the caller sees the original error);
            # the Session's pool will notice and replace it.
            pass

    def _end(self, commit: bool) -> None:
        conn = self.conn
        if conn.closed:
            return
        cur = conn.cursor()
        if commit and self.mode != "savepoint":
            if _closed_by_server(conn.pgconn):
                # Ended before the COMMIT was sent (a suspension while the client
                # was still reading the rows): the transaction rolled back.
                raise _lost_error(conn.pgconn, conn.info.encoding)
            if self.on_commit is not None:
                self.on_commit()
        if commit and self.probe and self.mode in ("begin", "implicit"):
            self._commit_probed()
        elif self.mode == "begin":
            cur.execute(b"COMMIT" if commit else b"ROLLBACK", prepare=False)
        elif self.mode == "implicit":
            conn.commit() if commit else conn.rollback()
        elif self.mode == "savepoint":
            if not commit:
                cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}".encode(), prepare=False)
            elif self._restore:
                cur.execute(
                    "SELECT "
                    + ", ".join(f"set_config('{k}', %s, true)" for k in self._restore),
                    list(self._restore.values()),
                    prepare=False,
                )
            cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}".encode(), prepare=False)

    def _commit_probed(self) -> None:
        """COMMIT, preceded in the same message by a probe: was the transaction given an xid?

        PostgreSQL gives a transaction an id at its first write; without one it
        wrote nothing, so once the probe's answer is in the COMMIT's fate does not
        matter: if its answer is lost with the connection, the read is whole
        (``wrote_nothing``) and the connection is left broken for its pool to drop.
        Otherwise a lost answer raises the driver's error (the reader reports it
        as :class:`CommitUncertain`).  No extra round trip.
        """
        conn = self.conn
        pgconn = conn.pgconn
        try:
            with conn.lock:  # driven on libpq: waits in slices, so an interrupt is handled
                error = self._send_probed()
        except BaseException:
            settle(conn)  # an interrupt: read the COMMIT's answer, the connection stays usable
            raise
        if pgconn.status == pq.ConnStatus.BAD:
            if self.wrote_nothing:
                return
            raise error if isinstance(error, psycopg.OperationalError) else _lost_error(pgconn, conn.info.encoding)
        if error is not None:
            if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
            raise error

    def _send_probed(self) -> psycopg.Error | None:
        """Send the probe and the COMMIT; read their results, one by one; the first error met."""
        conn = self.conn
        pgconn = conn.pgconn
        enc = conn.info.encoding
        # pg_current_xact_id_if_assigned() from PostgreSQL 13 (Neon runs 14+); its old name before.
        xid = "pg_current_xact_id_if_assigned" if conn.info.server_version >= 130000 \
            else "txid_current_if_assigned"
        pgconn.send_query(f"SELECT {xid}() IS NULL AS {_PROBE_COLUMN}; COMMIT".encode())
        error: psycopg.Error | None = None
        try:
            _flush(pgconn)
            while True:
                while pgconn.is_busy():
                    _wait_readable(pgconn)
                res = pgconn.get_result()
                if res is None:
                    return error
                if res.status == pq.ExecStatus.TUPLES_OK and res.nfields == 1 \
                        and res.fname(0) == _PROBE_COLUMN.encode():
                    self.wrote_nothing = res.ntuples == 1 and res.get_value(0, 0) == b"t"
                elif res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                    error = pgerrors.error_from_result(res, encoding=enc)
        except psycopg.OperationalError as exc:  # the connection was lost
            return error or exc


# ---------------------------------------------------------------------------
# Parsing blocks (worker thread: Arrow and numpy only, no psycopg)
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def parse_pool() -> pa.MemoryPool:
    """The pool blocks are parsed into: jemalloc where pyarrow has it.

    Arrow's default pool (mimalloc) keeps freed pages resident for a while, so
    the parser's short-lived buffers pile up next to the result; jemalloc
    reuses them (measured: ~10 MB lower peak RSS per 1M mixed rows, same speed).
    """
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool()


class _BlockParser:
    def __init__(self, columns: list[Column], encoding: str):
        self.columns = columns
        self.encoding = encoding
        pc.cast  # load the lazy modules here, not first in the parsing thread
        names = [f"c{i}" for i in range(len(columns))]
        self._names = names
        # COPY's text format: one line per row, tab-separated, \N for NULL,
        # and backslash escapes (undone by unescape_copy_text) instead of quotes.
        self._parse_opts = pcsv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,  # a one-column row holding '' is an empty line
        )
        common = dict(
            null_values=["\\N"],
            strings_can_be_null=True,
            true_values=["t"],
            false_values=["f"],
            timestamp_parsers=[pcsv.ISO8601],
        )
        self._typed = pcsv.ConvertOptions(
            column_types={
                n: c.kind.csv_type for n, c in zip(names, columns)
            },
            **common,
        )
        self._text = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, **common
        )

    def _read(self, data: pa.Buffer, convert: pcsv.ConvertOptions) -> pa.Table:
        # One chunk per block, on this (the parsing) thread: the reading
        # thread and the server keep the other cores busy, and a block that is
        # one chunk becomes a record batch without a copy.
        return pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(
                column_names=self._names, use_threads=False, block_size=data.size + 1
            ),
            parse_options=self._parse_opts,
            convert_options=convert,
            memory_pool=parse_pool(),
        )

    def parse(self, raw: RawBlock, num_rows: int) -> Block:
        if self.encoding not in ("utf-8", "utf8"):
            raw = bytearray(bytes(raw).decode(self.encoding).encode("utf-8"))
        data = pa.py_buffer(raw)
        try:
            table = self._read(data, self._typed)
            typed = True
        except pa.ArrowInvalid:
            # infinity, BC dates, 24:00:00...: everything as PostgreSQL's
            # text, then the robust converters.
            table = self._read(data, self._text)
            typed = False
        if table.num_rows != num_rows:
            raise psycopg.InternalError(
                f"COPY sent {num_rows} rows but {table.num_rows} were parsed"
            )
        escaped = _BACKSLASH.search(raw) is not None  # COPY escapes are rare: spare a scan per column
        out, text = [], set()
        for i, (col, chunked) in enumerate(zip(self.columns, table.columns)):
            kind = col.kind
            if escaped and pa.types.is_string(chunked.type):
                chunked = pa.chunked_array(
                    [unescape_copy_text(a) for a in chunked.chunks], pa.string()
                )
            if kind.deferred:
                out.append(chunked.chunks)
                continue
            chunks, as_text = _finish(col, kind.from_csv if typed else kind.from_text, chunked.chunks)
            out.append(chunks)
            if as_text:
                text.add(i)
        return Block(out, num_rows, frozenset(text))


class _BinaryBlockParser:
    """Blocks of COPY's binary format, decoded by ``_pgcopy`` into Arrow buffers.

    The decoder releases the GIL, so the reading loop keeps receiving while a
    block is decoded, and writes into buffers from the parsing memory pool
    that become the Arrow arrays as they are.  With ``views``, strings and
    bytea come as ``string_view``/``binary_view``, which polars adopts
    without a copy.
    """

    def __init__(self, columns: list[Column], views: bool = False):
        self.columns = columns
        codes, params, self._types = [], [], []
        for c in columns:
            kind, code, param, type_ = c.kind, c.wire, 0, c.kind.arrow_type
            declared = kind.csv_type if code == "n" else None
            if declared is not None and pa.types.is_decimal128(declared) and "N" in _pgcopy.CODES:
                # numeric(p<=38, s) straight into its decimal128.
                code, param, type_ = "N", declared.scale, declared
            elif code == "n":
                # Other numerics as numeric_out's text, decided by the Numeric kind.
                type_ = pa.string()
            elif views and code in "syju" and not kind.deferred:
                param = 1
                type_ = pa.binary_view() if pa.types.is_binary(type_) else pa.string_view()
            codes.append(code)
            params.append(param)
            self._types.append(type_)
        self.codes = "".join(codes).encode("ascii")
        self.params = bytes(params)
        self._allocate = functools.partial(pa.allocate_buffer, memory_pool=parse_pool())

    def _past_range(self, raw: RawBlock, codes: bytes) -> tuple[int, list, bytes, dict[int, pa.Array]]:
        """Decode a block holding a timestamp or interval past Arrow's range.

        The timestamp and interval columns are decoded as raw bytes first, to
        find which hold such a value; the block is then decoded with only
        those as raw bytes, which become PostgreSQL's text.
        """
        suspects = [i for i, c in enumerate(codes) if c in b"TI"]
        trial = bytes(ord("y") if i in suspects else c for i, c in enumerate(codes))
        _, buffers, _ = _pgcopy.decode(raw, trial, self._allocate, self.params)
        raw_columns = {i: self._raw(buffers[i]) for i in suspects}
        bad = [i for i in suspects if any(_wire_text(codes[i], v, self.columns[i]) is not None
                                          for v in raw_columns[i] if v is not None)]
        final = bytes(ord("y") if i in bad else c for i, c in enumerate(codes))
        rows, buffers, used = _pgcopy.decode(raw, final, self._allocate, self.params)
        text = {}
        for i in bad:
            text[i] = pa.array([None if v is None else _wire_text(codes[i], v, self.columns[i], True)
                                for v in raw_columns[i]], pa.string())
        return rows, buffers, used, text

    @staticmethod
    def _raw(buffers: tuple) -> list[bytes | None]:
        validity, offsets, values = buffers
        n = len(offsets) // 4 - 1
        return pa.Array.from_buffers(pa.binary(), n, [validity, offsets, values]).to_pylist()

    def _type(self, i: int, code: int) -> pa.DataType:
        # An 'N' column read as text ('n') in a block holding NaN or Infinity.
        return pa.string() if code == ord("n") else self._types[i]

    def parse(self, raw: RawBlock, num_rows: int) -> Block:
        codes = self.codes
        try:
            try:
                rows, buffers, used = _pgcopy.decode(raw, codes, self._allocate, self.params)
            except _pgcopy.DecimalOverflow:
                # Digits past a numeric's typmod (never seen from PostgreSQL
                # itself): this block's numerics as text, which Numeric decides.
                codes = codes.replace(b"N", b"n")
                rows, buffers, used = _pgcopy.decode(raw, codes, self._allocate, self.params)
            text: dict[int, pa.Array] = {}
        except OverflowError:
            rows, buffers, used, text = self._past_range(raw, codes)
        except ValueError as ex:
            raise psycopg.InternalError(f"{ex} (COPY sent {num_rows} rows)") from None
        if rows != num_rows:
            raise psycopg.InternalError(f"COPY sent {num_rows} rows but {rows} were decoded")
        out = []
        for i, (code, (validity, offsets, values)) in enumerate(zip(used, buffers)):
            if i in text:
                out.append([text[i]])
                continue
            if code == ord("V"):  # list<float32>: offsets, and the floats as its child
                floats = pa.Array.from_buffers(pa.float32(), values.size // 4, [None, values])
                array = pa.Array.from_buffers(self._types[i], rows, [validity, offsets], children=[floats])
            else:
                bufs = [validity] if offsets is None else [validity, offsets]
                array = pa.Array.from_buffers(self._type(i, code), rows, bufs + [values])
            out.append([array])
        return Block(out, rows, frozenset(text))


def _wire_text(code: int, value: bytes, col: Column, always: bool = False) -> str | None:
    """A binary timestamp or interval as PostgreSQL's text: if Arrow cannot hold it, or ``always``."""
    us = int.from_bytes(value[:8], "big", signed=True)
    if code == ord("T"):
        if us == 2**63 - 1 or us == -(2**63):  # PostgreSQL's ±infinity
            return ("infinity" if us > 0 else "-infinity") if always else None
        shifted = us + 946_684_800_000_000  # to microseconds since 1970
        if not always and TIMESTAMP_NEG_INFINITY_US < shifted < TIMESTAMP_INFINITY_US:
            return None
        return timestamp_text(shifted, col.kind.tz is not None)
    if not always and abs(us) <= (2**63 - 1) // 1000:
        return None
    days = int.from_bytes(value[8:12], "big", signed=True)
    months = int.from_bytes(value[12:16], "big", signed=True)
    return interval_text(months, days, us)


_BACKSLASH = re.compile(rb"\\")
_ESCAPES = [("\\b", "\b"), ("\\f", "\f"), ("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\v", "\v")]


def unescape_copy_text(arr: pa.Array) -> pa.Array:
    """Undo COPY text-format escaping (``\\\\ \\b \\f \\n \\r \\t \\v``) in one string array.

    COPY TO emits no other escapes.  ``\\\\`` goes first, to NUL -- which
    PostgreSQL text never holds -- so ``\\\\n`` stays a backslash and an n.
    Arrays without a backslash (most) are returned as they are.
    """
    if len(arr) == 0 or not pc.any(pc.match_substring(arr, "\\")).as_py():
        return arr
    out = pc.replace_substring(arr, "\\\\", "\x00")
    for escaped, char in _ESCAPES:
        out = pc.replace_substring(out, escaped, char)
    return pc.replace_substring(out, "\x00", "\\")


def text_block(
    columns: list[Column], values: list[list[bytes | None]], num_rows: int, encoding: str = "utf-8"
) -> Block:
    """A block from PostgreSQL text values (the row path)."""
    out, text = [], set()
    utf8 = encoding in ("utf-8", "utf8")
    for i, (col, vals) in enumerate(zip(columns, values)):
        if utf8:
            arr = pa.array(vals, pa.binary()).cast(pa.string())
        else:
            arr = pa.array([v if v is None else v.decode(encoding) for v in vals], pa.string())
        if col.kind.deferred:
            out.append([arr])
            continue
        chunks, as_text = _finish(col, col.kind.from_text, [arr])
        out.append(chunks)
        if as_text:
            text.add(i)
    return Block(out, num_rows, frozenset(text))


def _finish(col: Column, convert: Callable[[pa.Array], pa.Array],
            chunks: list[pa.Array]) -> tuple[list[pa.Array], bool]:
    """``convert`` applied to a column's text chunks; the text itself (True) past Arrow's range."""
    try:
        with _naming(col):
            return [convert(a) for a in chunks], False
    except UnrepresentableValue:
        if not beyond_arrow(col.kind) or not all(pa.types.is_string(a.type) for a in chunks):
            raise
        return chunks, True


@contextlib.contextmanager
def _naming(col: Column) -> Iterator[None]:
    """Put the column's name into an UnrepresentableValue that lacks it."""
    try:
        yield
    except UnrepresentableValue as ex:
        if "column " in str(ex):
            raise
        raise UnrepresentableValue(
            f"column {col.name!r} ({col.kind.pgname}): {ex}; cast it in SQL (e.g. ::text) to read it as text"
        ) from None


# ---------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------


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
            raise ValueError(f"copy_format must be 'binary' or 'text', not {copy_format!r}")
        if batch_rows is not None and batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        if batch_bytes < 1:
            raise ValueError("batch_bytes must be at least 1")
        check_query(query)
        self.conn = conn
        self.query = query
        self.params = params
        self.batch_rows = batch_rows or 2**62
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
                raise _NotCopyable(res.error_message)
            pgconn.send_describe_prepared(b"")
            res = self._result()
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise _NotCopyable(res.error_message)
        enc = conn.info.encoding
        return [(res.fname(i).decode(enc), res.ftype(i), res.fmod(i)) for i in range(res.nfields)]

    def _result(self) -> pq.abc.PGresult:
        """The one result of the command just sent (waiting in slices); lost connections raise."""
        pgconn = self.conn.pgconn
        _flush(pgconn)
        first = None
        while True:
            while pgconn.is_busy():
                _wait_readable(pgconn)
            res = pgconn.get_result()
            if res is None:
                break
            first = first or res
        if first is None or pgconn.status == pq.ConnStatus.BAD:
            raise _lost_error(pgconn, self.conn.info.encoding)
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
        that its position can be mapped back (``_guard.original_position``).
        """
        try:
            yield from self._blocks()
        except psycopg.OperationalError as exc:
            self._note_edits(exc)
            pgconn = self.conn.pgconn
            if self.conn.broken and str(exc) == "the connection is closed":
                # psycopg's words for a connection that died earlier in this
                # read (e.g. while a refused COPY was rolled back): say it was lost.
                exc = _lost_error(pgconn, self.conn.info.encoding)
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
        if not several and _first_word(text) in _COPYABLE_FIRST_WORDS:
            gen = self._copy_blocks(_strip_terminator(text))
            try:
                first = next(gen)
            except StopIteration:
                return
            except _NotCopyable:
                pass
            else:
                yield first
                yield from gen
                return
        yield from self._row_blocks(text)

    def _copy_blocks(self, text: str) -> Iterator[Block]:
        conn = self.conn
        enc = conn.info.encoding
        with _Scope(conn, self._committed, self._probe()) as scope:
            fields = self._describe(text.encode(enc))
            if not fields:
                raise _NotCopyable("no columns")
            self.columns = TypeResolver(conn, scope.settings).resolve(fields)
            if self.progress is not None:
                self.estimate = self._estimate(text)
            binary = self._binary_ok()
            if not binary and self._text is not None and self._text.output_changes:
                raise _NotCopyable("the query changes an output setting")  # the row path checks it
            stmt = "COPY (\n" + text + "\n) TO STDOUT" + (" (FORMAT binary)" if binary else "")
            try:
                self._start_copy(stmt.encode(enc))
            except (pgerrors.SyntaxError, pgerrors.FeatureNotSupported) as ex:
                raise _NotCopyable(str(ex)) from ex
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
            BINARY_COPY
            and self.copy_format == "binary"
            and _pgcopy is not None
            and info.encoding in ("utf-8", "utf8")
            and (info.parameter_status("server_encoding") or "").upper() == "UTF8"
            and all(c.wire is not None for c in self.columns)
        )

    def _start_copy(self, stmt: bytes) -> None:
        """Send the COPY; return once it streams, or raise the server's error.

        Driven on the libpq connection rather than with ``cursor.copy()``,
        whose context holds the connection's lock for the whole COPY: a
        caller touching the connection between two batches would deadlock
        instead of getting psycopg's "another command is already in progress".
        """
        pgconn = self.conn.pgconn
        pgconn.send_query(stmt)
        _flush(pgconn)
        while pgconn.is_busy():
            _wait_readable(pgconn)
        res = pgconn.get_result()
        if res is not None and res.status == pq.ExecStatus.COPY_OUT:
            return
        error = None
        while res is not None:
            if error is None and res.status == pq.ExecStatus.FATAL_ERROR:
                error = pgerrors.error_from_result(res, encoding=self.conn.info.encoding)
            res = pgconn.get_result()
        raise error or psycopg.InternalError("COPY did not start")

    def _copy_loop(self, binary: bool) -> Iterator[Block]:
        conn = self.conn
        pgconn = conn.pgconn
        if binary:
            parser: _BlockParser | _BinaryBlockParser = _BinaryBlockParser(self.columns, self.views)
        else:
            parser = _BlockParser(self.columns, conn.info.encoding)
        pending: deque[Future[Block]] = deque()
        executor = ThreadPoolExecutor(1, thread_name_prefix="neon-notebook-parse")
        get = pgconn.get_copy_data
        limit_rows, limit_bytes = self.batch_rows, self.batch_bytes
        # Rows are counted as messages (one per row) when batches are cut by
        # rows, and in the binary format, which has no line ends to count.
        by_rows = limit_rows < 2**62 or binary
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
            if NATIVE_RECEIVE and native_receive():
                # The C loop: messages appended without the GIL until a block
                # is full or the socket has nothing more; rows counted exactly.
                # Each call holds the connection's lock, as psycopg's own calls
                # do, so no other thread uses the PGconn while the GIL is off.
                buf = _pgcopy.RowBuffer()
                receive, ptr, lock = _pgcopy.receive, pgconn.pgconn_ptr, conn.lock
                while True:
                    with lock:
                        status, got = receive(ptr, buf, limit_rows - block_rows, limit_bytes)
                    block_rows += got
                    if status == _pgcopy.FULL:
                        yield from submit(buf, block_rows)
                        buf = _pgcopy.RowBuffer()
                        block_rows = 0
                        self._report()
                    elif status == _pgcopy.WAIT:
                        if progress_on and time.monotonic() - self._last_progress >= PROGRESS_INTERVAL_S:
                            self.rows, self.bytes = done_rows + block_rows, done_bytes + len(buf)
                            self._report()
                        _wait_readable(pgconn)
                    elif status == _pgcopy.DONE:
                        self._finish_copy(pgconn)
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
                        _wait_readable(pgconn)
                    else:
                        self._finish_copy(pgconn)
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

    def _finish_copy(self, pgconn: pq.abc.PGconn) -> None:
        """After CopyDone: the command's result, raised as the driver's error if one."""
        error = None
        while (res := pgconn.get_result()) is not None:
            if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_OUT):
                error = error or pgerrors.error_from_result(res, encoding=self.conn.info.encoding)
        if error is not None:
            raise error

    def _committed(self) -> None:
        self.committing = True

    def _probe(self) -> bool:
        """Whether the read's COMMIT may ask if the transaction wrote (see ``_Scope._commit_probed``).

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
            with _Scope(conn, self._committed, self._probe()) as scope:
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
        self.columns = TypeResolver(conn, settings).resolve(fields)
        self._check_output(settings, index, results)
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
        cur.execute(_READ_SETTINGS.encode(), prepare=False)
        return dict(zip(SETTINGS_READ, cur.fetchone()))

    def _check_output(self, settings: dict[str, str], index: int, results: int) -> None:
        """Refuse columns whose text the text's own SET made unreadable (or ambiguous)."""
        if self._text is None:
            return
        changes = self._text.output_changes
        if not changes:
            return
        statements = self._text.statements
        # One result per statement: a change after the statement whose rows
        # are read leaves the rows' format unknown.
        ambiguous = len(statements) != results or any(i > index for i in changes)
        unreadable = output_fixes(settings)
        unreadable.pop("bytea_output", None)  # escape output is decoded too
        for col in self.columns or []:
            for name in affected_by(col.kind):
                if name in unreadable:
                    raise OutputSettingChanged(
                        f"The query text sets {name} to {settings[name]!r}, in which PostgreSQL's "
                        f"text output of column {col.name!r} ({col.kind.pgname}) cannot be read "
                        f"exactly. Leave {name} at a value the readers read ({_READABLE[name]}), "
                        "or cast the column to text in SQL."
                    )
                if ambiguous:
                    raise OutputSettingChanged(
                        f"The query text changes an output setting ({name} or another) after or "
                        f"around the statement whose rows are read, so the format of column "
                        f"{col.name!r} ({col.kind.pgname}) is not known. Put SET statements "
                        "before the query."
                    )


_READABLE = {
    "extra_float_digits": "1 or more; 0 or less rounds floats",
    "DateStyle": "ISO, with any field order",
    "IntervalStyle": "postgres or iso_8601",
    "bytea_output": "hex",
    "TimeZone": "any",
}
