"""Neon's HTTP error answers -> the error tree the TCP path raises.

A PostgreSQL error (400 with a SQLSTATE) becomes psycopg's own class for that
SQLSTATE, with every diagnostic field, when psycopg is installed -- so ``except
psycopg.errors.UndefinedTable`` works on both transports -- and otherwise
``neon_notebook.errors.SQLError`` with the same ``sqlstate`` and ``diag``. Its
text is libpq's: the primary message and, with a position, the ``LINE n:`` excerpt
with a caret, the position mapped back to the text the user wrote.
"""

from __future__ import annotations

import re

from .. import errors
from ._protocol import ServerError

__all__ = ["ProgrammingError", "excerpt", "is_transient", "libpq_message", "sql_error"]

#: psycopg's, or its stand-in: a placeholder or parameter the query cannot take.
ProgrammingError = errors.ProgrammingError

#: What the proxy answers while the compute cannot be reached yet (500): worth retrying.
_TRANSIENT = re.compile(r"Couldn't connect to compute node|Control plane request failed|"
                        r"the database system is (?:starting up|shutting down)|too many connections",
                        re.I)
_TRANSIENT_CODES = {"57P01", "57P03", "53300", "08006", "08001", "08004"}

# Neon's JSON key -> the Diagnostic field.
_DIAG = {"severity": "severity", "code": "sqlstate", "message": "message_primary", "detail": "message_detail",
         "hint": "message_hint", "position": "statement_position", "internalPosition": "internal_position",
         "internalQuery": "internal_query", "where": "context", "schema": "schema_name", "table": "table_name",
         "column": "column_name", "dataType": "datatype_name", "constraint": "constraint_name",
         "file": "source_file", "line": "source_line", "routine": "source_function"}


def is_transient(err: ServerError) -> bool:
    """A 5xx answer meaning "the compute isn't reachable yet" (a cold start, a suspension): retry."""
    if err.status < 500:
        return False
    return err.code in _TRANSIENT_CODES or bool(_TRANSIENT.search(err.message))


def sql_error(err: ServerError, text: str, position: int | None, *, drop_position: bool = False) -> Exception:
    """The exception for a PostgreSQL error (psycopg's class when available), with libpq's excerpt.

    ``position``: in ``text``, the user's own (the server's is in the text as sent).
    """
    body = dict(err.body)
    if position is not None or drop_position:
        body["position"] = None if position is None else str(position)
    diag = errors.Diagnostic(**{name: (str(body[key]) if body.get(key) not in (None, "") else None)
                                for key, name in _DIAG.items()},
                             severity_nonlocalized=body.get("severity") or None)
    return errors.sql_error(diag, libpq_message(diag, text, position))


def libpq_message(diag: errors.Diagnostic, text: str, position: int | None) -> str:
    """The error's text as libpq writes it (psycopg's ``str``): the primary message, the
    ``LINE n:`` excerpt, then DETAIL, HINT, QUERY and CONTEXT lines."""
    lines = [(diag.message_primary or "") + (excerpt(text, position) if position else "")]
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint),
                         ("QUERY", diag.internal_query), ("CONTEXT", diag.context)):
        if value:
            lines.append(f"{label}:  {value}")
    return "\n".join(lines)


_DISPLAY = 60  # libpq's reportErrorPosition: the excerpt's width
_RIGHT_CUT = 10


def excerpt(text: str, position: int | None) -> str:
    """libpq's ``LINE n: ...`` and caret under the 1-based character ``position`` of ``text``."""
    if not position or position < 1 or position > len(text) + 1:
        return ""
    before = text[:position - 1]
    line_no = before.count("\n") + 1
    start = before.rfind("\n") + 1
    end = text.find("\n", start)
    line = (text[start:] if end < 0 else text[start:end]).replace("\t", " ").rstrip("\r")
    caret = position - 1 - start
    prefix = ""
    if len(line) > _DISPLAY:
        if caret + _RIGHT_CUT < _DISPLAY:
            line = line[:_DISPLAY] + "..."
        else:
            cut = min(caret + _RIGHT_CUT, len(line))
            first = max(0, cut - _DISPLAY)
            line = ("..." if first else "") + line[first:cut] + ("..." if cut < len(line) else "")
            caret = caret - first + (3 if first else 0)
    label = f"LINE {line_no}: "
    return f"\n{label}{prefix}{line}\n{' ' * (len(label) + _width(line[:caret]))}^"


def _width(text: str) -> int:
    """Display columns, as libpq counts them for the caret: wide characters 2, combining ones 0."""
    import unicodedata

    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)
