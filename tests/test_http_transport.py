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
import json
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
