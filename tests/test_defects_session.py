"""Regression tests for issue #9's session, settings, pool and retry defects (1, 7, 13, 16-18, 21, 23-26)."""

from __future__ import annotations

import _thread
import gc
import socket
import threading
import time
import uuid
import weakref
from contextlib import contextmanager

import psycopg
import pytest

import neon_notebook as nn
from neon_notebook import ComputeState
from neon_notebook._config import resolve

FAKE_PW = "pw"  # made-up credentials: these tests never connect

SECRET = "Sup3r-s3cret-pw"


@pytest.fixture
def sessions(make_session):
    """Factory for sessions closed after the test: ``sessions(url, **kwargs)``."""
    return make_session


def with_params(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (refuses connections)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backends(compute, application_name: str) -> int:
    """Server processes PostgreSQL runs for clients named ``application_name``."""
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        return admin.execute("select count(*) from pg_stat_activity where application_name = %s",
                             (application_name,)).fetchone()[0]


@pytest.fixture(scope="module")
def schema_table(compute):
    """A table ``nn_defects.items`` whose rows differ from ``public.items``'."""
    with psycopg.connect(compute.direct_url, autocommit=True) as conn:
        conn.execute("create schema if not exists nn_defects")
        conn.execute("create table if not exists nn_defects.items (v text)")
        conn.execute("truncate nn_defects.items")
        conn.execute("insert into nn_defects.items values ('from nn_defects')")
        conn.execute("create table if not exists public.items (v text)")
    return "nn_defects"


# --- 1: autocommit on a pooled connection with schema=/statement_timeout= --------------------


def test_pooled_autocommit_with_per_transaction_settings_is_refused(compute, pgbouncer, sessions, schema_table):
    session = sessions(compute.env()["DATABASE_URL"] + "&schema=nn_defects", direct_url=compute.direct_url)
    with session.connection() as conn:
        with pytest.raises(nn.ConfigurationError, match="autocommit") as err:
            conn.autocommit = True
        assert "direct()" in str(err.value) and "schema" in str(err.value)
        assert not conn.autocommit
        assert conn.execute("select v from items").fetchall() == [("from nn_defects",)]
    with session.connection() as conn:  # the same connection, back from the pool
        with pytest.raises(nn.ConfigurationError):
            conn.set_autocommit(True)
    with session.direct() as conn:  # the direct endpoint keeps its session settings in autocommit
        conn.autocommit = True
        assert conn.execute("select v from items").fetchall() == [("from nn_defects",)]
    with session.connection() as conn:  # and the pool's reset left it usable
        assert conn.execute("select v from items").fetchall() == [("from nn_defects",)]


def test_pooled_autocommit_without_per_transaction_settings_stays_allowed(compute, pgbouncer, sessions):
    session = sessions(compute.env()["DATABASE_URL"], direct_url=compute.direct_url)
    with session.connection() as conn:
        conn.autocommit = True
        assert conn.execute("select 1").fetchone() == (1,)
    with session.connection() as conn:  # the pool turned autocommit off again
        assert not conn.autocommit


# --- 7: a PgBouncer URL not recognisable as one -------------------------------------------


def _hammer(session, threads=6, rounds=15):
    errors = []

    def work(i):
        try:
            for _ in range(rounds):
                with session.connection() as conn:
                    assert conn.execute("select %s::int + 0", (i,)).fetchone() == (i,)
        except Exception as exc:  # reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def test_local_pooled_url_alone_works_from_threads(compute, pgbouncer, sessions, schema_table):
    session = sessions(compute.pooled_url, pool_size=6, schema="nn_defects")
    assert _hammer(session) == []
    with session.connection() as conn:
        assert conn.pooled is True
        assert conn.prepare_threshold is None
        assert conn.execute("select v from items").fetchall() == [("from nn_defects",)]


def test_cli_urls_pooled_is_pooler_safe_direct_is_direct(compute, pgbouncer, sessions, monkeypatch, tmp_path):
    # `python -m neon_notebook local` prints DATABASE_URL=<pooled_url> and DIRECT_URL=<direct_url>.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", compute.pooled_url)
    monkeypatch.setenv("DIRECT_URL", compute.direct_url)
    session = sessions(None, pool_size=6)
    assert session.settings.pooled.pooled and not session.settings.direct.pooled
    assert _hammer(session) == []
    with session.connection() as conn:
        assert conn.pooled is True
    with session.direct() as conn:
        assert conn.pooled is False and conn.prepare_threshold is not None


@pytest.mark.parametrize(
    ("url", "direct_url", "pooled", "direct"),
    [
        ("postgresql://u:pw@db.example.com/app", None, True, True),  # unknown: pooler-safe
        ("postgresql://u:pw@db.example.com/app?pgbouncer=false", None, False, False),  # said so
        ("postgresql://u:pw@db.example.com/app", "postgresql://u:pw@db.example.com:5433/app", True, False),
        (None, "postgresql://u:pw@db.example.com/app", False, False),  # only a direct URL
        (f"postgresql://u:{FAKE_PW}@ep-a-1.us-east-2.aws.neon.tech/db", None, True, False),
        (f"postgresql://u:{FAKE_PW}@ep-a-1-pooler.us-east-2.aws.neon.tech/db", None, True, False),
    ],
)
def test_only_known_direct_endpoints_are_direct(url, direct_url, pooled, direct):
    s = resolve(url, direct_url=direct_url, environ={}) if url else resolve(direct_url=direct_url, environ={})
    assert (s.pooled.pooled, s.direct.pooled) == (pooled, direct)


# --- 13: keep_warm validation and interval ---------------------------------------------------


@pytest.mark.parametrize("minutes", [float("nan"), float("inf"), -1, "5", True, None])
def test_keep_warm_refuses_what_is_not_a_finite_number_of_minutes(compute, sessions, minutes):
    session = sessions(compute.direct_url)
    with pytest.raises((TypeError, ValueError)) as err:
        session.keep_warm(minutes)
    assert "minutes" in str(err.value)
    assert not [t for t in threading.enumerate() if t.name == "neon-keep-warm" and t.is_alive()]


def test_keep_warm_pings_at_the_documented_interval(compute, sessions):
    name = f"kw-{uuid.uuid4().hex[:8]}"
    session = sessions(with_params(compute.direct_url, application_name=name), suspend_after=0.6)
    session.keep_warm(1.2 / 60)  # 1.2 s, one ping per suspend_after / 3 = 0.2 s
    seen = set()
    ends = time.monotonic() + 2.0
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        while time.monotonic() < ends:
            for (start,) in admin.execute(
                    "select query_start from pg_stat_activity where application_name = %s"
                    " and query_start is not null", (name,)):
                seen.add(start)
            time.sleep(0.01)
    # A ping is BEGIN, an empty query and COMMIT within a few ms: count clusters of starts.
    starts = sorted(s.timestamp() for s in seen)
    pings = 1 + sum(b - a > 0.1 for a, b in zip(starts, starts[1:]))
    gaps = [b - a for a, b in zip(starts, starts[1:]) if b - a > 0.1]
    assert 3 <= pings <= 6, starts
    assert all(0.15 <= g <= 0.5 for g in gaps), gaps  # every 0.2 s, not in a tight loop
    session.keep_warm(0)


# --- 16: an unreferenced session is collected and closes its connections --------------------


def assert_collected(ref: weakref.ReferenceType) -> None:
    """The referent of ``ref`` is garbage once collected (closed first if not, so nothing leaks)."""
    gc.collect()
    alive = ref()
    if alive is not None:
        alive.close()
    assert alive is None, "the session was not garbage-collected"


def test_unreferenced_session_is_collected_and_closes_its_connections(compute):
    name = f"gc-{uuid.uuid4().hex[:8]}"
    # Only the direct connections are named: PgBouncer's server connections outlive their clients.
    session = nn.connect(compute.env()["DATABASE_URL"],
                         direct_url=with_params(compute.direct_url, application_name=name), suspend_after=60)
    session.read_arrow("select 1 as x", direct=True, progress=False)
    with session.connection() as conn:
        conn.execute("select 1")
    assert backends(compute, name) >= 1
    ref = weakref.ref(session)
    del session
    assert_collected(ref)
    deadline = time.monotonic() + 5
    while backends(compute, name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends(compute, name) == 0


def test_a_forgotten_session_with_timers_is_collected_and_both_pools_close(compute, pooled_url):
    """Nothing the session hands out (pool connectors, on_dead callbacks, finalizer, idle timer,
    keep-warm thread) leads back to it: dropped, it is collected and every connection closes."""
    session = nn.connect(pooled_url, direct_url=compute.direct_url, suspend_after=60)
    assert session.read_arrow("select 1 as x", progress=False).num_rows == 1
    assert session.read_arrow("select 2 as x", direct=True, progress=False).num_rows == 1
    session.keep_warm(1)  # a thread that pings every 20 s
    pools = session._resources.pools
    conns = [conn for pool in pools.values() for conn, _ in pool._idle]
    assert len(conns) == 2 and not any(conn.closed for conn in conns)
    tracker = session._resources.tracker
    ref = weakref.ref(session)
    del session
    assert_collected(ref)
    assert all(conn.closed for conn in conns)
    assert all(pool.idle == 0 and pool.in_use == 0 for pool in pools.values())
    assert tracker._timer is None  # the idle timer is cancelled
    warmers = [t for t in threading.enumerate() if t.name == "neon-keep-warm"]
    for thread in warmers:
        thread.join(timeout=2)
    assert not any(t.is_alive() for t in warmers)  # the keep-warm thread was stopped, not left to time out
    with pytest.raises(nn.SessionClosed):
        pools["pooled"].getconn()


@contextmanager
def held_by_another_thread(session, seconds: float):
    """Inside: another thread holds one of the session's pooled connections for ``seconds``."""
    held = threading.Event()

    def hold():
        with session.connection():
            held.set()
            time.sleep(seconds)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    try:
        yield
    finally:
        t.join()


# --- 17: pool_timeout=0 waits forever ---------------------------------------------------------


def test_pool_timeout_zero_waits_for_a_released_connection(compute, sessions):
    session = sessions(with_params(compute.direct_url, pool_timeout="0", connection_limit="1"))
    assert session.settings.pool_timeout is None
    with held_by_another_thread(session, 1.5):
        started = time.monotonic()
        with session.connection() as conn:
            waited = time.monotonic() - started
            assert conn.execute("select 1").fetchone() == (1,)
    assert waited >= 1.0


# --- 18 and 21: masking in URL errors ---------------------------------------------------------


@pytest.mark.parametrize("password", ["ab&cdEF12", r"ab\ cdEF12", "ab%20cdEF12", "ab=cdEF12",
                                      "ab'cdEF12", 'ab"cdEF12', "ab cdEF12"])
def test_key_value_error_masks_every_part_of_the_password(password):
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    for text in (f"host=db.example.com user=alex password={password} dbname=app",
                 f"host=db.example.com password = {quoted} dbname=app",
                 f"password={password}",
                 f"alex:{password}@db.example.com/app"):
        with pytest.raises(nn.ConfigurationError) as err:
            resolve(text, environ={})
        message = str(err.value)
        for piece in ("cdEF12", password):
            assert piece not in message, message
        assert "****" in message


def test_key_value_error_masks_an_unterminated_quoted_password():
    with pytest.raises(nn.ConfigurationError) as err:
        resolve("host=h password='abc defGH12 dbname=x", environ={})
    assert "defGH12" not in str(err.value)


@pytest.mark.parametrize("where", ["password", "user", "dbname"])
def test_non_utf8_percent_escape_is_a_configuration_error(where):
    url = {"password": "postgresql://alex:se%ffcret@db.example.com/app",
           "user": "postgresql://al%ffex:secret1@db.example.com/app",
           "dbname": "postgresql://alex:secret1@db.example.com/a%ffpp"}[where]
    with pytest.raises(nn.ConfigurationError, match="UTF-8") as err:
        resolve(url, environ={})
    message = str(err.value)
    assert "se%ffcret" not in message and "secret1" not in message
    assert "****" in message and "db.example.com" in message


# --- 23: the state stays true -----------------------------------------------------------------


def test_interrupted_wake_does_not_leave_the_state_waking(make_compute):
    c = make_compute(suspend_after=None, activation_delay=3)
    session = nn.connect(c.direct_url, connect_timeout=10, wake_timeout=20, suspend_after=None)
    seen = []
    session.observe(lambda change: seen.append(change.state))
    timer = threading.Timer(0.8, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with session.connection():
                time.sleep(10)  # not reached: the wake takes 3 s
    finally:
        timer.cancel()
    assert ComputeState.WAKING in seen
    assert session.state is not ComputeState.WAKING
    assert "interrupt" in (session.state_detail or "")
    with session.connection() as conn:  # and the session still works
        assert conn.execute("select 1").fetchone() == (1,)
    assert session.state is ComputeState.ACTIVE
    session.close()


def test_closed_session_is_not_active_after_a_read_that_ran_at_close(compute):
    session = nn.connect(compute.direct_url, suspend_after=None)
    session.warm_up()
    done = []
    t = threading.Thread(target=lambda: done.append(
        session.read_arrow("select pg_sleep(1) is null as x", progress=False)))
    t.start()
    time.sleep(0.4)
    session.close()
    t.join()
    assert done and done[0].num_rows == 1
    assert session.closed and session.state is ComputeState.UNKNOWN


def test_last_error_is_cleared_by_a_later_success(make_compute):
    c = make_compute(suspend_after=None)
    c.fail_next_wakes(1000)
    session = nn.connect(c.direct_url, connect_timeout=2, wake_timeout=1, suspend_after=None)
    with pytest.raises(nn.WakeTimeout):
        session.warm_up()
    assert session.state is ComputeState.ERROR and session.last_error
    c.fail_next_wakes(0)
    session.warm_up()
    assert session.state is ComputeState.ACTIVE and session.last_error is None
    session.close()


# --- 24: validation at connect() ---------------------------------------------------------------


def test_tiny_statement_timeout_is_one_millisecond_not_none(compute, sessions):
    for url, kwargs in ((compute.direct_url, {"direct_url": compute.direct_url}),
                        (compute.pooled_url, {})):
        session = sessions(url, statement_timeout=0.0001, **kwargs)
        for borrow in (session.connection, session.direct):
            with borrow() as conn:
                assert conn.execute("show statement_timeout").fetchone() == ("1ms",)


@pytest.mark.parametrize("value", [1e10, float("inf"), 2147483.648, float("nan"), -1, True, "5"])
def test_statement_timeout_beyond_postgres_range_is_refused_at_connect(value):
    with pytest.raises(nn.ConfigurationError, match="statement_timeout"):
        nn.connect("postgresql://u:pw@127.0.0.1:1/db", statement_timeout=value)


@pytest.mark.parametrize("name", ["wake_timeout", "connect_timeout", "pool_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, True, "5", 1e12])
def test_bad_seconds_are_refused_at_connect(name, value):
    with pytest.raises(nn.ConfigurationError, match=name):
        nn.connect("postgresql://u:pw@127.0.0.1:1/db", **{name: value})


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "5", float("nan")])
def test_bad_pool_size_is_refused_at_connect(value):
    with pytest.raises(nn.ConfigurationError, match="pool_size"):
        nn.connect("postgresql://u:pw@127.0.0.1:1/db", pool_size=value)


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), True, "300"])
def test_bad_suspend_after_is_refused(value):
    with pytest.raises((TypeError, ValueError), match="suspend_after"):
        nn.connect("postgresql://u:pw@127.0.0.1:1/db", suspend_after=value)


@pytest.mark.parametrize("progress", ["yes", "no", 1, 0.5, "AUTO"])
def test_bad_progress_is_refused_before_connecting(progress):
    port = free_port()
    session = nn.connect(f"postgresql://u:pw@127.0.0.1:{port}/db", suspend_after=None, wake_timeout=30)
    started = time.monotonic()
    for read in (session.read_arrow, session.read_pandas, lambda sql, **kw: list(session.iter_batches(sql, **kw))):
        with pytest.raises((TypeError, ValueError), match="progress"):
            read("select 1", progress=progress)
    assert time.monotonic() - started < 1 and session.state is ComputeState.UNKNOWN
    session.close()


# --- 25a: a refused port fails in seconds with what is likely wrong -----------------------------


def test_refused_port_fails_fast_and_says_what_is_likely_wrong(caplog):
    port = free_port()
    session = nn.connect(f"postgresql://alex:{SECRET}@127.0.0.1:{port}/db", wake_timeout=15,
                         connect_timeout=2, suspend_after=None)
    started = time.monotonic()
    with pytest.raises(nn.PermanentConnectError) as err:
        session.warm_up()
    elapsed = time.monotonic() - started
    assert elapsed < 8  # 3 s of refusals, then at most one backoff wait
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "nothing" in message.lower()
    assert "python -m neon_notebook local" in message and "port" in message
    for text in (message, repr(err.value), session.last_error or "", caplog.text):
        assert SECRET not in text
    assert session.state is ComputeState.ERROR
    session.close()


# --- 25c: a read inside a held connection on a full pool ------------------------------------------


def test_read_inside_the_only_held_connection_fails_at_once(compute, sessions):
    session = sessions(compute.direct_url, pool_size=1, pool_timeout=5)
    with session.connection():
        started = time.monotonic()
        with pytest.raises(nn.PoolExhausted) as err:
            session.read_arrow("select 1", progress=False)
        assert time.monotonic() - started < 1
    assert "this thread" in str(err.value) and "with" in str(err.value)
    assert session.read_arrow("select 1 as x", progress=False).num_rows == 1


def test_other_threads_holding_connections_are_still_waited_for(compute, sessions):
    session = sessions(compute.direct_url, pool_size=1, pool_timeout=5)
    with held_by_another_thread(session, 0.8):
        started = time.monotonic()
        assert session.read_arrow("select 1 as x", progress=False).num_rows == 1
        assert time.monotonic() - started >= 0.5


# --- 26c: WakeTimeout keeps trying until wake_timeout -------------------------------------------


def test_wake_timeout_is_used_to_the_end(make_compute):
    wake_timeout = 4.0
    c = make_compute(suspend_after=None)
    c.fail_next_wakes(10_000)
    session = nn.connect(c.direct_url, connect_timeout=2, wake_timeout=wake_timeout, suspend_after=None)
    started = time.monotonic()
    with pytest.raises(nn.WakeTimeout) as err:
        session.warm_up()
    elapsed = time.monotonic() - started
    assert wake_timeout - 0.25 <= elapsed <= wake_timeout + 2.1, elapsed
    assert err.value.attempts >= 3
    session.close()
