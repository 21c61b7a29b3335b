"""Neon's ``POST /sql`` (SQL over HTTP) for the local compute, as Neon's proxy serves it.

Pure request logic: headers and body in, a ``Response`` out; the HTTP framing
lives in ``httpd``. Order, messages and statuses follow Neon's proxy
(proxy/src/serverless/sql_over_http.rs, http_util.rs, json.rs): connection
string, header flags, body (413 past the limit, 400 if not a payload),
authentication *before* the wake, the wake, a fresh backend connection, the
query or batch, JSON with Neon's field order, errors with the 17 keys.
Differences from Neon, chosen: IP-literal hosts are accepted; every request
uses the direct PostgreSQL socket (pooled URL too); roles other than
``postgres`` are checked by PostgreSQL after the wake.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from .pgclient import Cancelled, Column, ConnectionLost, PgConnection, PgError
from .sqljson import JsonConversionError, TypeKinds, dumps, param_text, value_to_json

from .wire import COULD_NOT_CONNECT, ProtocolError
_ISOLATION = {"Serializable": "SERIALIZABLE", "ReadUncommitted": "READ UNCOMMITTED",
              "ReadCommitted": "READ COMMITTED", "RepeatableRead": "REPEATABLE READ"}
_ERROR_KEYS = ("message", "code", "detail", "hint", "position", "internalPosition", "internalQuery",
               "severity", "where", "table", "column", "schema", "dataType", "constraint", "file",
               "line", "routine")
_FIELD_OF = {"code": "C", "detail": "D", "hint": "H", "severity": "S", "where": "W", "table": "t",
             "column": "c", "schema": "s", "dataType": "d", "constraint": "n", "file": "F",
             "line": "L", "routine": "R"}
PREFLIGHT_HEADERS = [
    ("allow", "OPTIONS, POST"),
    ("access-control-allow-origin", "*"),
    ("access-control-allow-headers", "Authorization, Neon-Connection-String, Neon-Raw-Text-Output, "
     "Neon-Array-Mode, Neon-Pool-Opt-In, Neon-Batch-Read-Only, Neon-Batch-Isolation-Level"),
    ("access-control-max-age", "86400"),
]


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_response(status: int, value: Any) -> Response:
    """A JSON body as serde_json writes a ``json!`` value: compact, object keys sorted."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return Response(status, text.encode(), [("content-type", "application/json")])


class SqlError(Exception):
    """A failed request: HTTP status and, for PostgreSQL errors, the ErrorResponse fields."""

    def __init__(self, status: int, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields

    def response(self) -> Response:
        """The error body: 17 keys (serde_json sorts them), PostgreSQL's fields or the proxy's text."""
        f = self.fields
        if f is None:
            body: dict[str, Any] = dict.fromkeys(_ERROR_KEYS)
            body.update(message=self.message, code="", severity="")
        else:
            body = {key: f.get(_FIELD_OF[key]) for key in _FIELD_OF}
            body["code"], body["severity"] = f.get("C", ""), f.get("S", "")
            body["message"] = f.get("M", "")
            body["position"] = f.get("P")
            internal = "P" not in f and "p" in f  # tokio-postgres' ErrorPosition::Internal
            body["internalPosition"] = f["p"] if internal else None
            body["internalQuery"] = f.get("q") if internal else None
        return json_response(self.status, body)


def _postgres_error(error: PgError) -> SqlError:
    return SqlError(400, error.fields.get("M", ""), error.fields)


# -- the connection string ---------------------------------------------------------
@dataclass(frozen=True)
class ConnInfo:
    user: str
    database: str
    password: bytes


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.S)


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode()
    except UnicodeDecodeError as exc:
        raise SqlError(400, f"invalid username: invalid utf-8 sequence of 1 bytes from index {exc.start}")


def conn_info(headers: dict[str, str]) -> ConnInfo:
    """Parse ``Neon-Connection-String`` with Neon's checks and messages (http_util.rs get_conn_info)."""
    raw = headers.get("neon-connection-string")
    if raw is None or any(not (0x20 <= ord(ch) < 0x7F or ch == "\t") for ch in raw):
        raise SqlError(400, "invalid header: neon-connection-string")
    match = _SCHEME.fullmatch(raw.strip())
    if not match:
        raise SqlError(400, "invalid connection string: relative URL without a base")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in ("postgres", "postgresql"):
        raise SqlError(400, "incorrect scheme")
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    if not rest.startswith("//"):
        if not rest.startswith("/"):
            raise SqlError(400, "missing database name")
        authority, path = "", rest
    else:
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
    userinfo, _, hostport = authority.rpartition("@")
    host, port = _host_port(hostport)
    if not path:
        raise SqlError(400, "missing database name")
    database = _decode(path[1:].split("/", 1)[0])
    user_text, colon, password_text = userinfo.partition(":")
    user = _decode(user_text)
    if not user:
        raise SqlError(400, "missing username")
    if "authorization" in headers or not (colon and password_text):
        raise SqlError(400, "missing authentication credentials: required password")
    if not host:
        raise SqlError(400, "missing hostname")
    del port  # the compute is the endpoint, whatever the host and port
    return ConnInfo(user, database, unquote_to_bytes(password_text))


def _host_port(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SqlError(400, "invalid connection string: invalid IPv6 address")
        host, rest = hostport[:end + 1], hostport[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    if port and (not port.isdigit() or int(port) > 65535):
        raise SqlError(400, "invalid connection string: invalid port number")
    if port and not host:
        raise SqlError(400, "invalid connection string: empty host")
    return host, port


# -- header flags and the body --------------------------------------------------------
@dataclass(frozen=True)
class Flags:
    raw_output: bool
    array_mode: bool
    isolation: str | None
    read_only: bool
    deferrable: bool

    @classmethod
    def parse(cls, headers: dict[str, str]) -> Flags:
        """Neon's HttpHeaders::try_parse: only exactly ``true`` counts; a bad isolation level is a 400."""
        level = headers.get("neon-batch-isolation-level")
        if level is not None and level not in _ISOLATION:
            raise SqlError(400, "invalid isolation level")
        return cls(headers.get("neon-raw-text-output") == "true", headers.get("neon-array-mode") == "true",
                   level, headers.get("neon-batch-read-only") == "true",
                   headers.get("neon-batch-deferrable") == "true")

    def start_transaction(self) -> str:
        """tokio-postgres' TransactionBuilder text (options only when set)."""
        parts = []
        if self.isolation:
            parts.append(" ISOLATION LEVEL " + _ISOLATION[self.isolation])
        if self.read_only:
            parts.append(" READ ONLY")
        if self.deferrable:
            parts.append(" DEFERRABLE")
        return "START TRANSACTION" + ",".join(parts)

    def echo(self) -> list[tuple[str, str]]:
        """The batch response's echoed headers."""
        out = []
        if self.read_only:
            out.append(("neon-batch-read-only", "true"))
        if self.deferrable:
            out.append(("neon-batch-deferrable", "true"))
        if self.isolation:
            out.append(("neon-batch-isolation-level", self.isolation))
        return out


@dataclass(frozen=True)
class QueryData:
    query: str
    params: list[str | None]
    array_mode: bool | None


# Python's json messages in serde_json's words (the ones a client is likely to meet).
_SERDE_MESSAGES = {"Expecting value": "expected value", "Extra data": "trailing characters",
                   "Expecting property name enclosed in double quotes": "key must be a string",
                   "Unterminated string starting at": "EOF while parsing a string",
                   "Expecting ',' delimiter": "expected `,` or `}`", "Expecting ':' delimiter": "expected `:`"}


def _no_constant(name: str) -> float:
    raise ValueError(f"expected value, found {name}")


def parse_payload(body: bytes) -> QueryData | list[QueryData]:
    """Neon's untagged ``Payload``: a single query, else ``{"queries": [...]}``."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        msg = _SERDE_MESSAGES.get(exc.msg.split(":")[0], exc.msg.lower())
        raise SqlError(400, f"could not parse the HTTP request body: {msg} "
                            f"at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SqlError(400, f"could not parse the HTTP request body: {exc}") from None
    single = _query_data(value)
    if single is not None:
        return single
    if isinstance(value, dict) and isinstance(value.get("queries"), list):
        queries = [_query_data(q) for q in value["queries"]]
        if all(q is not None for q in queries):
            return queries  # type: ignore[return-value]
    raise SqlError(400, "could not parse the HTTP request body: "
                        "data did not match any variant of untagged enum Payload")


def _query_data(value: Any) -> QueryData | None:
    if not isinstance(value, dict) or not isinstance(value.get("query"), str):
        return None
    params = value.get("params", [])
    mode = value.get("arrayMode")
    if not isinstance(params, list) or not (mode is None or isinstance(mode, bool)):
        return None
    return QueryData(value["query"], [param_text(p) for p in params], mode)


# -- running a request -----------------------------------------------------------------
class Output:
    """The response buffer: its size is checked before each row, as Neon checks its whole buffer."""

    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit

    def write(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def check(self) -> None:
        if self.size > self.limit:
            raise SqlError(507, f"response is too large (max is {self.limit} bytes)")


def _fields(columns: list[Column]) -> bytes:
    return json.dumps([{"name": c.name, "dataTypeID": c.type_oid, "tableID": c.table_oid,
                        "columnID": c.attnum, "dataTypeSize": c.typlen, "dataTypeModifier": c.typmod,
                        "format": "text"} for c in columns],
                      ensure_ascii=False, separators=(",", ":")).encode()


def run_query(conn: PgConnection, data: QueryData, flags: Flags, out: Output, kinds: TypeKinds) -> None:
    """One statement to JSON into ``out`` (sql_over_http.rs query_to_json)."""
    query = conn.query_text(data.query, data.params)
    columns = query.columns
    array_mode = flags.array_mode if data.array_mode is None else data.array_mode
    elements = {} if flags.raw_output else kinds.element_types(conn, {c.type_oid for c in columns})
    out.write(b'{"fields":' + _fields(columns) + b',"rows":[')
    keys = [dumps(c.name) + ":" for c in columns]
    oids = [c.type_oid for c in columns]
    raw = flags.raw_output
    sep = ""
    for row in query.rows():
        out.check()
        if raw:
            texts = ["null" if v is None else dumps(v) for v in row]
        else:
            texts = ["null" if v is None else value_to_json(v, oid, elements) for v, oid in zip(row, oids)]
        line = ("[" + ",".join(texts) + "]") if array_mode else \
            ("{" + ",".join([k + t for k, t in zip(keys, texts)]) + "}")
        out.write((sep + line).encode())
        sep = ","
    tag = query.tag or ""
    words = tag.split(" ")
    count_word = words[2] if words[0] == "INSERT" and len(words) > 2 else \
        (words[1] if words[0] != "INSERT" and len(words) > 1 else None)
    row_count = int(count_word) if count_word is not None and re.fullmatch(r"[+-]?\d+", count_word) else None
    out.write(('],"command":' + dumps(words[0]) + ',"rowCount":' + json.dumps(row_count)
               + ',"rowAsArray":' + json.dumps(array_mode) + "}").encode())


def _stop_if_gone(conn: PgConnection) -> None:
    if conn.client_gone:
        raise Cancelled("the client went away")


@dataclass
class Limits:
    request_bytes: int = 10 << 20
    response_bytes: int = 10 << 20


class SqlOverHttp:
    """The ``/sql`` handler for one compute: ``handle(headers, body, client)`` -> ``Response``."""

    def __init__(self, compute: Any, backend: Path, limits: Limits) -> None:
        self.compute, self.backend, self.limits = compute, backend, limits
        self.kinds = TypeKinds()

    def handle(self, headers: dict[str, str], body: bytes | None, client: socket.socket | None) -> Response:
        """``body`` is None when it exceeded the request limit; ``client`` is watched for hang-up."""
        try:
            response = self._handle(headers, body, client)
        except SqlError as exc:
            response = exc.response()
        except Cancelled:
            response = json_response(400, {"message": "Query cancelled, connection was terminated",
                                           "code": "08P01"})
        response.headers.append(("access-control-allow-origin", "*"))
        return response

    def _handle(self, headers: dict[str, str], body: bytes | None, client: socket.socket | None) -> Response:
        self.compute.note_connection()
        info = conn_info(headers)
        flags = Flags.parse(headers)
        if body is None:
            raise SqlError(413, f"request is too large (max is {self.limits.request_bytes} bytes)")
        payload = parse_payload(body)
        self._authenticate(info)
        error = self.compute.ensure_active()
        if error:
            raise SqlError(500, error)
        conn = self._connect(info)
        conn.watch = client
        try:
            out = Output(self.limits.response_bytes)
            extra: list[tuple[str, str]] = []
            try:
                if isinstance(payload, QueryData):
                    run_query(conn, payload, flags, out, self.kinds)
                else:
                    extra = flags.echo()
                    self._batch(conn, payload, flags, out)
            except PgError as exc:
                raise _postgres_error(exc) from None
            except ConnectionLost as exc:
                raise SqlError(400, str(exc)) from None
            except JsonConversionError:
                raise SqlError(500, "could not parse postgres response") from None
            return Response(200, b"".join(out.parts), [("content-type", "application/json"), *extra])
        finally:
            conn.close()

    def _batch(self, conn: PgConnection, queries: list[QueryData], flags: Flags, out: Output) -> None:
        conn.simple(flags.start_transaction())
        out.write(b'{"results":[')
        for i, data in enumerate(queries):
            if i:
                out.write(b",")
            _stop_if_gone(conn)
            run_query(conn, data, flags, out, self.kinds)
        out.write(b"]}")
        _stop_if_gone(conn)  # as Neon: a batch whose client left never commits
        conn.simple("COMMIT")

    def _authenticate(self, info: ConnInfo) -> None:
        """As Neon's proxy, before any wake: the ``postgres`` role's password is checked here."""
        if info.user == "postgres" and not hmac.compare_digest(info.password, self.compute.password.encode()):
            raise SqlError(400, f"password authentication failed for user '{info.user}'")

    def _connect(self, info: ConnInfo) -> PgConnection:
        password = info.password.decode("utf-8", "replace")
        try:
            return PgConnection(self.backend, info.user, info.database, password)
        except PgError as exc:
            if exc.code == "28P01":
                raise SqlError(400, f"password authentication failed for user '{info.user}'") from None
            status = 400 if exc.code in ("3D000", "28000") else 500
            raise SqlError(status, exc.fields.get("M", ""), exc.fields) from None
        except (OSError, ConnectionLost, ValueError, ProtocolError):  # the backend died while logging in
            raise SqlError(500, COULD_NOT_CONNECT) from None


def not_supported() -> Response:
    """Any other path or method (mod.rs): a JSON string, no CORS header."""
    return json_response(400, "query is not supported")


def preflight() -> Response:
    return Response(200, b"", list(PREFLIGHT_HEADERS))

