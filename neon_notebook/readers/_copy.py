"""COPY on psycopg's libpq connection: starting it, finishing it, and binding the C reading loop.

Driven on the libpq connection rather than with ``cursor.copy()``, whose
context holds the connection's lock for the whole COPY: a caller touching the
connection between two batches would deadlock instead of getting psycopg's
"another command is already in progress".

Why this shape (measured on a 2-core machine, 1M rows of 9 mixed columns,
local server; benchmarks/bench_readers.py): the server produces COPY's text
format in ~1.4x the time of its binary format, so binary it is wherever the
C decoder (``_pgcopy.c``) reads every column: the common scalar types, which
it writes straight into Arrow buffers (~50 ms per 1M rows, without the GIL).
Other types (arrays, inet, timetz, halfvec...) take COPY's text format,
parsed by Arrow's C++ CSV reader; so does every read when the decoder was not
built.  One CopyData message is one row; the reading loop appends messages
to a block and cuts blocks at row boundaries.  It runs in C too (``receive``,
calling the ``PQgetCopyData`` of psycopg's own libpq without the GIL): a
Python loop costs ~0.2 s of CPU per 1M rows, which on two cores shared with
the server made reads ~1.2x the floor instead of ~1.0x.  The Python loop
remains where the C one cannot bind (see :func:`native_receive`).
"""

from __future__ import annotations

import functools
import os

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq

from ..errors import DecodeError
from . import _decode
from ._wait import results

#: Receive CopyData in C when the decoder is built and bound to psycopg's libpq
#: (tests turn this off to exercise the Python reading loop).
NATIVE_RECEIVE = True


class NotCopyable(Exception):
    """The statement must take the row path."""


def start_copy(conn: psycopg.Connection, stmt: bytes) -> None:
    """Send the COPY; return once it streams, or raise the server's error."""
    pgconn = conn.pgconn
    pgconn.send_query(stmt)
    answers = results(pgconn)
    res = next(answers, None)
    if res is not None and res.status == pq.ExecStatus.COPY_OUT:
        return
    error = None
    while res is not None:
        if error is None and res.status == pq.ExecStatus.FATAL_ERROR:
            error = pgerrors.error_from_result(res, encoding=conn.info.encoding)
        res = next(answers, None)
    raise error or DecodeError("the server answered the COPY without starting it")


def finish_copy(conn: psycopg.Connection) -> None:
    """After CopyDone: the command's result, raised as the driver's error if one."""
    error = None
    for res in results(conn.pgconn):
        if res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_OUT):
            error = error or pgerrors.error_from_result(res, encoding=conn.info.encoding)
    if error is not None:
        raise error


def native() -> bool:
    """Whether this read may receive in C: the decoder is built, allowed and bound to psycopg's libpq."""
    return NATIVE_RECEIVE and _decode._pgcopy is not None and native_receive()


@functools.lru_cache(maxsize=None)
def native_receive() -> bool:
    """Whether the C reading loop can run: bound to the libpq psycopg uses.

    The loop calls ``PQgetCopyData`` on psycopg's ``PGconn`` (its documented
    ``pgconn_ptr``), so it must use the very library psycopg loaded: the one
    file named libpq in this process's memory map (psycopg-binary's own copy
    when that is the implementation).  Anywhere that is not certain (no
    ``/proc``, several candidates), the reading loop stays in Python.
    """
    pgcopy = _decode._pgcopy
    if pgcopy is None:
        return False
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            fields = (line.split(None, 5) for line in maps if "libpq" in line)
            paths = {f[5].strip() for f in fields if len(f) == 6}
    except OSError:
        return False
    paths = {p for p in paths if os.path.basename(p).startswith("libpq") and ".so" in p}
    if pq.__impl__ == "binary":
        paths = {p for p in paths if "psycopg_binary" in p}
    if len(paths) != 1:
        return False
    try:
        lib = ctypes.CDLL(paths.pop())
        get, free = (ctypes.cast(f, ctypes.c_void_p).value for f in (lib.PQgetCopyData, lib.PQfreemem))
    except (OSError, AttributeError):
        return False
    pgcopy.bind(get, free)
    return True
