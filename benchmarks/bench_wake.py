"""How long does the embedded compute take to wake? Connect-to-first-row from suspended.

Suspends the compute, then times `psycopg.connect` + `select 1` on the direct and
pooled endpoints (no activation delay: the real server start only), against a
warm connect on an active compute. Prints medians.

    python benchmarks/bench_wake.py [--repeat 15] [--postgres-version 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from neon_notebook.local import LocalCompute


def first_row(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, connect_timeout=30, prepare_threshold=None) as conn:
        conn.execute("select 1").fetchone()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--postgres-version", type=int, default=16)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with LocalCompute(suspend_after=None, postgres_version=args.postgres_version) as compute:
        endpoints = {"direct": compute.direct_url}
        if compute.has_pooler:
            endpoints["pooled"] = compute.pooled_url
        for name, url in endpoints.items():
            cold, server, warm = [], [], []
            for _ in range(args.repeat):
                compute.suspend()
                cold.append(first_row(url))
                server.append(compute.last_wake_seconds)
                warm.append(first_row(url))
            results[f"{name}: cold connect + first row"] = cold
            results[f"{name}: of which server start"] = server
            results[f"{name}: warm connect + first row"] = warm
    print(f"PostgreSQL {args.postgres_version}, {args.repeat} wakes per endpoint\n")
    print("| measure | median ms | min ms | max ms |\n|---|---|---|---|")
    for name, ts in results.items():
        print(f"| {name} | {statistics.median(ts) * 1e3:.0f} | {min(ts) * 1e3:.0f} | {max(ts) * 1e3:.0f} |")


if __name__ == "__main__":
    main()
