"""Helpers shared by the readers tests: connections and value comparison rules.

The oracle for every type is psycopg's own decoding of the same query.  Where
Arrow and Python differ in what they can hold, one rule per type says what
"equal" means (TYPES.md, "How the tests compare"):

* floats: equal, or both NaN (float4: psycopg's value rounded to float32,
  since its text loader parses float4 output as a float64);
* numeric: equal as Decimal (the reader may add trailing zeros to a common
  scale), NaN on both sides, or the reader's text fallback equal to str();
* date/timestamp/timestamptz: the same day / microsecond instant, with
  'infinity' and '-infinity' mapped to the documented sentinels (the oracle
  uses loaders that return those sentinels instead of raising);
* time: microseconds of the day; interval: psycopg's timedelta (months as
  30 days, as psycopg does) against months/days/nanoseconds;
* uuid, inet, cidr, macaddr...: str() of psycopg's value, or PostgreSQL's
  text where psycopg has no loader; json/jsonb: json.loads() of the text;
* arrays: element by element with the element's rule.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import math
import struct
import uuid

import psycopg
import pyarrow as pa
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

from neon_notebook.readers import (
    DATE_INFINITY_DAYS,
    DATE_NEG_INFINITY_DAYS,
    TIMESTAMP_INFINITY_US,
    TIMESTAMP_NEG_INFINITY_US,
)

EPOCH = dt.datetime(1970, 1, 1)
EPOCH_TZ = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class _Inf(str):
    """What the oracle's loaders return for 'infinity' / '-infinity'."""


class InfDateLoader(DateLoader):
    def load(self, data):
        if bytes(data) in (b"infinity", b"-infinity"):
            return _Inf(bytes(data).decode())
        return super().load(data)


class InfTimestampLoader(TimestampLoader):
    def load(self, data):
        if bytes(data) in (b"infinity", b"-infinity"):
            return _Inf(bytes(data).decode())
        return super().load(data)


class InfTimestamptzLoader(TimestamptzLoader):
    def load(self, data):
        if bytes(data) in (b"infinity", b"-infinity"):
            return _Inf(bytes(data).decode())
        return super().load(data)


def connect_raw(url: str, **kw) -> psycopg.Connection:
    """A plain psycopg connection as the readers' tests use it: autocommit, nothing prepared."""
    kw.setdefault("autocommit", True)
    return psycopg.connect(url, prepare_threshold=None, **kw)


def oracle(conn: psycopg.Connection, query, params=None) -> list[tuple]:
    """psycopg's own decoding of ``query`` (text format, infinity-aware)."""
    cur = conn.cursor()
    cur.adapters.register_loader("date", InfDateLoader)
    cur.adapters.register_loader("timestamp", InfTimestampLoader)
    cur.adapters.register_loader("timestamptz", InfTimestamptzLoader)
    cur.execute(query, params)
    return cur.fetchall()


def arrow_values(col: pa.ChunkedArray | pa.Array) -> list:
    """Python values of an Arrow column, with temporal types as integers (no overflow)."""
    t = col.type
    if pa.types.is_date32(t):
        return col.cast(pa.int32()).to_pylist()
    if pa.types.is_timestamp(t):
        return col.cast(pa.int64()).to_pylist()
    if pa.types.is_time64(t):
        return col.cast(pa.int64()).to_pylist()
    if pa.types.is_list(t) and (
        pa.types.is_date32(t.value_type) or pa.types.is_timestamp(t.value_type)
        or pa.types.is_time64(t.value_type)
    ):
        ints = pa.list_(pa.int64() if not pa.types.is_date32(t.value_type) else pa.int32())
        return col.cast(ints).to_pylist()
    return col.to_pylist()


def _date_days(v) -> int:
    if isinstance(v, _Inf):
        return DATE_INFINITY_DAYS if v == "infinity" else DATE_NEG_INFINITY_DAYS
    return (v - dt.date(1970, 1, 1)).days


def _ts_us(v) -> int:
    if isinstance(v, _Inf):
        return TIMESTAMP_INFINITY_US if v == "infinity" else TIMESTAMP_NEG_INFINITY_US
    delta = v - (EPOCH_TZ if v.tzinfo is not None else EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def same(pgtype: str, ours, theirs) -> bool:
    """Whether the reader's value equals psycopg's, by the rule for ``pgtype``."""
    base = pgtype.split("(")[0].strip()
    if base in ("json", "jsonb") and ours is not None:
        return json.loads(ours) == theirs  # JSON null is not SQL NULL: psycopg says None
    if theirs is None or ours is None:
        return theirs is None and ours is None
    if base.endswith("[]"):
        elem = base[:-2]
        return len(ours) == len(theirs) and all(
            same(elem, a, b) for a, b in zip(ours, theirs)
        )
    if base in ("float4", "float8"):
        if base == "float4":  # psycopg's text loader reads float4 output as a float64
            theirs = struct.unpack("f", struct.pack("f", theirs))[0]
        return (math.isnan(ours) and math.isnan(theirs)) or ours == theirs
    if base in ("numeric", "decimal"):
        if isinstance(ours, str):  # text fallback
            mine = decimal.Decimal(ours)
            return (mine.is_nan() and theirs.is_nan()) or mine == theirs
        if theirs.is_nan():
            return False
        return ours == theirs
    if base == "date":
        return ours == _date_days(theirs)
    if base in ("timestamp", "timestamptz"):
        return ours == _ts_us(theirs)
    if base == "time":
        return ours == ((theirs.hour * 60 + theirs.minute) * 60 + theirs.second) * 10**6 + theirs.microsecond
    if base == "interval":
        days = ours.months * 30 + ours.days
        return theirs == dt.timedelta(days=days, microseconds=ours.nanoseconds // 1000)
    if base in ("json", "jsonb"):
        return json.loads(ours) == theirs
    if base in ("uuid",):
        return uuid.UUID(ours) == theirs
    if base in ("inet", "cidr"):
        return ipaddress.ip_interface(ours) == ipaddress.ip_interface(str(theirs))
    return ours == theirs
