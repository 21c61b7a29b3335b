"""The write fault matrix: writes x both endpoints x faults at every phase of a write.

A cell is one ``Session.write`` under one fault. The only allowed outcomes are the
complete write, exactly once (the table's rows, read back by plain psycopg, equal the
rows it held before plus the input's, as the mode combines them: no row missing, none
twice), or a clear error (a ``NeonError`` in plain words, no password) with the table
exactly as before (its columns and rows; a table the write would have created absent).
``CommitUncertain`` alone may leave either. Either way: at most one retry, the session
healthy (a follow-up write and read work, nothing in use in its pool), and nothing left
behind (staging tables, ``neon-write-send`` threads, server connections). Each cell also
has the outcome it must have, from what the write path promises: a replayable input
lost before it committed is run once more (complete-retried), a consumed stream is
WriteInterrupted, a lost COMMIT answer is verified (complete-verified), connect-time
faults and latency complete.

Writes: modes create, append (into an existing table), replace (another definition)
and upsert (half the keys new), each from a pyarrow Table (replayable) and a
RecordBatchReader (a stream, consumed once); 2000 rows in 4 batches, so the COPY has
several blocks. Kinds: suspend, crash, cut (``cut_after`` at an offset measured on a
clean run of the same write and endpoint through a counting relay, first connection
only), latency, and wake_fail at the start. Phases, and how each is reached:

- ``start``: the compute is suspended and the fault hits while the write's connection
  wakes it (a compute with an activation delay, so the wake can be seen); cut inside the
  start-up; latency from the first byte; wake_fail: the next two wakes fail;
- ``mid_copy``: the write's own progress callback (public API) waits, once 1500 rows are
  queued, until ``pg_stat_progress_copy`` shows 1000 stored, then faults: the COPY has
  rows in the table and more to come; cut: right after CopyInResponse;
- ``before_commit``: every row sent and stored, the last statement before COMMIT held by
  an advisory lock in an AFTER ... FOR EACH STATEMENT trigger; cut: inside that
  statement's answer (COMMIT is never sent);
- ``during_commit``: COMMIT sent and held before it commits, by an advisory lock in a
  deferred constraint trigger (so it did not commit); cut: inside COMMIT's answer (it
  committed, the client cannot know).

An event trigger adds both gates to every table named ``wf_*`` (the write's own new
tables and staging tables too); they cost nothing while nobody holds the locks.

The default run (CI too: the suite's time is tight) takes a Latin square: each
endpoint x kind x phase once (32 cells, plus wake_fail on both endpoints), its write
chosen so that every write meets every kind and every phase once and both endpoints,
and each kind x phase meets both inputs; about 30 s with the tests below. ``NN_WRITE_FAULTS_FULL=1`` runs the whole
product (272 cells, about 2 minutes). A table of cells x outcomes is printed at the end
of the run.

After the matrix, the COMMIT verification case by case: a lost answer of a committed
COMMIT, a loss before COMMIT (a Table runs again, a stream cannot), a status that cannot
be learnt, a COMMIT left in progress by its lost client, a crash after a durable commit,
and a crash whose lost WAL lets the server give the write's transaction id to another.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pyarrow as pa
import pytest

import fault_support as fs
import neon_notebook as nn
from neon_notebook._state import ComputeState
from neon_notebook.local import LocalCompute

pytestmark = [pytest.mark.pgbouncer, pytest.mark.local_compute, pytest.mark.usefixtures("pgbouncer")]

MODES = ("create", "append", "replace", "upsert")
INPUTS = ("table", "stream")
WRITES = tuple(f"{mode}-{source}" for source in INPUTS for mode in MODES)
ENDPOINTS = ("pooled", "direct")
KINDS = ("suspend", "crash", "cut", "latency")
PHASES = ("start", "mid_copy", "before_commit", "during_commit")
OUTCOMES = ("complete", "complete-retried", "complete-verified", "interrupted", "uncertain", "error",
            "violation")

ROWS = 2000
BATCH = 500
OLD_ROWS = 300  # rows an existing table holds before an append or a replace
UPSERT_FROM = 501  # the upsert's keys are 501..2500; the table holds 1..1000 before
BEFORE_KEY, COMMIT_KEY = 4243, 4244  # advisory locks of the two gates
# mid_copy: the fault comes when this many rows are queued and the server stored the first
# group (COPY stores rows, and counts them in pg_stat_progress_copy, 1000 at a time).
MID_COPY_QUEUED, MID_COPY_STORED = 1500, 1000
WAKE_TIMEOUT = 5.0
LATENCY = 0.01  # seconds each relayed chunk is held back, each direction
COLD_DELAY = 0.3  # activation delay of the compute whose wake is faulted
RETRIED = "running it once more"  # what _write logs when it runs a write again
VERIFIED = "COMMIT answer was lost, but transaction"

GATES = f"""
create or replace function wf_before_gate() returns trigger language plpgsql as $$
begin perform pg_advisory_xact_lock_shared({BEFORE_KEY}); return null; end $$;
create or replace function wf_commit_gate() returns trigger language plpgsql as $$
begin perform pg_advisory_xact_lock_shared({COMMIT_KEY}); return null; end $$;
create or replace function wf_add_gates() returns event_trigger language plpgsql as $$
declare r record;
begin
  for r in select * from pg_event_trigger_ddl_commands() loop
    if r.object_type = 'table' and r.object_identity like 'public.wf\\_%' then
      execute format('create trigger wf_before after insert on %s '
                     'for each statement execute function wf_before_gate()', r.object_identity);
      execute format('create constraint trigger wf_commit after insert or update on %s '
                     'deferrable initially deferred for each row execute function wf_commit_gate()',
                     r.object_identity);
    end if;
  end loop;
end $$;
drop event trigger if exists wf_gates;
create event trigger wf_gates on ddl_command_end when tag in ('CREATE TABLE') execute function wf_add_gates();
create table if not exists wf_follow (tag text not null);
"""
# Transaction ids with five digits for the whole run, so that a write's bytes (its id is in
# them) stay as long as the clean run's that measured the cut offsets.
XID_PAST_10000 = """
do $$ begin
  while pg_current_xact_id()::text::bigint < 10000 loop commit; end loop;
end $$
"""


@dataclass(frozen=True)
class Cell:
    write: str
    endpoint: str
    kind: str
    phase: str

    @property
    def id(self) -> str:
        return f"{self.write}-{self.endpoint}-{self.kind}-{self.phase}"

    @property
    def mode(self) -> str:
        return self.write.split("-")[0]

    @property
    def source(self) -> str:
        return self.write.split("-")[1]

    @property
    def direct(self) -> bool:
        return self.endpoint == "direct"

    @property
    def tag(self) -> str:
        """Fixed-length name of this cell (application_name): byte counts stay put."""
        return "nnw" + hashlib.sha1(self.id.encode()).hexdigest()[:8]

    @property
    def table(self) -> str:
        return "wf_" + self.tag


def latin_square() -> list[Cell]:
    """Each endpoint x kind x phase once, with mode number (kind + phase) mod 4 and input number
    (kind + endpoint) mod 2: every write then meets every kind and every phase once, and both
    endpoints; the two endpoints of a kind x phase have both inputs. Plus wake_fail at the start."""
    cells = [Cell(f"{MODES[(ki + pi) % 4]}-{INPUTS[(ki + ei) % 2]}", e, k, p)
             for ei, e in enumerate(ENDPOINTS) for ki, k in enumerate(KINDS) for pi, p in enumerate(PHASES)]
    cells += [Cell("upsert-table", "pooled", "wake_fail", "start"), Cell("replace-stream", "direct", "wake_fail", "start")]
    return cells


ALL_CELLS = ([Cell(*c) for c in itertools.product(WRITES, ENDPOINTS, KINDS, PHASES)]
             + [Cell(w, e, "wake_fail", "start") for w in WRITES for e in ENDPOINTS])
SUBSET = latin_square()


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = ALL_CELLS if os.environ.get("NN_WRITE_FAULTS_FULL") == "1" else SUBSET
        metafunc.parametrize("cell", [pytest.param(c, id=c.id) for c in cells])


# -- the data and the tables ----------------------------------------------------------------

SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.string()), ("score", pa.float64())])


def _batches(mode: str) -> list[pa.RecordBatch]:
    first = UPSERT_FROM if mode == "upsert" else 1
    ids = list(range(first, first + ROWS))
    labels = [None if i % 13 == 0 else f"new {i} \u00e9\t'\"\\\n" for i in ids]
    scores = [i * 0.25 for i in ids]
    return [pa.record_batch([pa.array(ids[s:s + BATCH], pa.int64()), pa.array(labels[s:s + BATCH]),
                             pa.array(scores[s:s + BATCH], pa.float64())], schema=SCHEMA)
            for s in range(0, ROWS, BATCH)]


def make_input(source: str, mode: str):
    """The write's data: a Table (can be read again) or a RecordBatchReader (read once)."""
    batches = _batches(mode)
    if source == "table":
        return pa.Table.from_batches(batches)
    return pa.RecordBatchReader.from_batches(SCHEMA, iter(batches))


def _input_rows(mode: str) -> list[tuple]:
    return [tuple(r.values()) for b in _batches(mode) for r in b.to_pylist()]


PREPARE = {
    "create": [],
    "append": ["create table {t} (id bigint, label text, score float8)",
               f"insert into {{t}} select 100000 + i, 'old ' || i, i * 0.5 from generate_series(1, {OLD_ROWS}) i"],
    "replace": ["create table {t} (id bigint, label text, old_col int)",
                f"insert into {{t}} select i, 'old ' || i, i from generate_series(1, {OLD_ROWS}) i"],
    "upsert": ["create table {t} (id bigint primary key, label text, score float8)",
               "insert into {t} select i, 'old ' || i, -i from generate_series(1, 1000) i"],
}

Contents = tuple[tuple[str, ...], Counter] | None  # a table's columns and rows, or None: absent


def prepare(conninfo: str, mode: str, table: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"drop table if exists {table}")
        for statement in PREPARE[mode]:
            conn.execute(statement.format(t=table))


def contents(conninfo: str, table: str) -> Contents:
    """The table's columns and rows (a multiset: a row twice counts twice), or None if absent."""
    with psycopg.connect(conninfo) as conn:
        if conn.execute("select to_regclass(%s)", [table]).fetchone()[0] is None:
            return None
        cur = conn.execute(f"select * from {table}")
        return tuple(c.name for c in cur.description), Counter(cur.fetchall())


def expected_after(mode: str, before: Contents) -> Contents:
    """What the table holds after the complete write, once."""
    new = Counter(_input_rows(mode))
    columns = tuple(SCHEMA.names)
    if mode in ("create", "replace"):
        return columns, new
    old = before[1]
    if mode == "append":
        return columns, old + new
    return columns, Counter({r: n for r, n in old.items() if r[0] < UPSERT_FROM}) + new


def duplicates(conninfo: str, table: str) -> int:
    """Ids stored more than once, counted by plain SQL (the appended old rows have their own ids)."""
    with psycopg.connect(conninfo) as conn:
        if conn.execute("select to_regclass(%s)", [table]).fetchone()[0] is None:
            return 0
        return conn.execute(f"select count(*) - count(distinct id) from {table}").fetchone()[0]


def staging_left(conninfo: str) -> list[str]:
    """Staging and temporary tables of writes (``<name>__nn_<hex>``) that outlived them."""
    with psycopg.connect(conninfo) as conn:
        return [r[0] for r in conn.execute(
            "select relname from pg_class where relname ~ '__nn_[0-9a-f]{8}$'").fetchall()]


# -- the computes, shared by the cells --------------------------------------------------------


def _url(url: str, port: int | None) -> str:
    """``url`` with another port (the counting relay's), or as it is."""
    if port is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition(':')[0]}:{port}"))


class Env:
    """The module's computes and the cells' outcomes."""

    def __init__(self) -> None:
        self.warm = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2)
        self.cold = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2,
                                 activation_delay=COLD_DELAY)
        for c in (self.warm, self.cold):
            with psycopg.connect(c.direct_url, autocommit=True) as conn:
                conn.execute(GATES)
        with psycopg.connect(self.warm.direct_url, autocommit=True) as conn:
            conn.execute("set synchronous_commit = off")
            conn.execute(XID_PAST_10000)
        self.outcomes: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        for c in (self.warm, self.cold):
            c.close()

    def session(self, compute: LocalCompute, tag: str, port: int | None = None, *,
                wake_timeout: float = WAKE_TIMEOUT) -> nn.Session:
        pooled = _url(compute.pooled_url, port) + f"?pgbouncer=true&application_name={tag}"
        direct = _url(compute.direct_url, port) + f"?application_name={tag}"
        return nn.connect(pooled, direct_url=direct, suspend_after=None, wake_timeout=wake_timeout)

    def calibrate(self, mode: str, endpoint: str) -> tuple[dict[str, int], fs.Trace]:
        """Cut offsets per phase, and the bytes, of a clean run of this mode's write through a
        counting relay, just before the cell: a restart in between could change a width in them
        (a crash moves the OID counter on by up to 8192, past 99999 say)."""
        c = self.warm
        calib = Cell(f"{mode}-table", endpoint, "calibrate", "none")
        prepare(c.server_conninfo, mode, calib.table)
        relay = fs.CountingRelay(urlsplit(c.pooled_url if endpoint == "pooled" else c.direct_url).port)
        session = self.session(c, calib.tag, relay.port)
        try:
            written = session.write(make_input("table", mode), calib.table, mode=mode, key=_key(mode),
                                    direct=calib.direct, progress=None)
            assert written == ROWS, "the clean calibration run wrote a wrong count"
        finally:
            session.close()
            relay.close()
        prepare(c.server_conninfo, "create", calib.table)  # dropped
        traces = [t for t in relay.traces if t.data]
        assert len(traces) == 1, f"{len(traces)} connections carried the write"
        return fs.write_phase_offsets(traces[0]), traces[0]

    def offsets(self, mode: str, endpoint: str) -> dict[str, int]:
        return self.calibrate(mode, endpoint)[0]


@pytest.fixture(scope="module")
def env(request, pgbouncer):
    e = Env()
    yield e
    e.close()
    request.config.add_cleanup(lambda: _print_table(e.outcomes))  # after the run's summary


def _key(mode: str) -> list[str] | None:
    return ["id"] if mode == "upsert" else None


# -- faults -------------------------------------------------------------------------------


class Injector:
    """Applies the cell's fault when the write reaches its phase (see the module)."""

    def __init__(self, cell: Cell, compute: LocalCompute, offsets: dict[str, int] | None) -> None:
        self.cell, self.compute = cell, compute
        self.problem: str | None = None
        self.thread: threading.Thread | None = None
        self.gate: fs.KeyGate | None = None
        self._fired = False
        kind, phase, endpoint = cell.kind, cell.phase, cell.endpoint
        if kind == "latency" and phase != "start":
            compute.cut_after(2**62, endpoint=endpoint)  # through the proxy's faulty relay, never cut
        if kind == "cut":
            compute.cut_after(offsets[phase], endpoint=endpoint, times=1)
        elif phase == "start":
            if kind == "latency":
                compute.latency(LATENCY, endpoint=endpoint)
            else:
                compute.suspend()
                if kind == "wake_fail":
                    compute.fail_next_wakes(2)
                else:
                    self._start(self._fault_while_waking)
        elif phase in ("before_commit", "during_commit"):
            self.gate = fs.KeyGate(compute.server_conninfo, BEFORE_KEY if phase == "before_commit" else COMMIT_KEY)
            self._start(self._fault_when_held)
        self.before = compute.status()  # counters before the fault, after any preparation
        self.progress = self._mid_copy if phase == "mid_copy" and kind != "cut" else None

    def _start(self, target) -> None:
        self.thread = threading.Thread(target=target, name="fault-injector", daemon=True)
        self.thread.start()

    def _fault(self) -> None:
        if self.cell.kind == "latency":
            self.compute.latency(LATENCY, endpoint=self.cell.endpoint)
        else:
            getattr(self.compute, self.cell.kind)()

    def _fault_while_waking(self) -> None:
        if not fs.wait_for_state(self.compute, "starting"):
            self.problem = "the compute never started waking"
            return
        self._fault()  # runs as soon as the wake completes

    def _fault_when_held(self) -> None:
        if not self.gate.wait_blocked():
            self.problem = f"the write never reached {self.cell.phase}"
        else:
            self._fault()
        self.gate.release()

    def _mid_copy(self, rows: int, nbytes: int, total: int | None) -> None:
        """The write's progress callback: once 1500 rows are queued and 1000 stored, the fault."""
        if self._fired or rows < MID_COPY_QUEUED:
            return
        self._fired = True
        with psycopg.connect(self.compute.server_conninfo, autocommit=True) as watch:
            if not fs.wait_for(watch, "select count(*) from pg_stat_progress_copy "
                                      f"where tuples_processed >= {MID_COPY_STORED}"):
                self.problem = f"the COPY never stored {MID_COPY_STORED} rows"
                return
        self._fault()

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(30)
            if self.thread.is_alive():
                self.problem = "the fault injector did not finish"
        if self.gate is not None:
            self.gate.release()


def _fault_missing(cell: Cell, before: dict, after: dict) -> str | None:
    """Why the cell's fault did not happen (the cell would test nothing), or None."""
    name = {"suspend": "suspensions", "crash": "crashes", "cut": "cuts", "latency": "tapped_bytes",
            "wake_fail": "failed_wakes"}[cell.kind]
    return None if after[name] > before[name] else f"no {cell.kind} happened ({name} stayed {before[name]})"


def wanted(cell: Cell) -> set[str]:
    """The outcomes the write path promises for this cell."""
    if cell.phase == "start":  # the connect retries; a write lost before reading its data runs again
        return {"complete", "complete-retried"}
    if cell.kind == "latency":
        return {"complete"}
    if cell.kind == "cut" and cell.phase == "during_commit":  # it committed: verified, never re-run
        return {"complete-verified"}
    return {"complete-retried"} if cell.source == "table" else {"interrupted"}


class Log(logging.Handler):
    """The package's log lines during one write (its retries and verifications)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


def _clear_error(exc: BaseException, password: str) -> str | None:
    """Why ``exc`` is not a clear error, or None when it is one."""
    message = str(exc).strip()
    if not isinstance(exc, nn.NeonError):
        return f"{type(exc).__name__} (not a NeonError): {message[:200]}"
    if len(message) < 40:
        return f"{type(exc).__name__} without a message in words: {message!r}"
    if password in message:
        return "the message shows the password"
    return None


def _outcome(error: BaseException | None, log: Log) -> str:
    if error is None:
        return ("complete-retried" if log.count(RETRIED) else
                "complete-verified" if log.count(VERIFIED) else "complete")
    return {nn.WriteInterrupted: "interrupted", nn.CommitUncertain: "uncertain"}.get(type(error), "error")


# -- the matrix ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_write_cell(env, cell):
    compute = env.cold if cell.phase == "start" and cell.kind in ("suspend", "crash") else env.warm
    fs.reset_faults(compute)
    offsets, clean = env.calibrate(cell.mode, cell.endpoint) if cell.kind == "cut" else (None, None)
    server = compute.server_conninfo
    prepare(server, cell.mode, cell.table)
    before = contents(server, cell.table)
    after = expected_after(cell.mode, before)
    relay = fs.CountingRelay(urlsplit(compute.pooled_url if cell.endpoint == "pooled" else compute.direct_url).port
                             ) if cell.kind == "cut" else None
    threads_before = fs.thread_names()
    session = env.session(compute, cell.tag, relay.port if relay else None)
    violations: list[str] = []
    error: BaseException | None = None
    log = Log()
    logger = logging.getLogger("neon_notebook")
    level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    injector = Injector(cell, compute, offsets)
    try:
        written = session.write(make_input(cell.source, cell.mode), cell.table, mode=cell.mode,
                                key=_key(cell.mode), direct=cell.direct, progress=injector.progress)
    except Exception as exc:
        error = exc
        if (why := _clear_error(exc, urlsplit(compute.direct_url).password)) is not None:
            violations.append(f"unclear error: {why}")
    else:
        if written != ROWS:
            violations.append(f"write() said {written} rows, not {ROWS}")
    finally:
        injector.finish()
        logger.removeHandler(log)
        logger.setLevel(level)
    if injector.problem:
        violations.append(f"harness: {injector.problem}")
    if (missing := _fault_missing(cell, injector.before, compute.status())) is not None:
        violations.append(f"harness: {missing}")
    if relay is not None and (miss := _missed(clean, relay.traces[0], offsets[cell.phase])):
        violations.append(f"harness: the cut missed its phase: {miss}")
    fs.reset_faults(compute)

    outcome = _outcome(error, log)
    if log.count(RETRIED) > 1:
        violations.append(f"run {log.count(RETRIED) + 1} times")
    now = contents(server, cell.table)
    allowed = {"uncertain": (before, after)}.get(outcome, (after,) if error is None else (before,))
    if now not in allowed:
        state = "the table is not as before" if error is not None else "the table is not as the write makes it"
        violations.append(f"{state}: {_describe(now, before, after)}")
    if dup := duplicates(server, cell.table):
        violations.append(f"{dup} ids stored twice")
    if outcome not in wanted(cell) and not violations:
        violations.append(f"outcome {outcome}, expected {' or '.join(sorted(wanted(cell)))}"
                          + (f" ({type(error).__name__}: {error})"[:300] if error else ""))
    if left := staging_left(server):
        violations.append(f"staging tables left: {left}")

    try:
        if session.write(pa.table({"tag": [cell.tag]}), "wf_follow", direct=cell.direct, progress=None) != 1:
            violations.append("the follow-up write did not write its row")
        got = session.read_arrow("select count(*) as n from wf_follow where tag = %s", [cell.tag],
                                 direct=cell.direct, progress=None)
        if got.column("n").to_pylist() != [1]:
            violations.append(f"the follow-up read found {got.column('n').to_pylist()} rows")
    except Exception as exc:
        violations.append(f"follow-up failed: {type(exc).__name__}: {exc}")
    if session.state is not ComputeState.ACTIVE:
        violations.append(f"state {session.state} after a successful follow-up")
    if session.last_error is not None:
        violations.append(f"last_error outlives recovery: {session.last_error[:100]}")
    if busy := {role: s["in_use"] for role, s in session.pool_stats().items() if s["in_use"]}:
        violations.append(f"connections still in use: {busy}")
    session.close()
    if relay is not None:
        relay.close()
    if extra := fs.new_threads(threads_before):
        violations.append(f"threads left running: {extra}")
    if left := fs.server_leftovers(compute.direct_url, cell.tag, pooled=not cell.direct):
        violations.append(f"server connections left: {left}")

    if violations:
        outcome = "violation"
    env.outcomes[cell.id] = (outcome, "; ".join(violations) or (f"{type(error).__name__}: {error}"[:200]
                                                                  if error else ""))
    assert not violations, f"{cell.id}: " + " | ".join(violations)


def _missed(clean: fs.Trace, cut: fs.Trace, offset: int) -> str | None:
    """How the cut connection's bytes differ from the clean run's before ``offset``, or None."""
    if len(cut.data) != offset:
        return f"the connection ended after {len(cut.data)} bytes, not {offset}"
    for a, b in zip(clean.messages(), cut.messages()):
        if a.start >= offset:
            break
        if (a.type, a.end - a.start) != (b.type, b.end - b.start) and b.end <= offset:
            return (f"at byte {a.start} the clean run had {a.type} {bytes(clean.data[a.start:a.end])[:60]!r}, "
                    f"this one {b.type} {bytes(cut.data[b.start:b.end])[:60]!r}")
    return None


def _describe(now: Contents, before: Contents, after: Contents) -> str:
    def size(c: Contents) -> str:
        return "absent" if c is None else f"{sum(c[1].values())} rows of {list(c[0])}"

    return f"it has {size(now)}; before: {size(before)}; the write makes {size(after)}"


def test_subset_covers_every_endpoint_kind_phase_and_every_write():
    chosen = [(c.write, c.endpoint, c.kind, c.phase) for c in SUBSET if c.kind != "wake_fail"]
    assert sorted(c[1:] for c in chosen) == sorted(itertools.product(ENDPOINTS, KINDS, PHASES))
    for at in ((0, 2), (0, 3)):  # every write x kind, every write x phase: once
        pairs = Counter((c[at[0]], c[at[1]]) for c in chosen)
        assert set(pairs.values()) == {1} and len(pairs) == len(WRITES) * 4, pairs
    assert {(c[0], c[1]) for c in chosen} == set(itertools.product(WRITES, ENDPOINTS))
    assert {(c[2], c[3], c[0].split("-")[1]) for c in chosen} == set(itertools.product(KINDS, PHASES, INPUTS))
    assert {(c.endpoint, c.kind, c.phase) for c in SUBSET if c.kind == "wake_fail"} == {
        (e, "wake_fail", "start") for e in ENDPOINTS}


def test_cut_offsets_land_in_their_phases(env):
    """The measured offsets are ordered as the phases are, inside the clean run's bytes."""
    for endpoint in ENDPOINTS:
        o = env.offsets("append", endpoint)
        order = [o[p] for p in PHASES]
        assert order == sorted(order) and len(set(order)) == len(order), (endpoint, o)
        assert 0 < o["start"] and o["during_commit"] < o["total"]


# -- the COMMIT verification, case by case -------------------------------------------------


class captured_log:
    """The package's log lines (INFO and up) while the block runs."""

    def __enter__(self) -> Log:
        self.log, self.logger = Log(), logging.getLogger("neon_notebook")
        self.level = self.logger.level
        self.logger.addHandler(self.log)
        self.logger.setLevel(logging.INFO)
        return self.log

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.log)
        self.logger.setLevel(self.level)


def _targeted(env, name: str, mode: str = "append") -> tuple[str, Contents, Contents]:
    """A fresh table for one targeted test: its name, its contents now and after the write."""
    table = "wf_t" + hashlib.sha1(name.encode()).hexdigest()[:10]
    fs.reset_faults(env.warm)
    prepare(env.warm.server_conninfo, mode, table)
    before = contents(env.warm.server_conninfo, table)
    return table, before, expected_after(mode, before)


def _alter_system(compute: LocalCompute, **settings: object) -> None:
    """ALTER SYSTEM SET (a value) or RESET (None) and reload, for the next backends."""
    with psycopg.connect(compute.server_conninfo, autocommit=True) as conn:
        for name, value in settings.items():
            conn.execute(f"alter system reset {name}" if value is None else f"alter system set {name} = '{value}'")
        conn.execute("select pg_reload_conf()")


def _blocked_xid(gate: fs.KeyGate) -> str:
    return gate.watch.execute("select backend_xid::text from pg_stat_activity where wait_event = 'advisory'"
                              ).fetchone()[0]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_lost_commit_answer_of_a_committed_write_returns_its_rows(env, endpoint):
    """COMMIT ran, its answer was cut: pg_xact_status says committed; the rows, once, no re-run."""
    table, before, after = _targeted(env, f"committed-{endpoint}")
    env.warm.cut_after(env.offsets("append", endpoint)["during_commit"], endpoint=endpoint, times=1)
    session = env.session(env.warm, "nnwcommit01")
    try:
        with captured_log() as log:
            assert session.write(make_input("table", "append"), table, direct=endpoint == "direct",
                                 progress=None) == ROWS
    finally:
        session.close()
        fs.reset_faults(env.warm)
    assert env.warm.cuts >= 1
    assert log.count(VERIFIED) == 1 and log.count(RETRIED) == 0, log.lines
    assert contents(env.warm.server_conninfo, table) == after
    assert duplicates(env.warm.server_conninfo, table) == 0


@pytest.mark.parametrize("source", INPUTS)
def test_lost_before_commit_replays_a_table_and_refuses_a_consumed_stream(env, source):
    """The COPY's answer was cut, COMMIT never sent: a Table runs once more (its rows once); a
    consumed stream cannot, and WriteInterrupted says nothing was written."""
    table, before, after = _targeted(env, f"before-{source}")
    env.warm.cut_after(env.offsets("append", "direct")["before_commit"], endpoint="direct", times=1)
    session = env.session(env.warm, "nnwbefore01")
    error = None
    try:
        with captured_log() as log:
            written = session.write(make_input(source, "append"), table, direct=True, progress=None)
    except nn.WriteInterrupted as exc:
        error = exc
    finally:
        session.close()
        fs.reset_faults(env.warm)
    if source == "table":
        assert error is None and written == ROWS
        assert log.count(RETRIED) == 1, log.lines
        assert contents(env.warm.server_conninfo, table) == after
        assert duplicates(env.warm.server_conninfo, table) == 0
    else:
        assert error is not None, "a consumed stream was written again (or the cut missed)"
        assert log.count(RETRIED) == 0
        assert "nothing was written" in str(error) and "stream" in str(error), str(error)
        assert error.rows == ROWS
        assert contents(env.warm.server_conninfo, table) == before


def test_unknowable_commit_status_is_commit_uncertain_naming_the_xid(env):
    """COMMIT held (deferred trigger), the compute crashes and cannot be woken again: whether it
    committed cannot be known, so CommitUncertain, with the transaction id to check; no retry."""
    table, before, _ = _targeted(env, "unknowable")
    c = env.warm
    gate = fs.KeyGate(c.server_conninfo, COMMIT_KEY)
    seen: list[str] = []

    def fault() -> None:
        if gate.wait_blocked():
            seen.append(_blocked_xid(gate))
            c.fail_next_wakes(1000)
            c.crash()
        gate.release()

    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    session = env.session(c, "nnwunknown1", wake_timeout=1.0)
    try:
        with captured_log() as log, pytest.raises(nn.CommitUncertain) as raised:
            session.write(make_input("table", "append"), table, direct=True, progress=None)
    finally:
        injector.join(30)
        session.close()
        fs.reset_faults(c)
    message = str(raised.value)
    assert seen and f"pg_xact_status('{seen[0]}')" in message, (seen, message)
    assert "could not be checked" in message and "not retried" in message
    assert urlsplit(c.direct_url).password not in message
    assert log.count(RETRIED) == 0
    assert contents(c.server_conninfo, table) == before  # it was held before committing


def test_crash_after_a_durable_commit_is_verified_from_the_rows(env):
    """COMMIT flushed, then held waiting for a synchronous standby that does not exist; the
    compute crashes. After the restart the status is 'committed', and the write's own rows carry
    its id (not a later transaction given the same id): the rows, once, no re-run."""
    table, before, after = _targeted(env, "durable")
    c = env.warm
    _alter_system(c, synchronous_standby_names="nn_nobody")
    watch = psycopg.connect(c.server_conninfo, autocommit=True)
    crashed: list[bool] = []

    def fault() -> None:
        crashed.append(fs.wait_for(watch, "select count(*) from pg_stat_activity where wait_event = 'SyncRep'"))
        watch.close()
        c.crash()

    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    session = env.session(c, "nnwdurable1")
    try:
        with captured_log() as log:
            written = session.write(make_input("table", "append"), table, direct=True, progress=None)
    finally:
        injector.join(30)
        session.close()
        fs.reset_faults(c)
        _alter_system(c, synchronous_standby_names=None)
    assert crashed == [True], "the COMMIT never waited for the standby"
    assert written == ROWS
    assert log.count(VERIFIED) == 1 and log.count(RETRIED) == 0, log.lines
    assert contents(c.server_conninfo, table) == after


def test_a_transaction_id_given_again_after_a_crash_is_not_taken_for_the_write(env):
    """COMMIT held before committing, the compute crashes before the write's WAL was flushed, and
    after the restart other transactions are given the same id and commit before the write asks:
    'committed' is theirs. The write must not report its rows written: the table has none of them."""
    table, before, _ = _targeted(env, "reused")
    c = env.warm
    _alter_system(c, wal_writer_delay="10s")  # the write's WAL stays in memory until its COMMIT
    gate = fs.KeyGate(c.server_conninfo, COMMIT_KEY)
    took: list[int] = []

    def fault() -> None:
        if not gate.wait_blocked():
            return gate.release()
        xid = int(_blocked_xid(gate))
        c.latency(0.2, endpoint="direct")  # the write's status check connects slowly
        c.crash()
        gate.release()
        c.wake()
        with psycopg.connect(c.server_conninfo, autocommit=True) as other:
            other.execute("set synchronous_commit = off")
            while True:
                with other.transaction():
                    given = int(other.execute("select pg_current_xact_id()::text").fetchone()[0])
                took.append(given)
                if given >= xid:
                    break
        took.append(xid)

    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    session = env.session(c, "nnwreused01")
    error = None
    try:
        with captured_log() as log:
            written = session.write(make_input("table", "append"), table, direct=True, progress=None)
    except nn.CommitUncertain as exc:
        error = exc
    finally:
        injector.join(30)
        session.close()
        fs.reset_faults(c)
        _alter_system(c, wal_writer_delay=None)
    assert len(took) >= 2 and took[-1] in took[:-1], f"harness: the write's id was not given again ({took})"
    assert contents(c.server_conninfo, table) == before  # the write did not commit
    assert error is not None, f"write() reported {written} rows written; none are in the table"
    assert f"pg_xact_status('{took[-1]}')" in str(error) and "restarted" in str(error)
    assert log.count(RETRIED) == 0


def test_a_commit_left_in_progress_by_its_lost_client_is_ended_then_run_once_more(env):
    """The network goes while COMMIT is held on the server (deferred trigger): the backend does
    not notice, so the status stays 'in progress'; after the grace it is terminated (which cannot
    undo a commit), is then 'aborted', and the Table is written once more: its rows once."""
    table, before, after = _targeted(env, "in-progress")
    c = env.warm
    gate = fs.KeyGate(c.server_conninfo, COMMIT_KEY)
    relay = fs.CuttingRelay(urlsplit(c.direct_url).port)
    ended: list[bool] = []

    def fault() -> None:
        if gate.wait_blocked():
            pid = gate.watch.execute("select pid from pg_stat_activity where wait_event = 'advisory'").fetchone()[0]
            relay.cut()
            ended.append(fs.wait_for(gate.watch, f"select count(*) = 0 from pg_stat_activity where pid = {pid}",
                                     timeout=30))
        gate.release()

    injector = threading.Thread(target=fault, daemon=True)
    injector.start()
    session = env.session(c, "nnwinprog01", relay.port)
    try:
        with captured_log() as log:
            written = session.write(make_input("table", "append"), table, direct=True, progress=None)
    finally:
        injector.join(30)
        session.close()
        relay.close()
        fs.reset_faults(c)
    assert ended == [True], "the held backend was never ended"
    assert written == ROWS
    assert log.count(RETRIED) == 1 and log.count(VERIFIED) == 0, log.lines
    assert contents(c.server_conninfo, table) == after
    assert duplicates(c.server_conninfo, table) == 0


# -- the table ----------------------------------------------------------------------------


def _print_table(outcomes: dict[str, tuple[str, str]]) -> None:
    if not outcomes:
        return
    factors = (("write", WRITES), ("endpoint", ENDPOINTS), ("kind", KINDS + ("wake_fail",)), ("phase", PHASES))
    counts: dict[tuple[str, str], Counter] = {}
    for cell_id, (outcome, _) in outcomes.items():
        mode, source, endpoint, kind, phase = cell_id.split("-")
        for factor, value in zip(("write", "endpoint", "kind", "phase"),
                                 (f"{mode}-{source}", endpoint, kind, phase)):
            counts.setdefault((factor, value), Counter())[outcome] += 1
        counts.setdefault(("all", "cells"), Counter())[outcome] += 1
    short = {"complete": "complete", "complete-retried": "retried", "complete-verified": "verified",
             "interrupted": "interrupted", "uncertain": "uncertain", "error": "error", "violation": "violation"}
    lines = ["", f"write fault matrix: {len(outcomes)} cells x outcomes",
             f"{'':24} " + " ".join(f"{short[k]:>11}" for k in OUTCOMES)]
    for factor, values in factors + (("all", ("cells",)),):
        for value in values:
            if (factor, value) in counts:
                c = counts[(factor, value)]
                lines.append(f"{factor + ' ' + value:24} " + " ".join(f"{c[k]:>11}" for k in OUTCOMES))
    lines.append("cells:")
    lines += [f"  {cid}: {o}" + (f" ({detail[:160]})" if o == "violation" else "")
              for cid, (o, detail) in sorted(outcomes.items())]
    print("\n".join(lines))
