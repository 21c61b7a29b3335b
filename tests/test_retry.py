"""Transient/permanent classification, backoff, deadlines and retry_call."""

from __future__ import annotations

import random
import socket

import psycopg
import psycopg_pool
import pytest
from psycopg import errors as pe

from neon_notebook.errors import PermanentConnectError, WakeTimeout
from neon_notebook._retry import Attempts, Backoff, Deadline, retry_call
from neon_notebook._translate import classify

PREFIX = 'connection failed: connection to server at "3.18.1.2", port 5432 failed: '


def op(message: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(PREFIX + message)


TRANSIENT = [
    (op("timeout expired"), False),
    (pe.ConnectionTimeout("connection timeout expired"), False),
    (op("Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?"), False),
    (op("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"), False),
    (op("SSL SYSCALL error: EOF detected"), False),
    (psycopg.OperationalError("consuming input failed: SSL connection has been closed unexpectedly"), False),
    (pe.InternalError_("Couldn't connect to compute node"), False),
    (pe.InternalError_("Control plane request failed"), False),
    (pe.InternalError_("Failed to acquire permit to connect to the database. Too many database connection attempts are currently ongoing."), True),
    (pe.InternalError_("Too many connections attempts"), True),
    (pe.InternalError_("Too many connections to this endpoint"), True),
    (pe.InternalError_("query_wait_timeout"), True),
    (pe.AdminShutdown("terminating connection due to administrator command"), False),
    (pe.CannotConnectNow("the database system is starting up"), False),
    (op("FATAL:  the database system is shutting down"), False),
    (pe.CrashShutdown("terminating connection because of crash of another server process"), False),
    (pe.TooManyConnections("sorry, too many clients already"), True),
    (pe.ConfigurationLimitExceeded("limit reached"), True),
    (pe.ConnectionFailure("whatever the text"), False),
    (op("ERROR:  no more connections allowed (max_client_conn)"), True),
    (op("ERROR:  pgbouncer cannot connect to server"), False),
    (op("ERROR:  server login has been failing, try again later (server_login_retry)"), True),
    (ConnectionResetError(104, "Connection reset by peer"), False),
    (TimeoutError("timed out"), False),
    (psycopg_pool.PoolTimeout("couldn't get a connection after 30.00 sec"), True),
]

PERMANENT = [
    (op('FATAL:  password authentication failed for user "alex"'), "password"),
    (pe.InvalidPassword("nope"), "password"),
    (pe.InvalidAuthorizationSpecification("nope"), "user"),
    (op('FATAL:  role "ghost" does not exist'), "role"),
    (op('FATAL:  database "nodb" does not exist'), "database"),
    (pe.InvalidCatalogName("nope"), "database"),
    (pe.InternalError_("The endpoint is disabled"), "disabled"),
    (pe.InternalError_("The requested endpoint could not be found, or you don't have access to it."), "endpoint"),
    (pe.InternalError_("Your endpoint is temporarily unavailable. Check your quotas and/or contact our support."), "quota"),
    (pe.InternalError_("This IP address 1.2.3.4 is not allowed to connect to this endpoint"), "allow list"),
    (pe.InternalError_("Endpoint ID is not specified. Either please upgrade the postgres client library"), "options=endpoint"),
    (pe.InternalError_("connection is insecure (try using `sslmode=require`)"), "sslmode=require"),
    (op("ERROR:  unsupported startup parameter: options"), "direct endpoint"),
    (op('could not translate host name "ep-typo.neon.tech" to address: Name or service not known'), "host name"),
    (psycopg.OperationalError("failed to resolve host 'ep-typo.neon.tech': [Errno -2] Name or service not known"), "host name"),
    (socket.gaierror(-2, "Name or service not known"), "host name"),
    (psycopg.ProgrammingError('invalid connection option "bogus"'), "invalid"),
    (op("fe_sendauth: no password supplied"), "PGPASSWORD"),
]


@pytest.mark.parametrize(("exc", "slow"), TRANSIENT)
def test_transient_errors(exc, slow):
    verdict = classify(exc)
    assert verdict.transient and verdict.slow is slow and verdict.reason


@pytest.mark.parametrize(("exc", "says"), PERMANENT)
def test_permanent_errors_say_what_to_fix(exc, says):
    verdict = classify(exc)
    assert not verdict.transient and says.lower() in verdict.reason.lower()


def test_proxy_errors_are_read_by_text_not_by_their_xx000_code():
    assert classify(pe.InternalError_("Couldn't connect to compute node")).transient
    assert not classify(pe.InternalError_('password authentication failed for user "a"')).transient


def test_a_permanent_line_anywhere_in_a_multi_address_message_wins():
    message = (
        'connection failed: connection to server at "3.18.1.2", port 5432 failed: timeout expired\n'
        "Multiple connection attempts failed. All failures were:\n"
        "- host: 'ep-x.neon.tech', port: '5432', hostaddr: '3.18.1.2': connection failed: timeout expired\n"
        "- host: 'ep-x.neon.tech', port: '5432', hostaddr: '3.18.1.3': connection failed: "
        'FATAL:  password authentication failed for user "alex"'
    )
    assert not classify(psycopg.OperationalError(message)).transient


def test_unknown_errors_are_permanent_and_quote_the_driver():
    verdict = classify(psycopg.OperationalError("something odd happened\nsecond line"))
    assert not verdict.transient and "something odd happened" in verdict.reason
    assert not classify(ValueError("not a driver error")).transient


# --- Backoff and Deadline ----------------------------------------------------


def test_backoff_delays_stay_within_bounds_and_grow():
    backoff = Backoff(random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(Backoff.initial_delay <= d <= Backoff.max_delay for d in delays)
    assert delays[0] <= Backoff.initial_delay * Backoff.factor
    assert max(delays) > Backoff.max_delay * 0.8  # it does reach the cap region
    assert len(set(delays)) > 100  # jittered, not a fixed schedule


def test_slow_errors_back_off_longer():
    backoff = Backoff(random.Random(1))
    delays = [backoff.next_delay(slow=True) for _ in range(100)]
    low, high = Backoff.initial_delay * Backoff.slow_factor, Backoff.max_delay * Backoff.slow_factor
    assert all(low <= d <= high for d in delays)


def test_backoff_tunables_are_class_attributes(monkeypatch):
    monkeypatch.setattr(Backoff, "initial_delay", 1.0)
    monkeypatch.setattr(Backoff, "max_delay", 1.0)
    assert Backoff().next_delay() == 1.0


class FakeClock:
    """A monotonic clock that only moves when someone sleeps or works."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_deadline_clamps_attempt_timeouts():
    clock = FakeClock()
    deadline = Deadline(60, clock=clock)
    assert deadline.clamp(15) == 15 and deadline.clamp(None) == 60
    clock.now = 50
    assert deadline.clamp(15) == 10 and deadline.remaining() == 10 and not deadline.expired
    clock.now = 59.5
    assert deadline.clamp(15) == Deadline.min_attempt_timeout == 2.0
    clock.now = 61
    assert deadline.remaining() == 0 and deadline.expired and deadline.elapsed == 61


# --- retry_call ----------------------------------------------------------------


def test_transient_errors_are_retried_until_success():
    clock = FakeClock()
    failures = [op("timeout expired"), pe.CannotConnectNow("the database system is starting up")]
    timeouts, retries = [], []

    def connect(timeout: float) -> str:
        timeouts.append(timeout)
        if failures:
            raise failures.pop(0)
        return "connected"

    attempts = Attempts()
    result = retry_call(
        connect, deadline=Deadline(60, clock=clock), attempt_timeout=15, sleep=clock.sleep,
        on_retry=lambda n, exc, verdict, delay: retries.append((n, verdict.transient, delay)), attempts=attempts,
    )
    assert result == "connected"
    assert attempts.count == 3 and attempts.elapsed == pytest.approx(sum(clock.sleeps))
    assert [n for n, _, _ in retries] == [1, 2] and [d for _, _, d in retries] == clock.sleeps
    assert timeouts[0] == 15


def test_permanent_error_raises_after_exactly_one_call():
    clock = FakeClock()
    calls = []
    cause = op('FATAL:  password authentication failed for user "alex"')

    def connect(timeout: float) -> None:
        calls.append(timeout)
        raise cause

    with pytest.raises(PermanentConnectError, match="password") as info:
        retry_call(connect, deadline=Deadline(60, clock=clock), sleep=clock.sleep)
    assert len(calls) == 1 and clock.sleeps == []
    assert info.value.__cause__ is cause
    assert isinstance(info.value, psycopg.OperationalError)


def test_secrets_are_scrubbed_from_the_raised_error():
    def connect(timeout: float) -> None:
        raise psycopg.OperationalError("odd failure for password hunter2-secret")

    with pytest.raises(PermanentConnectError) as info:
        retry_call(connect, deadline=Deadline(60), secrets=["hunter2-secret", None])
    assert "hunter2-secret" not in str(info.value) and "****" in str(info.value)


def test_deadline_raises_wake_timeout_without_sleeping_past_it():
    clock = FakeClock()
    ends_of_sleeps = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        ends_of_sleeps.append(clock.now)

    calls = []

    def connect(timeout: float) -> None:
        calls.append(timeout)
        clock.now += 1.0  # each attempt takes a second
        raise op("Couldn't connect to compute node")

    with pytest.raises(WakeTimeout) as info:
        retry_call(connect, deadline=Deadline(10, clock=clock), sleep=sleep, backoff=Backoff(random.Random(3)))
    error = info.value
    assert all(end <= 10 for end in ends_of_sleeps)
    assert error.attempts == len(calls) >= 3
    assert error.waited == pytest.approx(clock.now) and error.waited <= 11
    assert "compute" in error.last_reason and f"{error.attempts} attempts" in str(error)
    assert isinstance(error.__cause__, psycopg.OperationalError)


def test_other_exceptions_pass_through_untouched():
    calls = []

    def connect(timeout: float) -> None:
        calls.append(timeout)
        raise KeyError("bug in the caller")

    with pytest.raises(KeyError):
        retry_call(connect, deadline=Deadline(60))
    assert len(calls) == 1


def test_an_attempt_that_already_waited_is_retried_without_more_delay():
    """A connect timeout during a cold start has served its backoff: retry at once."""
    clock = FakeClock()
    outcomes = ["timeout", "refused", "ok"]

    def connect(timeout: float) -> str:
        outcome = outcomes.pop(0)
        if outcome == "timeout":
            clock.now += timeout  # waited the whole connect_timeout
            raise op("timeout expired")
        if outcome == "refused":
            raise op("Connection refused")  # failed at once
        return "connected"

    assert retry_call(connect, deadline=Deadline(60, clock=clock), attempt_timeout=5,
                      sleep=clock.sleep) == "connected"
    assert clock.sleeps[0] == 0.0  # after the 5 s timeout
    assert clock.sleeps[1] >= Backoff.initial_delay  # after the instant refusal


@pytest.mark.parametrize("seed", range(12))
def test_attempts_go_on_to_the_deadline(seed):
    """#9.26c: no giving up seconds early; the last attempt ends at most 2 s after the deadline."""
    clock = FakeClock()

    def fails_at_once(timeout: float) -> None:
        raise op("Couldn't connect to compute node")

    with pytest.raises(WakeTimeout) as info:
        retry_call(fails_at_once, deadline=Deadline(10, clock=clock), sleep=clock.sleep,
                   backoff=Backoff(random.Random(seed)))
    assert info.value.waited == pytest.approx(10)  # the last attempt was made at the deadline

    clock = FakeClock()
    starts = []

    def times_out(timeout: float) -> None:
        starts.append(clock.now)
        clock.now += timeout
        raise op("timeout expired")

    with pytest.raises(WakeTimeout) as info:
        retry_call(times_out, deadline=Deadline(10, clock=clock), attempt_timeout=3, sleep=clock.sleep,
                   backoff=Backoff(random.Random(seed)))
    assert 10 <= info.value.waited <= 10 + Deadline.min_attempt_timeout
    assert starts[-1] >= 10 - Deadline.min_attempt_timeout - 1e-9
