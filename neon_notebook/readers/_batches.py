"""A query's result as a stream of Arrow record batches, in bounded memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ._assemble import column_chunks, column_field, decide_type, no_columns, warn_as_text
from ._decode import Block
from ._reader import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_ROWS, CopyFormat, ProgressCallback, Reader
from ._sql import Params, Query

if TYPE_CHECKING:  # pragma: no cover
    import psycopg


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
            decide_type(col, block.columns[i] if block else []) for i, col in enumerate(cols)
        ]
        for i in block.text_columns if block else ():
            warn_as_text(cols[i])
            self._types[i] = pa.string()
        self.schema = pa.schema([column_field(c, t) for c, t in zip(cols, self._types)])

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
            batch = no_columns(block.num_rows)
            self.delivered += 1
            self.rows_delivered += batch.num_rows
            return batch
        arrays = []
        for i, (col, type_) in enumerate(zip(cols, self._types)):
            chunks = column_chunks(col, type_, block, i)
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
