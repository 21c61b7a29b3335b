"""Waiting on psycopg's libpq connection: in slices, so that an interrupt is handled.

A wait inside libpq (``PQgetResult`` on a busy connection, a blocking
``PQgetCopyData``) only returns to Python when the server answers: Ctrl-C,
Jupyter's stop button or ``_thread.interrupt_main()`` would wait with it.
Every wait of the readers goes through :func:`wait_readable` instead, a
``select`` of at most :data:`WAIT_SLICE_S`; :func:`results` reads a command's
results with it, :func:`drain_copy` the rest of a COPY.
"""

from __future__ import annotations

import select
from typing import Iterator

import psycopg
from psycopg import pq

# Longest wait on the socket without looking at pending signals: an interrupt
# from another thread (``_thread.interrupt_main()``, how ipykernel interrupts on
# Windows) is only handled once the wait returns to Python.
WAIT_SLICE_S = 0.1


def wait_readable(pgconn: pq.abc.PGconn) -> None:
    """Wait until the server sends something, in slices so that interrupts are handled."""
    sock = pgconn.socket
    while not select.select([sock], [], [], WAIT_SLICE_S)[0]:
        pass
    pgconn.consume_input()


def flush(pgconn: pq.abc.PGconn) -> None:
    """Send what libpq buffered, waiting in slices when the socket is full."""
    while pgconn.flush():
        select.select([], [pgconn.socket], [], WAIT_SLICE_S)


def results(pgconn: pq.abc.PGconn) -> Iterator[pq.abc.PGresult]:
    """The results of what was sent, one by one, until libpq has no more (sent first if buffered).

    Stop iterating at a ``COPY_OUT`` result to read the COPY's data.
    """
    flush(pgconn)
    while True:
        while pgconn.is_busy():
            wait_readable(pgconn)
        res = pgconn.get_result()
        if res is None:
            return
        yield res


def drain_copy(pgconn: pq.abc.PGconn) -> None:
    """Read and drop the rest of a COPY's data (the COPY's own result follows)."""
    while True:
        nbytes, _ = pgconn.get_copy_data(1)
        if nbytes == 0:
            wait_readable(pgconn)
        elif nbytes < 0:
            return


def closed_by_server(pgconn: pq.abc.PGconn) -> bool:
    """Whether the server has already closed the connection (what it sent is read, without waiting)."""
    for _ in range(4):  # the FATAL message, then the end of the stream
        if pgconn.status == pq.ConnStatus.BAD or not select.select([pgconn.socket], [], [], 0)[0]:
            break
        try:
            pgconn.consume_input()
        except psycopg.OperationalError:
            break
    return pgconn.status == pq.ConnStatus.BAD

