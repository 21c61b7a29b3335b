"""A real PgBouncer in transaction mode in front of the embedded PostgreSQL.

Configured like Neon's pooler (transaction mode, 10,000 clients, startup
``options`` refused) except for prepared statements: protocol-level prepared
statements stay off (``max_prepared_statements = 0``), as on PgBouncer < 1.21
and many self-hosted poolers, so the failure they cause can be reproduced.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import LocalComputeError

_INI = """\
[databases]
* = host={run_dir} port={pg_port}

[pgbouncer]
listen_addr =
listen_port = {port}
unix_socket_dir = {run_dir}
auth_type = scram-sha-256
auth_file = {run_dir}/userlist.txt
pool_mode = transaction
max_client_conn = 10000
default_pool_size = 64
min_pool_size = 0
ignore_startup_parameters = extra_float_digits
logfile = {run_dir}/pgbouncer.log
{extra}"""


def version(executable: Path) -> tuple[int, int]:
    """PgBouncer's (major, minor) version."""
    out = subprocess.run([str(executable), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


class PgBouncer:
    """A PgBouncer process listening on a Unix socket next to PostgreSQL's."""

    def __init__(self, executable: Path, run_dir: Path, password: str, user: str | None,
                 pg_port: int, port: int = 6432) -> None:
        self.executable, self.run_dir, self.user = executable, run_dir, user
        self.port = port
        self.socket_path = run_dir / f".s.PGSQL.{port}"
        extra = "max_prepared_statements = 0\n" if version(executable) >= (1, 21) else ""
        self.ini_path = run_dir / "pgbouncer.ini"
        self.ini_path.write_text(_INI.format(run_dir=run_dir, pg_port=pg_port, port=port, extra=extra))
        quoted = password.replace('"', '""')
        userlist = run_dir / "userlist.txt"
        fd = os.open(userlist, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # readable by its owner only
        with os.fdopen(fd, "w") as f:
            f.write(f'"postgres" "{quoted}"\n')
        if user is not None:
            shutil.chown(userlist, user, user)
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start PgBouncer and wait until its socket accepts connections."""
        self.socket_path.unlink(missing_ok=True)  # left behind by the last SIGKILL
        self._proc = subprocess.Popen(
            [str(self.executable), str(self.ini_path)], user=self.user,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalComputeError(f"PgBouncer exited while starting; see {self.run_dir}/pgbouncer.log")
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket_path))
                return
            except OSError:
                time.sleep(0.005)
        self.kill()
        raise LocalComputeError(f"PgBouncer did not start within {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL, as Neon's suspension does: pooled clients see a bare EOF."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None
