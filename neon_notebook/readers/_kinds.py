"""How a PostgreSQL type becomes Arrow: the :class:`Kind` of a result column.

Every result column gets a :class:`Kind`, made from its registry row
(:mod:`._registry`), typmod and the session's output settings (see
``TYPES.md`` beside this file for the table users read).  A kind knows

* ``csv_type``: what Arrow's CSV reader is asked to produce on the COPY text
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

Arrow and numpy only, no psycopg (an HTTP transport decodes in Pyodide):
arrays are split by :func:`._arrays.load_array` unless the catalog hands in
psycopg's parser; the error classes load on first use.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ._arrays import load_array
from ._lazy import lazy_module
from ._registry import PgType
from ._text import arrow_timezone, date_value, first_long_interval, hex_decode, temporal_from_text, \
    timestamp_value, validity_buffer

pc = lazy_module("pyarrow.compute")
errors = lazy_module("neon_notebook.errors")

_DECIMAL128_MAX_PRECISION = 38
_DECIMAL256_MAX_PRECISION = 76


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
    """bytea from ``hex`` output, or ``escape`` output (set by the query text itself)."""

    pgname = "bytea"
    arrow_type = pa.binary()

    def __init__(self, escape: bool = False):
        super().__init__()
        self.escape = escape

    def from_text(self, arr: pa.Array) -> pa.Array:
        if not self.escape:
            return hex_decode(arr)
        return pa.array([None if v is None else unescape_bytea(v) for v in arr.to_pylist()], pa.binary())


_BYTEA_ESCAPE = re.compile(rb"\\([0-3][0-7]{2}|\\)?")


def unescape_bytea(text: str) -> bytes:
    """bytea's ``escape`` output as bytes, as libpq's ``PQunescapeBytea`` reads it.

    ``\\\\`` is a backslash, ``\\ooo`` an octal byte; a backslash before anything
    else is dropped (the server never writes one).
    """
    def byte(match: re.Match[bytes]) -> bytes:
        code = match[1]
        return b"" if code is None else b"\\" if code == b"\\" else bytes([int(code, 8)])

    return _BYTEA_ESCAPE.sub(byte, text.encode())


class Date(Kind):
    pgname = "date"
    csv_type = arrow_type = pa.date32()

    def from_text(self, arr: pa.Array) -> pa.Array:
        return temporal_from_text(arr, self.arrow_type, pa.int32(), date_value)


class Timestamp(Kind):
    """timestamp and timestamptz (the latter printed in UTC, tagged with ``tz``)."""

    def __init__(self, tz: str | None):
        self.tz = tz
        super().__init__(pa.timestamp("us", tz=tz), "timestamptz" if tz else "timestamp")
        # Arrow's ISO-8601 parser reads "+00" for timestamptz; the type's tz
        # only tags the instants.
        self.csv_type = self.arrow_type

    def from_text(self, arr: pa.Array) -> pa.Array:
        return temporal_from_text(arr, self.arrow_type, pa.int64(), timestamp_value)


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
            raise errors.UnrepresentableValue(f"cannot parse interval {bad.as_py()!r}")

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
                raise errors.UnrepresentableValue(
                    f"the interval {first_long_interval(arr)!r} has a time part beyond Arrow's "
                    "nanosecond range (±292 years)"
                ) from None
        rec = np.empty(n, dtype=[("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
        rec["months"] = num("y") * 12 + num("mo")
        rec["days"] = num("d")
        rec["nanos"] = us * 1000
        return pa.Array.from_buffers(
            self.arrow_type, n, [validity_buffer(valid), pa.py_buffer(rec.tobytes())]
        )


class Vector(Kind):
    """pgvector's ``vector`` and ``halfvec``: ``[1,2.5,3]`` -> list<float32>."""

    arrow_type = pa.list_(pa.float32())

    def from_text(self, arr: pa.Array) -> pa.Array:
        inner = pc.utf8_slice_codeunits(arr, 1, -1)
        return pc.split_pattern(inner, ",").cast(self.arrow_type)


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
            warn_fallback(column, self.pgname, f"it holds {survey.special}, which no Arrow decimal can")
            return pa.string()
        declared = self._declared_type()
        if declared is not None:
            return declared
        if survey.integer_digits + survey.scale > _DECIMAL128_MAX_PRECISION:
            warn_fallback(
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
            raise errors.UnrepresentableValue(
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

    def __init__(self, element: Kind, loader: Callable[[bytes], Any] = load_array, encoding: str = "utf-8"):
        self.element = element
        self.load = loader  # a text[] parser: quoting and escapes done right
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
            warn_fallback(column, self.pgname, "it holds multi-dimensional arrays")
            return pa.string()
        if self.element.deferred:
            return pa.list_(self.element.decide(survey.element, column))
        return self.arrow_type

    def apply(self, decided: pa.DataType, arr: pa.Array, column: str) -> pa.Array:
        if pa.types.is_string(decided):
            return arr
        offsets, flat, multidim = self._split(arr)
        if multidim:
            raise errors.UnrepresentableValue(
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


def warn_fallback(column: str, pgname: str, why: str) -> None:
    warnings.warn(
        f"column {column!r} ({pgname}) is returned as text because {why}",
        errors.TypeFallbackWarning,
        stacklevel=6,
    )


def beyond_arrow(kind: Kind) -> bool:
    """Whether a kind's values can fall past its Arrow type's range (then: PostgreSQL's text)."""
    return isinstance(kind, (Timestamp, Interval))


def make_kind(row: PgType, typmod: int, settings: dict[str, str]) -> Kind:
    """The kind of a registry row's type, for a column's typmod and the session's output settings."""
    return _MAKERS[row.kind](row, typmod, settings)


_MAKERS: dict[str, Callable[[PgType, int, dict[str, str]], Kind]] = {
    "Bool": lambda row, typmod, settings: Bool(),
    "Bytea": lambda row, typmod, settings: Bytea(settings.get("bytea_output", "hex") == "escape"),
    "Number": lambda row, typmod, settings: Number(row.arrow, row.name),
    "Date": lambda row, typmod, settings: Date(),
    "Time": lambda row, typmod, settings: Time(),
    "Timestamp": lambda row, typmod, settings: Timestamp(
        arrow_timezone(settings.get("TimeZone")) if row.name == "timestamptz" else None),
    "Interval": lambda row, typmod, settings: Interval(settings.get("IntervalStyle", "postgres")),
    "Numeric": lambda row, typmod, settings: Numeric(typmod),
    "Text": lambda row, typmod, settings: Text(pgname=row.name),
    "Vector": lambda row, typmod, settings: Vector(pgname=row.name),
}
