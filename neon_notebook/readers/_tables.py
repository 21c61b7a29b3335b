"""A query's whole result as one Arrow table, pandas or polars DataFrame."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from ._assemble import table_from_blocks
from ._frames import DtypeBackend, to_pandas, to_polars
from ._reader import COLLECT_BLOCK_BYTES, CopyFormat, ProgressCallback, Reader
from ._sql import Params, Query

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import polars as pl
    import psycopg


def _release_unused() -> None:
    """Hand the parser's freed buffers back to the OS before a frame is built.

    The allocator keeps them for reuse otherwise, and the conversion's own
    allocations would stack on top (a few MB lower peak RSS per 1M rows).
    """
    pa.default_memory_pool().release_unused()


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
    return table_from_blocks(reader.columns or [], blocks, views)


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
