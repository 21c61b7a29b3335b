"""The one SQL lexer, shared by the readers and the magics' ``:name`` binding.

:func:`tokens` knows what PostgreSQL skips: string literals (``'...'``,
``E'...'``), quoted identifiers, dollar quotes, ``--`` and nested ``/* */``
comments.  :func:`statements` splits a text into its top-level statements,
each a list of tokens, so the readers can tell what a text does (``SET``,
``COMMIT``, ``COPY ... FROM STDIN``...) without being fooled by a keyword
inside a string or a comment; :func:`first_word` reads only as far as the
first keyword; :func:`colon_parameters` finds the magics' ``:name``
placeholders.  :func:`original_offset` maps a position in a rewritten text
(parameters bound, ``SET`` made ``SET LOCAL``) back to the text as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator


def end_of_block_comment(text: str, start: int) -> int:
    """The offset just after the ``/* ... */`` comment opening at ``start`` (they nest in SQL)."""
    depth, i = 1, start + 2
    while depth and i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


_SCAN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*)
    | (?P<block>/\*)
    | (?P<string>[Ee]'(?:[^'\\]|\\.|'')*'?|'(?:[^']|'')*'?)
    | (?P<ident>(?:[Uu]&)?"(?:[^"]|"")*"?)
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>\d[\w.]*|\$\d+)
    | (?P<op>::|[;(),=.:\[\]]|[^\s\w;(),=.:'"$\[\]]+|\$)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One token: ``kind`` (word, string, ident, number, op), its text (words lowercased), where it is."""

    kind: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Statement:
    """A top-level statement: its tokens (no comments, no spaces) and its span in the text."""

    tokens: tuple[Token, ...]
    start: int
    end: int

    @property
    def words(self) -> list[str]:
        """The leading keywords, lowercased, up to the first token that is not a word."""
        out = []
        for t in self.tokens:
            if t.kind != "word":
                break
            out.append(t.value)
        return out

    def first(self, n: int = 1) -> tuple[str, ...]:
        """The first ``n`` tokens' values (``""`` past the end)."""
        values = [t.value for t in self.tokens[:n]]
        return tuple(values + [""] * (n - len(values)))

    def has_words(self, *words: str) -> bool:
        """Whether ``words`` appear as consecutive tokens anywhere in the statement."""
        values = [t.value for t in self.tokens]
        n = len(words)
        return any(tuple(values[i:i + n]) == words for i in range(len(values) - n + 1))


def iter_tokens(text: str) -> Iterator[Token]:
    """The tokens of ``text`` one by one (string literals, dollar quotes and identifiers whole,
    comments dropped), so that a caller needing only the first few lexes no further."""
    i, n = 0, len(text)
    while i < n:
        m = _SCAN.match(text, i)
        if m is None:  # pragma: no cover - the op alternative matches any other character
            i += 1
            continue
        kind = m.lastgroup
        if kind == "block":
            i = end_of_block_comment(text, i)
            continue
        if kind == "dollar":
            tag = m.group()
            close = text.find(tag, m.end())
            end = n if close < 0 else close + len(tag)
            yield Token("string", text[i:end], i, end)
            i = end
            continue
        if kind not in ("space", "comment"):
            value = m.group().lower() if kind == "word" else m.group()
            yield Token(kind, value, i, m.end())
        i = m.end()


def tokens(text: str) -> list[Token]:
    """Every token of ``text`` (see :func:`iter_tokens`)."""
    return list(iter_tokens(text))


_LETTERS = re.compile(r"[A-Za-z_]+")


def first_word(text: str) -> str:
    """The first keyword, lowercased, past comments and opening parentheses (``""`` if none)."""
    for tok in iter_tokens(text):
        if tok.kind == "op" and tok.value == "(":
            continue
        m = _LETTERS.match(tok.value) if tok.kind == "word" else None
        return m.group(0) if m else ""
    return ""


# A character after which a colon is SQL, not a parameter: ``a:b``, ``arr[1:n]``, ``f(x):y``.
_NOT_BEFORE_PARAMETER = re.compile(r"[\w\]\)$:]")
_PARAMETER_NAME = re.compile(r"[^\W\d]\w*")


def colon_parameters(text: str) -> list[tuple[int, int, str]]:
    """The ``:name`` placeholders of ``text`` as ``(start, end, name)``, in order.

    A colon is a placeholder only where SQL could not mean something else: not
    in ``::casts``, strings, quoted identifiers, dollar quotes or comments (the
    lexer skips those), and not right after a name, number or bracket.
    """
    out = []
    previous: Token | None = None
    for tok in iter_tokens(text):
        if (previous is not None and previous.value == ":" and previous.kind == "op"
                and tok.kind == "word" and tok.start == previous.end
                and not (previous.start and _NOT_BEFORE_PARAMETER.match(text, previous.start - 1))):
            m = _PARAMETER_NAME.match(text, tok.start)
            out.append((previous.start, m.end(), m.group()))
        previous = tok
    return out


def original_offset(offset: int, edits: Iterable[tuple[int, int, int]]) -> int:
    """A 0-based offset in a rewritten text, as an offset in the text before the rewrites.

    ``edits``: ``(start, end, new_length)`` in the original text's offsets, in
    order, not overlapping: ``text[start:end]`` became ``new_length``
    characters.  An offset inside a rewritten span maps to the span's start.
    Both the magics (``:name`` -> a literal) and the readers (``SET`` -> ``SET
    LOCAL`` on the pooled endpoint) map the server's error positions with it.
    """
    shift = 0  # rewritten offset minus original offset, so far
    for start, end, new_length in edits:
        if offset < start + shift:
            break
        if offset < start + shift + new_length:
            return start
        shift += new_length - (end - start)
    return offset - shift


def statements(text: str) -> list[Statement]:
    """The top-level statements of ``text``, split at semicolons outside strings and bodies.

    A ``BEGIN ATOMIC ... END`` function body keeps its inner semicolons, as in psql.
    """
    out: list[Statement] = []
    current: list[Token] = []
    depth = 0  # BEGIN ATOMIC / CASE ... END nesting inside a statement
    for tok in tokens(text):
        if tok.kind == "op" and tok.value == ";" and depth == 0:
            if current:
                out.append(Statement(tuple(current), current[0].start, current[-1].end))
            current = []
            continue
        if tok.kind == "word":
            prev = current[-1].value if current else ""
            if tok.value == "atomic" and prev == "begin" and current[0].value == "create":
                depth += 1
            elif depth and tok.value == "case":
                depth += 1
            elif depth and tok.value == "end":
                depth -= 1
        current.append(tok)
    if current:
        out.append(Statement(tuple(current), current[0].start, current[-1].end))
    return out
