"""PostgreSQL type -> Arrow type, and PostgreSQL's text output -> Arrow arrays.

Every result column gets a :class:`Kind`, chosen from its type OID and typmod
(see ``TYPES.md`` beside this file for the table users read).  A kind knows

* ``csv_type``: what Arrow's CSV reader is asked to produce on the fast COPY
  path (a typed parse where Arrow's parser is exact, else ``string``);
* ``from_csv(array)``: finishing that array into the column's Arrow type;
* ``from_text(array)``: the same from PostgreSQL's text output held in a
  ``string`` array -- the robust path used by the row path and whenever the
  typed CSV parse of a block fails (``infinity``, BC dates, ``24:00:00``...).

Most kinds have a fixed Arrow type.  A few (``numeric``; arrays) are
*deferred*: their Arrow type depends on the values (the largest scale of an
unconstrained ``numeric``; a ``NaN`` that no decimal can hold; a
multi-dimensional array).  Blocks keep them raw (PostgreSQL's text, or the
declared decimal Arrow's parser could read) until :meth:`Kind.decide` has
surveyed the values -- all of them for ``read_*``, the first batch for
streams -- and :meth:`Kind.apply` then converts, raising
:class:`UnrepresentableValue` rather than losing digits.

COPY's text format is read by Arrow's CSV reader (tab delimiter, no quoting,
``\\N`` for NULL); hence the ``csv`` names.  COPY's binary format, used when
every column has a ``wire`` code (``_WIRE``), is decoded by ``_pgcopy.c``
straight into each kind's Arrow type (``numeric`` into its declared
``decimal128``, or as ``numeric_out``'s text for the deferred rules).

Text parsing follows the session's output settings, read at the start of
each read (``SETTINGS_READ``); :func:`output_fixes` names the few values the
parsers don't read, which a read overrides with ``SET LOCAL``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ..errors import TypeFallbackWarning, UnrepresentableValue
from ._lazy import lazy_module

pc = lazy_module("pyarrow.compute")

# Settings that shape PostgreSQL's text output, read at the start of a read.
SETTINGS_READ = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output")


def output_fixes(settings: dict[str, str]) -> dict[str, str]:
    """The SET LOCAL changes a read needs; none with PostgreSQL's defaults.

    The query itself runs under the session's settings (``now()::date`` keeps
    meaning the session's date).  Only output formats the parsers don't read
    are changed, for the read's transaction: a non-ISO ``DateStyle`` output
    (its field order, which governs input, is kept), ``IntervalStyle`` other
    than ``postgres``/``iso_8601``, ``extra_float_digits`` <= 0 (rounded
    floats) and ``bytea_output = escape``.  The same text casts inside the
    query see the change -- documented in TYPES.md.
    """
    fixes = {}
    style = settings.get("DateStyle", "ISO, MDY")
    parts = [p.strip() for p in style.split(",")]
    if parts[0].upper() != "ISO":
        order = next((p for p in parts if p.upper() in ("MDY", "DMY", "YMD")), None)
        if order is None:  # "German" implies DMY, "SQL"/"Postgres" alone MDY
            order = "DMY" if parts[0].upper() == "GERMAN" else "MDY"
        fixes["DateStyle"] = f"ISO, {order}"
    if settings.get("IntervalStyle", "postgres") not in ("postgres", "iso_8601"):
        fixes["IntervalStyle"] = "postgres"
    try:
        if int(settings.get("extra_float_digits", "1")) <= 0:
            fixes["extra_float_digits"] = "1"
    except ValueError:
        fixes["extra_float_digits"] = "1"
    if settings.get("bytea_output", "hex") != "hex":
        fixes["bytea_output"] = "hex"
    return fixes


#: ``'infinity'`` and ``'-infinity'`` timestamps (timestamp and timestamptz):
#: the largest and smallest instants Arrow holds, in microseconds since 1970.
#: ``INT64_MIN + 1`` rather than ``INT64_MIN``, which numpy reads as NaT.
TIMESTAMP_INFINITY_US = 2**63 - 1
TIMESTAMP_NEG_INFINITY_US = -(2**63) + 1
#: ``'infinity'`` and ``'-infinity'`` dates, in days since 1970.
DATE_INFINITY_DAYS = 2**31 - 1
DATE_NEG_INFINITY_DAYS = -(2**31)

_US_PER_DAY = 86_400_000_000
_DECIMAL128_MAX_PRECISION = 38
_DECIMAL256_MAX_PRECISION = 76


def arrow_timezone(name: str | None) -> str:
    """A session TimeZone as an IANA name Arrow accepts (``UTC`` if it is not one)."""
    import zoneinfo

    if name:
        try:
            zoneinfo.ZoneInfo(name)
            return name
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC"


@dataclass
class Column:
    """One result column: its name, its PostgreSQL type and its :class:`Kind`."""

    name: str
    oid: int
    typmod: int
    kind: Kind
    #: How the binary COPY decoder reads this type (see ``_pgcopy.c``), or
    #: ``None`` if only the text format is read.
    wire: str | None = None


class Kind:
    """How one PostgreSQL type becomes Arrow.  Subclasses override what differs."""

    pgname: str = "text"
    arrow_type: pa.DataType = pa.string()
    csv_type: pa.DataType = pa.string()
    deferred: bool = False

    def __init__(self, arrow_type: pa.DataType | None = None, pgname: str | None = None):
        if arrow_type is not None:
            self.arrow_type = arrow_type
        if pgname is not None:
            self.pgname = pgname

    def from_csv(self, arr: pa.Array) -> pa.Array:
        if arr.type == self.arrow_type:
            return arr
        return self.from_text(arr)

    def from_text(self, arr: pa.Array) -> pa.Array:
        return arr if arr.type == self.arrow_type else arr.cast(self.arrow_type)

    # Deferred kinds only ------------------------------------------------------
    def survey(self, arr: pa.Array) -> Any:  # pragma: no cover - deferred only
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:  # pragma: no cover - deferred only
        raise NotImplementedError

    def decide(self, survey: Any, column: str) -> pa.DataType:  # pragma: no cover
        raise NotImplementedError

    def apply(self, decided: pa.DataType, arr: pa.Array, column: str) -> pa.Array:
        raise NotImplementedError  # pragma: no cover

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pgname} -> {self.arrow_type}>"


class Text(Kind):
    """Strings, and every type without a better mapping: PostgreSQL's own text."""


class Bool(Kind):
    pgname = "bool"
    csv_type = arrow_type = pa.bool_()

    def from_text(self, arr: pa.Array) -> pa.Array:
        return pc.equal(arr, "t")


class Number(Kind):
    """Integers and floats: Arrow's parser reads ``NaN`` and ``[-]Infinity``."""

    def __init__(self, arrow_type: pa.DataType, pgname: str):
        super().__init__(arrow_type, pgname)
        self.csv_type = arrow_type


class Bytea(Kind):
    """bytea from ``hex`` output; ``escape`` output (set by the query text itself) through libpq."""

    pgname = "bytea"
    arrow_type = pa.binary()

    def __init__(self, escape: bool = False):
        super().__init__()
        self.escape = escape

    def from_text(self, arr: pa.Array) -> pa.Array:
        if not self.escape:
            return _hex_decode(arr)
        from psycopg import pq

        unescape = pq.Escaping().unescape_bytea
        return pa.array([None if v is None else unescape(v.encode()) for v in arr.to_pylist()],
                        pa.binary())


class Date(Kind):
    pgname = "date"
    csv_type = arrow_type = pa.date32()

    def from_text(self, arr: pa.Array) -> pa.Array:
        return _temporal_from_text(arr, self.arrow_type, pa.int32(), _date_value)


class Timestamp(Kind):
    """timestamp and timestamptz (the latter printed in UTC, tagged with ``tz``)."""

    def __init__(self, tz: str | None):
        self.tz = tz
        super().__init__(pa.timestamp("us", tz=tz), "timestamptz" if tz else "timestamp")
        # Arrow's ISO-8601 parser reads "+00" for timestamptz; the type's tz
        # only tags the instants.
        self.csv_type = self.arrow_type

    def from_text(self, arr: pa.Array) -> pa.Array:
        return _temporal_from_text(arr, self.arrow_type, pa.int64(), _timestamp_value)


class Time(Kind):
    pgname = "time"
    csv_type = arrow_type = pa.time64("us")

    def from_text(self, arr: pa.Array) -> pa.Array:
        # "HH:MM:SS[.ffffff]"; 24:00:00 is a valid time in PostgreSQL.
        h = pc.cast(pc.utf8_slice_codeunits(arr, 0, 2), pa.int64())
        m = pc.cast(pc.utf8_slice_codeunits(arr, 3, 5), pa.int64())
        s = pc.cast(pc.utf8_slice_codeunits(arr, 6, 8), pa.int64())
        frac = pc.utf8_rpad(pc.utf8_slice_codeunits(arr, 9, 15), 6, "0")
        us = pc.add(
            pc.multiply(pc.add(pc.multiply(pc.add(pc.multiply(h, 60), m), 60), s), 1_000_000),
            pc.cast(frac, pa.int64()),
        )
        return us.cast(pa.time64("us"))


class Interval(Kind):
    """interval -> month_day_nano, from either ``postgres`` or ``iso_8601`` output."""

    pgname = "interval"
    arrow_type = pa.month_day_nano_interval()

    _ISO = (
        r"^P(?:(?P<y>-?\d+)Y)?(?:(?P<mo>-?\d+)M)?(?:(?P<d>-?\d+)D)?"
        r"(?:T(?:(?P<h>-?\d+)H)?(?:(?P<mi>-?\d+)M)?(?:(?P<s>-?\d+)(?:\.(?P<f>\d+))?S)?)?$"
    )
    # "1 year 2 mons -3 days +04:05:06.5", "-1 years", "00:00:00"
    _POSTGRES = (
        r"^(?:(?P<y>[+-]?\d+) years? ?)?(?:(?P<mo>[+-]?\d+) mons? ?)?(?:(?P<d>[+-]?\d+) days? ?)?"
        r"(?:(?P<sign>[+-]?)(?P<h>\d+):(?P<mi>\d\d):(?P<s>\d\d)(?:\.(?P<f>\d+))?)?$"
    )

    def __init__(self, style: str = "postgres"):
        super().__init__()
        self.iso = style == "iso_8601"

    def from_text(self, arr: pa.Array) -> pa.Array:
        n = len(arr)
        if n == 0:
            return pa.array([], self.arrow_type)
        valid = pc.is_valid(arr)
        filled = pc.fill_null(arr, "PT0S" if self.iso else "00:00:00")
        parts = pc.extract_regex(filled, self._ISO if self.iso else self._POSTGRES)
        if parts.null_count:
            bad = pc.filter(filled, pc.is_null(parts))[0]
            raise UnrepresentableValue(f"cannot parse interval {bad.as_py()!r}")

        def num(name: str) -> np.ndarray:
            col = pc.replace_substring(parts.field(name), "+", "")
            col = pc.if_else(pc.equal(col, ""), "0", col)
            return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)

        frac = pc.cast(pc.utf8_rpad(pc.utf8_slice_codeunits(
            pc.if_else(pc.equal(parts.field("f"), ""), "0", parts.field("f")), 0, 6), 6, "0"),
            pa.int64(),
        ).to_numpy(zero_copy_only=False)
        h, mi, sec = num("h"), num("mi"), num("s")
        if self.iso:
            # Each ISO field carries its own sign; the fraction follows the seconds'.
            negative = pc.starts_with(parts.field("s"), "-").to_numpy(zero_copy_only=False)
            sign = np.ones(n, dtype=np.int64)
            frac = np.where(negative, -frac, frac)
        else:
            sign = np.where(pc.equal(parts.field("sign"), "-").to_numpy(zero_copy_only=False), -1, 1)
        with np.errstate(over="raise"):
            try:
                us = h * 3_600_000_000 + mi * 60_000_000 + sec * 1_000_000 + frac
                us = us * sign
                if np.abs(us).max(initial=0) > (2**63 - 1) // 1000:
                    raise FloatingPointError
            except FloatingPointError:
                raise UnrepresentableValue(
                    f"the interval {_first_long_interval(arr)!r} has a time part beyond Arrow's "
                    "nanosecond range (±292 years)"
                ) from None
        rec = np.empty(n, dtype=[("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
        rec["months"] = num("y") * 12 + num("mo")
        rec["days"] = num("d")
        rec["nanos"] = us * 1000
        return pa.Array.from_buffers(
            self.arrow_type, n, [_validity_buffer(valid), pa.py_buffer(rec.tobytes())]
        )


class Vector(Kind):
    """pgvector's ``vector`` and ``halfvec``: ``[1,2.5,3]`` -> list<float32>."""

    arrow_type = pa.list_(pa.float32())

    def from_text(self, arr: pa.Array) -> pa.Array:
        inner = pc.utf8_slice_codeunits(arr, 1, -1)
        return pc.split_pattern(inner, ",").cast(self.arrow_type)


# ---------------------------------------------------------------------------
# Deferred kinds
# ---------------------------------------------------------------------------


@dataclass
class NumericSurvey:
    scale: int = 0  # largest number of digits after the point
    integer_digits: int = 0  # largest number of digits before it
    special: str | None = None  # a NaN / Infinity value seen, if any

    def merge(self, other: NumericSurvey) -> NumericSurvey:
        return NumericSurvey(
            max(self.scale, other.scale),
            max(self.integer_digits, other.integer_digits),
            self.special or other.special,
        )


class Numeric(Kind):
    """numeric: decimal128/256 when every value fits exactly, else text.

    ``numeric(p, s)`` -> ``decimal128(p, s)`` (``decimal256`` past 38 digits,
    text past 76).  Unconstrained ``numeric`` -> ``decimal128(38, S)`` with
    ``S`` the largest scale among the values.  ``NaN``/``Infinity``, or digits
    that ``decimal128(38, S)`` cannot hold, turn the column into text (with a
    :class:`TypeFallbackWarning`) -- never into rounded numbers.
    """

    pgname = "numeric"
    deferred = True

    def __init__(self, typmod: int):
        self.precision: int | None = None
        self.scale: int | None = None
        if typmod >= 4:
            t = typmod - 4
            self.precision = (t >> 16) & 0xFFFF
            self.scale = ((t & 0x7FF) ^ 1024) - 1024  # PG 15+: scale may be negative
            self.pgname = f"numeric({self.precision},{self.scale})"
        declared = self._declared_type()
        self.arrow_type = declared or pa.decimal128(38, 0)
        # numeric(p, s), p <= 38: Arrow's CSV reader parses the decimal itself
        # (a block holding NaN fails, is re-read as text, and decided as text).
        typed = declared is not None and pa.types.is_decimal128(declared)
        self.csv_type = declared if typed else pa.string()

    def _declared_type(self) -> pa.DataType | None:
        if self.precision is None:
            return None
        p, s = self.precision, self.scale
        if s < 0 or s > p:  # numeric(2,-3), numeric(2,5): representable with a wider decimal
            p, s = max(p, s) + max(-s, 0), max(s, 0)
        if p <= _DECIMAL128_MAX_PRECISION:
            return pa.decimal128(p, s)
        if p <= _DECIMAL256_MAX_PRECISION:
            return pa.decimal256(p, s)
        return pa.string()

    def survey(self, arr: pa.Array) -> NumericSurvey:
        if not pa.types.is_string(arr.type):  # parsed as the declared decimal
            return NumericSurvey()
        arr = arr.drop_null() if arr.null_count else arr
        if len(arr) == 0:
            return NumericSurvey()
        # PostgreSQL prints numeric without exponents: [-]digits[.digits],
        # or NaN, Infinity, -Infinity.
        special = pc.match_substring_regex(arr, "[A-Za-z]")
        if pc.any(special).as_py():
            return NumericSurvey(special=pc.filter(arr, special)[0].as_py())
        length = pc.binary_length(arr)
        point = pc.find_substring(arr, ".")
        has_point = pc.greater_equal(point, 0)
        scale = pc.if_else(has_point, pc.subtract(pc.subtract(length, point), 1), 0)
        whole = pc.if_else(has_point, point, length)
        whole = pc.subtract(whole, pc.cast(pc.starts_with(arr, "-"), pa.int32()))
        return NumericSurvey(pc.max(scale).as_py() or 0, pc.max(whole).as_py() or 0)

    def merge(self, a: NumericSurvey, b: NumericSurvey) -> NumericSurvey:
        return a.merge(b)

    def decide(self, survey: NumericSurvey, column: str) -> pa.DataType:
        if survey.special is not None:
            _fallback(column, self.pgname, f"it holds {survey.special}, which no Arrow decimal can")
            return pa.string()
        declared = self._declared_type()
        if declared is not None:
            return declared
        if survey.integer_digits + survey.scale > _DECIMAL128_MAX_PRECISION:
            _fallback(
                column,
                self.pgname,
                f"its values need {survey.integer_digits} digits before the point and "
                f"{survey.scale} after, more than decimal128's 38",
            )
            return pa.string()
        return pa.decimal128(_DECIMAL128_MAX_PRECISION, survey.scale)

    def apply(self, decided: pa.DataType, arr: pa.Array, column: str) -> pa.Array:
        if arr.type == decided:
            return arr
        if pa.types.is_string(decided):
            return arr if pa.types.is_string(arr.type) else arr.cast(pa.string())
        try:
            return arr.cast(decided)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            s = self.survey(arr)
            raise UnrepresentableValue(
                f"column {column!r} ({self.pgname}) was read as {decided} from its first "
                f"batch, but a later value "
                + (f"is {s.special}" if s.special else f"has {s.integer_digits} digits "
                   f"before the point and {s.scale} after")
                + "; cast it in SQL (e.g. ::numeric(30,10), ::float8 or ::text)"
            ) from None


@dataclass
class ArraySurvey:
    element: Any = None
    multidim: bool = False


class Array(Kind):
    """One-dimensional arrays -> list<element>; any multi-dimensional value -> text."""

    deferred = True

    def __init__(self, element: Kind, loader: Callable[[bytes], Any], encoding: str = "utf-8"):
        self.element = element
        self.load = loader  # psycopg's text[] parser: quoting and escapes done right
        self.encoding = encoding  # the loader decodes with the connection's encoding
        self.pgname = f"{element.pgname}[]"
        self.arrow_type = pa.list_(element.arrow_type)

    def _split(self, arr: pa.Array) -> tuple[pa.Array, pa.Array, bool]:
        """PG array literals -> (offsets, flat element strings, any multi-dim)."""
        offsets = [0]
        flat: list[str | None] = []
        multidim = False
        load, enc = self.load, self.encoding
        for v in arr.to_pylist():
            if v is not None:
                items = load(v.encode(enc))
                if items and isinstance(items[0], list):
                    multidim = True
                    items = []
                flat.extend(items)
            offsets.append(len(flat))
        return (
            pa.array(offsets, pa.int32()),
            pa.array(flat, pa.string()),
            multidim,
        )

    def survey(self, arr: pa.Array) -> ArraySurvey:
        _, flat, multidim = self._split(arr)
        elem = self.element.survey(flat) if self.element.deferred else None
        return ArraySurvey(elem, multidim)

    def merge(self, a: ArraySurvey, b: ArraySurvey) -> ArraySurvey:
        if self.element.deferred:
            elem = self.element.merge(a.element, b.element)
        else:
            elem = None
        return ArraySurvey(elem, a.multidim or b.multidim)

    def decide(self, survey: ArraySurvey, column: str) -> pa.DataType:
        if survey.multidim:
            _fallback(column, self.pgname, "it holds multi-dimensional arrays")
            return pa.string()
        if self.element.deferred:
            return pa.list_(self.element.decide(survey.element, column))
        return self.arrow_type

    def apply(self, decided: pa.DataType, arr: pa.Array, column: str) -> pa.Array:
        if pa.types.is_string(decided):
            return arr
        offsets, flat, multidim = self._split(arr)
        if multidim:
            raise UnrepresentableValue(
                f"column {column!r} ({self.pgname}) was read as {decided} from its first "
                "batch, but a later value is a multi-dimensional array; cast it in SQL "
                "(e.g. ::text)"
            )
        if self.element.deferred:
            values = self.element.apply(decided.value_type, flat, column)
        else:
            values = self.element.from_text(flat)
        mask = pc.is_null(arr) if arr.null_count else None
        return pa.ListArray.from_arrays(offsets, values, type=decided, mask=mask)


def affected_by(kind: Kind) -> tuple[str, ...]:
    """The output settings (``SETTINGS_READ`` names) that change how a kind's text must be read."""
    while isinstance(kind, Array):
        kind = kind.element
    if isinstance(kind, Number) and kind.pgname in ("float4", "float8"):
        return ("extra_float_digits",)
    if isinstance(kind, (Date, Timestamp)):
        return ("DateStyle",)
    if isinstance(kind, Interval):
        return ("IntervalStyle",)
    if isinstance(kind, Bytea):
        return ("bytea_output",)
    return ()


# ---------------------------------------------------------------------------
# Type resolution
# ---------------------------------------------------------------------------

_SCALARS: dict[int, Callable[[int, dict[str, str]], Kind]] = {
    16: lambda m, s: Bool(),
    17: lambda m, s: Bytea(s.get("bytea_output", "hex") == "escape"),
    20: lambda m, s: Number(pa.int64(), "int8"),
    21: lambda m, s: Number(pa.int16(), "int2"),
    23: lambda m, s: Number(pa.int32(), "int4"),
    26: lambda m, s: Number(pa.uint32(), "oid"),
    700: lambda m, s: Number(pa.float32(), "float4"),
    701: lambda m, s: Number(pa.float64(), "float8"),
    1082: lambda m, s: Date(),
    1083: lambda m, s: Time(),
    1114: lambda m, s: Timestamp(None),
    1184: lambda m, s: Timestamp(arrow_timezone(s.get("TimeZone"))),
    1186: lambda m, s: Interval(s.get("IntervalStyle", "postgres")),
    1700: lambda m, s: Numeric(m),
}

# Builtin text-like types, named for the docs and error messages.
_TEXT_NAMES = {
    18: "char", 19: "name", 25: "text", 114: "json", 142: "xml", 650: "cidr",
    705: "unknown", 774: "macaddr8", 790: "money", 829: "macaddr", 869: "inet",
    1042: "bpchar", 1043: "varchar", 1266: "timetz", 1560: "bit", 1562: "varbit",
    2950: "uuid", 3802: "jsonb", 4072: "jsonpath",
}

# Builtin type OID -> the binary COPY decoder's code for its send function's
# output (``_pgcopy.c``).  The kinds of these types give the same Arrow types
# from either format.
_WIRE = {
    16: "?", 17: "y", 20: "8", 21: "2", 23: "4", 26: "4", 700: "4", 701: "8",
    1082: "D", 1083: "8", 1114: "T", 1184: "T", 1186: "I", 1700: "n",
    19: "s", 25: "s", 114: "s", 1042: "s", 1043: "s", 2950: "u", 3802: "j",
}

# Builtin array OID -> element OID.
_ARRAYS = {
    1000: 16, 1001: 17, 1002: 18, 1003: 19, 1005: 21, 1007: 23, 1009: 25, 1016: 20,
    1028: 26, 199: 114, 143: 142, 651: 650, 1021: 700, 1022: 701, 791: 790,
    1040: 829, 1041: 869, 775: 774, 1014: 1042, 1015: 1043, 1182: 1082, 1183: 1083,
    1115: 1114, 1185: 1184, 1187: 1186, 1270: 1266, 1561: 1560, 1563: 1562,
    1231: 1700, 2951: 2950, 3807: 3802, 4073: 4072,
}

# Extension types recognised by name (pg_type.typname).
_BY_NAME: dict[str, Callable[[], Kind]] = {
    "vector": lambda: Vector(pgname="vector"),
    "halfvec": lambda: Vector(pgname="halfvec"),
    "citext": lambda: Text(pgname="citext"),
}


@dataclass
class _PgType:
    oid: int
    name: str
    typtype: str
    basetype: int
    basetypmod: int
    elem: int
    category: str
    delim: str


@dataclass
class TypeResolver:
    """Maps (oid, typmod) to kinds, asking ``pg_type`` once for what isn't builtin."""

    conn: Any
    settings: dict[str, str]
    _catalog: dict[int, _PgType] = field(default_factory=dict)

    def resolve(self, fields: Sequence[tuple[str, int, int]]) -> list[Column]:
        self._load_catalog({oid for _, oid, _ in fields})
        return [
            Column(name, oid, mod, self._kind(oid, mod), self._wire(oid))
            for name, oid, mod in fields
        ]

    def _known(self, oid: int) -> bool:
        return oid in _SCALARS or oid in _TEXT_NAMES or oid in _ARRAYS or oid in self._catalog

    def _load_catalog(self, oids: set[int]) -> None:
        todo = {o for o in oids if not self._known(o)}
        for _ in range(8):  # domains over domains over arrays of enums...
            if not todo:
                return
            cur = self.conn.cursor()
            cur.execute(
                "SELECT oid::int8, typname::text, typtype::text, typbasetype::int8, typtypmod,"
                " typelem::int8, typcategory::text, typdelim::text"
                " FROM pg_catalog.pg_type WHERE oid = ANY(%s::oid[])",
                (sorted(todo),),
            )
            for row in cur.fetchall():
                self._catalog[row[0]] = _PgType(*row)
            found = [self._catalog[o] for o in todo if o in self._catalog]
            todo = set()
            for t in found:
                for o in (t.basetype, t.elem):
                    if o and not self._known(o):
                        todo.add(o)

    def _kind(self, oid: int, typmod: int, depth: int = 0) -> Kind:
        if depth > 8:
            return Text()
        if oid in _SCALARS:
            return _SCALARS[oid](typmod, self.settings)
        if oid in _TEXT_NAMES:
            return Text(pgname=_TEXT_NAMES[oid])
        if oid in _ARRAYS:
            return self._array(self._kind(_ARRAYS[oid], typmod, depth + 1), ",")
        t = self._catalog.get(oid)
        if t is None:
            return Text(pgname=f"oid {oid}")
        if t.typtype == "d":  # domain: its base type, with the domain's typmod
            kind = self._kind(t.basetype, t.basetypmod if t.basetypmod >= 0 else typmod, depth + 1)
            return kind
        if t.typtype == "e":
            return Text(pgname=t.name)
        if t.name in _BY_NAME:
            return _BY_NAME[t.name]()
        if t.category == "A" and t.elem:
            return self._array(self._kind(t.elem, typmod, depth + 1), t.delim)
        return Text(pgname=t.name)

    def _wire(self, oid: int, depth: int = 0) -> str | None:
        """The binary COPY code of a type: its base type's for a domain; enums and citext send text."""
        if oid in _WIRE:
            return _WIRE[oid]
        t = self._catalog.get(oid)
        if t is None or depth > 8:
            return None
        if t.typtype == "d":
            return self._wire(t.basetype, depth + 1)
        if t.typtype == "e" or t.name == "citext":
            return "s"
        if t.name == "vector":  # pgvector: halfvec and sparsevec stay on the text path
            return "V"
        return None

    def _array(self, element: Kind, delim: str) -> Kind:
        if delim != "," or isinstance(element, Array):
            return Text(pgname=f"{element.pgname}[]")
        from psycopg import pq

        loader = self.conn.adapters.get_loader(1009, pq.Format.TEXT)(1009, self.conn)
        return Array(element, loader.load, self.conn.info.encoding)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _fallback(column: str, pgname: str, why: str) -> None:
    warnings.warn(
        f"column {column!r} ({pgname}) is returned as text because {why}",
        TypeFallbackWarning,
        stacklevel=6,
    )


def _first_long_interval(arr: pa.Array) -> str | None:
    """The first interval text whose hours exceed what Arrow's nanoseconds hold (error messages)."""
    limit = (2**63 - 1) // 1000 // 3_600_000_000
    for v in arr.to_pylist():
        hours = re.findall(r"(-?\d+)(?:H|:\d\d:)", v or "")
        if any(abs(int(h)) >= limit for h in hours):
            return v
    return None


def us_text(us_since_2000: int) -> str:
    """A PostgreSQL timestamp (microseconds since 2000-01-01) as ISO text, any year (messages)."""
    days, us = divmod(us_since_2000, _US_PER_DAY)
    z = days + 10957 + 719468  # Hinnant's civil_from_days
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    secs, frac = divmod(us, 1_000_000)
    year = f"{y:04d}" if y > 0 else f"{1 - y:04d}"
    text = f"{year}-{m:02d}-{d:02d} {secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    return text + (f".{frac:06d}".rstrip("0") if frac else "") + ("" if y > 0 else " BC")


_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970


def beyond_arrow(kind: Kind) -> bool:
    """Whether a kind's values can fall past its Arrow type's range (then: PostgreSQL's text)."""
    return isinstance(kind, (Timestamp, Interval))


def timestamp_text(us_since_1970: int, tz: bool) -> str:
    """A timestamp as PostgreSQL prints it in ISO style (timestamptz in UTC, ``+00``)."""
    if us_since_1970 == TIMESTAMP_INFINITY_US:
        return "infinity"
    if us_since_1970 == TIMESTAMP_NEG_INFINITY_US:
        return "-infinity"
    text = us_text(us_since_1970 - _PG_EPOCH_US)
    if not tz:
        return text
    return text[:-3] + "+00 BC" if text.endswith(" BC") else text + "+00"


def interval_text(months: int, days: int, us: int) -> str:
    """An interval as PostgreSQL prints it with ``IntervalStyle = postgres`` (EncodeInterval)."""
    parts: list[str] = []
    before = False
    years, mons = int(months / 12), months - int(months / 12) * 12  # C's truncating division
    for value, unit in ((years, "year"), (mons, "mon"), (days, "day")):
        if value:
            sign = "+" if parts and before and value > 0 else ""
            parts.append(f"{sign}{value} {unit}{'' if value == 1 else 's'}")
            before = value < 0
    if not parts or us:
        sign = "-" if us < 0 else ("+" if before else "")
        secs, frac = divmod(abs(us), 1_000_000)
        clock = f"{sign}{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        parts.append(clock + (f".{frac:06d}".rstrip("0") if frac else ""))
    return " ".join(parts)


def as_pg_text(kind: Kind, arr: pa.Array) -> pa.Array:
    """Timestamp or interval values (in range) as the text :func:`timestamp_text`/:func:`interval_text` give."""
    if isinstance(kind, Timestamp):
        tz = kind.tz is not None
        values = arr.cast(pa.int64()).to_pylist()
        return pa.array([None if v is None else timestamp_text(v, tz) for v in values], pa.string())
    return pa.array([None if v is None else interval_text(v.months, v.days, v.nanoseconds // 1000)
                     for v in arr.to_pylist()], pa.string())


def _validity_buffer(valid: pa.Array) -> pa.Buffer | None:
    """A validity bitmap for ``valid`` (a boolean array), or None if all valid."""
    if pc.all(valid).as_py() is not False:
        return None
    return pa.array(valid.to_numpy(zero_copy_only=False), pa.bool_()).buffers()[1]


_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _hex_decode(arr: pa.Array) -> pa.Array:
    """``\\x0a1b`` strings (bytea_output = hex) -> binary, without a Python loop."""
    n = len(arr)
    if n == 0:
        return pa.array([], pa.binary())
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    _, offsets_buf, data_buf = arr.buffers()
    off = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(np.int64)
    start, end = int(off[0]), int(off[-1])
    data = (
        np.frombuffer(data_buf, dtype=np.uint8, count=end - start, offset=start)
        if end > start
        else np.empty(0, np.uint8)
    )
    lengths = np.diff(off)
    prefixed = lengths >= 2  # every value is "\x" + hex; null slots are empty
    keep = np.ones(end - start, dtype=bool)
    starts = off[:-1][prefixed] - start
    keep[starts] = False
    keep[starts + 1] = False
    hexes = data[keep]
    hi, lo = _HEX[hexes[0::2]], _HEX[hexes[1::2]]
    if len(hexes) % 2 or (hi == 255).any() or (lo == 255).any():
        raise UnrepresentableValue("malformed bytea hex output")
    raw = (hi << 4) | lo
    removed = np.concatenate([[0], np.cumsum(prefixed) * 2])
    new_offsets = ((off - start - removed) // 2).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(),
        n,
        [_validity_buffer(pc.is_valid(arr)), pa.py_buffer(new_offsets), pa.py_buffer(raw)],
    )


_TS_RE = re.compile(
    r"^(\d+)-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?$"
)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400  # floor division: Hinnant's (y >= 0 ? y : y - 399) / 400 in C
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _parse_pg_datetime(s: str) -> tuple[int, int]:
    """PostgreSQL ISO output (any year, BC, offsets) -> (days, microseconds of day, UTC)."""
    m = _TS_RE.match(s)
    if m is None:
        raise UnrepresentableValue(f"cannot parse date/time {s!r}")
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    if m[12]:
        y = 1 - y  # 1 BC is astronomical year 0
    days = _days_from_civil(y, mo, d)
    us = 0
    if m[4]:
        us = ((int(m[4]) * 60 + int(m[5])) * 60 + int(m[6])) * 1_000_000
        if m[7]:
            us += int(m[7].ljust(6, "0"))
    if m[8]:
        off = (int(m[9]) * 60 + int(m[10] or 0)) * 60 + int(m[11] or 0)
        us -= (1 if m[8] == "+" else -1) * off * 1_000_000
    return days, us


def _date_value(s: str) -> int:
    if s == "infinity":
        return DATE_INFINITY_DAYS
    if s == "-infinity":
        return DATE_NEG_INFINITY_DAYS
    return _parse_pg_datetime(s)[0]


def _timestamp_value(s: str) -> int:
    if s == "infinity":
        return TIMESTAMP_INFINITY_US
    if s == "-infinity":
        return TIMESTAMP_NEG_INFINITY_US
    days, us = _parse_pg_datetime(s)
    v = days * _US_PER_DAY + us
    if not TIMESTAMP_NEG_INFINITY_US < v < TIMESTAMP_INFINITY_US:
        raise UnrepresentableValue(f"timestamp {s!r} is beyond Arrow's microsecond range")
    return v


_PLAIN_DATE = r"^\d{4}-\d\d-\d\d$"
_PLAIN_TS = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?([+-]\d\d(:\d\d)?)?$"


def _temporal_from_text(
    arr: pa.Array, target: pa.DataType, storage: pa.DataType, parse_one: Callable[[str], int]
) -> pa.Array:
    """Vectorised cast for ordinary values; Python only for infinity, BC, year > 9999."""
    plain = pc.match_substring_regex(arr, _PLAIN_DATE if storage == pa.int32() else _PLAIN_TS)
    plain = pc.fill_null(plain, True)
    if pc.all(plain).as_py():
        return pc.cast(arr, target)
    out = np.zeros(len(arr), dtype=storage.to_pandas_dtype())
    plain_np = plain.to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(plain_np)
    if len(idx):
        vals = pc.cast(pc.cast(pc.filter(arr, plain), target), storage)
        out[idx] = pc.fill_null(vals, 0).to_numpy(zero_copy_only=False)
    special = np.flatnonzero(~plain_np)
    py = arr.take(pa.array(special)).to_pylist()
    for i, s in zip(special, py):
        out[i] = parse_one(s)
    return pa.Array.from_buffers(
        target, len(arr), [_validity_buffer(pc.is_valid(arr)), pa.py_buffer(out)]
    )
