"""``Session.write`` on both endpoints of the local compute, checked against plain SQL.

Every test writes through one module-wide session (``schema=`` set, so unqualified
names land in ``SCHEMA``) on the pooled endpoint (PgBouncer, transaction mode) and
the direct one, and reads back what was stored with psycopg on a clean direct
connection (the oracle). After each test the pools hold no connection, both
endpoints answer, and no staging table (replace's ``<name>__nn_<hex>``, upsert's
temporary one) is left anywhere.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from decimal import Decimal

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql
from readers_support import connect_raw

import neon_notebook as nn
from neon_notebook.errors import ConfigurationError, UnrepresentableValue

SCHEMA = "nn_writes"
OTHER = "nn writes \"other\""  # a schema whose name needs quoting
UTC = dt.timezone.utc


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(direct_url):
    """The oracle: a clean autocommit connection to the direct endpoint; the test schemas."""
    with connect_raw(direct_url) as conn:
        for schema in (SCHEMA, OTHER):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        yield conn
        for schema in (SCHEMA, OTHER):
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def session(db, pooled_url, direct_url):
    with nn.connect(pooled_url, direct_url=direct_url, schema=SCHEMA, suspend_after=None,
                    pool_size=2) as s:
        yield s


@pytest.fixture
def write(session, endpoint):
    """``session.write`` on this test's endpoint, without a progress bar."""
    def run(data, table, **kwargs):
        kwargs.setdefault("progress", False)
        return session.write(data, table, direct=endpoint == "direct", **kwargs)

    return run


@pytest.fixture(autouse=True)
def healthy(request):
    """After each test: nothing borrowed, both endpoints answer, no staging table anywhere."""
    yield
    if "session" not in request.fixturenames:
        return
    session, db = request.getfixturevalue("session"), request.getfixturevalue("db")
    assert all(p["in_use"] == 0 for p in session.pool_stats().values()), session.pool_stats()
    for direct in (False, True):
        assert session.read_arrow("select 1 as one", direct=direct, progress=False).num_rows == 1
    assert staging_tables(db) == []
    assert not [t for t in threading.enumerate() if t.name == "neon-write-send"]


def staging_tables(db) -> list[str]:
    """Relations named like a write's staging table, in any schema (temporary ones too)."""
    return [r[0] for r in db.execute(r"select relname from pg_class where relname ~ '__nn_[0-9a-f]{8}'")]


# -- oracles --------------------------------------------------------------------------------------


def ident(table: str, schema: str = SCHEMA) -> sql.Identifier:
    return sql.Identifier(schema, table)


def fresh(db, table: str, schema: str = SCHEMA) -> str:
    db.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident(table, schema)))
    return table


def rows(db, table: str, schema: str = SCHEMA, order: str = "1") -> list[tuple]:
    return db.execute(sql.SQL("SELECT * FROM {} ORDER BY " + order).format(ident(table, schema))).fetchall()


def columns(db, table: str, schema: str = SCHEMA) -> list[tuple[str, str]]:
    """(name, type) of the table's columns, in order, as the catalog says."""
    return db.execute(
        "select attname, format_type(atttypid, atttypmod) from pg_attribute "
        "where attrelid = %s::regclass and attnum > 0 and not attisdropped order by attnum",
        (ident(table, schema).as_string(db),)).fetchall()


def primary_key(db, table: str, schema: str = SCHEMA) -> tuple[str, list[str]] | None:
    """(constraint name, columns) of the table's primary key, or None."""
    row = db.execute(
        "select conname, array(select attname from unnest(conkey) with ordinality k(n, i) "
        "join pg_attribute a on a.attrelid = conrelid and a.attnum = k.n order by k.i) from pg_constraint "
        "where conrelid = %s::regclass and contype = 'p'", (ident(table, schema).as_string(db),)).fetchone()
    return None if row is None else (row[0], list(row[1]))


def exists(db, table: str, schema: str = SCHEMA) -> bool:
    return db.execute("select to_regclass(%s) is not null", (ident(table, schema).as_string(db),)).fetchone()[0]


def same_rows(got: list[tuple], expected: list[tuple]) -> bool:
    """Equal rows, NaN equal to NaN (and only to NaN: NULL is None)."""
    def same(a, b):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
            return math.isnan(b)
        return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b

    return len(got) == len(expected) and all(
        len(g) == len(e) and all(same(a, b) for a, b in zip(g, e)) for g, e in zip(got, expected))


# -- every kind of data ---------------------------------------------------------------------------

SAMPLE = pa.table({
    "k": pa.array([1, 2, 3, 4], pa.int32()),
    "name": pa.array(["plain", None, "", "tab\t'quote\" ü\n"], pa.string()),
    "x": pa.array([1.5, float("nan"), None, -0.25], pa.float64()),
    "at": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), None,
                    dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), dt.datetime(2000, 1, 1, tzinfo=UTC)],
                   pa.timestamp("us", tz="UTC")),
})
SAMPLE_ROWS = list(zip(*(SAMPLE.column(i).to_pylist() for i in range(SAMPLE.num_columns))))
SAMPLE_TYPES = [("k", "integer"), ("name", "text"), ("x", "double precision"),
                ("at", "timestamp with time zone")]


class CStream:
    """Something that only speaks the Arrow C stream interface (e.g. another library's table)."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def as_kind(kind: str, tmp_path):
    """SAMPLE as a ``kind`` of data ``write`` takes."""
    if kind == "table":
        return SAMPLE
    if kind == "record batch":
        return SAMPLE.combine_chunks().to_batches()[0]
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(SAMPLE.schema, SAMPLE.to_batches(max_chunksize=3))
    if kind == "generator":
        return (b for b in SAMPLE.to_batches(max_chunksize=1))
    if kind == "list of tables":
        return [SAMPLE.slice(0, 1), SAMPLE.slice(1)]
    if kind == "c stream":
        return CStream(SAMPLE)
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(SAMPLE)
    if kind in ("parquet path", "parquet str"):
        path = tmp_path / "sample.parquet"
        pq.write_table(SAMPLE, path, row_group_size=2)
        return path if kind == "parquet path" else str(path)
    raise AssertionError(kind)


KINDS = ["table", "record batch", "reader", "generator", "list of tables", "c stream", "polars",
         "parquet path", "parquet str"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_data_creates_the_table_and_writes_its_rows(db, session, write, endpoint, kind, tmp_path):
    table = fresh(db, f"kind_{kind.replace(' ', '_')}_{endpoint}")
    assert write(as_kind(kind, tmp_path), table) == 4
    assert columns(db, table) == SAMPLE_TYPES
    assert same_rows(rows(db, table), SAMPLE_ROWS)
    assert session.last_query.rows == 4


def test_pandas_numpy_and_nullable_dtypes(db, write, endpoint):
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({
        "i64": np.array([1, -2, 3], dtype="int64"),
        "i16": np.array([1, 2, 3], dtype="int16"),
        "u8": np.array([0, 255, 7], dtype="uint8"),
        "f64": [1.5, np.nan, -0.0],              # numpy float: NaN is pandas' missing value: NULL
        "f32": np.array([0.5, np.nan, 2], dtype="float32"),
        "b": [True, False, True],
        "n_int": pd.array([1, None, 3], dtype="Int32"),  # nullable: NULL, and stays an integer
        "n_float": pd.array([1.25, None, 3.0], dtype="Float64"),
        "n_bool": pd.array([True, None, False], dtype="boolean"),
        "s": pd.array(["a", None, ""], dtype="string"),  # '' is not NULL
        "obj": ["x", "ü'\"\\", None],
        "cat": pd.Categorical(["lo", "hi", None]),
        "ts": pd.Series([dt.datetime(2024, 1, 2, 3, 4, 5, 123456), None, dt.datetime(1970, 1, 1)],
                        dtype="datetime64[ns]"),
        "tz": pd.Series([dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2000, 6, 1), None],
                        dtype="datetime64[ns]").dt.tz_localize("UTC"),
        "td": pd.to_timedelta(["1 days 2 s", None, "3 us"]),
        "dec": [Decimal("1.10"), None, Decimal("-3.25")],
    })
    table = fresh(db, f"pandas_{endpoint}")
    assert write(df, table) == 3
    assert columns(db, table) == [
        ("i64", "bigint"), ("i16", "smallint"), ("u8", "smallint"), ("f64", "double precision"),
        ("f32", "real"), ("b", "boolean"), ("n_int", "integer"), ("n_float", "double precision"),
        ("n_bool", "boolean"), ("s", "text"), ("obj", "text"), ("cat", "text"),
        ("ts", "timestamp without time zone"), ("tz", "timestamp with time zone"), ("td", "interval"),
        ("dec", "numeric(3,2)")]
    got = rows(db, table, order="i64")
    expected = sorted([
        (1, 1, 0, 1.5, 0.5, True, 1, 1.25, True, "a", "x", "lo",
         dt.datetime(2024, 1, 2, 3, 4, 5, 123456), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
         dt.timedelta(days=1, seconds=2), Decimal("1.10")),
        (-2, 2, 255, None, None, False, None, None, None, None, "ü'\"\\", "hi",
         None, dt.datetime(2000, 6, 1, tzinfo=UTC), None, None),
        (3, 3, 7, -0.0, 2.0, True, 3, 3.0, False, "", None, None,
         dt.datetime(1970, 1, 1), None, dt.timedelta(microseconds=3), Decimal("-3.25")),
    ])
    assert same_rows(got, expected), got


def test_pandas_named_index_is_written_and_unnamed_dropped(db, write, endpoint):
    import pandas as pd

    df = pd.DataFrame({"g": ["a", "b", "a"], "h": [1, 1, 2], "v": [10, 20, 30]})
    summed = df.groupby(["g", "h"]).sum()  # a named MultiIndex: data
    table = fresh(db, f"pd_index_{endpoint}")
    assert write(summed, table) == 3
    assert [c for c, _ in columns(db, table)] == ["g", "h", "v"]
    assert rows(db, table, order="g, h") == [("a", 1, 10), ("a", 2, 30), ("b", 1, 20)]

    one = df.set_index("v")  # a named single index
    table = fresh(db, f"pd_index1_{endpoint}")
    write(one, table)
    assert [c for c, _ in columns(db, table)] == ["v", "g", "h"]

    unnamed = df.set_index(pd.Index([7, 8, 9]))  # not data: dropped
    table = fresh(db, f"pd_noindex_{endpoint}")
    write(unnamed, table)
    assert [c for c, _ in columns(db, table)] == ["g", "h", "v"]
    assert rows(db, table, order="v") == [("a", 1, 10), ("b", 1, 20), ("a", 2, 30)]


def test_iter_batches_of_one_query_feeds_write_of_another(db, session, write, endpoint):
    table = fresh(db, f"from_query_{endpoint}")
    batches = session.iter_batches(
        "select g as k, g::text as s, (g * 0.5)::numeric(10, 1) as half from generate_series(1, 2500) g",
        batch_rows=1000, progress=False, direct=endpoint == "direct")
    assert write(batches, table) == 2500
    assert columns(db, table) == [("k", "integer"), ("s", "text"), ("half", "numeric(10,1)")]
    assert db.execute(sql.SQL("select count(*), sum(k), sum(half), count(distinct s) from {}").format(
        ident(table))).fetchone() == (2500, 2500 * 2501 // 2, Decimal(2500 * 2501) / 4, 2500)


def test_an_empty_result_still_creates_its_table(db, session, write, endpoint):
    table = fresh(db, f"from_empty_{endpoint}")
    batches = session.iter_batches("select 1::int as k, 'x'::text as s, now() as at where false",
                                   progress=False)
    assert write(batches, table) == 0
    assert columns(db, table) == [("k", "integer"), ("s", "text"), ("at", "timestamp with time zone")]
    assert rows(db, table) == []
    assert session.last_query.rows == 0


def test_parquet_path_errors(session, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        session.write(tmp_path / "missing.parquet", "never", progress=False)
    with pytest.raises(FileNotFoundError, match="directory"):
        session.write(tmp_path, "never", progress=False)
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigurationError, match="not a Parquet file"):
        session.write(str(tmp_path / "data.csv"), "never", progress=False)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="not a Parquet file"):
        session.write(tmp_path / "empty.parquet", "never", progress=False)


def test_data_that_is_not_data(session):
    import polars as pl

    with pytest.raises(TypeError, match=r"collect\(\)"):
        session.write(pl.LazyFrame({"a": [1]}), "never", progress=False)
    for bad in (42, {"a": [1]}, b"bytes"):
        with pytest.raises(TypeError, match="takes a pandas or polars DataFrame"):
            session.write(bad, "never", progress=False)
    import pandas as pd

    for column in (pd.Series([1], name="a"), pl.Series("a", [1]), pa.array([1]), pa.chunked_array([[1]])):
        with pytest.raises(TypeError, match=r"not one column .*to_frame\(\)"):
            session.write(column, "never", progress=False)
    with pytest.raises(TypeError, match="RecordBatches; one item is a int"):
        session.write([1, 2], "never", progress=False)
    with pytest.raises(ConfigurationError, match="empty iterable"):
        session.write(iter([]), "never", progress=False)
    first = pa.record_batch({"a": pa.array([1], pa.int64())})
    other = pa.record_batch({"a": pa.array(["x"])})
    with pytest.raises(ConfigurationError, match="differ from the first batch"):
        session.write([first, other], "never", progress=False)


# -- the table's name -----------------------------------------------------------------------------


def where(db, name: str) -> list[str]:
    """The schemas holding a table named exactly ``name``."""
    return [r[0] for r in db.execute(
        "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relname = %s and n.nspname in (%s, %s, 'public') order by 1", (name, SCHEMA, OTHER))]


@pytest.mark.parametrize("given, schema, name", [
    ("plain", SCHEMA, "plain"),
    (f"{SCHEMA}.qualified", SCHEMA, "qualified"),
    ("Mixed Case", SCHEMA, "Mixed Case"),
    ('with "quotes" and \'apostrophes\'', SCHEMA, 'with "quotes" and \'apostrophes\''),
    ((OTHER, "dotted.name"), OTHER, "dotted.name"),
    ((OTHER, "Robert'); DROP TABLE x;--"), OTHER, "Robert'); DROP TABLE x;--"),
])
def test_table_names_are_identifiers(db, write, endpoint, given, schema, name):
    given = (given[0], given[1] + endpoint) if isinstance(given, tuple) else given + endpoint
    name += endpoint
    fresh(db, name, schema)
    column = 'Odd "Col" 50% \'off\''
    assert write(pa.table({column: [1, 2]}), given, key=column) == 2
    assert where(db, name) == [schema]
    assert primary_key(db, name, schema) == (f"{name}_pkey", [column])
    assert rows(db, name, schema) == [(1,), (2,)]
    assert columns(db, name, schema) == [(column, "bigint")]
    assert write(pa.table({column: [3]}), given, mode="upsert", key=column) == 1  # found again
    assert rows(db, name, schema) == [(1,), (2,), (3,)]


def test_schema_option_applies_to_unqualified_names_and_the_default_is_public(
        db, write, endpoint, make_session, pooled_url, direct_url):
    fresh(db, f"unqualified_{endpoint}")
    write(pa.table({"a": [1]}), f"unqualified_{endpoint}")
    assert where(db, f"unqualified_{endpoint}") == [SCHEMA]
    plain = make_session(pooled_url, direct_url=direct_url)
    fresh(db, f"nn_writes_public_{endpoint}", "public")
    try:
        plain.write(pa.table({"a": [1]}), f"nn_writes_public_{endpoint}", direct=endpoint == "direct",
                    progress=False)
        assert where(db, f"nn_writes_public_{endpoint}") == ["public"]
    finally:
        fresh(db, f"nn_writes_public_{endpoint}", "public")


def test_a_schema_that_does_not_exist_is_the_servers_error(write, endpoint, make_session, pooled_url,
                                                           direct_url):
    with pytest.raises(psycopg.errors.InvalidSchemaName, match="no_such_schema"):
        write(pa.table({"a": [1]}), "no_such_schema.t")
    elsewhere = make_session(pooled_url, direct_url=direct_url, schema="no_such_schema")
    with pytest.raises(psycopg.errors.InvalidSchemaName, match="no schema has been selected"):
        elsewhere.write(pa.table({"a": [1]}), "t", direct=endpoint == "direct", progress=False)


@pytest.mark.parametrize("bad, error, match", [
    ("a.b.c", ConfigurationError, "tuple"),
    ("", ConfigurationError, "empty"),
    (" padded", ConfigurationError, "spaces"),
    ("nul\x00", ConfigurationError, "NUL"),
    ("x" * 64, ConfigurationError, "63 bytes"),
    (("only one",), TypeError, "tuple"),
    (42, TypeError, "tuple"),
])
def test_bad_table_names_are_refused(session, bad, error, match):
    with pytest.raises(error, match=match):
        session.write(pa.table({"a": [1]}), bad, progress=False)


# -- modes ----------------------------------------------------------------------------------------


def test_create_refuses_an_existing_table_and_changes_nothing(db, session, write, endpoint):
    table = fresh(db, f"create_{endpoint}")
    assert write(pa.table({"a": [1, 2]}), table, mode="create") == 2
    with pytest.raises(ConfigurationError, match=rf"{SCHEMA}.{table} already exists \(mode='create'\)"):
        write(pa.table({"a": [3]}), table, mode="create")
    with pytest.raises(ConfigurationError, match="already exists"):
        write(pa.table({"b": ["other columns"]}), table, mode="create")
    assert rows(db, table) == [(1,), (2,)] and columns(db, table) == [("a", "bigint")]


@pytest.fixture
def target(db, endpoint):
    """An existing table with defaults, an identity, a generated column and a NOT NULL one."""
    table = fresh(db, f"target_{endpoint}")
    db.execute(sql.SQL(
        "CREATE TABLE {} (id int GENERATED ALWAYS AS IDENTITY, a text DEFAULT '', n int NOT NULL, "
        "b int DEFAULT 7, at timestamptz DEFAULT '2000-01-01 00:00+00', "
        "twice int GENERATED ALWAYS AS (n * 2) STORED, small smallint DEFAULT 0, note text)").format(ident(table)))
    db.execute(sql.SQL("INSERT INTO {} (a, n, note) VALUES ('old', 1, '')").format(ident(table)))
    return table


def test_append_into_an_existing_table_in_another_column_order_with_defaults(db, write, target):
    data = pa.table({"note": ["n1", None], "n": pa.array([5, 6], pa.int64()), "a": ["x", None]})
    assert write(data, target) == 2
    assert rows(db, target) == [
        (1, "old", 1, 7, dt.datetime(2000, 1, 1, tzinfo=UTC), 2, 0, ""),
        (2, "x", 5, 7, dt.datetime(2000, 1, 1, tzinfo=UTC), 10, 0, "n1"),
        (3, None, 6, 7, dt.datetime(2000, 1, 1, tzinfo=UTC), 12, 0, None)]


@pytest.mark.parametrize("data, match", [
    (pa.table({"a": ["no n"]}), r"lacks columns \['n', 'note'\] .* no default"),
    (pa.table({"n": [1]}), r"lacks columns \['note'\] .* no default"),
    (pa.table({"n": [1], "note": ["."], "extra": [2]}), r"has columns \['extra'\] that table .* does not have"),
    (pa.table({"n": [1], "note": ["."], "A": ["x"]}), r"'A' is not 'a': names are matched exactly"),
    (pa.table({"n": [1], "note": ["."], "twice": [2]}), r"columns \['twice'\] .* are generated"),
    (pa.table({"n": ["1"], "note": ["."]}), r"column 'n': Arrow type string cannot be written exactly .* int4"),
    (pa.table({"n": [1], "note": ["."], "at": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us"))}),
     r"column 'at': Arrow type timestamp\[us\] cannot be written exactly .* timestamptz"),
    (pa.table({"n": [1], "note": ["."], "b": [True]}), r"column 'b': Arrow type bool cannot .* int4"),
    # floats go into an integer column as whole numbers only (pandas' ints with missing values)
    (pa.table({"n": [1], "note": ["."], "b": [1.5]}), r"column 'b', row 0 .* whole numbers only"),
])
def test_append_mismatches_are_refused_before_anything_is_written(db, session, write, target, data, match):
    before = rows(db, target)
    with pytest.raises((ConfigurationError, UnrepresentableValue), match=match):
        write(data, target)
    assert rows(db, target) == before


def test_append_value_out_of_the_columns_range_names_column_and_row(db, write, target):
    from neon_notebook.errors import UnrepresentableValue

    before = rows(db, target)
    data = pa.table({"n": [1, 2], "note": pa.array([None, None], pa.string()), "small": pa.array([1, 40_000], pa.int64())})
    with pytest.raises(UnrepresentableValue, match=r"column 'small', row 1 .* 40000"):
        write(data, target)
    assert rows(db, target) == before


def test_append_creates_a_missing_table_and_key_becomes_its_primary_key(db, write, endpoint):
    table = fresh(db, f"append_new_{endpoint}")
    assert write(pa.table({"id": [1, 2], "v": ["a", "b"]}), table, key="id") == 2
    assert primary_key(db, table) == (f"{table}_pkey", ["id"])
    assert write(pa.table({"id": [3], "v": ["c"]}), table) == 1
    assert rows(db, table) == [(1, "a"), (2, "b"), (3, "c")]


def test_replace_replaces_definition_and_contents(db, session, write, endpoint):
    table = fresh(db, f"replace_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (a int PRIMARY KEY, b text)").format(ident(table)))
    db.execute(sql.SQL("CREATE INDEX ON {} (b)").format(ident(table)))
    db.execute(sql.SQL("INSERT INTO {} SELECT g, g::text FROM generate_series(1, 5) g").format(ident(table)))
    new = pa.table({"x": pa.array([10, 20], pa.int16()), "y": ["ten", None]})
    assert write(new, table, mode="replace") == 2
    assert session.last_query.write == f"replace into {SCHEMA}.{table}"
    assert columns(db, table) == [("x", "smallint"), ("y", "text")]
    assert rows(db, table) == [(10, "ten"), (20, None)]
    assert primary_key(db, table) is None
    assert db.execute("select count(*) from pg_indexes where schemaname = %s and tablename = %s",
                      (SCHEMA, table)).fetchone() == (0,)
    for _ in range(2):  # key= becomes the primary key, under the table's own constraint name
        assert write(new, table, mode="replace", key=["x"]) == 2
        assert primary_key(db, table) == (f"{table}_pkey", ["x"])
        assert rows(db, table) == [(10, "ten"), (20, None)]
    missing = fresh(db, f"replace_missing_{endpoint}")
    assert write(new, missing, mode="replace") == 2 and rows(db, missing) == [(10, "ten"), (20, None)]


def test_replace_with_a_key_on_a_name_of_63_bytes(db, write, endpoint):
    table = fresh(db, (f"long_{endpoint}_" + "é" * 40).encode()[:63].decode(errors="ignore"))
    data = pa.table({"id": [1, 2]})
    for _ in range(2):
        assert write(data, table, mode="replace", key="id") == 2
        name, cols = primary_key(db, table)
        assert cols == ["id"] and name == table.encode()[:58].decode(errors="ignore") + "_pkey"


def test_replace_of_a_table_a_view_depends_on_is_refused_and_the_old_table_stays(db, write, endpoint):
    table = fresh(db, f"replace_view_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (a int)").format(ident(table)))
    db.execute(sql.SQL("INSERT INTO {} VALUES (1), (2)").format(ident(table)))
    db.execute(sql.SQL("CREATE VIEW {} AS SELECT a FROM {}").format(ident(table + "_v"), ident(table)))
    with pytest.raises(ConfigurationError, match=r"other objects depend on it .*view .*Nothing was written"):
        write(pa.table({"a": pa.array([9], pa.int32())}), table, mode="replace")
    assert rows(db, table) == [(1,), (2,)]
    assert rows(db, table + "_v") == [(1,), (2,)]
    with pytest.raises(ConfigurationError, match=rf"{SCHEMA}.{table}_v is a view, not a table"):
        write(pa.table({"a": pa.array([9], pa.int32())}), table + "_v")


def test_upsert_inserts_new_keys_and_updates_existing_ones_exactly_once(db, session, write, endpoint):
    table = fresh(db, f"upsert_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text DEFAULT '', n int DEFAULT 0)").format(ident(table)))
    db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a', 1), (2, 'b', 2)").format(ident(table)))
    data = pa.table({"id": pa.array([2, 3], pa.int32()), "v": ["B", "c"], "n": pa.array([20, 30], pa.int32())})
    for _ in range(2):  # the same upsert twice: the same table
        assert write(data, table, mode="upsert", key="id") == 2
        assert rows(db, table) == [(1, "a", 1), (2, "B", 20), (3, "c", 30)]
    assert session.last_query.write == f"upsert into {SCHEMA}.{table}"
    # Some of the columns: the others keep their values (or take their default when inserted).
    assert write(pa.table({"v": ["A", "d"], "id": pa.array([1, 4], pa.int32())}), table,
                 mode="upsert", key=["id"]) == 2
    assert rows(db, table) == [(1, "A", 1), (2, "B", 20), (3, "c", 30), (4, "d", 0)]
    # Only the key: new keys inserted, existing rows left alone (ON CONFLICT DO NOTHING).
    assert write(pa.table({"id": pa.array([4, 5], pa.int32())}), table, mode="upsert", key="id") == 2
    assert rows(db, table) == [(1, "A", 1), (2, "B", 20), (3, "c", 30), (4, "d", 0), (5, "", 0)]


def test_upsert_on_a_composite_unique_constraint_in_any_order(db, write, endpoint):
    table = fresh(db, f"upsert_pair_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (a text, b int, v int, UNIQUE (a, b))").format(ident(table)))
    db.execute(sql.SQL("INSERT INTO {} VALUES ('x', 1, 1), ('x', 2, 2)").format(ident(table)))
    data = pa.table({"b": pa.array([2, 3], pa.int32()), "a": ["x", "x"], "v": pa.array([20, 30], pa.int32())})
    assert write(data, table, mode="upsert", key=["b", "a"]) == 2
    assert rows(db, table, order="2") == [("x", 1, 1), ("x", 2, 20), ("x", 3, 30)]


def test_upsert_into_a_missing_table_creates_it_with_the_primary_key(db, write, endpoint):
    table = fresh(db, f"upsert_new_{endpoint}")
    data = pa.table({"k1": ["a", "a"], "k2": [1, 2], "v": [1.5, 2.5]})
    assert write(data, table, mode="upsert", key=["k2", "k1"]) == 2
    assert primary_key(db, table) == (f"{table}_pkey", ["k2", "k1"])
    assert write(pa.table({"k1": ["a"], "k2": [2], "v": [9.0]}), table, mode="upsert", key=["k1", "k2"]) == 1
    assert rows(db, table, order="2") == [("a", 1, 1.5), ("a", 2, 9.0)]


@pytest.mark.parametrize("mode, existing", [("upsert", True), ("upsert", False), ("create", False),
                                           ("append", False), ("replace", True)])
def test_data_repeating_its_key_is_refused_and_writes_nothing(db, write, endpoint, mode, existing):
    """An upsert would have to guess which row wins; a new primary key cannot hold it."""
    table = fresh(db, f"dupes_{mode}_{endpoint}")
    if existing:
        db.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, v text DEFAULT '')").format(ident(table)))
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(ident(table)))
    data = pa.table({"id": [1, 2, 3, 2], "v": ["w", "x", "y", "z"]})
    index = '"the data repeats a key"' if mode == "upsert" and existing else r'"\w+_pkey"'
    with pytest.raises(psycopg.errors.UniqueViolation,
                       match=rf"could not create unique index {index}\nDETAIL:  Key \(id\)=\(2\) is duplicated"):
        write(data, table, mode=mode, key="id")
    if mode == "upsert":  # with the key alone (DO NOTHING) too: the rule does not depend on the columns
        with pytest.raises(psycopg.errors.UniqueViolation, match=r"Key \(id\)=\(5\) is duplicated"):
            write(pa.table({"id": [5, 5, 5]}), table, mode=mode, key="id")
    else:  # a new primary key cannot hold a NULL either
        with pytest.raises(psycopg.errors.NotNullViolation, match=r'column "id" of relation "\w+" contains null'):
            write(pa.table({"id": [1, None], "v": ["w", "x"]}), table, mode=mode, key="id")
    assert rows(db, table) == [(1, "a")] if existing else not exists(db, table)
    # NULLs never conflict: an upsert on a nullable unique key inserts them as they are
    other = fresh(db, f"null_keys_{mode}_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (id bigint UNIQUE, v text)").format(ident(other)))
    write(pa.table({"id": [None, None, 1], "v": ["a", "b", "c"]}), other, mode="upsert", key="id")
    assert rows(db, other, order="2") == [(None, "a"), (None, "b"), (1, "c")]


def test_upsert_key_must_be_a_unique_constraint_of_the_table(db, write, endpoint):
    table = fresh(db, f"upsert_nokey_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} (id int, v text, w text, "
                       "UNIQUE (v) INCLUDE (w), UNIQUE (w) DEFERRABLE)").format(ident(table)))
    db.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (id) WHERE id > 0").format(ident(table)))
    data = pa.table({"id": pa.array([1], pa.int32()), "v": ["a"], "w": ["b"]})
    for key in ("id", ["v", "w"], "w"):  # partial, INCLUDE columns, deferrable: no ON CONFLICT arbiter
        with pytest.raises(ConfigurationError, match=r"no primary key or unique constraint on exactly"):
            write(data, table, mode="upsert", key=key)
    with pytest.raises(ConfigurationError, match=rf'ALTER TABLE "{SCHEMA}"."{table}" ADD UNIQUE \("id"\)'):
        write(data, table, mode="upsert", key="id")
    write(data, table, mode="upsert", key="v")  # the key columns of UNIQUE (v) INCLUDE (w)
    assert rows(db, table) == [(1, "a", "b")]
    for key in (None, [], ()):
        with pytest.raises(ConfigurationError, match=r"mode='upsert' needs key="):
            write(data, table, mode="upsert", key=key)


# -- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mode": "insert"}, ConfigurationError, "mode= takes one of 'create', 'append', 'replace', 'upsert'"),
    ({"mode": None}, ConfigurationError, "mode= takes one of"),
    ({"mode": "upsert", "key": 5}, TypeError, "key= takes a column name"),
    ({"mode": "upsert", "key": ["a", 1]}, TypeError, "key= takes a column name"),
    ({"mode": "upsert", "key": "missing"}, ConfigurationError, r"names \['missing'\], which the data"),
    ({"mode": "upsert", "key": ["a", "a"]}, ConfigurationError, "names a column twice"),
    ({"key": "missing"}, ConfigurationError, r"names \['missing'\]"),
    ({"progress": "bar"}, ConfigurationError, "progress= takes"),
    ({"progress": 3}, TypeError, "progress= takes"),
])
def test_bad_arguments_are_refused_and_nothing_is_created(db, write, endpoint, kwargs, error, match):
    table = fresh(db, f"bad_args_{endpoint}")
    with pytest.raises(error, match=match):
        write(pa.table({"a": [1]}), table, **kwargs)
    assert not exists(db, table)


# -- what a write reports -------------------------------------------------------------------------


def test_rows_bytes_progress_and_last_query(db, session, write, endpoint):
    table = fresh(db, f"counted_{endpoint}")
    n = 1000
    calls = []
    data = pa.table({"v": pa.array(range(n), pa.int32())})
    assert write(data, table, mode="create", progress=lambda *args: calls.append(args)) == n
    # Binary COPY: a 19-byte header, per row a 2-byte field count and a 4-byte length + 4 bytes, a trailer.
    stats = session.last_query
    assert (stats.rows, stats.bytes) == (n, 19 + n * 10 + 2) and stats.seconds > 0
    assert calls[-1] == (n, n * 10, n)
    calls.clear()
    assert write(iter(data.to_batches(max_chunksize=300)), table, progress=lambda *a: calls.append(a)) == n
    assert calls[-1] == (n, n * 10, None)  # a stream's length is not known beforehand
    assert session.last_query.write == f"append into {SCHEMA}.{table}"
    assert db.execute(sql.SQL("select count(*), sum(v) from {}").format(ident(table))).fetchone() == (
        2 * n, n * (n - 1))


def test_last_query_names_the_mode_and_the_table_schema_qualified(db, session, write, endpoint, make_session,
                                                                  pooled_url, direct_url):
    """Also when the write creates the table: an unqualified name, found through ``schema=``."""
    table = fresh(db, f"named_{endpoint}")
    for mode, key, ids in (("create", "id", [1, 2]), ("append", None, [3]), ("upsert", "id", [3, 4, 5]),
                           ("replace", None, [1])):
        assert write(pa.table({"id": pa.array(ids, pa.int32())}), table, mode=mode, key=key) == len(ids)
        assert session.last_query.write == f"{mode} into {SCHEMA}.{table}"
        assert session.last_query.rows == len(ids)
    data = pa.table({"id": pa.array([1, 2], pa.int32())})
    fresh(db, table)
    write(data, table)  # append, creating it
    assert session.last_query.write == f"append into {SCHEMA}.{table}"
    plain = make_session(pooled_url, direct_url=direct_url)  # no schema=: public
    fresh(db, table, "public")
    try:
        plain.write(data, table, direct=endpoint == "direct", progress=False)
        assert plain.last_query.write == f"append into public.{table}"
    finally:
        fresh(db, table, "public")


# -- the pooled endpoint: nothing left for the next client ----------------------------------------


def test_the_next_client_of_the_writes_server_connection_sees_no_state(db, session, pooled_url):
    table = fresh(db, "next_client")
    db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text)").format(ident(table)))
    pids = set()

    def spy(*_):  # mid-COPY: which server connection PgBouncer gave the write
        pids.update(r[0] for r in db.execute(
            "select pid from pg_stat_activity where state = 'active' and query like 'COPY \"upsert\\_\\_nn\\_%'"))

    data = pa.table({"id": pa.array([1, 2], pa.int32()), "v": ["a", "b"]})
    assert session.write(data, table, mode="upsert", key="id", progress=spy) == 2
    assert len(pids) == 1
    plain: list[psycopg.Connection] = []
    try:  # plain clients, each holding a transaction, until one lands on the write's server connection
        for _ in range(20):
            plain.append(psycopg.connect(pooled_url, prepare_threshold=None))
            pid, path, temp = plain[-1].execute(
                "select pg_backend_pid(), current_setting('search_path'), "
                "(select count(*) from pg_class where relnamespace = pg_my_temp_schema())").fetchone()
            if pid in pids:
                assert (path, temp) == ('"$user", public', 0)
                break
        else:
            pytest.fail(f"no plain client landed on the write's server connection {pids}")
    finally:
        for conn in plain:
            conn.close()
    assert rows(db, table) == [(1, "a"), (2, "b")]


# -- Neon's lifecycle, interrupts, atomicity ------------------------------------------------------


def test_a_write_wakes_a_suspended_compute_on_both_endpoints(make_compute, make_session, pgbouncer):
    compute = make_compute(suspend_after=None, start_active=False)
    session = make_session(compute.pooled_url, direct_url=compute.direct_url, schema="public")
    data = pa.table({"a": pa.array([1, 2], pa.int32())})
    assert compute.state == "suspended"
    for number, direct in enumerate((False, True, False), 1):
        assert session.write(data, "woken", direct=direct, progress=False) == 2
        assert compute.wakes == number
        compute.suspend()  # the pool's idle connections die with it
    with connect_raw(compute.direct_url) as check:
        assert check.execute("select count(*), sum(a) from woken").fetchone() == (6, 9)


def big(n: int) -> pa.Table:
    import pyarrow.compute as pc

    ids = pa.array(range(n), pa.int64())
    return pa.table({"id": ids, "s": pc.cast(ids, pa.string())})


@pytest.mark.parametrize("existing", [True, False])
def test_keyboard_interrupt_during_a_large_write_writes_nothing(db, session, write, endpoint, existing):
    table = fresh(db, f"interrupted_{existing}_{endpoint}")
    if existing:
        db.execute(sql.SQL("CREATE TABLE {} (id bigint, s text)").format(ident(table)))
        db.execute(sql.SQL("INSERT INTO {} VALUES (-1, 'old')").format(ident(table)))
    seen = []

    def interrupt(rows, nbytes, total):
        seen.append(rows)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(big(200_000), table, progress=interrupt)
    assert 0 < seen[-1] < 200_000
    assert rows(db, table) == [(-1, "old")] if existing else not exists(db, table)


def wait_for(db, condition: str, params=(), timeout: float = 10.0) -> None:
    """Poll ``condition`` (SQL returning a boolean) on the oracle until it holds."""
    deadline = time.monotonic() + timeout
    while not db.execute(f"select {condition}", params).fetchone()[0]:
        assert time.monotonic() < deadline, f"timed out waiting for: {condition}"
        time.sleep(0.005)


def test_replace_is_atomic_for_concurrent_readers(db, session, endpoint, direct_url, pooled_url):
    """Readers polling during a replace see the old rows or the new ones, never none or some.

    A transaction holding the old table keeps the swap's DROP waiting, so that the readers
    queue behind it on the table's lock; once let through, they find the new table.
    """
    table = fresh(db, f"atomic_{endpoint}")
    db.execute(sql.SQL("CREATE TABLE {} AS SELECT g::bigint AS id FROM generate_series(1, 1000) g").format(
        ident(table)))
    query = sql.SQL("select count(*) from {}").format(ident(table)).as_string(db)
    counts: dict[str, list[int]] = {"pooled": [], "direct": []}
    errors: list[BaseException] = []
    done = threading.Event()

    def poll(where: str) -> None:
        try:
            with connect_raw(pooled_url if where == "pooled" else direct_url) as reader:
                while not done.is_set():
                    counts[where].append(reader.execute(query).fetchone()[0])
        except BaseException as exc:  # any error is a failure of the swap
            errors.append(exc)

    def replace() -> None:
        try:
            written.append(session.write(big(200_000), table, mode="replace", direct=endpoint == "direct",
                                         progress=False))
        except BaseException as exc:
            errors.append(exc)

    written: list[int] = []
    threads = [threading.Thread(target=poll, args=(where,)) for where in counts]
    threads.append(threading.Thread(target=replace))
    with connect_raw(direct_url, autocommit=False) as blocker:
        blocker.execute(query)  # holds the old table (ACCESS SHARE) until it ends
        for thread in threads:
            thread.start()
        try:
            wait_for(db, "exists (select from pg_stat_activity where wait_event_type = 'Lock' "
                         "and query like 'DROP TABLE%%')")
            wait_for(db, "(select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                         "and query = %s) = 2", (query,))  # both readers queued behind the DROP
        finally:
            blocker.rollback()
            while not written and not errors:
                time.sleep(0.005)
            done.set()
            for thread in threads:
                thread.join()
    assert errors == [] and written == [200_000]
    for seen in counts.values():
        assert seen[0] == 1000 and seen[-1] == 200_000 and set(seen) == {1000, 200_000}, sorted(set(seen))


@pytest.mark.parametrize("data, match", [
    (pa.table({"": [1]}), "column names PostgreSQL cannot hold"),
    (pa.table({"x" * 64: [1]}), "1 to 63 bytes"),
    (pa.table({"nul\x00": [1]}), "without NUL"),
    (pa.table({}), "no columns"),
    (pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]), r"duplicate column names \['a'\]"),
])
def test_column_names_postgresql_cannot_hold_are_refused(db, write, endpoint, data, match):
    table = fresh(db, f"bad_columns_{endpoint}")
    with pytest.raises(ConfigurationError, match=match):
        write(data, table)
    assert not exists(db, table)


def test_a_stream_failing_midway_writes_nothing(db, write, endpoint):
    table = fresh(db, f"failing_stream_{endpoint}")

    def batches():
        yield pa.record_batch({"a": pa.array([1, 2], pa.int32())})
        raise ValueError("the source broke")

    with pytest.raises(ValueError, match="the source broke"):
        write(batches(), table)
    assert not exists(db, table)
