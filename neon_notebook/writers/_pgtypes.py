"""Which PostgreSQL type holds an Arrow column exactly, and how it is encoded.

Binary COPY casts nothing: every value must arrive in its column's own wire
format.  A :class:`Target` says, for one column, the PostgreSQL type, the
encoder's op (the Arrow layout read + the wire type written, see
``_pgcopy_encode.c``), its parameter, and the cast done in Python first (view
and dictionary layouts become plain strings).

- :func:`create_target`: the type a new table's column gets (``CREATE TABLE``),
  chosen so that every value of the Arrow type fits exactly.
- :func:`target`: writing into an existing column (its ``pg_attribute``
  ``atttypid``/``atttypmod``).  Integers go into any integer or numeric column,
  each value range checked (an int64 into int4 fails on the first value that
  does not fit, naming column and row); float32 into float4 or float8, float64
  into float8 only; decimals into numeric with at least their scale (a smaller
  scale would make PostgreSQL round); naive timestamps into ``timestamp`` and
  tz-aware ones into ``timestamptz`` only (the other pairings would need a time
  zone to change the values); strings into text/varchar, binary into bytea.
- :func:`create_table`: the ``CREATE TABLE`` statement for a schema.

Nanosecond timestamps, times and durations: PostgreSQL keeps microseconds, so
a value is written when it is a whole number of microseconds and is an error
otherwise (never rounded silently).  Unsupported yet (a
:class:`~neon_notebook.errors.ConfigurationError` naming the column): lists,
structs, maps, null-typed columns, float16, date64, decimal256, fixed-size
binary, month/day intervals, extension types.  Type OIDs and names come from
:mod:`neon_notebook.readers._registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.types as pt
from psycopg import sql

from ..errors import ConfigurationError
from ..readers import _registry

BOOL, BYTEA, INT8, INT2, INT4, TEXT = 16, 17, 20, 21, 23, 25
FLOAT4, FLOAT8, VARCHAR = 700, 701, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC = 1082, 1083, 1114, 1184, 1186, 1700

_UNITS = {"s": 0, "ms": 1, "us": 2, "ns": 3}
_INT_SOURCES = {8: "b", 16: "h", 32: "i", 64: "l"}
_INT_WIRE = {INT2: "2", INT4: "4", INT8: "8"}
#: The smallest integer type holding every value of each Arrow integer type.
_INT_CREATE = {pa.int8(): INT2, pa.int16(): INT2, pa.int32(): INT4, pa.int64(): INT8,
               pa.uint8(): INT2, pa.uint16(): INT4, pa.uint32(): INT8}


@dataclass(frozen=True)
class Target:
    """How one Arrow column is written: into which PostgreSQL type, with which op."""

    oid: int                          # the PostgreSQL type's OID
    sql_type: str                     # its name in DDL, with the typmod: 'numeric(12,2)'
    op: bytes                         # the encoder's source + target codes
    param: int = 0                    # time unit (0 s .. 3 ns) or decimal scale
    cast: pa.DataType | None = None   # what the column is cast to before encoding


def _source(arrow: pa.DataType) -> tuple[str, int, pa.DataType | None] | None:
    """The encoder's source code, param and prior cast for an Arrow type (None: unsupported)."""
    if pt.is_dictionary(arrow):
        value = arrow.value_type
        if pt.is_large_string(value):
            return "S", 0, pa.large_string()
        if pt.is_string(value) or pt.is_string_view(value):
            return "s", 0, pa.string()
        return None
    if pt.is_string_view(arrow):
        return "s", 0, pa.string()
    if pt.is_binary_view(arrow):
        return "s", 0, pa.binary()
    if pt.is_boolean(arrow):
        return "?", 0, None
    if pt.is_signed_integer(arrow):
        return _INT_SOURCES[arrow.bit_width], 0, None
    if pt.is_unsigned_integer(arrow):
        return _INT_SOURCES[arrow.bit_width].upper(), 0, None
    if pt.is_float32(arrow):
        return "f", 0, None
    if pt.is_float64(arrow):
        return "d", 0, None
    if pt.is_string(arrow) or pt.is_binary(arrow):
        return "s", 0, None
    if pt.is_large_string(arrow) or pt.is_large_binary(arrow):
        return "S", 0, None
    if pt.is_decimal128(arrow) and arrow.scale >= 0:
        return "x", arrow.scale, None
    if pt.is_date32(arrow):
        return "i", 0, None
    if pt.is_timestamp(arrow) or pt.is_time64(arrow) or pt.is_duration(arrow):
        return "l", _UNITS[arrow.unit], None
    if pt.is_time32(arrow):
        return "i", _UNITS[arrow.unit], None
    return None


def _kind(arrow: pa.DataType) -> str | None:
    """A short class of the (decoded) Arrow type: what PostgreSQL types it may go into."""
    if pt.is_dictionary(arrow):
        arrow = arrow.value_type
    for name, test in (("bool", pt.is_boolean), ("int", pt.is_integer), ("float", pt.is_floating),
                       ("decimal", pt.is_decimal128), ("date", pt.is_date32),
                       ("time", pt.is_time), ("duration", pt.is_duration)):
        if test(arrow):
            return name
    if pt.is_timestamp(arrow):
        return "timestamptz" if arrow.tz is not None else "timestamp"
    if pt.is_string(arrow) or pt.is_large_string(arrow) or pt.is_string_view(arrow):
        return "string"
    if pt.is_binary(arrow) or pt.is_large_binary(arrow) or pt.is_binary_view(arrow):
        return "binary"
    return None


def _unsupported(field: pa.Field) -> ConfigurationError:
    return ConfigurationError(
        f"column {field.name!r}: writing Arrow type {field.type} is not supported yet "
        "(supported: bool, integers, float32/64, decimal128, strings, binary, date32, "
        "timestamp, time, duration); cast the column to one of these first")


def _numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric column's atttypmod, or None when unconstrained."""
    if typmod < 4:
        return None
    packed = typmod - 4
    return (packed >> 16) & 0xFFFF, ((packed & 0x7FF) ^ 1024) - 1024


def _type_name(oid: int, typmod: int) -> str:
    row = _registry.builtin(oid)
    name = row.name if row else f"type {oid}"
    if oid == NUMERIC and (ps := _numeric_typmod(typmod)):
        return f"numeric({ps[0]},{ps[1]})"
    return name


def target(field: pa.Field, oid: int, typmod: int = -1) -> Target:
    """How ``field`` is written into an existing column of type ``oid`` (with ``typmod``).

    Raises ConfigurationError naming the column when its values cannot be
    written into that type exactly.
    """
    source = _source(field.type)
    kind = _kind(field.type)
    if source is None or kind is None:
        raise _unsupported(field)
    code, param, cast = source
    name = _type_name(oid, typmod)
    wire = None
    if kind == "int":
        wire = _INT_WIRE.get(oid) or ("N" if oid == NUMERIC else None)
    elif kind == "decimal" and oid == NUMERIC:
        ps = _numeric_typmod(typmod)
        if ps is not None and ps[1] < field.type.scale:
            raise ConfigurationError(
                f"column {field.name!r}: {field.type} has scale {field.type.scale} but the table's "
                f"column is {name}, so PostgreSQL would round the values; cast the data or "
                "widen the column")
        wire = "N"
    else:
        wire = {("bool", BOOL): "?", ("float", FLOAT8): "F", ("string", TEXT): "y",
                ("string", VARCHAR): "y", ("binary", BYTEA): "y", ("date", DATE): "D",
                ("timestamp", TIMESTAMP): "T", ("timestamptz", TIMESTAMPTZ): "T",
                ("time", TIME): "t", ("duration", INTERVAL): "I"}.get((kind, oid))
        if kind == "float" and oid == FLOAT4 and code == "f":
            wire = "f"
    if wire is None:
        raise ConfigurationError(
            f"column {field.name!r}: Arrow type {field.type} cannot be written exactly into the "
            f"table's column of type {name}; cast the data or change the column")
    return Target(oid, name, (code + wire).encode(), param, cast)


def create_target(field: pa.Field) -> Target:
    """The column type a new table gets for ``field``: one that holds every value exactly."""
    arrow = field.type
    kind = _kind(arrow)
    if kind == "int":
        if arrow == pa.uint64():
            return target(field, NUMERIC, _typmod(20, 0))
        return target(field, _INT_CREATE[arrow])
    if kind == "decimal" and _source(arrow) is not None:
        return target(field, NUMERIC, _typmod(arrow.precision, arrow.scale))
    oid = {"bool": BOOL, "string": TEXT, "binary": BYTEA, "date": DATE, "timestamp": TIMESTAMP,
           "timestamptz": TIMESTAMPTZ, "time": TIME, "duration": INTERVAL}.get(kind or "")
    if kind == "float" and _source(arrow) is not None:
        oid = FLOAT4 if pt.is_float32(arrow) else FLOAT8
    if oid is None:
        raise _unsupported(field)
    return target(field, oid)


def _typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | (scale & 0x7FF)) + 4


def create_targets(schema: pa.Schema) -> list[Target]:
    """:func:`create_target` of every field (the first unsupported one raises)."""
    return [create_target(field) for field in schema]


def create_table(table: sql.Composable, schema: pa.Schema,
                 targets: Sequence[Target] | None = None) -> sql.Composed:
    """``CREATE TABLE table (col type, ...)`` for ``schema``, identifiers quoted.

    ``table`` is a psycopg ``sql.Identifier`` (``Identifier("s", "t")`` for a schema).
    """
    targets = create_targets(schema) if targets is None else targets
    if not len(schema):
        raise ConfigurationError("a table needs at least one column; the data has none")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(field.name), sql.SQL(t.sql_type))
        for field, t in zip(schema, targets))
    return sql.SQL("CREATE TABLE {} ({})").format(table, columns)
