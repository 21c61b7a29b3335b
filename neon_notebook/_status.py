"""A session's status as a frozen snapshot, for the views to draw and tests to build by hand.

``Session.status()`` takes one: the compute's state and its detail, the two
endpoints (summarised), the last ping, the pools, the last read or write and the last
error, every string with the session's secrets already masked. The views
(``ui/status.py``'s text, the panel, ``%neon status``) read nothing else, so
they never see a password and never touch a live session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ._endpoint import Endpoint, summary
from ._state import ComputeState


@dataclass(frozen=True)
class QueryStats:
    """The last read or write: rows, bytes, seconds, and for a write what it wrote."""

    rows: int
    bytes: int
    seconds: float
    write: str | None = None  # "append into public.t": set by a write, None for a read

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class EndpointSummary:
    """One endpoint as the views name it: who, where, which role; never its password."""

    role: str  # "pooled" (PgBouncer) or "direct"
    user: str | None
    host: str
    port: int
    database: str | None
    text: str  # the one-line summary: user@host:port/database (role)

    @classmethod
    def of(cls, endpoint: Endpoint, mask: Callable[[str], str] = str) -> EndpointSummary:
        """The summary of ``endpoint``, ``mask`` applied to its strings (the session's secrets)."""
        return cls("pooled" if endpoint.pooled else "direct", endpoint.user and mask(endpoint.user),
                   mask(endpoint.host), endpoint.port, endpoint.database and mask(endpoint.database),
                   mask(summary(endpoint)))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Endpoints:
    """The session's pooled and direct endpoints; the same one when only one was given."""

    pooled: EndpointSummary
    direct: EndpointSummary

    @property
    def same(self) -> bool:
        """Whether pooled and direct name one endpoint (so the views show it once)."""
        return self.pooled == self.direct

    def __str__(self) -> str:
        """The pooled (or only) endpoint, then the direct one when it differs."""
        return str(self.pooled) if self.same else f"{self.pooled}, {self.direct}"


@dataclass(frozen=True)
class PoolStats:
    """One pool: its size, connections in use, idle connections."""

    role: str
    size: int
    in_use: int
    idle: int


@dataclass(frozen=True)
class Status:
    """What a session knows of itself at one moment; every string safe to show."""

    state: ComputeState
    endpoints: Endpoints
    detail: str | None = None  # why the state is what it is (plain words)
    ping: float | None = None  # seconds, the last warm-up's round trip
    pools: tuple[PoolStats, ...] = ()
    last_query: QueryStats | None = None
    last_error: str | None = None  # cleared by the next success
    closed: bool = False
    transport: str | None = None  # None: PostgreSQL over TCP; else how requests travel (SQL over HTTP)
