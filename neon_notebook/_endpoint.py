"""One Postgres endpoint (where to connect and as whom) and what its host says about it.

Neon's hosts tell the role apart: the pooled endpoint (PgBouncer) has
``-pooler`` right after the endpoint id (``ep-x-pooler.region.aws.neon.tech``).
Every repr and str of an ``Endpoint`` shows its password as ``****``.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote

from ._redact import MASK, SECRET_PARAMS

__all__ = ["DEFAULT_PORT", "Endpoint", "is_local", "is_neon", "neon_host", "summary"]

DEFAULT_PORT = 5432
POOLER_SUFFIX = "-pooler"
# Neon serves its endpoints under these domains (Vercel Postgres is Neon).
_NEON_DOMAINS = (".neon.tech", ".postgres.vercel-storage.com")


@dataclass(frozen=True)
class Endpoint:
    """One Postgres endpoint: where to connect and as whom. repr and str mask the password."""

    host: str
    port: int = DEFAULT_PORT
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    pooled: bool = False
    params: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "password", self.password or None)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def is_neon(self) -> bool:
        """Whether the host is a Neon endpoint (``ep-...`` under a Neon domain)."""
        return is_neon(self.host)

    @property
    def endpoint_id(self) -> str | None:
        """Neon's endpoint id (first DNS label without ``-pooler``), None for other hosts."""
        if not self.is_neon:
            return None
        return self.host.split(".", 1)[0].lower().removesuffix(POOLER_SUFFIX)

    @property
    def is_local(self) -> bool:
        """Whether the host is this machine (loopback address or Unix socket)."""
        return is_local(self.host)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values this endpoint holds, for ``redact(text, *endpoint.secrets)``."""
        values = (self.password, *(self.params.get(k) for k in SECRET_PARAMS))
        return tuple(v for v in values if v)

    def conninfo(self, **overrides: object) -> str:
        """libpq ``key=value`` string for connecting; includes the password, so never show it.

        ``overrides`` replace or add libpq parameters (None drops one); a float
        ``connect_timeout`` is rounded up to the whole seconds libpq expects.
        Needs psycopg (only a libpq connection uses a conninfo string).
        """
        from psycopg.conninfo import make_conninfo

        values: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
            **self.params,
            **overrides,
        }
        timeout = values.get("connect_timeout")
        if isinstance(timeout, float):
            values["connect_timeout"] = math.ceil(timeout)
        return make_conninfo("", **values)

    def redacted(self) -> str:
        """This endpoint as a libpq URL with the password shown as ``****``."""
        userinfo = quote(self.user, safe="") if self.user else ""
        if self.password:
            userinfo += ":" + MASK
        query = dict(self.params)
        if self.host.startswith(("/", "@")):  # Unix socket: libpq wants it as a parameter
            query = {"host": self.host, "port": str(self.port), **query}
            netloc = ""
        else:
            netloc = f"[{self.host}]" if ":" in self.host else self.host
            netloc += f":{self.port}"
        if userinfo:
            netloc = f"{userinfo}@{netloc}"
        path = "/" + quote(self.database, safe="") if self.database else "/"
        pairs = [
            f"{quote(k, safe='')}={MASK if k in SECRET_PARAMS else quote(v, safe='/:,')}"
            for k, v in query.items()
        ]
        return f"postgresql://{netloc}{path}" + ("?" + "&".join(pairs) if pairs else "")

    def __repr__(self) -> str:
        return f"Endpoint({self.redacted()!r}, pooled={self.pooled})"

    def __str__(self) -> str:
        return self.redacted()


def summary(endpoint: Endpoint) -> str:
    """One line naming an endpoint (user, host, port, database, role), never its password."""
    who = f"{endpoint.user}@" if endpoint.user else ""
    database = endpoint.database or "(default database)"
    role = "pooled" if endpoint.pooled else "direct"
    return f"{who}{endpoint.host}:{endpoint.port}/{database} ({role})"


def is_neon(host: str) -> bool:
    """Whether ``host`` is a Neon endpoint's (``ep-...`` under a Neon domain)."""
    host = host.lower()
    return host.startswith("ep-") and host.endswith(_NEON_DOMAINS)


def is_local(host: str) -> bool:
    """Whether ``host`` is this machine: a Unix socket, ``localhost`` or a loopback address."""
    if host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_pooler_host(host: str) -> bool:
    """Whether the host's first label ends with ``-pooler`` (Neon's name for its PgBouncer)."""
    return host.split(".", 1)[0].lower().endswith(POOLER_SUFFIX)


def neon_host(host: str, *, pooled: bool) -> str:
    """The Neon host for the other role: add or drop ``-pooler`` after the endpoint id."""
    label, dot, rest = host.partition(".")
    label = label[: -len(POOLER_SUFFIX)] if label.lower().endswith(POOLER_SUFFIX) else label
    return f"{label}{POOLER_SUFFIX if pooled else ''}{dot}{rest}"
