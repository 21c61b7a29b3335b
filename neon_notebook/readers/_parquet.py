"""A query's result streamed into a Parquet file, batch by batch."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ._batches import iter_batches
from ._frames import for_parquet, parquet_schema
from ._reader import DEFAULT_BATCH_ROWS, CopyFormat, ProgressCallback
from ._sql import Params, Query

if TYPE_CHECKING:  # pragma: no cover
    import psycopg


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
                    raise ConfigurationError(
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
