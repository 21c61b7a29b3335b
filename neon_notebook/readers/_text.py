"""PostgreSQL's text output -> Arrow arrays, vectorised: dates, timestamps, bytea hex, and back.

The parsers behind the kinds' ``from_text`` (the row path, COPY's text format,
and a transport receiving PostgreSQL's text), plus the other way round:
PostgreSQL's text of a timestamp or interval past Arrow's range, as the
server prints it.  Arrow and numpy only; errors load on first use.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import pyarrow as pa

from ._lazy import lazy_module

pc = lazy_module("pyarrow.compute")
errors = lazy_module("neon_notebook.errors")  # with psycopg, which decoding does not need

#: ``'infinity'`` and ``'-infinity'`` timestamps (timestamp and timestamptz):
#: the largest and smallest instants Arrow holds, in microseconds since 1970.
#: ``INT64_MIN + 1`` rather than ``INT64_MIN``, which numpy reads as NaT.
TIMESTAMP_INFINITY_US = 2**63 - 1
TIMESTAMP_NEG_INFINITY_US = -(2**63) + 1
#: ``'infinity'`` and ``'-infinity'`` dates, in days since 1970.
DATE_INFINITY_DAYS = 2**31 - 1
DATE_NEG_INFINITY_DAYS = -(2**31)

_US_PER_DAY = 86_400_000_000

def first_long_interval(arr: pa.Array) -> str | None:
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


def validity_buffer(valid: pa.Array) -> pa.Buffer | None:
    """A validity bitmap for ``valid`` (a boolean array), or None if all valid."""
    if pc.all(valid).as_py() is not False:
        return None
    return pa.array(valid.to_numpy(zero_copy_only=False), pa.bool_()).buffers()[1]


_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def hex_decode(arr: pa.Array) -> pa.Array:
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
        raise errors.UnrepresentableValue("malformed bytea hex output")
    raw = (hi << 4) | lo
    removed = np.concatenate([[0], np.cumsum(prefixed) * 2])
    new_offsets = ((off - start - removed) // 2).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(),
        n,
        [validity_buffer(pc.is_valid(arr)), pa.py_buffer(new_offsets), pa.py_buffer(raw)],
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
        raise errors.UnrepresentableValue(f"cannot parse date/time {s!r}")
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


def date_value(s: str) -> int:
    if s == "infinity":
        return DATE_INFINITY_DAYS
    if s == "-infinity":
        return DATE_NEG_INFINITY_DAYS
    return _parse_pg_datetime(s)[0]


def timestamp_value(s: str) -> int:
    if s == "infinity":
        return TIMESTAMP_INFINITY_US
    if s == "-infinity":
        return TIMESTAMP_NEG_INFINITY_US
    days, us = _parse_pg_datetime(s)
    v = days * _US_PER_DAY + us
    if not TIMESTAMP_NEG_INFINITY_US < v < TIMESTAMP_INFINITY_US:
        raise errors.UnrepresentableValue(f"timestamp {s!r} is beyond Arrow's microsecond range")
    return v


_PLAIN_DATE = r"^\d{4}-\d\d-\d\d$"
_PLAIN_TS = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?([+-]\d\d(:\d\d)?)?$"


def temporal_from_text(
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
        target, len(arr), [validity_buffer(pc.is_valid(arr)), pa.py_buffer(out)]
    )


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


def as_pg_text(arr: pa.Array) -> pa.Array:
    """Timestamp or interval values (in range) as the text :func:`timestamp_text`/:func:`interval_text` give."""
    if pa.types.is_timestamp(arr.type):
        tz = arr.type.tz is not None
        values = arr.cast(pa.int64()).to_pylist()
        return pa.array([None if v is None else timestamp_text(v, tz) for v in values], pa.string())
    return pa.array([None if v is None else interval_text(v.months, v.days, v.nanoseconds // 1000)
                     for v in arr.to_pylist()], pa.string())
