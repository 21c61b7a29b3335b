"""One embedded PostgreSQL instance: initdb once, then start, fast shutdown, crash.

It listens on a Unix socket in a private directory only (no TCP port of its
own): clients reach it through the local proxy, PgBouncer and the compute
monitor through the socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import LocalComputeError

# Settings for a disposable compute; Neon's computes run in UTC.
_CONF = """
listen_addresses = ''
unix_socket_directories = '{run_dir}'
port = {port}
max_connections = 112
timezone = 'UTC'
log_timezone = 'UTC'
fsync = off
full_page_writes = off
logging_collector = off
"""


def _quoted(value: str) -> str:
    """A conninfo value in single quotes, so spaces, quotes and backslashes survive."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Postgres:
    """A PostgreSQL server process owned by the local compute."""

    def __init__(self, bin_dir: Path, data_dir: Path, run_dir: Path, password: str,
                 user: str | None, port: int = 5432) -> None:
        self.bin_dir, self.data_dir, self.run_dir = bin_dir, data_dir, run_dir
        self.password, self.user, self.port = password, user, port
        self.log_path = run_dir / "postgres.log"
        self._proc: subprocess.Popen | None = None

    @property
    def conninfo(self) -> str:
        """libpq conninfo for the server's own socket (bypassing the proxy)."""
        return (f"host={_quoted(str(self.run_dir))} port={self.port} dbname=postgres user=postgres "
                f"password={_quoted(self.password)}")

    def init(self) -> None:
        """Create the cluster with SCRAM authentication, unless it exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        pwfile = self.run_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        self._chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--pwfile", str(pwfile),
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                      "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        finally:
            pwfile.unlink()
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(_CONF.format(run_dir=self.run_dir, port=self.port))

    def start(self, timeout: float = 60.0) -> None:
        """Start the postmaster and wait until it accepts connections."""
        pidfile = self.data_dir / "postmaster.pid"
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, user=self.user,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalComputeError(f"PostgreSQL exited while starting; see {self.log_path}")
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
            time.sleep(0.005)
        self.kill()
        raise LocalComputeError(f"PostgreSQL did not start within {timeout:.0f} s; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut down: ``fast`` (SIGINT: clients get 57P01) or ``immediate`` (SIGQUIT)."""
        if not self.running:
            self._proc = None
            return
        sig = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group (last resort)."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            import shutil
            shutil.chown(path, self.user, self.user)

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / tool), *args], user=self.user,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode:
            raise LocalComputeError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")
