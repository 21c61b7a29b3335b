"""Helpers for the real-browser test: a throwaway JupyterLab server and the system Chromium.

The server runs from this interpreter's environment (``python -m jupyterlab``) on
127.0.0.1 with a free port and a random token, in its own process group, with its
own config, runtime, settings and workspace directories (so a developer's
``~/.jupyter`` cannot change what the test sees). ``stop()`` shuts its kernels
down through the REST API, then the server, and kills whatever is left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

#: Where Debian's ``chromium`` package puts the browser.
SYSTEM_CHROMIUM = "/usr/bin/chromium"

#: Flags Chromium needs here: root (no sandbox), no GPU, and no background
#: connections (the closed network refuses them, which stalls the browser).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CHROMIUM_INSTALL_HINT = (
    "install Chromium from the OS package (Debian/Ubuntu: `apt-get install -y chromium`, "
    "which provides /usr/bin/chromium) or set NEON_NOTEBOOK_CHROMIUM to a Chromium binary; "
    "Playwright's own browser download is not used"
)
PLAYWRIGHT_INSTALL_HINT = "install the test extra: `pip install -e '.[test]'` (it provides playwright)"

#: Settings written into the server's own user-settings directory.
LAB_SETTINGS = {
    # Render every cell (no virtual scrolling): outputs far down stay in the DOM
    # and the final screenshot shows the whole notebook.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No news or update checks: the network is closed and the toast would cover cells.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

#: A connection URL with its password in clear: ``scheme://user:password@``.
URL_WITH_PASSWORD = re.compile(r"\b(?:postgres(?:ql)?(?:\+\w+)?)://([^\s:/@'\"<>]*):([^\s@'\"<>]*)@", re.I)


def find_chromium() -> str | None:
    """The system Chromium (``NEON_NOTEBOOK_CHROMIUM`` wins), or None."""
    candidates = [os.environ.get("NEON_NOTEBOOK_CHROMIUM"), SYSTEM_CHROMIUM,
                  shutil.which("chromium"), shutil.which("chromium-browser")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def leaked_passwords(text: str) -> list[str]:
    """Every ``scheme://user:password@`` in ``text`` whose password is not masked."""
    return [m.group(0) for m in URL_WITH_PASSWORD.finditer(text) if m.group(2) and set(m.group(2)) != {"*"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """A JupyterLab server serving ``root_dir``; use as a context manager."""

    def __init__(self, root_dir: Path, home: Path, env: dict[str, str], log_path: Path) -> None:
        self.root_dir, self.home, self.log_path = Path(root_dir), Path(home), Path(log_path)
        self.env = dict(env)
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._descendants: dict[int, psutil.Process] = {}

    # -- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> JupyterLab:
        config, runtime, data = self.home / "config", self.home / "runtime", self.home / "data"
        settings, workspaces = self.home / "settings", self.home / "workspaces"
        for d in (config, runtime, data, settings, workspaces):
            d.mkdir(parents=True, exist_ok=True)
        for name, values in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**self.env, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime),
               "JUPYTER_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.open_browser=False",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={workspaces}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.shutdown_no_activity_timeout=600",  # an orphaned server ends itself
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer /api/status in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Shut the kernels and the server down, then kill anything of theirs still alive."""
        if self.proc is None:
            return
        self._remember_descendants()
        if self.proc.poll() is None:
            try:
                for kernel in self.api("GET", "/api/kernels", timeout=5):
                    self._remember_descendants()
                    self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=20)
            except (OSError, urllib.error.URLError, ValueError):
                pass
            try:
                self.api("POST", "/api/shutdown", timeout=10)
            except (OSError, urllib.error.URLError, ValueError):
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._kill_group(signal.SIGKILL)
                    self.proc.wait(timeout=5)
        # Kernels run in their own sessions: whatever survived the shutdown goes now.
        alive = [p for p in self._descendants.values() if _alive(p)]
        for p in alive:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(alive, timeout=5)
        for p in still:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(still, timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------
    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str, timeout: float = 10.0):
        request = urllib.request.Request(self.base_url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        if method in ("POST", "PUT", "PATCH"):
            request.data = b""
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _remember_descendants(self) -> None:
        if self.proc is None:
            return
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self._descendants.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _kill_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
