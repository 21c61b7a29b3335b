"""Regression tests for the reader defects of issue #9 (2-6, 8-12, 22, 24d), on the real local compute."""

from __future__ import annotations

import _thread
import datetime as dt
import math
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from readers_support import connect_raw as _connect

import neon_notebook as nn
from neon_notebook import readers
from neon_notebook.readers import (
    CommitUncertain,
    OutputSettingChanged,
    SessionSettingWarning,
    SessionStateRefused,
    UnrepresentableValue,
    UnsupportedStatement,
    iter_batches,
    read_arrow,
    read_pandas,
    read_polars,
    to_parquet,
)


@pytest.fixture
def table(direct_url):
    """A fresh table ``name(i int)`` with rows 1, 2, 3."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with _connect(direct_url) as c:
        c.execute(f"create table {name} (i int)")
        c.execute(f"insert into {name} values (1), (2), (3)")
        yield name
        c.execute(f"drop table if exists {name}")


@pytest.fixture
def session(compute, pgbouncer):
    s = nn.connect(compute.pooled_url, direct_url=compute.direct_url, suspend_after=None)
    yield s
    s.close()


def _healthy(c: psycopg.Connection) -> None:
    assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert c.execute("select 1").fetchone() == (1,)


# -- 2: no session state left on the pooler's server connection ---------------------------------


@pytest.fixture
def schema_table(direct_url):
    """A schema holding a table ``items`` (x = 'schema') beside public.items-less search paths."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    with _connect(direct_url) as c:
        c.execute(f"create schema {schema}")
        c.execute(f"create table {schema}.items (x text)")
        c.execute(f"insert into {schema}.items values ('schema')")
        yield schema
        c.execute(f"drop schema {schema} cascade")


def test_plain_set_on_the_pooled_endpoint_lasts_for_the_read_only(session, compute, schema_table):
    with pytest.warns(SessionSettingWarning, match=r"SET search_path .*SET LOCAL.*direct=True"):
        t = session.read_arrow(f"set search_path = {schema_table}; "
                               "select x, pg_backend_pid() as pid from items")
    assert t.column("x").to_pylist() == ["schema"]
    pid = t.column("pid")[0].as_py()
    # The next client of PgBouncer gets the server connection just released (LIFO).
    with _connect(compute.pooled_url) as other:
        other_pid, path = other.execute("select pg_backend_pid(), current_setting('search_path')").fetchone()
    assert other_pid == pid, "the test needs PgBouncer to hand over the same server connection"
    assert path == '"$user", public'
    # SET SESSION too, and the direct endpoint keeps a plain SET without a warning.
    with pytest.warns(SessionSettingWarning):
        session.read_arrow("set session statement_timeout = '1min'; select 1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert session.read_arrow("set local work_mem = '8MB'; select current_setting('work_mem') as w"
                                  ).column("w").to_pylist() == ["8MB"]
        assert session.read_arrow("set work_mem = '9MB'; select 1 as x", direct=True).num_rows == 1


@pytest.mark.parametrize("statement", [
    "listen some_channel",
    "prepare p as select 1",
    "declare c cursor with hold for select 1",
    "create temp table tmp_x (a int)",
    "select set_config('search_path', 'x', false)",
    "select pg_advisory_lock(42)",
    "set session characteristics as transaction read only",
])
def test_session_state_is_refused_on_the_pooled_endpoint(session, statement):
    with pytest.raises(SessionStateRefused, match="direct endpoint"):
        session.read_arrow(statement)
    # Not fooled by keywords in strings, comments or dollar quotes; ON COMMIT DROP is fine.
    assert session.read_arrow("select 'listen x; set a = 1' as s /* prepare p as */ -- set b\n, "
                              "$q$ set c = 1 $q$ as d").num_rows == 1
    session.read_arrow("create temp table tmp_y (a int) on commit drop; select 1")


@pytest.fixture
def shell(compute, pgbouncer, monkeypatch):
    """An IPython shell with %neon connected to the local compute (pooled URL as it is printed)."""
    from IPython.core.interactiveshell import InteractiveShell

    from neon_notebook.ui.magics import NeonMagics

    monkeypatch.setenv("DATABASE_URL", compute.pooled_url)
    monkeypatch.setenv("DIRECT_URL", compute.direct_url)
    shell = InteractiveShell.instance()
    magics = NeonMagics(shell)
    shell.register_magics(magics)
    shell.run_line_magic("neon", "connect")
    yield shell
    for name in list(magics.sessions):
        magics.sessions.pop(name).close()


def test_sql_magic_set_on_pooled_does_not_leak(shell, compute, schema_table, capsys):
    with warnings.catch_warnings(record=True) as caught:  # %%sql shows warnings as psql does, or raises them
        warnings.simplefilter("always")
        shell.run_cell_magic("sql", "df", f"set search_path = {schema_table};\nselect x from items")
    out = capsys.readouterr()
    shown = out.out + out.err + "".join(str(w.message) for w in caught)
    assert "SET search_path was run as SET LOCAL" in shown
    assert shell.user_ns["df"]["x"].tolist() == ["schema"]
    with _connect(compute.pooled_url) as other:
        assert other.execute("show search_path").fetchone()[0] == '"$user", public'


def test_sql_magic_runs_vacuum_and_refuses_copy_from_stdin(shell, table, capsys):
    from neon_notebook.ui.magics import CellError

    shell.run_cell_magic("sql", "", f"vacuum {table}")
    assert "no rows returned" in capsys.readouterr().out
    shell.run_cell_magic("sql", "--direct", f"create index concurrently on {table} (i)")
    with pytest.raises(CellError, match="FROM STDIN"):
        shell.run_cell_magic("sql", "", f"copy {table} from stdin")
    shell.run_cell_magic("sql", "df", f"select * from {table}")
    assert shell.user_ns["df"]["i"].tolist() == [1, 2, 3]


# -- 3: a text that may have committed is never re-run; 12: lost during describe is retried ------


@pytest.fixture
def own_session(make_compute, pgbouncer):
    c = make_compute(suspend_after=None, start_active=True)
    s = nn.connect(c.pooled_url, direct_url=c.direct_url, suspend_after=None)
    yield c, s
    s.close()


@pytest.mark.parametrize("direct", [False, True])
def test_text_that_committed_is_not_rerun_after_a_suspension(own_session, direct):
    c, s = own_session
    with _connect(c.direct_url) as admin:
        admin.execute("create table writes (i int)")
    threading.Timer(0.8, c.suspend).start()
    with pytest.raises(CommitUncertain, match="not run again") as err:
        s.read_arrow("insert into writes values (1); commit; select pg_sleep(3)", direct=direct)
    assert isinstance(err.value, psycopg.OperationalError)
    with _connect(c.direct_url) as admin:
        assert admin.execute("select count(*) from writes").fetchone() == (1,)
    # A pure SELECT cut the same way is still retried and complete.
    threading.Timer(0.8, c.suspend).start()
    t = s.read_arrow("select i, pg_sleep(0.002) is null as s from generate_series(1, 600) as i",
                     direct=direct)
    assert t.column("i").to_pylist() == list(range(1, 601))


@pytest.mark.parametrize("direct", [False, True])
def test_suspension_during_describe_is_retried(own_session, direct):
    """The read's Parse waits on a lock another client holds; the compute suspends meanwhile."""
    c, s = own_session
    with _connect(c.direct_url) as admin:
        admin.execute("create table if not exists locked (i int)")
        admin.execute("truncate locked; insert into locked values (7)")
    holder = _connect(c.direct_url, autocommit=False)
    holder.execute("lock table locked in access exclusive mode")  # held until the suspension

    def suspend_once_waiting() -> None:
        with _connect(c.direct_url) as watch:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                waiting = watch.execute(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                    "and query like '%describe_probe%' and pid <> pg_backend_pid()").fetchone()[0]
                if waiting:
                    break
                time.sleep(0.05)
        c.suspend()

    thread = threading.Thread(target=suspend_once_waiting)
    thread.start()
    t = s.read_arrow("select i /* describe_probe */ from locked", direct=direct)
    thread.join()
    holder.close()
    assert t.column("i").to_pylist() == [7]
    assert c.suspensions == 1


# -- 4: output settings set by the text itself ---------------------------------------------------


def _psycopg_value(c: psycopg.Connection, text: str):
    """psycopg's decoding of the last result of ``text`` (first row, first column)."""
    cur = c.execute(text)
    while cur.nextset():
        pass
    return cur.fetchone()[0]


@pytest.mark.parametrize("text, oracle", [
    ("set extra_float_digits = 3; select pi() as v", None),
    ("set extra_float_digits = 0; select pi() as v", "extra_float_digits"),
    ("set extra_float_digits = 0; select array[pi()] as v", "extra_float_digits"),
    ("set DateStyle = 'ISO, DMY'; select '04/03/2024'::date as v", None),
    ("set DateStyle = 'German'; select timestamp '2024-03-04 05:06:07' as v", "DateStyle"),
    # psycopg reads intervals in the postgres style only: its oracle runs without the SET.
    ("set IntervalStyle = iso_8601; select interval '-1 day 2 hours 3.5 seconds' as v",
     "select interval '-1 day 2 hours 3.5 seconds'"),
    ("set IntervalStyle = sql_standard; select interval '1 day 2 hours' as v", "IntervalStyle"),
    ("set bytea_output = escape; select '\\x00ff5c27'::bytea as v", None),
    ("set TimeZone = 'Asia/Kolkata'; select timestamptz '2024-01-01 00:00+00' as v", None),
    ("select pi() as v, set_config('extra_float_digits', '0', true)", "select pi()"),  # binary COPY
])
def test_output_setting_set_by_the_text(conn, text, oracle):
    """Exact (equal to psycopg's decoding of the same value), or an error naming the setting."""
    if oracle is None or oracle.startswith("select"):
        expected = _psycopg_value(conn, oracle or text)
        conn.execute("reset all")
        got = read_arrow(conn, text).column("v")[0].as_py()
        if isinstance(expected, dt.timedelta):  # psycopg's months are 30 days
            got = dt.timedelta(days=got.months * 30 + got.days, microseconds=got.nanoseconds // 1000)
        if isinstance(expected, float):
            assert got.hex() == expected.hex()
        else:
            assert got == expected
    else:
        with pytest.raises(OutputSettingChanged, match=oracle):
            read_arrow(conn, text)
    conn.execute("reset all")
    _healthy(conn)


def test_output_setting_changed_after_the_query_is_refused(conn):
    with pytest.raises(OutputSettingChanged, match="before the query"):
        read_arrow(conn, "set extra_float_digits = 0; select pi() as v; set extra_float_digits = 1")
    conn.execute("reset all")
    with pytest.raises(OutputSettingChanged, match="extra_float_digits"):  # COPY's text format
        read_arrow(conn, "select pi() as v, set_config('extra_float_digits', '0', true)", copy_format="text")
    _healthy(conn)


# -- 5: rows without columns ---------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["direct_url", "pooled_url"])
def test_rows_without_columns(request, table, endpoint, tmp_path):
    url = request.getfixturevalue(endpoint)
    with _connect(url) as c:
        assert len(c.execute(f"select from {table}").fetchall()) == 3  # psycopg's count
        t = read_arrow(c, f"select from {table}")
        assert (t.num_rows, t.num_columns) == (3, 0)
        df = read_pandas(c, f"select from {table}")
        assert df.shape == (3, 0) and isinstance(df.index, pd.RangeIndex)
        assert read_polars(c, f"select from {table}").shape == (3, 0)
        with iter_batches(c, f"select from {table}", batch_rows=2) as stream:
            assert sum(b.num_rows for b in stream) == 3
        with pytest.raises(ValueError, match="without columns"):
            to_parquet(c, f"select from {table}", tmp_path / "x.parquet")
        assert list(tmp_path.iterdir()) == []
        assert read_arrow(c, f"select from {table} where false").num_rows == 0
        _healthy(c)


# -- 6: lists in pandas stay exact ---------------------------------------------------------------


def test_read_pandas_lists_are_exact(conn):
    text = ("select array[1, null, 9007199254740993]::int8[] as big, array[null, 2]::int4[] as small, "
            "array['nan'::float8, null, 1.5] as f, array[true, null] as b, null::int8[] as none")
    expected = conn.execute(text).fetchone()
    df = read_pandas(conn, text)
    for name, want in zip(df.columns, expected):
        got = df[name][0]
        got = None if got is None or got is pd.NA else list(got)
        if want is None:
            assert got is None, name
            continue
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            if isinstance(w, float) and math.isnan(w):
                assert isinstance(g, float) and math.isnan(g), name
            else:
                assert g == w and type(g) is type(w) or (g is None and w is None), (name, g, w)
    assert df["big"][0][2] == 9007199254740993


# -- 8 / 25b: COPY FROM STDIN and TO STDOUT ------------------------------------------------------


def test_copy_from_stdin_and_to_stdout_give_clear_errors(conn, table):
    started = time.monotonic()
    with pytest.raises(UnsupportedStatement, match="FROM STDIN"):
        read_arrow(conn, f"copy {table} from stdin")
    with pytest.raises(UnsupportedStatement, match=r"read_arrow\(\"select \* from t\"\)"):
        read_pandas(conn, f"copy {table} to stdout")
    with pytest.raises(UnsupportedStatement):
        read_arrow(conn, f"select 1; copy {table} from stdin")
    assert time.monotonic() - started < 5
    _healthy(conn)
    # A COPY to a server file or from a query is not refused.
    assert read_arrow(conn, "select 'copy x from stdin' as s").num_rows == 1


def test_settle_ends_an_unexpected_copy_in(conn, table):
    """If a COPY FROM STDIN reached the server anyway, settling the connection ends it."""
    from neon_notebook.readers._scope import settle

    conn.pgconn.send_query(f"copy {table} from stdin".encode())
    while conn.pgconn.is_busy():
        conn.pgconn.consume_input()
    res = conn.pgconn.get_result()
    assert res.status == psycopg.pq.ExecStatus.COPY_IN
    settle(conn)
    _healthy(conn)


# -- 9: lazy imports from several threads --------------------------------------------------------


def test_concurrent_first_reads_in_a_fresh_process(direct_url):
    script = textwrap.dedent(f"""
        import threading, psycopg
        from neon_notebook.readers import read_arrow
        conns = [psycopg.connect({direct_url!r}, autocommit=True) for _ in range(6)]
        barrier, errors = threading.Barrier(6), []
        def read(c):
            barrier.wait()
            try:
                t = read_arrow(c, "select 1.5::float8 as x, 'a'::text as y, array[1] as z", copy_format="text")
                assert t.num_rows == 1
            except BaseException as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=read, args=(c,)) for c in conns]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(errors)
        raise SystemExit(1 if errors else 0)
    """)
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- 10: interrupts from another thread ----------------------------------------------------------


@pytest.mark.parametrize("query", [
    "select pg_sleep(5) /* interrupt_probe_copy */",
    "select 1; select pg_sleep(5) /* interrupt_probe_rows */",
])
def test_interrupt_main_cancels_a_read_waiting_for_its_first_byte(conn, direct_url, query):
    timer = threading.Timer(0.5, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        read_arrow(conn, query)
    assert time.monotonic() - started < 1.5
    marker = query.split("/* ")[1].split(" */")[0]
    with _connect(direct_url) as watch:
        deadline = time.monotonic() + 1
        while (running := watch.execute(
                "select count(*) from pg_stat_activity where state = 'active' and query like %s "
                "and pid <> pg_backend_pid()", [f"%{marker}%"]).fetchone()[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert running == 0
    _healthy(conn)


def test_interrupt_main_cancels_a_read_waiting_in_describe(conn, direct_url, table):
    with _connect(direct_url, autocommit=False) as holder:
        holder.execute(f"lock table {table} in access exclusive mode")
        threading.Timer(0.5, _thread.interrupt_main).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            read_arrow(conn, f"select * from {table}")
        assert time.monotonic() - started < 1.5
    _healthy(conn)


# -- 11: statements that refuse a transaction block ----------------------------------------------


@pytest.mark.parametrize("autocommit", [True, False])
def test_vacuum_and_concurrent_index_run_bare(direct_url, table, autocommit):
    with _connect(direct_url, autocommit=autocommit) as c:
        assert read_arrow(c, f"vacuum {table}").num_rows == 0
        read_pandas(c, f"create index concurrently {table}_i on {table} (i)")
        assert c.autocommit is autocommit
        assert c.execute("select count(*) from pg_indexes where indexname = %s",
                         [f"{table}_i"]).fetchone() == (1,)
        c.rollback()
        _healthy(c)
        # Inside the caller's transaction it cannot run: a clear error, the transaction intact.
        if not autocommit:
            c.execute("select 1")
            with pytest.raises(UnsupportedStatement, match="inside a transaction"):
                read_arrow(c, f"vacuum {table}")
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            c.rollback()


@pytest.mark.parametrize("direct", [False, True])
def test_vacuum_through_the_session(session, table, direct):
    assert session.read_arrow(f"vacuum analyze {table}", direct=direct).num_rows == 0
    db = f"db_{uuid.uuid4().hex[:8]}"
    session.read_arrow(f"create database {db}", direct=direct)
    session.read_arrow(f"drop database {db}", direct=direct)


def test_vacuum_on_pooled_with_schema_says_how(compute, pgbouncer, table):
    s = nn.connect(compute.pooled_url, direct_url=compute.direct_url, schema="public", suspend_after=None)
    try:
        with pytest.raises(UnsupportedStatement, match="direct=True"):
            s.read_arrow(f"vacuum {table}")
        assert s.read_arrow(f"vacuum {table}", direct=True).num_rows == 0
    finally:
        s.close()


# -- 22: values past Arrow's range: exact text in read_*, a named error in a fixed stream --------

PAST_RANGE = [
    ("'294270-01-01 00:00:00.5'::timestamp", "timestamp"),
    ("'294270-01-01 00:00:00+00'::timestamptz", "timestamptz"),
    ("make_interval(years => -2, days => 3, hours => 2600000)", "interval"),
]


@pytest.mark.parametrize("copy_format", ["binary", "text"])
@pytest.mark.parametrize("expr, pgname", PAST_RANGE)
def test_values_past_arrows_range_are_exact_text(conn, expr, pgname, copy_format):
    conn.execute("set timezone = 'UTC'")
    query = (f"select i, case when i = 2 then {expr} when i = 3 then null "
             f"else {expr.replace('294270', '2024').replace('2600000', '5')} end as late "
             "from generate_series(1, 4) as i")
    expected = [r[0] for r in conn.execute(f"select late::text from ({query}) q order by i").fetchall()]
    for text in (query, "select 1; " + query):  # COPY, then the row path
        with pytest.warns(readers.TypeFallbackWarning, match=rf"column 'late' \({pgname}\).*past Arrow's range"):
            t = read_arrow(conn, text, copy_format=copy_format)
        assert t.schema.field("late").type == "string"
        assert t.column("late").to_pylist() == expected
    with pytest.warns(readers.TypeFallbackWarning):
        assert read_pandas(conn, query)["late"].tolist()[1] == expected[1]
    # A stream whose first batch fixed the type names the column and says what to do.
    with iter_batches(conn, query, batch_rows=1, copy_format=copy_format) as stream:
        next(stream)
        with pytest.raises(UnrepresentableValue, match=rf"column 'late' \({pgname}\).*::text"):
            list(stream)
    conn.execute("reset timezone")
    _healthy(conn)


# -- 24d: the query argument ---------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_arrow, read_pandas, read_polars, iter_batches])
def test_query_must_be_sql_text(conn, reader):
    with pytest.raises(TypeError, match="str, bytes or psycopg.sql.Composable"):
        reader(conn, None)
    with pytest.raises(TypeError, match="not int"):
        to_parquet(conn, 42, "x.parquet")
    _healthy(conn)


def test_readers_exports_the_new_errors():
    assert issubclass(SessionSettingWarning, UserWarning)
    assert readers.SessionStateRefused is SessionStateRefused


def test_a_long_parameter_list_is_not_lexed_whole():
    """Lexing is Python-speed: a plain query's megabytes of bound values are skipped."""
    from neon_notebook.readers._guard import Text

    big = "select * from t where id = any(array[" + ",".join(map(str, range(200_000))) + "])"
    started = time.perf_counter()
    text = Text.of(big)
    assert time.perf_counter() - started < 0.3
    assert text.statements[0].first(2) == ("select", "*") and not text.may_commit
    # A semicolon or a name the checks need sends it through the lexer.
    assert len(Text.of("select 1; select 'a;b'").statements) == 2
    assert Text.of("select pg_advisory_lock(1)").statements[0].has_words("pg_advisory_lock", "(")


# -- 3 (follow-up): a read that wrote nothing is whole when its COMMIT's answer is lost ----------
# The read's COMMIT goes in one message with a probe of whether the transaction was given an
# xid; a cut after the probe's answer loses only the COMMIT's own answer.

#: What the server sends for the COMMIT: CommandComplete("COMMIT") and ReadyForQuery.
COMMIT_ANSWER = (1 + 4 + len(b"COMMIT\0")) + (1 + 4 + 1)
#: The probe's result before it: RowDescription (one bool column), DataRow, CommandComplete("SELECT 1").
PROBE_ANSWER = (1 + 4 + 2 + len(b"neon_notebook_wrote_nothing\0") + 18) + (1 + 4 + 2 + 4 + 1) + (1 + 4 + 9)


@pytest.fixture
def cutting(compute, pgbouncer):
    yield compute
    compute.cut_after(None)


def _cut_read(compute, endpoint: str, read, back: int = COMMIT_ANSWER - 1):
    """``read(session)`` on a fresh session, clean (its bytes counted); then on another fresh
    session whose connection is cut ``back`` bytes before the end (default: inside the COMMIT's
    answer), every new connection alike, so a retry would be cut too.

    Returns the clean result, the cut run's result (or its exception), its session (open) and
    how many connections were cut."""
    direct = endpoint == "direct"
    compute.cut_after(1 << 40, endpoint=endpoint)  # counts, never cuts
    before = compute.tapped_bytes
    with nn.connect(compute.pooled_url, direct_url=compute.direct_url, suspend_after=None) as s:
        clean = read(s, direct)
    total = compute.tapped_bytes - before
    compute.cut_after(total - back, endpoint=endpoint)
    cuts = compute.cuts
    s = nn.connect(compute.pooled_url, direct_url=compute.direct_url, suspend_after=None)
    try:
        outcome = read(s, direct)
    except Exception as exc:
        outcome = exc
    compute.cut_after(None)
    return clean, outcome, s, compute.cuts - cuts


_ITEMS = "select i, md5(i::text) as m, i * 0.5 as f from generate_series(1, 3000) as i"


def _batches(s, direct):
    return pa.Table.from_batches(list(s.iter_batches(_ITEMS, batch_rows=500, direct=direct, progress=False)))


def _parquet(path):
    def read(s, direct):
        import pyarrow.parquet as pq

        assert s.to_parquet(_ITEMS, path, direct=direct, progress=False) == 3000
        assert not path.with_name(path.name + ".partial").exists()
        return pq.read_table(path)

    return read


@pytest.mark.parametrize("endpoint", ["pooled", "direct"])
@pytest.mark.parametrize("reader", ["copy", "copy_text", "rows", "iter_batches", "to_parquet"])
def test_a_read_whose_commit_answer_is_lost_is_whole(cutting, endpoint, reader, tmp_path):
    read = {
        "copy": lambda s, direct: s.read_arrow(_ITEMS, direct=direct, progress=False),
        "copy_text": lambda s, direct: s.read_arrow(_ITEMS, direct=direct, progress=False, copy_format="text"),
        "rows": lambda s, direct: s.read_arrow("select 1 as w; " + _ITEMS, direct=direct, progress=False),
        "iter_batches": _batches,
        "to_parquet": _parquet(tmp_path / "out.parquet"),
    }[reader]
    clean, outcome, s, cuts = _cut_read(cutting, endpoint, read)
    try:
        assert cuts == 1
        assert isinstance(outcome, pa.Table), f"the read failed: {outcome!r}"
        assert clean.num_rows == 3000 and outcome.equals(clean)
        # The session saw its connection die; the pool dropped it; the next read works.
        assert s.state is nn.ComputeState.SUSPENDED
        assert all(p["in_use"] == 0 and p["idle"] == 0 for p in s.pool_stats().values())
        assert s.read_arrow("select 1 as x", direct=endpoint == "direct", progress=False).num_rows == 1
        assert s.state is nn.ComputeState.ACTIVE and s.last_error is None
    finally:
        s.close()


@pytest.mark.parametrize("endpoint", ["pooled", "direct"])
@pytest.mark.parametrize("path", ["rows", "copy"])
def test_a_read_that_wrote_is_not_rerun_when_its_commit_answer_is_lost(cutting, direct_url, table, endpoint,
                                                                       path):
    with _connect(direct_url) as admin:
        admin.execute(f"create function {table}_put(v int) returns int volatile language sql "
                      f"as 'insert into {table} values (v) returning i'")
    text = {"rows": f"insert into {table} values (%s) returning i", "copy": f"select {table}_put(%s) as i"}[path]
    values = iter([4, 5])  # the same length on the wire: the cut lands at the same place
    try:
        clean, outcome, s, cuts = _cut_read(cutting, endpoint, lambda s, direct: s.read_arrow(
            text, [next(values)], direct=direct, progress=False))
        s.close()
        assert clean.column("i").to_pylist() == [4]
        assert isinstance(outcome, CommitUncertain), outcome
        assert "not run again" in str(outcome) and "COMMIT had been sent" in str(outcome)
        assert cuts == 1  # one attempt: a retry's connection would have been cut too
        with _connect(direct_url) as admin:
            assert admin.execute(f"select count(*) from {table} where i = 5").fetchone()[0] in (0, 1)
    finally:
        with _connect(direct_url) as admin:
            admin.execute(f"drop function {table}_put(int)")


@pytest.mark.parametrize("endpoint", ["pooled", "direct"])
def test_a_read_whose_probe_answer_is_lost_stays_uncertain(cutting, endpoint):
    """Cut inside the probe's own answer: whether the text wrote is not known, so CommitUncertain."""
    clean, outcome, s, cuts = _cut_read(cutting, endpoint, lambda s, direct: s.read_arrow(
        _ITEMS, direct=direct, progress=False), back=COMMIT_ANSWER + PROBE_ANSWER - 3)
    s.close()
    assert clean.num_rows == 3000
    assert isinstance(outcome, CommitUncertain) and cuts == 1


@pytest.mark.parametrize("autocommit", [True, False])
def test_commit_with_probe_on_a_plain_connection(cutting, autocommit):
    """The readers' own API: BEGIN ... COMMIT (autocommit) or psycopg's implicit transaction."""
    def run(cut: int | None):
        cutting.cut_after(cut if cut is not None else 1 << 40, endpoint="direct")
        before = cutting.tapped_bytes
        c = _connect(cutting.direct_url, autocommit=autocommit)
        t = read_arrow(c, _ITEMS)
        return c, t, cutting.tapped_bytes - before

    c, clean, total = run(None)
    assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # psycopg agrees
    _healthy(c)
    assert read_arrow(c, "select txid_current() as x").num_rows == 1  # a write, probed, committed
    c.close()
    c, t, _ = run(total - COMMIT_ANSWER + 1)
    assert t.equals(clean) and c.broken
    c.close()


@pytest.mark.parametrize("endpoint", ["pooled", "direct"])
def test_a_read_that_notifies_is_not_probed(cutting, endpoint):
    """NOTIFY takes its xid at COMMIT (the probe would say "nothing written"): uncertain, as before."""
    clean, outcome, s, cuts = _cut_read(cutting, endpoint, lambda s, direct: s.read_arrow(
        "select pg_notify('nn_probe', 'x') as n", direct=direct, progress=False), back=COMMIT_ANSWER - 1)
    s.close()
    assert clean.num_rows == 1
    assert isinstance(outcome, CommitUncertain) and cuts == 1


@pytest.mark.parametrize("endpoint", ["pooled", "direct"])
def test_a_read_whose_backend_ended_before_its_commit_is_retried(compute, pgbouncer, endpoint):
    """The rows all arrived, the server ended the backend while the client still read them: the
    COMMIT was never sent, so nothing committed and the read is retried (no CommitUncertain)."""
    killed = []

    def kill_once(rows, nbytes, estimate):
        if not killed:
            with _connect(compute.direct_url) as admin:
                killed.extend(admin.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where query like "
                    "'%ended_before_commit%' and pid <> pg_backend_pid()").fetchall())
            time.sleep(0.2)

    with nn.connect(compute.pooled_url, direct_url=compute.direct_url, suspend_after=None) as s:
        t = s.read_arrow("select i /* ended_before_commit */ from generate_series(1, 10) as i",
                         direct=endpoint == "direct", progress=kill_once)
    assert killed == [(True,)]
    assert t.column("i").to_pylist() == list(range(1, 11))
