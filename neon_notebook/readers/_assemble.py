"""Blocks -> Arrow columns in their decided types, with the schema's metadata.

A column's type is fixed by its kind, or decided from its values for the
deferred kinds (``numeric``, arrays: see :mod:`._kinds`); a timestamp or
interval past Arrow's range makes the column PostgreSQL's text, with a warning.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from ..errors import UnrepresentableValue
from ._decode import Block
from ._kinds import Column, beyond_arrow, warn_fallback
from ._text import as_pg_text


def column_field(col: Column, type_: pa.DataType) -> pa.Field:
    """The column's Arrow field, its PostgreSQL type in the metadata (Parquet keeps it)."""
    return pa.field(col.name, type_, metadata={"pg_type": col.kind.pgname})


def decide_type(col: Column, chunks: list[pa.Array]) -> pa.DataType:
    """The column's Arrow type: its kind's, or decided from ``chunks`` for a deferred kind."""
    kind = col.kind
    if not kind.deferred:
        return kind.arrow_type
    surveys = [kind.survey(c) for c in chunks] or [kind.survey(pa.array([], pa.string()))]
    return kind.decide(functools.reduce(kind.merge, surveys), col.name)


def apply_type(col: Column, type_: pa.DataType, chunk: pa.Array) -> pa.Array:
    """A chunk in the decided type (a deferred kind's raw chunk converted)."""
    return col.kind.apply(type_, chunk, col.name) if col.kind.deferred else chunk


def warn_as_text(col: Column) -> None:
    """Warn that the column comes as PostgreSQL's text (a value past Arrow's range)."""
    warn_fallback(col.name, col.kind.pgname, "it holds values past Arrow's range (see TYPES.md)")


def column_chunks(col: Column, type_: pa.DataType, block: Block, i: int) -> list[pa.Array]:
    """Column ``i`` of a block in the column's decided type (text for values past Arrow's range)."""
    if i in block.text_columns:
        if type_ != pa.string():
            raise UnrepresentableValue(
                f"column {col.name!r} ({col.kind.pgname}) was read as {type_} from its first batch, "
                "but a later value is past Arrow's range; cast it in SQL (e.g. ::text)")
        return block.columns[i]
    if type_ == pa.string() and beyond_arrow(col.kind):
        return [as_pg_text(c) for c in block.columns[i]]
    return [apply_type(col, type_, c) for c in block.columns[i]]


def no_columns(num_rows: int) -> pa.RecordBatch:
    """A batch of ``num_rows`` rows and no column (``SELECT FROM t``)."""
    return pa.record_batch({"_": pa.nulls(num_rows)}).select([])


def table_from_blocks(cols: list[Column], blocks: list[Block], views: bool = False) -> pa.Table:
    """One table from a read's blocks, each column in its decided type.

    ``views``: keep ``string_view`` strings where the path gave them (for polars).
    """
    if not cols:
        return pa.Table.from_batches([no_columns(sum(b.num_rows for b in blocks))])
    arrays = []
    fields = []
    for i, col in enumerate(cols):
        if any(i in b.text_columns for b in blocks):
            warn_as_text(col)
            type_ = pa.string()
            arrays.append(pa.chunked_array([c for b in blocks for c in column_chunks(col, type_, b, i)], type_))
            fields.append(column_field(col, type_))
            continue
        chunks = [c for b in blocks for c in b.columns[i]]
        type_ = decide_type(col, chunks)
        if views and chunks and not col.kind.deferred:
            type_ = chunks[0].type  # string_view for string, where the path gave one
        arrays.append(pa.chunked_array([apply_type(col, type_, c) for c in chunks], type=type_))
        fields.append(column_field(col, type_))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
