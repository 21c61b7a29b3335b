"""Reading one Postgres URL: libpq's parsing, Prisma's parameters, and TLS for every remote host.

- Prisma-only URL parameters are mapped to settings and removed, so libpq never
  sees them;
- TLS is required for every non-local host;
- an endpoint not known to be direct (a Neon host without ``-pooler``, a URL
  given as the direct one, ``pgbouncer=false``) is treated as a pooler:
  PgBouncer listens on any host and port, so guessing "direct" would break it;
- a malformed URL fails at once with a ``ConfigurationError`` that says what is
  wrong, shown with its password masked.

What remains is parsed as libpq parses a URI (``conninfo_uri_parse_options`` in
libpq's fe-connect.c, rewritten here so that no driver is needed, as in Pyodide):
the same percent-decoding, parameter names, results and error messages as
``psycopg.conninfo.conninfo_to_dict``. The parameter names are asked of the
installed libpq when psycopg is there, else libpq 18's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from urllib.parse import unquote

from ._endpoint import DEFAULT_PORT, Endpoint, is_local, is_neon, is_pooler_host
from ._redact import redact, redact_url
from .errors import ConfigurationError

__all__ = ["LIBPQ_KEYWORDS", "libpq_uri", "parse_url"]

_SCHEMES = ("postgresql://", "postgres://")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

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


def parse_url(url: str, source: str, *, known_direct: bool) -> tuple[Endpoint, dict[str, object]]:
    """An Endpoint and the settings the URL's Prisma parameters ask for (Settings field names).

    ``source`` names where the URL came from, for the error. ``known_direct``:
    the URL was given as the direct one. Otherwise an endpoint is pooled unless
    it says it is not: a Neon host without ``-pooler``, or ``pgbouncer=false``.
    """
    text = url.strip()
    shown = redact_url(text)

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
        parts = libpq_uri("postgresql://" + base + ("?" + "&".join(kept) if kept else ""))
    except UnicodeDecodeError:
        raise fail("a %-escape does not decode to UTF-8 text (such as %ff); percent-encode the "
                   "UTF-8 bytes of each character ('é' is %C3%A9).") from None
    except ValueError as exc:
        raise fail(_explain_libpq(str(exc), raw_password)) from None

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
        said = is_pooler_host(host) or not (known_direct or is_neon(host))
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


def libpq_uri(uri: str) -> dict[str, str]:
    """The libpq parameters a ``postgresql://`` URI sets, as ``conninfo_to_dict`` gives them.

    Raises ``ValueError`` with libpq's message for what libpq refuses, and
    ``UnicodeDecodeError`` for a value whose bytes are not UTF-8, as psycopg does.
    """
    buf = uri.encode().split(b"\0", 1)[0]  # libpq reads a C string
    keywords = _libpq_keywords()
    found: dict[str, bytes] = {}
    p = buf.index(b"://") + 3
    end = len(buf)

    def scan(start: int, stops: bytes) -> int:
        while start < end and buf[start] not in stops:
            start += 1
        return start

    at = scan(p, b"@/")
    if at < end and buf[at] == ord("@"):
        colon = scan(p, b":@")
        if colon > p:
            found["user"] = _libpq_decode(buf[p:colon])
        if buf[colon] == ord(":") and at > colon + 1:
            found["password"] = _libpq_decode(buf[colon + 1 : at])
        p = at + 1
    hosts, ports = [], []
    while True:
        if p < end and buf[p] == ord("["):
            close = scan(p + 1, b"]")
            if close == end:
                raise _libpq_error('end of string reached when looking for matching "]" in IPv6 host address '
                                   'in URI: "%s"', buf)
            if close == p + 1:
                raise _libpq_error('IPv6 host address may not be empty in URI: "%s"', buf)
            hosts.append(buf[p + 1 : close])
            p = close + 1
            if p < end and buf[p] not in b":/?,":
                raise ValueError(f'unexpected character "{buf[p : p + 1].decode(errors="replace")}" at position '
                                 f'{p + 1} in URI (expected ":" or "/"): "{buf.decode(errors="replace")}"')
        else:
            stop = scan(p, b":/?,")
            hosts.append(buf[p:stop])
            p = stop
        if p < end and buf[p] == ord(":"):
            stop = scan(p + 1, b"/?,")
            ports.append(buf[p + 1 : stop])
            p = stop
        if p == end or buf[p] != ord(","):
            break
        p += 1
        hosts.append(b",")
        ports.append(b",")
    if b"".join(hosts):
        found["host"] = _libpq_decode(b"".join(hosts))
    if b"".join(ports):
        found["port"] = _libpq_decode(b"".join(ports))
    if p < end and buf[p] != ord("?"):
        stop = scan(p + 1, b"?")
        if stop > p + 1:
            found["dbname"] = _libpq_decode(buf[p + 1 : stop])
        p = stop
    if p < end:
        _libpq_params(buf[p + 1 :], keywords, found)
    return {k: found[k].decode() for k in keywords if k in found}


def _libpq_params(params: bytes, keywords: tuple[str, ...], found: dict[str, bytes]) -> None:
    """The ``key=value&...`` part of a URI into ``found``, as ``conninfo_uri_parse_params`` reads it."""
    while params:
        piece, _, params = params.partition(b"&")
        raw_key, equals, raw_value = piece.partition(b"=")
        if b"=" in raw_value:
            raise _libpq_error('extra key/value separator "=" in URI query parameter: "%s"', raw_key)
        if not equals:
            raise _libpq_error('missing key/value separator "=" in URI query parameter: "%s"', raw_key)
        key, value = _libpq_decode(raw_key), _libpq_decode(raw_value)
        if key == b"ssl" and value == b"true":  # JDBC's spelling
            key, value = b"sslmode", b"require"
        elif key == b"requiressl":
            key, value = b"sslmode", b"require" if value[:1] == b"1" else b"prefer"
        name = key.decode(errors="replace")
        if name not in keywords:
            raise _libpq_error('invalid URI query parameter: "%s"', key)
        found[name] = value


def _libpq_decode(raw: bytes) -> bytes:
    """libpq's ``conninfo_uri_decode``: %-escapes to bytes, spaces around trimmed; a bad escape,
    %00 or a space inside is refused."""
    out = bytearray()
    i, end = 0, len(raw)
    while i < end and raw[i] == 0x20:
        i += 1
    while i < end and raw[i] != 0x20:
        if raw[i] != 0x25:  # "%"
            out.append(raw[i])
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if not re.fullmatch(rb"[0-9A-Fa-f]{2}", pair):
            raise _libpq_error('invalid percent-encoded token: "%s"', raw)
        if pair == b"00":
            raise _libpq_error('forbidden value %%00 in percent-encoded value: "%s"', raw)
        out.append(int(pair, 16))
        i += 3
    if raw[i:].strip(b" "):
        raise _libpq_error('unexpected spaces found in "%s", use percent-encoded spaces (%%20) instead', raw)
    return bytes(out)


def _libpq_error(template: str, value: bytes) -> ValueError:
    return ValueError(template % value.decode(errors="replace"))


#: libpq 18's connection parameters, in its order: the names where libpq cannot be asked.
LIBPQ_KEYWORDS = (
    "service", "user", "password", "passfile", "channel_binding", "connect_timeout", "dbname", "host",
    "hostaddr", "port", "client_encoding", "options", "application_name", "fallback_application_name",
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "sslmode", "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslcertmode", "sslpassword",
    "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer", "require_auth", "min_protocol_version",
    "max_protocol_version", "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode",
    "krbsrvname", "gsslib", "gssdelegation", "replication", "target_session_attrs", "load_balance_hosts",
    "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id", "oauth_client_secret",
    "oauth_scope", "sslkeylogfile",
)


@functools.cache
def _libpq_keywords() -> tuple[str, ...]:
    """The connection parameters the installed libpq knows (through psycopg), else ``LIBPQ_KEYWORDS``."""
    try:
        from psycopg import pq
    except ImportError:
        return LIBPQ_KEYWORDS
    return tuple(option.keyword.decode() for option in pq.Conninfo.get_defaults())


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
    if is_local(host):
        return
    neon = is_neon(host)
    if mode is None or (neon and mode == "prefer"):
        # "prefer" would negotiate TLS with Neon anyway; "require" only forbids the downgrade.
        params["sslmode"] = "require"
    elif neon and mode in ("disable", "allow"):
        raise fail(f"Neon accepts only TLS connections, but the URL asks for sslmode={mode}; use sslmode=require.")


def _prisma_settings(prisma: dict[str, str], fail: _Fail) -> dict[str, object]:
    """Settings asked for by Prisma parameters, as Settings field names and values (0 = None, no limit)."""
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
