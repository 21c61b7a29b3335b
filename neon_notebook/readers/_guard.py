"""What a query text does, found by the lexer before it runs (``neon_notebook._sqltext``).

* On a pooled connection (PgBouncer in transaction mode) a statement must not
  leave session state on the server connection, which the pooler hands to
  other clients next: a plain ``SET`` runs as ``SET LOCAL`` (with a
  :class:`SessionSettingWarning`), other session state is refused before
  anything runs (:class:`SessionStateRefused`).
* Whether a statement of the text can commit by itself (``COMMIT``,
  ``ROLLBACK``...), which forbids re-running the text after a lost connection.
* ``COPY ... FROM STDIN`` / ``TO STDOUT``, which a reader cannot run.
* Which statements change an output setting the parsers depend on.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Sequence, Tuple

from .._sqltext import Statement, Token, statements, tokens
from ..errors import SessionSettingWarning, SessionStateRefused, UnsupportedStatement
from ._settings import SETTINGS_READ

#: Settings that shape PostgreSQL's text output (lowercase, as SET spells them).
OUTPUT_SETTINGS = frozenset(name.lower() for name in SETTINGS_READ)
_SESSION_LOCKS = {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
                  "pg_try_advisory_lock_shared"}
# Names the checks look for anywhere in a statement (not just its first words).
_CALLS = re.compile(r"set_config|advisory_lock|\binto\b", re.IGNORECASE)
_NOTIFY = re.compile("notify", re.IGNORECASE)
_HEAD = 4096  # enough text for the first words past any leading comment
_DIRECT_HINT = ("run it on the direct endpoint instead: direct=True in the session's reads, "
                "session.direct() for a connection, or %%sql --direct")


@dataclass
class Text:
    """A bound SQL text and its statements."""

    sql: str
    statements: list[Statement]

    @classmethod
    def of(cls, sql: str) -> Text:
        """The text and its statements; a plain query is not lexed past its first words.

        Lexing costs ~0.6 s per MB in Python, and a bound parameter list can be
        megabytes: one statement starting with SELECT/WITH/VALUES/TABLE, without
        a semicolon or a name the checks look for, needs only its first words.
        """
        if ";" not in sql and not _CALLS.search(sql):
            head = tokens(sql[:_HEAD])
            if head and head[0].value in ("select", "with", "values", "table"):
                return cls(sql, [Statement(tuple(head[:8]), head[0].start, len(sql))])
        return cls(sql, statements(sql))

    @functools.cached_property
    def may_commit(self) -> bool:
        """Whether a statement of the text ends the read's transaction (commits what ran before it)."""
        for st in self.statements:
            first, second = st.first(2)
            if first in ("commit", "end", "abort") or (first == "prepare" and second == "transaction"):
                return True
            if first == "rollback" and second not in ("to",) and not st.has_words("rollback", "work", "to") \
                    and not st.has_words("rollback", "transaction", "to"):
                return True
        return False

    @functools.cached_property
    def output_changes(self) -> list[int]:
        """Indexes of the statements that may change an output setting."""
        return [i for i, st in enumerate(self.statements) if _changes_output(st)]

    @functools.cached_property
    def may_notify(self) -> bool:
        """Whether the text may send a notification (``NOTIFY``, ``pg_notify``), even in a string."""
        return _NOTIFY.search(self.sql) is not None


def check_copy(text: Text) -> None:
    """Refuse ``COPY ... FROM STDIN`` and ``COPY ... TO STDOUT`` before they run."""
    for st in text.statements:
        if st.first()[0] != "copy":
            continue
        values = {t.value for t in st.tokens if t.kind == "word"}
        if "stdin" in values:
            raise UnsupportedStatement(
                "COPY ... FROM STDIN needs data sent from the client, which a read cannot do. "
                "Load data with psycopg's cursor.copy() on session.connection(), or INSERT ... SELECT.")
        if "stdout" in values:
            raise UnsupportedStatement(
                "COPY ... TO STDOUT is what the readers already do: pass the query itself "
                "(e.g. read_arrow(\"select * from t\")) and it is streamed with COPY.")


#: ``(start, end, replacement)``: ``sql[start:end]`` replaced, in the original text's offsets.
Edit = Tuple[int, int, str]


def for_pooled(text: Text) -> list[Edit]:
    """The edits making the text safe for a pooler's shared server connection, in order
    (see the module's docstring); raises :class:`SessionStateRefused` for what cannot be."""
    edits: list[Edit] = []
    for st in text.statements:
        edit = _check_statement(st)
        if edit is not None:
            edits.append(edit)
    return edits


def apply_edits(sql: str, edits: Sequence[Edit]) -> str:
    """``sql`` with ``edits`` (in order, not overlapping) made."""
    for start, end, replacement in reversed(edits):
        sql = sql[:start] + replacement + sql[end:]
    return sql


def _check_statement(st: Statement) -> tuple[int, int, str] | None:
    toks = st.tokens
    words = st.first(4)
    first = words[0]
    for i, tok in enumerate(toks):  # function calls anywhere in the statement
        if tok.kind != "word" or i + 1 >= len(toks) or toks[i + 1].value != "(":
            continue
        if tok.value in _SESSION_LOCKS:
            _refuse(f"{tok.value}() takes a lock held by the server connection after this read, "
                    "which the pooler then shares with other clients (use pg_advisory_xact_lock() "
                    "for a lock held by the read's transaction)")
        if tok.value == "set_config" and not _is_local(_argument(toks, i + 1, 2)):
            _refuse("set_config(..., false) changes a setting for the server connection, which the "
                    "pooler then shares with other clients (set_config(..., true) lasts for the read)")
    if first == "set":
        return _set_local(st)
    if first == "listen":
        _refuse("LISTEN registers the server connection, which the pooler shares with other clients")
    if first == "prepare" and words[1] != "transaction":
        _refuse("PREPARE leaves a prepared statement on the server connection, which the pooler "
                "shares with other clients")
    if first == "declare" and st.has_words("with", "hold"):
        _refuse("a cursor WITH HOLD outlives the read's transaction on the server connection, which "
                "the pooler shares with other clients")
    if first == "load":
        _refuse("LOAD loads a library into the server connection, which the pooler shares")
    if first == "create" and _creates_temp(st):
        _refuse("a temporary object lives as long as the server connection, which the pooler "
                "shares with other clients (CREATE TEMP TABLE ... ON COMMIT DROP lasts for the read)")
    if first in ("select", "with") and any(
            toks[i].value == "into" and toks[i + 1].value in ("temp", "temporary")
            for i in range(len(toks) - 1)):
        _refuse("SELECT ... INTO TEMP creates a temporary table that lives as long as the server "
                "connection, which the pooler shares with other clients")
    return None


def _refuse(why: str) -> None:
    raise SessionStateRefused(f"Not run on the pooled endpoint: {why}. To keep session state, "
                              f"{_DIRECT_HINT}.")


def _set_local(st: Statement) -> tuple[int, int, str] | None:
    """``SET [SESSION] x ...`` -> the edit making it ``SET LOCAL x ...``, with a warning."""
    toks = st.tokens
    if len(toks) < 2 or toks[1].value in ("local", "transaction", "constraints"):
        return None
    name_toks = toks[1:]
    edit = (toks[0].start, toks[0].end, "SET LOCAL")
    if toks[1].value == "session":
        third = toks[2].value if len(toks) > 2 else ""
        if third == "characteristics":
            _refuse("SET SESSION CHARACTERISTICS changes the server connection's defaults, which "
                    "the pooler shares with other clients")
        if third != "authorization":  # SET SESSION x -> SET LOCAL x
            edit, name_toks = (toks[0].start, toks[1].end, "SET LOCAL"), toks[2:]
    warnings.warn(
        f"SET {_setting_name(name_toks)} was run as SET LOCAL on the pooled endpoint: it lasts for "
        "this read only (PgBouncer shares server connections between clients, so a session "
        f"setting would reach other notebooks). For a setting that lasts, {_DIRECT_HINT}.",
        SessionSettingWarning, stacklevel=6)
    return edit


_SPECIAL_FORMS = {"time": "time zone", "session": "session authorization", "role": "role",
                  "schema": "schema", "names": "names"}


def _setting_name(toks: tuple[Token, ...]) -> str:
    """The name a SET statement sets, as written (``search_path``, ``time zone``, ``a.b``)."""
    if toks and toks[0].value in _SPECIAL_FORMS:
        return _SPECIAL_FORMS[toks[0].value]
    parts = []
    for t in toks:
        if t.value in ("to", "=") or t.kind not in ("word", "ident") and t.value != ".":
            break
        parts.append(t.value)
    return "".join(parts) or "(setting)"


def _argument(toks: tuple[Token, ...], open_at: int, index: int) -> list[Token]:
    """The tokens of argument ``index`` (0-based) of the call whose ``(`` is at ``open_at``."""
    depth, arg, out = 0, 0, []
    for t in toks[open_at:]:
        if t.value in ("(", "["):
            depth += 1
            if depth == 1:
                continue
        elif t.value in (")", "]"):
            depth -= 1
            if depth == 0:
                break
        elif t.value == "," and depth == 1:
            arg += 1
            continue
        if arg == index:
            out.append(t)
    return out


def _is_local(arg: list[Token]) -> bool:
    """Whether a set_config ``is_local`` argument is literally true."""
    if len(arg) == 1:
        v = arg[0].value.lower()
        return v == "true" or (arg[0].kind == "string" and v.strip("'") in ("t", "true", "on", "yes", "1"))
    return False


def _creates_temp(st: Statement) -> bool:
    words = st.words[1:5]
    temp = next((i for i, w in enumerate(words) if w in ("temp", "temporary")), None)
    if temp is None:
        return False
    obj = words[temp + 1] if temp + 1 < len(words) else ""
    return not (obj == "table" and st.has_words("on", "commit", "drop"))


def _changes_output(st: Statement) -> bool:
    toks = st.tokens
    first = st.first()[0]
    if first in ("set", "reset"):
        rest = [t.value for t in toks[1:4]]
        rest = [w for w in rest if w not in ("local", "session")]
        name = rest[0] if rest else ""
        return name in OUTPUT_SETTINGS or name in ("all", "time") or not rest
    if first == "discard":
        return True
    for i, tok in enumerate(toks):
        if tok.value == "set_config" and i + 1 < len(toks) and toks[i + 1].value == "(":
            arg = _argument(toks, i + 1, 0)
            if not (len(arg) == 1 and arg[0].kind == "string"
                    and arg[0].value.strip("'").lower() not in OUTPUT_SETTINGS):
                return True
    return False
