"""``connect()``: a Session from a URL or a Prisma-style environment, over TCP or Neon's HTTP endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._config import OPTIONS, UNSET, Unset, resolve
from ._http_session import HttpSession
from .errors import ConfigurationError
from .session import NEON_SUSPEND_AFTER, Session

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping

__all__ = ["Transport", "connect"]

#: ``transport=`` of ``connect``: PostgreSQL's protocol over TCP, or Neon's SQL over HTTP.
Transport = Literal["tcp", "http"]


def connect(url: str | None = None, *, direct_url: str | None = None,
            schema: str | None | Unset = UNSET,
            connect_timeout: float | None | Unset = UNSET,
            wake_timeout: float | Unset = UNSET,
            pool_size: int | Unset = UNSET,
            pool_timeout: float | None | Unset = UNSET,
            statement_timeout: float | None | Unset = UNSET,
            suspend_after: float | None = NEON_SUSPEND_AFTER,
            environ: Mapping[str, str] | None = None,
            dotenv_path: str | os.PathLike[str] | None = None,
            transport: Transport = "tcp",
            http_url: str | None = None) -> Session:
    """A ``Session`` for a Neon database; nothing is opened until first use.

    With no ``url``, ``DATABASE_URL`` and ``DIRECT_URL`` come from ``environ``
    (default: the environment) or a ``.env`` file, as Prisma reads them.
    The options mean what ``Settings``' fields say; one not given (``UNSET``)
    takes the URL's value, else the default (connect_timeout 15 s, wake_timeout
    60 s, pool_size 5, pool_timeout 30 s, no statement_timeout); ``None`` or 0
    means no limit. ``suspend_after`` is the compute's suspend window (Neon's
    default 300 s; ``None`` if disabled).

    ``transport="http"``: reads and ``execute`` go over Neon's SQL-over-HTTP endpoint
    (one HTTPS request per statement, no TCP connection to keep: for browsers,
    networks that block port 5432, one-shot queries). ``http_url`` is derived from
    a Neon host as Neon's serverless driver derives it; give it for other hosts
    (``LocalCompute.http_url``). The HTTP path needs no psycopg.
    """
    given = locals()  # the options as passed: Settings' fields are their one declaration
    options = {name: given[name] for name in OPTIONS}
    if transport not in ("tcp", "http"):
        raise ConfigurationError(f'transport= takes "tcp" or "http", got {transport!r}.')
    if http_url is not None and transport != "http":
        raise ConfigurationError('http_url= is for transport="http".')
    settings = resolve(url, direct_url=direct_url, environ=environ, dotenv_path=dotenv_path, **options)
    if transport == "http":
        return HttpSession(settings, http_url=http_url, suspend_after=suspend_after)
    return Session(settings, suspend_after=suspend_after)
