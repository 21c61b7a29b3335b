"""Retrying connections through a Neon cold start, and knowing when to stop.

A suspended compute answers its first connection late or with an error, so
connecting means: try, tell transient failures (timeouts, EOF, "starting up",
proxy rate limits) from permanent ones (wrong password, unknown database,
disabled endpoint), back off with jitter, and give up at a deadline.

``classify`` reads the SQLSTATE *and* the message: Neon's proxy reports every
connect-time error as XX000, and psycopg reports a failed connection without a
SQLSTATE at all, one line per address tried. A permanent sign on any line wins.
Errors nothing here recognises are permanent unless they look like network
trouble: a wrong guess costs one re-run rather than a minute of retrying.
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from .errors import NeonError, PermanentConnectError, WakeTimeout
from ._config import redact

__all__ = ["Attempts", "Backoff", "Deadline", "Verdict", "classify", "retry_call"]

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """What an error means for retrying: transient or not, back off longer or not, and why."""

    transient: bool
    slow: bool
    reason: str
    refused: bool = False  # "connection refused": nothing listens at that address


_REFUSED = r"connection refused"
_PASSWORD = "The server rejected the user name or password. Check them in the URL (the Neon console shows the current ones)."
_CONNINFO = "The connection settings are invalid: {detail}"
_DNS = "The host name could not be resolved. Check the host in the URL and your network connection."
_EOF = "The server closed the connection without a word (the compute was suspended or restarted)."
_SLOTS = "The compute has no free connection slots. Use the pooled endpoint or close idle connections."

# Regular expressions searched case-insensitively in the whole message, permanent ones first:
# (pattern, reason) and (pattern, slow, reason).
_PERMANENT: Sequence[tuple[str, str]] = (
    (r"authentication failed", _PASSWORD),
    (r"is not permitted to log in", _PASSWORD),
    (r"no password supplied", "The server wants a password and none was given: put it in the URL, PGPASSWORD or ~/.pgpass."),
    (r'role ".*" does not exist', "The user (role) in the URL does not exist on this branch. Check the user name."),
    (r'database ".*" does not exist', "The database in the URL does not exist on this branch. Check the database name."),
    (r"permission denied for database", "This user may not connect to this database. Grant CONNECT or use another user."),
    (r"no pg_hba\.conf entry", "The server's pg_hba.conf refuses this user, database or address (or needs TLS). Check sslmode and the server's rules."),
    (r"endpoint is disabled", "This Neon endpoint is disabled. Enable it in the Neon console; retrying will not help."),
    (r"endpoint (?:cannot|could not) be found", "Neon has no endpoint by this name (or you lack access). Check the host in the URL against the Neon console."),
    (r"quota", "Neon will not start the compute: a quota or plan limit is exceeded. Check usage in the Neon console."),
    (r"is not allowed to connect", "Neon's IP allow list rejects this address. Add your IP to the project's allow list in the Neon console."),
    (r"endpoint id is not specified", "Neon could not tell which endpoint to use (no SNI). Add options=endpoint%3D<endpoint-id> to the URL or use a newer libpq."),
    (r"connection is insecure", "Neon accepts only TLS connections. Use sslmode=require."),
    (r"unsupported startup parameter", "The connection pooler (PgBouncer) rejected a startup option. Use the direct endpoint for session settings, or drop the option (e.g. options=-csearch_path=...)."),
    (r"could not translate host name|failed to resolve host|name or service not known|nodename nor servname|no address associated", _DNS),
    (r"server does not support ssl", "The server does not offer TLS, but sslmode asks for it. Use sslmode=prefer or disable for this server (never for Neon)."),
    (r"certificate verify failed|root certificate file|does not match host name|server certificate for", "The server's TLS certificate could not be verified. Check sslrootcert, or use sslmode=require instead of verify-ca/verify-full."),
    (r"channel binding", "SCRAM channel binding, which channel_binding=require asks for, is not available here. Drop channel_binding=require or connect over TLS."),
    (r"invalid connection option|missing \"=\" after|invalid uri|invalid percent-encoded|invalid \w+ value|invalid port number|bad value for", _CONNINFO),
)
_TRANSIENT: Sequence[tuple[str, bool, str]] = (
    (r"failed to acquire permit", True, "Neon's proxy is limiting concurrent compute wake-ups."),
    (r"too many connections? attempts", True, "Neon's proxy is rate-limiting connection attempts."),
    (r"too many connections to this endpoint", True, "Neon's proxy limits connections to this endpoint."),
    (r"too many clients already|remaining connection slots|too many connections for", True, _SLOTS),
    (r"no more connections allowed", True, "The connection pooler is full (max_client_conn)."),
    (r"query_wait_timeout", True, "The connection pooler's queue timed out: every server connection was busy."),
    (r"server login has been failing", True, "The connection pooler cannot log in to Postgres right now and waits before trying again."),
    (r"couldn't get a connection after", True, "No pooled connection became free in time."),
    (r"pgbouncer cannot connect to server", False, "The connection pooler cannot reach Postgres yet (the compute may be starting)."),
    (r"couldn't connect to compute node", False, "Neon's proxy cannot reach the compute yet (it may be starting)."),
    (r"control plane request failed", False, "Neon's control plane did not answer the wake-up request."),
    (r"the database system is (?:starting up|not yet accepting)", False, "Postgres is starting up (cold start)."),
    (r"the database system is (?:shutting down|in recovery)", False, "The compute is shutting down or restarting. It will be woken again."),
    (r"terminating connection due to administrator command", False, "The compute closed the connection (suspended or restarted by Neon)."),
    (r"timeout expired|timed out", False, "No answer within the connect timeout (the compute may be waking up)."),
    (_REFUSED, False, "The connection was refused (nothing listening yet)."),
    (r"server closed the connection|eof detected|closed unexpectedly|unexpected eof|connection reset|broken pipe", False, _EOF),
    (r"could not (?:receive|send) data|consuming input failed|connection to server .*lost", False, _EOF),
    (r"no route to host|network is unreachable|host is unreachable", False, "The network cannot reach the server right now."),
)
_PERMANENT_CODES = {
    "28P01": _PASSWORD,
    "28000": "The server refused the login (invalid authorization). Check the user and password.",
    "3D000": "The database in the URL does not exist. Check the database name.",
}
_TRANSIENT_CODES = {
    "57P01": (False, "The compute closed the connection (suspended or restarted by Neon)."),
    "57P02": (False, "The server crashed and is restarting."),
    "57P03": (False, "Postgres is not accepting connections yet (cold start)."),
    "53300": (True, _SLOTS),
    "53400": (True, "The server hit a configured limit."),
}


def classify(exc: BaseException) -> Verdict:
    """Tell whether ``exc`` from connecting is worth retrying, and say why in plain words."""
    message = str(exc)
    detail = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)[:300]
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, socket.gaierror):
        return Verdict(False, False, _DNS)
    for pattern, reason in _PERMANENT:
        if re.search(pattern, message, re.IGNORECASE):
            return Verdict(False, False, reason.format(detail=detail))
    if sqlstate in _PERMANENT_CODES:
        return Verdict(False, False, _PERMANENT_CODES[sqlstate])
    for pattern, slow, reason in _TRANSIENT:
        if re.search(pattern, message, re.IGNORECASE):
            return Verdict(True, slow, reason, refused=pattern is _REFUSED)
    if sqlstate in _TRANSIENT_CODES:
        return Verdict(True, *_TRANSIENT_CODES[sqlstate])
    if (sqlstate or "").startswith("08") or isinstance(
        exc, (psycopg.errors.ConnectionTimeout, ConnectionError, TimeoutError)
    ):
        return Verdict(True, False, f"The connection failed ({detail}).")
    return Verdict(False, False, f"Unrecognised error while connecting, not retried: {detail}")


class Backoff:
    """Exponential backoff with decorrelated jitter; tune the class attributes (seconds)."""

    initial_delay = 0.2
    factor = 3.0
    max_delay = 3.0
    #: Multiplies initial_delay and max_delay for "slow" errors (rate limits, full servers).
    slow_factor = 4.0

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._previous = 0.0

    def next_delay(self, slow: bool = False) -> float:
        """Seconds to wait before the next attempt, between initial and max delay (times slow_factor)."""
        scale = self.slow_factor if slow else 1.0
        low, high = self.initial_delay * scale, self.max_delay * scale
        delay = min(high, self._rng.uniform(low, max(low, self._previous) * self.factor))
        self._previous = delay
        return delay


class Deadline:
    """A point in monotonic time after which no new attempt should start."""

    #: libpq's (and psycopg's) shortest connect_timeout: shorter values count as 2 s.
    min_attempt_timeout = 2.0

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._start = clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return self._clock() - self._start

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.seconds - self.elapsed)

    @property
    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0

    def clamp(self, timeout: float | None) -> float:
        """Timeout for one attempt: ``timeout`` (None = no limit) cut to the time left, at least 2 s."""
        left = self.remaining()
        return max(self.min_attempt_timeout, left if timeout is None else min(timeout, left))


@dataclass
class Attempts:
    """What a ``retry_call`` did so far: attempts made, seconds spent, last transient verdict."""

    count: int = 0
    elapsed: float = 0.0
    last: Verdict | None = None


def retry_call(
    fn: Callable[[float], T],
    *,
    deadline: Deadline,
    attempt_timeout: float | None = None,
    backoff: Backoff | None = None,
    on_retry: Callable[[int, BaseException, Verdict, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    attempts: Attempts | None = None,
    secrets: Sequence[str | None] = (),
    give_up: Callable[[BaseException, Verdict], None] | None = None,
) -> T:
    """Call ``fn(timeout)`` until it succeeds, retrying transient connection errors.

    Raises ``PermanentConnectError`` at the first permanent error and
    ``WakeTimeout`` when an attempt fails after the deadline. Attempts go on to
    the deadline: a wait that would pass it is shortened so that the last attempt
    starts with ``Deadline.min_attempt_timeout`` (2 s, libpq's shortest connect
    timeout) left, so it ends by the deadline; only an attempt started with less
    than that left (the previous one ran long) may end up to 2 s after it. Both come
    ``from`` the driver error, with ``secrets`` scrubbed from their text.
    Exceptions that are not psycopg or OS errors pass through untouched.
    Delays space the starts of attempts, so an attempt that timed out after
    waiting is retried at once. ``give_up(exc, verdict)`` sees each transient
    failure and may raise to end the retries (a policy beyond the deadline);
    ``on_retry(attempt, exc, verdict, delay)`` runs before each wait;
    ``attempts``, if given, is kept up to date.
    """
    backoff = backoff or Backoff()
    attempts = attempts if attempts is not None else Attempts()
    at_deadline = False
    while True:
        attempts.count += 1
        started = deadline.elapsed
        try:
            return fn(deadline.clamp(attempt_timeout))
        except (psycopg.Error, OSError) as exc:
            if isinstance(exc, NeonError):
                raise
            verdict = classify(exc)
            reason = redact(verdict.reason, *secrets)
            if not verdict.transient:
                raise PermanentConnectError(reason) from exc
            attempts.last = verdict
            if give_up is not None:
                give_up(exc, verdict)
            # Backoff spaces attempt *starts*: an attempt that already waited (a
            # connect timeout while the compute wakes) has served its delay.
            delay = max(0.0, backoff.next_delay(verdict.slow) - (deadline.elapsed - started))
            left = deadline.remaining()
            if left <= 0.0 or at_deadline:
                raise WakeTimeout(attempts=attempts.count, waited=deadline.elapsed, last_reason=reason) from exc
            shortest = deadline.min_attempt_timeout
            if delay > left - shortest:
                # Use the time to the end: cut the wait so that a last attempt still
                # has libpq's shortest timeout left; with less left, the attempt made
                # at the deadline is the last.
                if left > shortest:
                    delay = left - shortest
                elif delay >= left:
                    delay, at_deadline = left, True
            if on_retry is not None:
                on_retry(attempts.count, exc, verdict, delay)
            sleep(delay)
        finally:
            attempts.elapsed = deadline.elapsed
