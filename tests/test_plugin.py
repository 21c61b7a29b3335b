"""The pytest plugin (neon_notebook/testing/plugin.py) as a user meets it: in a project of their own.

Each test writes a small project to ``tmp_path`` (its own test files, no conftest
of ours) and runs pytest on it in a subprocess, so the plugin is found through
the installed ``pytest11`` entry point, as in a user's suite.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

USER_TESTS = '''
import psycopg


def test_a_session_reads(neon_session):
    assert neon_session.read_arrow("select 42 as answer").to_pylist() == [{"answer": 42}]


def test_both_endpoints(neon_direct_url, neon_pooled_url):
    for url in (neon_direct_url, neon_pooled_url):
        with psycopg.connect(url, prepare_threshold=None) as conn:
            assert conn.execute("select 1").fetchone() == (1,)


def test_the_compute_suspends_and_the_session_wakes_it(neon_compute, neon_session):
    neon_compute.suspend()
    assert neon_compute.state == "suspended"
    assert neon_session.read_pandas("select 7 as n")["n"].tolist() == [7]
    assert neon_compute.state == "active"


def test_a_wrong_answer_fails(neon_session):
    assert neon_session.read_arrow("select 1 as one").to_pylist() == [{"one": 2}]


def test_needs_no_database():
    assert 1 + 1 == 2
'''

SNEAKY_TESTS = '''
def test_asks_for_a_session_at_run_time(request):
    request.getfixturevalue("neon_session")
'''


def run_project(root: Path, files: dict[str, str], *args: str, env: dict[str, str] | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """pytest on a fresh project of ``files`` under ``root``, in a subprocess; none of our config.

    Each test's outcome is in ``root / "report.xml"`` (see ``results``)."""
    (root / "pytest.ini").write_text("[pytest]\n")  # the project's own rootdir, not ours
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEON_TEST_") and k != "PYTEST_ADDOPTS"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--junitxml={root / 'report.xml'}", *args],
                          cwd=root, env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def outcomes(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The counts in pytest's last summary line: {'passed': 3, 'failed': 1, ...}."""
    last = proc.stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def results(root: Path) -> dict[str, tuple[str, str]]:
    """Test name -> (outcome, message) from the run's JUnit report: passed, failed, error, skipped."""
    found = {}
    for case in ElementTree.parse(root / "report.xml").iter("testcase"):
        verdict = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if verdict is None else {"failure": "failed"}.get(verdict.tag, verdict.tag)
        found[case.get("name")] = (outcome, "" if verdict is None else verdict.get("message", ""))
    return found


@pytest.mark.db  # the project starts a local compute of its own
def test_a_user_project_uses_the_fixtures_and_can_fail(tmp_path):
    proc = run_project(tmp_path, {"test_user.py": USER_TESTS, "test_sneaky.py": SNEAKY_TESTS})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert outcomes(proc) == {"passed": 4, "failed": 2}, proc.stdout
    got = results(tmp_path)
    assert got["test_a_wrong_answer_fails"][0] == "failed"
    assert {name for name, (outcome, _) in got.items() if outcome == "passed"} == {
        "test_a_session_reads", "test_both_endpoints", "test_the_compute_suspends_and_the_session_wakes_it",
        "test_needs_no_database"}
    # A test not marked db that starts the database fails (test_sneaky.py runs first;
    # the database it started serves test_user.py's tests).
    assert "uses the database without the db marker" in got["test_asks_for_a_session_at_run_time"][1]


@pytest.mark.db  # the sneaky test does start the project's local compute, to be failed for it
def test_the_unit_tier_deselects_the_database_tests_and_fails_a_sneaky_one(tmp_path):
    started = time.monotonic()
    proc = run_project(tmp_path, {"test_user.py": USER_TESTS, "test_sneaky.py": SNEAKY_TESTS}, "-m", "not db")
    assert outcomes(proc) == {"failed": 1, "passed": 1, "deselected": 4}, proc.stdout
    got = results(tmp_path)
    assert got["test_needs_no_database"][0] == "passed"
    assert got["test_asks_for_a_session_at_run_time"][0] == "failed"
    assert "uses the database without the db marker" in got["test_asks_for_a_session_at_run_time"][1]
    assert time.monotonic() - started < 60


MANY_DB_TESTS = '''
import pytest


@pytest.mark.parametrize("i", range(40))
def test_reads(neon_session, i):
    assert neon_session.read_arrow("select 1 as one").num_rows == 1


def test_compute(neon_compute):
    pass
'''


def _failing_initdb(root: Path) -> Path:
    """A directory of PostgreSQL 'binaries' whose initdb fails, as on a broken install."""
    bin_dir = root / "broken-bin"
    bin_dir.mkdir()
    for name in ("postgres", "initdb", "pg_ctl"):
        path = bin_dir / name
        path.write_text("#!/bin/sh\necho 'initdb: error: simulated broken install' >&2\nexit 1\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    root.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("broken", ["missing binaries", "failing initdb"])
def test_a_compute_that_cannot_start_ends_the_run_once(tmp_path, broken):
    project = tmp_path / "project"
    project.mkdir()
    pg_bin = tmp_path / "nowhere" if broken == "missing binaries" else _failing_initdb(tmp_path)
    started = time.monotonic()
    proc = run_project(project, {"test_many.py": MANY_DB_TESTS}, "--neon-pg-bin", str(pg_bin))
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    said = "the local compute for the database tests could not start"
    assert proc.stdout.count(said) == 1, proc.stdout  # once, not one error per test
    assert "--neon-pg-bin" in proc.stdout and "--neon-url" in proc.stdout  # what to do
    assert ("no `postgres` binary" if broken == "missing binaries" else "PostgreSQL") in proc.stdout
    assert " error" not in proc.stdout.strip().splitlines()[-1], proc.stdout  # no per-test errors
    assert took < 60


REMOTE_TESTS = '''
import psycopg


def test_a_session_reads(neon_session):
    assert neon_session.read_arrow("select 42 as answer").to_pylist() == [{"answer": 42}]


def test_on_the_given_database(neon_direct_url, given):
    assert neon_direct_url == given


def test_pooled(neon_pooled_url):
    with psycopg.connect(neon_pooled_url, prepare_threshold=None) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_fault_controls(neon_compute):
    neon_compute.crash()


def test_own_computes(neon_make_compute):
    neon_make_compute()
'''

REMOTE_CONFTEST = '''
import os
import pytest


@pytest.fixture
def given():
    return os.environ["GIVEN_DIRECT"]
'''


def test_neon_url_runs_the_database_tests_there_and_skips_the_local_compute_ones(direct_url, tmp_path):
    """--neon-url at a database that is not a LocalCompute of the run (the shared compute's
    direct endpoint, as a plain Postgres): the db tests run on it, the local ones skip."""
    proc = run_project(tmp_path, {"test_remote.py": REMOTE_TESTS, "conftest.py": REMOTE_CONFTEST},
                       "--neon-url", direct_url, env={"GIVEN_DIRECT": direct_url})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes(proc) == {"passed": 2, "skipped": 3}, proc.stdout
    got = results(tmp_path)
    assert got["test_a_session_reads"][0] == got["test_on_the_given_database"][0] == "passed"
    for test in ("test_fault_controls", "test_own_computes"):
        outcome, reason = got[test]
        assert outcome == "skipped" and "needs the local compute's controls" in reason
        assert "this run uses --neon-url" in reason
    assert got["test_pooled"][0] == "skipped"
    assert "give both (--neon-url POOLED --neon-direct-url DIRECT)" in got["test_pooled"][1]


def test_a_pooled_and_direct_pair_from_the_environment(direct_url, pooled_url, tmp_path):
    """NEON_TEST_URL / NEON_TEST_DIRECT_URL as Prisma's DATABASE_URL / DIRECT_URL: pooled tests run too."""
    proc = run_project(tmp_path, {"test_remote.py": REMOTE_TESTS, "conftest.py": REMOTE_CONFTEST},
                       env={"NEON_TEST_URL": pooled_url, "NEON_TEST_DIRECT_URL": direct_url,
                            "GIVEN_DIRECT": direct_url})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes(proc) == {"passed": 3, "skipped": 2}, proc.stdout
    got = results(tmp_path)
    assert got["test_pooled"][0] == "passed"
    assert [got[t][0] for t in ("test_fault_controls", "test_own_computes")] == ["skipped", "skipped"]


def test_an_unreachable_neon_url_ends_the_run_once_without_the_password(tmp_path):
    url = "postgresql://alice:Sekret-pw-42@no-such-host.invalid/db"  # a host that cannot exist (RFC 2606)
    proc = run_project(tmp_path, {"test_many.py": MANY_DB_TESTS}, env={"NEON_TEST_URL": url})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.count("the database given by --neon-url cannot be reached") == 1, proc.stdout
    assert "Sekret-pw-42" not in proc.stdout + proc.stderr


HEAVY = ("psycopg", "psycopg_pool", "pyarrow", "pandas", "polars", "numpy", "neon_notebook.local",
         "neon_notebook.session")


def test_the_plugin_imports_nothing_heavy_in_a_run_that_uses_no_fixture(tmp_path):
    """It is loaded in every pytest run of anyone who installs the package."""
    proc = run_project(tmp_path, {"test_plain.py": f'''
        import sys

        def test_nothing_heavy_was_imported(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("neon_notebook")  # loaded...
            assert sorted(m for m in sys.modules if m in {HEAVY!r}) == []  # ...and light
        '''})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_entry_point_is_installed():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="pytest11")}
    assert found.get("neon_notebook") == "neon_notebook.testing.plugin"


FAKE_PW = "pw"  # made-up credentials: nothing connects with them
NEON_POOLED = f"postgresql://alice:{FAKE_PW}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech:5432/neondb?sslmode=require"
NEON_DIRECT = f"postgresql://alice:{FAKE_PW}@ep-cool-darkness-123456.us-east-2.aws.neon.tech:5432/neondb?sslmode=require"


@pytest.mark.parametrize("url, direct_url, expected", [
    (NEON_POOLED, None, (NEON_DIRECT, NEON_POOLED)),  # Neon: the other endpoint is derived
    (NEON_DIRECT, None, (NEON_DIRECT, NEON_POOLED)),
    ("postgresql://u:pw@db.example.com/app", None, ("postgresql://u:pw@db.example.com/app", None)),
    ("postgresql://u:pw@bouncer.example.com:6432/app", "postgresql://u:pw@db.example.com/app",
     ("postgresql://u:pw@db.example.com/app", "postgresql://u:pw@bouncer.example.com:6432/app")),
], ids=["neon pooled", "neon direct", "one other url", "a pair"])
def test_the_given_urls_are_read_as_prisma_reads_them(url, direct_url, expected):
    from neon_notebook.testing._options import NO_POOLER_GIVEN, Options

    options = Options(url=url, direct_url=direct_url)
    assert options.given and options.given_endpoints() == expected
    assert options.pooler_missing() == (NO_POOLER_GIVEN if expected[1] is None else None)
