"""Query results as Arrow, pandas, polars and Parquet, fast, over a psycopg connection.

Every function takes an open ``psycopg.Connection`` (autocommit or not;
``prepare_threshold=None`` and PgBouncer transaction pooling are fine) and a
statement with optional parameters, bound client-side by psycopg's literal
quoting -- never by string formatting::

    from neon_notebook.readers import read_polars, iter_batches

    df = read_polars(conn, "SELECT * FROM trips WHERE city = %s", ["Paris"])
    with iter_batches(conn, "SELECT * FROM big", batch_rows=50_000) as stream:
        for batch in stream:          # pyarrow.RecordBatch, bounded memory
            ...

Queries run as ``COPY (query) TO STDOUT (FORMAT binary)``, decoded in blocks
by a small C decoder straight into Arrow buffers while the next block arrives
(COPY's text format, parsed by Arrow's CSV reader, for types the decoder does
not read); statements COPY cannot wrap (SHOW, EXPLAIN, utility statements,
several statements, ``INSERT ... RETURNING``) run through a row path that
gives the same types.  The type table is ``TYPES.md`` beside this file.

``progress(rows, bytes, estimate)`` callbacks get the rows and bytes received
so far and the planner's row estimate (one ``EXPLAIN``, only when a callback
is given); raising from one (KeyboardInterrupt included) cancels the read.

A read is one transaction (or a savepoint inside the caller's): interrupting
it (KeyboardInterrupt, Jupyter's stop button, ``_thread.interrupt_main()``)
cancels the query on the server and leaves the connection idle and usable.
Statements that refuse a transaction block (VACUUM, CREATE DATABASE...) run
outside one when the connection was idle.  On a pooled connection
(``conn.pooled``) nothing may outlive the read: a plain ``SET`` runs as ``SET
LOCAL`` with a :class:`SessionSettingWarning`, other session state is refused
(:class:`SessionStateRefused`); see "Statements and the pooled endpoint" in
``TYPES.md``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..errors import (
    CommitUncertain,
    OutputSettingChanged,
    SessionSettingWarning,
    SessionStateRefused,
    TypeFallbackWarning,
    UnrepresentableValue,
    UnsupportedStatement,
)
from ._frames import DtypeBackend, for_parquet, parquet_schema, to_pandas, to_polars
from ._stream import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    COLLECT_BLOCK_BYTES,
    Block,
    CopyFormat,
    Params,
    ProgressCallback,
    Query,
    Reader,
)
from ._types import (
    DATE_INFINITY_DAYS,
    _fallback,
    as_pg_text,
    beyond_arrow,
    DATE_NEG_INFINITY_DAYS,
    TIMESTAMP_INFINITY_US,
    TIMESTAMP_NEG_INFINITY_US,
    Column,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import polars as pl
    import psycopg

__all__ = [
    "BatchStream",
    "CommitUncertain",
    "CopyFormat",
    "DATE_INFINITY_DAYS",
    "DATE_NEG_INFINITY_DAYS",
    "TIMESTAMP_INFINITY_US",
    "OutputSettingChanged",
    "SessionSettingWarning",
    "SessionStateRefused",
    "TIMESTAMP_NEG_INFINITY_US",
    "TypeFallbackWarning",
    "UnrepresentableValue",
    "UnsupportedStatement",
    "iter_batches",
    "read_arrow",
    "read_pandas",
    "read_polars",
    "to_pandas",
    "to_parquet",
    "to_polars",
]


def _release_unused() -> None:
    """Hand the parser's freed buffers back to the OS before a frame is built.

    The allocator keeps them for reuse otherwise, and the conversion's own
    allocations would stack on top (a few MB lower peak RSS per 1M rows).
    """
    pa.default_memory_pool().release_unused()


def _field(col: Column, type_: pa.DataType) -> pa.Field:
    return pa.field(col.name, type_, metadata={"pg_type": col.kind.pgname})


def _decide(col: Column, chunks: list[pa.Array]) -> pa.DataType:
    kind = col.kind
    if not kind.deferred:
        return kind.arrow_type
    surveys = [kind.survey(c) for c in chunks] or [kind.survey(pa.array([], pa.string()))]
    return kind.decide(functools.reduce(kind.merge, surveys), col.name)


def _apply(col: Column, type_: pa.DataType, chunk: pa.Array) -> pa.Array:
    return col.kind.apply(type_, chunk, col.name) if col.kind.deferred else chunk


def _warn_text(col: Column) -> None:
    _fallback(col.name, col.kind.pgname, "it holds values past Arrow's range (see TYPES.md)")


def _chunks(col: Column, type_: pa.DataType, block: Block, i: int) -> list[pa.Array]:
    """Column ``i`` of a block in the column's decided type (text for values past Arrow's range)."""
    if i in block.text_columns:
        if type_ != pa.string():
            raise UnrepresentableValue(
                f"column {col.name!r} ({col.kind.pgname}) was read as {type_} from its first batch, "
                "but a later value is past Arrow's range; cast it in SQL (e.g. ::text)")
        return block.columns[i]
    if type_ == pa.string() and beyond_arrow(col.kind):
        return [as_pg_text(col.kind, c) for c in block.columns[i]]
    return [_apply(col, type_, c) for c in block.columns[i]]


def _no_columns(num_rows: int) -> pa.RecordBatch:
    """A batch of ``num_rows`` rows and no column (``SELECT FROM t``)."""
    return pa.record_batch({"_": pa.nulls(num_rows)}).select([])


class BatchStream:
    """Arrow record batches of one query, in order, as they arrive.

    Iterate it once.  Leaving it early (``close()``, the end of a ``with``
    block, an exception) cancels the query on the server and leaves the
    connection usable.  Each batch has at most ``batch_rows`` rows and about
    ``batch_bytes`` of COPY data; memory stays bounded by a few batches,
    whatever the result's size.

    The schema is fixed by the first batch (see ``TYPES.md``: an unconstrained
    ``numeric`` takes the scale its first batch needs); a later value the
    schema cannot hold raises :class:`UnrepresentableValue`.

    The read's transaction stays open while you iterate (the server streams
    as you consume), so a slow consumer holds a connection and a snapshot.
    The connection must not be used for anything else meanwhile: psycopg
    raises "another command is already in progress" if it is.

    Attributes a caller (e.g. a retry policy) can read at any time:

    ``delivered``       batches handed to the caller so far
    ``rows_delivered``  rows in those batches
    ``rows``, ``bytes`` rows and COPY bytes received from the server so far
    ``estimate``        the planner's row estimate (only with a progress callback)
    ``schema``          the Arrow schema, once known (after the first batch or the end)
    ``path``            ``"copy binary"``, ``"copy text"`` or ``"rows"``, once known
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        query: Query,
        params: Params = None,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        progress: ProgressCallback | None = None,
        copy_format: CopyFormat = "binary",
    ):
        self._reader = Reader(
            conn, query, params, batch_rows=batch_rows, batch_bytes=batch_bytes, progress=progress,
            copy_format=copy_format,
        )
        self._blocks = self._reader.blocks()
        self._types: list[pa.DataType] | None = None
        self.schema: pa.Schema | None = None
        self.delivered = 0
        self.rows_delivered = 0
        self.closed = False

    rows = property(lambda self: self._reader.rows, doc="Rows received so far.")
    bytes = property(lambda self: self._reader.bytes, doc="COPY bytes received so far.")
    estimate = property(lambda self: self._reader.estimate, doc="The planner's row estimate.")
    path = property(lambda self: self._reader.path, doc='"copy binary", "copy text" or "rows".')

    def _fix_schema(self, block: Block | None) -> None:
        cols = self._reader.columns or []
        self._types = [
            _decide(col, block.columns[i] if block else []) for i, col in enumerate(cols)
        ]
        for i in block.text_columns if block else ():
            _warn_text(cols[i])
            self._types[i] = pa.string()
        self.schema = pa.schema([_field(c, t) for c, t in zip(cols, self._types)])

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> pa.RecordBatch:
        try:
            block = next(self._blocks)
        except StopIteration:
            self.closed = True
            if self.schema is None:
                self._fix_schema(None)
            raise
        except BaseException:
            self.closed = True
            raise
        if self._types is None:
            self._fix_schema(block)
        cols = self._reader.columns
        if not cols:
            batch = _no_columns(block.num_rows)
            self.delivered += 1
            self.rows_delivered += batch.num_rows
            return batch
        arrays = []
        for i, (col, type_) in enumerate(zip(cols, self._types)):
            chunks = _chunks(col, type_, block, i)
            arrays.append(chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        self.delivered += 1
        self.rows_delivered += batch.num_rows
        return batch

    def read_all(self) -> pa.Table:
        """The remaining batches as one table."""
        batches = list(self)
        return pa.Table.from_batches(batches, schema=self.schema)

    def close(self) -> None:
        """Stop reading: cancels the query if it is still running."""
        self._blocks.close()
        self.closed = True

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<BatchStream {state}: {self.delivered} batches, {self.rows_delivered} rows "
            f"delivered, {self.rows} received>"
        )


def iter_batches(
    conn: psycopg.Connection,
    query: Query,
    params: Params = None,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress: ProgressCallback | None = None,
    copy_format: CopyFormat = "binary",
) -> BatchStream:
    """The result as a :class:`BatchStream` of ``pyarrow.RecordBatch``, in bounded memory.

    The query starts on the first ``next()``.  ``progress(rows, bytes,
    estimate)`` is called from the reading thread at most every 0.25 s and at
    the end; raising from it (e.g. KeyboardInterrupt) cancels the read.
    ``copy_format``: COPY's wire format, ``"binary"`` or ``"text"`` (the same
    types either way; see :data:`CopyFormat`).
    """
    return BatchStream(
        conn, query, params, batch_rows=batch_rows, batch_bytes=batch_bytes, progress=progress,
        copy_format=copy_format,
    )


def read_arrow(
    conn: psycopg.Connection,
    query: Query,
    params: Params = None,
    *,
    progress: ProgressCallback | None = None,
    copy_format: CopyFormat = "binary",
) -> pa.Table:
    """The whole result as one ``pyarrow.Table`` (chunked as it was read)."""
    return _read_table(conn, query, params, progress, copy_format=copy_format)


def _read_table(
    conn: psycopg.Connection,
    query: Query,
    params: Params,
    progress: ProgressCallback | None,
    views: bool = False,
    copy_format: CopyFormat = "binary",
) -> pa.Table:
    """read_arrow; ``views``: strings as ``string_view`` where the COPY binary path can."""
    reader = Reader(
        conn, query, params, batch_bytes=COLLECT_BLOCK_BYTES, progress=progress, views=views,
        copy_format=copy_format,
    )
    blocks = list(reader.blocks())
    cols = reader.columns or []
    if not cols:
        return pa.Table.from_batches([_no_columns(sum(b.num_rows for b in blocks))])
    arrays = []
    fields = []
    for i, col in enumerate(cols):
        if any(i in b.text_columns for b in blocks):
            _warn_text(col)
            type_ = pa.string()
            arrays.append(pa.chunked_array([c for b in blocks for c in _chunks(col, type_, b, i)], type_))
            fields.append(_field(col, type_))
            continue
        chunks = [c for b in blocks for c in b.columns[i]]
        type_ = _decide(col, chunks)
        if views and chunks and not col.kind.deferred:
            type_ = chunks[0].type  # string_view for string, where the path gave one
        arrays.append(pa.chunked_array([_apply(col, type_, c) for c in chunks], type=type_))
        fields.append(_field(col, type_))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_pandas(
    conn: psycopg.Connection,
    query: Query,
    params: Params = None,
    *,
    dtype_backend: DtypeBackend = "numpy_nullable",
    progress: ProgressCallback | None = None,
    copy_format: CopyFormat = "binary",
) -> pd.DataFrame:
    """The whole result as a ``pandas.DataFrame``.

    ``dtype_backend="numpy_nullable"`` (default): nullable ``Int*``/``Float*``/
    ``boolean``/``string`` dtypes, ``datetime64[us, tz]``, ``datetime64[ms]``
    for dates, ``ArrowDtype(decimal128)`` for numeric (values are
    ``decimal.Decimal``).  ``"pyarrow"``: ``ArrowDtype`` columns, the Arrow
    table without conversion.  :func:`to_pandas` converts a table you have.
    """
    table = read_arrow(conn, query, params, progress=progress, copy_format=copy_format)
    _release_unused()
    return to_pandas(table, dtype_backend)


def read_polars(
    conn: psycopg.Connection,
    query: Query,
    params: Params = None,
    *,
    progress: ProgressCallback | None = None,
    copy_format: CopyFormat = "binary",
) -> pl.DataFrame:
    """The whole result as a ``polars.DataFrame``, zero-copy from Arrow where polars can."""
    table = _read_table(conn, query, params, progress, views=True, copy_format=copy_format)
    _release_unused()
    return to_polars(table)


def parquet_target(path: str | os.PathLike[str]) -> str:
    """``path`` with ``~`` expanded, checked before any query runs (a bad path should not cost a read).

    Raises ``FileNotFoundError`` when its directory is missing and
    ``IsADirectoryError`` when ``path`` is a directory.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory: give a file name for the Parquet file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"the directory {folder} does not exist: create it first "
                                f"(os.makedirs) or choose another path for the Parquet file")
    return path


def to_parquet(
    conn: psycopg.Connection,
    query: Query,
    path: str | os.PathLike[str],
    params: Params = None,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    compression: str = "zstd",
    progress: ProgressCallback | None = None,
    copy_format: CopyFormat = "binary",
) -> int:
    """Stream the result into a Parquet file at ``path``; returns the number of rows.

    Written batch by batch in bounded memory, to ``path + ".partial"`` first and
    renamed when complete, so an interrupted read never leaves a truncated file.
    Intervals are stored as struct<months, days, nanoseconds> (Parquet has no
    month-day-nano type).
    """
    import pyarrow.parquet as pq

    path = parquet_target(path)
    partial = path + ".partial"
    writer = None
    rows = 0
    # Encoding and compressing a batch (GIL released) overlaps with reading the
    # next one; at most one batch waits to be written.
    pool = ThreadPoolExecutor(1, thread_name_prefix="neon-notebook-parquet")
    writing: Future | None = None
    try:
        with iter_batches(conn, query, params, batch_rows=batch_rows, progress=progress,
                          copy_format=copy_format) as stream:
            for batch in stream:
                if not batch.num_columns:
                    raise ValueError(
                        "the query returns rows without columns, which Parquet cannot store; "
                        "select at least one column"
                    )
                if writer is None:
                    writer = pq.ParquetWriter(
                        partial, parquet_schema(batch.schema), compression=compression
                    )
                if writing is not None:
                    writing.result()
                writing = pool.submit(writer.write_batch, for_parquet(batch))
                rows += batch.num_rows
        if writing is not None:
            writing.result()
            writing = None
        if writer is None:
            writer = pq.ParquetWriter(
                partial, parquet_schema(stream.schema), compression=compression
            )
        writer.close()
        writer = None
        os.replace(partial, path)
    finally:
        if writing is not None:
            writing.cancel()
            try:
                writing.result()
            except BaseException:
                pass
        pool.shutdown(wait=True)
        if writer is not None:
            writer.close()
        if os.path.exists(partial):
            os.remove(partial)
    return rows
