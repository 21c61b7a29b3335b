"""A small connection pool that never connects, pings or refills on its own.

Why not ``psycopg_pool.ConnectionPool``: it grows in background worker threads
with its own reconnect policy, so a waiting caller sees a ``PoolTimeout`` instead
of the real connect error (a wrong password waits the whole timeout), and its
workers keep reconnecting — waking a suspended Neon compute nobody asked for.
Here every connection is opened in the caller's thread, by the caller's
retry-aware ``connect``, only when the caller needs one. There are no threads to
join at exit.

Checkout is careful instead of chatty: a connection idle past ``max_idle`` (set
below the compute's suspend window) is retired unseen; one whose socket has
something to read while idle (a 57P01 or an EOF from a suspension), or that
idled longer than ``ping_after``, is pinged first and dropped if dead.

A thread that already holds every connection of a full pool (a read inside a
``with session.connection()`` block) would wait for itself: it is told so at once.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from typing import Callable, Iterator

import psycopg
from psycopg.pq import TransactionStatus

from ._translate import closed_error
from .errors import PoolExhausted

log = logging.getLogger("neon_notebook")


def has_news(conn: psycopg.Connection) -> bool:
    """True when an idle connection is closed or has unread data, found without a round trip.

    An idle connection only receives data when the server says goodbye (57P01
    and EOF on a suspension) or sends a NOTIFY; either way it deserves a ping.
    """
    if conn.closed or conn.broken:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def ping(conn: psycopg.Connection) -> None:
    """One round trip; raises when the connection is unusable."""
    conn.execute("")


class Pool:
    """At most ``max_size`` connections from ``connect``, reused newest first.

    ``timeout``: seconds to wait for a free connection; None waits for ever.
    """

    def __init__(self, name: str, connect: Callable[[], psycopg.Connection], *, max_size: int,
                 timeout: float | None, max_idle: float | None, ping_after: float = 60.0,
                 on_dead: Callable[[BaseException], None] | None = None) -> None:
        self.name, self.max_size, self.timeout = name, max_size, timeout
        self.max_idle, self.ping_after = max_idle, ping_after
        self._connect = connect
        self._on_dead = on_dead  # told when a ping finds an idle connection dead
        self._idle: deque[tuple[psycopg.Connection, float]] = deque()
        self._slots = threading.BoundedSemaphore(max_size)
        self._lock = threading.Lock()
        self._holders: Counter[int] = Counter()  # thread id -> slots it holds (under _lock)
        # id(connection) -> the thread id that borrowed it; one store or pop each, atomic without a lock.
        self._owner: dict[int, int] = {}
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections handed out and not yet returned."""
        return len(self._owner)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """Borrow a connection: commit at exit, roll back on an exception, then return it."""
        conn = self.getconn()
        try:
            yield conn
            if conn.info.transaction_status == TransactionStatus.INTRANS:
                conn.commit()  # a failing commit raises here, to the caller
        except BaseException:
            self.putconn(conn)
            raise
        else:
            self.putconn(conn)

    def getconn(self) -> psycopg.Connection:
        if self._closed:
            raise closed_error(f"the session's {self.name} pool is closed")
        me = threading.get_ident()
        with self._lock:  # the checkout's one lock: the self-held check and the count, together
            if self._holders[me] >= self.max_size:
                raise PoolExhausted(self._self_held_message(), pool_size=self.max_size, timeout=self.timeout)
            self._holders[me] += 1  # only this thread reads its count, so counting before the wait is safe
        try:
            if not self._slots.acquire(timeout=self.timeout):
                raise PoolExhausted(pool_size=self.max_size, timeout=self.timeout)
        except BaseException:  # timed out, or interrupted while waiting: no slot taken
            self._forget(me)
            raise
        try:
            conn = self._reuse() or self._connect()
        except BaseException:
            self._release(me)
            raise
        self._owner[id(conn)] = me
        return conn

    def _self_held_message(self) -> str:
        plural = "s" if self.max_size != 1 else ""
        return (f"All {self.max_size} {self.name} connection{plural} of this session are held by this "
                "thread itself (an open `with session.connection()` or `session.direct()` block, or an "
                "unfinished iter_batches), so waiting for one would wait for ever. Use the connection "
                "you hold, or leave the `with` block first; or raise the pool size "
                "(connection_limit in the URL, pool_size=...).")

    def _release(self, holder: int | None) -> None:
        """Give back a slot taken by thread ``holder``."""
        if holder is not None:
            self._forget(holder)
        self._slots.release()

    def _forget(self, holder: int) -> None:
        """Count one slot fewer for thread ``holder``."""
        with self._lock:
            self._holders[holder] -= 1
            if self._holders[holder] <= 0:
                del self._holders[holder]

    def _reuse(self) -> psycopg.Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn, returned = self._idle.pop()
            idle_for = time.monotonic() - returned
            if (self.max_idle is not None and idle_for > self.max_idle) or conn.closed:
                conn.close()
                continue
            if idle_for > self.ping_after or has_news(conn):
                try:
                    ping(conn)
                except psycopg.Error as exc:
                    conn.close()
                    if self._on_dead is not None:
                        self._on_dead(exc)
                    continue
            return conn

    def putconn(self, conn: psycopg.Connection) -> None:
        """Return a connection, rolling back what is open; kept only if clean."""
        holder = self._owner.pop(id(conn), None)
        try:
            if self._closed or not self._reset(conn):
                conn.close()
            else:
                with self._lock:
                    self._idle.append((conn, time.monotonic()))
        finally:
            self._release(holder)

    @staticmethod
    def _reset(conn: psycopg.Connection) -> bool:
        if conn.closed or conn.broken:
            return False
        status = conn.info.transaction_status
        try:
            if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                conn.rollback()
            elif status != TransactionStatus.IDLE:
                return False  # a query still running (interrupted read): don't reuse
            if conn.autocommit:
                conn.autocommit = False
        except psycopg.Error:
            return False
        return conn.info.transaction_status == TransactionStatus.IDLE

    def close(self) -> None:
        """Close idle connections now; borrowed ones close when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), deque()
        for conn, _ in idle:
            conn.close()

    def __repr__(self) -> str:
        return f"<Pool {self.name} size={self.max_size} in_use={self.in_use} idle={len(self._idle)}>"
