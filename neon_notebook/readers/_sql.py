"""The SQL text a read runs: the query checked, its parameters bound, whether COPY can wrap it.

Lexing is ``neon_notebook._sqltext``'s, the one lexer the magics use too;
what a text does on the pooled endpoint is :mod:`._guard`'s.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import psycopg
from psycopg import sql

from .._sqltext import first_word

Params = Union[Sequence[Any], Mapping[str, Any], None]
Query = Union[str, bytes, sql.Composable]

# The statements COPY (...) TO STDOUT can wrap; the others take the row path.
_COPYABLE_FIRST_WORDS = frozenset({"select", "with", "values", "table"})


def check_query(query: object) -> None:
    """Refuse a query that is not SQL text, before any round trip."""
    if not isinstance(query, (str, bytes, sql.Composable)):
        raise TypeError(
            f"the query must be SQL text (str, bytes or psycopg.sql.Composable), not "
            f"{type(query).__name__}"
        )


def bind(conn: psycopg.Connection, query: Query, params: Params) -> str:
    """The statement with its parameters merged client-side, as one SQL text.

    psycopg quotes each value as a literal with libpq's escaping for this
    connection (``ClientCursor.mogrify``), which is how it binds parameters for
    ``COPY`` too: COPY accepts no server-side parameters.
    """
    check_query(query)
    if isinstance(query, sql.Composable):
        query = query.as_string(conn)
    elif isinstance(query, bytes):
        query = query.decode(conn.info.encoding)
    if params is None:
        return query
    return psycopg.ClientCursor(conn).mogrify(query, params)


def copyable(text: str) -> bool:
    """Whether a one-statement text is a query ``COPY (...) TO STDOUT`` may wrap (by its first word)."""
    return first_word(text) in _COPYABLE_FIRST_WORDS


def strip_terminator(text: str) -> str:
    """The text without its trailing semicolons (COPY's parentheses cannot hold one)."""
    text = text.rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text
