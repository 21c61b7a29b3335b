"""The plugin's options, read at start-up: nothing here imports more than the standard library.

The URLs are parsed (``neon_notebook._config.resolve``) only when a test asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

NO_POOLER_GIVEN = (
    "needs the pooled endpoint, and --neon-url names one endpoint of a database that is not "
    "Neon's: give both (--neon-url POOLED --neon-direct-url DIRECT) to run it"
)


@dataclass(frozen=True)
class Options:
    """The plugin's command-line options (or their environment variables)."""

    url: str | None = None
    direct_url: str | None = None
    pg_bin: str | None = None

    @property
    def given(self) -> bool:
        """Whether the run uses a database given by URL instead of a LocalCompute."""
        return self.url is not None or self.direct_url is not None

    def pooler_missing(self) -> str | None:
        """Why the pooled endpoint is unavailable (a skip reason), found without starting anything."""
        if self.given:
            try:
                pooled = self.given_endpoints()[1]
            except Exception:  # a bad URL: the database's start says what is wrong, once
                return None
            return None if pooled is not None else NO_POOLER_GIVEN
        from neon_notebook.local.binaries import PGBOUNCER_INSTALL_HINT, find_pgbouncer

        if find_pgbouncer() is not None:
            return None
        return f"needs the pooled endpoint, and PgBouncer is not installed: {PGBOUNCER_INSTALL_HINT}"

    def given_endpoints(self) -> tuple[str, str | None]:
        """(direct, pooled or None) from the options, as Prisma reads DATABASE_URL and DIRECT_URL.

        Both given: as given. One Neon URL: the other derived (``-pooler`` added or
        dropped). One URL of another database: a direct endpoint and no pooler.
        """
        from neon_notebook._config import resolve

        settings = resolve(self.url or self.direct_url, direct_url=self.direct_url if self.url else None)
        if self.url and self.direct_url:
            return self.direct_url, self.url
        only = self.url or self.direct_url
        if settings.direct.is_neon:
            return _with_host(only, settings.direct.host), _with_host(only, settings.pooled.host)
        return only, None


def _with_host(url: str, host: str) -> str:
    """``url`` with its host replaced (user, password, port, path and parameters kept)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}{port}"))
