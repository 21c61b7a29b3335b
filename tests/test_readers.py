"""Readers: paths, parameters, streaming, Parquet, frames, progress, interrupts."""

from __future__ import annotations

import datetime as dt
import decimal
import signal
import threading
import time

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from readers_support import connect_raw as _connect

import neon_notebook.readers as readers
from neon_notebook.readers import (
    BatchStream,
    iter_batches,
    read_arrow,
    read_pandas,
    read_polars,
    to_parquet,
)


@pytest.fixture
def pooled(pooled_url):
    with _connect(pooled_url) as c:
        yield c


@pytest.fixture
def watcher(direct_url):
    """A second connection, to look at the first one from the server's side."""
    with _connect(direct_url) as c:
        yield c


def _state(watcher: psycopg.Connection, pid: int) -> str | None:
    row = watcher.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row[0] if row else None


def _assert_healthy(conn: psycopg.Connection) -> None:
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_public_names():
    assert sorted(readers.__all__) == sorted(
        [
            "BatchStream", "CommitUncertain", "CopyFormat", "DATE_INFINITY_DAYS", "DATE_NEG_INFINITY_DAYS",
            "OutputSettingChanged", "SessionSettingWarning", "SessionStateRefused", "TIMESTAMP_INFINITY_US",
            "TIMESTAMP_NEG_INFINITY_US", "TypeFallbackWarning", "UnrepresentableValue", "UnsupportedStatement",
            "iter_batches", "read_arrow", "read_pandas", "read_polars", "to_pandas", "to_parquet",
            "to_polars",
        ]
    )
    for name in readers.__all__:
        assert hasattr(readers, name)


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE victim; --",
    "\\'; DROP TABLE victim; --",
    "$$; DROP TABLE victim; $$",
    "%s %(x)s {} \\x00ff",
    "E'\\''",
    "a\nb\tc,\"d\"",
    "漢字🎉",
    "",
]


@pytest.mark.parametrize("path_prefix", ["", "SELECT 1; "])
def test_hostile_parameters_are_bound_not_formatted(conn, path_prefix):
    conn.execute("CREATE TABLE IF NOT EXISTS victim (x int)")
    for value in HOSTILE:
        t = read_arrow(conn, path_prefix + "SELECT %s::text AS v, %s::int AS n", [value, 7])
        assert t.to_pylist() == [{"v": value, "n": 7}]
        t = read_arrow(conn, path_prefix + "SELECT %(v)s::text AS v WHERE %(v)s = %(v)s", {"v": value})
        assert t.column("v").to_pylist() == [value]
    assert conn.execute("SELECT to_regclass('victim') IS NOT NULL").fetchone() == (True,)


def test_parameters_of_many_types(conn):
    params = [1, 2**40, 1.5, decimal.Decimal("1.25"), True, None, dt.date(2020, 1, 2),
              dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), [1, 2], b"\x00\x01"]
    t = read_arrow(conn, "SELECT " + ", ".join(f"%s AS c{i}" for i in range(len(params))), params)
    row = list(t.to_pylist()[0].values())
    assert row[:6] == [1, 2**40, 1.5, decimal.Decimal("1.25"), True, None]
    assert row[6] == dt.date(2020, 1, 2) and row[7] == dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert row[8] == [1, 2] and row[9] == b"\x00\x01"


def test_percent_without_params_is_literal(conn):
    assert read_arrow(conn, "SELECT '100%' AS p").column(0).to_pylist() == ["100%"]


def test_composed_sql(conn):
    q = psycopg.sql.SQL("SELECT {} AS {}").format(psycopg.sql.Literal("x"), psycopg.sql.Identifier("my col"))
    assert read_arrow(conn, q).to_pylist() == [{"my col": "x"}]


# ---------------------------------------------------------------------------
# The row path
# ---------------------------------------------------------------------------


def test_show_explain_and_several_statements(conn):
    stream = iter_batches(conn, "SHOW TimeZone")
    t = stream.read_all()
    assert stream.path == "rows"
    assert t.to_pylist() == [{"TimeZone": conn.info.parameter_status("TimeZone")}]

    t = read_arrow(conn, "EXPLAIN SELECT * FROM generate_series(1, 10)")
    assert t.column_names == ["QUERY PLAN"] and "Function Scan" in t.column(0)[0].as_py()

    t = read_arrow(conn, "EXPLAIN (FORMAT JSON) SELECT 1")
    assert t.schema.field(0).type == pa.string()

    t = read_arrow(conn, "SELECT 1 AS a; SELECT 'x'::text AS b, 2.5::numeric(4,2) AS c;")
    assert t.to_pylist() == [{"b": "x", "c": decimal.Decimal("2.50")}]
    assert t.schema.field("c").type == pa.decimal128(4, 2)


def test_utility_statements_and_comments(conn):
    conn.execute("DROP TABLE IF EXISTS util")
    t = read_arrow(conn, "CREATE TABLE util (x int)")
    assert t.num_columns == 0 and t.num_rows == 0
    t = read_arrow(conn, "VACUUM util")  # refuses a transaction block: run bare
    assert t.num_columns == 0
    t = read_arrow(conn, "/* a /* nested */ comment */ -- and a line\n (SELECT 1 AS x) ;  ")
    assert t.to_pylist() == [{"x": 1}]
    _assert_healthy(conn)


def test_dml_returning_runs_once(conn):
    conn.execute("DROP TABLE IF EXISTS dml; CREATE TABLE dml (x int)")
    t = read_arrow(conn, "INSERT INTO dml SELECT generate_series(1, 3) RETURNING x")
    assert t.column(0).to_pylist() == [1, 2, 3]
    t = read_arrow(conn, "WITH d AS (DELETE FROM dml WHERE x = 1 RETURNING x) SELECT x FROM d")
    assert t.column(0).to_pylist() == [1]
    assert conn.execute("SELECT count(*) FROM dml").fetchone() == (2,)


def test_errors_are_the_drivers_and_leave_the_connection_usable(conn):
    with pytest.raises(psycopg.errors.UndefinedTable):
        read_arrow(conn, "SELECT * FROM no_such_table")
    _assert_healthy(conn)
    with pytest.raises(psycopg.errors.SyntaxError):
        read_arrow(conn, "SELEC 1")
    _assert_healthy(conn)
    # An error after rows have been streamed.
    with pytest.raises(psycopg.errors.DivisionByZero):
        read_arrow(conn, "SELECT 1 / (50000 - i) FROM generate_series(1, 100000) i")
    _assert_healthy(conn)


def test_duplicate_and_unnamed_columns(conn):
    t = read_arrow(conn, "SELECT 1 AS a, 2 AS a, 3")
    assert t.column_names == ["a", "a", "?column?"]
    assert read_polars(conn, "SELECT 1 AS a, 2 AS a").columns == ["a", "a_1"]


def test_empty_results_keep_their_types(conn):
    t = read_arrow(conn, "SELECT 1::int8 AS a, 'x'::text AS b, 1.5::numeric(5,2) AS c WHERE false")
    assert t.num_rows == 0
    assert t.schema.types == [pa.int64(), pa.string(), pa.decimal128(5, 2)]


# ---------------------------------------------------------------------------
# Transactions and session state
# ---------------------------------------------------------------------------


def test_reads_inside_a_callers_transaction(direct_url):
    with _connect(direct_url, autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE mine (x int)")
        conn.execute("INSERT INTO mine VALUES (1), (2)")
        conn.execute("SET LOCAL DateStyle = 'SQL, DMY'")
        t = read_arrow(conn, "SELECT x, '2024-02-03'::date AS d FROM mine ORDER BY x")
        assert t.column("x").to_pylist() == [1, 2]  # sees the uncommitted rows
        assert t.column("d").to_pylist() == [dt.date(2024, 2, 3)] * 2
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SHOW DateStyle").fetchone() == ("SQL, DMY",)  # restored
        with pytest.raises(psycopg.errors.UndefinedTable):
            read_arrow(conn, "SELECT * FROM nope")
        # the caller's transaction survived the failed read
        assert conn.execute("SELECT count(*) FROM mine").fetchone() == (2,)
        conn.rollback()


def test_non_autocommit_idle_connection_is_left_idle(direct_url):
    with _connect(direct_url, autocommit=False) as conn:
        assert read_arrow(conn, "SELECT 1 AS x").num_rows == 1
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_nothing_prepared_by_name_nothing_left_set(conn):
    read_arrow(conn, "SELECT 1 AS x")
    read_arrow(conn, "SHOW TimeZone")
    list(iter_batches(conn, "SELECT * FROM generate_series(1, 10)", batch_rows=3))
    assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
    assert conn.execute("SHOW IntervalStyle").fetchone() == ("postgres",)


def test_through_the_pooled_url(pooled):
    assert read_arrow(pooled, "SELECT %s::int AS x", [5]).to_pylist() == [{"x": 5}]
    assert read_arrow(pooled, "SHOW server_version").num_rows == 1
    batches = list(iter_batches(pooled, "SELECT i FROM generate_series(1, 25) i", batch_rows=10))
    assert [b.num_rows for b in batches] == [10, 10, 5]
    _assert_healthy(pooled)


# ---------------------------------------------------------------------------
# Streams and Parquet
# ---------------------------------------------------------------------------


def test_iter_batches_sizes_and_counters(conn):
    q = "SELECT i, repeat('x', i % 7) AS s FROM generate_series(1, 1005) i"
    stream = iter_batches(conn, q, batch_rows=100)
    assert isinstance(stream, BatchStream) and stream.delivered == 0
    sizes = []
    for b in stream:
        sizes.append(b.num_rows)
        assert stream.rows_delivered == sum(sizes) and stream.delivered == len(sizes)
    assert sizes == [100] * 10 + [5]
    assert stream.rows == 1005 and stream.bytes > 0 and stream.path == "copy binary"
    assert stream.schema.types == [pa.int32(), pa.string()]
    _assert_healthy(conn)


def test_iter_batches_caps_bytes(conn):
    q = "SELECT repeat('x', 1000) AS s FROM generate_series(1, 200)"
    sizes = [b.num_rows for b in iter_batches(conn, q, batch_rows=10**6, batch_bytes=20_000)]
    assert sum(sizes) == 200 and max(sizes) <= 21


def test_iter_batches_memory_is_bounded(conn):
    q = "SELECT i, md5(i::text) || md5((-i)::text) AS s FROM generate_series(1, 400000) i"
    from neon_notebook.readers._decode import parse_pool

    def arrow_bytes() -> int:
        pools = {pa.default_memory_pool().backend_name: pa.default_memory_pool(),
                 parse_pool().backend_name: parse_pool()}
        return sum(p.bytes_allocated() for p in pools.values())

    peak = 0
    rows = 0
    for b in iter_batches(conn, q, batch_rows=5_000):
        rows += b.num_rows
        peak = max(peak, arrow_bytes())
        del b
    assert peak > 200_000  # the measure sees the batches
    assert rows == 400_000
    # the whole result is ~30 MB of Arrow; a handful of 5,000-row batches is ~2 MB
    assert peak < 12 * 2**20, peak


def test_stream_early_close_cancels_and_leaves_connection_usable(conn, watcher):
    # An SRF in the select list streams (in FROM it would be materialised first).
    stream = iter_batches(conn, "SELECT generate_series(1, 50000000) AS i", batch_rows=1000)
    t0 = time.monotonic()
    with stream:
        first = next(stream)
        assert first.num_rows == 1000
    assert time.monotonic() - t0 < 1
    assert stream.closed
    assert _state(watcher, conn.info.backend_pid) == "idle"
    _assert_healthy(conn)


def test_empty_stream_has_a_schema(conn):
    stream = iter_batches(conn, "SELECT 1::int2 AS a WHERE false")
    assert list(stream) == []
    assert stream.schema.types == [pa.int16()]


def test_to_parquet_round_trip(conn, tmp_path):
    q = ("SELECT i, i::text AS s, (i / 3.0)::numeric(10,4) AS n, now() AS ts,"
         " make_interval(months => i % 3, days => i % 5, secs => i) AS iv, ARRAY[i, NULL] AS a,"
         " CASE WHEN i % 4 = 0 THEN NULL ELSE i % 2 = 0 END AS b"
         " FROM generate_series(1, 2500) i")
    path = tmp_path / "out.parquet"
    assert to_parquet(conn, q, path, batch_rows=1000) == 2500
    back = pq.read_table(path)
    expected = read_arrow(conn, q)
    assert back.num_rows == 2500 and pq.ParquetFile(path).metadata.num_row_groups >= 3
    for name in ("i", "s", "n", "a", "b"):
        assert back.column(name).to_pylist() == expected.column(name).to_pylist(), name
    iv = back.column("iv").to_pylist()[6]  # i = 7
    assert iv == {"months": 1, "days": 2, "nanoseconds": 7 * 10**9}
    assert back.schema.field("n").metadata[b"pg_type"] == b"numeric(10,4)"


def test_to_parquet_interrupted_leaves_no_file(conn, tmp_path):
    path = tmp_path / "never.parquet"

    def stop(rows, nbytes, estimate):
        if rows > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        to_parquet(conn, "SELECT i FROM generate_series(1, 3000000) i", path, progress=stop)
    assert list(tmp_path.iterdir()) == []
    _assert_healthy(conn)


def test_to_parquet_empty_result(conn, tmp_path):
    path = tmp_path / "empty.parquet"
    assert to_parquet(conn, "SELECT 1::int4 AS a WHERE false", path) == 0
    t = pq.read_table(path)
    assert t.num_rows == 0 and t.schema.field("a").type == pa.int32()


# ---------------------------------------------------------------------------
# pandas and polars
# ---------------------------------------------------------------------------

FRAME_QUERY = (
    "SELECT i::int4 AS i, CASE WHEN i = 2 THEN NULL ELSE i * 1.5 END::float8 AS f,"
    " CASE WHEN i = 3 THEN 'NaN'::float8 ELSE 0.5 END AS nanf,"
    " CASE WHEN i = 2 THEN NULL ELSE i::text END AS s, i % 2 = 0 AS b,"
    " (i * 1.25)::numeric(10,2) AS n, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour' AS ts,"
    " '2024-01-01'::date + i AS d, interval '1 day 2 hours' * i AS iv"
    " FROM generate_series(1, 3) i"
)


def test_pandas_numpy_nullable(conn):
    df = read_pandas(conn, FRAME_QUERY)
    assert str(df["i"].dtype) == "Int32" and str(df["f"].dtype) == "Float64"
    assert df["f"].isna().tolist() == [False, True, False]
    # pandas' own convention decides whether NaN is NA in Float64 columns.
    assert df["nanf"].isna().tolist() == [False, False, True]
    with pd.option_context("future.distinguish_nan_and_na", True):
        df2 = read_pandas(conn, FRAME_QUERY)
    assert df2["nanf"].isna().tolist() == [False, False, False]
    assert df2["f"].isna().tolist() == [False, True, False]
    assert isinstance(df["s"].dtype, pd.StringDtype) and df["s"].isna().tolist() == [False, True, False]
    assert str(df["b"].dtype) == "boolean"
    assert df["n"].tolist() == [decimal.Decimal("1.25"), decimal.Decimal("2.50"), decimal.Decimal("3.75")]
    assert df["n"].dtype == pd.ArrowDtype(pa.decimal128(10, 2))
    assert str(df["ts"].dtype).startswith("datetime64[us,")
    assert df["d"].dtype.kind == "M"
    assert df["iv"].tolist()[0] == pd.Timedelta(hours=26)


def test_pandas_pyarrow_backend(conn):
    df = read_pandas(conn, FRAME_QUERY, dtype_backend="pyarrow")
    assert all(isinstance(t, pd.ArrowDtype) for t in df.dtypes)
    assert df["n"].dtype.pyarrow_dtype == pa.decimal128(10, 2)
    assert df["s"].isna().tolist() == [False, True, False]
    assert df["nanf"].isna().tolist() == [False, False, False]  # NaN is not NULL
    assert df["f"].isna().tolist() == [False, True, False]
    with pytest.raises(ValueError, match="dtype_backend"):
        read_pandas(conn, "SELECT 1", dtype_backend="numpy")


def test_pandas_infinity_dates_do_not_crash(conn):
    df = read_pandas(conn, "SELECT 'infinity'::date AS d, '-infinity'::timestamptz AS t")
    assert df["d"].dtype.kind == "M" and not df["d"].isna().any()
    assert not df["t"].isna().any()


def test_polars(conn):
    df = read_polars(
        conn,
        f"SELECT *, 1::numeric(50,2) AS big, interval '1 mon' AS months FROM ({FRAME_QUERY}) AS q",
    )
    assert df.schema["i"] == pl.Int32 and df.schema["s"] == pl.String
    assert df.schema["n"] == pl.Decimal(10, 2)
    assert df.schema["ts"] == pl.Datetime("us", "Etc/UTC") or df.schema["ts"].time_zone in ("UTC", "Etc/UTC")
    assert df.schema["iv"] == pl.Duration("us")
    assert df["iv"].to_list()[0] == dt.timedelta(hours=26)
    assert df.schema["big"] == pl.String and df["big"][0] == "1.00"
    assert df["months"].to_list()[0] == {"months": 1, "days": 0, "nanoseconds": 0}
    assert df["s"].to_list() == ["1", None, "3"]


# ---------------------------------------------------------------------------
# Progress and interrupts
# ---------------------------------------------------------------------------


def test_progress_reports_rows_bytes_and_estimate(conn):
    calls = []
    t = read_arrow(
        conn,
        "SELECT i, md5(i::text) FROM generate_series(1, 300000) i",
        progress=lambda rows, nbytes, est: calls.append((rows, nbytes, est)),
    )
    assert t.num_rows == 300000
    assert calls and calls[-1][0] == 300000
    assert calls[-1][1] > 300000 * 33
    assert all(est == 300000 for _, _, est in calls)  # generate_series' exact estimate
    rows = [r for r, _, _ in calls]
    assert rows == sorted(rows)


def test_progress_on_the_row_path(conn):
    calls = []
    read_arrow(conn, "SHOW TimeZone", progress=lambda *a: calls.append(a))
    assert calls == [(1, len(conn.info.parameter_status("TimeZone")), None)]


SLOW_ROWS = "SELECT i, pg_sleep(0.002) FROM generate_series(1, 100000) i"


def _interrupt_after(seconds: float):
    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return old


def _running(watcher: psycopg.Connection, marker: str) -> int:
    """Server backends still running a query that contains ``marker``."""
    return watcher.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' AND pid <> pg_backend_pid()"
        " AND query LIKE %s",
        [f"%{marker}%"],
    ).fetchone()[0]


@pytest.mark.parametrize("endpoint", ["direct", "pooled"])
@pytest.mark.parametrize(
    "query",
    [SLOW_ROWS, "SELECT pg_sleep(60) AS s"],  # rows trickling in / no row yet
    ids=["while-rows-arrive", "before-the-first-row"],
)
def test_keyboard_interrupt_cancels_on_server(request, watcher, query, endpoint):
    url = request.getfixturevalue(f"{endpoint}_url")
    marker = f"interrupt_{endpoint}_{len(query)}"
    with _connect(url) as conn:
        old = _interrupt_after(0.5)
        t0 = time.monotonic()
        try:
            with pytest.raises(KeyboardInterrupt):
                read_arrow(conn, f"{query} -- {marker}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert time.monotonic() - t0 < 1.5  # 0.5 s until the interrupt, then < 1 s
        assert _running(watcher, marker) == 0
        _assert_healthy(conn)
        assert read_arrow(conn, "SELECT 1 AS x").num_rows == 1


def test_keyboard_interrupt_from_progress_callback(conn, watcher):
    def stop(rows, nbytes, est):
        if rows >= 1000:
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        read_polars(conn, "SELECT generate_series(1, 100000000) AS i", progress=stop)
    assert time.monotonic() - t0 < 1
    assert _state(watcher, conn.info.backend_pid) == "idle"
    _assert_healthy(conn)


def test_interrupt_inside_callers_transaction_keeps_it(direct_url):
    with _connect(direct_url, autocommit=False) as conn:
        conn.execute("CREATE TEMP TABLE keep (x int)")
        conn.execute("INSERT INTO keep VALUES (1)")
        old = _interrupt_after(0.3)
        try:
            with pytest.raises(KeyboardInterrupt):
                read_arrow(conn, "SELECT pg_sleep(30)")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert conn.execute("SELECT count(*) FROM keep").fetchone() == (1,)
        conn.rollback()


def test_connection_error_is_raised_untouched_with_delivery_count(direct_url, watcher):
    conn = _connect(direct_url)
    try:
        stream = iter_batches(conn, "SELECT generate_series(1, 10000000) AS i", batch_rows=1000)
        next(stream)
        assert stream.delivered == 1
        watcher.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            for _ in stream:
                pass
        assert stream.delivered >= 1  # a retry policy must not retry this one
    finally:
        conn.close()


def test_a_thread_may_read_while_another_waits(direct_url):
    # Reads don't use process-wide state: two connections, two threads.
    results = {}

    def work(n):
        with _connect(direct_url) as c:
            results[n] = read_arrow(c, "SELECT i FROM generate_series(1, %s) i", [n * 1000]).num_rows

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {1: 1000, 2: 2000, 3: 3000}


def test_other_client_encodings(direct_url):
    with _connect(direct_url, client_encoding="LATIN1") as conn:
        assert conn.info.encoding == "iso8859-1"
        for prefix in ("", "SELECT 1; "):
            t = read_arrow(conn, prefix + "SELECT 'é\\ü' AS a, %s AS b, ARRAY['ß'] AS c", ["ñ"])
            assert t.to_pylist() == [{"a": "é\\ü", "b": "ñ", "c": ["ß"]}]


def test_table_and_select_into(conn):
    conn.execute("DROP TABLE IF EXISTS src, made; CREATE TABLE src AS SELECT 1 AS x")
    stream = iter_batches(conn, "TABLE src")
    assert stream.read_all().to_pylist() == [{"x": 1}] and stream.path == "copy binary"
    stream = iter_batches(conn, "SELECT x INTO made FROM src")  # COPY refuses SELECT INTO
    assert stream.read_all().num_columns == 0 and stream.path == "rows"
    assert conn.execute("SELECT x FROM made").fetchall() == [(1,)]


def test_using_the_connection_mid_stream_errors_instead_of_hanging(conn):
    stream = iter_batches(conn, "SELECT generate_series(1, 100000) AS i", batch_rows=1000)
    assert next(stream).num_rows == 1000
    with pytest.raises(psycopg.OperationalError, match="another command is already in progress"):
        conn.execute("SELECT 1")
    assert sum(b.num_rows for b in stream) == 99_000  # the stream is unharmed
    _assert_healthy(conn)


def test_time_2400_never_becomes_null_in_frames(conn):
    q = "SELECT v FROM (VALUES ('24:00:00'::time), ('12:00:00.5'), (NULL)) AS x(v)"
    with pytest.warns(readers.TypeFallbackWarning, match="24:00:00"):
        df = read_polars(conn, q)
    assert df["v"].to_list() == [dt.timedelta(hours=24), dt.timedelta(hours=12, microseconds=500000), None]
    with pytest.warns(readers.TypeFallbackWarning):
        pdf = read_pandas(conn, q)
    assert pdf["v"].tolist()[:2] == [pd.Timedelta(hours=24), pd.Timedelta(hours=12, microseconds=500000)]
    # without 24:00 a time stays a time of day
    assert read_polars(conn, "SELECT '12:00'::time AS v").schema["v"] == pl.Time


def test_frames_and_parquet_take_lists_of_awkward_types(conn, tmp_path):
    q = ("SELECT ARRAY['1 day'::interval, NULL] AS days, ARRAY['1 mon'::interval] AS months,"
         " ARRAY[1::numeric(50,2)] AS big, NULL::interval[] AS none")
    df = read_polars(conn, q)
    assert df["days"].to_list() == [[dt.timedelta(days=1), None]]
    assert df["months"].to_list() == [[{"months": 1, "days": 0, "nanoseconds": 0}]]
    assert df["big"].to_list() == [["1.00"]] and df["none"].to_list() == [None]
    pdf = read_pandas(conn, q)
    assert list(pdf["days"][0])[0] == pd.Timedelta(days=1)
    to_parquet(conn, q, tmp_path / "l.parquet")
    back = pq.read_table(tmp_path / "l.parquet")
    assert back.column("months").to_pylist() == [[{"months": 1, "days": 0, "nanoseconds": 0}]]


def test_all_null_and_empty_columns_in_frames(conn):
    q = ("SELECT NULL::time AS t, NULL::interval AS iv, NULL::numeric AS n, NULL::int[] AS a,"
         " NULL::numeric(50,2) AS big, NULL::bytea AS b, NULL::date AS d")
    for where in ("", " WHERE false"):
        df = read_polars(conn, q + where)
        assert df.schema["iv"] == pl.Duration("us") and df.schema["t"] == pl.Time
        pdf = read_pandas(conn, q + where)
        assert len(pdf) == len(df) == (0 if where else 1)
        assert read_arrow(conn, q + where).schema.field("n").type == pa.decimal128(38, 0)


def test_progress_is_rate_limited_while_rows_trickle(conn):
    calls = []
    t0 = time.monotonic()
    read_arrow(conn, "SELECT i, pg_sleep(0.0005) FROM generate_series(1, 2000) i",
               progress=lambda *a: calls.append(time.monotonic()))
    elapsed = time.monotonic() - t0
    assert 2 <= len(calls) <= elapsed / 0.25 + 3  # every 0.25 s at most, and the end
