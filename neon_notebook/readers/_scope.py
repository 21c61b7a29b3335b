"""A read's transaction and output settings (:class:`Scope`), and bringing a busy connection back (:func:`settle`).

A read is one transaction, or a savepoint inside the caller's; it reads the
session's output settings in the same round trip as its ``BEGIN`` and
changes only those the parsers cannot read (:func:`._output.output_fixes`).
Its ``COMMIT`` goes in one message with a probe of whether the transaction
wrote, so that a lost answer to a read that wrote nothing is harmless.
"""

from __future__ import annotations

from typing import Callable

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq

from ._output import READ_SETTINGS, SETTINGS_READ, output_fixes
from .._translate import connection_lost
from ._wait import closed_by_server, drain_copy, results

_SAVEPOINT = "neon_notebook_read"
# The column of the probe sent with the read's COMMIT (see Scope._commit_probed).
_PROBE_COLUMN = "neon_notebook_wrote_nothing"


def settle(conn: psycopg.Connection) -> None:
    """Bring a connection left mid-command (an interrupt, an abandoned COPY) back to idle.

    psycopg cancels a query interrupted while it waits, but may give up
    before reading the end of the server's answer; then the connection is
    still "busy" and every command fails with "another command is already in
    progress".  Cancel whatever still runs and read the rest (waiting in
    slices, as every wait of the readers).
    """
    pgconn = conn.pgconn
    if conn.closed or pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
        return
    try:
        conn.cancel_safe(timeout=5.0)
    except Exception:
        pass
    try:
        for res in results(pgconn):
            if res.status == pq.ExecStatus.COPY_OUT:
                drain_copy(pgconn)
            elif res.status == pq.ExecStatus.COPY_IN:  # end it, or get_result answers COPY_IN forever
                pgconn.put_copy_end(b"COPY FROM STDIN is not supported by the readers")
            if pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
                break
    except psycopg.OperationalError:
        if pgconn.status != pq.ConnStatus.BAD:
            raise  # a connection that died meanwhile has nothing left to read


class Scope:
    """One transaction (or savepoint) for a read, with text output PostgreSQL's way.

    * autocommit connection, idle: ``BEGIN`` ... ``COMMIT``
    * non-autocommit, idle: psycopg's implicit BEGIN ... ``commit()``
    * inside the caller's transaction: ``SAVEPOINT`` ... ``RELEASE``, with any
      setting changed below put back (a released savepoint keeps SET LOCAL).
    On any exception (KeyboardInterrupt included) the work is rolled back.

    The session's settings are read in the same round trip as ``BEGIN``; the
    query runs under them, so ``now()::date`` or ``SHOW TimeZone`` mean what
    they mean in psql.  Only an output format the parsers don't read is
    changed, with ``SET LOCAL`` (see :func:`output_fixes`).
    """

    def __init__(self, conn: psycopg.Connection, on_commit: Callable[[], None] | None = None,
                 probe: bool = False):
        self.conn = conn
        self.on_commit = on_commit  # told just before the COMMIT is sent
        # Ask, in the COMMIT's own message, whether the transaction wrote (see _commit_probed);
        # only for texts that do not end the transaction themselves.
        self.probe = probe and conn.info.server_version >= 100000
        #: True once the server said the transaction was given no transaction id (it wrote nothing).
        self.wrote_nothing = False
        self.mode = ""
        self.settings: dict[str, str] = {}
        self._restore: dict[str, str] = {}

    def __enter__(self) -> Scope:
        conn = self.conn
        cur = conn.cursor()
        status = conn.pgconn.transaction_status
        read = READ_SETTINGS
        if status == pq.TransactionStatus.IDLE:
            self.mode = "begin" if conn.autocommit else "implicit"
            prefix = "BEGIN; " if conn.autocommit else ""
        else:
            # INTRANS (INERROR and ACTIVE make this execute raise the driver's error).
            self.mode = "savepoint"
            prefix = f"SAVEPOINT {_SAVEPOINT}; "
        cur.execute((prefix + read).encode(), prepare=False)
        while cur.pgresult is None or cur.pgresult.status != pq.ExecStatus.TUPLES_OK:
            cur.nextset()
        self.settings = dict(zip(SETTINGS_READ, cur.fetchone()))
        fixes = output_fixes(self.settings)
        if fixes:
            cur.execute(
                "SELECT " + ", ".join(f"set_config('{k}', %s, true)" for k in fixes),
                list(fixes.values()),
                prepare=False,
            )
            self._restore = {k: self.settings[k] for k in fixes}
            self.settings.update(fixes)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._end(commit=True)
            return
        try:
            settle(self.conn)
            self._end(commit=False)
        except Exception:
            # The connection may be gone (the caller sees the original error);
            # the Session's pool will notice and replace it.
            pass

    def _end(self, commit: bool) -> None:
        conn = self.conn
        if conn.closed:
            return
        cur = conn.cursor()
        if commit and self.mode != "savepoint":
            if closed_by_server(conn.pgconn):
                # Ended before the COMMIT was sent (a suspension while the client
                # was still reading the rows): the transaction rolled back.
                raise connection_lost(conn.pgconn, conn.info.encoding)
            if self.on_commit is not None:
                self.on_commit()
        if commit and self.probe and self.mode in ("begin", "implicit"):
            self._commit_probed()
        elif self.mode == "begin":
            cur.execute(b"COMMIT" if commit else b"ROLLBACK", prepare=False)
        elif self.mode == "implicit":
            conn.commit() if commit else conn.rollback()
        elif self.mode == "savepoint":
            if not commit:
                cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}".encode(), prepare=False)
            elif self._restore:
                cur.execute(
                    "SELECT "
                    + ", ".join(f"set_config('{k}', %s, true)" for k in self._restore),
                    list(self._restore.values()),
                    prepare=False,
                )
            cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}".encode(), prepare=False)

    def _commit_probed(self) -> None:
        """COMMIT, preceded in the same message by a probe: was the transaction given an xid?

        PostgreSQL gives a transaction an id at its first write; without one it
        wrote nothing, so once the probe's answer is in the COMMIT's fate does not
        matter: if its answer is lost with the connection, the read is whole
        (``wrote_nothing``) and the connection is left broken for its pool to drop.
        Otherwise a lost answer raises the driver's error (the reader reports it
        as :class:`CommitUncertain`).  No extra round trip.
        """
        conn = self.conn
        pgconn = conn.pgconn
        try:
            with conn.lock:  # driven on libpq: waits in slices, so an interrupt is handled
                error = self._send_probed()
        except BaseException:
            settle(conn)  # an interrupt: read the COMMIT's answer, the connection stays usable
            raise
        if pgconn.status == pq.ConnStatus.BAD:
            if self.wrote_nothing:
                return
            raise error if isinstance(error, psycopg.OperationalError) else connection_lost(pgconn, conn.info.encoding)
        if error is not None:
            if pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.rollback()
            raise error

    def _send_probed(self) -> psycopg.Error | None:
        """Send the probe and the COMMIT; read their results, one by one; the first error met."""
        conn = self.conn
        pgconn = conn.pgconn
        enc = conn.info.encoding
        # pg_current_xact_id_if_assigned() from PostgreSQL 13 (Neon runs 14+); its old name before.
        xid = "pg_current_xact_id_if_assigned" if conn.info.server_version >= 130000 \
            else "txid_current_if_assigned"
        pgconn.send_query(f"SELECT {xid}() IS NULL AS {_PROBE_COLUMN}; COMMIT".encode())
        error: psycopg.Error | None = None
        try:
            for res in results(pgconn):
                if res.status == pq.ExecStatus.TUPLES_OK and res.nfields == 1 \
                        and res.fname(0) == _PROBE_COLUMN.encode():
                    self.wrote_nothing = res.ntuples == 1 and res.get_value(0, 0) == b"t"
                elif res.status == pq.ExecStatus.FATAL_ERROR and error is None:
                    error = pgerrors.error_from_result(res, encoding=enc)
        except psycopg.OperationalError as exc:  # the connection was lost
            return error or exc
        return error

