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
    warn_fallback(col.name, col.kind.pgname, "it holds values past Arrow's range (see TYPES.md)")


def _chunks(col: Column, type_: pa.DataType, block: Block, i: int) -> list[pa.Array]:
    """Column ``i`` of a block in the column's decided type (text for values past Arrow's range)."""
    if i in block.text_columns:
        if type_ != pa.string():
            raise UnrepresentableValue(
                f"column {col.name!r} ({col.kind.pgname}) was read as {type_} from its first batch, "
                "but a later value is past Arrow's range; cast it in SQL (e.g. ::text)")
        return block.columns[i]
    if type_ == pa.string() and beyond_arrow(col.kind):
        return [as_pg_text(c) for c in block.columns[i]]
    return [_apply(col, type_, c) for c in block.columns[i]]


def _no_columns(num_rows: int) -> pa.RecordBatch:
    """A batch of ``num_rows`` rows and no column (``SELECT FROM t``)."""
    return pa.record_batch({"_": pa.nulls(num_rows)}).select([])
