"""A session's status as text: labelled rows drawn from a ``Status`` snapshot.

The rows are what every view shows: the text (``text/plain`` of a displayed
session, ``%neon status`` outside a notebook) and the panel's details. They
read only the snapshot, whose strings are already masked.
"""

from __future__ import annotations

from .._state import ComputeState
from .._status import Endpoints, PoolStats, QueryStats, Status

Row = tuple[str, str]

#: What a view shows once its session has been garbage-collected.
GONE_ROWS: list[Row] = [("state", "unknown (session gone: nothing refers to it any more)")]


def status_rows(status: Status) -> list[Row]:
    """``(label, text)`` rows; the first is always ``("state", ...)``, rows without a value are left out."""
    detail = status.detail if status.state is not ComputeState.ERROR else None  # the error has its own row
    rows: list[tuple[str, str | None]] = [
        ("state", f"{status.state}" + (f" ({detail})" if detail else "")),
        *_endpoint_rows(status.endpoints),
        ("transport", status.transport),
        ("ping", f"{status.ping * 1e3:.1f} ms" if status.ping is not None else None),
        ("pools", _pools_text(status.pools)),
        _query_row(status.last_query),
        ("last error", status.last_error),
    ]
    return [(label, value) for label, value in rows if value]


def status_text(status: Status) -> str:
    """The status as plain text (terminals, logs, ``text/plain`` output)."""
    return rows_text(status_rows(status))


def rows_text(rows: list[Row]) -> str:
    """Rows under a "Neon compute" title, labels aligned."""
    width = max(len(label) for label, _ in rows)
    return "Neon compute\n" + "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def _endpoint_rows(endpoints: Endpoints) -> list[Row]:
    if endpoints.same:
        return [("endpoint", str(endpoints.pooled))]
    return [("pooled", str(endpoints.pooled)), ("direct", str(endpoints.direct))]


def _pools_text(pools: tuple[PoolStats, ...]) -> str:
    return "; ".join(f"{p.role} {p.in_use} in use, {p.idle} idle (max {p.size})" for p in pools)


def _query_row(query: QueryStats | None) -> tuple[str, str | None]:
    """``("last query", ...)`` for a read; a write is ``("last write", "append into public.t: ...")``."""
    if query is None:
        return ("last query", None)
    rate = query.rows_per_second
    rate_text = f"{rate:,.0f} rows/s" if rate != float("inf") else "instant"
    rows = f"{query.rows:,} row" + ("" if query.rows == 1 else "s")
    text = f"{rows}, {query.bytes / 1e6:,.1f} MB in {query.seconds:.2f} s ({rate_text})"
    if query.write is None:
        return ("last query", text)
    return ("last write", f"{query.write}: {text}")
