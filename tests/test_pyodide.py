"""The HTTP transport inside Pyodide (CPython on WebAssembly, as JupyterLite and marimo run it).

One Node process (``tests/node/pyodide_smoke.mjs``) loads the npm ``pyodide`` package
offline, mounts this repository and python-dotenv (a pure-Python dependency, as micropip
would install it), and runs an HTTP session against the run's compute through
``XhrClient``: a cold start ridden out, statements, rows, SQL errors, lost answers, a
timeout, no psycopg or pyarrow loaded. Under ``CI=true`` a missing Node or ``pyodide`` package fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.local_compute]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "node"
INSTALL_HINT = "install Node.js, then run: npm ci --ignore-scripts --no-audit --no-fund --prefix tests/node"


def _missing() -> str | None:
    """Why Pyodide cannot run here, or None."""
    if shutil.which("node") is None:
        return f"node is not installed: {INSTALL_HINT}"
    if not (NODE_DIR / "node_modules" / "pyodide" / "pyodide.asm.wasm").is_file():
        return f"tests/node/node_modules lacks pyodide: {INSTALL_HINT}"
    return None


def test_http_session_inside_pyodide(compute, pooled_url, direct_url):
    if reason := _missing():
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    import dotenv

    env = {**os.environ, "POOLED_URL": pooled_url, "DIRECT_URL": direct_url, "HTTP_URL": compute.http_url,
           "REPO": str(REPO), "PURE_PACKAGES": str(Path(dotenv.__file__).parent),
           # Neon's suspend window: the idle timer has no thread in Pyodide, the state is checked when read.
           "SUSPEND_AFTER": "300"}
    compute.suspend()
    compute.fail_next_wakes(1)  # the first request meets "Couldn't connect to compute node" (500)
    wakes = compute.wakes
    try:
        proc = subprocess.run(["node", "pyodide_smoke.mjs"], cwd=NODE_DIR, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"Pyodide hung for 120 s:\n{exc.stdout or ''}{exc.stderr or ''}")
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "PYODIDE-SMOKE-OK" in proc.stdout, report
    assert compute.wakes > wakes
    print(report)
