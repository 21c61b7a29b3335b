"""Soak: threads sharing one Session under random suspensions, crashes, cuts and latency.

    python benchmarks/soak.py --seconds 60 --threads 4

Reader threads loop random reads (every reader, both endpoints) of a known table,
each checked against its expected row count and checksum; a writer thread inserts
unique tokens through ``session.connection()`` (writes are never retried, so each
token must be in the table at most once, and exactly once when acknowledged);
a chaos thread injects faults into the local compute. Prints reads attempted,
complete and correct, clear errors by kind, wrong results, partial results passed
off as whole, and the writes' figures. Exits 1 if any result was wrong or partial,
any write duplicated or an acknowledged one lost, or any error was not a clear one.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

import psycopg

import neon_notebook as nn
from neon_notebook.local import LocalCompute

ROWS = 20_000
QUERIES = (
    "select * from soak_items",
    "select * from soak_items where i <= 1500",
    "select * from soak_items where i % 3 = 0",
)
READERS = ("read_arrow", "read_text", "read_pandas", "read_polars", "iter_batches", "to_parquet", "rows")
FAULTS = ("suspend", "crash", "cut", "latency", "wake_fail")

SCHEMA = f"""
create table soak_items (i int primary key, label text, score float8, ts timestamptz,
                         amount numeric(12,2), flag bool);
insert into soak_items
select i, case when i % 7 = 0 then null else md5(i::text) end, i * 0.25,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
       (i * 1.01)::numeric(12,2), case when i % 11 = 0 then null else i % 3 = 0 end
from generate_series(1, {ROWS}) as i;
create table soak_writes (id bigserial primary key, token text not null);
analyze soak_items;
"""


def checksum(rows) -> str:
    """Order-sensitive digest of rows of plain Python values (timestamps as UTC epoch µs)."""
    h = hashlib.sha256()
    for row in rows:
        h.update(repr(tuple(_plain(v) for v in row)).encode())
    return h.hexdigest()[:16]


def _plain(v):
    if v is None or type(v).__name__ == "NAType" or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "timestamp"):
        return round(v.timestamp() * 1e6)
    if hasattr(v, "as_tuple"):  # Decimal
        return str(v)
    return v.item() if hasattr(v, "item") else v  # numpy scalars as Python's


def _frame_rows(df):
    return list(df.astype(object).itertuples(index=False, name=None))


class Soak:
    def __init__(self, compute: LocalCompute, seconds: float, threads: int, seed: int,
                 verbose: bool = False, readers: tuple[str, ...] = READERS) -> None:
        self.verbose, self.readers = verbose, readers
        self.compute, self.seconds, self.threads = compute, seconds, threads
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reads = Counter()
        self.errors = {"read": Counter(), "write": Counter()}
        self.wrong: list[str] = []
        self.partial: list[str] = []
        self.unclear: list[str] = []
        self.examples: dict[str, str] = {}  # one traceback per error kind, for --verbose
        self.faults = Counter()
        self.writes = {"attempted": 0, "acknowledged": 0, "unclear": 0}
        self.acknowledged: set[str] = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="nn-soak-"))
        env = compute.env()
        self.session = nn.connect(env["DATABASE_URL"], direct_url=compute.direct_url, suspend_after=None,
                                  wake_timeout=15, pool_size=threads + 2)
        with psycopg.connect(compute.direct_url) as conn:
            self.oracle = {q: conn.execute(q + " order by i").fetchall() for q in QUERIES}
        self.expected = {q: (len(rows), checksum(rows)) for q, rows in self.oracle.items()}

    # -- readers --------------------------------------------------------------------------
    def _read(self, reader: str, query: str, direct: bool, rng: random.Random) -> list[tuple]:
        """The rows of one read by ``reader``."""
        s = self.session
        text = query + " order by i"
        if reader == "read_arrow":
            return [tuple(r.values()) for r in s.read_arrow(text, direct=direct, progress=False).to_pylist()]
        if reader == "read_text":  # COPY's text format
            table = s.read_arrow(text, direct=direct, progress=False, copy_format="text")
            return [tuple(r.values()) for r in table.to_pylist()]
        if reader == "read_pandas":
            return _frame_rows(s.read_pandas(text, direct=direct, progress=False))
        if reader == "read_polars":
            return s.read_polars(text, direct=direct, progress=False).rows()
        if reader == "iter_batches":
            rows = []
            for batch in s.iter_batches(text, batch_rows=rng.choice((500, 5000, 100_000)), direct=direct,
                                        progress=False):
                rows.extend(tuple(r.values()) for r in batch.to_pylist())
            return rows
        if reader == "to_parquet":
            import pyarrow.parquet as pq

            path = self.tmp / f"{threading.get_ident()}.parquet"
            try:
                n = s.to_parquet(text, path, direct=direct, progress=False)
            except BaseException:
                if path.exists():
                    self._record(self.partial, f"to_parquet raised but left {path.name}")
                raise
            rows = [tuple(r.values()) for r in pq.read_table(path).to_pylist()]
            path.unlink()
            if n != len(rows):
                self._record(self.wrong, f"to_parquet said {n} rows, the file holds {len(rows)}")
            return rows
        # the row path: several statements
        return [tuple(r.values()) for r in s.read_arrow("select 1 as warmup; " + text, direct=direct,
                                                        progress=False).to_pylist()]

    def _record(self, where: list[str], what: str) -> None:
        with self.lock:
            where.append(what)

    def reader_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            reader, query, direct = rng.choice(self.readers), rng.choice(QUERIES), rng.random() < 0.5
            label = f"{reader}/{'direct' if direct else 'pooled'}"
            with self.lock:
                self.reads["attempted"] += 1
            try:
                rows = self._read(reader, query, direct, rng)
            except Exception as exc:
                self._error(exc, label, "read")
                continue
            count, digest = self.expected[query]
            if len(rows) == count and checksum(rows) == digest:
                with self.lock:
                    self.reads["complete and correct"] += 1
            elif len(rows) < count and checksum(rows) == checksum(self.oracle[query][:len(rows)]):
                self._record(self.partial, f"{label}: {len(rows)} of {count} rows, no error")
            else:
                self._record(self.wrong, f"{label}: {len(rows)} rows (expected {count}), checksum differs")

    def _error(self, exc: BaseException, label: str, what: str) -> None:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = re.sub(r"\d[\d,.]*", "N", message)[:70]
        clear = isinstance(exc, nn.NeonError) or (
            isinstance(exc, psycopg.OperationalError) and reason.lower() not in
            ("the connection is closed", "the connection is lost", ""))
        with self.lock:
            kind = f"{type(exc).__name__}: {reason}"
            self.errors[what][kind] += 1
            self.examples.setdefault(kind, "".join(traceback.format_exception(exc, limit=-4)))
            if not clear:
                self.unclear.append(f"{label}: {type(exc).__name__}: {message[:120]}")

    # -- the writer ---------------------------------------------------------------------------
    def writer_loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            token = f"w{n:07d}"
            self.writes["attempted"] += 1
            try:
                with self.session.connection() as conn:
                    conn.execute("insert into soak_writes (token) values (%s)", [token])
            except Exception as exc:
                self.writes["unclear"] += 1
                self._error(exc, "writer", "write")
            else:
                self.writes["acknowledged"] += 1
                self.acknowledged.add(token)
            time.sleep(0.01)

    # -- chaos ---------------------------------------------------------------------------------
    def chaos_loop(self) -> None:
        rng, c = self.rng, self.compute
        while not self.stop.wait(rng.uniform(0.5, 2.0)):
            fault = rng.choice(FAULTS)
            self.faults[fault] += 1
            try:
                if fault == "suspend":
                    c.suspend()
                elif fault == "crash":
                    c.crash()
                elif fault == "wake_fail":
                    c.fail_next_wakes(rng.randint(1, 2))
                    c.suspend()
                elif fault == "cut":
                    c.cut_after(rng.randint(100, 1_500_000), endpoint=rng.choice(("direct", "pooled", "both")))
                    self.stop.wait(rng.uniform(0.3, 1.5))
                    c.cut_after(None)
                else:
                    c.latency(rng.uniform(0.002, 0.03))
                    self.stop.wait(rng.uniform(0.5, 2.0))
                    c.latency(0)
            except Exception as exc:  # the control channel must not end the soak
                self.faults[f"failed to inject {fault}: {type(exc).__name__}"] += 1

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> int:
        workers = [threading.Thread(target=self.reader_loop, args=(self.rng.random(),), name=f"soak-reader-{i}")
                   for i in range(self.threads)]
        workers.append(threading.Thread(target=self.writer_loop, name="soak-writer"))
        chaos = threading.Thread(target=self.chaos_loop, name="soak-chaos")
        started = time.monotonic()
        for t in workers + [chaos]:
            t.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        chaos.join()
        for t in workers:
            t.join(120)
        elapsed = time.monotonic() - started
        c = self.compute
        c.cut_after(None)
        c.latency(0)
        c.fail_next_wakes(0)
        stats = self.session.pool_stats()
        with psycopg.connect(c.direct_url) as conn:  # wakes the compute if the last fault left it down
            counts = dict(conn.execute("select token, count(*) from soak_writes group by token").fetchall())
        self.session.close()
        duplicated = sorted(t for t, n in counts.items() if n > 1)
        lost = sorted(self.acknowledged - set(counts))
        leftover = sorted(p.name for p in self.tmp.iterdir())
        shutil.rmtree(self.tmp, ignore_errors=True)
        return self.report(elapsed, stats, counts, duplicated, lost, leftover)

    def report(self, elapsed, stats, counts, duplicated, lost, leftover) -> int:
        print(f"soak: {elapsed:.0f} s, {self.threads} reader threads + 1 writer sharing one Session, "
              f"{ROWS:,}-row table, faults every 0.5-2 s")
        print("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())))
        print(f"reads attempted:               {self.reads['attempted']}")
        print(f"  complete and correct:        {self.reads['complete and correct']}")
        unclear_reads = len([u for u in self.unclear if not u.startswith("writer")])
        print(f"  clear errors:                {sum(self.errors['read'].values()) - unclear_reads}")
        print(f"  wrong results:               {len(self.wrong)}")
        print(f"  partial passed off as whole: {len(self.partial)}")
        print(f"  unclear errors:              {unclear_reads}")
        for what in ("read", "write"):
            print(f"{what} errors by kind:")
            for kind, n in self.errors[what].most_common():
                print(f"  {n:5}  {kind}")
        w = self.writes
        print(f"writes attempted {w['attempted']}, acknowledged {w['acknowledged']}, raised {w['unclear']}; "
              f"tokens in the table {len(counts)} (acknowledged {len(self.acknowledged & set(counts))}, "
              f"unacknowledged but written {len(set(counts) - self.acknowledged)})")
        print(f"duplicated writes:             {len(duplicated)}")
        print(f"acknowledged writes lost:      {len(lost)}")
        print(f"pools at the end: {stats}; files left: {leftover}")
        for title, items in (("WRONG", self.wrong), ("PARTIAL", self.partial), ("UNCLEAR", self.unclear),
                             ("DUPLICATED", duplicated), ("LOST", lost)):
            for item in items[:10]:
                print(f"{title}: {item}")
        if self.verbose:
            for kind, text in self.examples.items():
                print(f"--- {kind}\n{text}")
        failed = self.wrong or self.partial or duplicated or lost or self.unclear or leftover
        return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--threads", type=int, default=4, help="reader threads (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    parser.add_argument("--verbose", action="store_true", help="print one traceback per error kind")
    parser.add_argument("--readers", default=",".join(READERS),
                        help=f"comma-separated readers to use (default: all of {','.join(READERS)})")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.threads < 1:
        parser.error("--seconds must be > 0 and --threads >= 1")
    readers = tuple(r for r in args.readers.split(",") if r)
    if not readers or set(readers) - set(READERS):
        parser.error(f"--readers takes some of {','.join(READERS)}")
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"seed {seed}")
    with LocalCompute(suspend_after=None, start_active=True) as compute:
        with psycopg.connect(compute.direct_url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        return Soak(compute, args.seconds, args.threads, seed, args.verbose, readers).run()


if __name__ == "__main__":
    sys.exit(main())
