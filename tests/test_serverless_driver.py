"""Neon's own clients against the local compute's HTTP and WebSocket endpoints.

The official ``@neondatabase/serverless`` driver and Prisma 7 with ``@prisma/adapter-neon``
(pinned in ``tests/node/package-lock.json``, installed by ``.ci/run``) run their checks
in Node (``tests/node/*.test.*``, ``node:test``), comparing every result with
node-postgres over TCP on the compute's direct endpoint. One Node process per group
(HTTP, WebSocket, Prisma) keeps this file cheap; a failure shows Node's own report.
Under ``CI=true`` a missing Node, npm or ``npm ci`` fails these tests; elsewhere they skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from neon_notebook.local import LocalCompute

pytestmark = [pytest.mark.local_compute, pytest.mark.pgbouncer]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL_HINT = "install Node.js and npm, then run: npm ci --ignore-scripts --no-audit --no-fund --prefix tests/node"


def _missing() -> str | None:
    """Why the Node tests cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: {INSTALL_HINT}"
    for package in ("@neondatabase/serverless", "pg", "ws", "prisma", "@prisma/client", "@prisma/adapter-neon", "tsx"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return f"tests/node/node_modules lacks {package}: {INSTALL_HINT}"
    return None


@pytest.fixture(scope="module")
def node_compute(pgbouncer):
    """A compute of this module's own, and the environment that points the Node tests at it."""
    if reason := _missing():
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    with LocalCompute(suspend_after=None, start_active=True) as compute:
        yield compute, {
            **os.environ,
            **compute.env(),  # DATABASE_URL (pooled, ?pgbouncer=true) as a Prisma project has it
            "DIRECT_URL": compute.direct_url,
            "POOLED_URL": compute.pooled_url,
            "HTTP_URL": compute.http_url,
            "WS_PROXY": compute.ws_proxy,
            "TZ": "UTC",
            "CHECKPOINT_DISABLE": "1",  # Prisma's update check: never phone home
            "NO_COLOR": "1",
        }


def _node(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run Node in tests/node; its exit status is the verdict, its output the report."""
    try:
        return subprocess.run(
            ["node", *args], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"node {' '.join(args)} hung for {timeout} s:\n{exc.stdout or ''}{exc.stderr or ''}")


def _assert_passed(proc: subprocess.CompletedProcess) -> None:
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"node exited with {proc.returncode}:\n{report}"
    assert "# fail 0" in report, report  # node:test's summary: no test failed, none were lost


@pytest.fixture
def node_env(node_compute):
    return node_compute[1]


def test_driver_over_http(node_env):
    """neon(): sampleQueries, options, transactions, errors, cancel, auth, vs pg over TCP."""
    _assert_passed(_node(node_env, "--test-reporter=tap", "http.test.mjs"))


def test_driver_over_websocket(node_env):
    """Pool and Client: sampleQueries on direct and pooled, connect modes, transactions, poolQueryViaFetch."""
    _assert_passed(_node(node_env, "--test-reporter=tap", "ws.test.mjs"))


def test_prisma_with_neon_adapter(node_env):
    """Prisma 7, generated offline here, over PrismaNeon (WebSocket) and PrismaNeonHttp (HTTP)."""
    started = time.monotonic()
    generate = subprocess.run(
        [str(NODE_DIR / "node_modules" / ".bin" / "prisma"), "generate"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False,
        # generate never runs the schema engine, but the CLI insists one exists: any executable will do
        env={**node_env, "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/true"},
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr
    print(f"prisma generate: {time.monotonic() - started:.1f} s")
    _assert_passed(_node(node_env, "--import", "tsx", "--test-reporter=tap", "prisma.test.ts"))


def test_driver_rides_cold_starts(node_compute):
    """Both paths wake a suspended compute and wait for it; a wrong password on either wakes nothing."""
    compute, env = node_compute
    compute.suspend()
    wakes = compute.wakes
    _assert_ran(_node(env, "wake.mjs", "refused"))
    assert (compute.state, compute.wakes) == ("suspended", wakes)
    for step in ("http", "ws"):
        _assert_ran(_node(env, "wake.mjs", step))
        assert compute.wakes == wakes + 1, step
        wakes += 1
        compute.suspend()


def _assert_ran(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"node exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}"
