"""Parameters for Neon's HTTP endpoint: ``%s``/``%(name)s`` -> ``$n``, and each value as text with a cast.

Neon binds every parameter as text of unknown type (OID 0), so the server infers
each one's type from the query. The COPY path binds with psycopg's literal
quoting, whose literals carry their own types (``1`` is an integer, a date is
``'...'::date``); a cast after each ``$n`` gives the HTTP path those same types,
so a query reads the same values over both. Placeholders follow psycopg's rules
(``%%`` is a percent sign, named and positional don't mix) and its error
messages, so a query written for one transport runs unchanged on the other.
No psycopg here: this path must run where psycopg cannot (Pyodide).
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .. import _sqltext
from ..errors import DataError
from ._errors import ProgrammingError

__all__ = ["Edit", "bind", "encode", "placeholders"]

_PLACEHOLDER = re.compile(r"%(?:\(([^)]+)\).|.)")  # psycopg's: "." without DOTALL
_INT2, _INT4, _INT8 = 2**15, 2**31, 2**63


#: ``(start, end, new_length)``: ``query[start:end]`` became ``new_length`` characters
#: (for ``_sqltext.original_offset``, which maps the server's error positions back).
Edit = tuple[int, int, int]


def bind(query: str, params: Sequence[Any] | Mapping[str, Any] | None
         ) -> tuple[str, list[str | None], list[Edit]]:
    """The query with ``$n`` placeholders (each cast to its value's type), the values as text, the edits.

    With ``params=None`` the query goes as written (a ``%`` is then just a percent sign), as psycopg does.
    """
    if params is None:
        return query, [], []
    if isinstance(params, (str, bytes)) or not isinstance(params, (Sequence, Mapping)):
        raise TypeError(f"query parameters should be a sequence or a mapping, got {type(params).__qualname__}")
    pieces, items, spans = _split(query)
    if isinstance(params, Mapping):
        if items and not isinstance(items[0], str):
            raise TypeError("positional placeholders (%s) require a sequence of parameters")
        missing = sorted({i for i in items if i not in params})
        if missing:
            raise ProgrammingError(f"query parameter missing: {', '.join(missing)}")
        order: dict[Any, int] = {}
        for item in items:
            order.setdefault(item, len(order))
        values = [params[name] for name in order]
        numbers = [order[item] for item in items]
    else:
        if len(params) != len(items):
            raise ProgrammingError(
                f"the query has {len(items)} placeholders but {len(params)} parameters were passed")
        if params and items and not isinstance(items[0], int):
            raise TypeError("named placeholders require a mapping of parameters")
        values, numbers = list(params), list(range(len(items)))
    encoded = [encode(v) for v in values]
    in_code = {t.start for t in _sqltext.iter_tokens(query) if t.kind == "op" and t.value == "%"}
    out = [pieces[0]]
    edits = [span for span in spans if span[2] == 1]  # the "%%" that became "%"
    sent: dict[int, int] = {}  # value index -> its $n: only values the SQL itself uses are sent
    for n, piece, (start, end, _) in zip(numbers, pieces[1:], (s for s in spans if s[2] != 1)):
        text, cast = encoded[n]
        if start not in in_code:  # in a comment or a string: psycopg pastes the literal there
            placeholder = _literal(text, cast).replace("\n", " ")
        else:
            number = sent.setdefault(n, len(sent) + 1)
            placeholder = f"${number}::{cast}" if cast else f"${number}"
        out.append(placeholder)
        out.append(piece)
        edits.append((start, end, len(placeholder)))
    return "".join(out), [encoded[n][0] for n in sent], sorted(edits)


def placeholders(query: str) -> list[int | str]:
    """The placeholders of ``query``, each as its index or name (psycopg's errors for bad ones)."""
    return _split(query)[1]


def _split(query: str) -> tuple[list[str], list[int | str], list[Edit]]:
    """The text between placeholders (``%%`` collapsed), each placeholder's index or name, their spans.

    A span is ``(start, end, 1)`` for a ``%%``, ``(start, end, 0)`` for a placeholder.
    """
    pieces, items, spans = [], [], []
    current, pos, kind = [], 0, None
    for m in _PLACEHOLDER.finditer(query):
        current.append(query[pos:m.start()])
        pos = m.end()
        ph = m.group(0)
        if ph == "%%":
            current.append("%")
            spans.append((m.start(), m.end(), 1))
            continue
        if ph == "%(":
            raise ProgrammingError(f"incomplete placeholder: '{query[m.start():].split()[0]}'")
        if ph == "% ":
            raise ProgrammingError("incomplete placeholder: '%'; if you want to use '%' as an operator "
                                   "you can double it up, i.e. use '%%'")
        if ph[-1] not in "sbt":
            raise ProgrammingError(f"only '%s', '%b', '%t' are allowed as placeholders, got '{ph}'")
        item: int | str = m.group(1) if m.group(1) else len(items)
        if kind is None:
            kind = type(item)
        elif kind is not type(item):
            raise ProgrammingError("positional and named placeholders cannot be mixed")
        pieces.append("".join(current))
        current = []
        items.append(item)
        spans.append((m.start(), m.end(), 0))
    rest = query[pos:]
    current.append(rest)
    pieces.append("".join(current))
    _check_unmatched(query, spans)
    return pieces, items, spans


def _check_unmatched(query: str, spans: list[Edit]) -> None:
    """A ``%`` no placeholder took (the last character, or before a newline): psycopg's ClientCursor
    then fails formatting its template, with Python's ValueError."""
    taken = {i for start, end, _ in spans for i in range(start, end)}
    for i, c in enumerate(query):
        if c == "%" and i not in taken:
            if i == len(query) - 1:
                raise ValueError("incomplete format")
            raise ValueError(f"unsupported format character {query[i + 1]!r} (0x{ord(query[i + 1]):x}) at index {i + 1}")


def _literal(text: str | None, cast: str | None) -> str:
    """A value as psycopg's literal: NULL, a number, or a quoted string with its cast."""
    if text is None:
        return "NULL"
    if cast in ("int4", "int8", "bool") or cast == "numeric" and text not in ("NaN", "Infinity", "-Infinity"):
        return text
    quoted = "'" + text.replace("'", "''") + "'"
    if "\\" in text:
        quoted = "E" + quoted.replace("\\", "\\\\")
    return f"{quoted}::{cast}" if cast else quoted


# -- values -----------------------------------------------------------------------
def encode(value: Any) -> tuple[str | None, str | None]:
    """A value as (PostgreSQL input text or None for NULL, the cast psycopg's literal would carry)."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        return str(value), _int_type(abs(value) if value >= 0 else -value - 1)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return _float_text(value), "float8"
        return repr(value), "numeric"
    if isinstance(value, decimal.Decimal):
        text = _decimal_text(value)
        if value.is_finite() and value == value.to_integral_value() and text.lstrip("-").isdigit():
            return text, _int_type(abs(int(value)))  # psycopg writes 5 for Decimal("5"): an integer literal
        return text, "numeric"
    if isinstance(value, str):
        _check_text(value)
        return value, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex(), "bytea"
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if isinstance(value, list):
        return _array(value)
    if isinstance(value, tuple):
        return _record(value), None
    wrapped = _json_wrapper(value)
    if wrapped is not None:
        return wrapped
    raise ProgrammingError(f"cannot adapt type {type(value).__name__!r} using placeholder '%s' (format: AUTO)")


def _int_type(magnitude: int) -> str:
    # psycopg's literal for an int: integer when it fits, bigint, else numeric
    return "int4" if magnitude < _INT4 else "int8" if magnitude < _INT8 else "numeric"


def _float_text(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _decimal_text(value: decimal.Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return str(value)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")


def _scalar(value: Any) -> tuple[str, str] | None:
    """Dates, times, intervals, UUIDs and network addresses: text and type, as psycopg dumps them."""
    if isinstance(value, dt.datetime):
        return (str(value), "timestamptz") if value.tzinfo is not None and value.utcoffset() is not None \
            else (str(value.replace(tzinfo=None)), "timestamp")
    if isinstance(value, dt.date):
        return value.isoformat(), "date"
    if isinstance(value, dt.time):
        return (str(value), "timetz") if value.tzinfo is not None and value.utcoffset() is not None \
            else (str(value.replace(tzinfo=None)), "time")
    if isinstance(value, dt.timedelta):
        return _interval_text(value), "interval"
    if isinstance(value, uuid.UUID):
        return value.hex, "uuid"
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value), "cidr"
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address,
                          ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return str(value), "inet"
    return None


def _interval_text(value: dt.timedelta) -> str:
    # psycopg's TimedeltaDumper: "D days H:MM:SS.ffffff", which PostgreSQL reads exactly
    return f"{value.days} day {value.seconds // 3600}:{value.seconds // 60 % 60:02d}:" \
           f"{value.seconds % 60:02d}.{value.microseconds:06d}"


# -- arrays, records, JSON ------------------------------------------------------------
_NEEDS_QUOTES = re.compile(r'[{}",\\ \t\n\r\f\v]|^$|^null$', re.I)  # psycopg's: bytes \s, no \x1c-\x1f


def _array(value: list) -> tuple[str, str | None]:
    """A list as an array literal, with the element type psycopg would give it (int2[] for small ints...)."""
    leaves = [v for v in _leaves(value) if v is not None]
    kinds = {_element_kind(v) for v in leaves}
    if kinds == {"timestamp", "timestamptz"}:  # psycopg: naive and aware datetimes make timestamptz[]
        kinds = {"timestamptz"}
    if len(kinds) > 1:
        names = ", ".join(sorted({type(v).__name__ for v in leaves}))
        raise DataError(f"cannot dump lists of mixed types; got: {names}")
    cast = None
    if kinds == {"int"}:
        top = max(v if v >= 0 else -v - 1 for v in leaves)
        cast = "int2" if top < _INT2 else _int_type(top)
    elif kinds:
        cast = kinds.pop()
    return _array_text(value), (f"{cast}[]" if cast else None)


def _element_kind(v: Any) -> str | None:
    """What decides an array's type: "int" (sized later), else the element's cast (None: unknown)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float8"
    if isinstance(v, decimal.Decimal):
        return "numeric"
    return encode(v)[1]


def _leaves(value: list):
    for v in value:
        if isinstance(v, list):
            yield from _leaves(v)
        else:
            yield v


def _array_text(value: list) -> str:
    parts = []
    for v in value:
        if isinstance(v, list):
            parts.append(_array_text(v))
        elif v is None:
            parts.append("NULL")
        else:
            text = _element_text(v)
            parts.append(_quote(text) if _NEEDS_QUOTES.search(text) else text)
    return "{" + ",".join(parts) + "}"


def _element_text(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, float):
        return repr(v)  # "nan", "inf", "-inf" included: float8's input reads them
    text = encode(v)[0]
    assert text is not None
    return text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _record(value: tuple) -> str:
    """A tuple as psycopg writes it: a record literal, quotes and backslashes doubled inside quotes."""
    parts = []
    for v in value:
        if v is None:
            parts.append("")
            continue
        text = _element_text(v) if not isinstance(v, (list, tuple)) else encode(v)[0] or ""
        if not text:
            parts.append('""')
        elif _RECORD_NEEDS_QUOTES.search(text):
            parts.append('"' + re.sub(r'(["\\])', r"\1\1", text) + '"')
        else:
            parts.append(text)
    return "(" + ",".join(parts) + ")"


_RECORD_NEEDS_QUOTES = re.compile(r'[",\\ \t\n\r\f\v()]')  # psycopg's composite dumper's


def _json_wrapper(value: Any) -> tuple[str, str] | None:
    """psycopg's ``Json``/``Jsonb`` wrappers (duck-typed: they must work without psycopg)."""
    name = type(value).__name__
    if name in ("Json", "Jsonb") and hasattr(value, "obj"):
        import json

        dumps = getattr(value, "dumps", None)
        text = dumps(value.obj) if callable(dumps) else json.dumps(value.obj)
        return (text.decode() if isinstance(text, bytes) else text), name.lower()
    return None
