"""Tools of the fault matrix and the soak: a byte-counting relay, gates that hold a read at a
phase, oracles from plain psycopg, and the checks for what a fault may leave behind.

Nothing here stands in for the package's code: the relay only measures a clean run's
bytes (to aim ``LocalCompute.cut_after`` at a phase), and the gates are SQL, so every
read under test runs against the real local compute.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import psycopg

ROWS = 5000  # rows of fault_items; ~300 kB of COPY data, one block for whole reads
WRITE_ROWS = 200  # rows one write cell inserts
GATE_KEY = 4242  # the advisory lock fault_gate waits on
PROBE_COLUMN = b"neon_notebook_wrote_nothing"  # the readers' probe before their COMMIT

SCHEMA = f"""
create table if not exists fault_items (
    i int primary key, label text, score float8, ts timestamptz, amount numeric(12,2), flag bool);
insert into fault_items
select i, case when i % 7 = 0 then null else md5(i::text) end, i * 0.25,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
       (i * 1.01)::numeric(12,2), case when i % 11 = 0 then null else i % 3 = 0 end
from generate_series(1, {ROWS}) as i
on conflict do nothing;
create table if not exists fault_writes (id bigserial primary key, tag text not null);
-- Holds the query at row `at` while someone holds advisory lock {GATE_KEY}; free otherwise.
create or replace function fault_gate(i int, at int) returns bool language plpgsql volatile as $$
begin
    if i = at then
        perform pg_advisory_xact_lock_shared({GATE_KEY});
    end if;
    return true;
end $$;
analyze fault_items;
"""


def create_schema(direct_url: str) -> None:
    """The known table, the write table and the gate function (idempotent)."""
    with psycopg.connect(direct_url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def oracle(direct_url: str, text: str) -> list[tuple]:
    """The last result set of ``text``, read by plain psycopg on a clean direct connection."""
    with psycopg.connect(direct_url) as conn:
        cur = conn.execute(text)
        rows = cur.fetchall() if cur.description else []
        while cur.nextset():
            if cur.description:
                rows = cur.fetchall()
        conn.rollback()
    return rows


# -- results as rows ---------------------------------------------------------------------


def arrow_rows(table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def pandas_rows(df) -> list[tuple]:
    import pandas as pd

    out = []
    for row in df.astype(object).itertuples(index=False):
        out.append(tuple(None if v is None or v is pd.NA or (isinstance(v, float) and v != v)
                         else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                         for v in row))
    return out


def polars_rows(df) -> list[tuple]:
    return [tuple(r) for r in df.rows()]


# -- holding a read at a phase -------------------------------------------------------------


class Hold:
    """A clean direct connection that makes the next read wait at a chosen point.

    ``lock_table`` holds the parse of any statement naming the table (the describe
    phase); otherwise advisory lock ``GATE_KEY`` holds ``fault_gate(i, at)`` at row ``at``.
    ``wait_blocked`` returns once another backend waits on one of them.
    """

    def __init__(self, direct_url: str, lock_table: str | None = None) -> None:
        self.conn = psycopg.connect(direct_url, autocommit=True)
        # pg_stat_activity is a snapshot per transaction: watch from another connection.
        self.watch = psycopg.connect(direct_url, autocommit=True)
        self.pid = self.conn.info.backend_pid
        if lock_table:
            self.conn.execute("begin")
            self.conn.execute(f"lock table {lock_table} in access exclusive mode")
        else:
            self.conn.execute("select pg_advisory_lock(%s)", [GATE_KEY])

    def wait_blocked(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.watch.execute(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and pid <> %s",
                [self.pid]).fetchone()[0]
            if n:
                return True
            time.sleep(0.01)
        return False

    def release(self) -> None:
        """Let the held read go on (a no-op once the compute took the connection down)."""
        self.close()

    def close(self) -> None:
        for conn in (self.conn, self.watch):
            try:
                conn.close()
            except Exception:
                pass


# -- what a read may leave behind ------------------------------------------------------------


def reset_faults(compute) -> None:
    """No cut, no latency, no failing wakes, and the compute answering: as a clean run sees it."""
    compute.cut_after(None, endpoint="all")  # the HTTP/WebSocket endpoint too
    compute.latency(0, endpoint="all")
    compute.fail_next_wakes(0)
    wait_answering(compute)


def wait_answering(compute, timeout: float = 20.0) -> None:
    """Until the compute answers a clean direct connection (waking it if needed)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(compute.direct_url, connect_timeout=5) as conn:
                conn.execute("select 1")
            return
        except psycopg.Error as exc:
            last = exc
            time.sleep(0.05)
    raise RuntimeError(f"the local compute did not answer after a fault: {last}")


def server_leftovers(direct_url: str, app_name: str, pooled: bool, timeout: float = 5.0) -> list[str]:
    """Backends left by a closed session: busy or in a transaction, or (direct) any at all.

    PgBouncer keeps idle server connections in its pool (they may carry the last
    client's application_name); those are not leaks. A direct connection of a closed
    session must be gone.
    """
    query = ("select pid, state, left(query, 60) from pg_stat_activity "
             "where backend_type = 'client backend' and pid <> pg_backend_pid() "
             "and coalesce(application_name, '') <> 'compute_monitor' and (state <> 'idle'")
    query += ")" if pooled else " or application_name = %s)"
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(direct_url, autocommit=True) as conn:
            rows = conn.execute(query, [] if pooled else [app_name]).fetchall()
        if not rows or time.monotonic() > deadline:
            return [f"pid {pid} {state}: {q}" for pid, state, q in rows]
        time.sleep(0.05)


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


def new_threads(before: list[str], timeout: float = 3.0) -> list[str]:
    """Threads alive now that were not before (waiting a little for pools to wind down)."""
    deadline = time.monotonic() + timeout
    while True:
        now = thread_names()
        extra = list(now)
        for name in before:
            if name in extra:
                extra.remove(name)
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


# -- measuring a clean run's bytes ------------------------------------------------------------


@dataclass
class Message:
    type: str
    start: int
    end: int


@dataclass
class Trace:
    """What the server sent one client connection, as protocol messages."""

    data: bytearray = field(default_factory=bytearray)

    def messages(self) -> list[Message]:
        out, pos, data = [], 0, bytes(self.data)
        while pos < len(data):
            kind = chr(data[pos])
            if kind == "N" and all(m.type == "N" for m in out):
                out.append(Message("N", pos, pos + 1))  # "no" to an SSL or GSS request: one byte
                pos += 1
                continue
            if pos + 5 > len(data):
                break
            (length,) = struct.unpack("!i", data[pos + 1:pos + 5])
            out.append(Message(kind, pos, pos + 1 + length))
            pos += 1 + length
        return out


class CountingRelay:
    """A TCP relay in front of an endpoint that records what the server sends each client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.traces: list[Trace] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._serve, daemon=True, name="fault-counting-relay").start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            trace = Trace()
            self.traces.append(trace)
            for src, dst, record in ((client, server, None), (server, client, trace)):
                t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True,
                                     name="fault-counting-pump")
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: Trace | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.data += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (dst, src):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        for t in self._threads:
            t.join(5)


def phase_offsets(trace: Trace) -> dict[str, int]:
    """Byte offsets at which a cut lands in each phase of the read this trace recorded.

    connect: inside the start-up (BackendKeyData); describe: inside the answer to the
    Describe (or, on the row path, to the ROLLBACK after the COPY attempt's refused
    Parse, or to the text itself when there was no such attempt); before_first_row: right after the result's header (CopyOutResponse or
    the main RowDescription); mid_stream: half-way through the data rows;
    before_complete: inside the last CommandComplete (the read's COMMIT, after the probe's
    answer when the readers sent one).
    """
    msgs = trace.messages()
    assert msgs and sum(m.end - m.start for m in msgs) == len(trace.data), "unparsable trace"
    first_z = next(i for i, m in enumerate(msgs) if m.type == "Z")
    key = next(m for m in msgs[:first_z] if m.type == "K")
    rest = msgs[first_z + 1:]
    data_types = {"d", "D"}
    # The probe sent with the read's COMMIT (did it write?) has a row of its own: not the result's.
    probe = next((i for i, m in enumerate(rest) if m.type == "T" and PROBE_COLUMN in trace.data[m.start:m.end]),
                 len(rest))
    last_data = max(i for i, m in enumerate(rest[:probe]) if m.type in data_types)
    # the main result's rows: the run of data messages ending at last_data
    first_data = last_data
    while first_data > 0 and rest[first_data - 1].type in data_types:
        first_data -= 1
    header = rest[first_data - 1]
    assert header.type in ("H", "T"), f"no result header before the rows: {header.type}"
    parse = next((i for i, m in enumerate(rest) if m.type == "1"), None)
    if parse is not None and parse < first_data:
        describe = rest[parse + 1] if parse + 1 < len(rest) else rest[parse]
    else:  # the row path: the COPY attempt's Describe failed; cut in its ROLLBACK's answer
        settings_done = next(i for i, m in enumerate(rest) if m.type == "Z")
        refused = next((i for i, m in enumerate(rest[:first_data]) if m.type == "E"), None)
        if refused is None:  # a text the readers send straight to the row path
            describe = rest[settings_done + 1]
        else:
            describe = next(m for m in rest[refused:] if m.type == "C")
    last_c = max(i for i, m in enumerate(rest) if m.type == "C")
    return {
        "connect": key.start + 3,
        "describe": describe.start + 3,
        "before_first_row": header.end,
        "mid_stream": (rest[first_data].start + rest[last_data].end) // 2,
        "before_complete": rest[last_c].start + 1,
        "total": len(trace.data),
    }


# -- the write fault matrix -------------------------------------------------------------------


def write_phase_offsets(trace: Trace) -> dict[str, int]:
    """Byte offsets at which a cut lands in each phase of the write this trace recorded.

    start: inside the start-up (BackendKeyData); mid_copy: right after CopyInResponse (the
    server says nothing more until the COPY ends, so a cut counted in the bytes it sends
    cannot land later in it: the data in flight is lost); before_commit: inside the answer
    to the last statement before COMMIT (it ran, COMMIT is never sent); during_commit:
    inside COMMIT's own answer (the transaction committed, the client cannot know).
    """
    msgs = trace.messages()
    assert msgs and sum(m.end - m.start for m in msgs) == len(trace.data), "unparsable trace"
    key = next(m for m in msgs if m.type == "K")
    copy_in = next(m for m in msgs if m.type == "G")
    completes = [i for i, m in enumerate(msgs) if m.type == "C"]
    commit = next(i for i in reversed(completes) if trace.data[msgs[i].start + 5:msgs[i].end] == b"COMMIT\0")
    before = max(i for i in completes if i < commit)
    assert msgs[before].start >= copy_in.end, "no statement answered between the COPY's start and COMMIT"
    return {
        "start": key.start + 3,
        "mid_copy": copy_in.end,
        "before_commit": msgs[before].start + 1,
        "during_commit": msgs[commit].start + 1,
        "total": len(trace.data),
    }


class KeyGate:
    """Holds advisory lock ``key`` on a clean connection, so that a gate waiting on it holds a write.

    ``wait_blocked`` returns once another backend waits for an advisory lock; ``release``
    lets it go on (a no-op once the compute took the connection down).
    """

    def __init__(self, conninfo: str, key: int) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.watch = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute("select pg_advisory_lock(%s)", [key])

    def wait_blocked(self, timeout: float = 15.0) -> bool:
        return wait_for(self.watch, "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                                    "and wait_event = 'advisory'", timeout)

    def release(self) -> None:
        for conn in (self.conn, self.watch):
            try:
                conn.close()
            except Exception:
                pass


def wait_for(conn: psycopg.Connection, count_query: str, timeout: float = 15.0) -> bool:
    """Until ``count_query`` (a count, on an autocommit connection) is positive; False at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.execute(count_query).fetchone()[0]:
            return True
        time.sleep(0.005)
    return False


def wait_for_state(compute, state: str, timeout: float = 15.0) -> bool:
    """Until the local compute is in ``state`` ("starting": a wake under way); False at the timeout."""
    deadline = time.monotonic() + timeout
    while compute.state != state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class CuttingRelay(CountingRelay):
    """A counting relay that can also cut its connections now (``cut()``), as a network would:
    both ends read EOF, and a server busy with a statement notices only when it next reads."""

    def __init__(self, target_port: int) -> None:
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        super().__init__(target_port)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.pairs.append((client, server))
            trace = Trace()
            self.traces.append(trace)
            for src, dst, record in ((client, server, None), (server, client, trace)):
                t = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True,
                                     name="fault-counting-pump")
                t.start()
                self._threads.append(t)

    def cut(self) -> None:
        """Shut down every connection relayed so far (new ones still get through)."""
        for pair in self.pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
