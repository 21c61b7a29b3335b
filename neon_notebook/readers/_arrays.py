"""PostgreSQL's array literals (``array_out``'s text) as nested Python lists, without psycopg.

``{1,NULL,"a \\"b\\""}`` -> ``['1', None, 'a "b"']``; a multi-dimensional array is
a list of lists; a ``[lower:upper]=`` prefix (a lower bound other than 1) is
dropped. Elements stay PostgreSQL's text: the column's kind reads them. The
result is what psycopg's ``text[]`` loader gives, which the TCP path uses; an
HTTP transport (Pyodide has no psycopg) uses :func:`load_array`.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import DecodeError

__all__ = ["load_array"]

# A bracket, a quoted element (backslash escapes) or an unquoted one, and its delimiter.
_TOKEN = re.compile(r'([{}]|"(?:[^"\\]|\\.)*"|[^"{},\\]+),?', re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def load_array(data: bytes, encoding: str = "utf-8") -> list[Any]:
    """The elements of a comma-delimited array literal: text, None for NULL, lists for sub-arrays."""
    text = data.decode(encoding)
    if text.startswith("["):
        equals = text.find("=")
        if equals < 0:
            raise DecodeError("malformed array: no '=' after dimension information")
        text = text[equals + 1 :]
    result: list[Any] = []
    current = result
    stack: list[list[Any]] = []
    for match in _TOKEN.finditer(text):
        token = match[1]
        if token == "{":
            if stack:
                stack[-1].append(current)
            stack.append(current)
            current = []
        elif token == "}":
            if not stack:
                raise DecodeError("malformed array: unexpected '}'")
            result = stack.pop()
        elif not stack:
            raise DecodeError(f"malformed array: unexpected {token[:10]!r}")
        else:
            stack[-1].append(None if token == "NULL" else
                             _ESCAPE.sub(r"\1", token[1:-1]) if token.startswith('"') else token)
    return result
