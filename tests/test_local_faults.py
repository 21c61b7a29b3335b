"""Fault injection in the local compute: ``cut_after`` and ``latency``, on real connections."""

from __future__ import annotations

import math
import time

import psycopg
import pytest

from neon_notebook.errors import ConfigurationError

ROWS = 20_000
COPY = f"copy (select g, repeat('x', 50) from generate_series(1, {ROWS}) g) to stdout"
EXPECTED = b"".join(b"%d\t%s\n" % (g, b"x" * 50) for g in range(1, ROWS + 1))
ENDPOINTS = ["direct", "pooled"]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def faulty(compute):
    """The shared compute, with every fault cleared after the test."""
    yield compute
    compute.cut_after(None)
    compute.latency(0)


def url_of(compute, endpoint: str) -> str:
    return compute.direct_url if endpoint == "direct" else compute.pooled_url


def connect(compute, endpoint: str) -> psycopg.Connection:
    """An autocommit connection: a COPY is the whole conversation, no BEGIN or COMMIT."""
    return psycopg.connect(url_of(compute, endpoint), connect_timeout=10, prepare_threshold=None,
                           autocommit=True)


def copy_out(conn: psycopg.Connection) -> bytes:
    with conn.cursor() as cur, cur.copy(COPY) as copy:
        return b"".join(bytes(block) for block in copy)


def measure(compute, endpoint: str) -> tuple[int, int]:
    """(start-up bytes, start-up + COPY bytes) a client receives, counted by an unreachable cut."""
    compute.cut_after(1 << 40, endpoint=endpoint)
    before = compute.tapped_bytes
    with connect(compute, endpoint) as conn:
        started = compute.tapped_bytes - before
        assert copy_out(conn) == EXPECTED
        total = compute.tapped_bytes - before
    return started, total


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_cut_copy_fails_loudly_at_every_offset(faulty, pgbouncer, endpoint):
    """A COPY cut anywhere before its last byte is an error, never a short success."""
    started, total = measure(faulty, endpoint)
    assert 0 < started < total and total - started > len(EXPECTED)
    offsets = [0, 1, started // 2, started - 1, started, started + 1, started + 5000,
               (started + total) // 2, total - 7, total - 6, total - 1]
    cuts = faulty.cuts
    for offset in offsets:
        faulty.cut_after(offset, endpoint=endpoint)
        with pytest.raises(psycopg.OperationalError):
            with connect(faulty, endpoint) as conn:
                data = copy_out(conn)
                pytest.fail(f"cut at {offset} of {total} bytes, yet COPY returned {len(data)} bytes")
    assert faulty.cuts == cuts + len(offsets)
    faulty.cut_after(total, endpoint=endpoint)  # the whole conversation fits: nothing is lost
    with connect(faulty, endpoint) as conn:
        assert copy_out(conn) == EXPECTED
    assert faulty.cuts == cuts + len(offsets) + 1  # cut right after its last byte, while idle


def test_the_cut_counts_per_connection_and_only_new_ones(faulty, pgbouncer):
    old = connect(faulty, "direct")
    faulty.cut_after(1 << 40, endpoint="direct")
    before = faulty.tapped_bytes
    probe = connect(faulty, "direct")
    started = faulty.tapped_bytes - before
    probe.execute("select 1")
    one_query = faulty.tapped_bytes - before - started
    probe.close()

    cuts = faulty.cuts
    faulty.cut_after(started + 2 * one_query + 1, endpoint="direct")
    a, b = (connect(faulty, "direct") for _ in range(2))
    pooled = connect(faulty, "pooled")
    for conn in (a, b, a, b):  # four queries in all, two per connection: no cut
        assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError):
        a.execute("select 1")  # a's third query passes its own limit
    assert faulty.cuts == cuts + 1
    for _ in range(5):  # opened before any cut was set, and another endpoint: never cut
        assert old.execute("select 1").fetchone() == (1,)
        assert pooled.execute("select 1").fetchone() == (1,)
    faulty.cut_after(None, endpoint="direct")  # disarms b, which was one query from its cut
    for _ in range(5):
        assert b.execute("select 1").fetchone() == (1,)
    for conn in (old, a, b, pooled):
        conn.close()


def test_a_cut_on_one_endpoint_spares_the_other(faulty, pgbouncer):
    faulty.cut_after(0, endpoint="pooled")
    with pytest.raises(psycopg.OperationalError):
        connect(faulty, "pooled")
    with connect(faulty, "direct") as conn:
        assert copy_out(conn) == EXPECTED


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_latency_delays_each_direction_and_zero_restores_speed(faulty, pgbouncer, endpoint):
    other = connect(faulty, "pooled" if endpoint == "direct" else "direct")
    faulty.latency(0.2, endpoint=endpoint)
    conn = connect(faulty, endpoint)
    other.execute("select 1")
    for _ in range(2):
        started = time.monotonic()
        assert conn.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - started >= 0.4  # 0.2 s up, 0.2 s down
    started = time.monotonic()
    other.execute("select 1")
    assert time.monotonic() - started < 0.2  # the other endpoint is not delayed
    faulty.latency(0, endpoint=endpoint)  # applies at once to the delayed connection
    started = time.monotonic()
    for _ in range(5):
        conn.execute("select 1")
    assert time.monotonic() - started < 0.5
    conn.close()
    other.close()


def test_latency_keeps_order_and_every_byte(faulty):
    faulty.latency(0.01, endpoint="direct")
    with connect(faulty, "direct") as conn:
        assert copy_out(conn) == EXPECTED
        assert conn.execute("select string_agg(g::text, ',') from generate_series(1, 3000) g"
                            ).fetchone()[0] == ",".join(map(str, range(1, 3001)))


def test_faults_leak_no_threads_or_fds_and_unset_keeps_the_fast_path(faulty, pgbouncer):
    def counts():
        s = faulty.status()
        return s["threads"], s["fds"]

    baseline = counts()
    bytes_before = faulty.tapped_bytes
    for endpoint in ENDPOINTS:
        faulty.latency(0.01, endpoint=endpoint)
        faulty.cut_after(3000, endpoint=endpoint)
        held = connect(faulty, endpoint)
        for _ in range(3):
            with pytest.raises(psycopg.OperationalError):
                with connect(faulty, endpoint) as conn:
                    copy_out(conn)
        faulty.cut_after(0, endpoint=endpoint)
        with pytest.raises(psycopg.OperationalError):
            connect(faulty, endpoint)
        held.close()
        faulty.cut_after(None, endpoint=endpoint)
        faulty.latency(0, endpoint=endpoint)
    assert wait_for(lambda: counts() == baseline), (counts(), baseline)
    tapped = faulty.tapped_bytes
    assert tapped > bytes_before
    for endpoint in ENDPOINTS:  # no fault set: the splice relay, nothing counted
        with connect(faulty, endpoint) as conn:
            assert copy_out(conn) == EXPECTED
    assert faulty.tapped_bytes == tapped


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_cut_after_refuses_what_is_not_a_byte_count(compute, bad):
    with pytest.raises(ConfigurationError, match="cut_after needs a byte count >= 0 or None"):
        compute.cut_after(bad)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, "0.2", None])
def test_latency_refuses_what_is_not_finite_seconds(compute, bad):
    with pytest.raises(ConfigurationError, match="latency needs a finite number of seconds >= 0"):
        compute.latency(bad)


def test_the_endpoint_must_be_named(compute):
    with pytest.raises(ConfigurationError, match="endpoint must be one of 'direct', 'pooled', 'both'"):
        compute.cut_after(10, endpoint="pooler")
    with pytest.raises(ConfigurationError, match="endpoint must be one of"):
        compute.latency(0.1, endpoint="")


def test_times_limits_the_cuts_so_a_retry_can_succeed(faulty, pgbouncer):
    faulty.cut_after(2000, endpoint="both", times=1)
    cuts = faulty.cuts
    for endpoint in ENDPOINTS:  # each endpoint cuts once, then lets connections through
        with pytest.raises(psycopg.OperationalError):
            with connect(faulty, endpoint) as conn:
                copy_out(conn)
        with connect(faulty, endpoint) as conn:
            assert copy_out(conn) == EXPECTED
    assert faulty.cuts == cuts + 2
    with pytest.raises(ConfigurationError, match="times must be a number of cuts >= 1 or None"):
        faulty.cut_after(10, times=0)
