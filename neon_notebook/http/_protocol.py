"""Neon's SQL-over-HTTP protocol, no I/O: where to send, what to send, what came back.

One ``POST /sql`` carries the connection string in ``Neon-Connection-String``
and a JSON body: ``{"query", "params"}`` for one statement, ``{"queries": [...]}``
for several run as one transaction. With ``Neon-Raw-Text-Output`` and
``Neon-Array-Mode`` the rows come back as lists of PostgreSQL's own text output
(or null), with each column's type OID: exactly what the row path's decoders read.
Errors come back as JSON with every PostgreSQL error field (400) or a proxy
message (500: the compute could not be reached or woken). Stdlib only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Field", "Result", "ServerError", "batch_body", "http_url_for", "parse", "query_body"]

#: The official driver's rule: the host's first label becomes ``api`` (``ep-x-123.c-2.us-east-2.aws.neon.tech``
#: -> ``https://api.c-2.us-east-2.aws.neon.tech/sql``); the pooler's host gives the same URL.
_FIRST_LABEL = re.compile(r"^[^.]+\.")

#: Every field of a PostgreSQL error, as Neon's JSON names them, in its order.
ERROR_KEYS = ("message", "code", "detail", "hint", "position", "internalPosition", "internalQuery",
              "severity", "where", "table", "column", "schema", "dataType", "constraint", "file",
              "line", "routine")


def http_url_for(host: str) -> str:
    """The ``/sql`` URL of a Neon host, derived as ``@neondatabase/serverless`` derives it."""
    return "https://" + _FIRST_LABEL.sub("api.", host, count=1) + "/sql"


def headers(connection_string: str, *, isolation: str | None = None, read_only: bool = False) -> dict[str, str]:
    """The request's headers: raw text output, rows as arrays, and a batch's options."""
    out = {"Neon-Connection-String": connection_string, "Neon-Raw-Text-Output": "true",
           "Neon-Array-Mode": "true", "Content-Type": "application/json"}
    if isolation is not None:
        out["Neon-Batch-Isolation-Level"] = isolation
    if read_only:
        out["Neon-Batch-Read-Only"] = "true"
    return out


def query_body(sql: str, params: list[str | None]) -> bytes:
    return json.dumps({"query": sql, "params": params}, ensure_ascii=False).encode()


def batch_body(queries: list[tuple[str, list[str | None]]]) -> bytes:
    return json.dumps({"queries": [{"query": q, "params": p} for q, p in queries]},
                      ensure_ascii=False).encode()


@dataclass(frozen=True)
class Field:
    name: str
    type_oid: int
    type_modifier: int


@dataclass
class Result:
    """One statement's answer: its columns, rows of text (or None), command tag word and row count."""

    fields: list[Field]
    rows: list[list[str | None]]
    command: str
    row_count: int | None


@dataclass
class ServerError(Exception):
    """A non-2xx answer: its HTTP status and Neon's error JSON (every key present, None where absent)."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.body.get("message") or "")

    @property
    def code(self) -> str:
        return str(self.body.get("code") or "")

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


def parse(status: int, body: bytes) -> list[Result]:
    """The results of a 200 answer (one per statement), or ``ServerError`` for any other status."""
    if status != 200:
        raise ServerError(status, _error_body(body))
    data = json.loads(body)
    if "results" in data:
        if not isinstance(data["results"], list):
            raise ServerError(status, {"message": "Neon internal error: unexpected result format"})
        return [_result(r) for r in data["results"]]
    return [_result(data)]


def _result(data: dict) -> Result:
    fields = [Field(f["name"], int(f["dataTypeID"]), int(f.get("dataTypeModifier", -1)))
              for f in data.get("fields") or []]
    count = data.get("rowCount")
    return Result(fields, data.get("rows") or [], data.get("command") or "",
                  int(count) if count is not None else None)


def _error_body(body: bytes) -> dict[str, Any]:
    """Neon's error JSON; other shapes (a bare string, ``{"msg"}``, not JSON) as a message."""
    try:
        data = json.loads(body)
    except ValueError:
        return {"message": body.decode("utf-8", "replace").strip()[:500]}
    if isinstance(data, dict):
        if "message" not in data and "msg" in data:
            data = {**data, "message": data["msg"]}
        return {key: data.get(key) for key in ERROR_KEYS} | {k: v for k, v in data.items() if k not in ERROR_KEYS}
    return {"message": str(data)}
