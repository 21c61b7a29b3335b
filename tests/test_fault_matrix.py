"""The fault matrix: every reader x both endpoints x faults at every phase.

A cell is one read under one fault. The only allowed outcomes are the complete
result, equal to an oracle (the same text read by plain psycopg on a clean
connection), or a clear error (a ``NeonError``, or a ``psycopg.OperationalError``
in plain words) with nothing partial passed off as whole. Either way: no write
repeated, the pool healthy (a follow-up read on the same session works, nothing in
use), the session's state right, and nothing left behind (files, threads, server
connections). Anything else is a violation and fails the cell.

Phases: ``connect`` (start-up), ``describe`` (Parse/Describe held by a table lock),
``before_first_row`` (the first row held by an advisory lock in ``fault_gate``),
``mid_stream`` (held half-way), ``before_complete`` (the last row held; for cuts,
inside the COMMIT's answer: a read that wrote nothing is then complete). Kinds: ``suspend``, ``crash``, ``cut`` (``cut_after`` at
an offset measured on a clean run of the same read and endpoint, first connection
only, so a retry may succeed), ``cut_every`` (every new connection), ``wake_fail`` (a
suspension at the phase whose next two wakes fail; at start-up, a suspended
compute whose next two wakes fail) and ``latency``.

Readers: read_arrow, read_text (COPY's text format), read_pandas, read_polars,
iter_batches (consumed), to_parquet, rows (several statements: the row path),
rows_insert (``insert ... returning``), rows_commit (``insert ...; commit; select ...``)
and sql_magic (``%%sql df`` in an IPython shell).

The default run takes a Latin-square subset (every reader x endpoint x kind once, its
phase rotated so that every reader x endpoint meets every phase and every kind every
phase, plus cells for known weak spots: 125 cells, about a minute); CI (``CI=true``) runs the same square, beside the HTTP transport's own matrix (test_http_faults.py);
``NN_FAULTS_SECOND=1`` adds a second, disjoint square (245 cells, about 2 minutes);
``pytest -m faults_full`` (or ``NN_FAULTS_FULL=1``) runs the whole matrix (600 cells, about
4 minutes). A table of cells x outcomes is printed at the end of the run
(``NN_FAULTS_TABLE=path`` also writes it, with every clear error, to a file).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import fault_support as fs
import neon_notebook as nn
from neon_notebook.local import LocalCompute
from neon_notebook._state import ComputeState

pytestmark = [pytest.mark.pgbouncer, pytest.mark.local_compute, pytest.mark.usefixtures("pgbouncer")]

READERS = ("read_arrow", "read_text", "read_pandas", "read_polars", "iter_batches", "to_parquet", "rows",
           "rows_insert", "rows_commit", "sql_magic")
WRITERS = ("rows_insert", "rows_commit")  # texts that write: the write must happen at most once
ENDPOINTS = ("pooled", "direct")
KINDS = ("suspend", "crash", "cut", "cut_every", "wake_fail", "latency")
CUTS = {"cut": 1, "cut_every": None}  # how many connections cut_after cuts (None: every new one)
PHASES = ("connect", "describe", "before_first_row", "mid_stream", "before_complete")

WAKE_TIMEOUT = 3.0  # a connect that is cut every time fails after this (WakeTimeout)
LATENCY = 0.02  # seconds each relayed chunk is held back, each direction
COLD_DELAY = 0.3  # activation delay of the compute whose start-up is faulted
ITEMS = "select * from fault_items where fault_gate(i, {at})"
BARE_MESSAGES = ("the connection is closed", "the connection is lost", "another command is already in progress",
                 "copy did not start", "the copy failed")


@dataclass(frozen=True)
class Cell:
    reader: str
    endpoint: str
    kind: str
    phase: str

    @property
    def id(self) -> str:
        return f"{self.reader}-{self.endpoint}-{self.kind}-{self.phase}"

    @property
    def direct(self) -> bool:
        return self.endpoint == "direct"

    @property
    def tag(self) -> str:
        """Fixed-length name of this cell (application_name, write tags): byte counts stay put."""
        return "nnf" + hashlib.sha1(self.id.encode()).hexdigest()[:8]


ALL_CELLS = [Cell(*c) for c in itertools.product(READERS, ENDPOINTS, KINDS, PHASES)]


def latin_square(shift: int = 0) -> list[Cell]:
    """One cell per reader x endpoint x kind, its phase rotated so that every reader x endpoint
    meets every phase and every kind meets every phase (a Latin square over the phases);
    ``shift`` rotates the whole square (another square, no cell in common)."""
    chosen = [Cell(r, e, k, PHASES[(ri + 2 * ei + ki + shift) % len(PHASES)])
              for ri, r in enumerate(READERS) for ei, e in enumerate(ENDPOINTS)
              for ki, k in enumerate(KINDS)]
    # The writes' worst case on both endpoints: the COMMIT ran, its answer was cut.
    # The row path's fallback when the connection dies in the COPY attempt's ROLLBACK (the soak found it).
    extras = [Cell(reader, endpoint, "cut", "before_complete") for reader in WRITERS for endpoint in ENDPOINTS]
    extras += [Cell("rows", endpoint, "cut", "describe") for endpoint in ENDPOINTS]
    chosen += [extra for extra in extras if extra not in chosen]
    return chosen


SUBSET = latin_square()
#: Two disjoint squares (``NN_FAULTS_SECOND=1``): every reader x endpoint x kind meets two phases.
TWO_SQUARES = SUBSET + [c for c in latin_square(shift=3) if c not in SUBSET]


def _cells(config) -> tuple[list[Cell], bool]:
    """The cells of this run, and whether it is the whole matrix: all of them under ``-m faults_full``
    or ``NN_FAULTS_FULL=1`` (about 4 minutes); two squares with ``NN_FAULTS_SECOND=1``; one square
    otherwise, CI included (its ten minutes also hold the writes' and the HTTP transport's matrices)."""
    if "faults_full" in (config.getoption("markexpr") or "") or os.environ.get("NN_FAULTS_FULL") == "1":
        return ALL_CELLS, True
    if os.environ.get("NN_FAULTS_SECOND") == "1":
        return TWO_SQUARES, False
    return SUBSET, False


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        cells, full = _cells(metafunc.config)
        marks = [pytest.mark.faults_full] if full else []
        metafunc.parametrize("cell", [pytest.param(c, id=c.id, marks=marks) for c in cells])


# -- the computes, shared by the cells -----------------------------------------------------


class Env:
    """The module's computes, shell, oracles and measured cut offsets."""

    def __init__(self) -> None:
        self.warm = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2)
        self.cold = LocalCompute(suspend_after=None, start_active=True, monitor_interval=0.2,
                                 activation_delay=COLD_DELAY)
        for c in (self.warm, self.cold):
            fs.create_schema(c.direct_url)
        self.oracle = fs.oracle(self.warm.direct_url, ITEMS.format(at=0))
        assert len(self.oracle) == fs.ROWS
        self._offsets: dict[tuple[str, str], dict[str, int]] = {}
        from IPython.core.interactiveshell import InteractiveShell

        from neon_notebook.ui.magics import NeonMagics

        self.shell = InteractiveShell.instance()
        self.magics = NeonMagics(self.shell)
        self.shell.register_magics(self.magics)
        self.outcomes: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        for c in (self.warm, self.cold):
            c.close()

    def session(self, compute: LocalCompute, tag: str, port: int | None = None,
                direct_port: int | None = None) -> nn.Session:
        pooled = _url(compute.pooled_url, port) + f"?pgbouncer=true&application_name={tag}"
        direct = _url(compute.direct_url, direct_port) + f"?application_name={tag}"
        return nn.connect(pooled, direct_url=direct, suspend_after=None, wake_timeout=WAKE_TIMEOUT)

    def offsets(self, reader: str, endpoint: str, tmp: Path) -> dict[str, int]:
        """Cut offsets per phase, from a clean run of this read through a counting relay."""
        key = (reader, endpoint)
        if key not in self._offsets:
            c = self.warm
            relay = fs.CountingRelay(urlsplit(c.pooled_url if endpoint == "pooled" else c.direct_url).port)
            calib = Cell(reader, endpoint, "calibrate", "none")
            session = self.session(c, calib.tag, relay.port, relay.port)
            try:
                rows = READ[reader](Run(self, calib, session, tmp, _text(calib)))
                assert rows == self.expected(calib), "the clean calibration run gave a wrong result"
            finally:
                session.close()
                relay.close()
            traces = [t for t in relay.traces if len(t.data) > 1000]
            assert len(traces) == 1, f"{len(traces)} connections carried the read"
            self._offsets[key] = fs.phase_offsets(traces[0])
        return self._offsets[key]

    def expected(self, cell: Cell) -> list[tuple]:
        if cell.reader == "rows_insert":
            return [(f"{cell.tag}-{g:03d}",) for g in range(1, fs.WRITE_ROWS + 1)]
        return self.oracle


def _url(url: str, port: int | None) -> str:
    """``url`` with another port (the counting relay's), or as it is."""
    if port is None:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rpartition(':')[0]}:{port}"))


@pytest.fixture(scope="module")
def env(request, pgbouncer):
    e = Env()
    yield e
    e.close()
    # printed after the run's own summary, outside output capture
    request.config.add_cleanup(lambda: _print_table(request.config, e.outcomes))


# -- the readers ----------------------------------------------------------------------------


@dataclass
class Run:
    env: Env
    cell: Cell
    session: nn.Session
    tmp: Path
    text: str


def _arrow(run: Run) -> list[tuple]:
    return fs.arrow_rows(run.session.read_arrow(run.text, direct=run.cell.direct))


def _arrow_text(run: Run) -> list[tuple]:
    """COPY's text format: the other decoding path (Arrow's CSV reader)."""
    return fs.arrow_rows(run.session.read_arrow(run.text, direct=run.cell.direct, copy_format="text"))


def _pandas(run: Run) -> list[tuple]:
    return fs.pandas_rows(run.session.read_pandas(run.text, direct=run.cell.direct))


def _polars(run: Run) -> list[tuple]:
    return fs.polars_rows(run.session.read_polars(run.text, direct=run.cell.direct))


def _batches(run: Run) -> list[tuple]:
    rows: list[tuple] = []
    for batch in run.session.iter_batches(run.text, batch_rows=500, direct=run.cell.direct):
        rows.extend(tuple(r.values()) for r in batch.to_pylist())
    return rows


def _parquet(run: Run) -> list[tuple]:
    import pyarrow.parquet as pq

    path = run.tmp / "out.parquet"
    try:
        n = run.session.to_parquet(run.text, path, direct=run.cell.direct, batch_rows=1000)
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


def _rows(run: Run) -> list[tuple]:
    return fs.arrow_rows(run.session.read_arrow("select 1 as warmup; " + run.text, direct=run.cell.direct))


def _insert_text(cell: Cell, at: int) -> str:
    return (f"insert into fault_writes (tag) select '{cell.tag}-' || lpad(g::text, 3, '0') "
            f"from generate_series(1, {fs.WRITE_ROWS}) as g where fault_gate(g, {at}) returning tag")


def _insert(run: Run) -> list[tuple]:
    return fs.arrow_rows(run.session.read_arrow(run.text, direct=run.cell.direct))


def _sql_magic(run: Run) -> list[tuple]:
    magics, shell = run.env.magics, run.env.shell
    magics.sessions["fault"] = run.session
    magics.current = "fault"
    shell.user_ns.pop("fault_df", None)
    try:
        shell.run_cell_magic("sql", ("--direct " if run.cell.direct else "") + "fault_df", run.text)
    except BaseException:
        assert "fault_df" not in shell.user_ns, "%%sql failed but assigned its variable"
        raise
    finally:
        magics.sessions.pop("fault", None)
        magics.current = None
    return fs.pandas_rows(shell.user_ns.pop("fault_df"))


READ: dict[str, Callable[[Run], list[tuple]]] = {
    "read_arrow": _arrow, "read_text": _arrow_text, "read_pandas": _pandas, "read_polars": _polars, "iter_batches": _batches,
    "to_parquet": _parquet, "rows": _rows, "rows_insert": _insert, "rows_commit": _insert,
    "sql_magic": _sql_magic,
}


def _text(cell: Cell) -> str:
    """The read's text, gated at the row its phase holds (0: never)."""
    last = fs.WRITE_ROWS if cell.reader == "rows_insert" else fs.ROWS
    at = {"before_first_row": 1, "mid_stream": last // 2, "before_complete": last}.get(cell.phase, 0)
    if cell.kind in CUTS or cell.phase in ("connect", "describe"):
        at = 0
    if cell.reader == "rows_commit":  # the write commits before the read is done (issue #9: 3)
        return f"{_insert_text(cell, 0)}; commit; {ITEMS.format(at=at)}"
    return _insert_text(cell, at) if cell.reader == "rows_insert" else ITEMS.format(at=at)


# -- faults -------------------------------------------------------------------------------


class Injector:
    """Applies the cell's fault from another thread when the read reaches its phase."""

    def __init__(self, env: Env, cell: Cell, compute: LocalCompute, offsets: dict[str, int] | None):
        self.cell, self.compute = cell, compute
        self.hold: fs.Hold | None = None
        self.thread: threading.Thread | None = None
        self.problem: str | None = None
        self.before = compute.status()  # counters before the fault (after any preparation)
        kind, phase, endpoint = cell.kind, cell.phase, cell.endpoint
        if kind in CUTS:
            compute.cut_after(offsets[phase], endpoint=endpoint, times=CUTS[kind])
        elif phase == "connect":
            if kind == "latency":
                compute.latency(LATENCY, endpoint=endpoint)
            elif kind == "wake_fail":
                compute.suspend()
                compute.fail_next_wakes(2)
                self.before = compute.status()
            else:
                compute.suspend()
                self._start(self._fault_while_starting)
        else:
            table = ("fault_writes" if cell.reader == "rows_insert" else "fault_items") if phase == "describe" else None
            self.hold = fs.Hold(compute.direct_url, lock_table=table)
            if kind == "latency":
                compute.cut_after(2**62, endpoint=endpoint)  # through the proxy's faulty relay, never cut
            self._start(self._fault_when_held)

    def _start(self, target) -> None:
        self.before = self.compute.status()
        self.thread = threading.Thread(target=target, name="fault-injector", daemon=True)
        self.thread.start()

    def _fault_while_starting(self) -> None:
        deadline = time.monotonic() + 15
        while self.compute.state != "starting":
            if time.monotonic() > deadline:
                self.problem = "the compute never started waking"
                return
            time.sleep(0.005)
        getattr(self.compute, self.cell.kind)()  # runs as soon as the wake completes

    def _fault_when_held(self) -> None:
        if not self.hold.wait_blocked():
            self.problem = f"the read never reached {self.cell.phase}"
            self.hold.release()
            return
        kind = self.cell.kind
        if kind == "latency":
            self.compute.latency(LATENCY, endpoint=self.cell.endpoint)
            self.hold.release()
            return
        if kind == "wake_fail":
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
    from neon_notebook.ui.magics import CellError

    if isinstance(exc, CellError):
        if "Traceback" in str(exc):
            return f"%%sql showed a traceback: {exc}"
        if exc.__cause__ is None:
            return f"%%sql error without its cause: {exc}"
        exc = exc.__cause__
    message = str(exc).strip()
    if isinstance(exc, nn.NeonError):
        return None if message else f"{type(exc).__name__} without a message"
    if isinstance(exc, psycopg.OperationalError):
        if not message or message.lower().rstrip(".") in BARE_MESSAGES:
            return f"bare {type(exc).__name__}: {message!r}"
        return None
    return f"{type(exc).__name__}: {message[:200]}"


def _writes(compute: LocalCompute, tag: str) -> int:
    with psycopg.connect(compute.direct_url) as conn:
        return conn.execute("select count(*) from fault_writes where tag like %s", [tag + "-%"]).fetchone()[0]


# -- the matrix ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_fault_cell(env, cell, tmp_path):
    compute = env.cold if cell.phase == "connect" and cell.kind in ("suspend", "crash") else env.warm
    offsets = env.offsets(cell.reader, cell.endpoint, tmp_path) if cell.kind in CUTS else None
    fs.reset_faults(compute)
    threads_before = fs.thread_names()
    session = env.session(compute, cell.tag)
    violations: list[str] = []
    outcome = "violation"
    error: BaseException | None = None
    injector = Injector(env, cell, compute, offsets)
    try:
        rows = READ[cell.reader](Run(env, cell, session, tmp_path, _text(cell)))
    except AssertionError as exc:  # a reader's own check (a file, a variable) failed
        violations.append(str(exc))
    except BaseException as exc:
        error = exc
        if (why := _clear_error(exc)) is not None:
            violations.append(f"unclear error: {why}")
        else:
            outcome = "clear-error"
    else:
        if rows == env.expected(cell):
            outcome = "complete"
        else:
            violations.append(f"wrong result: {len(rows)} rows, expected {len(env.expected(cell))}"
                              + ("" if len(rows) != len(env.expected(cell)) else " (values differ)"))
    finally:
        injector.finish()
    if injector.problem:
        violations.append(f"harness: {injector.problem}")
    if (missing := _fault_missing(cell, injector.before, compute.status())) is not None:
        violations.append(f"harness: {missing}")
    state = session.state
    if state is ComputeState.WAKING:
        violations.append("state 'waking' after the read returned")
    # A cut inside the COMMIT's answer, after the probe said the text wrote nothing: the read
    # is whole, and the session saw its connection die. A text that wrote stays uncertain.
    commit_cut = cell.kind in CUTS and cell.phase == "before_complete"
    if commit_cut and cell.reader not in WRITERS and outcome != "complete":
        violations.append("a read that wrote nothing failed when only its COMMIT's answer was lost")
    if error is None and outcome == "complete":
        want_state = ComputeState.SUSPENDED if commit_cut else ComputeState.ACTIVE
        if state is not want_state:
            violations.append(f"state {state} after a successful read (expected {want_state})")
    if outcome == "clear-error":
        cause = error.__cause__ if type(error).__name__ == "CellError" else error
        want = {ComputeState.ERROR} if isinstance(cause, nn.ConnectError) else {ComputeState.SUSPENDED}
        if state not in want:
            violations.append(f"state {state} after {type(cause).__name__} (expected {'/'.join(map(str, want))})")
    fs.reset_faults(compute)

    if cell.reader in WRITERS:
        written = _writes(compute, cell.tag)
        if written not in (0, fs.WRITE_ROWS):
            violations.append(f"{written} rows written: the write was "
                              + ("repeated" if written > fs.WRITE_ROWS else "partial"))
        elif outcome == "complete" and written != fs.WRITE_ROWS:
            violations.append(f"the write reported success but {written} rows are in the table")

    try:
        follow = fs.arrow_rows(session.read_arrow("select 1 as x", direct=cell.direct))
        if follow != [(1,)]:
            violations.append(f"follow-up read gave {follow}")
    except Exception as exc:
        violations.append(f"follow-up read failed: {type(exc).__name__}: {exc}")
    if session.state is not ComputeState.ACTIVE:
        violations.append(f"state {session.state} after a successful follow-up read")
    if session.last_error is not None:
        violations.append(f"last_error outlives recovery: {session.last_error[:100]}")
    busy = {role: s["in_use"] for role, s in session.pool_stats().items() if s["in_use"]}
    if busy:
        violations.append(f"connections still in use: {busy}")
    session.close()
    if extra := fs.new_threads(threads_before):
        violations.append(f"threads left running: {extra}")
    if left := fs.server_leftovers(compute.direct_url, cell.tag, pooled=not cell.direct):
        violations.append(f"server connections left: {left}")
    if partial := sorted(p.name for p in tmp_path.rglob("*.partial")):
        violations.append(f"files left: {partial}")

    if violations:
        outcome = "violation"
    env.outcomes[cell.id] = (outcome, "; ".join(violations) or (f"[{state}] {type(error).__name__}: {error}"[:160]
                                                                  if error else ""))
    assert not violations, f"{cell.id}: " + " | ".join(violations)


def test_subset_covers_every_triple_but_phase_and_every_pair():
    """The default run's cells: every reader x endpoint x kind, every reader x endpoint x phase."""
    chosen = {(c.reader, c.endpoint, c.kind, c.phase) for c in SUBSET}
    for triple in itertools.product(READERS, ENDPOINTS, KINDS):
        assert any(c[:3] == triple for c in chosen), triple
    for triple in itertools.product(READERS, ENDPOINTS, PHASES):
        assert any((c[0], c[1], c[3]) == triple for c in chosen), triple
    for pair in itertools.product(KINDS, PHASES):
        assert any(c[2:] == pair for c in chosen), pair
    assert len(SUBSET) <= len(ALL_CELLS) // 4
    # The two squares: every reader x endpoint x kind at two phases at least, no cell twice.
    phases = Counter((c.reader, c.endpoint, c.kind) for c in TWO_SQUARES)
    assert len(set(TWO_SQUARES)) == len(TWO_SQUARES) and len(TWO_SQUARES) <= len(ALL_CELLS) // 2
    assert len(phases) == len(READERS) * len(ENDPOINTS) * len(KINDS) and min(phases.values()) >= 2


def test_cut_offsets_land_in_their_phases(env, tmp_path):
    """The measured offsets are ordered as the phases are, inside the clean run's bytes."""
    for endpoint in ENDPOINTS:
        for reader in ("read_arrow", "rows"):
            o = env.offsets(reader, endpoint, tmp_path)
            order = [o[p] for p in PHASES]
            assert order == sorted(order) and len(set(order)) == len(order), (reader, endpoint, o)
            assert 0 < o["connect"] and o["before_complete"] < o["total"]


# -- the table ----------------------------------------------------------------------------


def _print_table(config, outcomes: dict[str, tuple[str, str]]) -> None:
    if not outcomes:
        return
    kinds = ("complete", "clear-error", "violation")
    factors = (("reader", READERS), ("endpoint", ENDPOINTS), ("kind", KINDS), ("phase", PHASES))
    counts: dict[tuple[str, str], Counter] = {}
    for cell_id, (outcome, _) in outcomes.items():
        for (factor, _), value in zip(factors, cell_id.split("-")):
            counts.setdefault((factor, value), Counter())[outcome] += 1
        counts.setdefault(("all", "cells"), Counter())[outcome] += 1
    lines = ["", f"fault matrix: {len(outcomes)} cells x outcomes",
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
    target = os.environ.get("NN_FAULTS_TABLE")
    if target:
        errors = [f"  {cid}: {detail}" for cid, (o, detail) in sorted(outcomes.items()) if o == "clear-error"]
        Path(target).write_text("\n".join(lines + ["clear errors:"] + errors) + "\n")
