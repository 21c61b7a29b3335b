"""The Python HTTP transport (``connect(..., transport="http")``) against the TCP session on the same compute.

Every read here runs twice, over Neon's SQL-over-HTTP endpoint of the local
compute and over the TCP session (COPY path, psycopg's literal binding), and the
two must agree: Arrow schemas with their metadata, values, pandas and polars
frames, parameter types (``pg_typeof``), errors (class, SQLSTATE, diagnostics,
libpq's excerpt), row counts. The lifecycle (cold starts, failed wakes, a wrong
password) runs on a compute of its own, with a password that must never show.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import logging
import os
import socket
import time
import uuid

import pandas as pd
import polars as pl
import polars.testing
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Json, Jsonb

import neon_notebook as nn
from neon_notebook._http_session import HttpSession
from neon_notebook.errors import ConfigurationError, PermanentConnectError, WakeTimeout
from neon_notebook.local import LocalCompute

from http_support import Outcome, assert_same_outcome, assert_same_table, outcome
from test_readers_types import NASTY, SCALARS, nasty_text, pg_text

PROPERTY = settings(
    max_examples=int(os.environ.get("HTTP_MAX_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Wide rows shrink for minutes: report the first failure as found (the message names column and row).
UNSHRUNK = settings(PROPERTY, phases=[Phase.explicit, Phase.reuse, Phase.generate], report_multiple_bugs=False)


@pytest.fixture(scope="module")
def tcp(compute):
    """The oracle: the TCP session (COPY path) on the run's compute."""
    with nn.connect(compute.pooled_url, direct_url=compute.direct_url, suspend_after=None) as session:
        yield session


@pytest.fixture(scope="module")
def http(compute):
    with nn.connect(compute.pooled_url, direct_url=compute.direct_url, transport="http",
                    http_url=compute.http_url, suspend_after=None) as session:
        yield session


@pytest.fixture(scope="module")
def pg(compute):
    """A plain psycopg connection for set-up (autocommit)."""
    with psycopg.connect(compute.direct_url, autocommit=True) as conn:
        yield conn


def both(http, tcp, method: str, *args, **kwargs) -> tuple[Outcome, Outcome]:
    """``session.method(*args)`` on each transport."""
    return (outcome(lambda: getattr(http, method)(*args, **kwargs)),
            outcome(lambda: getattr(tcp, method)(*args, **kwargs)))


def same_read(http, tcp, sql, params=None, **kwargs) -> pa.Table:
    got, expected = both(http, tcp, "read_arrow", sql, params, **kwargs)
    assert_same_outcome(got, expected, sql)
    return got.value


# ---------------------------------------------------------------------------------------------
# 1. Types: the same values as the COPY path
# ---------------------------------------------------------------------------------------------

MOODS = ["sad", "ok", 'happy, "very"', "été", "NULL", ""]
aware_times = st.times(timezones=st.integers(-14 * 60, 14 * 60).map(
    lambda m: dt.timezone(dt.timedelta(minutes=m))))
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=4,
                              min_value=-(10**20), max_value=10**20)

#: column type -> values (psycopg binds them on insert); every type of TYPES.md that psycopg can write.
COLUMNS = {
    **SCALARS,
    "json": SCALARS["jsonb"],
    "oid": st.integers(0, 2**32 - 1),
    "name": pg_text.map(lambda s: s[:20]),
    '"char"': st.characters(min_codepoint=32, max_codepoint=126),
    "numeric(50,10)": st.decimals(min_value=-(10**39), max_value=10**39, places=10, allow_nan=False),
    "numeric(5,0)": st.decimals(min_value=-99999, max_value=99999, places=0, allow_nan=False),
    "numeric[]": st.lists(st.one_of(st.none(), finite_decimals), max_size=4),
    "timetz": aware_times,
    "interval[]": st.lists(st.one_of(st.none(), SCALARS["interval"]), max_size=3),
    "timestamptz[]": st.lists(st.one_of(st.none(), SCALARS["timestamptz"].filter(
        lambda v: not isinstance(v, str))), max_size=3),
    "timestamp[]": st.lists(st.datetimes(), max_size=3),
    "time[]": st.lists(st.times(), max_size=3),
    "uuid[]": st.lists(st.one_of(st.none(), st.uuids()), max_size=3),
    "bytea[]": st.lists(st.one_of(st.none(), st.binary(max_size=8)), max_size=3),
    "bool[]": st.lists(st.one_of(st.none(), st.booleans()), max_size=4),
    "int8[]": st.lists(st.one_of(st.none(), SCALARS["int8"]), max_size=4),
    "int2[]": st.lists(SCALARS["int2"], max_size=4),
    "float4[]": st.lists(st.floats(width=32), max_size=4),
    "jsonb[]": st.lists(SCALARS["jsonb"], max_size=2),
    "cidr": st.ip_addresses().map(lambda a: str(ipaddress.ip_network(a))),
    "macaddr": st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    "ht_mood": st.sampled_from(MOODS),
    "ht_mood[]": st.lists(st.one_of(st.none(), st.sampled_from(MOODS)), max_size=3),
    "ht_money2": st.decimals(min_value=decimal.Decimal("0.01"), max_value=decimal.Decimal("99999999.99"),
                             places=2),
    "ht_posint": st.integers(1, 2**31 - 1),
    "ht_tags": st.lists(st.one_of(st.none(), nasty_text), max_size=3),
}
NAMES = [f"c{i}" for i in range(len(COLUMNS))]
#: a few columns read through pandas and polars on both transports as well
FRAME_TYPES = ["int8", "float8", "bool", "text", "numeric(12,2)", "timestamptz", "date", "bytea",
               "int4[]", "interval", "ht_mood", "uuid", "time"]


@pytest.fixture(scope="module")
def types_table(pg):
    """One wide table: a column per type, enums and domains included (their OIDs need the catalog)."""
    pg.execute("DROP TABLE IF EXISTS ht_types; DROP TYPE IF EXISTS ht_mood; DROP DOMAIN IF EXISTS ht_money2;"
               " DROP DOMAIN IF EXISTS ht_posint; DROP DOMAIN IF EXISTS ht_tags")
    labels = ", ".join("'" + m.replace("'", "''") + "'" for m in MOODS)
    pg.execute(f"CREATE TYPE ht_mood AS ENUM ({labels})")
    pg.execute("CREATE DOMAIN ht_money2 AS numeric(10,2) CHECK (VALUE > 0)")
    pg.execute("CREATE DOMAIN ht_posint AS int4 CHECK (VALUE > 0)")
    pg.execute("CREATE DOMAIN ht_tags AS text[]")
    cols = ", ".join(f"{n} {t}" for n, t in zip(NAMES, COLUMNS))
    pg.execute(f"CREATE TABLE ht_types (id serial PRIMARY KEY, {cols})")
    return "ht_types"


rows_strategy = st.lists(st.tuples(*(st.one_of(st.none(), s) for s in COLUMNS.values())), max_size=6)


def test_every_type_reads_the_same_as_the_copy_path(http, tcp, pg, types_table):
    insert = (f"INSERT INTO {types_table} ({', '.join(NAMES)}) VALUES "
              f"({', '.join(f'%s::{t}' for t in COLUMNS)})")
    frame_cols = ", ".join(NAMES[list(COLUMNS).index(t)] for t in FRAME_TYPES)

    @UNSHRUNK
    @given(rows=rows_strategy)
    def check(rows):
        pg.execute(f"TRUNCATE {types_table} RESTART IDENTITY")
        with pg.cursor() as cur:
            cur.executemany(insert, rows)
        query = f"SELECT * FROM {types_table} ORDER BY id"
        got = same_read(http, tcp, query)
        assert got.num_rows == len(rows)
        for name, pgtype in zip(NAMES, COLUMNS):  # every field says its PostgreSQL type
            assert got.schema.field(name).metadata[b"pg_type"], pgtype
        frames = f"SELECT {frame_cols} FROM {types_table} ORDER BY id"
        a = http.read_pandas(frames, progress=False)
        pd.testing.assert_frame_equal(a, tcp.read_pandas(frames, progress=False))
        a = http.read_pandas(frames, dtype_backend="pyarrow", progress=False)
        b = tcp.read_pandas(frames, dtype_backend="pyarrow", progress=False)
        assert list(a.dtypes) == list(b.dtypes)  # pandas cannot compare month_day_nano columns itself
        assert_same_table(pa.Table.from_pandas(a, preserve_index=False),
                          pa.Table.from_pandas(b, preserve_index=False), "pandas (pyarrow)")
        polars.testing.assert_frame_equal(http.read_polars(frames, progress=False),
                                          tcp.read_polars(frames, progress=False))

    check()


#: Single queries whose types the table above cannot hold (specials, fallbacks, literals).
FIXED = [
    "SELECT 'NaN'::float8 a, 'Infinity'::float8 b, '-Infinity'::float4 c, 1.401298464324817e-45::float4 d,"
    " 5e-324::float8 e, -0.0::float8 f, 'NaN'::float4 g",
    "SELECT 1.5::numeric(5,2) a, 12345678901234567890123456789012345.123::numeric(38,3) b,"
    " 1.5::numeric(50,10) c, 1::numeric(100,0) d, 0.000001::numeric(7,6) e",
    "SELECT v FROM (VALUES (1.5::numeric), (2.25), (NULL), (-1000)) AS x(v)",
    "SELECT v FROM (VALUES ('123456789012345678901234567890.123456789012345'::numeric), (1.5)) AS x(v)",
    "SELECT v FROM (VALUES ('NaN'::numeric), (1.5), ('Infinity'), ('-Infinity')) AS x(v)",
    "SELECT 'NaN'::numeric(10,2) AS v",
    "SELECT 'infinity'::date a, '-infinity'::date b, 'infinity'::timestamp c, '-infinity'::timestamptz d,"
    " '0044-03-15 BC'::date e, '10000-01-01'::date f, '0001-01-01 00:00:00 BC'::timestamp g,"
    " '4713-01-01 BC'::date h, '1850-06-01 00:00:00+00'::timestamptz i",
    "SELECT '294270-01-01'::timestamp AS past_arrow, '2020-01-01'::timestamp AS ok",
    "SELECT '300 years'::interval * 1 + '1 hour' AS big, '1 year 2 mons -3 days 04:05:06.25'::interval AS iv,"
    " '-1 mons 2 days -00:00:00.5'::interval AS iv2, '100000 hours'::interval AS c",
    "SELECT '24:00:00'::time a, '13:14:15.000001'::time b, '12:00+05:30'::timetz c, NULL::time d",
    "SELECT ARRAY[1,NULL,3] AS a, ARRAY['x y', NULL, 'NULL', '', 'q\"\\\\'] AS b, '[0:1]={5,6}'::int[] AS c,"
    " '{}'::text[] AS d, NULL::int[] AS e, ARRAY['2020-01-01'::date] AS f, ARRAY[1.5, 2.25]::numeric[] AS g,"
    " ARRAY['1 day'::interval] AS h, ARRAY[1.5, 2]::numeric(50,2)[] AS i",
    "SELECT v FROM (VALUES ('{{1,2},{3,4}}'::int[]), ('{5}')) AS x(v)",
    "SELECT 'pg_class'::regclass::oid AS o, 12.5::money AS m, point(1,2) AS p, to_tsvector('simple', 'a b') AS ts,"
    " '16/B374D848'::pg_lsn AS x, B'101' AS bits, '08:00:2b:01:02:03'::macaddr AS mac,"
    " '08:00:2b:01:02:03:04:05'::macaddr8 AS mac8, '10.0.0.0/8'::cidr AS net, 'pg_class'::regclass AS r,"
    " int4range(1, 5) AS rng, ROW(1, 'x,y') AS rec, '$.a'::jsonpath AS jp",
    "SELECT '{\"a\": [1, \"x\"]}'::jsonb j, '[1,2]'::json k, 'null'::jsonb n, NULL::jsonb m,"
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid u",
    "SELECT 'ab'::char(4) AS c, 'x'::\"char\" AS ch, 'nm'::name AS n, 'v'::varchar AS vc, E'a\\tb\\nc\\\\d' AS e,"
    " 'it''s' AS q, U&'\\00e9\\6f22\\+01F389' AS u",
    "SELECT 1::int AS a WHERE false",
    "SELECT FROM generate_series(1, 3)",
    "SELECT i, i::text AS t FROM generate_series(1, 2000) i",
    "SELECT 1 AS a, 2 AS a",
    "SHOW TimeZone",
    "EXPLAIN SELECT 1",
    "VALUES (1, 'a'), (2, NULL)",
    "SELECT 1 AS a; SELECT 2 AS b, 'x' AS c",
    "WITH w AS (SELECT 1 AS a) SELECT * FROM w",
]


@pytest.mark.parametrize("sql", FIXED)
def test_fixed_queries_read_the_same(http, tcp, sql):
    same_read(http, tcp, sql)


def test_direct_endpoint_reads_the_same(http, tcp):
    got = same_read(http, tcp, "SELECT current_database() AS d, 1.5::numeric(3,1) AS n", direct=True)
    assert got.to_pylist() == [{"d": "postgres", "n": decimal.Decimal("1.5")}]


def test_multi_statement_read_creates_inserts_and_selects(http, tcp):
    sql = ("create temp table ht_multi (a int, b text) on commit drop; insert into ht_multi values (1, 'x'), (2, null);"
           " select * from ht_multi order by a")
    got = same_read(http, tcp, sql, direct=True)  # TCP: temp tables only on the direct endpoint
    assert got.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
    # over HTTP, each request starts from a clean session: a temp table is gone with it
    assert http.read_arrow("create temp table ht_gone (a int); insert into ht_gone values (3);"
                           " select * from ht_gone").to_pylist() == [{"a": 3}]
    with pytest.raises(psycopg.errors.UndefinedTable):
        http.read_arrow("select * from ht_gone")


def test_nasty_text_and_bytea_through_parameters(http, tcp):
    got = same_read(http, tcp, "SELECT v FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i", [NASTY])
    assert got.column(0).to_pylist() == NASTY
    blobs = [b"", None, b"\x00", bytes(range(256)), b"\\x", b"\"'\n,"]
    got = same_read(http, tcp, "SELECT v FROM unnest(%s::bytea[]) WITH ORDINALITY AS u(v, i) ORDER BY i", [blobs])
    assert got.column(0).to_pylist() == blobs


def test_enum_and_domain_types_are_looked_up_over_http(compute, tcp, types_table):
    """A fresh HTTP session knows no enum or domain: it asks pg_type over HTTP, and gets the TCP types."""
    sql = ("SELECT 'ok'::ht_mood AS m, ARRAY['sad'::ht_mood] AS ms, 12.5::ht_money2 AS d, 7::ht_posint AS p,"
           " ARRAY['a', NULL]::ht_tags AS t")
    with nn.connect(compute.pooled_url, transport="http", http_url=compute.http_url, suspend_after=None) as fresh:
        got = same_read(fresh, tcp, sql)
    assert got.schema.field("d").type == pa.decimal128(10, 2)
    assert got.schema.field("d").metadata[b"pg_type"] == b"numeric(10,2)"
    assert got.schema.field("ms").type == pa.list_(pa.string())
    assert got.to_pylist() == [{"m": "ok", "ms": ["sad"], "d": decimal.Decimal("12.50"), "p": 7, "t": ["a", None]}]


#: Texts whose own SET changes an output setting the decoders read: both transports must agree
#: (the TCP path refuses with OutputSettingChanged where the text can't be read exactly).
SETTING_TEXTS = [
    "SET LOCAL TimeZone TO 'Asia/Kolkata'; SELECT '2024-03-01 12:00+00'::timestamptz AS ts",
    "SET LOCAL DateStyle TO 'SQL, DMY'; SELECT '2024-03-02'::date AS d",
    "SET LOCAL IntervalStyle TO 'sql_standard'; SELECT '1 year 2 mons 3 days'::interval AS iv",
    "SET LOCAL bytea_output TO 'escape'; SELECT '\\x00ff'::bytea AS b",
    "SET LOCAL extra_float_digits TO -3; SELECT 1.23456789012345::float8 AS f",
]


@pytest.mark.parametrize("sql", SETTING_TEXTS)
def test_a_text_changing_output_settings_reads_as_over_tcp(http, tcp, sql):
    got, expected = both(http, tcp, "read_arrow", sql, direct=True)
    assert_same_outcome(got, expected, sql)


def test_iter_batches_and_parquet_match_tcp(http, tcp, tmp_path):
    sql = ("SELECT i, i::numeric(10,2) / 3 AS n, make_interval(days => i) AS iv, ARRAY[i, NULL] AS arr"
           " FROM generate_series(1, 10) i")
    batches = list(http.iter_batches(sql, batch_rows=3))
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert_same_table(pa.Table.from_batches(batches), tcp.read_arrow(sql), "iter_batches")
    assert http.to_parquet(sql, tmp_path / "h.parquet") == tcp.to_parquet(sql, tmp_path / "t.parquet") == 10
    a, b = pq.read_table(tmp_path / "h.parquet"), pq.read_table(tmp_path / "t.parquet")
    assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)


# ---------------------------------------------------------------------------------------------
# 2. Parameters: bound as $n with the types of psycopg's literals
# ---------------------------------------------------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
#: Values whose psycopg literal carries a type (``pg_typeof`` names it).
typed_scalars = st.one_of(
    st.integers(-(2**15), 2**15 - 1), st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**80), 2**80), st.sampled_from([2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63), 2**63, 0]),
    st.floats(), st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1e300]),
    # -NaN: psycopg's literal " -NaN" is a column name (its quirk, not under test)
    st.decimals(allow_nan=True, allow_infinity=True).filter(lambda d: not d.is_snan() and not (d.is_nan() and d.is_signed())),
    st.binary(max_size=12), st.booleans(), st.dates(),
    st.datetimes(), st.datetimes(min_value=dt.datetime(1, 1, 2), timezones=offsets),
    st.times(), st.times(timezones=offsets),
    st.timedeltas(min_value=dt.timedelta(days=-10**6), max_value=dt.timedelta(days=10**6)),
    st.uuids(), st.ip_addresses(),
    st.ip_addresses().map(lambda a: ipaddress.ip_network(a)),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)).map(lambda t: ipaddress.ip_interface(f"{t[0]}/{t[1]}")),
)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(10**9), 10**9) | pg_text,
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(pg_text, c, max_size=3), max_leaves=5)


typed_values = st.one_of(
    typed_scalars,
    st.lists(st.one_of(st.none(), st.integers(-(2**15), 2**15 - 1)), min_size=1, max_size=5).filter(
        lambda xs: any(x is not None for x in xs)),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4),
    st.lists(st.one_of(st.none(), st.floats()), min_size=1, max_size=4).filter(
        lambda xs: any(x is not None for x in xs)),
    st.lists(st.lists(st.integers(-100, 100), min_size=2, max_size=2), min_size=1, max_size=3),
    st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=1, max_size=3).filter(
        lambda xs: any(x is not None for x in xs)),
    st.lists(st.booleans(), min_size=1, max_size=3), st.lists(st.dates(), min_size=1, max_size=3),
    st.lists(st.datetimes(min_value=dt.datetime(1, 1, 2), timezones=offsets), min_size=1, max_size=3),
    st.lists(st.timedeltas(min_value=dt.timedelta(days=-10**5), max_value=dt.timedelta(days=10**5)),
             min_size=1, max_size=3),
    st.lists(st.uuids(), min_size=1, max_size=3), st.lists(st.ip_addresses(), min_size=1, max_size=3),
    # psycopg writes -NaN in a list as '{-NaN}', which PostgreSQL refuses (its quirk, not under test)
    st.lists(st.decimals(allow_nan=True).filter(lambda d: not d.is_snan() and not (d.is_nan() and d.is_signed())),
             min_size=1, max_size=3),
    json_values.map(Json), json_values.map(Jsonb),
)
#: Values whose psycopg literal is untyped (a quoted string): the query's context gives the type.
untyped_values = st.one_of(
    st.none(), nasty_text, st.lists(st.one_of(st.none(), nasty_text), max_size=4),
    st.lists(st.lists(pg_text, min_size=2, max_size=2), min_size=1, max_size=2),
    st.just([]), st.just([None]), st.just([[], []]),
    st.tuples(st.one_of(st.none(), st.integers(), pg_text, st.booleans(), st.dates(), st.floats(allow_nan=False))),
    st.lists(st.one_of(st.none(), st.integers(), pg_text, st.booleans()), max_size=3).map(tuple),
)


def same_params(http, tcp, sql, params):
    got, expected = both(http, tcp, "read_arrow", sql, params, progress=False)
    assert_same_outcome(got, expected, f"{sql} with {params!r}")
    return got


def test_typed_parameters_have_the_types_of_psycopgs_literals(http, tcp):
    """``pg_typeof`` and the text PostgreSQL reads are the TCP session's (psycopg's mogrify) for each value."""
    @PROPERTY
    @given(values=st.lists(typed_values, min_size=1, max_size=4))
    def check(values):
        # (%s)::text, not %s::text: psycopg's literal " -5" then ::text would cast 5, not -5
        sql = ", ".join(f"pg_typeof(%s)::text AS t{i}, (%s)::text AS v{i}, %s AS r{i}" for i in range(len(values)))
        same_params(http, tcp, "SELECT " + sql, [v for value in values for v in (value, value, value)])

    check()


def test_untyped_parameters_read_as_their_literals(http, tcp):
    """Strings, NULL, tuples and text arrays: no type of their own, the same values and column types."""
    @PROPERTY
    @given(value=untyped_values)
    def check(value):
        same_params(http, tcp, "SELECT (%s)::text AS v, %s AS r", [value, value])

    check()


@pytest.mark.parametrize("value", [
    0, 1, -1, 2**15 - 1, -(2**15), 2**15, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**63,
    -(2**63) - 1, 10**30, 1.5, -0.0, float("nan"), float("inf"), float("-inf"), 1e-300, 0.1,
    decimal.Decimal("NaN"), decimal.Decimal("Infinity"), decimal.Decimal("-Infinity"), decimal.Decimal("1.50"),
    decimal.Decimal("-0.000"), decimal.Decimal("1E+5"), decimal.Decimal("5"), decimal.Decimal(-7), decimal.Decimal("123456789012345678901234567890.1"),
    b"", b"\x00\\'\"", bytearray(b"ab"), memoryview(b"cd"), True, False,
    dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.datetime(2020, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.time(0, 0), dt.time(23, 59, 59, 1),
    dt.time(12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.timedelta(0), dt.timedelta(days=-1, microseconds=1), dt.timedelta(days=999999, seconds=86399),
    uuid.UUID(int=0), ipaddress.ip_address("::1"), ipaddress.ip_network("2001:db8::/32"),
    ipaddress.ip_interface("192.168.0.1/24"),
    [1, None, 3], [2**40, None], [[1, 2], [3, 4]], [1.5, float("nan"), None], [True, None], [b"a", None],
    [decimal.Decimal("NaN"), decimal.Decimal("1")], [dt.date(2020, 1, 1), None], [uuid.UUID(int=1)],
    [ipaddress.ip_address("1.2.3.4")], [dt.timedelta(hours=1)],
    # psycopg types a list by its elements' dumpers, not their exact classes
    [ipaddress.ip_address("1.2.3.4"), ipaddress.ip_address("::1")],
    [ipaddress.ip_network("1.0.0.0/8"), ipaddress.ip_network("::/0")],
    [ipaddress.ip_interface("1.2.3.4/8"), ipaddress.ip_address("1.2.3.4")],
    [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=3)))],
    Json({"a": [1, "x'y"], "b": None}), Jsonb([1, "é", {"k": "\\n"}]), Json(None), Jsonb("s"),
    [Json({"a": 1}), Json([2])], [Jsonb(1)],
])
def test_edge_values_bind_as_psycopg_does(http, tcp, value):
    same_params(http, tcp, "SELECT pg_typeof(%s)::text AS t, (%s)::text AS v, %s AS r", [value, value, value])


@pytest.mark.parametrize("value", [None, "it's", "a\\b", "line\nbreak", "é漢字🎉", "", [], [None], ["a", None, 'q"'],
                                   ["a\nb", "\\"], (1, "a b", None), ("x",), ()])
def test_untyped_edge_values(http, tcp, value):
    same_params(http, tcp, "SELECT (%s)::text AS v, %s AS r", [value, value])


@pytest.mark.parametrize("value", [None, "x", ["x"], (1, 2)])
def test_untyped_parameter_in_a_polymorphic_function_fails_as_psycopg_binding_it(http, pg, value):
    """Neon binds every value as text of unknown type, as psycopg does server-side for a str: the server
    cannot infer ``pg_typeof($1)`` (a literal would be 'unknown'). The same error as psycopg's own binding."""
    with pytest.raises(psycopg.errors.IndeterminateDatatype) as expected:
        pg.execute("SELECT pg_typeof(%s)::text", [value])
    with pytest.raises(psycopg.errors.IndeterminateDatatype) as got:
        http.read_arrow("SELECT pg_typeof(%s)::text", [value])
    assert str(got.value) == str(expected.value)


def test_named_placeholders(http, tcp):
    got = same_params(http, tcp, "SELECT %(a)s + %(b)s AS s, %(a)s AS a_again, %(when)s AS w, %(tag)s AS tag",
                      {"a": 40, "b": 2, "when": dt.date(2020, 1, 1), "tag": "x", "unused": 1})
    assert got.value.to_pylist() == [{"s": 42, "a_again": 40, "w": dt.date(2020, 1, 1), "tag": "x"}]


@pytest.mark.parametrize("sql, params", [
    ("SELECT '100%%' AS p, %s AS x", [1]),
    ("SELECT '100%%' AS p", None),
    ("SELECT '100%' AS p", None),
    ("SELECT 7 %% 3 AS m, %s AS x", ["y"]),
    ("SELECT 7 % 3 AS m", None),
    ("SELECT %(x)s %% 3 AS m", {"x": 7}),
    ("SELECT %s AS a; SELECT %s AS b, %s AS c", [1, "two", None]),
    ("SELECT %(a)s AS a; SELECT %(a)s AS b", {"a": 5}),
    ("SELECT '%s' AS quoted, %s AS real", [1]),
    ("SELECT $$%s$$ AS dollar, %s AS real", [1]),
    ("SELECT 1 AS x -- %s\n, %s AS y", [1, 2]),
])
def test_percent_signs_and_several_statements(http, tcp, sql, params):
    same_params(http, tcp, sql, params)


@pytest.mark.parametrize("sql, params", [
    ("SELECT %", []),
    ("SELECT %(a", {}),
    ("SELECT %(a)", {"a": 1}),
    ("SELECT %x", [1]),
    ("SELECT %d", [1]),
    ("SELECT % s", [1]),
    ("SELECT %s, %(a)s", [1]),
    ("SELECT %(a)s, %s", {"a": 1}),
    ("SELECT %s", [1, 2]),
    ("SELECT %s, %s", [1]),
    ("SELECT 1", [1]),
    ("SELECT %s", []),
    ("SELECT %s; SELECT %s", [1]),
    ("SELECT %s; SELECT %s", [1, 2, 3]),
    ("SELECT %(a)s", {"b": 1}),
    ("SELECT %(a)s, %(b)s", {}),
    ("SELECT %(a)s", [1]),
    ("SELECT %s", {"a": 1}),
    ("SELECT %s", "ab"),
    ("SELECT %s", [[1, "a"]]),
    ("SELECT %s", [[1, True]]),
    ("SELECT %s", ["a\x00b"]),
    ("SELECT %s", [["a\x00"]]),
    ("SELECT %s", [b"ok", "a\x00"]),
])
def test_placeholder_and_parameter_errors_are_psycopgs(http, tcp, sql, params):
    got, expected = both(http, tcp, "read_arrow", sql, params, progress=False)
    assert expected.error is not None, expected.value
    assert_same_outcome(got, expected, f"{sql} with {params!r}")


@pytest.mark.parametrize("params", [5, 1.5, None.__class__])
def test_parameters_that_are_no_sequence_are_a_type_error(http, tcp, params):
    got, expected = both(http, tcp, "read_arrow", "SELECT %s", params, progress=False)
    assert type(got.error) is type(expected.error) is TypeError  # psycopg's own message is len()'s


def test_naive_and_aware_times_in_one_list_are_a_data_error(http, tcp):
    got, expected = both(http, tcp, "read_arrow", "SELECT %s", [[dt.time(1), dt.time(1, tzinfo=dt.timezone.utc)]])
    assert type(got.error) is type(expected.error) is psycopg.DataError  # psycopg's message is an accident


@pytest.mark.parametrize("value", [object(), {"a": 1}, {1, 2}, complex(1, 2)])
def test_a_value_psycopg_cannot_adapt(http, tcp, value):
    """psycopg's message names the placeholder it was given (``%s``; its client-side binding says ``%t``)."""
    got, expected = both(http, tcp, "read_arrow", "SELECT %s", [value], progress=False)
    assert type(got.error) is type(expected.error) is psycopg.ProgrammingError
    assert str(got.error).split(" using ")[0] == str(expected.error).split(" using ")[0]


def test_a_malformed_array_parameter_is_the_servers_error(http, tcp):
    got, expected = both(http, tcp, "read_arrow", "SELECT %s AS a", [[[1], 2]], progress=False)
    assert type(got.error) is type(expected.error) is psycopg.errors.InvalidTextRepresentation
    assert got.error.diag.message_primary == expected.error.diag.message_primary
    assert got.error.diag.message_detail == expected.error.diag.message_detail == "Unexpected array element."


def test_parameters_are_bound_never_pasted(http, tcp, pg):
    pg.execute("CREATE TABLE IF NOT EXISTS ht_bobby (a text)")
    evil = "x'); DROP TABLE ht_bobby; --"
    assert http.read_arrow("SELECT %s AS v", [evil]).to_pylist() == [{"v": evil}]
    assert http.execute("INSERT INTO ht_bobby VALUES (%s)", [evil]) == 1
    assert pg.execute("SELECT count(*) FROM ht_bobby WHERE a = %s", [evil]).fetchone() == (1,)
    pg.execute("DROP TABLE ht_bobby")


# ---------------------------------------------------------------------------------------------
# 3. Errors: the TCP path's classes, SQLSTATEs, diagnostics and libpq's excerpt
# ---------------------------------------------------------------------------------------------

DIAG = ("sqlstate", "severity", "message_primary", "message_detail", "message_hint", "statement_position",
        "context", "schema_name", "table_name", "column_name", "datatype_name", "constraint_name")

#: Single statements without parameters: every diagnostic, the position included, must match.
ERRORS = [
    "SELECT * FROM ht_no_such_table",
    "SELEC 1",
    "SELECT 1 +",
    "SELECT 1/0",
    "SELECT 'x'::int",
    "SELECT\n  1,\n  ht_no_such_col\nFROM generate_series(1, 2)",
    "SELECT 1 + 'a'::text",
    "SELECT ht_no_such_function(1)",
    "SELECT 'abc'::int FROM generate_series(1, 2)",
    "SELECT '2020-13-01'::date",
    "SELECT ARRAY[1, 2][1:a]",
    "SELECT 'é漢字🎉', ht_nope",  # a position past non-ASCII characters
    "SELECT 1 AS a FROM (SELECT 1) s WHERE " + " AND ".join(["true"] * 20) + " AND ht_nope",  # a long line
    "SELECT jsonb_path_query('{}', '$.a ? (@ like_regex \"(\")')",
    "SELECT CAST(2147483647 AS int) + 1",
    "DO $$ BEGIN RAISE EXCEPTION 'custom %', 42 USING HINT = 'a hint', DETAIL = 'a detail', ERRCODE = 'P0099'; END $$",
]


@pytest.fixture(scope="module")
def unique_table(pg):
    pg.execute("DROP TABLE IF EXISTS ht_unique; CREATE TABLE ht_unique (a int PRIMARY KEY, b text NOT NULL,"
               " c int CHECK (c > 0))")
    pg.execute("INSERT INTO ht_unique VALUES (1, 'one', 1)")
    return "ht_unique"


def assert_same_error(got: Outcome, expected: Outcome, sql: str, *, position: bool = True) -> None:
    assert expected.error is not None and got.error is not None, (sql, got.value, expected.value)
    g, e = got.error, expected.error
    assert type(g) is type(e), f"{sql}: HTTP {type(g).__name__} != TCP {type(e).__name__}"
    for name in DIAG if position else [d for d in DIAG if d != "statement_position"]:
        assert getattr(g.diag, name) == getattr(e.diag, name), f"{sql}: diag.{name}"


@pytest.mark.parametrize("sql", ERRORS)
def test_sql_errors_are_the_tcp_paths(http, tcp, sql):
    got, expected = both(http, tcp, "read_arrow", sql, progress=False)
    assert_same_error(got, expected, sql)
    # libpq's text: the message and, with a position, "LINE n: ..." and the caret
    excerpt = str(expected.error).split("\nDETAIL:")[0].split("\nHINT:")[0]
    assert str(got.error).startswith(excerpt), f"{sql}:\nHTTP:\n{got.error}\nTCP:\n{expected.error}"


@pytest.mark.parametrize("sql", ["SELECT 1 + 'a'::text", "INSERT INTO ht_unique VALUES (1, 'dup', 1)",
                                 "DO $$ BEGIN RAISE EXCEPTION 'custom' USING HINT = 'a hint', DETAIL = 'a detail'; END $$"])
def test_error_text_is_libpqs_with_detail_and_hint(http, tcp, unique_table, sql):
    """str(error) over TCP is libpq's message: LINE excerpt, then DETAIL and HINT lines."""
    got, expected = both(http, tcp, "execute", sql)
    assert_same_error(got, expected, sql)
    assert str(got.error) == str(expected.error)


@pytest.mark.parametrize("sql, params", [
    ("INSERT INTO ht_unique VALUES (%s, %s, %s)", [1, "dup", 1]),
    ("INSERT INTO ht_unique VALUES (%s, %s, %s)", [2, None, 1]),
    ("INSERT INTO ht_unique VALUES (%s, %s, %s)", [3, "x", -1]),
    ("UPDATE ht_unique SET c = c - %s", [5]),
    ("INSERT INTO ht_unique VALUES (%(a)s, %(b)s, 1)", {"a": "not an int", "b": "x"}),
    ("SELECT %s::int / %s", [1, 0]),
])
def test_errors_with_parameters_and_constraints(http, tcp, unique_table, sql, params):
    got, expected = both(http, tcp, "execute", sql, params)
    assert_same_error(got, expected, sql, position=False)
    assert got.error.diag.statement_position is None or got.error.diag.statement_position == \
        expected.error.diag.statement_position, sql


def test_the_position_maps_back_over_parameters(http, tcp):
    """The server's position counts in the text as sent ($1::text...); the error points into the user's text."""
    sql = "SELECT %s AS a, %s AS b, ht_nope"
    got, expected = both(http, tcp, "read_arrow", sql, ["a much longer value than $1", 12345678])
    assert_same_error(got, expected, sql, position=False)
    assert got.error.diag.statement_position == str(sql.index("ht_nope") + 1)
    assert str(got.error).endswith("LINE 1: SELECT %s AS a, %s AS b, ht_nope\n" + " " * (8 + 25) + "^")


def test_errors_in_several_statements(http, tcp):
    sql = "SELECT 1; SELECT ht_nope"
    got, expected = both(http, tcp, "read_arrow", sql, direct=True)
    assert_same_error(got, expected, sql, position=False)
    # Neon does not say which statement failed: no position rather than a wrong one
    assert got.error.diag.statement_position in (None, expected.error.diag.statement_position)


def test_an_error_keeps_the_session_usable(http):
    with pytest.raises(psycopg.errors.DivisionByZero):
        http.read_arrow("SELECT 1/0")
    assert http.state == "active" and http.read_arrow("SELECT 1 AS x").to_pylist() == [{"x": 1}]


# ---------------------------------------------------------------------------------------------
# 4. execute(): row counts, transactions, schema=, statement_timeout
# ---------------------------------------------------------------------------------------------

EXECUTE_STEPS = [
    ("CREATE TABLE {t} (a int PRIMARY KEY, b text)", None),
    ("INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, NULL)", None),
    ("INSERT INTO {t} VALUES (%s, %s)", [4, "d"]),
    ("INSERT INTO {t} SELECT i, NULL FROM generate_series(10, 14) i RETURNING a", None),
    ("UPDATE {t} SET b = %(b)s WHERE a > %(lo)s", {"b": "big", "lo": 2}),
    ("UPDATE {t} SET b = 'none' WHERE false", None),
    ("SELECT * FROM {t}", None),
    ("SELECT * FROM {t} WHERE a = %s", [1]),
    ("DELETE FROM {t} WHERE a >= %s", [12]),
    ("INSERT INTO {t} VALUES (20, 'x'); UPDATE {t} SET b = 'y' WHERE a < 3", None),
    ("INSERT INTO {t} VALUES (%s, 'x') ON CONFLICT (a) DO NOTHING", [20]),
    ("CREATE INDEX ON {t} (b)", None),
    ("ANALYZE {t}", None),
    ("VACUUM {t}", None),
    ("TRUNCATE {t}", None),
    ("DROP TABLE {t}", None),
]


def test_execute_row_counts_equal_tcp(http, tcp, pg):
    pg.execute("DROP TABLE IF EXISTS ht_exec_h; DROP TABLE IF EXISTS ht_exec_t")
    for sql, params in EXECUTE_STEPS:
        got = http.execute(sql.format(t="ht_exec_h"), params)
        expected = tcp.execute(sql.format(t="ht_exec_t"), params)
        assert got == expected, f"{sql}: HTTP {got} != TCP {expected}"
        if sql == "SELECT * FROM {t}":
            assert got == 9  # 3 + 1 + 5 inserted
    assert http.last_query is not None


def test_execute_counts(http, pg):
    pg.execute("DROP TABLE IF EXISTS ht_counts; CREATE TABLE ht_counts (a int)")
    assert http.execute("INSERT INTO ht_counts SELECT generate_series(1, 7)") == 7
    assert http.execute("UPDATE ht_counts SET a = a + 1 WHERE a > %s", [4]) == 3
    assert http.execute("SELECT * FROM ht_counts") == 7
    assert http.execute("DELETE FROM ht_counts") == 7
    assert http.execute("CREATE TEMP TABLE ht_x (a int)") == -1
    assert http.execute("DROP TABLE ht_counts") == -1


@pytest.mark.parametrize("sql", [
    "INSERT INTO ht_tx VALUES (10); INSERT INTO ht_tx VALUES (1/0)",
    "INSERT INTO ht_tx VALUES (10), (10)",
    "INSERT INTO ht_tx VALUES (10); UPDATE ht_tx SET a = 'x'",
    "INSERT INTO ht_tx VALUES (10); SELECT ht_nope",
])
def test_a_failing_text_writes_nothing(http, tcp, pg, sql):
    pg.execute("DROP TABLE IF EXISTS ht_tx; CREATE TABLE ht_tx (a int PRIMARY KEY)")
    got, expected = both(http, tcp, "execute", sql)
    assert_same_error(got, expected, sql, position=False)
    assert pg.execute("SELECT count(*) FROM ht_tx").fetchone() == (0,)


def test_schema_option_applies_over_http(compute, pg):
    pg.execute("DROP SCHEMA IF EXISTS ht_sch CASCADE; CREATE SCHEMA ht_sch")
    with nn.connect(compute.pooled_url, transport="http", http_url=compute.http_url, schema="ht_sch",
                    suspend_after=None) as session, \
            nn.connect(compute.pooled_url, direct_url=compute.direct_url, schema="ht_sch",
                       suspend_after=None) as over_tcp:
        assert session.execute("CREATE TABLE ht_sch_items (a int)") == -1
        assert session.execute("INSERT INTO ht_sch_items VALUES (%s), (%s)", [1, 2]) == 2
        assert pg.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'ht_sch_items'"
                          ).fetchall() == [("ht_sch",)]
        sql = "SELECT current_schema() AS s, current_setting('search_path') AS p, count(*) AS n FROM ht_sch_items"
        assert_same_table(session.read_arrow(sql), over_tcp.read_arrow(sql), sql)
        assert session.read_arrow(sql).to_pylist()[0]["n"] == 2
    pg.execute("DROP SCHEMA ht_sch CASCADE")


def test_statement_timeout_applies_over_http(compute):
    kwargs = dict(statement_timeout=0.3, suspend_after=None)
    with nn.connect(compute.pooled_url, transport="http", http_url=compute.http_url, **kwargs) as session, \
            nn.connect(compute.pooled_url, direct_url=compute.direct_url, **kwargs) as over_tcp:
        for method in ("read_arrow", "execute"):
            started = time.monotonic()
            got, expected = both(session, over_tcp, method, "SELECT pg_sleep(3)")
            assert time.monotonic() - started < 2.5
            assert_same_error(got, expected, method, position=False)
            assert got.error.sqlstate == "57014"
        assert session.read_arrow("SELECT current_setting('statement_timeout') AS t").to_pylist() == [{"t": "300ms"}]


# ---------------------------------------------------------------------------------------------
# 5. Lifecycle: cold starts, failed wakes, a wrong password; no password anywhere
# ---------------------------------------------------------------------------------------------

SECRET = "Quokka-Zebra-7731-Unmistakable"
WRONG = "Wombat-Lynx-4420-NotThePassword"
ACTIVATION = 0.8


@pytest.fixture(scope="module")
def cold(compute):
    """A compute of its own: suspended until asked, ``ACTIVATION`` s of cold start, a distinctive password."""
    c = LocalCompute(suspend_after=None, activation_delay=ACTIVATION, password=SECRET, monitor_interval=0.2)
    yield c
    c.close()


@pytest.fixture
def shown(caplog):
    """Every text a user could see: collected by the tests, checked for both passwords at the end."""
    texts: list[str] = []
    caplog.set_level(logging.DEBUG, logger="neon_notebook")
    yield texts
    texts.append(caplog.text)
    for text in texts:
        assert SECRET not in text and WRONG not in text, text


def http_session(c: LocalCompute, url: str | None = None, **kwargs) -> nn.Session:
    kwargs.setdefault("suspend_after", None)
    return nn.connect(url or c.pooled_url, direct_url=None if url else c.direct_url, transport="http",
                      http_url=c.http_url, **kwargs)


def seen(session, *errors) -> list[str]:
    status = session.status()
    return [repr(session), str(session), str(status), repr(status), str(status.detail), str(status.last_error),
            session.http_url, *(str(e) for e in errors), *(repr(e) for e in errors)]


def test_a_wrong_password_wakes_nothing(cold, shown):
    assert cold.state == "suspended"
    wakes = cold.wakes
    session = http_session(cold, cold.pooled_url.replace(SECRET, WRONG))
    with pytest.raises(PermanentConnectError, match="password authentication failed") as err:
        session.read_arrow("SELECT 1")
    assert cold.wakes == wakes and cold.state == "suspended"
    assert session.state == "error"
    shown += seen(session, err.value)
    session.close()


def test_a_wake_the_proxy_holds_outlasts_wake_timeout(cold, shown):
    """Over HTTP the proxy holds the request through the wake (Neon's proxy bounds that wait itself,
    answering 500 when the control plane gives up): wake_timeout bounds the re-sending of refused
    wakes, not one held request, which could be a long query as well as a slow wake."""
    cold.suspend()
    session = http_session(cold, wake_timeout=0.3)
    started = time.monotonic()
    assert session.read_arrow("SELECT 1 AS x").to_pylist() == [{"x": 1}]
    assert time.monotonic() - started >= ACTIVATION
    assert session.state == "active"
    session.close()


def test_wakes_refused_past_wake_timeout_are_a_wake_timeout(cold, shown):
    cold.suspend()
    cold.fail_next_wakes(1000)
    try:
        session = http_session(cold, wake_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(WakeTimeout) as err:
            session.read_arrow("SELECT 1")
        assert time.monotonic() - started < 0.3 + 1.5, "kept re-sending past wake_timeout"
        assert session.state == "error" and "Couldn't connect to compute node" in str(err.value)
        shown += seen(session, err.value)
        session.close()
    finally:
        cold.fail_next_wakes(0)


def test_a_cold_start_is_ridden_out(cold, shown):
    cold.suspend()
    assert cold.state == "suspended"
    wakes = cold.wakes
    session = http_session(cold, wake_timeout=30)
    assert session.state == "unknown"
    started = time.monotonic()
    assert session.read_arrow("SELECT 42 AS x").to_pylist() == [{"x": 42}]
    assert time.monotonic() - started >= ACTIVATION  # it waited through the wake
    assert session.state == "active" and cold.wakes == wakes + 1 and cold.state == "active"
    assert session.execute("SELECT 1") == 1
    shown += seen(session)
    session.close()


def test_failed_wakes_are_retried(cold, shown):
    cold.suspend()
    cold.fail_next_wakes(2)
    session = http_session(cold, wake_timeout=30)
    assert session.read_arrow("SELECT 1 AS x", direct=True).to_pylist() == [{"x": 1}]
    assert session.state == "active"
    report = session.warm_up()
    shown += seen(session) + [str(report), repr(report)]
    session.close()


def test_an_sql_error_on_a_password_protected_compute_shows_no_password(cold, shown):
    session = http_session(cold, wake_timeout=30)
    with pytest.raises(psycopg.errors.UndefinedColumn) as err:
        session.read_arrow(f"SELECT {SECRET.replace('-', '_')}x")
    shown += seen(session, err.value)
    session.close()


# ---------------------------------------------------------------------------------------------
# 6. The /sql URL of a Neon host; what an HTTP session cannot do
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, expected", [
    ("ep-cool-name-123456.us-east-2.aws.neon.tech", "https://api.us-east-2.aws.neon.tech/sql"),
    ("ep-cool-name-123456-pooler.us-east-2.aws.neon.tech", "https://api.us-east-2.aws.neon.tech/sql"),
    ("ep-cool-name-123456.c-2.us-east-2.aws.neon.tech", "https://api.c-2.us-east-2.aws.neon.tech/sql"),
    ("ep-cool-name-123456-pooler.c-2.us-east-2.aws.neon.tech", "https://api.c-2.us-east-2.aws.neon.tech/sql"),
    ("ep-x-1.eu-central-1.aws.neon.tech", "https://api.eu-central-1.aws.neon.tech/sql"),
])
def test_http_url_is_derived_from_a_neon_host(host, expected):
    url = f"postgresql://alex:{SECRET}@{host}/neondb?sslmode=require"
    with nn.connect(url, transport="http") as session:  # nothing connects
        assert session.http_url == expected
        assert session.state == "unknown" and session.last_query is None
        for text in seen(session):
            assert SECRET not in text


def test_an_explicit_http_url_wins(compute):
    url = f"postgresql://alex:{SECRET}@ep-cool-name-123456.us-east-2.aws.neon.tech/neondb"
    with nn.connect(url, transport="http", http_url=compute.http_url) as session:
        assert session.http_url == compute.http_url


def test_a_non_neon_host_needs_http_url_and_nothing_is_sent():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ConfigurationError, match="http_url") as err:
            nn.connect(f"postgresql://alex:{SECRET}@127.0.0.1:{port}/db", transport="http")
        assert SECRET not in str(err.value)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection was ever made
            listener.accept()
    finally:
        listener.close()


@pytest.mark.parametrize("kwargs", [{"transport": "tcp", "http_url": "http://127.0.0.1:1/sql"},
                                    {"transport": "ws"}, {"transport": "HTTP"}])
def test_bad_transport_options(kwargs):
    with pytest.raises(ConfigurationError):
        nn.connect(f"postgresql://alex:{SECRET}@ep-x-1.us-east-2.aws.neon.tech/db", **kwargs)


def test_an_http_session_has_no_connection_to_lend():
    with nn.connect(f"postgresql://alex:{SECRET}@ep-x-1.us-east-2.aws.neon.tech/db", transport="http") as session:
        for enter in (session.connection, session.direct):
            with pytest.raises(ConfigurationError, match='HTTP session.*transport="tcp"'):
                with enter():
                    pass
        with pytest.raises(ConfigurationError, match='HTTP session.*transport="tcp"'):
            session.write(pa.table({"a": [1]}), "t")
        assert session.state == "unknown"  # nothing was sent


# ---------------------------------------------------------------------------------------------
# 7. The magics on an HTTP session
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def shell(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from neon_notebook.ui.magics import NeonMagics

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "neon_notebook.ui.magics")
    fresh = NeonMagics(shell)
    shell.register_magics(fresh)
    yield shell, fresh
    for name in list(fresh.sessions):
        fresh.sessions.pop(name).close()


def test_magics_read_over_http(shell, compute, tcp, capsys):
    ipython, magics = shell
    password = compute.direct_url.split(":")[2].split("@")[0]
    ipython.run_line_magic("neon", f"connect web {compute.pooled_url} --direct-url {compute.direct_url}"
                                   f" --http --http-url {compute.http_url}")
    ipython.run_line_magic("neon", f"connect plain {compute.pooled_url} --direct-url {compute.direct_url}")
    out = capsys.readouterr().out
    assert "web: postgres@127.0.0.1" in out and "over HTTP" in out.split("plain:")[0]
    assert "over HTTP" not in out.split("plain:")[1]
    assert isinstance(magics.sessions["web"], HttpSession) and not isinstance(magics.sessions["plain"], HttpSession)
    ipython.run_line_magic("neon", "use web")
    query = "select i, i * 1.5 as f, 'x' || i as s, :n::int as n from generate_series(1, 3) i"
    ipython.user_ns["n"] = 7
    ipython.run_cell_magic("sql", "df", query)
    ipython.run_cell_magic("sql", "--arrow tbl", query)
    ipython.run_cell_magic("sql", "--polars pl_df", query)
    expected = tcp.read_arrow(query.replace(":n", "%(n)s"), {"n": 7})
    assert_same_table(ipython.user_ns["tbl"], expected, "%%sql --arrow")
    pd.testing.assert_frame_equal(ipython.user_ns["df"], tcp.read_pandas(query.replace(":n", "%(n)s"), {"n": 7}))
    assert ipython.user_ns["pl_df"].equals(pl.from_arrow(expected))
    ipython.run_line_magic("neon", "status web")
    ipython.run_line_magic("neon", "list")
    ipython.run_line_magic("neon", "warm web")
    out = capsys.readouterr().out
    assert "active" in out and "over HTTP" in out
    # an error cell shows the same message and caret as on the TCP session
    errors = []
    for name in ("web", "plain"):
        ipython.run_line_magic("neon", f"use {name}")
        ipython.run_cell("%%sql\nselect 1,\n  ht_nope")
        errors.append(capsys.readouterr())
    assert errors[0].out + errors[0].err == errors[1].out + errors[1].err
    assert "ht_nope" in errors[0].out + errors[0].err
    assert password not in out + "".join(e.out + e.err for e in errors)
