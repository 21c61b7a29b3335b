"""The binary COPY encoder alone: ours (neon_notebook.writers) vs pgpq, then end to end.

One process, one local compute, the 1M-row mixed table of bench_readers.py
(int4 x2, float8, text x2 with NULLs, timestamptz, bool, numeric(12,2), date)
read into Arrow once.  First the encoding alone, 64k-row batches into bytes:
ours and pgpq's (both streams are compared byte for byte).  Then the COPY
into an empty table, interleaved `--repeat` times: psql's `\\copy t from FILE
(format binary)` of a file PostgreSQL wrote (the floor), our encoder under
psycopg's `copy.write`, and pgpq's; each load checked with `EXCEPT ALL`.
Medians.  `benchmarks/bench_writers.py` compares whole writers, in their own
processes; this one isolates the encoder.

    pip install -e ".[local,bench]"
    python benchmarks/bench_encode.py [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time

import psycopg
import pyarrow as pa

from bench_readers import MIXED_SETUP

BATCH_ROWS = 65_536


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import pgpq

    from neon_notebook.local import LocalCompute
    from neon_notebook.readers import read_arrow
    from neon_notebook.writers import _pgtypes
    from neon_notebook.writers._encode import HEADER, TRAILER, Encoder

    with LocalCompute(suspend_after=None, start_active=True) as compute, \
            tempfile.TemporaryDirectory() as tmp, \
            psycopg.connect(compute.direct_url, autocommit=True) as conn:
        url = compute.direct_url
        conn.execute(MIXED_SETUP.format(rows=args.rows))
        data = read_arrow(conn, "select * from mixed order by id")
        # pgpq takes UTC timestamps; the session's zone tag changes no value
        data = data.cast(pa.schema([f.with_type(pa.timestamp("us", tz="UTC"))
                                    if pa.types.is_timestamp(f.type) else f for f in data.schema]))
        batches = data.to_batches(max_chunksize=BATCH_ROWS)
        targets = _pgtypes.create_targets(data.schema)

        def ours() -> list[bytes]:
            encoder = Encoder(data.schema, targets)
            return [HEADER, *(b for batch in batches for b in encoder.blocks(batch)), TRAILER]

        def theirs() -> list[bytes]:
            encoder = pgpq.ArrowToPostgresBinaryEncoder(data.schema)
            return [encoder.write_header(), *map(encoder.write_batch, batches), encoder.finish()]

        same = b"".join(ours()) == b"".join(theirs())
        print(f"{args.rows:,} rows, {sum(map(len, ours())) / 1e6:.1f} MB of COPY data; "
              f"the two streams are {'identical' if same else 'DIFFERENT'}")
        for name, fn in (("ours", ours), ("pgpq", theirs)):
            print(f"encode {name:5} {statistics.median(timed(fn) for _ in range(args.repeat)):.3f} s")

        conn.execute("drop table if exists t")
        conn.execute("create table t as select * from mixed limit 0")
        path = os.path.join(tmp, "mixed.bin")
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c"]
        subprocess.run([*psql, f"\\copy mixed to '{path}' (format binary)"], check=True)

        def load(blocks) -> None:
            conn.execute("truncate t")
            with conn.transaction(), conn.cursor().copy("COPY t FROM STDIN (FORMAT binary)") as copy:
                for block in blocks:
                    copy.write(block)

        def streamed_ours():
            encoder = Encoder(data.schema, targets)
            yield HEADER
            for batch in batches:
                yield from encoder.blocks(batch)
            yield TRAILER

        def streamed_pgpq():
            encoder = pgpq.ArrowToPostgresBinaryEncoder(data.schema)
            yield encoder.write_header()
            yield from map(encoder.write_batch, batches)
            yield encoder.finish()

        def floor() -> None:
            conn.execute("truncate t")
            subprocess.run([*psql, f"\\copy t from '{path}' (format binary)"], check=True)

        loads = {"psql \\copy binary (floor)": floor, "ours + psycopg copy": lambda: load(streamed_ours()),
                 "pgpq + psycopg copy": lambda: load(streamed_pgpq())}
        times: dict[str, list[float]] = {name: [] for name in loads}
        for _ in range(args.repeat):  # interleaved: the machine is shared
            for name, fn in loads.items():
                times[name].append(timed(fn))
                diff = conn.execute("select (select count(*) from (table t except all table mixed) a)"
                                    " + (select count(*) from (table mixed except all table t) b)").fetchone()[0]
                if diff:
                    raise SystemExit(f"{name}: {diff} rows differ from the source")
        floor_s = statistics.median(times["psql \\copy binary (floor)"])
        for name, ts in times.items():
            print(f"COPY {name:26} {statistics.median(ts):.3f} s  {statistics.median(ts) / floor_s:.2f}x floor")


if __name__ == "__main__":
    main()
