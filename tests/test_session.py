"""Session on the local compute: cold starts, suspensions, the pooler, settings, secrets."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import psycopg
import pytest

import neon_notebook as nn
from neon_notebook import ComputeState


def password_of(compute) -> str:
    return compute.direct_url.split(":")[2].split("@")[0]


@pytest.fixture
def session_for(make_session):
    """Factory: a Session on a compute's pooled + direct endpoints, closed after the test."""
    def make(compute, **kwargs):
        return make_session(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, **kwargs)

    return make


def test_cold_start_longer_than_connect_timeout(make_compute, session_for, pgbouncer):
    c = make_compute(suspend_after=None, activation_delay=3.5)
    with pytest.raises(psycopg.OperationalError, match="timeout expired"):
        psycopg.connect(c.direct_url, connect_timeout=2)
    c.suspend() if c.state == "active" else None
    c2 = make_compute(suspend_after=None, activation_delay=3.5)
    session = session_for(c2, connect_timeout=2)
    started = time.monotonic()
    report = session.warm_up()
    assert report.attempts >= 2 and report.woke
    assert 3.5 <= report.elapsed < 3.5 + 2.0
    assert time.monotonic() - started < 6
    assert report.server_version.startswith("16")
    with session.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert session.state is ComputeState.ACTIVE
    assert c2.wakes == 1


def test_suspension_between_queries_is_invisible(make_compute, session_for, pgbouncer):
    c = make_compute(suspend_after=None, start_active=True)
    session = session_for(c)
    for role in ("connection", "direct"):
        with getattr(session, role)() as conn:
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        c.suspend()
        with getattr(session, role)() as conn:  # the dead idle connection is not handed out
            assert conn.execute("select 2").fetchone() == (2,)
            if role == "direct":
                assert conn.execute("select pg_backend_pid()").fetchone()[0] != pid
    assert c.wakes == 3


def test_wake_failures_are_retried(make_compute, session_for, pgbouncer):
    c = make_compute(suspend_after=None)
    c.fail_next_wakes(2)
    session = session_for(c)
    report = session.warm_up()
    assert report.attempts == 3
    assert c.status()["failed_wakes"] == 2 and c.wakes == 1


def test_repeated_parametrised_queries_through_the_pooler(compute, session_for, pgbouncer):
    """Raw psycopg fails this (test_local_compute); the session's pooled connections don't."""
    session = session_for(compute)
    with session.connection() as a, session.connection() as b:
        for i in range(12):
            for conn in (a, b):
                assert conn.execute("select %s::int + 1", (i,)).fetchone() == (i + 1,)
                conn.commit()


def test_schema_on_both_endpoints(compute, session_for, pgbouncer):
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        admin.execute('create schema if not exists "Analytics"')
        admin.execute('create table if not exists "Analytics".facts (x int)')
        admin.execute('truncate "Analytics".facts')
        admin.execute('insert into "Analytics".facts values (7)')
    session = session_for(compute, schema="Analytics")
    plain = session_for(compute)
    for _ in range(3):  # interleave with a schema-less client sharing PgBouncer's server connections
        with session.connection() as conn:
            assert conn.execute("show search_path").fetchone() == ('"Analytics"',)
            assert conn.execute("select x from facts").fetchall() == [(7,)]
        with plain.connection() as conn:
            assert conn.execute("show search_path").fetchone() == ('"$user", public',)
        with session.direct() as conn:
            assert conn.execute("show search_path").fetchone() == ('"Analytics"',)
            assert conn.execute("select x from facts").fetchall() == [(7,)]


def test_schema_from_prisma_url(compute, session_for, pgbouncer):
    session = nn.connect(compute.env()["DATABASE_URL"] + "&schema=public&connection_limit=2",
                         direct_url=compute.direct_url, suspend_after=None)
    try:
        assert session.pool_stats()["pooled"]["size"] == 2
        with session.connection() as conn:
            assert conn.execute("show search_path").fetchone() == ("public",)
    finally:
        session.close()


def test_statement_timeout_on_both_endpoints(compute, session_for, pgbouncer):
    session = session_for(compute, statement_timeout=0.5)
    for borrow in (session.connection, session.direct):
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            with borrow() as conn:
                conn.execute("select pg_sleep(5)")
        assert time.monotonic() - started < 3
        with borrow() as conn:  # the pool is healthy afterwards
            assert conn.execute("select 1").fetchone() == (1,)


def test_failed_statement_leaves_no_aborted_transaction(compute, session_for, pgbouncer):
    session = session_for(compute, pool_size=1)
    for borrow in (session.connection, session.direct):
        with pytest.raises(psycopg.errors.UndefinedTable):
            with borrow() as conn:
                conn.execute("select * from no_such_table")
        with borrow() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute("select 1").fetchone() == (1,)


def test_commit_at_exit_and_rollback_on_error(compute, session_for):
    session = session_for(compute)
    with session.direct() as conn:
        conn.execute("create table if not exists commits (x int)")
        conn.execute("truncate commits")
    with session.direct() as conn:
        conn.execute("insert into commits values (1)")
    with pytest.raises(RuntimeError):
        with session.direct() as conn:
            conn.execute("insert into commits values (2)")
            raise RuntimeError("user code failed")
    with session.direct() as conn:
        assert conn.execute("select x from commits").fetchall() == [(1,)]


def test_wrong_password_costs_one_attempt_and_fails_fast(compute, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "wr0ng:p@ss/wörd"
    from urllib.parse import quote
    url = compute.direct_url.replace(password_of(compute), quote(secret, safe=""))
    before = compute.connections
    session = nn.connect(url, suspend_after=None)
    started = time.monotonic()
    with pytest.raises(nn.PermanentConnectError) as err:
        with session.connection():
            pass
    assert time.monotonic() - started < 2
    assert compute.connections - before == 1
    assert "password" in str(err.value).lower()
    assert session.state is ComputeState.ERROR
    for text in (str(err.value), repr(err.value), repr(session), str(session.settings), caplog.text,
                 session.last_error or ""):
        assert secret not in text and quote(secret, safe="") not in text
    session.close()


def test_idle_session_lets_the_compute_sleep(make_compute, pgbouncer):
    c = make_compute(suspend_after=1.0)
    session = nn.connect(c.env()["DATABASE_URL"], direct_url=c.direct_url, suspend_after=1.0)
    try:
        session.warm_up()
        with session.connection() as conn:
            conn.execute("select 1")
        with session.direct() as conn:
            conn.execute("select 1")
        deadline = time.monotonic() + 10
        while c.state != "suspended" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.state == "suspended", "the idle session kept the compute awake"
        wakes, connections = c.wakes, c.connections
        time.sleep(3)  # an idle notebook: nothing may wake it
        assert (c.wakes, c.connections, c.state) == (wakes, connections, "suspended")
        assert session.state is ComputeState.SUSPENDED
        with session.connection() as conn:  # the user runs something
            assert conn.execute("select 3").fetchone() == (3,)
        assert c.wakes == wakes + 1
    finally:
        session.close()


def test_wake_timeout_bounds_the_whole_wait(make_compute):
    c = make_compute(suspend_after=None, activation_delay=20)
    session = nn.connect(c.direct_url, connect_timeout=2, wake_timeout=5, suspend_after=None)
    started = time.monotonic()
    with pytest.raises(nn.WakeTimeout) as err:
        session.warm_up()
    waited = time.monotonic() - started
    assert 4 <= waited < 8
    assert err.value.attempts >= 2
    assert "wake_timeout" in str(err.value)
    assert session.state is ComputeState.ERROR
    session.close()


def test_background_warm_up_notifies_observers(make_compute, session_for, pgbouncer):
    c = make_compute(suspend_after=None, activation_delay=1.0)
    session = session_for(c)
    seen = []
    threads = set()
    session.observe(lambda change: (seen.append(change.state), threads.add(threading.current_thread().name)))
    future = session.warm_up(background=True)
    assert not future.done()
    report = future.result(timeout=20)
    assert report.elapsed >= 1.0
    assert seen[0] is ComputeState.WAKING and seen[-1] is ComputeState.ACTIVE
    assert threads == {"neon-warm-up"}


def test_suspension_is_reported_as_state(make_compute, session_for):
    c = make_compute(suspend_after=None, start_active=True)
    session = session_for(c)
    with pytest.raises(psycopg.OperationalError):
        with session.direct() as conn:
            conn.execute("select 1")
            c.suspend()
            conn.execute("select 1")  # a write or read in flight is never retried silently
    assert session.state is ComputeState.SUSPENDED
    assert "suspended" in session.state_detail


def test_pool_exhaustion_names_size_and_timeout(compute, session_for):
    session = session_for(compute, pool_size=1, pool_timeout=0.5)
    held, release = threading.Event(), threading.Event()

    def hold():  # another thread holds the only connection (this thread's own would fail at once)
        with session.direct():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        started = time.monotonic()
        with pytest.raises(nn.PoolExhausted) as err:
            with session.direct():
                pass
        assert 0.4 <= time.monotonic() - started < 2
    finally:
        release.set()
        holder.join()
    assert "1" in str(err.value) and "0.5" in str(err.value)
    assert isinstance(err.value, psycopg.OperationalError)
    with session.direct() as conn:  # released: usable again
        conn.execute("select 1")


def test_keep_warm_is_bounded(make_compute, session_for, pgbouncer):
    c = make_compute(suspend_after=1.0)
    session = session_for(c, suspend_after=1.0)
    session.keep_warm(minutes=4 / 60)  # 4 seconds
    time.sleep(3.5)
    assert c.state == "active" and c.suspensions == 0
    deadline = time.monotonic() + 10
    while c.state != "suspended" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert c.state == "suspended"


def test_threads_share_a_session(compute, session_for):
    session = session_for(compute, pool_size=3)
    results, errors = [], []

    def work(i):
        try:
            for _ in range(20):
                with session.direct() as conn:
                    results.append(conn.execute("select %s::int", (i,)).fetchone()[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == sorted(i for i in range(6) for _ in range(20))
    assert session.pool_stats()["direct"]["in_use"] == 0
    assert session.pool_stats()["direct"]["idle"] <= 3


def test_dotenv_like_prisma(compute, tmp_path, monkeypatch, pgbouncer):
    env = compute.env()
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / ".env").write_text(
        f'# Prisma\nDATABASE_URL="{env["DATABASE_URL"]}&connect_timeout=10&pool_timeout=3&connection_limit=4"\n'
        f"DIRECT_URL={env['DIRECT_URL']}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)
    session = nn.connect(suspend_after=None)
    try:
        assert session.settings.pool_size == 4 and session.settings.pool_timeout == 3
        assert session.settings.pooled.pooled and not session.settings.direct.pooled
        with session.connection() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with session.direct() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        session.close()


def test_interpreter_exit_is_clean_and_quick(compute):
    script = (
        "import neon_notebook as nn, sys\n"
        f"s = nn.connect({compute.direct_url!r})\n"
        "s.warm_up(background=True).result(10)\n"
        "with s.direct() as c: c.execute('select 1')\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert time.monotonic() - started < 5


def test_password_never_shown(compute, session_for, caplog):
    caplog.set_level(logging.DEBUG)
    secret = password_of(compute)
    session = session_for(compute)
    session.warm_up()
    texts = [repr(session), str(session.settings), repr(session.settings), str(session.warm_up())]
    with pytest.raises(nn.ConfigurationError) as err:
        nn.connect(f"postgresql://postgres:{secret}@127.0.0.1:notaport/postgres")
    texts += [str(err.value), caplog.text]
    for text in texts:
        assert secret not in text


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE"])
def test_password_left_out_of_the_url_is_found_by_libpq(compute, tmp_path, monkeypatch, source):
    secret = password_of(compute)
    url = compute.direct_url.replace(f":{secret}@", "@")
    assert secret not in url
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", secret)
    else:
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:*:*:postgres:{secret}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    with nn.connect(url, suspend_after=None) as session:
        with session.direct() as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)


def test_malformed_url_fails_at_once():
    started = time.monotonic()
    for bad in ("postgresql://u:p@host:99999/db", "mysql://u:p@host/db", "postgresql://u:p@/db",
                "postgresql://u:p@h/db?connection_limit=lots"):
        with pytest.raises(nn.ConfigurationError):
            nn.connect(bad)
    assert time.monotonic() - started < 1


def test_unknown_host_is_permanent():
    session = nn.connect("postgresql://u:pw@no-such-host.invalid/db", suspend_after=None)
    started = time.monotonic()
    with pytest.raises(nn.PermanentConnectError, match="host"):
        with session.direct():
            pass
    assert time.monotonic() - started < 5
    session.close()
