"""Command line: ``python -m neon_notebook demo`` and ``python -m neon_notebook local``."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading

from ._durations import is_seconds


def _local(args: argparse.Namespace) -> int:
    from .local import LocalCompute

    with LocalCompute(suspend_after=args.suspend_after, activation_delay=args.activation_delay,
                      postgres_version=args.postgres_version) as compute:
        print(f"DATABASE_URL={compute.pooled_url}" + ("" if compute.has_pooler else "  (no PgBouncer installed)"))
        print(f"DIRECT_URL={compute.direct_url}")
        print(f"HTTP_URL={compute.http_url}  WS_URL={compute.ws_url}")
        print(f"Local compute serving; suspends after {args.suspend_after:g} s idle. Ctrl-C stops it.",
              flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print(f"Stopping: {compute.wakes} wakes, {compute.suspensions} suspensions, "
              f"{compute.connections} connections.", flush=True)
    return 0


def _seconds(*, zero: bool):
    """An argparse type: a finite number of seconds, >= 0 or (``zero=False``) > 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not is_seconds(value, positive=not zero):
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds {'>=' if zero else '>'} 0, not {text!r}")
        return value
    return parse


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(suspend_after=args.suspend_after)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neon_notebook",
                                     description="Neon serverless Postgres from notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole story on a local compute: wake, load, suspend, read")
    demo.add_argument("--suspend-after", type=_seconds(zero=False), default=3.0, metavar="SECONDS")
    demo.set_defaults(func=_demo)
    local = sub.add_parser("local", help="serve a local compute that scales to zero like Neon's")
    local.add_argument("--suspend-after", type=_seconds(zero=False), default=300.0, metavar="SECONDS")
    local.add_argument("--activation-delay", type=_seconds(zero=True), default=0.0, metavar="SECONDS")
    local.add_argument("--postgres-version", type=int, default=16, choices=(16, 18))
    local.set_defaults(func=_local)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
