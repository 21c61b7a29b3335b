"""What a ``Session`` owns: its settings, state tracker, two pools and keep-warm timer.

Everything the session hands out (the pools' connectors and connection-lost
callbacks, the finalizer) holds this object, never the ``Session``: an
unreferenced session is then collected, and its finalizer closes these
(``weakref.finalize`` keeps its arguments alive, so they must not lead back).
"""

from __future__ import annotations

import functools
import logging

import psycopg

from ._config import Settings
from ._connection import open_connection
from ._endpoint import Endpoint, summary
from ._lifecycle import Lifecycle
from ._pool import Pool
from ._retry import Attempts
from ._state import ComputeState
from ._translate import Verdict, classify
from .errors import ConnectError

__all__ = ["ROLES", "Resources"]

log = logging.getLogger("neon_notebook")

ROLES = ("pooled", "direct")


class Resources(Lifecycle):
    """The pools, the tracker and what they record, shared by a Session and the callbacks it hands out."""

    def __init__(self, settings: Settings, suspend_after: float | None) -> None:
        super().__init__(settings, suspend_after)
        # Retire idle connections before the compute's suspend window ends,
        # so a connection killed by a suspension is never handed out.
        max_idle = None if suspend_after is None else max(1.0, suspend_after * 0.8)
        self.pools = {
            role: Pool(role, functools.partial(self.open, self.endpoint(role)), max_size=settings.pool_size,
                       timeout=settings.pool_timeout, max_idle=max_idle, on_dead=self.connection_lost)
            for role in ROLES
        }

    def open(self, endpoint: Endpoint) -> psycopg.Connection:
        """A new connection to ``endpoint`` (the pools' ``connect``), the state following the attempts."""
        attempts = Attempts()
        was = self.tracker.state

        def on_attempt(n: int) -> None:
            if n == 1 and self.tracker.state is not ComputeState.ACTIVE:
                self.set_state(ComputeState.WAKING, f"connecting to {summary(endpoint)}")

        def on_retry(n: int, exc: BaseException, verdict: Verdict, delay: float) -> None:
            log.info("attempt %d to %s failed (%s); retrying in %.2f s", n, summary(endpoint),
                     verdict.reason, delay)
            self.set_state(ComputeState.WAKING, verdict.reason)

        try:
            conn = open_connection(endpoint, self.settings, on_attempt=on_attempt,
                                   on_retry=on_retry, attempts=attempts)
        except ConnectError as exc:
            self.set_state(ComputeState.ERROR, str(exc))
            raise
        except BaseException as exc:  # Ctrl-C, or a bug: we no longer know what the compute does
            if self.tracker.state is ComputeState.WAKING:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by {type(exc).__name__}"
                self.set_state(ComputeState.UNKNOWN, f"the connection attempt was {why}")
            raise
        conn._nn_attempts = attempts  # read by warm_up
        conn._nn_woke = was is not ComputeState.ACTIVE
        self.set_state(ComputeState.ACTIVE)
        return conn

    def connection_lost(self, exc: BaseException) -> None:
        """A connection died under us: a transient cause means the compute suspended."""
        verdict = classify(exc)
        if verdict.transient:
            self.set_state(ComputeState.SUSPENDED, verdict.reason)

    def close(self) -> None:
        """Stop the timers and close the pools (borrowed connections close when returned); idempotent."""
        super().close()
        for pool in self.pools.values():
            pool.close()
