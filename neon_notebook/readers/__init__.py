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

The work lives in private modules, one job each (names load on first use, so
that the decoders import without psycopg)::

    _sql       the SQL text a read runs: checked, bound, COPY-able or not
    _guard     what the text does: pooled-endpoint rewrites and refusals, commits
    _scope     the read's transaction and output settings; settle()
    _wait      every wait on libpq, in interruptible slices
    _copy      COPY on libpq: start, finish, the C reading loop's binding
    _reader    Reader: describe, the COPY reading loop, the row path
    _registry  one data row per PostgreSQL type: kind, Arrow type, wire code
    _kinds     Kind classes: PostgreSQL type -> Arrow, from text and CSV
    _text      PostgreSQL's text output <-> Arrow (dates, timestamps, bytea...)
    _settings  the output settings PostgreSQL's text follows, and the query reading them
    _output    what a read does with them: the fixes it sets, the changes it refuses
    _catalog   TypeResolver: column OIDs -> kinds, asking pg_type for the rest
    _arrays    array literals -> nested lists, without psycopg (the HTTP transport's)
    _decode    blocks -> Arrow: the binary (C) and text parsers, no psycopg
    _assemble  blocks -> columns in their decided types
    _batches   BatchStream, iter_batches
    _tables    read_arrow, read_pandas, read_polars
    _parquet   to_parquet
    _frames    Arrow -> pandas / polars / Parquet conversions
    _lazy      pyarrow.compute and pyarrow.csv loaded on first use, thread-safely
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BatchStream": "._batches",
    "iter_batches": "._batches",
    "read_arrow": "._tables",
    "read_pandas": "._tables",
    "read_polars": "._tables",
    "to_parquet": "._parquet",
    "parquet_target": "._parquet",
    "to_pandas": "._frames",
    "to_polars": "._frames",
    "CopyFormat": "._reader",
    "DATE_INFINITY_DAYS": "._text",
    "DATE_NEG_INFINITY_DAYS": "._text",
    "TIMESTAMP_INFINITY_US": "._text",
    "TIMESTAMP_NEG_INFINITY_US": "._text",
    "CommitUncertain": "..errors",
    "OutputSettingChanged": "..errors",
    "SessionSettingWarning": "..errors",
    "SessionStateRefused": "..errors",
    "TypeFallbackWarning": "..errors",
    "UnrepresentableValue": "..errors",
    "UnsupportedStatement": "..errors",
}

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

if TYPE_CHECKING:  # pragma: no cover
    from ..errors import (CommitUncertain, OutputSettingChanged, SessionSettingWarning, SessionStateRefused,
                          TypeFallbackWarning, UnrepresentableValue, UnsupportedStatement)
    from ._batches import BatchStream, iter_batches
    from ._frames import to_pandas, to_polars
    from ._parquet import to_parquet
    from ._reader import CopyFormat
    from ._tables import read_arrow, read_pandas, read_polars
    from ._text import DATE_INFINITY_DAYS, DATE_NEG_INFINITY_DAYS, TIMESTAMP_INFINITY_US, TIMESTAMP_NEG_INFINITY_US


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
