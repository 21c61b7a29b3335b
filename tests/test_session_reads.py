"""Reads through Session: cold starts, suspensions mid-read, interrupts, both endpoints."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import neon_notebook as nn

SLOW_ROWS = "select i, pg_sleep(0.002) is null as slept from generate_series(1, 2000) as i"


@pytest.fixture
def session_on(make_compute, make_session):
    """Factory: a compute of its own (``make_compute``'s settings) and a Session on it."""
    def make(**compute_kwargs):
        compute_kwargs.setdefault("suspend_after", None)
        c = make_compute(**compute_kwargs)
        return c, make_session(c.env()["DATABASE_URL"], direct_url=c.direct_url)

    return make


@pytest.mark.parametrize("direct", [False, True])
def test_read_waits_for_a_cold_start(session_on, pgbouncer, direct):
    c, s = session_on(activation_delay=1.0)
    started = time.monotonic()
    table = s.read_arrow("select %s::text as greeting", ["hello"], direct=direct)
    assert table.to_pylist() == [{"greeting": "hello"}]
    assert time.monotonic() - started >= 1.0 and c.wakes == 1


@pytest.mark.parametrize("direct", [False, True])
def test_read_cut_before_delivery_is_retried_once(session_on, pgbouncer, direct):
    c, s = session_on(start_active=True)
    threading.Timer(0.5, c.suspend).start()
    table = s.read_arrow(SLOW_ROWS, direct=direct)  # suspension hits mid-COPY; nothing delivered yet
    assert table.num_rows == 2000 and table.column("i").to_pylist() == list(range(1, 2001))
    assert c.suspensions == 1 and c.wakes == 2


def test_read_retried_only_once(session_on):
    c, s = session_on(start_active=True)
    for delay in (0.5, 1.5):  # the retry is cut too
        threading.Timer(delay, c.crash).start()
    with pytest.raises(psycopg.OperationalError):
        s.read_arrow("select i, pg_sleep(0.01) from generate_series(1, 1000) as i", direct=True)


def test_batches_cut_after_delivery_raise_result_interrupted(session_on):
    c, s = session_on(start_active=True)
    batches = s.iter_batches(SLOW_ROWS, batch_rows=100, direct=True)
    first = next(batches)
    assert first.num_rows == 100
    c.suspend()
    with pytest.raises(nn.ResultInterrupted) as err:
        for _ in batches:
            pass
    assert err.value.rows >= 100
    assert "incomplete" in str(err.value)
    assert isinstance(err.value, psycopg.OperationalError)
    assert s.read_arrow("select 1 as x", direct=True).to_pylist() == [{"x": 1}]  # usable again


def test_batches_cut_before_delivery_are_retried(session_on):
    c, s = session_on(start_active=True)
    threading.Timer(0.5, c.suspend).start()
    rows = sum(b.num_rows for b in s.iter_batches(SLOW_ROWS, batch_rows=5000, direct=True))
    assert rows == 2000 and c.wakes == 2


def test_parquet_is_not_left_half_written(session_on, tmp_path):
    import pyarrow.parquet as pq

    c, s = session_on(start_active=True)
    path = tmp_path / "out.parquet"
    for delay in (0.5, 1.5):
        threading.Timer(delay, c.crash).start()
    with pytest.raises(psycopg.OperationalError):
        s.to_parquet("select i, pg_sleep(0.01) from generate_series(1, 1000) as i", path, direct=True)
    assert list(tmp_path.iterdir()) == []
    assert s.to_parquet("select i from generate_series(1, 10) as i", path, direct=True) == 10
    assert pq.read_table(path).column("i").to_pylist() == list(range(1, 11))


@pytest.mark.parametrize("direct", [False, True])
def test_interrupt_cancels_on_the_server_and_keeps_the_pool_healthy(compute, direct, pgbouncer):
    s = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, suspend_after=None)
    marker = f"interrupt_probe_{int(direct)}"

    def interrupt(rows, nbytes, estimate):
        if rows:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        s.read_arrow(f"select i, pg_sleep(0.001), '{marker}' from generate_series(1, 100000) as i",
                     direct=direct, progress=interrupt)
    assert time.monotonic() - started < 5
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            running = admin.execute(
                "select count(*) from pg_stat_activity where query like %s and state = 'active' "
                "and pid <> pg_backend_pid()", [f"%{marker}%"]).fetchone()[0]
            if not running:
                break
            time.sleep(0.05)
        assert running == 0, "the query kept running on the server"
    assert s.pool_stats()["direct" if direct else "pooled"]["in_use"] == 0
    assert s.read_arrow("select 2 as x", direct=direct).to_pylist() == [{"x": 2}]
    s.close()


def test_reads_record_last_query(compute, pgbouncer):
    s = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, suspend_after=None)
    df = s.read_pandas("select i, md5(i::text) from generate_series(1, 5000) as i")
    assert len(df) == 5000
    assert s.last_query.rows == 5000 and s.last_query.bytes > 5000 * 30 and s.last_query.seconds > 0
    pl_df = s.read_polars("select i from generate_series(1, 7) as i where i > %s", [3])
    assert pl_df["i"].to_list() == [4, 5, 6, 7]
    s.close()


def test_session_reads_take_copy_format(compute, pgbouncer, tmp_path):
    s = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, suspend_after=None)
    query = "select i, i % 3 = 0 as third, md5(i::text) as h from generate_series(1, 4000) as i"
    binary = s.read_polars(query)
    binary_bytes = s.last_query.bytes
    assert s.read_polars(query, copy_format="text").equals(binary)
    assert s.last_query.bytes < binary_bytes  # the text format was on the wire
    assert s.read_arrow(query, copy_format="text").equals(s.read_arrow(query))
    assert s.read_pandas(query, copy_format="text").equals(s.read_pandas(query))
    batches = list(s.iter_batches(query, batch_rows=1000, copy_format="text"))
    assert [b.num_rows for b in batches] == [1000] * 4
    assert s.to_parquet(query, tmp_path / "q.parquet", copy_format="text") == 4000
    s.close()


def test_reads_honour_schema_and_statement_timeout_on_both_endpoints(compute, pgbouncer):
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        admin.execute("create schema if not exists reads_schema")
        admin.execute("create table if not exists reads_schema.facts as select 11 as x")
    s = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, suspend_after=None,
                   schema="reads_schema", statement_timeout=0.5)
    try:
        for direct in (False, True):
            assert s.read_arrow("select x from facts", direct=direct).to_pylist() == [{"x": 11}]
            assert s.read_polars("show search_path", direct=direct).item().strip('"') == "reads_schema"
            with pytest.raises(psycopg.errors.QueryCanceled):
                s.read_arrow("select pg_sleep(3)", direct=direct)
    finally:
        s.close()


def test_module_level_reads_use_a_default_session(compute, pgbouncer, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", compute.env()["DATABASE_URL"])
    monkeypatch.setenv("DIRECT_URL", compute.direct_url)
    monkeypatch.chdir(tmp_path)  # no .env file of the project's
    nn.set_default_session(None)
    try:
        query = "select i, md5(i::text) as h from generate_series(1, 1000) as i where i > %s"
        made = nn.default_session()
        assert nn.default_session() is made and not made.closed  # made once, from the environment
        assert nn.read_polars(query, [10]).equals(made.read_polars(query, [10]))
        assert nn.read_arrow(query, [10]).num_rows == 990
        assert len(nn.read_pandas(query, [10], dtype_backend="pyarrow")) == 990
        assert sum(b.num_rows for b in nn.iter_batches(query, [10], batch_rows=100)) == 990
        assert nn.to_parquet(query, tmp_path / "q.parquet", [10]) == 990
        made.close()
        remade = nn.default_session()
        assert remade is not made  # a closed default made here is replaced
        remade.close()
        own = nn.connect(compute.direct_url, suspend_after=None)
        nn.set_default_session(own)
        assert nn.default_session() is own and nn.read_arrow("select 1 as x").num_rows == 1
        own.close()
    finally:
        nn.default_session().close()
        nn.set_default_session(None)
