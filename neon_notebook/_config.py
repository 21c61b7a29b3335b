"""The session's settings: both endpoints, the timeouts and the pool size, and where they come from.

Users arrive with a Prisma-style ``.env``: ``DATABASE_URL`` names Neon's pooled
endpoint (PgBouncer) and ``DIRECT_URL`` the compute itself. ``resolve()`` turns
those (``_dotenv``), or a URL passed in (``_urls``), into a ``Settings``
holding both endpoints; the missing Neon endpoint is derived from the other one.

``Settings``' fields after the two endpoints are the one declaration of the
connection options: ``resolve()`` takes exactly those names, and
``neon_notebook.connect()`` spells them out for Jupyter's shift-tab (a test
checks that the two lists agree). ``UNSET`` means "not given" (the URL's
value or the default applies); ``None`` means "no limit" only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from ._dotenv import from_environment
from ._durations import is_seconds
from ._endpoint import Endpoint, neon_host
from ._urls import parse_url
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_WAKE_TIMEOUT",
    "OPTIONS",
    "UNSET",
    "Settings",
    "Unset",
    "resolve",
]

#: Seconds per connection attempt. Neon advises 10-15 s so that one attempt can
#: ride out a cold start; Prisma's 5 s default is too short for that.
DEFAULT_CONNECT_TIMEOUT = 15.0
#: Seconds to keep retrying, cold start included. Activation usually takes
#: under a few seconds and Neon's control plane gives a wake-up 60 s at most.
DEFAULT_WAKE_TIMEOUT = 60.0
#: Connections per pool: a notebook runs a few queries at a time, not hundreds.
DEFAULT_POOL_SIZE = 5
#: Seconds to wait for a free pooled connection (psycopg_pool's default).
DEFAULT_POOL_TIMEOUT = 30.0
#: Longest timeout PostgreSQL accepts (statement_timeout is at most 2^31 - 1 ms);
#: every timeout in seconds is held to it, so none fails only at the first read.
MAX_SECONDS = 2147483.647


class Unset:
    """The type of ``UNSET``: an option not given, so the URL's value or the default applies."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


@dataclass(frozen=True)
class Settings:
    """Both endpoints and the timeouts and pool size to use with them. Times are in seconds.

    A timeout of ``None`` means no limit (a Prisma URL says so with 0).
    """

    pooled: Endpoint | None
    direct: Endpoint | None
    #: The schema to put first on search_path; None = the server's search_path.
    schema: str | None = None
    #: Per connection attempt; None = bounded only by wake_timeout.
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    #: Overall deadline for getting a connection, retries and cold start included.
    wake_timeout: float = DEFAULT_WAKE_TIMEOUT
    #: Connections per pool (Prisma's connection_limit).
    pool_size: int = DEFAULT_POOL_SIZE
    #: Wait for a free pooled connection; None = wait forever.
    pool_timeout: float | None = DEFAULT_POOL_TIMEOUT
    #: Server-side limit per statement; None = no limit.
    statement_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.pooled is None and self.direct is None:
            raise ConfigurationError("Settings needs a pooled or a direct endpoint (or both).")
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < 1:
            raise ConfigurationError(f"pool_size must be a whole number of at least 1, got {self.pool_size!r}.")
        _check_seconds("wake_timeout", self.wake_timeout, allow_none=False)
        if self.wake_timeout <= 0:
            raise ConfigurationError(f"wake_timeout must be more than 0 seconds, got {self.wake_timeout!r}.")
        for name in ("connect_timeout", "pool_timeout", "statement_timeout"):
            _check_seconds(name, getattr(self, name), allow_none=True)


#: The connection options, in order: Settings' fields after the two endpoints.
OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(Settings))[2:]
# Options where 0 means "no limit", as in Prisma URLs; held as None.
_ZERO_IS_NONE = ("connect_timeout", "pool_timeout", "statement_timeout")


def resolve(
    url: str | None = None,
    *,
    direct_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Settings:
    """Settings from URLs, or (when ``url`` is None) DATABASE_URL / DIRECT_URL from the environment or ``.env``.

    ``options`` are ``Settings``' fields (``OPTIONS``). Options given win over
    URL parameters, which win over the defaults; ``UNSET`` is "not given".
    """
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        raise TypeError(f"resolve() got an unexpected keyword argument {unknown[0]!r}")
    found: dict[str, tuple[str, str]] = {}
    if url is None:
        found = from_environment(environ if environ is not None else os.environ, dotenv_path)
    primary = (url, "the url argument") if url is not None else found.get("DATABASE_URL")
    secondary = (direct_url, "the direct_url argument") if direct_url is not None else found.get("DIRECT_URL")
    if primary is None and secondary is None:
        raise ConfigurationError(
            "No database URL given. Pass one (resolve('postgresql://...')), or set DATABASE_URL "
            "(Neon's pooled connection string) and optionally DIRECT_URL (the direct one) in the "
            "environment or in a .env file in the working directory, ./prisma or the project root."
        )
    first = parse_url(*primary, known_direct=False) if primary else None
    second = parse_url(*secondary, known_direct=True) if secondary else None
    pooled, direct = _assign_roles(first[0] if first else None, second[0] if second else None)
    chosen = {
        **(second[1] if second else {}),
        **(first[1] if first else {}),
        **{name: value for name, value in options.items() if value is not UNSET},
    }
    for name in _ZERO_IS_NONE:
        if chosen.get(name) == 0:
            chosen[name] = None
    return Settings(pooled=pooled, direct=direct, **chosen)


def _assign_roles(first: Endpoint | None, second: Endpoint | None) -> tuple[Endpoint, Endpoint]:
    """(pooled, direct): both given as is, or the missing one derived (Neon) or shared (others)."""
    if first is not None and second is not None:
        return first, second
    only = first or second
    assert only is not None
    if not only.is_neon:
        return only, only
    if only.pooled:
        return only, replace(only, host=neon_host(only.host, pooled=False), pooled=False)
    return replace(only, host=neon_host(only.host, pooled=True), pooled=True), only


def _check_seconds(name: str, value: object, *, allow_none: bool) -> None:
    """Refuse what is not a finite number of seconds from 0 to MAX_SECONDS (bools, nan, inf...)."""
    if value is None and allow_none:
        return
    if not is_seconds(value, most=MAX_SECONDS):
        limit = " (0 or None for no limit)" if allow_none else ""
        raise ConfigurationError(
            f"{name} must be a number of seconds from 0 to {MAX_SECONDS} (PostgreSQL's longest "
            f"timeout, 2^31-1 ms){limit}, got {value!r}.")
