"""The project's own test set-up, over the package's pytest plugin (neon_notebook/testing/plugin.py).

The plugin gives the database (a local compute, or ``--neon-url``) and marks the
tests using it ``db``; here are the short names our tests use, the project's own
markers, and the run's hygiene: every server under one directory, none left after.
"""

from __future__ import annotations

import os
import tempfile

import pytest

from neon_notebook.local.binaries import PGBOUNCER_INSTALL_HINT, find_pgbouncer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Every compute of this run (subprocesses too) lives under one directory, so the
# leftover check below sees this run's servers only, not a neighbour's.
RUN_DIR = tempfile.mkdtemp(prefix="nn-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = RUN_DIR


@pytest.fixture(scope="session")
def compute(neon_compute):
    """The shared compute (never suspends on its own); skips under --neon-url."""
    return neon_compute


@pytest.fixture(scope="session")
def direct_url(neon_direct_url):
    return neon_direct_url


@pytest.fixture(scope="session")
def pooled_url(neon_pooled_url):
    return neon_pooled_url


@pytest.fixture
def conn(direct_url):
    """A plain psycopg connection to the direct endpoint: autocommit, nothing prepared."""
    from readers_support import connect_raw

    with connect_raw(direct_url) as c:
        yield c


@pytest.fixture
def make_compute(neon_make_compute):
    """Factory for computes with their own lifecycle settings, closed after the test."""
    return neon_make_compute


@pytest.fixture
def make_session(neon_make_session):
    """Factory ``make(url=None, **connect_kwargs)`` for sessions closed after the test."""
    return neon_make_session


@pytest.fixture(scope="session")
def pgbouncer():
    """PgBouncer's path (None under --neon-url); asking for it marks a test ``pgbouncer``."""
    return find_pgbouncer()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Tests asking for ``pgbouncer`` need the pooler (runs before the plugin's marking)."""
    for item in items:
        if "pgbouncer" in getattr(item, "fixturenames", ()):
            item.add_marker("pgbouncer")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Under CI=true a test needing PgBouncer fails when it is missing, instead of skipping."""
    local = item.config.getoption("neon_url") is None and item.config.getoption("neon_direct_url") is None
    if IN_CI and local and item.get_closest_marker("pgbouncer") and find_pgbouncer() is None:
        pytest.fail(f"PgBouncer is not installed: {PGBOUNCER_INSTALL_HINT}")


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


@pytest.fixture(params=["pooled", "direct"])
def endpoint(request):
    """Each test once through PgBouncer (pooled) and once on the direct endpoint."""
    return request.param
