"""Retrying connections through a Neon cold start, and knowing when to stop.

A suspended compute answers its first connection late or with an error, so
connecting means: try, tell transient failures (timeouts, EOF, "starting up",
proxy rate limits) from permanent ones (wrong password, unknown database,
disabled endpoint), back off with jitter, and give up at a deadline.

What an error means (transient or not, and why in plain words) is
``_translate.classify``'s to say, and the error raised in the end is
``_translate.connect_error``'s: this module only paces the attempts. It imports
without psycopg (Pyodide); ``_translate`` loads when an attempt fails.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .errors import Error, NeonError

if TYPE_CHECKING:
    from ._translate import Verdict

__all__ = ["Attempts", "Backoff", "Deadline", "retry_call"]

T = TypeVar("T")


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
    Exceptions that are not driver errors (``errors.Error``: psycopg's, or its
    stand-in without psycopg) or OS errors pass through untouched.
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
        except (Error, OSError) as exc:
            if isinstance(exc, NeonError):
                raise
            from ._translate import classify, connect_error

            verdict = classify(exc)
            if not verdict.transient:
                raise connect_error(exc, verdict, secrets=secrets) from exc
            attempts.last = verdict
            if give_up is not None:
                give_up(exc, verdict)
            # Backoff spaces attempt *starts*: an attempt that already waited (a
            # connect timeout while the compute wakes) has served its delay.
            delay = max(0.0, backoff.next_delay(verdict.slow) - (deadline.elapsed - started))
            left = deadline.remaining()
            if left <= 0.0 or at_deadline:
                raise connect_error(exc, verdict, secrets=secrets, attempts=attempts.count,
                                    waited=deadline.elapsed) from exc
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
