"""What each PostgreSQL type is to the readers: one data-only row per type.

A row gives a type's OID and name, its *kind* (how its values become Arrow:
the name of a :mod:`._kinds` class), the Arrow type when it is fixed, the
binary COPY decoder's *wire code* for what its send function writes (``None``:
only PostgreSQL's text output is read), and the OID of its array type.  The
binary decoder (``_pgcopy.c`` and :mod:`._decode`), the text decoders
(:mod:`._kinds`) and the pandas conversion (:mod:`._frames`) all read it; so can
a writer, or a transport that receives PostgreSQL's text output with type
OIDs (an HTTP one).

:func:`builtin` and :func:`array_element` look a type up by OID **without a
database**: builtin types have fixed OIDs.  Extension types (``vector``,
``citext``...) have none and are found by name (:data:`EXTENSIONS`) once the
catalog has been asked (:mod:`._catalog`); enums send their label as text
(:data:`ENUM_WIRE`).  A ``wire`` of a type without a row is ``None``.

The wire codes are defined here, once; the C decoder's alphabet
(``_pgcopy.CODES``) must be the same, which :mod:`._decode` checks at import.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# -- the binary COPY decoder's codes (the wire format a send function writes) ----------

BOOL = "?"            # bool -> bitmap
INT2 = "2"            # 2-byte big-endian -> native (int2)
INT4 = "4"            # 4 bytes: int4, oid, float4
INT8 = "8"            # 8 bytes: int8, float8, time (us)
DATE = "D"            # date -> date32 (+-infinity -> INT32_MAX/MIN)
TIMESTAMP = "T"       # timestamp[tz] -> int64 us since 1970 (+-infinity -> INT64_MAX/MIN+1)
INTERVAL = "I"        # interval -> month_day_nano
STRING = "s"          # text-like -> utf8
BYTES = "y"           # bytea -> binary (also: any value's raw bytes)
JSONB = "j"           # jsonb -> utf8, version byte dropped
UUID = "u"            # uuid -> canonical lowercase text
NUMERIC_TEXT = "n"    # numeric -> utf8, as numeric_out prints it
VECTOR = "V"          # pgvector's vector -> list<float32>
NUMERIC_DECIMAL = "N"  # numeric(p <= 38, s) -> decimal128(p, s); only where the C compiler has int128

#: Every code, in the C decoder's order (``_pgcopy.CODES``; without int128 it lacks ``N``).
WIRE_CODES = (BOOL + INT2 + INT4 + INT8 + DATE + TIMESTAMP + INTERVAL + STRING + BYTES + JSONB
              + UUID + NUMERIC_TEXT + VECTOR + NUMERIC_DECIMAL)
#: Codes whose values can come in Arrow's view layout (``string_view``/``binary_view``).
VIEW_CODES = STRING + BYTES + JSONB + UUID
#: Codes decoded into offsets + bytes (variable length).
VARIABLE_CODES = VIEW_CODES + NUMERIC_TEXT
#: Codes whose values can fall past their Arrow type's range (then: PostgreSQL's text).
RANGED_CODES = TIMESTAMP + INTERVAL
#: What an enum's send function writes: its label.
ENUM_WIRE = STRING


@dataclass(frozen=True)
class PgType:
    """One PostgreSQL type as the readers see it."""

    oid: int | None          # None for an extension type (no fixed OID)
    name: str                # pg_type.typname, also the name in messages and metadata
    kind: str                # a _kinds class, by name: how the values become Arrow
    arrow: pa.DataType | None = None  # the Arrow type, when neither typmod nor settings change it
    wire: str | None = None  # the binary decoder's code; None: COPY text only
    array: int | None = None  # the OID of its array type (one-dimensional arrays: list<arrow>)


_T = PgType
#: The builtin types with their own mapping; every other builtin type is text.
TYPES: tuple[PgType, ...] = (
    _T(16, "bool", "Bool", pa.bool_(), BOOL, 1000),
    _T(17, "bytea", "Bytea", pa.binary(), BYTES, 1001),
    _T(20, "int8", "Number", pa.int64(), INT8, 1016),
    _T(21, "int2", "Number", pa.int16(), INT2, 1005),
    _T(23, "int4", "Number", pa.int32(), INT4, 1007),
    _T(26, "oid", "Number", pa.uint32(), INT4, 1028),
    _T(700, "float4", "Number", pa.float32(), INT4, 1021),
    _T(701, "float8", "Number", pa.float64(), INT8, 1022),
    _T(1082, "date", "Date", pa.date32(), DATE, 1182),
    _T(1083, "time", "Time", pa.time64("us"), INT8, 1183),
    _T(1114, "timestamp", "Timestamp", pa.timestamp("us"), TIMESTAMP, 1115),
    _T(1184, "timestamptz", "Timestamp", None, TIMESTAMP, 1185),  # tagged with the session's TimeZone
    _T(1186, "interval", "Interval", pa.month_day_nano_interval(), INTERVAL, 1187),
    _T(1700, "numeric", "Numeric", None, NUMERIC_TEXT, 1231),  # its typmod decides
    # Text-like builtins: PostgreSQL's text, named for the docs and error messages.
    _T(18, "char", "Text", pa.string(), None, 1002),
    _T(19, "name", "Text", pa.string(), STRING, 1003),
    _T(25, "text", "Text", pa.string(), STRING, 1009),
    _T(114, "json", "Text", pa.string(), STRING, 199),
    _T(142, "xml", "Text", pa.string(), None, 143),
    _T(650, "cidr", "Text", pa.string(), None, 651),
    _T(705, "unknown", "Text", pa.string()),
    _T(774, "macaddr8", "Text", pa.string(), None, 775),
    _T(790, "money", "Text", pa.string(), None, 791),
    _T(829, "macaddr", "Text", pa.string(), None, 1040),
    _T(869, "inet", "Text", pa.string(), None, 1041),
    _T(1042, "bpchar", "Text", pa.string(), STRING, 1014),
    _T(1043, "varchar", "Text", pa.string(), STRING, 1015),
    _T(1266, "timetz", "Text", pa.string(), None, 1270),
    _T(1560, "bit", "Text", pa.string(), None, 1561),
    _T(1562, "varbit", "Text", pa.string(), None, 1563),
    _T(2950, "uuid", "Text", pa.string(), UUID, 2951),
    _T(3802, "jsonb", "Text", pa.string(), JSONB, 3807),
    _T(4072, "jsonpath", "Text", pa.string(), None, 4073),
)

#: Extension types, recognised by name (pg_type.typname) once the catalog was asked.
EXTENSIONS: dict[str, PgType] = {t.name: t for t in (
    _T(None, "vector", "Vector", pa.list_(pa.float32()), VECTOR),  # pgvector
    _T(None, "halfvec", "Vector", pa.list_(pa.float32())),         # text only, as sparsevec
    _T(None, "citext", "Text", pa.string(), STRING),
)}

#: Arrow type -> pandas' nullable dtype name, for ``to_pandas(dtype_backend="numpy_nullable")``.
PANDAS_DTYPES: dict[pa.DataType, str] = {
    pa.int8(): "Int8", pa.int16(): "Int16", pa.int32(): "Int32", pa.int64(): "Int64",
    pa.uint32(): "UInt32", pa.float32(): "Float32", pa.float64(): "Float64",
    pa.bool_(): "boolean", pa.string(): "string", pa.large_string(): "string",
}

_BY_OID = {t.oid: t for t in TYPES}
_ARRAY_ELEMENT = {t.array: t.oid for t in TYPES if t.array is not None}


def builtin(oid: int) -> PgType | None:
    """The row of a builtin type's OID (no database needed), or ``None`` (arrays included)."""
    return _BY_OID.get(oid)


def array_element(oid: int) -> int | None:
    """The element OID of a builtin array type's OID (no database needed), or ``None``."""
    return _ARRAY_ELEMENT.get(oid)


def known(oid: int) -> bool:
    """Whether the OID is a builtin type or array this registry describes."""
    return oid in _BY_OID or oid in _ARRAY_ELEMENT
