"""Helpers for tests/test_http_transport.py: run one call on both transports, compare what came back.

The oracle for the HTTP transport is the TCP session on the same compute (COPY
path, psycopg's literal binding): an ``Outcome`` holds what a call gave (a value
and the warnings it raised, or the exception), so both sides compare in one line.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from readers_support import arrow_values


@dataclass
class Outcome:
    """What one call gave: its value and warnings, or its exception."""

    value: Any = None
    error: BaseException | None = None
    warned: list[tuple[type, str]] = field(default_factory=list)

    @property
    def failed(self) -> str:
        """The exception as "Class: message" ("" when the call succeeded)."""
        return "" if self.error is None else f"{type(self.error).__name__}: {self.error}"


def outcome(call: Callable[[], Any]) -> Outcome:
    """Run ``call``; keep its value or its exception, and every warning it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = call()
        except Exception as exc:  # noqa: BLE001 - the exception is the result being compared
            return Outcome(error=exc, warned=[(w.category, str(w.message)) for w in caught])
    return Outcome(value=value, warned=[(w.category, str(w.message)) for w in caught])


def same_value(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN, element by element in lists and dicts."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def assert_same_table(got: pa.Table, expected: pa.Table, what: str = "") -> None:
    """Same schema (field metadata included), same values column by column (temporal ones as integers)."""
    assert got.schema.equals(expected.schema, check_metadata=True), (
        f"{what}: schemas differ\nHTTP:\n{got.schema}\nTCP:\n{expected.schema}")
    assert got.num_rows == expected.num_rows, what
    for name, ours, theirs in zip(got.column_names, got.columns, expected.columns):
        a, b = arrow_values(ours), arrow_values(theirs)
        for i, (x, y) in enumerate(zip(a, b)):
            assert same_value(x, y), f"{what}: column {name!r} row {i}: HTTP {x!r} != TCP {y!r}"


def assert_same_outcome(got: Outcome, expected: Outcome, what: str = "") -> None:
    """Both failed alike (class and message), or both gave equal tables (or values) and the same warnings."""
    if expected.error is not None or got.error is not None:
        assert got.failed == expected.failed, f"{what}: HTTP {got.failed or got.value!r} != TCP {expected.failed or expected.value!r}"
        return
    if isinstance(expected.value, pa.Table):
        assert_same_table(got.value, expected.value, what)
    else:
        assert same_value(got.value, expected.value), f"{what}: HTTP {got.value!r} != TCP {expected.value!r}"
    assert got.warned == expected.warned, f"{what}: warnings differ"
