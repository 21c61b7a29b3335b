"""Cold starts through Session: success, attempts, and the overhead the session adds.

For each activation delay, suspends a local compute and times
`session.connection()` + first row against the delay, with Prisma's short
connect timeout (5 s) and with libpq's shortest (2 s, which forces retries for
longer delays). Overhead = time to first row - activation delay - the server's
own start.

    python benchmarks/bench_cold_start.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import neon_notebook as nn
from neon_notebook.local import LocalCompute

DELAYS = (0.3, 0.5, 1.0, 2.0, 4.0, 8.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connect-timeouts", type=float, nargs="+", default=[5.0, 2.0])
    args = parser.parse_args()
    print("| connect_timeout s | activation delay s | cold starts ok | attempts (median, max) "
          "| first row s (median) | overhead ms (median, max) |\n|---|---|---|---|---|---|")
    for connect_timeout in args.connect_timeouts:
        for delay in DELAYS:
            ok, attempts, firsts, overheads = 0, [], [], []
            with LocalCompute(suspend_after=None, activation_delay=delay) as compute:
                session = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url,
                                     connect_timeout=connect_timeout, suspend_after=None)
                for _ in range(args.repeat):
                    compute.suspend()
                    session.close()
                    session = nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url,
                                         connect_timeout=connect_timeout, suspend_after=None)
                    started = time.perf_counter()
                    try:
                        report = session.warm_up()
                        with session.connection() as conn:
                            conn.execute("select 1").fetchone()
                    except nn.ConnectError as exc:
                        print(f"  failed: {exc}")
                        continue
                    first = time.perf_counter() - started
                    ok += 1
                    attempts.append(report.attempts)
                    firsts.append(first)
                    overheads.append(first - compute.last_wake_seconds)
                session.close()
            print(f"| {connect_timeout:g} | {delay:g} | {ok}/{args.repeat} | "
                  f"{statistics.median(attempts):g}, {max(attempts)} | {statistics.median(firsts):.2f} | "
                  f"{statistics.median(overheads) * 1e3:.0f}, {max(overheads) * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
