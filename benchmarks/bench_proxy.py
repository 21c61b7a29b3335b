"""Is the local compute's proxy a bottleneck? COPY throughput with and without it.

Streams a 1M-row mixed-type table with `COPY ... TO STDOUT` through psql into
/dev/null, alternating three paths in one run on the same data: PostgreSQL's own
Unix socket (no proxy), the direct endpoint (proxy), and the pooled endpoint
(proxy + PgBouncer). Prints medians and each path's throughput relative to the
server's own.

    python benchmarks/bench_proxy.py [--rows 1000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time

import psycopg

from neon_notebook.local import LocalCompute

SETUP = """
drop table if exists bench;
create table bench as
select i as id, (i % 1000)::int4 as grp, random() * 1000 as score,
       case when i % 10 = 0 then null else md5(i::text) end as label,
       case when i % 7 = 0 then null else 'note ' || (i % 97) end as note,
       timestamptz '2024-01-01' + i * interval '1 second' as ts,
       i % 2 = 0 as flag, round((random() * 10000)::numeric, 2)::numeric(12,2) as amount,
       date '2020-01-01' + (i % 1500) as day
from generate_series(1, %(rows)s) as i
"""


def psql_copy(conninfo: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(["psql", "-X", "-q", "-d", conninfo, "-c", r"\copy bench to '/dev/null'"],
                   check=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("psql") is None:
        raise SystemExit("needs the psql client (apt-get install postgresql-client)")

    with LocalCompute(suspend_after=None, start_active=True) as compute:
        with psycopg.connect(compute.direct_url, autocommit=True) as conn:
            for statement in SETUP.replace("%(rows)s", str(args.rows)).split(";"):
                conn.execute(statement)
            conn.execute("vacuum analyze bench")
            size = conn.execute("select pg_total_relation_size('bench')").fetchone()[0]
        paths = {"server socket (no proxy)": compute.server_conninfo,
                 "direct endpoint (proxy)": compute.direct_url}
        if compute.has_pooler:
            paths["pooled endpoint (proxy + PgBouncer)"] = compute.pooled_url
        env = dict(os.environ)
        times: dict[str, list[float]] = {name: [] for name in paths}
        for conninfo in paths.values():  # warm-up
            psql_copy(conninfo, env)
        for _ in range(args.repeat):
            for name, conninfo in paths.items():
                times[name].append(psql_copy(conninfo, env))

    base = statistics.median(times["server socket (no proxy)"])
    print(f"COPY {args.rows:,} rows ({size / 1e6:.0f} MB table) to /dev/null with psql, "
          f"{args.repeat} runs each, interleaved\n")
    print("| path | median s | min s | throughput vs server |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {base / med:.0%} |")


if __name__ == "__main__":
    main()
