"""The psycopg-free parsers the HTTP path decodes with agree with psycopg and libpq, the TCP path's oracles."""

from __future__ import annotations

import re

import psycopg
import pytest
from hypothesis import given, settings, strategies as st
from psycopg import pq

from neon_notebook.errors import DecodeError
from neon_notebook.readers._arrays import load_array
from neon_notebook.readers._kinds import unescape_bytea

TEXT_ARRAY = psycopg.adapters.get_loader(1009, pq.Format.TEXT)(1009, None)


def array_out(value: list | str | None) -> str:
    """An array literal as PostgreSQL's ``array_out`` writes it (quoting only where needed)."""
    if isinstance(value, list):
        return "{" + ",".join(array_out(v) for v in value) + "}"
    if value is None:
        return "NULL"
    if value == "" or value.upper() == "NULL" or re.search(r'[{},"\\\s]', value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


elements = st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
arrays = st.one_of(
    st.lists(elements, max_size=6),
    st.integers(1, 3).flatmap(lambda n: st.lists(st.lists(elements, min_size=n, max_size=n), min_size=1, max_size=4)),
)


@settings(max_examples=300, deadline=None, database=None)
@given(arrays)
def test_array_literals_split_as_psycopgs_loader_splits_them(value):
    literal = array_out(value).encode()
    assert load_array(literal) == TEXT_ARRAY.load(literal) == value


def test_malformed_literals_are_a_decode_error():
    for data in (b"[1:2]{1,2}", b"{1}}", b"x{1}"):
        with pytest.raises(DecodeError, match="malformed array"):
            load_array(data)


@pytest.mark.parametrize("literal, value", [
    (b"[0:2]={1,2,3}", ["1", "2", "3"]),
    (b"[-1:0][1:1]={{a},{b}}", [["a"], ["b"]]),
    (b'{"NULL",NULL,"",null}', ["NULL", None, "", "null"]),
    ('{é,"ü ñ"}'.encode(), ["é", "ü ñ"]),
])
def test_array_literal_forms(literal, value):
    assert load_array(literal) == TEXT_ARRAY.load(literal) == value


def _bytea_escape_out(data: bytes) -> str:
    """bytea_output = escape, as PostgreSQL's byteaout writes it."""
    return "".join("\\\\" if b == 92 else f"\\{b:03o}" if b < 32 or b > 126 else chr(b) for b in data)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=24))
def test_bytea_escape_output_reads_back_as_libpq_reads_it(data):
    text = _bytea_escape_out(data)
    assert unescape_bytea(text) == pq.Escaping().unescape_bytea(text.encode()) == data


@settings(max_examples=300, deadline=None, database=None)
@given(st.text("\\0123478a", max_size=12).filter(lambda t: not t.startswith("\\x")))
def test_any_backslash_text_unescapes_as_libpq_unescapes_it(text):
    assert unescape_bytea(text) == pq.Escaping().unescape_bytea(text.encode())
