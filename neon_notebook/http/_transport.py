"""Statements over Neon's HTTP endpoint: one request per read or execute, its answer checked.

A request is one transaction on a fresh server session: a prelude statement
that applies the session's ``schema=`` and ``statement_timeout=`` (``SET LOCAL``)
and reads the output settings the decoders depend on (fixing the few they don't
read, as the COPY path does), then the user's statements, split at top-level
semicolons. Statements PostgreSQL refuses in a transaction block (VACUUM...)
are re-sent alone. A text that looks read-only goes in a read-only transaction,
so that if its answer is lost it can be re-sent without writing twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .. import _sqltext
from .._config import Settings
from .._endpoint import Endpoint
from ..readers._guard import Text
from ..readers._settings import READ_SETTINGS, SETTINGS_READ
from ._client import HttpClient, LostAnswer
from ._errors import sql_error
from ._params import bind, placeholders
from ._protocol import Result, ServerError, batch_body, headers, parse, query_body

__all__ = ["Exchange", "HttpTransport"]

#: The settings the decoders read (``readers._output.SETTINGS_READ``), each fixed to what they read.
_PRELUDE = ("SELECT current_setting('TimeZone'),"
            " set_config('DateStyle', CASE WHEN split_part(current_setting('DateStyle'), ',', 1) = 'ISO'"
            " THEN current_setting('DateStyle')"
            " ELSE 'ISO, ' || btrim(split_part(current_setting('DateStyle'), ',', 2)) END, true),"
            " set_config('IntervalStyle', CASE WHEN current_setting('IntervalStyle') IN ('postgres', 'iso_8601')"
            " THEN current_setting('IntervalStyle') ELSE 'postgres' END, true),"
            " set_config('extra_float_digits',"
            " greatest(current_setting('extra_float_digits')::int, 1)::text, true),"
            " set_config('bytea_output', 'hex', true)")
_SETTINGS = SETTINGS_READ  # the prelude's columns, in this order
_DEFAULT_SETTINGS = dict(zip(_SETTINGS, ("UTC", "ISO, MDY", "postgres", "1", "hex")))

# First words of statements that read only; words that make a statement write.
_READING = frozenset({"select", "with", "values", "table", "show", "explain"})
_WRITING = frozenset({"insert", "update", "delete", "merge", "into", "nextval", "setval", "copy",
                      "lock", "analyze", "analyse", "refresh", "notify", "call", "do"})

_ACTIVE_SQL_TRANSACTION = "25001"  # VACUUM & co. inside a transaction block
_READ_ONLY_SQL_TRANSACTION = "25006"


@dataclass
class Exchange:
    """What one request gave: each user statement's result, the output settings, and its cost."""

    results: list[Result]
    settings: dict[str, str]  # the output settings the rows were printed under
    text: Text
    seconds: float
    bytes: int
    attempts: int
    read_only: bool


class _Refused(Exception):
    """PostgreSQL refused the text: the server's answer and the exception to raise for it."""

    def __init__(self, err: ServerError, error: Exception) -> None:
        self.err, self.error = err, error


@dataclass(frozen=True)
class _Statement:
    text: str  # as sent, with $n placeholders
    params: list[str | None]
    to_original: Callable[[int], int]  # a 1-based position in ``text`` -> in the user's text


class HttpTransport:
    """Sends a user's text to Neon's ``/sql`` URL as one transaction, with the session's settings."""

    def __init__(self, endpoint: Endpoint, settings: Settings, http_url: str) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = client_for(http_url, connect_timeout=settings.connect_timeout)
        self._connection_string = connection_string(endpoint)

    @property
    def url(self) -> str:
        return self.client.url

    # -- requests ------------------------------------------------------------
    def exchange(self, text: str, params: Any, *, retry_lost: bool,
                 on_retry: Callable[[int, str, float], None] | None = None) -> Exchange:
        """Run ``text``; ``retry_lost``: the caller allows one re-send of a lost answer (reads)."""
        statements = split(text, params)
        guard = Text.of(text)
        read_only = retry_lost and looks_read_only(text)
        try:
            return self._send(guard, statements, read_only, on_retry, retry_lost=read_only)
        except _Refused as refused:
            err = refused.err
            if err.code == _READ_ONLY_SQL_TRANSACTION and read_only:
                # It wrote after all (a function?): nothing was kept; run it as a write, once.
                return self._send(guard, statements, False, on_retry, retry_lost=False)
            if err.code == _ACTIVE_SQL_TRANSACTION and len(statements) == 1:
                return self._send(guard, statements, False, on_retry, retry_lost=False, prelude=False)
            raise refused.error from None

    def _send(self, guard: Text, statements: list[_Statement], read_only: bool, on_retry, *,
              retry_lost: bool, prelude: bool = True) -> Exchange:
        # A text that may change an output setting is followed by a second reading of them:
        # its rows were printed under the settings it left (the readers check them).
        reread = prelude and bool(guard.output_changes)
        if prelude:
            queries = [(self._prelude_text(), self._prelude_params()), *((s.text, s.params) for s in statements)]
            if reread:
                queries.append((READ_SETTINGS, []))
            body = batch_body(queries)
            head = headers(self._connection_string, read_only=read_only)
        else:
            body = query_body(statements[0].text, statements[0].params)
            head = headers(self._connection_string)
        deadline = time.monotonic() + self.settings.wake_timeout
        timeout = None if self.settings.statement_timeout is None else (
            self.settings.statement_timeout + self.settings.wake_timeout)
        for attempt in (1, 2):
            try:
                answer = self.client.post_through_wake(body, head, deadline=deadline, timeout=timeout,
                                                       on_retry=on_retry)
                results = _parse(answer.status, answer.body)
                break
            except LostAnswer as exc:
                if attempt == 2 or not retry_lost:
                    exc.resent = attempt == 2  # type: ignore[attr-defined]
                    raise
            except ServerError as err:
                if err.code and len(err.code) == 5 and err.status == 400:
                    raise _Refused(err, self._positioned(err, guard.sql, statements)) from None
                raise
        if prelude:
            settings = dict(zip(_SETTINGS, results[0].rows[0])) if results and results[0].rows else {}
            results = results[1:]
            if reread:
                settings = dict(zip(SETTINGS_READ, results[-1].rows[0]))
                results = results[:-1]
        else:
            settings = dict(_DEFAULT_SETTINGS)
        return Exchange(results, settings, guard, answer.seconds, len(answer.body), answer.attempts, read_only)

    def _prelude_text(self) -> str:
        extra, n = [], 0
        if self.settings.schema:
            n += 1
            extra.append(f", set_config('search_path', quote_ident(${n}), true)")  # as SET shows it
        if self.settings.statement_timeout:
            n += 1
            extra.append(f", set_config('statement_timeout', ${n}, true)")
        return _PRELUDE + "".join(extra)

    def _prelude_params(self) -> list[str | None]:
        out: list[str | None] = []
        if self.settings.schema:
            out.append(self.settings.schema)
        if self.settings.statement_timeout:
            out.append(str(max(1, round(self.settings.statement_timeout * 1000))))
        return out

    @staticmethod
    def _positioned(err: ServerError, text: str, statements: list[_Statement]) -> Exception:
        """The SQL error with its position in the user's text.

        Neon does not say which statement of a batch failed, so with several the
        position (relative to the failing one) is dropped rather than misplaced.
        """
        position = err.body.get("position")
        if position is None or len(statements) != 1:
            return sql_error(err, text, None, drop_position=position is not None)
        return sql_error(err, text, statements[0].to_original(int(position)))

    def close(self) -> None:
        self.client.close()


#: A 400 without SQLSTATE is the proxy refusing the request before it ran (these words), or
#: the compute's connection lost while it ran (tokio-postgres' "connection closed"...).
_REFUSED = re.compile(r"password authentication failed|^invalid |incorrect scheme|^missing |could not parse|"
                      r"not supported|did not match any variant|too large|authentication", re.I)


def _parse(status: int, body: bytes) -> list[Result]:
    """The answer's results; a connection to the compute lost mid-request is a lost answer (it may have run)."""
    try:
        return parse(status, body)
    except ServerError as err:
        if status == 400 and not err.code and not _REFUSED.search(err.message):
            raise LostAnswer(f"the compute's connection was lost while the request ran ({err.message})") from None
        raise
    except ValueError:  # a 200 that is not JSON: not an answer Neon's proxy writes
        raise LostAnswer("the answer was not complete JSON") from None


def connection_string(endpoint: Endpoint) -> str:
    """``postgresql://user:password@host[:port]/database``, as Neon's header wants it (secret!)."""
    user = quote(endpoint.user or "", safe="")
    password = f":{quote(endpoint.password, safe='')}" if endpoint.password else ""
    port = f":{endpoint.port}" if endpoint.port and endpoint.port != 5432 else ""
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    return f"postgresql://{user}{password}@{host}{port}/{quote(endpoint.database or '', safe='')}"


def client_for(url: str, *, connect_timeout: float | None) -> HttpClient:
    """The sender for this platform: sockets (``http.client``), or the browser's XMLHttpRequest in Pyodide."""
    import sys

    if sys.platform == "emscripten":
        from ._xhr import XhrClient

        return XhrClient(url, connect_timeout=connect_timeout)
    return HttpClient(url, connect_timeout=connect_timeout)


def split(text: str, params: Any) -> list[_Statement]:
    """The text's top-level statements, each with its own placeholders bound."""
    found = _sqltext.statements(text)
    if len(found) <= 1:
        return [_bound(text, params, 0)]
    if params is None:
        return [_bound(text[s.start:s.end], None, s.start) for s in found]
    bind(text, params)  # the whole text's placeholders against the parameters: psycopg's messages
    out, used = [], 0
    for s in found:
        piece = text[s.start:s.end]
        if isinstance(params, Mapping) or not isinstance(params, Sequence) or isinstance(params, str):
            mine: Any = params  # named: each statement takes what it names; not a sequence: bind() says so
        else:
            count = len(placeholders(piece))
            mine, used = list(params)[used:used + count], used + count
        out.append(_bound(piece, mine, s.start))
    return out


def _bound(piece: str, params: Any, offset: int) -> _Statement:
    sent, values, edits = bind(piece, params)
    return _Statement(sent, values, lambda pos: offset + _sqltext.original_offset(pos - 1, edits) + 1)


def looks_read_only(text: str) -> bool:
    """Whether every statement starts like a query and none names a writing word (lexically)."""
    found = _sqltext.statements(text)
    return bool(found) and all(s.words and s.words[0] in _READING and not _WRITING & set(s.words)
                               for s in found)
