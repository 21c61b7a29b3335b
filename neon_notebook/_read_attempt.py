"""One attempt at a read, and the rule for a second: the session's "retry the read once".

``Session`` runs each read as ``for attempt in attempts: with attempt.connection()
as conn: ...``; a connection lost before any row reached the caller, when the
text cannot have committed, ends the block quietly and asks for one more try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import psycopg

from ._translate import classify, lost, read_error

__all__ = ["Progress", "ReadAttempt", "Tracker"]

log = logging.getLogger("neon_notebook")

#: A read's progress callback: ``(rows, bytes, estimated rows or None)``.
Progress = Callable[[int, int, "int | None"], object]


class ReadAttempt:
    """One attempt at a read: ``with attempt.connection() as conn:``, then ``attempt.retry``.

    A connection lost before any row reached the caller (``rows_delivered``)
    ends the block quietly with ``retry`` set, unless this is the ``last``
    attempt or the text may have committed; what is raised instead is
    ``_translate.read_error``'s.
    """

    def __init__(self, borrow: Callable[[], AbstractContextManager[psycopg.Connection]],
                 progress: Progress | None, *, last: bool) -> None:
        self._borrow, self._last = borrow, last
        self.tracker = Tracker(progress)
        self.rows_delivered = 0
        self.retry = False
        self._started = time.perf_counter()

    def seconds(self) -> float:
        """Seconds since the attempt began."""
        return time.perf_counter() - self._started

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        was_lost = False
        try:
            with self._borrow() as conn:
                try:
                    yield conn
                except psycopg.OperationalError as exc:
                    was_lost = lost(conn, exc)  # judged before the connection goes back to its pool
                    raise
        except psycopg.OperationalError as exc:
            if not was_lost:
                raise
            error = read_error(exc, rows_delivered=self.rows_delivered)
            if error is not None and error is not exc:
                raise error from exc
            if error is exc or self._last:
                raise
            log.info("read interrupted before any row arrived (%s); retrying once", classify(exc).reason)
            self.retry = True


class Tracker:
    """Progress callback wrapper that remembers the last counts, for ``last_query``."""

    def __init__(self, inner: Progress | None) -> None:
        self.inner, self.rows, self.bytes = inner, 0, 0

    def __call__(self, rows: int, nbytes: int, estimate: int | None) -> None:
        self.rows, self.bytes = rows, nbytes
        if self.inner is not None:
            self.inner(rows, nbytes, estimate)
