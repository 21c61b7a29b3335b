"""``LocalCompute``: a real PostgreSQL and PgBouncer that scale to zero like Neon.

The servers and the scale-to-zero proxy live in a child process
(``neon_notebook.local.daemon``), so relaying bytes never competes with the
notebook for the interpreter lock. This object is its remote control.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import ConfigurationError, LocalComputeError
from .._durations import is_seconds
from .binaries import find_pgbouncer, postgres_bin_dir, server_dirs

Delay = float | tuple[float, float]



class LocalCompute:
    """An emulated Neon compute on this machine: direct, pooled and HTTP endpoints.

    - ``direct_url``/``pooled_url`` (TCP); ``http_url`` serves Neon's SQL over
      HTTP (``POST /sql``, as Neon's proxy: auth before the wake, a fresh session
      per request, Neon's JSON and errors, ``http_max_request_bytes`` -> 413 and
      ``http_max_response_bytes`` -> 507); ``ws_url``/``ws_proxy`` the WebSocket
      endpoint on the same port (``neonConfig.wsProxy = compute.ws_proxy``);

    - suspended until a client connects; the connection is held while PostgreSQL
      starts and for ``activation_delay`` seconds more (a number, or a
      ``(low, high)`` range drawn from at each wake);
    - suspends after ``suspend_after`` seconds without activity (a busy or
      idle-in-transaction backend, or a new connection); ``None`` never;
    - ``suspend()``, ``crash()``, ``fail_next_wakes(n)`` for tests;
    - network faults for tests, per endpoint (``"direct"``, ``"pooled"``,
      ``"both"`` = direct and pooled, ``"http"`` = HTTP and WebSocket, ``"all"``): ``cut_after(nbytes)`` shuts each new connection down once the
      client has received ``nbytes`` bytes on it, counting from its first byte
      (the proxy's start-up and SCRAM messages included), and ``latency(seconds)``
      holds back every relayed chunk, both directions, that long, in order. Both
      run in the proxy; a connection accepted while neither is set keeps the
      ``splice(2)`` fast path and is never affected. ``cut_after(None)`` and
      ``latency(0)`` clear them;
    - ``wakes``, ``suspensions``, ``connections``, ``cuts``, ``tapped_bytes``
      counters; ``status()`` adds the proxy's ``threads`` and ``fds``.
    """

    def __init__(
        self,
        *,
        suspend_after: float | None = 300.0,
        activation_delay: Delay = 0.0,
        start_active: bool = False,
        postgres_version: int = 16,
        pg_bin: str | os.PathLike | None = None,
        pgbouncer: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        password: str | None = None,
        monitor_interval: float = 0.5,
        http_max_request_bytes: int = 10 << 20,
        http_max_response_bytes: int = 10 << 20,
    ) -> None:
        self._direct_port = self._pooled_port = self._http_port = 0
        _check_lifecycle(suspend_after, activation_delay, monitor_interval)
        for name, value in (("http_max_request_bytes", http_max_request_bytes),
                            ("http_max_response_bytes", http_max_response_bytes)):
            if not _count(value, 0):
                raise ConfigurationError(f"{name} must be a number of bytes >= 0, not {value!r}")
        if password is not None and any(c in password for c in "\0\r\n"):
            raise ConfigurationError("password must be one line without NUL characters")  # as initdb reads it
        bin_dir = postgres_bin_dir(pg_bin, postgres_version)
        self._password = password or secrets.token_urlsafe(18)
        self._tmp, data, run_dir, user = server_dirs(bin_dir, "neon-local-", data_dir)
        bouncer = find_pgbouncer(pgbouncer)
        self.has_pooler = bouncer is not None
        cfg = {
            "bin_dir": str(bin_dir), "data_dir": str(data), "run_dir": str(run_dir),
            "password": self._password, "user": user,
            "pgbouncer": str(bouncer) if bouncer else None,
            "suspend_after": suspend_after, "activation_delay": activation_delay,
            "monitor_interval": monitor_interval, "start_active": start_active,
            "http_max_request_bytes": http_max_request_bytes, "http_max_response_bytes": http_max_response_bytes,
            "tmp_dir": str(self._tmp),  # the daemon removes it if this process dies
        }
        self._lock = threading.Lock()
        # The config (with the password) goes over stdin, never on a command line.
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import json,sys;from neon_notebook.local.daemon import main;"
             "main([sys.stdin.readline()])"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True,
        )
        self._proc.stdin.write(json.dumps(cfg) + "\n")
        self._proc.stdin.flush()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._tmp)
        hello = self._proc.stdout.readline()
        info = json.loads(hello) if hello else {"error": "the local compute process exited"}
        if "error" in info:
            self.close()
            raise LocalComputeError(f"the local compute failed to start: {info['error']}")
        self._direct_port, self._pooled_port = info["direct_port"], info["pooled_port"]
        self._http_port = info["http_port"]
        self.server_conninfo: str = info["server_conninfo"]
        """libpq conninfo of PostgreSQL's own socket, bypassing the proxy (benchmarks)."""

    # -- endpoints ---------------------------------------------------------
    def _url(self, port: int) -> str:
        return f"postgresql://postgres:{quote(self._password, safe='')}@127.0.0.1:{port}/postgres"

    @property
    def direct_url(self) -> str:
        """URL of the direct endpoint (straight to PostgreSQL, through the proxy)."""
        return self._url(self._direct_port)

    @property
    def pooled_url(self) -> str:
        """URL of the pooled endpoint (PgBouncer in transaction mode)."""
        return self._url(self._pooled_port)

    @property
    def http_url(self) -> str:
        """Neon's SQL-over-HTTP endpoint (``fetchEndpoint`` for the driver); either URL is its connection string."""
        return f"http://127.0.0.1:{self._http_port}/sql"

    @property
    def ws_url(self) -> str:
        """Neon's WebSocket endpoint (PostgreSQL wire protocol in binary frames)."""
        return f"ws://127.0.0.1:{self._http_port}/v2"

    @property
    def ws_proxy(self) -> str:
        """The WebSocket endpoint as the driver's ``neonConfig.wsProxy`` string (with ``useSecureWebSocket = false``)."""
        return f"127.0.0.1:{self._http_port}/v2"

    def env(self) -> dict[str, str]:
        """Prisma-style ``DATABASE_URL`` (pooled) and ``DIRECT_URL`` for this compute."""
        return {"DATABASE_URL": self.pooled_url + "?pgbouncer=true", "DIRECT_URL": self.direct_url}

    # -- control -------------------------------------------------------------
    def _call(self, cmd: str, **args: Any) -> dict:
        with self._lock:
            if self._proc.poll() is not None or self._proc.stdin.closed:
                raise LocalComputeError("the local compute is closed")
            self._proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise LocalComputeError("the local compute process exited")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise LocalComputeError(reply.get("error", "unknown error"))
        return reply

    def status(self) -> dict:
        """State and counters in one snapshot."""
        reply = self._call("status")
        return {k: v for k, v in reply.items() if k not in ("ok", "result")}

    @property
    def state(self) -> str:
        """``"suspended"``, ``"starting"`` or ``"active"``."""
        return self._call("status")["state"]

    @property
    def wakes(self) -> int:
        return self._call("status")["wakes"]

    @property
    def suspensions(self) -> int:
        return self._call("status")["suspensions"]

    @property
    def connections(self) -> int:
        """Client connections accepted on either endpoint (cancel requests excluded)."""
        return self._call("status")["connections"]

    @property
    def last_wake_seconds(self) -> float | None:
        """How long the last wake held its clients (server start + activation delay)."""
        return self._call("status")["last_wake_seconds"]

    def wake(self) -> None:
        """Start the compute now (the next connection would do it too)."""
        self._call("wake")

    def suspend(self) -> None:
        """Suspend now, as after ``suspend_after`` idle seconds."""
        self._call("suspend")

    def crash(self) -> None:
        """Stop at once (PostgreSQL immediate shutdown, PgBouncer killed)."""
        self._call("crash")

    def fail_next_wakes(self, n: int) -> None:
        """Answer the next ``n`` wake attempts with ``Couldn't connect to compute node``."""
        self._call("fail_next_wakes", n=n)

    def cut_after(self, nbytes: int | None, *, endpoint: str = "both", times: int | None = None) -> None:
        """Cut each new client connection once it has received ``nbytes`` bytes; ``None`` stops.

        Counts every byte the client receives on that connection from its first
        (the proxy's own start-up and SCRAM messages included); at the limit both
        sockets are shut down and the client reads EOF. ``times=k`` makes k cuts
        at most (per endpoint), so a retry can succeed. Each call disarms the
        connections accepted before it.
        """
        if nbytes is not None and not _count(nbytes, 0):
            raise ConfigurationError(f"cut_after needs a byte count >= 0 or None, not {nbytes!r}")
        if times is not None and not _count(times, 1):
            raise ConfigurationError(f"times must be a number of cuts >= 1 or None, not {times!r}")
        self._call("cut_after", nbytes=nbytes, endpoint=_endpoint(endpoint), times=times)

    def latency(self, seconds: float, *, endpoint: str = "both") -> None:
        """Delay every chunk relayed, each direction, by ``seconds`` (``0`` stops).

        Applies to connections accepted while a fault is set on the endpoint, and
        a change applies to those at once; others keep the fast path.
        """
        if not is_seconds(seconds):
            raise ConfigurationError(f"latency needs a finite number of seconds >= 0, not {seconds!r}")
        self._call("latency", seconds=float(seconds), endpoint=_endpoint(endpoint))

    @property
    def cuts(self) -> int:
        """Connections cut by ``cut_after``."""
        return self._call("status")["cuts"]

    @property
    def tapped_bytes(self) -> int:
        """Bytes sent to clients on connections accepted while a fault was set (to find offsets)."""
        return self._call("status")["tapped_bytes"]

    def close(self) -> None:
        """Stop the servers and the proxy, delete the temporary files."""
        self._finalizer()

    def __enter__(self) -> LocalCompute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        alive = self._proc.poll() is None
        return (f"<LocalCompute direct=127.0.0.1:{self._direct_port} "
                f"pooled=127.0.0.1:{self._pooled_port} http=127.0.0.1:{self._http_port} "
                f"{'running' if alive else 'closed'}>")


def _count(value: object, low: int) -> bool:
    """An int >= ``low`` (bools are not counts here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low




def _check_lifecycle(suspend_after: object, activation_delay: object, monitor_interval: object) -> None:
    """Refuse settings that would leave the compute "starting" or polling in a tight loop."""
    if suspend_after is not None and not is_seconds(suspend_after, positive=True):
        raise ConfigurationError(f"suspend_after must be a number of seconds > 0, or None (never), "
                         f"not {suspend_after!r}")
    delay = activation_delay
    if isinstance(delay, (tuple, list)):
        if not (len(delay) == 2 and all(map(is_seconds, delay)) and delay[0] <= delay[1]):
            raise ConfigurationError(f"activation_delay must be a (low, high) range of seconds with "
                             f"0 <= low <= high, not {tuple(delay)!r}")
    elif not is_seconds(delay):
        raise ConfigurationError(f"activation_delay must be a number of seconds >= 0 or a (low, high) "
                         f"range, not {delay!r}")
    if not is_seconds(monitor_interval, positive=True):
        raise ConfigurationError(f"monitor_interval must be a number of seconds > 0, not {monitor_interval!r}")


_ENDPOINTS = ("direct", "pooled", "both", "http", "all")


def _endpoint(name: str) -> str:
    if name not in _ENDPOINTS:
        raise ConfigurationError(f"endpoint must be one of {', '.join(map(repr, _ENDPOINTS))}, not {name!r}")
    return name


def _shutdown(proc: subprocess.Popen, tmp: Path) -> None:
    if proc.poll() is None:
        try:
            proc.stdin.write(json.dumps({"cmd": "close"}) + "\n")
            proc.stdin.close()
            proc.wait(30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except (OSError, ValueError):
            pass
    shutil.rmtree(tmp, ignore_errors=True)
