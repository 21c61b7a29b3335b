"""Exact types through ``Session.write`` (neon_notebook/readers/WRITE_TYPES.md), on both endpoints.

For every Arrow, pandas and polars type: (a) the column a new table gets
(``format_type`` from ``pg_attribute``) is the documented one, (b) psycopg's
own decoding of what was stored equals the input (the oracle), (c) reading it
back (``read_arrow``/``read_pandas``/``read_polars``) gives the input again,
checked with hypothesis too. Values are compared through :func:`canon` and its
psycopg / reader counterparts, which spell each type's rule once (float4 values
compared as float32, instants as microseconds since 1970, JSON numbers as
Decimals). Existing columns: what goes in, and what is refused (a clear error
naming the column and row, and the table unchanged).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
import uuid
from decimal import Decimal

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.types as pt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import set_json_loads
from readers_support import connect_raw

import neon_notebook as nn
from neon_notebook.errors import ConfigurationError, UnrepresentableValue
from neon_notebook.writers import source

SCHEMA = "nn_write_types"
UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1)
NAN = "NaN"  # NaN's canonical form: equal to itself
FEW = settings(max_examples=20, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(direct_url):
    """The oracle: an autocommit connection to the direct endpoint, JSON numbers as Decimals."""
    with connect_raw(direct_url) as conn:
        set_json_loads(lambda text: json.loads(text, parse_float=Decimal), conn)
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        yield conn
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))


@pytest.fixture(scope="module")
def session(db, pooled_url, direct_url):
    with nn.connect(pooled_url, direct_url=direct_url, schema=SCHEMA, suspend_after=None,
                    pool_size=2) as s:
        yield s


class Io:
    """Writes and reads of one endpoint, and the oracle's view of a table."""

    def __init__(self, session, db, endpoint):
        self.session, self.db, self.direct = session, db, endpoint == "direct"
        self.endpoint = endpoint

    def name(self, base: str) -> str:
        """A table name of this endpoint's, no table of that name left."""
        name = f"{base}_{self.endpoint}"
        self.db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(SCHEMA, name)))
        return name

    def write(self, data, table, **kwargs) -> int:
        return self.session.write(data, table, direct=self.direct, progress=False, **kwargs)

    def query(self, table: str, columns) -> str:
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        return sql.SQL("SELECT {} FROM {} ORDER BY 1").format(cols, sql.Identifier(SCHEMA, table)).as_string(self.db)

    def read(self, table: str, columns, how: str = "arrow", **kwargs):
        reader = getattr(self.session, f"read_{how}")
        return reader(self.query(table, columns), direct=self.direct, progress=False, **kwargs)

    def stored(self, table: str, columns) -> list[tuple]:
        return self.db.execute(self.query(table, columns)).fetchall()

    def types(self, table: str) -> dict[str, str]:
        return dict(self.db.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f"{SCHEMA}.{table}",)).fetchall())


@pytest.fixture
def io(session, db, endpoint):
    return Io(session, db, endpoint)


# -- canonical values: one rule per type --------------------------------------------------------


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _float(t: pa.DataType, x) -> object:
    x = float(x)
    return NAN if math.isnan(x) else (f32(x) if t.bit_width < 64 else x)


def _us(v: dt.datetime) -> int:
    """An instant (aware) or a wall time (naive) as microseconds since 1970."""
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    delta = v - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _clock(v: dt.time) -> int:
    return ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond


def _interval(v) -> dt.timedelta:
    """A duration, or months/days/ns as psycopg reads an interval: a year 365 days, a month 30."""
    if isinstance(v, dt.timedelta):
        return v
    years = int(v.months / 12)
    days = years * 365 + (v.months - 12 * years) * 30 + v.days
    return dt.timedelta(days=days, microseconds=v.nanoseconds // 1000)


def _is_list(t: pa.DataType) -> bool:
    return pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t) or pt.is_list_view(t)


def _iso(v: dt.datetime | dt.time) -> str:
    """The ISO text the encoder writes inside JSON: trailing zeros of the fraction dropped."""
    text = f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if isinstance(v, dt.datetime):
        aware = v.tzinfo is not None
        v = v.astimezone(UTC) if aware else v
        text = f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    fraction = f"{v.microsecond:06d}".rstrip("0")
    text += f".{fraction}" if fraction else ""
    return text + ("+00:00" if isinstance(v, dt.datetime) and aware else "")


def in_json(t: pa.DataType, v):
    """What a value of Arrow type ``t`` becomes inside JSON (as psycopg reads it, numbers as Decimals)."""
    if v is None:
        return None
    if pt.is_dictionary(t):
        return in_json(t.value_type, v)
    if pt.is_floating(t):
        return _float(t, v)
    if pt.is_date(t):
        return v.isoformat()
    if pt.is_timestamp(t) or pt.is_time(t):
        return _iso(v)
    if isinstance(t, pa.UuidType):
        return str(v)
    if _is_list(t):
        return [in_json(t.value_type, x) for x in v]
    if pt.is_struct(t):
        return {f.name: in_json(f.type, v[f.name]) for f in t}
    if pt.is_map(t):
        return {str(k): in_json(t.item_type, x) for k, x in v}
    return v


def from_json(t: pa.DataType, j):
    """psycopg's JSON value read by the Arrow type it came from (JSON numbers were Decimals)."""
    if j is None:
        return None
    if pt.is_floating(t):
        return _float(t, j)
    if pt.is_decimal(t):
        return Decimal(j)
    if _is_list(t) and isinstance(j, list):
        return [from_json(t.value_type, x) for x in j]
    if pt.is_struct(t) and isinstance(j, dict):
        fields = {f.name: f.type for f in t}
        return {k: from_json(fields[k], x) if k in fields else ("extra key", x) for k, x in j.items()}
    if pt.is_map(t) and isinstance(j, dict):
        return {k: from_json(t.item_type, x) for k, x in j.items()}
    return j


def canon(t: pa.DataType, v):
    """An input value (``to_pylist()``'s) of Arrow type ``t`` as the tests compare it."""
    if v is None:
        return None
    if pt.is_dictionary(t):
        return canon(t.value_type, v)
    if pt.is_floating(t):
        return _float(t, v)
    if pt.is_timestamp(t):
        return _us(v)
    if pt.is_time(t):
        return _clock(v)
    if pt.is_interval(t) or pt.is_duration(t):
        return _interval(v)
    if _is_list(t):
        return [canon(t.value_type, x) for x in v]
    if pt.is_struct(t) or pt.is_map(t):
        return in_json(t, v)
    if isinstance(t, pa.JsonType):
        return json.loads(v, parse_float=Decimal)
    return v


def from_pg(t: pa.DataType, v):
    """psycopg's value of a column written from Arrow type ``t``, as :func:`canon` gives it."""
    if v is None:
        return None
    if pt.is_dictionary(t):
        return from_pg(t.value_type, v)
    if pt.is_floating(t):
        return _float(t, v)
    if pt.is_timestamp(t):
        return _us(v)
    if pt.is_time(t):
        return _clock(v)
    if _is_list(t):
        return [from_pg(t.value_type, x) for x in v]
    if pt.is_struct(t) or pt.is_map(t):
        return from_json(t, v)
    return v


def from_read(t: pa.DataType, v):
    """The reader's value (``read_arrow(...).to_pylist()``) of a column written from ``t``."""
    if v is None:
        return None
    if pt.is_struct(t) or pt.is_map(t) or isinstance(t, pa.JsonType):
        parsed = json.loads(v, parse_float=Decimal)
        return parsed if isinstance(t, pa.JsonType) else from_json(t, parsed)
    if isinstance(t, pa.UuidType):
        return uuid.UUID(v)
    if pt.is_interval(t) or pt.is_duration(t):
        return _interval(v)
    if _is_list(t):
        return [from_read(t.value_type, x) for x in v]
    return from_pg(t, v)


def expected(table: pa.Table) -> list[tuple]:
    """The input's rows, canonical, ordered by the first column (the tests' key)."""
    columns = [[canon(f.type, v) for v in table.column(i).to_pylist()] for i, f in enumerate(table.schema)]
    return sorted(zip(*columns), key=lambda r: r[0])


def oracle(io: Io, table: str, schema: pa.Schema) -> list[tuple]:
    return [tuple(from_pg(f.type, v) for f, v in zip(schema, row)) for row in io.stored(table, schema.names)]


def read_back(io: Io, table: str, schema: pa.Schema) -> list[tuple]:
    got = io.read(table, schema.names)
    columns = [[from_read(f.type, v) for v in got.column(i).to_pylist()] for i, f in enumerate(schema)]
    return list(zip(*columns))


def assert_rows(got: list[tuple], want: list[tuple], names) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for name, a, b in zip(names, g, w):
            assert a == b, (name, a, b)


# -- every Arrow type -----------------------------------------------------------------------------

TEXTS = ["", "plain", "tab\there", "new\nline\r\n", "back\\slash", "quote'\"", "ünïcødé ✓ 𝄞", None, "\x01\x1f"]
N = len(TEXTS)


def col(values, type_):
    return pa.array((values * N)[:N], type_)


def with_uuids(values: list, type_: pa.StructType, uuids: list) -> pa.Array:
    """Structs (dicts or None) with a uuid field "u" added (pyarrow builds no nested extension values)."""
    plain = pa.array(values, type_)
    fields = [plain.field(i) for i in range(plain.type.num_fields)] + [pa.array(uuids, pa.uuid())]
    names = [f.name for f in plain.type] + ["u"]
    return pa.StructArray.from_arrays(fields, names, mask=pa.array([v is None for v in values]))


def every_type() -> pa.Table:
    """One column of every supported Arrow type, with NULLs and each type's edges."""
    ts = [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), None,
          dt.datetime(1969, 12, 31, 23, 59, 59, 1)]
    struct_type = pa.struct([("i", pa.int64()), ("s", pa.string()), ("f", pa.float64()),
                             ("f4", pa.float32()), ("n", pa.decimal128(12, 3)), ("b", pa.bool_()),
                             ("l", pa.list_(pa.int32())), ("o", pa.struct([("d", pa.date32())])),
                             ("t", pa.timestamp("us", tz="UTC"))])
    structs = [{"i": -2**63, "s": '"\\\n\t\x00'.replace("\x00", "\x07") + "ü𝄞", "f": 0.1, "f4": 0.1,
                "n": Decimal("-123456789.125"), "b": True, "l": [1, None, -3],
                "o": {"d": dt.date(2024, 2, 29)}, "t": dt.datetime(2024, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)},
               None,
               {"i": None, "s": "", "f": 1e300, "f4": None, "n": Decimal("0.000"), "b": False, "l": [],
                "o": None, "t": None},
               {"i": 2**63 - 1, "s": None, "f": -0.0, "f4": 3.0, "n": None, "b": None, "l": None,
                "o": {"d": None}, "t": dt.datetime(1, 1, 1, tzinfo=UTC)}]
    structs = with_uuids((structs * N)[:N], struct_type,
                         ([uuid.UUID(int=7), None, None, uuid.UUID(int=2**128 - 1)] * N)[:N])
    return pa.table({
        "k": pa.array(range(N), pa.int32()),
        "i8": col([-128, 127, None, 0], pa.int8()),
        "i16": col([-32768, 32767, None], pa.int16()),
        "i32": col([-2**31, 2**31 - 1, None], pa.int32()),
        "i64": col([-2**63, 2**63 - 1, None, 0], pa.int64()),
        "u8": col([0, 255, None], pa.uint8()),
        "u16": col([0, 65535, None], pa.uint16()),
        "u32": col([0, 2**32 - 1, None], pa.uint32()),
        "u64": col([0, 2**64 - 1, None, 2**63], pa.uint64()),
        "f16": col([1.5, float("nan"), float("inf"), None, -0.0, 65504.0, 6e-08], pa.float16()),
        "f32": col([0.1, float("nan"), -float("inf"), None, 3.4e38], pa.float32()),
        "f64": col([1e308, float("nan"), -float("inf"), None, 5e-324, 0.1], pa.float64()),
        "b": col([True, False, None], pa.bool_()),
        "s": pa.array(TEXTS, pa.string()),
        "ls": pa.array(TEXTS[::-1], pa.large_string()),
        "sv": pa.array(TEXTS, pa.string_view()),
        "cat": pa.array(TEXTS, pa.string()).dictionary_encode(),
        "bin": col([b"", b"\x00\xff\\", None, bytes(range(256))], pa.binary()),
        "lbin": col([b"x", None, b""], pa.large_binary()),
        "bv": col([b"\x00", None, b""], pa.binary_view()),
        "d32": col([dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(1970, 1, 1)], pa.date32()),
        "d64": col([dt.date(1, 1, 1), None, dt.date(2024, 2, 29)], pa.date64()),
        "ts": col(ts, pa.timestamp("us")),
        "ts_s": col([dt.datetime(2024, 2, 29, 12), None], pa.timestamp("s")),
        "ts_ns": pa.array(([1_700_000_000_123_456_000, None, -1_000] * N)[:N], pa.timestamp("ns")),
        "tstz": col([dt.datetime(2024, 3, 31, 1, 30, tzinfo=UTC), None, dt.datetime(1, 1, 1, tzinfo=UTC)],
                    pa.timestamp("ms", tz="Europe/Paris")),
        "t64": col([dt.time(0), dt.time(23, 59, 59, 999999), None], pa.time64("us")),
        "t32": col([dt.time(12, 30, 1, 5000), None], pa.time32("ms")),
        "tns": pa.array(([86_399_999_999_000, None, 1_000] * N)[:N], pa.time64("ns")),
        "dur": col([dt.timedelta(0), dt.timedelta(days=-3, microseconds=7), None,
                    dt.timedelta(days=36500, seconds=5)], pa.duration("us")),
        "mdn": col([pa.MonthDayNano([1, 2, 3000]), None, pa.MonthDayNano([-14, 0, -86_400 * 10**9])],
                   pa.month_day_nano_interval()),
        "dec32": col([Decimal("-99999.99"), Decimal("0.01"), None], pa.decimal32(7, 2)),
        "dec64": col([Decimal("99999999999999.9999"), None, Decimal("-0.0001")], pa.decimal64(18, 4)),
        "dec128": col([Decimal("-1234567890123456789012345678.0123456789"), None, Decimal("0E-10")],
                      pa.decimal128(38, 10)),
        "dec256": col([Decimal("-" + "9" * 55 + ".99999"), None, Decimal("1E-5"), Decimal("10") ** 54],
                      pa.decimal256(60, 5)),
        "u": col([uuid.UUID(int=0), None, uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")], pa.uuid()),
        "li": col([[1, None, -3], [], None, [2**31 - 1]], pa.list_(pa.int32())),
        "ll": col([[-2**63], None, []], pa.large_list(pa.int64())),
        "lf": col([[0.5, float("nan")], None, [None, -float("inf")]], pa.list_(pa.float64(), 2)),
        "lv": col([["a", None, "\t\"{},"], [], None, ["NULL"]], pa.list_view(pa.string())),
        "lnum": col([[Decimal("1.25"), None], [], None], pa.list_(pa.decimal128(10, 2))),
        "lts": col([[dt.datetime(2024, 1, 1, tzinfo=UTC), None], None], pa.list_(pa.timestamp("us", tz="UTC"))),
        "lu": pa.ListArray.from_arrays(pa.array([0, 2, 2, 4, 4, 6, 6, 8, 8, 10], pa.int32()),  # [[u, None], None]...
                                       pa.array([uuid.UUID(int=1), None] * 5, pa.uuid()),
                                       mask=pa.array([False, True] * 4 + [False])),
        "lb": col([[True, None, False], None], pa.list_(pa.bool_())),
        "lbins": col([[b"\x00", None, b""], None], pa.list_(pa.binary())),
        "ld": col([[dt.date(2000, 1, 1), None], None], pa.list_(pa.date32())),
        "lcat": col([["a", "b", None], None], pa.list_(pa.dictionary(pa.int8(), pa.string()))),
        "st": structs,
        "mp": col([[("a", 1.5), ("b", None)], None, [], [("\"q\"", -2.0)]], pa.map_(pa.string(), pa.float64())),
        "mpi": col([[(1, "one"), (-2, None)], None], pa.map_(pa.int32(), pa.string())),
        "lst": col([[{"x": 1}, None], [], None], pa.list_(pa.struct([("x", pa.int8())]))),
        "js": pa.ExtensionArray.from_storage(
            pa.json_(), col(['{"a": [1, 2.5, "x"]}', "null", None, '"s"', "[]"], pa.string())),
    })


CREATED = {
    "k": "integer", "i8": "smallint", "i16": "smallint", "i32": "integer", "i64": "bigint",
    "u8": "smallint", "u16": "integer", "u32": "bigint", "u64": "numeric(20,0)",
    "f16": "real", "f32": "real", "f64": "double precision", "b": "boolean",
    "s": "text", "ls": "text", "sv": "text", "cat": "text", "bin": "bytea", "lbin": "bytea",
    "bv": "bytea", "d32": "date", "d64": "date", "ts": "timestamp without time zone",
    "ts_s": "timestamp without time zone", "ts_ns": "timestamp without time zone",
    "tstz": "timestamp with time zone", "t64": "time without time zone",
    "t32": "time without time zone", "tns": "time without time zone", "dur": "interval",
    "mdn": "interval", "dec32": "numeric(7,2)", "dec64": "numeric(18,4)",
    "dec128": "numeric(38,10)", "dec256": "numeric(60,5)", "u": "uuid", "li": "integer[]",
    "ll": "bigint[]", "lf": "double precision[]", "lv": "text[]", "lnum": "numeric(10,2)[]",
    "lts": "timestamp with time zone[]", "lu": "uuid[]", "lb": "boolean[]", "lbins": "bytea[]",
    "ld": "date[]", "lcat": "text[]", "st": "jsonb", "mp": "jsonb", "mpi": "jsonb", "lst": "jsonb[]",
    "js": "jsonb",
}


def test_every_arrow_type_created_stored_and_read_back_exactly(io):
    data = every_type()
    table = io.name("every")
    assert io.write(data, table, mode="create") == N
    assert io.types(table) == CREATED
    want = expected(data)
    assert_rows(oracle(io, table, data.schema), want, data.column_names)
    assert_rows(read_back(io, table, data.schema), want, data.column_names)
    # the reader's own types where they correspond one to one
    got = io.read(table, ["li", "ll", "lv", "u64", "dec256", "d64", "mdn"]).schema
    assert [f.type for f in got] == [pa.list_(pa.int32()), pa.list_(pa.int64()), pa.list_(pa.string()),
                                     pa.decimal128(20, 0), pa.decimal256(60, 5), pa.date32(),
                                     pa.month_day_nano_interval()]


def test_json_is_exact_text(io, db):
    """Escapes, numbers and nesting as PostgreSQL's own jsonb prints them; JSON null is not SQL NULL."""
    data = every_type().select(["k", "st", "mp", "js"])
    table = io.name("json_text")
    io.write(data, table, mode="create")
    rows = db.execute(sql.SQL("SELECT st::text, mp::text, js::text, js IS NULL FROM {} ORDER BY k")
                      .format(sql.Identifier(SCHEMA, table))).fetchall()
    assert rows[0][0] == (
        '{"b": true, "f": 0.1, "i": -9223372036854775808, "l": [1, null, -3], "n": -123456789.125, '
        '"o": {"d": "2024-02-29"}, "s": "\\"\\\\\\n\\t\\u0007ü𝄞", "t": "2024-01-02T03:04:05.6+00:00", '
        '"u": "00000000-0000-0000-0000-000000000007", "f4": 0.1}')
    assert rows[1] == (None, None, "null", False)  # SQL NULL struct; the JSON literal null
    assert '"l": [], "n": 0.000, "o": null, "s": "", "t": null' in rows[2][0] and rows[2][1] == "{}"
    assert rows[3][1] == '{"\\"q\\"": -2.0}'  # a float stays a float in JSON


# -- pandas and polars ----------------------------------------------------------------------------


def pandas_frame() -> pd.DataFrame:
    n = 4
    return pd.DataFrame({
        "k": pd.array(range(n), "Int32"),
        "i8": pd.array([-128, None, 127, 0], "Int8"),
        "i64": pd.array([2**63 - 1, None, -2**63, 0], "Int64"),
        "u64": pd.array([2**64 - 1, None, 0, 1], "UInt64"),
        "np_i16": pd.Series([1, -32768, 32767, 0], dtype="int16"),
        "f64": pd.Series([float("nan"), 0.1, -float("inf"), 1e-300]),  # numpy: NaN is pandas' NULL
        "f32": pd.Series([float("nan"), 0.1, None, 1.0], dtype="float32"),  # None: NaN too
        "nf": pd.array([None, 0.5, -1.5, 2.0], "Float64"),  # nullable: <NA> is NULL
        "b": pd.array([True, None, False, True], "boolean"),
        "s": pd.array(["", None, "tab\t\"quote\"\\", "ü𝄞"], "string"),
        "cat": pd.Series(["a", None, "b", "a"], dtype="category"),
        "obj_s": pd.Series(["x", None, "", "\n"], dtype=object),
        "by": pd.Series([b"\x00", None, b"", b"\xff"], dtype=object),
        "ts": pd.Series(pd.to_datetime(["2024-01-01 00:00:00.000001", None, "1677-09-22", "2262-04-11"],
                                       format="ISO8601")).astype("datetime64[ns]"),  # pandas' default unit
        "tz": pd.Series(pd.to_datetime(["2024-03-31 01:30", None, "2000-01-01", "1970-01-01"], format="ISO8601")
                        ).astype("datetime64[ns]").dt.tz_localize("Europe/Paris"),
        "td": pd.Series(pd.to_timedelta(["1 day 00:00:00.000001", None, "-3 days", "0s"])).astype("timedelta64[ns]"),
        "dec": pd.Series([Decimal("1.50"), None, Decimal("-0.01"), Decimal("123456789.12")], dtype=object),
        "date": pd.Series([dt.date(1, 1, 1), None, dt.date(9999, 12, 31), dt.date(2024, 2, 29)], dtype=object),
        "time": pd.Series([dt.time(0), None, dt.time(23, 59, 59, 999999), dt.time(12)], dtype=object),
        "u": pd.Series([uuid.UUID(int=1), None, uuid.UUID(int=2), uuid.uuid4()], dtype=object),
        "d": pd.Series([{"a": 1, "b": [1.5, None]}, None, {"c": {"d": "ü\"\\"}}, {}], dtype=object),
        "l": pd.Series([[1, None, 3], None, [], [2**62]], dtype=object),
        "ls": pd.Series([["a", None], None, [], [""]], dtype=object),
        "ld": pd.Series([[{"x": 1}], None, [], [{"y": None}]], dtype=object),
        "arrow_l": pd.Series([[1], None, [], [2]], dtype=pd.ArrowDtype(pa.list_(pa.int16()))),
        "arrow_st": pd.Series([{"p": 1.5}, None, {"p": None}, {"p": -2.0}],
                              dtype=pd.ArrowDtype(pa.struct([("p", pa.float64())]))),
    })


PANDAS_CREATED = {
    "k": "integer", "i8": "smallint", "i64": "bigint", "u64": "numeric(20,0)", "np_i16": "smallint",
    "f64": "double precision", "f32": "real", "nf": "double precision", "b": "boolean", "s": "text",
    "cat": "text", "obj_s": "text", "by": "bytea", "ts": "timestamp without time zone",
    "tz": "timestamp with time zone", "td": "interval", "dec": "numeric(11,2)", "date": "date",
    "time": "time without time zone", "u": "uuid", "d": "jsonb", "l": "bigint[]", "ls": "text[]",
    "ld": "jsonb", "arrow_l": "smallint[]", "arrow_st": "jsonb",
}


def test_pandas_dtypes_created_stored_and_read_back(io):
    df = pandas_frame()
    table = io.name("pandas")
    assert io.write(df, table, mode="create") == len(df)
    assert io.types(table) == PANDAS_CREATED
    arrow = pa.Table.from_batches(list(source(df).batches()))  # pyarrow's conversion, our rules
    want = expected(arrow)
    assert_rows(oracle(io, table, arrow.schema), want, df.columns)
    back = io.read(table, list(df.columns), "pandas", dtype_backend="pyarrow")
    assert_rows([tuple(from_read(f.type, v) for f, v in zip(arrow.schema, row))
                 for row in zip(*(pa.array(back[c]).to_pylist() for c in df.columns))], want, df.columns)
    # nullable integers stay integers; '' and NULL stay apart; a numpy float's NaN is pandas'
    # missing value, so NULL (an ArrowDtype float keeps NaN and null apart, as Arrow does)
    nullable = io.read(table, ["k", "i8", "i64", "s"], "pandas")
    assert [str(t) for t in nullable.dtypes] == ["Int32", "Int16", "Int64", "string"]
    assert nullable["s"].tolist()[:2] == ["", pd.NA]
    assert io.db.execute(sql.SQL("SELECT count(*) FILTER (WHERE f64 = 'NaN'), count(*) FILTER (WHERE f64 IS NULL), "
                                 "count(*) FILTER (WHERE nf IS NULL) FROM {}").format(
        sql.Identifier(SCHEMA, table))).fetchone() == (0, 1, 1)


def polars_frame() -> pl.DataFrame:
    return pl.DataFrame({
        "k": pl.Series(range(4), dtype=pl.Int32),
        "i8": pl.Series([-128, None, 127, 0], dtype=pl.Int8),
        "u32": pl.Series([2**32 - 1, None, 0, 1], dtype=pl.UInt32),
        "u64": pl.Series([2**64 - 1, None, 0, 1], dtype=pl.UInt64),
        "f32": pl.Series([float("nan"), 0.1, None, -0.0], dtype=pl.Float32),
        "f64": pl.Series([float("nan"), None, float("inf"), 5e-324], dtype=pl.Float64),
        "b": pl.Series([True, None, False, True]),
        "s": pl.Series(["", None, "a\tb\n\\\"", "ü𝄞"]),
        "cat": pl.Series(["x", None, "y", "x"], dtype=pl.Categorical),
        "enum": pl.Series(["lo", "hi", None, "lo"], dtype=pl.Enum(["lo", "hi"])),
        "bin": pl.Series([b"\x00", None, b"", b"\xff"]),
        "d": pl.Series([dt.date(1, 1, 1), None, dt.date(9999, 12, 31), dt.date(2024, 2, 29)]),
        "ts": pl.Series([dt.datetime(2024, 1, 1, 0, 0, 0, 1), None, dt.datetime(1, 1, 1), dt.datetime(1970, 1, 1)]),
        "ts_ns": pl.Series([dt.datetime(2024, 1, 1, 0, 0, 0, 1), None, None, None]).cast(pl.Datetime("ns")),
        "tz": pl.Series([dt.datetime(2024, 3, 31, 1, 30), None, dt.datetime(2000, 1, 1), None]).dt.replace_time_zone("UTC"),
        "dur": pl.Series([dt.timedelta(days=1, microseconds=1), None, dt.timedelta(days=-3), dt.timedelta(0)]),
        "tm": pl.Series([dt.time(0), None, dt.time(23, 59, 59, 999999), dt.time(12)]),
        "dec": pl.Series(["1.50", None, "-0.01", "123456789.12"]).cast(pl.Decimal(12, 2)),
        "l": pl.Series([[1, None, 3], None, [], [2**62]]),
        "lstr": pl.Series([["a", None], None, [], [""]]),
        "arr": pl.Series([[1, 2], None, [3, None], [5, 6]], dtype=pl.Array(pl.Int16, 2)),
        "st": pl.Series([{"a": 1, "b": "x"}, None, {"a": None, "b": ""}, {"a": -1, "b": "\"ü\""}]),
    })


POLARS_CREATED = {
    "k": "integer", "i8": "smallint", "u32": "bigint", "u64": "numeric(20,0)", "f32": "real",
    "f64": "double precision", "b": "boolean", "s": "text", "cat": "text", "enum": "text",
    "bin": "bytea", "d": "date", "ts": "timestamp without time zone",
    "ts_ns": "timestamp without time zone", "tz": "timestamp with time zone", "dur": "interval",
    "tm": "time without time zone", "dec": "numeric(12,2)", "l": "bigint[]", "lstr": "text[]",
    "arr": "smallint[]", "st": "jsonb",
}


def test_polars_dtypes_created_stored_and_read_back(io):
    df = polars_frame()
    table = io.name("polars")
    assert io.write(df, table, mode="create") == len(df)
    assert io.types(table) == POLARS_CREATED
    arrow = df.to_arrow()
    want = expected(arrow)
    assert_rows(oracle(io, table, arrow.schema), want, df.columns)
    back = io.read(table, df.columns, "polars").to_arrow()
    assert_rows([tuple(from_read(f.type, v) for f, v in zip(arrow.schema, row))
                 for row in zip(*(c.to_pylist() for c in back.columns))], want, df.columns)
    # the polars dtypes that map one to one come back as they went
    same = ["k", "f32", "f64", "b", "s", "bin", "d", "ts", "tz", "tm", "dec"]
    back_df = io.read(table, same, "polars")
    assert back_df.schema["k"] == pl.Int32 and back_df.schema["f32"] == pl.Float32
    assert back_df.schema["d"] == pl.Date and back_df.schema["dec"] == pl.Decimal(12, 2)


# -- hypothesis round trips -----------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | texts
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
instants = st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30))
#: Per column: its Arrow type and a strategy for one value (NULL included).
COLUMNS = {
    "i16": (pa.int16(), st.integers(-2**15, 2**15 - 1)),
    "i64": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "u64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "f32": (pa.float32(), st.floats(width=32)),
    "f64": (pa.float64(), st.floats()),
    "s": (pa.string(), texts),
    "bin": (pa.binary(), st.binary(max_size=8)),
    "dec": (pa.decimal128(38, 9), st.decimals(-10**28, 10**28, places=9, allow_nan=False)),
    "wide": (pa.decimal256(50, 4), st.decimals(-10**45, 10**45, places=4, allow_nan=False)),
    "d": (pa.date32(), st.dates()),
    "ts": (pa.timestamp("us"), instants),
    "tz": (pa.timestamp("us", tz="UTC"), instants.map(lambda v: v.replace(tzinfo=UTC))),
    "t": (pa.time64("us"), st.times()),
    # within the reader's range: an interval past ±292 years of time reads back as text (TYPES.md)
    "dur": (pa.duration("us"), st.timedeltas(dt.timedelta(days=-10**5), dt.timedelta(days=10**5))),
    "u": (pa.uuid(), st.uuids()),
    "li": (pa.list_(pa.int32()), st.lists(st.none() | st.integers(-2**31, 2**31 - 1), max_size=4)),
    "ls": (pa.large_list(pa.string()), st.lists(st.none() | texts, max_size=3)),
    "st": (pa.struct([("a", pa.int64()), ("s", pa.string()), ("f", pa.float64()),
                      ("l", pa.list_(pa.float32())), ("m", pa.map_(pa.string(), pa.bool_()))]),
           st.fixed_dictionaries({
               "a": st.none() | st.integers(-2**63, 2**63 - 1), "s": st.none() | texts,
               "f": st.none() | st.floats(allow_nan=False, allow_infinity=False),
               "l": st.none() | st.lists(st.none() | st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=3),
               "m": st.none() | st.dictionaries(texts, st.none() | st.booleans(), max_size=3).map(
                   lambda d: list(d.items()))})),
    "js": (pa.json_(), json_values.map(lambda v: json.dumps(v, ensure_ascii=False))),
}
ROWS = st.integers(0, 6).flatmap(lambda n: st.fixed_dictionaries(
    {name: st.lists(st.none() | values, min_size=n, max_size=n) for name, (_, values) in COLUMNS.items()}))


def arrow_table(columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    arrays = {"k": pa.array(range(n), pa.int32())}
    arrays.update({name: pa.array(columns[name], type_) for name, (type_, _) in COLUMNS.items()})
    return pa.table(arrays)


@FEW
@given(columns=ROWS)
def test_property_arrow_round_trip(io, columns):
    data = arrow_table(columns)
    table = f"prop_{io.endpoint}"
    io.write(data, table, mode="replace")
    want = expected(data)
    assert_rows(oracle(io, table, data.schema), want, data.column_names)
    assert_rows(read_back(io, table, data.schema), want, data.column_names)


@settings(FEW, max_examples=10)
@given(n=st.integers(1, 5), data=st.data())
def test_property_pandas_and_polars_round_trip(io, n, data):
    """pandas' nullable and numpy dtypes, dicts and lists; polars' own; read back by each."""
    draw = lambda values: data.draw(st.lists(values, min_size=n, max_size=n))  # noqa: E731
    ints = draw(st.none() | st.integers(-2**63, 2**63 - 1))
    floats = draw(st.floats())  # numpy float64 for pandas (NaN is its missing value: NULL); polars keeps NaN
    strs = draw(st.none() | texts)
    dicts = draw(st.none() | st.dictionaries(texts, json_values, max_size=3))
    lists = draw(st.none() | st.lists(st.none() | st.integers(-2**31, 2**31 - 1), max_size=3))
    dicts[0], lists[0] = dicts[0] or {}, (lists[0] or []) + [0]  # a type to create the columns with
    df = pd.DataFrame({"k": pd.array(range(n), "Int64"), "i": pd.array(ints, "Int64"),
                       "f": pd.Series(floats, dtype="float64"), "s": pd.array(strs, "string"),
                       "d": pd.Series(dicts, dtype=object), "l": pd.Series(lists, dtype=object)})
    table = f"prop_pd_{io.endpoint}"
    io.write(df, table, mode="replace")
    rows = io.stored(table, ["k", "i", "f", "s", "d", "l"])
    assert [r[1] for r in rows] == ints and [r[3] for r in rows] == strs
    as_pandas = [None if v != v else _float(pa.float64(), v) for v in floats]
    assert [None if r[2] is None else _float(pa.float64(), r[2]) for r in rows] == as_pandas
    assert [r[4] for r in rows] == [None if d is None else json.loads(json.dumps(d), parse_float=Decimal)
                                    for d in dicts]
    assert [r[5] for r in rows] == lists
    back = io.read(table, ["k", "i", "f", "s", "l"], "pandas", dtype_backend="pyarrow")
    assert pa.array(back["i"]).to_pylist() == ints
    assert [None if v is None else _float(pa.float64(), v) for v in pa.array(back["f"]).to_pylist()] == as_pandas
    assert pa.array(back["s"]).to_pylist() == strs and pa.array(back["l"]).to_pylist() == lists

    frame = pl.DataFrame({"k": range(n), "i": pl.Series(ints, dtype=pl.Int64),
                          "f": pl.Series(floats, dtype=pl.Float64), "s": pl.Series(strs, dtype=pl.String),
                          "l": pl.Series(lists, dtype=pl.List(pl.Int32))})
    table = f"prop_pl_{io.endpoint}"
    io.write(frame, table, mode="replace")
    got = io.read(table, frame.columns, "polars")
    assert got.schema == frame.schema
    assert got.select("i", "s", "l").to_dicts() == frame.select("i", "s", "l").to_dicts()
    assert [_float(pa.float64(), v) for v in got["f"].to_list()] == [_float(pa.float64(), v) for v in floats]


# -- existing columns -----------------------------------------------------------------------------


def make(io: Io, base: str, definition: str) -> str:
    table = io.name(base)
    io.db.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(SCHEMA, table), sql.SQL(definition)))
    return table


def test_existing_columns_take_what_fits_them_exactly(io):
    table = make(io, "fits", "k int, i2 int2, f8 float8, f4 float4, n numeric(30,4), j json, jb jsonb, "
                             "u uuid, vc varchar(5), ch char(3), nm name, anything int4[], nothing jsonb, "
                             "arr int8[], js jsonb, ja jsonb, h float8")
    data = pa.table({
        "k": pa.array([1, 2], pa.int64()),
        "i2": pa.array([-32768, None], pa.int64()),          # an int64 that fits int2
        "f8": pa.array([2**53, -2**53], pa.int64()),          # exact in float8
        "f4": pa.array([2**24, None], pa.int32()),            # exact in float4
        "n": pa.array([Decimal("1.25"), None], pa.decimal128(5, 2)),  # a wider scale pads
        "j": pa.array(['{"b":1,  "a":[1,2]}', "null"]),       # json keeps the text
        "jb": pa.array(['{"b":1,  "a":[1,2]}', None]),
        "u": pa.array(["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}"]),
        "vc": pa.array(["abcde", ""]), "ch": pa.array(["ab", None]), "nm": pa.array(["x", "y"]),
        "anything": pa.nulls(2), "nothing": pa.nulls(2),      # the null type goes anywhere
        "arr": pa.array([[1, 2], []], pa.list_(pa.int16())),
        "js": pa.array([{"x": 1}, None], pa.struct([("x", pa.int8())])),
        "ja": pa.array([[1, None], []], pa.list_(pa.int32())),  # a list as a JSON array
        "h": pa.array([1.5, None], pa.float16()),
    })
    assert io.write(data, table) == 2
    assert io.stored(table, data.column_names) == [
        (1, -32768, 2.0**53, 2.0**24, Decimal("1.2500"), {"b": 1, "a": [1, 2]}, {"a": [1, 2], "b": 1},
         uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), "abcde", "ab ", "x", None, None, [1, 2],
         {"x": 1}, [1, None], 1.5),
        (2, None, -2.0**53, None, None, None, None, uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
         "", None, "y", None, None, [], None, [], None)]
    assert io.db.execute(sql.SQL("SELECT j::text FROM {} ORDER BY k").format(
        sql.Identifier(SCHEMA, table))).fetchall() == [('{"b":1,  "a":[1,2]}',), ("null",)]


def snapshot(io: Io, table: str) -> list[tuple]:
    return io.db.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(SCHEMA, table))).fetchall()


@pytest.mark.parametrize("definition, data, words", [
    ("v int4", pa.table({"k": [1, 2, 3], "v": pa.array([5, 2**31 - 1, 2**31], pa.int64())}),
     ["'v', row 2", "2147483648", "int4"]),
    ("v int2", pa.table({"k": [1, 2], "v": pa.array([-32769, 0], pa.int32())}), ["'v', row 0", "-32769", "int2"]),
    ("v float8", pa.table({"k": [1, 2], "v": pa.array([1, 2**53 + 1], pa.int64())}), ["'v', row 1", "2^53"]),
    ("v uuid", pa.table({"k": [1, 2], "v": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b"]}),
     ["'v', row 1", "not a UUID"]),
    ("v int4[]", pa.table({"k": [1, 2], "v": pa.array([[1], [2**40]], pa.list_(pa.int64()))}),
     ["'v', row 1", "int4"]),
    ("v int4[]", pa.table({"k": [1, 2], "v": pa.array([[[1, 2]], [[1], [2, 3]]], pa.list_(pa.list_(pa.int32())))}),
     ["'v', row 1", "rectangular"]),
    ("v jsonb", pa.table({"k": [1, 2], "v": pa.array([{"x": 1.0}, {"x": float("nan")}])}),
     ["'v', row 1", "NaN"]),
    ("v timestamp", pa.table({"k": [1, 2], "v": pa.array([1000, 1001], pa.timestamp("ns"))}),
     ["'v', row 1", "microseconds"]),
])
def test_unrepresentable_values_name_column_and_row_and_write_nothing(io, definition, data, words):
    table = make(io, "narrow", f"k int, {definition}")
    io.db.execute(sql.SQL("INSERT INTO {} (k) VALUES (0)").format(sql.Identifier(SCHEMA, table)))
    before = snapshot(io, table)
    with pytest.raises(UnrepresentableValue) as err:
        io.write(data, table)
    for word in words:
        assert word in str(err.value)
    assert snapshot(io, table) == before


@pytest.mark.parametrize("definition, data, words", [
    ("v int4", pa.table({"v": ["1"]}), ["'v'", "int4"]),
    ("v text", pa.table({"v": pa.array([[1]], pa.list_(pa.int8()))}), ["'v'", "text"]),
    ("v text", pa.table({"v": pa.array([{"a": 1}])}), ["'v'", "text"]),
    ("v float4", pa.table({"v": pa.array([0.1], pa.float64())}), ["'v'", "float4"]),
    ("v int4[]", pa.table({"v": pa.array([["x"]])}), ["'v'", "elements", "int4"]),
    ("v uuid", pa.table({"v": pa.array([b"0123456789abcdef"], pa.binary(16))}), ["'v'", "not supported"]),
])
def test_types_that_cannot_go_into_a_column_exactly_are_refused_before_writing(io, definition, data, words):
    table = make(io, "refuse", definition)
    with pytest.raises(ConfigurationError) as err:
        io.write(data, table)
    for word in words:
        assert word in str(err.value)
    assert snapshot(io, table) == []


@pytest.mark.parametrize("data, words", [
    (pa.table({"k": [1], "v": pa.nulls(1)}), ["'v'", "null", "dtype"]),
    (pd.DataFrame({"v": [None, None]}), ["'v'", "dtype"]),
    (pl.DataFrame({"v": [None]}), ["'v'", "dtype"]),
    (pa.table({"v": pa.array([b"x" * 16], pa.binary(16))}), ["'v'", "fixed_size_binary", "not supported"]),
    (pa.table({"v": pa.array([{"b": b"x"}])}), ["'v'", "the value.b", "JSON"]),
    (pa.table({"v": pa.array([Decimal(100)], pa.decimal128(5, -2))}), ["'v'", "not supported"]),
    (pa.table({"v": pa.array([[[[[[[[1]]]]]]]])}), ["'v'", "7 deep", "6 dimensions"]),
])
def test_create_refuses_what_has_no_exact_column_type(io, data, words):
    table = io.name("no_type")
    with pytest.raises(ConfigurationError) as err:
        io.write(data, table, mode="create")
    for word in words:
        assert word in str(err.value)
    assert io.db.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{table}",)).fetchone()[0] is None


def test_reader_tags_make_json_and_uuid_columns_again(io):
    """read_arrow tags each field with its PostgreSQL type: read -> write recreates jsonb, json, uuid."""
    source = make(io, "tagged_src", "k int, j jsonb, t json, u uuid, a int4[]")
    io.db.execute(sql.SQL("INSERT INTO {} VALUES (1, %s::jsonb, %s::json, %s::uuid, %s::int4[]), "
                          "(2, NULL, 'null', NULL, '{{}}')").format(sql.Identifier(SCHEMA, source)),
                  ('{"a": [1, 2.50]}', "[1,  2]", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{1,NULL}"))
    data = io.read(source, ["k", "j", "t", "u", "a"])
    copy = io.name("tagged_copy")
    io.write(data, copy, mode="create")
    assert io.types(copy) == {"k": "integer", "j": "jsonb", "t": "json", "u": "uuid", "a": "integer[]"}
    assert snapshot(io, copy) == snapshot(io, source)


def test_pandas_float_ints_go_into_integer_columns_whole_numbers_only(io):
    """pandas' ints with missing values are float64 with NaN: into an existing integer column
    whole numbers are written (NaN as NULL), a fraction, an infinity or a value past the
    column's range is an error naming column and row, and nothing is written."""
    import numpy as np

    name = io.name("float_ints")
    io.db.execute(sql.SQL("CREATE TABLE {} (k int2, a int4, b int8)").format(sql.Identifier(SCHEMA, name)))
    frame = pd.DataFrame({"k": [1.0, 2.0, 3.0], "a": [7.0, np.nan, -2.0 ** 31],
                          "b": np.array([2.0 ** 53, 0.0, np.nan], dtype="float32")})
    assert io.write(frame, name) == 3
    assert io.stored(name, ["k", "a", "b"]) == [(1, 7, 2 ** 53), (2, None, 0), (3, -2 ** 31, None)]
    for column, value, reason in (("a", 1.5, "whole numbers"), ("a", np.inf, "whole numbers"),
                                  ("a", 2.0 ** 31, "out of range"), ("k", 2.0 ** 15, "out of range"),
                                  ("b", 2.0 ** 63, "whole numbers")):
        bad = pd.DataFrame({"k": [4.0, 5.0], "a": [1.0, 1.0], "b": [1.0, 1.0]})
        bad.loc[1, column] = value
        with pytest.raises(UnrepresentableValue, match=f"column '{column}', row 1 .*{reason}"):
            io.write(bad, name)
    assert len(io.stored(name, ["k"])) == 3


def test_pandas_arrow_backed_floats_keep_nan_and_null_apart(io):
    name = io.name("arrow_floats")
    frame = pd.DataFrame({"k": [1, 2, 3],
                          "f": pd.Series(pa.array([float("nan"), None, 1.5]), dtype=pd.ArrowDtype(pa.float64()))})
    assert io.write(frame, name) == 3
    assert io.db.execute(sql.SQL("SELECT f = 'NaN', f IS NULL FROM {} ORDER BY k").format(
        sql.Identifier(SCHEMA, name))).fetchall() == [(True, False), (None, True), (False, False)]
