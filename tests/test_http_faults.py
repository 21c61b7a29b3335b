"""The fault matrix of the HTTP transport: readers x faults x phases over Neon's ``POST /sql``.

A cell is one ``HttpSession`` call under one fault on the local compute's HTTP
endpoint. Allowed outcomes: the complete result, equal to an oracle (plain psycopg on
a clean connection), or a clear error (a ``NeonError`` with a message, or a psycopg
error with a real one); never a partial result passed off as whole, never a write
done twice. Each cell also has the outcome the transport's retry policy promises
(``_client.py``/``_transport.py``): a request that provably did not run is re-sent
until ``wake_timeout``; a read-only read whose answer was lost is re-sent once; a
write whose answer was lost raises ``CommitUncertain`` -- and since the local compute
answers only after COMMIT, such a write did commit. A crash mid-request is answered
``connection closed`` (400, no SQLSTATE, as Neon's proxy answers it): the answer is
lost with the backend, so a read-only read is re-sent and a write is uncertain. After every cell: the tagged rows
were written 0 or 1 times (1 after a success; 0 after any error but CommitUncertain),
the session's state says what it saw, a follow-up read on the same session works, and
nothing is left (Parquet files, threads, server backends).

Readers: read_arrow, read_pandas, iter_batches (consumed), to_parquet, rows_insert
(``insert ... returning`` through read_arrow: a write) and execute_insert (``execute``
of an INSERT: a write). Kinds: suspend, crash, cut (``cut_after`` on endpoint
``"http"``, first connection only), cut_every (every connection), wake_fail and
latency. Phases, and how each kind reaches them:

- ``connect``: the compute is suspended when the request arrives; suspend/crash hit
  while it wakes; wake_fail: its next two wakes fail; latency from the first byte;
  cut: at byte 0 of the answer (the cold start done, nothing of the answer arrives);
- ``before_first_row``: the query held at its first row by ``fault_gate``'s advisory
  lock (``fault_support.Hold``), then the fault; cut: right where the result's rows
  begin in the answer's body;
- ``mid_stream``: held half-way through the rows; cut: the middle of the answer's body;
- ``in_answer``: held at the last row (every row made, nothing committed or sent);
  cut: inside the answer's header block.

Cut offsets come from a clean run of the same call through ``fault_support``'s
``CountingRelay`` (the answer's bytes: status line, headers, body). The default run
takes a Latin square (every reader meets every kind once, its phase rotated so that
every reader and every kind meets every phase), a second square for the writes, and
every phase of the cut for read_arrow and the writes: 55 cells, about 20 s with the tests below.
``NN_HTTP_FAULTS_FULL=1`` runs the whole product (144 cells). A table of outcomes is
printed at the end of the run (``NN_HTTP_FAULTS_TABLE=path`` also writes it, with every
clear error, to a file).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
import pytest

import fault_support as fs
import neon_notebook as nn
from neon_notebook._state import ComputeState
from neon_notebook.local import LocalCompute

pytestmark = [pytest.mark.local_compute]

READERS = ("read_arrow", "read_pandas", "iter_batches", "to_parquet", "rows_insert", "execute_insert")
WRITERS = ("rows_insert", "execute_insert")
KINDS = ("suspend", "crash", "cut", "cut_every", "wake_fail", "latency")
CUTS = {"cut": 1, "cut_every": None}  # how many connections cut_after cuts (None: every new one)
PHASES = ("connect", "before_first_row", "mid_stream", "in_answer")

ROWS = 1000  # rows of fault_items a read takes (~85 kB of JSON)
WAKE_TIMEOUT = 3.0
LATENCY = 0.02  # seconds each relayed chunk is held back, each direction
ITEMS = f"select * from fault_items where i <= {ROWS} and fault_gate(i, {{at}})"
BARE_MESSAGES = ("the connection is closed", "the connection is lost", "connection lost", "connection closed",
                 "another command is already in progress")
#: SQLSTATEs of a backend ended by a suspension or a crash: the compute went away.
SHUTDOWN_CODES = ("57P01", "57P02", "57P03")


@dataclass(frozen=True)
class Cell:
    reader: str
    kind: str
    phase: str

    @property
    def id(self) -> str:
        return f"{self.reader}-{self.kind}-{self.phase}"

    @property
    def writes(self) -> bool:
        return self.reader in WRITERS

    @property
    def tag(self) -> str:
        """Fixed-length name of this cell (the write's tags): answers keep their length."""
        return "nnh" + hashlib.sha1(self.id.encode()).hexdigest()[:8]


ALL_CELLS = [Cell(*c) for c in itertools.product(READERS, KINDS, PHASES)]


def square(readers: tuple[str, ...], shift: int = 0) -> list[Cell]:
    """Each reader x kind once, phase number (reader + kind + shift) mod 4: six kinds in a row
    give every reader every phase, six readers give every kind every phase."""
    return [Cell(r, k, PHASES[(READERS.index(r) + ki + shift) % len(PHASES)])
            for r in readers for ki, k in enumerate(KINDS)]


def subset() -> list[Cell]:
    cells = square(READERS) + square(WRITERS, shift=2)
    # A lost answer at every offset: the read-only re-send, and a committed write's verdict.
    cells += [Cell(r, "cut", p) for r in ("read_arrow", *WRITERS) for p in PHASES]
    return list(dict.fromkeys(cells))


SUBSET = subset()


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells = ALL_CELLS if os.environ.get("NN_HTTP_FAULTS_FULL") == "1" else SUBSET
        metafunc.parametrize("cell", [pytest.param(c, id=c.id) for c in cells])


# -- the compute, shared by the cells --------------------------------------------------------


class Env:
    """The module's compute, the oracle, the measured cut offsets and the outcomes."""

    def __init__(self) -> None:
        self.compute = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2)
        fs.create_schema(self.compute.direct_url)
        self.oracle = fs.oracle(self.compute.direct_url, ITEMS.format(at=0))
        assert len(self.oracle) == ROWS
        self._offsets: dict[str, dict[str, int]] = {}
        self.outcomes: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        self.compute.close()

    def session(self, http_url: str | None = None) -> nn.Session:
        c = self.compute
        return nn.connect(c.pooled_url, direct_url=c.direct_url, transport="http",
                          http_url=http_url or c.http_url, wake_timeout=WAKE_TIMEOUT, suspend_after=None)

    def offsets(self, reader: str, tmp: Path) -> dict[str, int]:
        """Cut offsets per phase, from a clean run of this call through a counting relay."""
        family = reader if reader in WRITERS else "read"
        if family not in self._offsets:
            from urllib.parse import urlsplit

            relay = fs.CountingRelay(urlsplit(self.compute.http_url).port)
            calib = Cell(reader, "calibrate", "none")
            session = self.session(f"http://127.0.0.1:{relay.port}/sql")
            try:
                result = CALL[reader](Run(calib, session, tmp, text(calib)))
                assert result == self.expected(calib), "the clean calibration run gave a wrong result"
            finally:
                session.close()
                relay.close()
            traces = [t for t in relay.traces if t.data]
            assert len(traces) == 1, f"{len(traces)} connections carried the call"
            self._offsets[family] = answer_offsets(bytes(traces[0].data))
        return self._offsets[family]

    def expected(self, cell: Cell) -> object:
        if cell.reader == "rows_insert":
            return [(f"{cell.tag}-{g:03d}",) for g in range(1, fs.WRITE_ROWS + 1)]
        if cell.reader == "execute_insert":
            return fs.WRITE_ROWS
        return self.oracle


def answer_offsets(data: bytes) -> dict[str, int]:
    """Where a cut lands in each phase of one HTTP answer: connect (byte 0), in_answer (inside the
    first header line: the status line whole, the header block not), before_first_row (where the
    user's result's rows begin: the second ``"rows":[``, after the prelude's), mid_stream (the
    middle of the body)."""
    assert data.startswith(b"HTTP/1.1 200 ") and data.count(b"HTTP/1.1 ") == 1, "not one 200 answer"
    status_end = data.index(b"\r\n") + 2
    head_end = data.index(b"\r\n\r\n") + 4
    rows_at = data.index(b'"rows":[', data.index(b'"rows":[', head_end) + 1) + len(b'"rows":[')
    return {"connect": 0, "in_answer": status_end + 5, "before_first_row": rows_at,
            "mid_stream": (head_end + len(data)) // 2, "head_end": head_end, "total": len(data)}


@pytest.fixture(scope="module")
def env(request):
    e = Env()
    yield e
    e.close()
    # printed after the run's own summary, outside output capture
    request.config.add_cleanup(lambda: _print_table(e.outcomes))


# -- the calls --------------------------------------------------------------------------------


@dataclass
class Run:
    cell: Cell
    session: nn.Session
    tmp: Path
    text: str


def _arrow(run: Run) -> list[tuple]:
    return fs.arrow_rows(run.session.read_arrow(run.text))


def _pandas(run: Run) -> list[tuple]:
    return fs.pandas_rows(run.session.read_pandas(run.text))


def _batches(run: Run) -> list[tuple]:
    rows: list[tuple] = []
    for batch in run.session.iter_batches(run.text, batch_rows=300):
        rows.extend(tuple(r.values()) for r in batch.to_pylist())
    return rows


def _parquet(run: Run) -> list[tuple]:
    import pyarrow.parquet as pq

    path = run.tmp / "out.parquet"
    try:
        n = run.session.to_parquet(run.text, path)
    except BaseException:
        left = sorted(p.name for p in run.tmp.iterdir())
        assert not left, f"to_parquet failed and left {left}"
        raise
    rows = fs.arrow_rows(pq.read_table(path))
    assert n == len(rows), f"to_parquet said {n} rows, the file holds {len(rows)}"
    left = sorted(p.name for p in run.tmp.iterdir())
    assert left == ["out.parquet"], f"to_parquet left {left}"
    path.unlink()
    return rows


def _execute(run: Run) -> int:
    return run.session.execute(run.text)


CALL: dict[str, Callable[[Run], object]] = {
    "read_arrow": _arrow, "read_pandas": _pandas, "iter_batches": _batches, "to_parquet": _parquet,
    "rows_insert": _arrow, "execute_insert": _execute,
}


def text(cell: Cell) -> str:
    """The call's text, gated at the row its phase holds (0: never)."""
    last = fs.WRITE_ROWS if cell.writes else ROWS
    at = {"before_first_row": 1, "mid_stream": last // 2, "in_answer": last}.get(cell.phase, 0)
    if cell.kind in CUTS:
        at = 0
    if not cell.writes:
        return ITEMS.format(at=at)
    insert = (f"insert into fault_writes (tag) select '{cell.tag}-' || lpad(g::text, 3, '0') "
              f"from generate_series(1, {fs.WRITE_ROWS}) as g where fault_gate(g, {at})")
    return insert + " returning tag" if cell.reader == "rows_insert" else insert


# -- faults ---------------------------------------------------------------------------------


class Injector:
    """Sets up the cell's fault, and applies it from another thread when the call reaches its phase."""

    def __init__(self, cell: Cell, compute: LocalCompute, offsets: dict[str, int] | None) -> None:
        self.cell, self.compute = cell, compute
        self.hold: fs.Hold | None = None
        self.thread: threading.Thread | None = None
        self.problem: str | None = None
        kind, phase = cell.kind, cell.phase
        if phase == "connect":
            compute.suspend()
        if kind in CUTS:
            compute.cut_after(offsets[phase], endpoint="http", times=CUTS[kind])
        elif phase == "connect":
            if kind == "latency":
                compute.latency(LATENCY, endpoint="http")
            elif kind == "wake_fail":
                compute.fail_next_wakes(2)
            else:
                self._start(self._fault_while_starting)
        else:
            self.hold = fs.Hold(compute.direct_url)
            if kind == "latency":
                compute.cut_after(2**62, endpoint="http")  # through the faulty relay, never cut
            self._start(self._fault_when_held)
        if self.thread is None:
            self.before = compute.status()  # counters before the fault, after the preparation

    def _start(self, target) -> None:
        self.before = self.compute.status()  # counters before the fault, after the preparation
        self.thread = threading.Thread(target=target, name="fault-injector", daemon=True)
        self.thread.start()

    def _fault_while_starting(self) -> None:
        if not fs.wait_for_state(self.compute, "starting"):
            self.problem = "the compute never started waking"
            return
        getattr(self.compute, self.cell.kind)()  # runs as soon as the wake completes

    def _fault_when_held(self) -> None:
        if not self.hold.wait_blocked():
            self.problem = f"the call never reached {self.cell.phase}"
            self.hold.release()
            return
        kind = self.cell.kind
        if kind == "latency":
            self.compute.latency(LATENCY, endpoint="http")
        elif kind == "wake_fail":
            self.compute.fail_next_wakes(2)
            self.compute.suspend()
        else:
            getattr(self.compute, kind)()
        self.hold.release()

    def finish(self) -> None:
        if self.thread is not None:
            self.thread.join(30)
            if self.thread.is_alive():
                self.problem = "the fault injector did not finish"
        if self.hold is not None:
            self.hold.close()


def _fault_missing(cell: Cell, before: dict, after: dict) -> str | None:
    """Why the cell's fault did not happen (the cell would test nothing), or None."""
    counter = {"suspend": "suspensions", "crash": "crashes", "cut": "cuts", "cut_every": "cuts",
               "latency": "tapped_bytes", "wake_fail": "failed_wakes" if cell.phase == "connect" else "suspensions"}
    name = counter[cell.kind]
    return None if after[name] > before[name] else f"no {cell.kind} happened ({name} stayed {before[name]})"


def _clear_error(exc: BaseException) -> str | None:
    """Why ``exc`` is not a clear error, or None when it is one."""
    message = str(exc).strip()
    if isinstance(exc, nn.NeonError):
        return None if message else f"{type(exc).__name__} without a message"
    if isinstance(exc, psycopg.Error):
        if not message or message.lower().rstrip(".") in BARE_MESSAGES:
            return f"bare {type(exc).__name__}: {message!r}"
        return None
    return f"{type(exc).__name__}: {message[:200]}"


def _promise(cell: Cell, outcome: str, error: BaseException | None) -> str | None:
    """Where the outcome breaks what the retry policy promises for this cell, or None."""
    uncertain = isinstance(error, nn.CommitUncertain)
    if cell.kind == "latency" or (cell.kind == "wake_fail" and cell.phase == "connect"):
        want, ok = "complete", outcome == "complete"
    elif cell.kind in CUTS and cell.writes:  # the answer is sent after COMMIT: lost, it is uncertain
        want, ok = "CommitUncertain", uncertain
    elif cell.kind == "cut":
        want, ok = "complete (a lost read-only answer is re-sent once)", outcome == "complete"
    elif cell.kind == "cut_every":
        want, ok = "a clear error (lost twice)", outcome == "clear-error" and not uncertain
    elif cell.phase == "connect":
        return None  # a suspension or crash while waking: either the retry wins or the query dies
    elif cell.kind == "crash" and cell.writes:  # the compute's connection lost mid-request ("connection closed")
        want, ok = "CommitUncertain (the backend died under the write)", uncertain
    elif cell.kind == "crash":  # the same for a read-only read: re-sent once, on the restarted compute
        want, ok = "complete (a read-only read lost with its backend is re-sent once)", outcome == "complete"
    else:  # a suspension: PostgreSQL's 57P01, an answer: nothing ran, nothing to re-send blindly
        want, ok = "a clear error (the held query was ended)", outcome == "clear-error" and not uncertain
    if ok:
        return None
    got = f"{type(error).__name__}: {str(error)[:120]}" if error is not None else outcome
    return f"promised {want}, got {got}"


def _writes(compute: LocalCompute, tag: str) -> int:
    with psycopg.connect(compute.direct_url) as conn:
        return conn.execute("select count(*) from fault_writes where tag like %s", [tag + "-%"]).fetchone()[0]


def _sqlstate(exc: BaseException | None) -> str | None:
    return getattr(exc, "sqlstate", None)


# -- the matrix ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_http_fault_cell(env, cell, tmp_path):
    compute = env.compute
    offsets = env.offsets(cell.reader, tmp_path) if cell.kind in CUTS else None
    fs.reset_faults(compute)
    threads_before = fs.thread_names()
    session = env.session()
    violations: list[str] = []
    outcome = "violation"
    error: BaseException | None = None
    injector = Injector(cell, compute, offsets)
    try:
        result = CALL[cell.reader](Run(cell, session, tmp_path, text(cell)))
    except AssertionError as exc:  # a call's own check (a file) failed
        violations.append(str(exc))
    except BaseException as exc:
        error = exc
        if (why := _clear_error(exc)) is not None:
            violations.append(f"unclear error: {why}")
        else:
            outcome = "clear-error"
    else:
        expected = env.expected(cell)
        if result == expected:
            outcome = "complete"
        elif isinstance(expected, list):
            violations.append(f"wrong result: {len(result)} rows, expected {len(expected)}"
                              + ("" if len(result) != len(expected) else " (values differ)"))
        else:
            violations.append(f"wrong result: {result!r}, expected {expected!r}")
    finally:
        injector.finish()
    if injector.problem:
        violations.append(f"harness: {injector.problem}")
    if (missing := _fault_missing(cell, injector.before, compute.status())) is not None:
        violations.append(f"harness: {missing}")
    if outcome != "violation" and (broken := _promise(cell, outcome, error)) is not None:
        violations.append(broken)

    state = session.state
    if outcome == "complete" and state is not ComputeState.ACTIVE:
        violations.append(f"state {state} after a success (expected active)")
    if error is not None:
        if state is ComputeState.WAKING:
            violations.append(f"state waking after {type(error).__name__} returned")
        elif isinstance(error, nn.WakeTimeout) and state is not ComputeState.ERROR:
            violations.append(f"state {state} after WakeTimeout (expected error)")
        elif _sqlstate(error) in SHUTDOWN_CODES and state is not ComputeState.SUSPENDED:
            violations.append(f"state {state} after {_sqlstate(error)} {type(error).__name__} "
                              "(the compute shut the backend down: expected suspended)")
    fs.reset_faults(compute)

    if cell.writes:
        written, want = _writes(compute, cell.tag), fs.WRITE_ROWS
        if written not in (0, want):
            violations.append(f"{written} rows written: the write was " + ("repeated" if written > want else "partial"))
        elif outcome == "complete" and written != want:
            violations.append(f"the write reported success but {written} rows are in the table")
        elif error is not None and not isinstance(error, nn.CommitUncertain) and written:
            violations.append(f"the write committed ({written} rows) but {type(error).__name__} says nothing "
                              f"of it: {str(error)[:120]}")
    elif isinstance(error, nn.CommitUncertain):
        violations.append("CommitUncertain from a read-only read, which cannot have written")
    if isinstance(error, nn.CommitUncertain) and cell.kind not in CUTS and cell.kind != "crash":
        # The local compute's HTTP server outlives suspensions and crashes: it always answers,
        # so only a cut can lose an answer, or a crash the backend running the write (and with
        # either the knowledge of a COMMIT).
        violations.append(f"CommitUncertain under {cell.kind}, where the server always answers: "
                          f"{str(error)[:120]}")

    try:
        follow = fs.arrow_rows(session.read_arrow("select 1 as x"))
        if follow != [(1,)]:
            violations.append(f"follow-up read gave {follow}")
    except Exception as exc:
        violations.append(f"follow-up read failed: {type(exc).__name__}: {exc}")
    if session.state is not ComputeState.ACTIVE:
        violations.append(f"state {session.state} after a successful follow-up read")
    if session.last_error is not None:
        violations.append(f"last_error outlives recovery: {session.last_error[:100]}")
    session.close()
    if extra := fs.new_threads(threads_before):
        violations.append(f"threads left running: {extra}")
    # Every backend of a /sql request is closed with its request: none may remain (the probe
    # itself, the compute's monitor and Hold's closed connections excepted).
    if left := fs.server_leftovers(compute.direct_url, "", pooled=False):
        violations.append(f"server backends left: {left}")
    if partial := sorted(p.name for p in tmp_path.rglob("*.partial")):
        violations.append(f"files left: {partial}")

    if violations:
        outcome = "violation"
    detail = "; ".join(violations) or (f"[{state}] {type(error).__name__}: {error}"[:160] if error else "")
    env.outcomes[cell.id] = (outcome, detail)
    assert not violations, f"{cell.id}: " + " | ".join(violations)


@pytest.mark.timeout(60)
def test_crash_while_waking_is_answered(env, tmp_path):
    """A crash just after the wake a write's request waited for: the server still answers (500,
    re-sent; the query's own error; or "connection closed" when the crash hit the running INSERT),
    so the write is never left uncertain for want of an answer. The crash lands at
    a different point of the request's log-in each time: a few tries find every one."""
    compute, cell = env.compute, Cell("execute_insert", "crash", "connect")
    seen = []
    for attempt in range(8):
        fs.reset_faults(compute)
        session = env.session()
        injector = Injector(cell, compute, None)
        try:
            seen.append(str(CALL[cell.reader](Run(cell, session, tmp_path, text(cell)))))
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {str(exc)[:100]}")
        finally:
            injector.finish()
            session.close()
        assert injector.problem is None, injector.problem
        fs.reset_faults(compute)
        written = _writes(compute, cell.tag)
        # Uncertain only when the backend died under the running INSERT ("connection closed"),
        # never because the server dropped the request unanswered.
        assert not seen[-1].startswith("CommitUncertain") or "connection closed" in seen[-1], \
            f"try {attempt + 1}: the server dropped the request unanswered ({written} rows written); outcomes {seen}"
        with psycopg.connect(compute.direct_url, autocommit=True) as conn:
            conn.execute("delete from fault_writes where tag like %s", [cell.tag + "-%"])


def test_subset_covers_every_pair():
    """The default run: every reader x kind, every reader x phase, every kind x phase."""
    factors = {"reader": READERS, "kind": KINDS, "phase": PHASES}
    for a, b in itertools.combinations(factors, 2):
        met = {(getattr(c, a), getattr(c, b)) for c in SUBSET}
        assert met == set(itertools.product(factors[a], factors[b])), (a, b)
    assert len(set(SUBSET)) == len(SUBSET) and 40 <= len(SUBSET) <= 60


def test_cut_offsets_land_in_their_phases(env, tmp_path):
    """Each cut lands inside the clean answer, in the part its phase names."""
    for reader in ("read_arrow", *WRITERS):
        o = env.offsets(reader, tmp_path)
        assert o["connect"] == 0 < o["in_answer"] < o["head_end"] <= o["before_first_row"] < o["total"], (reader, o)
        assert o["head_end"] < o["mid_stream"] < o["total"], (reader, o)
        if reader not in WRITERS:  # a read's rows fill its body: the middle is among them
            assert o["before_first_row"] < o["mid_stream"], o


# -- the table ----------------------------------------------------------------------------


def _print_table(outcomes: dict[str, tuple[str, str]]) -> None:
    if not outcomes:
        return
    kinds = ("complete", "clear-error", "violation")
    factors = (("reader", READERS), ("kind", KINDS), ("phase", PHASES))
    counts: dict[tuple[str, str], Counter] = {}
    for cell_id, (outcome, _) in outcomes.items():
        for (factor, _), value in zip(factors, cell_id.split("-")):
            counts.setdefault((factor, value), Counter())[outcome] += 1
        counts.setdefault(("all", "cells"), Counter())[outcome] += 1
    lines = ["", f"HTTP fault matrix: {len(outcomes)} cells x outcomes",
             f"{'':28} " + " ".join(f"{k:>11}" for k in kinds)]
    for factor, values in factors + (("all", ("cells",)),):
        for value in values:
            if (factor, value) in counts:
                c = counts[(factor, value)]
                lines.append(f"{factor + ' ' + value:28} " + " ".join(f"{c[k]:>11}" for k in kinds))
    bad = [(cid, detail) for cid, (o, detail) in sorted(outcomes.items()) if o == "violation"]
    if bad:
        lines.append("violations:")
        lines += [f"  {cid}: {detail[:300]}" for cid, detail in bad]
    print("\n".join(lines))
    target = os.environ.get("NN_HTTP_FAULTS_TABLE")
    if target:
        errors = [f"  {cid}: {detail}" for cid, (o, detail) in sorted(outcomes.items()) if o == "clear-error"]
        Path(target).write_text("\n".join(lines + ["clear errors:"] + errors) + "\n")
