"""The one SQL lexer: first words, ``:name`` placeholders and position mapping (no server)."""

from __future__ import annotations

import pytest

from neon_notebook._sqltext import colon_parameters, first_word, original_offset, tokens


@pytest.mark.parametrize("text, word", [
    ("SELECT 1", "select"),
    ("  -- a comment\n /* nested /* */ still */ ((WITH x AS (select 1) table x))", "with"),
    ("values (1)", "values"),
    ("select1 from t", "select"),  # the letters of the first word, as COPY's check reads it
    ("'select' x", ""),
    ("", ""),
    ("-- only a comment", ""),
])
def test_first_word(text, word):
    assert first_word(text) == word


@pytest.mark.parametrize("text, names", [
    ("select :a, :b_2", ["a", "b_2"]),
    ("select x::int, :a::text, a:::b", ["a"]),
    ("select arr[1:a], arr[:a], f(x):b, a:b, $1:c", ["a"]),
    ("select 1 <:a, =:b, (:c)", ["a", "b", "c"]),
    ("select ':a', \":a\", $$ :a $$, $t$ :a $t$, E'\\' :a' -- :a\n/* :a /* :a */ :a */", []),
    ("select : a, :1", []),
])
def test_colon_parameters(text, names):
    found = colon_parameters(text)
    assert [n for _, _, n in found] == names
    assert all(text[start:end] == ":" + name for start, end, name in found)


def test_a_colon_is_its_own_token_so_operators_do_not_hide_parameters():
    assert [t.value for t in tokens("a<:b")] == ["a", "<", ":", "b"]
    assert [t.value for t in tokens("a::b")] == ["a", "::", "b"]


def test_original_offset_maps_rewritten_offsets_back():
    # "select :long, nope" with :long (5 characters at 7) bound to a 42-character literal
    edits = [(7, 12, 42)]
    assert original_offset(6, edits) == 6  # before the rewrite
    assert original_offset(7 + 20, edits) == 7  # inside it: its start
    assert original_offset(7 + 42 + 2, edits) == 14  # after it: shifted back
    # SET -> SET LOCAL at 0, then a second statement
    edits = [(0, 3, 9), (20, 23, 9)]
    assert original_offset(10, edits) == 4 and original_offset(26, edits) == 20
    assert original_offset(35, edits) == 23
