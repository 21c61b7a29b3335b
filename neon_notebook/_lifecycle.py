"""What every session owns, whatever its transport: settings, state tracker, last error, keep-warm timer.

``Resources`` (TCP: two pools) and ``HttpResources`` (Neon's HTTP endpoint)
build on it. Like them it never leads back to the ``Session``, so an
unreferenced session is collected and its finalizer closes this.
"""

from __future__ import annotations

import threading

from ._config import Settings
from ._endpoint import Endpoint
from ._state import ComputeState, StateTracker

__all__ = ["Lifecycle"]


class Lifecycle:
    """The state a session records of its compute, and the timers it runs."""

    def __init__(self, settings: Settings, suspend_after: float | None) -> None:
        self.settings = settings
        self.tracker = StateTracker(suspend_after)
        self.last_error: str | None = None
        self.closed = False
        #: Set to stop the running keep_warm pinger (None when none runs).
        self.keep_warm: threading.Event | None = None

    def endpoint(self, role: str) -> Endpoint:
        """The endpoint for ``role`` ("pooled" or "direct"): the other one when only one was given."""
        endpoint = getattr(self.settings, role) or self.settings.direct or self.settings.pooled
        assert endpoint is not None
        return endpoint

    def set_state(self, state: ComputeState, detail: str | None = None) -> None:
        """Record what was seen; a success clears ``last_error``; once closed, nothing changes."""
        if self.closed:
            return
        if state is ComputeState.ERROR:
            self.last_error = detail
        elif state is ComputeState.ACTIVE:
            self.last_error = None
        self.tracker.set(state, detail)

    def stop_keep_warm(self) -> None:
        """Stop the keep_warm pinger, if one runs."""
        if self.keep_warm is not None:
            self.keep_warm.set()
            self.keep_warm = None

    def close(self) -> None:
        """Stop the timers and the tracker; idempotent."""
        self.stop_keep_warm()
        self.tracker.close()
