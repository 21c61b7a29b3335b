"""What the session believes about the compute, and who is told when it changes.

The state is inferred from what connections see — never from a background ping,
which would keep a compute awake and bill the user for it:

- ``unknown``: nothing tried yet;
- ``waking``: a connection attempt is under way and has not answered yet;
- ``active``: a connection or query just succeeded;
- ``suspended``: connections were closed by a suspension (57P01, EOF), or
  nothing has run for longer than the compute's suspend window;
- ``error``: a permanent failure (wrong password, unknown database...), or the
  compute did not answer within ``wake_timeout``.

Observers run synchronously on whatever thread made the change (a background
warm-up, a pool checkout); widgets hop to their own loop themselves.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("neon_notebook")


class ComputeState(str, enum.Enum):
    UNKNOWN = "unknown"
    WAKING = "waking"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StateChange:
    """One transition, as observers receive it."""

    state: ComputeState
    previous: ComputeState
    detail: str | None  # plain words: why (the error, the endpoint that woke...)
    at: float  # time.time()


Observer = Callable[[StateChange], None]


class StateTracker:
    """Thread-safe current state plus observers; presumes suspension after idling."""

    def __init__(self, suspend_after: float | None = 300.0) -> None:
        self._state = ComputeState.UNKNOWN
        self._detail: str | None = None
        self._observers: list[Observer] = []
        self._lock = threading.RLock()
        self._suspend_after = suspend_after
        self._timer: threading.Timer | None = None
        self._last_active = 0.0
        self._closed = False
        self._no_threads = False  # Pyodide: no timer thread, so idleness is checked when asked

    @property
    def state(self) -> ComputeState:
        if self._no_threads and self._state is ComputeState.ACTIVE and self._suspend_after is not None:
            if time.monotonic() - self._last_active >= self._suspend_after:
                self.set(ComputeState.SUSPENDED, "idle longer than the suspend window")
        return self._state

    @property
    def detail(self) -> str | None:
        return self._detail

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(change)`` on every change; returns a function that stops it."""
        with self._lock:
            self._observers.append(observer)

        def unobserve() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return unobserve

    def set(self, state: ComputeState, detail: str | None = None) -> None:
        """Move to ``state``; observers hear of it when state or detail changed. Ignored once closed."""
        self._change(state, detail)

    def _change(self, state: ComputeState, detail: str | None, *, final: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = final  # a final change is the last one
            previous = self._state
            if state is ComputeState.ACTIVE:
                self._arm_idle_timer()
            if previous is state and self._detail == detail:
                return
            self._state, self._detail = state, detail
            change = StateChange(state, previous, detail, time.time())
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(change)
            except Exception:  # an observer's bug must not break a query
                log.exception("state observer %r failed", observer)

    def _arm_idle_timer(self) -> None:
        """After ``suspend_after`` s without activity Neon has suspended: say so, locally."""
        self._last_active = time.monotonic()
        if self._suspend_after is not None and self._timer is None and not self._closed and not self._no_threads:
            self._start_timer(self._suspend_after)

    def _start_timer(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._check_idle)
        timer.daemon = True
        try:
            timer.start()
        except RuntimeError:  # "can't start new thread": Pyodide; ``state`` checks idleness instead
            self._no_threads = True
            return
        self._timer = timer

    def _check_idle(self) -> None:
        with self._lock:
            self._timer = None
            idle = time.monotonic() - self._last_active
            if self._closed:
                return
            if idle < self._suspend_after:
                self._start_timer(self._suspend_after - idle)
            elif self._state is ComputeState.ACTIVE:
                self.set(ComputeState.SUSPENDED, "idle longer than the suspend window")

    def close(self, state: ComputeState | None = None, detail: str | None = None) -> None:
        """Stop watching: move to ``state`` (if given) for good, and stop the idle timer."""
        if state is not None:
            self._change(state, detail, final=True)
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
