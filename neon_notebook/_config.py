"""Connection settings from Neon and Prisma URLs, with passwords kept out of sight.

Users arrive with a Prisma-style ``.env``: ``DATABASE_URL`` names Neon's pooled
endpoint (PgBouncer) and ``DIRECT_URL`` the compute itself. ``resolve()`` turns
those, or a URL passed in, into a ``Settings`` holding both endpoints:

- the missing Neon endpoint is derived from the other one (the pooled host has
  ``-pooler`` right after the endpoint id);
- an endpoint not known to be direct (a Neon host without ``-pooler``, a
  ``direct_url``/``DIRECT_URL``, ``pgbouncer=false``) is treated as a pooler:
  PgBouncer listens on any host and port, so guessing "direct" would break it;
- Prisma-only URL parameters are mapped to settings and removed, so libpq never
  sees them;
- TLS is required for every non-local host;
- a malformed URL fails at once with a ``ConfigurationError`` that says what is
  wrong, shown with its password masked.

libpq itself parses what remains (``psycopg.conninfo.conninfo_to_dict``), so
percent-decoding and parameter names are exactly libpq's. Every repr, str and
message shows passwords as ``****``; ``redact()`` does the same for arbitrary
text such as driver errors.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from urllib.parse import quote, quote_plus, unquote

import psycopg
from dotenv import dotenv_values
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ._durations import is_seconds
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_WAKE_TIMEOUT",
    "Endpoint",
    "Settings",
    "redact",
    "resolve",
    "summary",
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

DEFAULT_PORT = 5432
MASK = "****"
#: Longest timeout PostgreSQL accepts (statement_timeout is at most 2^31 - 1 ms);
#: every timeout in seconds is held to it, so none fails only at the first read.
MAX_SECONDS = 2147483.647

_SCHEMES = ("postgresql://", "postgres://")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SECRET_PARAMS = ("password", "sslpassword")
# Neon serves its endpoints under these domains (Vercel Postgres is Neon).
_NEON_DOMAINS = (".neon.tech", ".postgres.vercel-storage.com")
_POOLER_SUFFIX = "-pooler"

# Prisma's PostgreSQL URL parameters (prisma-engines, quaint/src/connector/
# postgres/url.rs). The ones libpq also knows with the same meaning stay for
# libpq: sslmode, sslcert, sslpassword, host, application_name, channel_binding,
# options. Beware: Prisma reads `sslcert` as the server's CA file, libpq as the
# client certificate; we keep libpq's meaning.
_PRISMA_MAPPED = ("connection_limit", "pool_timeout", "connect_timeout", "schema", "pgbouncer")
# Removed without effect: socket_timeout is a client-side query timeout meant
# for web requests (it would kill long notebook queries); statement caching and
# connection lifetimes belong to the session's pool; sslaccept and sslidentity
# (a PKCS12 bundle) have no libpq equivalent.
_PRISMA_IGNORED = (
    "socket_timeout",
    "statement_cache_size",
    "max_connection_lifetime",
    "max_idle_connection_lifetime",
    "sslaccept",
    "sslidentity",
)

_Fail = Callable[[str], ConfigurationError]

_ENV_NAMES = ("DATABASE_URL", "DIRECT_URL")
# Prisma's project root is the nearest directory with a package.json; a Python
# project marks its root with pyproject.toml, so both count here.
_ROOT_MARKERS = ("package.json", "pyproject.toml")


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
        return _is_neon(self.host)

    @property
    def endpoint_id(self) -> str | None:
        """Neon's endpoint id (first DNS label without ``-pooler``), None for other hosts."""
        if not self.is_neon:
            return None
        return self.host.split(".", 1)[0].lower().removesuffix(_POOLER_SUFFIX)

    @property
    def is_local(self) -> bool:
        """Whether the host is this machine (loopback address or Unix socket)."""
        return _is_local(self.host)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values this endpoint holds, for ``redact(text, *endpoint.secrets)``."""
        values = (self.password, *(self.params.get(k) for k in _SECRET_PARAMS))
        return tuple(v for v in values if v)

    def conninfo(self, **overrides: object) -> str:
        """libpq ``key=value`` string for connecting; includes the password, so never show it.

        ``overrides`` replace or add libpq parameters (None drops one); a float
        ``connect_timeout`` is rounded up to the whole seconds libpq expects.
        """
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
            f"{quote(k, safe='')}={MASK if k in _SECRET_PARAMS else quote(v, safe='/:,')}"
            for k, v in query.items()
        ]
        return f"postgresql://{netloc}{path}" + ("?" + "&".join(pairs) if pairs else "")

    def __repr__(self) -> str:
        return f"Endpoint({self.redacted()!r}, pooled={self.pooled})"

    def __str__(self) -> str:
        return self.redacted()


@dataclass(frozen=True)
class Settings:
    """Both endpoints and the timeouts and pool size to use with them. Times are in seconds."""

    pooled: Endpoint | None
    direct: Endpoint | None
    schema: str | None = None
    #: Per connection attempt; None = bounded only by wake_timeout.
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT
    #: Overall deadline for getting a connection, retries and cold start included.
    wake_timeout: float = DEFAULT_WAKE_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE
    #: Wait for a free pooled connection; None = wait forever (Prisma's 0).
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


def summary(endpoint: Endpoint) -> str:
    """One line naming an endpoint (user, host, port, database, role), never its password."""
    who = f"{endpoint.user}@" if endpoint.user else ""
    database = endpoint.database or "(default database)"
    role = "pooled" if endpoint.pooled else "direct"
    return f"{who}{endpoint.host}:{endpoint.port}/{database} ({role})"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret, raw or percent- or conninfo-encoded, replaced by ``****``."""
    forms = set()
    for secret in filter(None, secrets):
        escaped = secret.replace("\\", "\\\\").replace("'", "\\'")
        forms.update((secret, quote(secret, safe=""), quote(secret), quote_plus(secret), escaped))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def resolve(
    url: str | None = None,
    *,
    direct_url: str | None = None,
    schema: str | None = None,
    connect_timeout: float | None = None,
    wake_timeout: float | None = None,
    pool_size: int | None = None,
    pool_timeout: float | None = None,
    statement_timeout: float | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings from URLs, or (when ``url`` is None) DATABASE_URL / DIRECT_URL from the environment or ``.env``.

    Keyword arguments win over URL parameters, which win over the defaults.
    Here None means "not given" and 0 means "no limit", as in Prisma URLs.
    """
    found: dict[str, tuple[str, str]] = {}
    if url is None:
        found = _from_environment(environ if environ is not None else os.environ, dotenv_path)
    primary = (url, "the url argument") if url is not None else found.get("DATABASE_URL")
    secondary = (direct_url, "the direct_url argument") if direct_url is not None else found.get("DIRECT_URL")
    if primary is None and secondary is None:
        raise ConfigurationError(
            "No database URL given. Pass one (resolve('postgresql://...')), or set DATABASE_URL "
            "(Neon's pooled connection string) and optionally DIRECT_URL (the direct one) in the "
            "environment or in a .env file in the working directory, ./prisma or the project root."
        )
    first = _parse_url(*primary, known_direct=False) if primary else None
    second = _parse_url(*secondary, known_direct=True) if secondary else None
    pooled, direct = _assign_roles(first[0] if first else None, second[0] if second else None)
    given = {
        "schema": schema,
        "connect_timeout": connect_timeout,
        "wake_timeout": wake_timeout,
        "pool_size": pool_size,
        "pool_timeout": pool_timeout,
        "statement_timeout": statement_timeout,
    }
    chosen = {
        **(second[1] if second else {}),
        **(first[1] if first else {}),
        **{k: v for k, v in given.items() if v is not None},
    }
    for name in ("connect_timeout", "pool_timeout", "statement_timeout"):
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
        return only, replace(only, host=_neon_host(only.host, pooled=False), pooled=False)
    return replace(only, host=_neon_host(only.host, pooled=True), pooled=True), only


def _neon_host(host: str, *, pooled: bool) -> str:
    """The Neon host for the other role: add or drop ``-pooler`` after the endpoint id."""
    label, dot, rest = host.partition(".")
    label = label[: -len(_POOLER_SUFFIX)] if label.lower().endswith(_POOLER_SUFFIX) else label
    return f"{label}{_POOLER_SUFFIX if pooled else ''}{dot}{rest}"


def _parse_url(url: str, source: str, *, known_direct: bool) -> tuple[Endpoint, dict[str, object]]:
    """An Endpoint and the settings the URL's Prisma parameters ask for.

    ``known_direct``: the URL was given as the direct one. Otherwise an endpoint
    is pooled unless it says it is not: a Neon host without ``-pooler``, or
    ``pgbouncer=false``.
    """
    text = url.strip()
    shown = _redact_raw(text)

    def fail(problem: str) -> ConfigurationError:
        return ConfigurationError(f"{source} is not a usable Postgres URL: {problem}\n    {shown}")

    scheme = next((s for s in _SCHEMES if text[: len(s)].lower() == s), None)
    if scheme is None:
        hint = " (key=value connection strings are not accepted here)" if "://" not in text else ""
        raise fail(f"it must start with postgresql:// or postgres://{hint}.")
    rest = text[len(scheme) :]
    # libpq: the user:password part runs to the first "@" seen before any "/".
    stop = next((i for i, c in enumerate(rest) if c in "@/"), len(rest))
    userinfo_end = stop + 1 if stop < len(rest) and rest[stop] == "@" else 0
    if "@" in rest[userinfo_end:]:
        raise fail(
            "it has an '@' after the user:password part. Percent-encode special characters "
            "in the password and parameters ('@' as %40, '/' as %2F, ':' as %3A)."
        )
    raw_password = rest[: max(userinfo_end - 1, 0)].partition(":")[2]
    # The query starts at the first "?" after the password (which may contain "?").
    query_at = rest.find("?", userinfo_end)
    base, query = (rest, "") if query_at < 0 else (rest[:query_at], rest[query_at + 1 :])

    kept, prisma = [], {}
    for piece in filter(None, query.split("&")):
        raw_key, _, raw_value = piece.partition("=")
        key = _decode(raw_key, fail)
        if key in _PRISMA_MAPPED:
            prisma[key] = _decode(raw_value, fail)
        elif key not in _PRISMA_IGNORED:
            kept.append(piece)
    try:
        parts = conninfo_to_dict("postgresql://" + base + ("?" + "&".join(kept) if kept else ""))
    except psycopg.ProgrammingError as exc:
        raise fail(_explain_libpq(str(exc), raw_password)) from None
    except UnicodeDecodeError:
        raise fail("a %-escape does not decode to UTF-8 text (such as %ff); percent-encode the "
                   "UTF-8 bytes of each character ('é' is %C3%A9).") from None

    host = parts.pop("host", "")
    port = parts.pop("port", str(DEFAULT_PORT))
    if not host:
        raise fail("it names no host (expected postgresql://user:password@host/dbname).")
    if "," in host:
        raise fail("it names several hosts; give exactly one.")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise fail("the port is not a number between 1 and 65535.")
    user, password, database = parts.pop("user", None), parts.pop("password", None), parts.pop("dbname", None)
    _apply_sslmode(parts, host, fail)
    said = _flag("pgbouncer", prisma.pop("pgbouncer"), fail) if "pgbouncer" in prisma else None
    if said is None:
        pooler_host = host.split(".", 1)[0].lower().endswith(_POOLER_SUFFIX)
        said = pooler_host or not (known_direct or _is_neon(host))
    endpoint = Endpoint(
        host=host,
        port=int(port),
        database=database,
        user=user,
        password=password,
        pooled=said,
        params=parts,
    )
    return endpoint, _prisma_settings(prisma, fail)


def _decode(raw: str, fail: _Fail) -> str:
    """Strict percent-decoding, as libpq does it ("+" stays "+")."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise fail("it has an invalid %-escape: '%' must start a two-digit hex code; write '%' itself as %25.")
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise fail("a %-escaped parameter is not valid UTF-8.") from None


def _explain_libpq(message: str, raw_password: str) -> str:
    """libpq's complaint about the URL, reworded where it would quote the password."""
    if "unexpected spaces" in message:
        return "it contains a space; write spaces as %20."
    if "percent-encoded" in message:
        return "it has an invalid %-escape: '%' must start a two-digit hex code; write '%' itself as %25."
    secrets = (raw_password, unquote(raw_password)) if raw_password else ()
    detail = redact(message.strip().splitlines()[0], *secrets)
    return f"libpq cannot parse it ({detail}). Prisma-only parameters are removed automatically; check the others."


def _apply_sslmode(params: dict[str, str], host: str, fail: _Fail) -> None:
    """Require TLS for every non-local host; refuse plain text for Neon, which refuses it too."""
    mode = params.get("sslmode")
    if mode is not None and mode not in _SSLMODES:
        raise fail(f"sslmode={mode!r} is not one of {', '.join(_SSLMODES)}.")
    if _is_local(host):
        return
    neon = _is_neon(host)
    if mode is None or (neon and mode == "prefer"):
        # "prefer" would negotiate TLS with Neon anyway; "require" only forbids the downgrade.
        params["sslmode"] = "require"
    elif neon and mode in ("disable", "allow"):
        raise fail(f"Neon accepts only TLS connections, but the URL asks for sslmode={mode}; use sslmode=require.")


def _prisma_settings(prisma: dict[str, str], fail: _Fail) -> dict[str, object]:
    """Settings asked for by Prisma parameters, as Settings field names and values."""
    chosen: dict[str, object] = {}
    if "connection_limit" in prisma:
        raw = prisma["connection_limit"]
        if not raw.isdigit() or int(raw) < 1:
            raise fail(f"connection_limit must be a whole number of at least 1, got {raw!r}.")
        chosen["pool_size"] = int(raw)
    for key in ("pool_timeout", "connect_timeout"):
        if key in prisma:
            raw = prisma[key]
            if not re.fullmatch(r"\d+(\.\d+)?", raw):
                raise fail(f"{key} must be a number of seconds (0 = no limit), got {raw!r}.")
            chosen[key] = float(raw) or None
    if "schema" in prisma:
        if not prisma["schema"]:
            raise fail("schema is empty; name a schema or drop the parameter.")
        chosen["schema"] = prisma["schema"]
    return chosen


def _flag(name: str, raw: str, fail: _Fail) -> bool:
    if raw not in ("true", "false"):
        raise fail(f"{name} must be true or false, got {raw!r}.")
    return raw == "true"


def _check_seconds(name: str, value: object, *, allow_none: bool) -> None:
    """Refuse what is not a finite number of seconds from 0 to MAX_SECONDS (bools, nan, inf...)."""
    if value is None and allow_none:
        return
    if not is_seconds(value, most=MAX_SECONDS):
        limit = " (0 or None for no limit)" if allow_none else ""
        raise ConfigurationError(
            f"{name} must be a number of seconds from 0 to {MAX_SECONDS} (PostgreSQL's longest "
            f"timeout, 2^31-1 ms){limit}, got {value!r}.")


def _is_neon(host: str) -> bool:
    host = host.lower()
    return host.startswith("ep-") and host.endswith(_NEON_DOMAINS)


def _is_local(host: str) -> bool:
    if host.startswith(("/", "@")) or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact_raw(text: str) -> str:
    """A possibly malformed URL for display: everything that may be a password masked.

    The password is taken to run to the *last* "@", the safe reading when the URL
    has several; password parameters and a non-numeric "port" (``user:secret``
    without a host) are masked too.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _redact_key_value(text)
    text = re.sub(r"((?:^|[?&])(?:ssl)?password=)[^&]*", rf"\1{MASK}", text)
    scheme, sep, rest = text.partition("://")
    if "@" in rest:
        credentials, _, after = rest.rpartition("@")
        user, colon, _ = credentials.partition(":")
        return f"{scheme}://{user}{colon and ':' + MASK}@{after}"
    return f"{scheme}://" + re.sub(r"^([^/?:]*):(?!\d*(?:[/?]|$))[^/?]*", rf"\1:{MASK}", rest)


# A password value: quoted (to the closing quote, or the end if there is none), or
# unquoted up to the next "key=" (an unescaped space there is more likely a typo
# inside the password than the end of it).
_KV_SECRET = re.compile(
    r"((?:^|\s)(?:ssl)?password\s*=\s*)"
    r"('(?:[^'\\]|\\.)*(?:'|$)|(?:\\.|[^\s\\]|\s+(?!\s|\w+\s*=))*\\?)")


def _redact_key_value(text: str) -> str:
    """Text that is no URL (a libpq key=value string, or a URL without its scheme), secrets masked.

    A password value is quoted with ``'`` (``\\'`` inside) or runs to the next
    ``key=``, escaped spaces (``\\ ``) included. A ``user:secret@`` part is
    masked as in a URL.
    """
    text = _KV_SECRET.sub(rf"\1{MASK}", text)
    if "@" in text:
        credentials, _, after = text.rpartition("@")
        head, colon, _ = credentials.partition(":")
        if colon:
            return f"{head}:{MASK}@{after}"
    return text


def _from_environment(
    environ: Mapping[str, str], dotenv_path: str | os.PathLike[str] | None
) -> dict[str, tuple[str, str]]:
    """DATABASE_URL and DIRECT_URL with where each came from, read the way Prisma reads them.

    Prisma (packages/internals/src/utils/getEnvPaths.ts, tryLoadEnvs.ts) loads
    the project root's ``.env``, then the first of ``./prisma/.env`` and
    ``./.env``; a variable already set wins over any file (dotenv does not
    override), the root file over the other, and ``${VAR}`` is expanded with
    the environment first (dotenv-expand). An explicit ``dotenv_path`` is the
    only file read.
    """
    if dotenv_path is not None:
        files = [Path(dotenv_path)]
        if not files[0].is_file():
            raise ConfigurationError(f"dotenv_path {str(dotenv_path)!r} is not a file.")
    else:
        files = _dotenv_files(Path.cwd())
    loaded: dict[str, tuple[str, Path]] = {}
    for path in files:
        for key, value in dotenv_values(path, interpolate=False).items():
            if value is not None and key not in loaded:
                loaded[key] = (value, path)

    def lookup(name: str) -> str:
        return environ[name] if name in environ else loaded.get(name, ("",))[0]

    found = {}
    for name in _ENV_NAMES:
        if environ.get(name):
            found[name] = (environ[name], f"{name} (from the environment)")
        elif name in loaded:
            value, path = loaded[name]
            expanded = _expand(value, lookup, frozenset({name}))
            if expanded:
                found[name] = (expanded, f"{name} (from {path})")
    return found


_REFERENCE = re.compile(r"(\\?)\$\{([A-Za-z0-9_]+)\}")


def _expand(value: str, lookup: Callable[[str], str], seen: frozenset[str]) -> str:
    """dotenv-expand's ``${VAR}`` substitution: recursive, ``\\${VAR}`` kept literally, cycles empty."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        name = match.group(2)
        return "" if name in seen else _expand(lookup(name), lookup, seen | {name})

    return _REFERENCE.sub(substitute, value)


def _dotenv_files(cwd: Path) -> list[Path]:
    """The .env files Prisma's CLI would load from ``cwd``, highest precedence first."""
    files = []
    root = next((d for d in (cwd, *cwd.parents) if any((d / m).is_file() for m in _ROOT_MARKERS)), None)
    if root is not None and (root / ".env").is_file():
        files.append(root / ".env")
    schema_env = next((p for p in (cwd / "prisma" / ".env", cwd / ".env") if p.is_file()), None)
    if schema_env is not None and all(schema_env.resolve() != f.resolve() for f in files):
        files.append(schema_env)
    return files
