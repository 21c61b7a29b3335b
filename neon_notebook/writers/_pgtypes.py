"""Which PostgreSQL type holds an Arrow column exactly, and how it is encoded.

Binary COPY casts nothing: every value must arrive in its column's own wire
format.  A :class:`Target` says, for one column, the PostgreSQL type, the
encoder's op (the Arrow layout read + what is written, see
``_pgcopy_encode.c``), its parameter, the cast done in Python first (view and
dictionary layouts, at any depth, become plain ones), and for nested types the
targets of the children (a list's elements, a struct's fields as JSON).

- :func:`create_target`: the type a new table's column gets (``CREATE TABLE``),
  chosen so that every value of the Arrow type fits exactly.
- :func:`target`: writing into an existing column (its ``pg_attribute``
  ``atttypid``/``atttypmod``).  Integers go into any integer or numeric column,
  each value range checked (an int64 into int4 fails on the first value that
  does not fit, naming column and row), and into float4/float8 up to ±2^24 /
  ±2^53; floats into float4 or float8 when no value changes; decimals into
  numeric with at least their scale (a smaller scale would make PostgreSQL
  round); naive timestamps into ``timestamp`` and tz-aware ones into
  ``timestamptz`` only (the other pairings would need a time zone to change
  the values); strings into the text types, json/jsonb (the text is the JSON,
  the server checks it) and uuid (parsed as PostgreSQL does); lists into
  arrays of a type their elements go into; structs, maps and lists into
  json/jsonb; an all-NULL (null-typed) column into any column.
- :func:`create_table`: the ``CREATE TABLE`` statement for a schema.

Nanosecond timestamps, times and durations: PostgreSQL keeps microseconds, so
a value is written when it is a whole number of microseconds and is an error
otherwise (never rounded silently).  The full table is ``readers/WRITE_TYPES.md``.
Type OIDs and names come from :mod:`neon_notebook.readers._registry`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.types as pt
from psycopg import sql

from ..errors import ConfigurationError
from ..readers import _registry

BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, JSON = 16, 17, 19, 20, 21, 23, 25, 114
FLOAT4, FLOAT8, BPCHAR, VARCHAR = 700, 701, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC = 1082, 1083, 1114, 1184, 1186, 1700
UUID, JSONB = 2950, 3802

MAXDIM = 6  # PostgreSQL's arrays have at most 6 dimensions
_UNITS = {"s": 0, "ms": 1, "us": 2, "ns": 3}
_INT_SOURCES = {8: "b", 16: "h", 32: "i", 64: "l"}
_INT_WIRE = {INT2: "2", INT4: "4", INT8: "8", NUMERIC: "N", FLOAT8: "G", FLOAT4: "g"}
_FLOAT_WIRE = {("e", FLOAT4): "h", ("e", FLOAT8): "E", ("f", FLOAT4): "f", ("f", FLOAT8): "F",
               ("d", FLOAT8): "F"}
#: Columns whose binary input is the string's own bytes (the server checks lengths, JSON).
_TEXT_TYPES = {TEXT: "y", VARCHAR: "y", BPCHAR: "y", NAME: "y", JSON: "y", JSONB: "J", UUID: "U"}
#: Scalar (kind, column type) pairs and the wire target; integers, floats and strings above.
_WIRE = {("bool", BOOL): "?", ("binary", BYTEA): "y", ("date32", DATE): "D", ("date64", DATE): "M",
         ("timestamp", TIMESTAMP): "T", ("timestamptz", TIMESTAMPTZ): "T", ("time", TIME): "t",
         ("duration", INTERVAL): "I", ("interval", INTERVAL): "R", ("uuid", UUID): "u"}
#: The type a new table's column gets, by kind (integers, floats, decimals and lists aside).
_CREATE = {"bool": BOOL, "string": TEXT, "binary": BYTEA, "date32": DATE, "date64": DATE,
           "timestamp": TIMESTAMP, "timestamptz": TIMESTAMPTZ, "time": TIME, "duration": INTERVAL,
           "interval": INTERVAL, "uuid": UUID, "json": JSONB, "struct": JSONB, "map": JSONB}
#: The smallest integer type holding every value of each Arrow integer type.
_INT_CREATE = {pa.int8(): INT2, pa.int16(): INT2, pa.int32(): INT4, pa.int64(): INT8,
               pa.uint8(): INT2, pa.uint16(): INT4, pa.uint32(): INT8}
#: Values inside JSON, by kind: the encoder's JSON target (ISO strings for the temporal ones).
_JSON_WIRE = {"null": "j", "bool": "j", "int": "j", "float": "j", "decimal": "j", "string": "j",
              "date32": "k", "date64": "k", "timestamp": "K", "timestamptz": "Z", "time": "q",
              "uuid": "w", "json": "y"}
#: String columns a reader tagged (``field.metadata[b"pg_type"]``) are created as that type.
_TAGGED = {b"json": JSON, b"jsonb": JSONB, b"uuid": UUID}


@dataclass(frozen=True)
class Target:
    """How one Arrow column is written: into which PostgreSQL type, with which op."""

    oid: int                          # the PostgreSQL type's OID (0 inside JSON)
    sql_type: str                     # its name in DDL, with the typmod: 'numeric(12,2)'
    op: bytes                         # the encoder's source + target codes
    param: int = 0                    # time unit (0 s .. 3 ns), decimal scale, fixed list size
    cast: pa.DataType | None = None   # what the column is cast to before encoding
    typmod: int = -1                  # the column's (an array's: its elements') typmod
    children: tuple[Target, ...] = ()  # a list's element, a struct's fields, a map's key and value
    names: tuple[bytes, ...] = ()     # a struct's fields as JSON keys: b'"name":'
    extra: int = 0                    # an array's element type OID
    whole: bool = False               # floats into an integer column: whole numbers, NaN as NULL


def _plain(arrow: pa.DataType) -> pa.DataType:
    """The type with dictionary and view layouts replaced, at any depth, by the plain ones read."""
    if pt.is_dictionary(arrow):
        return _plain(arrow.value_type)
    if pt.is_string_view(arrow):
        return pa.string()
    if pt.is_binary_view(arrow):
        return pa.binary()
    if pt.is_struct(arrow):
        return pa.struct([f.with_type(_plain(f.type)) for f in arrow])
    if pt.is_map(arrow):
        return pa.map_(arrow.key_field.with_type(_plain(arrow.key_type)),
                       arrow.item_field.with_type(_plain(arrow.item_type)), arrow.keys_sorted)
    element = getattr(arrow, "value_field", None)
    if element is None or not _is_list(arrow):
        return arrow
    element = element.with_type(_plain(element.type))
    if pt.is_fixed_size_list(arrow):
        return pa.list_(element, arrow.list_size)
    make = {pt.is_list: pa.list_, pt.is_large_list: pa.large_list, pt.is_list_view: pa.list_view,
            pt.is_large_list_view: pa.large_list_view}
    return next(f(element) for test, f in make.items() if test(arrow))


def _is_list(arrow: pa.DataType) -> bool:
    return (pt.is_list(arrow) or pt.is_large_list(arrow) or pt.is_fixed_size_list(arrow)
            or pt.is_list_view(arrow) or pt.is_large_list_view(arrow))


def _kind(arrow: pa.DataType) -> str | None:
    """A short class of a plain Arrow type: what PostgreSQL types it may go into."""
    if isinstance(arrow, pa.UuidType):
        return "uuid"
    if isinstance(arrow, pa.JsonType):
        return "json"
    if isinstance(arrow, pa.BaseExtensionType):
        return None
    for name, test in (("null", pt.is_null), ("bool", pt.is_boolean), ("int", pt.is_integer),
                       ("float", pt.is_floating), ("decimal", pt.is_decimal),
                       ("date32", pt.is_date32), ("date64", pt.is_date64), ("time", pt.is_time),
                       ("duration", pt.is_duration), ("interval", pt.is_interval),
                       ("list", _is_list), ("struct", pt.is_struct), ("map", pt.is_map)):
        if test(arrow):
            return name
    if pt.is_timestamp(arrow):
        return "timestamptz" if arrow.tz is not None else "timestamp"
    if pt.is_string(arrow) or pt.is_large_string(arrow):
        return "string"
    if pt.is_binary(arrow) or pt.is_large_binary(arrow):
        return "binary"
    return None


def _source(arrow: pa.DataType) -> tuple[str, int] | None:
    """The encoder's source code and param for a plain Arrow type (None: unsupported)."""
    kind = _kind(arrow)
    if kind == "int":
        code = _INT_SOURCES[arrow.bit_width]
        return (code if pt.is_signed_integer(arrow) else code.upper()), 0
    if kind == "decimal":
        code = {32: "i", 64: "l", 128: "x", 256: "X"}[arrow.bit_width]
        return (code, arrow.scale) if arrow.scale >= 0 else None
    if kind == "float":
        return {16: "e", 32: "f", 64: "d"}[arrow.bit_width], 0
    if kind in ("timestamp", "timestamptz", "duration", "time"):
        return ("i" if pt.is_time32(arrow) else "l"), _UNITS[arrow.unit]
    if kind == "list":
        if pt.is_fixed_size_list(arrow):
            return "#", arrow.list_size
        return next(c for test, c in ((pt.is_list, "+"), (pt.is_large_list, "="),
                                      (pt.is_list_view, "/"), (pt.is_large_list_view, "%")) if test(arrow)), 0
    if kind == "json":
        arrow = arrow.storage_type
        kind = None if pt.is_string_view(arrow) else "string"
    if kind == "string" or kind == "binary":
        return ("S" if pt.is_large_string(arrow) or pt.is_large_binary(arrow) else "s"), 0
    if kind == "interval":
        return ("z", 0) if arrow == pa.month_day_nano_interval() else None
    code = {"null": "0", "bool": "?", "date32": "i", "date64": "l", "uuid": "w", "struct": "{",
            "map": "<"}.get(kind or "")
    return None if code is None else (code, 0)


def _unsupported(label: str, arrow: pa.DataType) -> ConfigurationError:
    return ConfigurationError(
        f"{label}: writing Arrow type {arrow} is not supported (supported: bool, "
        "integers, floats, decimals with a scale >= 0, strings, binary, date, timestamp, time, "
        "duration, month_day_nano interval, uuid, lists of these, structs and maps); cast the "
        "column first")


def _numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric column's atttypmod, or None when unconstrained."""
    if typmod < 4:
        return None
    packed = typmod - 4
    return (packed >> 16) & 0xFFFF, ((packed & 0x7FF) ^ 1024) - 1024


def _type_name(oid: int, typmod: int, type_name: str | None = None) -> str:
    element = _registry.array_element(oid)
    if element is not None:
        return _type_name(element, typmod) + "[]"
    row = _registry.builtin(oid)
    name = row.name if row else (type_name or f"type {oid}")
    if oid == NUMERIC and (ps := _numeric_typmod(typmod)):
        return f"numeric({ps[0]},{ps[1]})"
    if oid in (VARCHAR, BPCHAR) and typmod >= 4:
        return f"{name}({typmod - 4})"
    return name


def target(field: pa.Field, oid: int, typmod: int = -1, type_name: str | None = None) -> Target:
    """How ``field`` is written into an existing column of type ``oid`` (with ``typmod``).

    ``type_name`` (``format_type``'s) lets extension types with no fixed OID be
    recognised (``citext``).  Raises ConfigurationError naming the column when
    its values cannot be written into that type exactly.
    """
    plain = _plain(field.type)
    made = _target(f"column {field.name!r}", plain, oid, typmod, type_name)
    return made if plain == field.type else replace(made, cast=plain)


def _target(label: str, arrow: pa.DataType, oid: int, typmod: int, type_name: str | None) -> Target:
    """``label`` ("column 'x'") starts the error messages."""
    kind, source = _kind(arrow), _source(arrow)
    if kind is None or source is None:
        raise _unsupported(label, arrow)
    code, param = source
    pg = _type_name(oid, typmod, type_name)
    wire = None
    if kind == "null":
        wire = "0"  # every value NULL: any column takes it
    elif kind == "list" and _registry.array_element(oid) is not None:
        return _array(label, arrow, oid, typmod, pg)
    elif kind in ("list", "struct", "map"):
        if oid in (JSON, JSONB):
            root = _json(label, arrow, "the value")
            return replace(root, oid=oid, sql_type=pg, op=root.op[:1] + (b"J" if oid == JSONB else b"j"))
    elif kind == "int":
        wire = _INT_WIRE.get(oid)
    elif kind == "float" and oid in (INT2, INT4, INT8):
        # pandas' ints with missing values are float64 with NaN: whole numbers go into the
        # integer column (range checked), NaN as NULL; a fraction or an infinity is an error.
        return Target(oid, pg, ("l" + _INT_WIRE[oid]).encode(), cast=pa.int64(), typmod=typmod, whole=True)
    elif kind == "float":
        wire = _FLOAT_WIRE.get((code, oid))
    elif kind == "decimal" and oid == NUMERIC:
        ps = _numeric_typmod(typmod)
        if ps is not None and ps[1] < arrow.scale:
            raise ConfigurationError(
                f"{label}: {arrow} has scale {arrow.scale} but the table's column is {pg}, "
                "so PostgreSQL would round the values; cast the data or widen the column")
        wire = "W" if code == "X" else "N"
    elif kind == "json":
        wire = {JSONB: "J", JSON: "y", TEXT: "y", VARCHAR: "y"}.get(oid)
    elif kind == "string":
        citext = type_name is not None and (type_name == "citext" or type_name.endswith(".citext"))
        wire = "y" if citext else _TEXT_TYPES.get(oid)
    else:
        wire = _WIRE.get((kind, oid))
    if wire is None:
        raise ConfigurationError(
            f"{label}: Arrow type {arrow} cannot be written exactly into the table's "
            f"column of type {pg}; cast the data or change the column")
    return Target(oid, pg, (code + wire).encode(), param, typmod=typmod)


def _array(label: str, arrow: pa.DataType, oid: int, typmod: int, pg: str) -> Target:
    """A PostgreSQL array of the innermost elements: one dimension per level of lists."""
    levels = []
    while _kind(arrow) == "list":
        levels.append(arrow)
        arrow = arrow.value_type
    if len(levels) > MAXDIM:
        raise ConfigurationError(
            f"{label}: lists nested {len(levels)} deep, but PostgreSQL's arrays have at "
            f"most {MAXDIM} dimensions")
    element = _registry.array_element(oid)
    node = _target(f"{label} (its elements)", arrow, element, typmod, None)
    for level in reversed(levels):
        code, param = _source(level)
        node = Target(oid, pg, (code + "A").encode(), param, typmod=typmod, children=(node,),
                      extra=element)
    return node


def _json(label: str, arrow: pa.DataType, path: str) -> Target:
    """The JSON of a value inside a json/jsonb column (``path`` names it in errors)."""
    kind, source = _kind(arrow), _source(arrow)
    if kind is None or source is None:
        raise _unsupported(f"{label} ({path})", arrow)
    code, param = source
    if kind == "struct":
        names = [f.name for f in arrow]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigurationError(
                f"{label}: {path} is a struct with several fields named {twice}, and a "
                "JSON object's keys are distinct; rename them")
        keys = tuple((json.dumps(n, ensure_ascii=False) + ":").encode() for n in names)
        children = tuple(_json(label, f.type, f"{path}.{f.name}") for f in arrow)
        return Target(0, "", b"{j", children=children, names=keys)
    if kind == "map":
        if _kind(arrow.key_type) not in ("string", "int"):
            raise ConfigurationError(
                f"{label}: {path} is a map with {arrow.key_type} keys, but JSON's keys are "
                "strings; give it string or integer keys")
        return Target(0, "", b"<j", children=(_json(label, arrow.key_type, f"{path}'s keys"),
                                              _json(label, arrow.item_type, f"{path}'s values")))
    if kind == "list":
        return Target(0, "", (code + "j").encode(), param,
                      children=(_json(label, arrow.value_type, f"{path}'s elements"),))
    wire = _JSON_WIRE.get(kind)
    if wire is None:
        raise ConfigurationError(
            f"{label}: {path} is {arrow}, which has no JSON form (JSON holds null, "
            "booleans, numbers, strings, arrays and objects; dates, timestamps, times and uuids "
            "become ISO strings); cast it first, e.g. to a string")
    return Target(0, "", (code + wire).encode(), param)


def create_target(field: pa.Field) -> Target:
    """The column type a new table gets for ``field``: one that holds every value exactly."""
    plain = _plain(field.type)
    tag = (field.metadata or {}).get(b"pg_type")
    if _kind(plain) == "string" and tag in _TAGGED:
        return target(field, _TAGGED[tag])
    oid, typmod = _create_type(f"column {field.name!r}", plain)
    return target(field, oid, typmod)


def _create_type(label: str, arrow: pa.DataType) -> tuple[int, int]:
    """(OID, typmod) of the type a new column of ``arrow`` gets."""
    kind = _kind(arrow)
    if kind == "null":
        raise ConfigurationError(
            f"{label} has no type to create it with: its Arrow type is null (every value "
            "is NULL). Give it a dtype (pandas: .astype('Int64'), 'string', ...; polars: .cast(); "
            "pyarrow: pa.nulls(n, type)) or create the table first and append")
    if _source(arrow) is None:
        raise _unsupported(label, arrow)
    if kind == "int":
        return (NUMERIC, _typmod(20, 0)) if arrow == pa.uint64() else (_INT_CREATE[arrow], -1)
    if kind == "decimal":
        return NUMERIC, _typmod(arrow.precision, arrow.scale)
    if kind == "float":
        return (FLOAT8 if arrow.bit_width == 64 else FLOAT4), -1
    if kind == "list":
        leaf = arrow
        while _kind(leaf) == "list":
            leaf = leaf.value_type
        element, typmod = _create_type(f"{label} (its elements)", leaf)
        row = _registry.builtin(element)
        if row is None or row.array is None:
            raise _unsupported(label, arrow)
        return row.array, typmod
    if kind not in _CREATE:
        raise _unsupported(label, arrow)
    return _CREATE[kind], -1


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
