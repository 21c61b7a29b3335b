"""Fixtures: the suite starts its own local compute (real PostgreSQL + PgBouncer).

``compute`` is one shared compute that never suspends on its own; tests of the
lifecycle make their own with ``make_compute``. After the run, no server process
or listening port of ours may remain.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from neon_notebook.local import LocalCompute
from neon_notebook.local.binaries import PGBOUNCER_INSTALL_HINT, find_pgbouncer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Every compute of this run (subprocesses too) lives under one directory, so the
# leftover check below sees this run's servers only, not a neighbour's.
RUN_DIR = tempfile.mkdtemp(prefix="nn-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = RUN_DIR


@pytest.fixture(scope="session")
def compute():
    with LocalCompute(suspend_after=None, start_active=True) as c:
        yield c


@pytest.fixture(scope="session")
def direct_url(compute):
    return compute.direct_url


@pytest.fixture(scope="session")
def pooled_url(compute, pgbouncer):
    return compute.pooled_url


@pytest.fixture(scope="session")
def pgbouncer():
    """PgBouncer's path; a test needing it fails under CI=true when it is missing."""
    path = find_pgbouncer()
    if path is None:
        message = f"PgBouncer is not installed: {PGBOUNCER_INSTALL_HINT}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def make_compute():
    """Factory for computes with their own lifecycle settings, closed after the test."""
    made: list[LocalCompute] = []

    def make(**kwargs) -> LocalCompute:
        kwargs.setdefault("monitor_interval", 0.2)
        c = LocalCompute(**kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _leftovers() -> list[str]:
    """Servers under this run's directory, and any process this run started."""
    import psutil

    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (RUN_DIR in cmd or proc.info["pid"] in ours):
            found.append(f"process {proc.info['pid']}: {cmd[:120]}")
    return found


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Crash, restart and close must leave no server process behind."""
    import time

    deadline = time.monotonic() + 10
    while (left := _leftovers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        print("\nLeft behind by the test run:\n  " + "\n  ".join(left))
        session.exitstatus = 1
    else:
        import shutil

        shutil.rmtree(RUN_DIR, ignore_errors=True)
