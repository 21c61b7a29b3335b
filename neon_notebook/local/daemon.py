"""The local compute's child process: scale-to-zero proxy, lifecycle and monitor.

Run by ``LocalCompute`` as ``python -m neon_notebook.local.daemon CONFIG_JSON``.
It owns PostgreSQL and PgBouncer, listens on the direct and pooled TCP ports
and on the HTTP port (Neon's ``/sql`` and WebSocket endpoints, ``httpd``), and takes
commands as JSON lines on stdin (one JSON reply per line on stdout).
When stdin closes without a ``close`` command (its parent died) it shuts
everything down, removes the parent's temporary directory and exits quietly, so
a dead notebook kernel leaves no server and no files behind.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import LocalComputeError
from . import scram, wire
from .binaries import PGBOUNCER_INSTALL_HINT
from .httpd import HttpEndpoint
from .listener import Listener
from .pgbouncer import PgBouncer
from .postgres import Postgres
from .relay import Tap, TappedSocket, relay, relay_faulty
from .sqlhttp import Limits

log = logging.getLogger("neon_notebook.local")

from .wire import COULD_NOT_CONNECT
# What Neon's compute monitor (compute_ctl's monitor.rs) counts as activity: a
# client backend that is not idle (idle in transaction included) means "now";
# otherwise the latest state change among idle ones (so a query that ran
# between two polls counts); a running autovacuum worker means "now".
_ACTIVITY_SQL = """
select count(*) filter (where state is distinct from 'idle') > 0
       or exists (select 1 from pg_stat_activity where backend_type = 'autovacuum worker'),
       extract(epoch from clock_timestamp() - max(state_change))::float8
from pg_stat_activity
where backend_type = 'client backend' and pid <> pg_backend_pid()
"""


class Compute:
    """Lifecycle of one compute: suspended -> starting -> active -> suspended."""

    def __init__(self, cfg: dict) -> None:
        run_dir = Path(cfg["run_dir"])
        self.postgres = Postgres(Path(cfg["bin_dir"]), Path(cfg["data_dir"]), run_dir,
                                 cfg["password"], cfg["user"])
        self.pgbouncer = (PgBouncer(Path(cfg["pgbouncer"]), run_dir, cfg["password"], cfg["user"],
                                    pg_port=self.postgres.port) if cfg["pgbouncer"] else None)
        self.password: str = cfg["password"]
        self.salt = os.urandom(16)
        self.suspend_after: float | None = cfg["suspend_after"]
        self.activation_delay = cfg["activation_delay"]
        self.monitor_interval: float = cfg["monitor_interval"]
        self.state = "suspended"
        self.counters = {"wakes": 0, "suspensions": 0, "crashes": 0, "connections": 0,
                         "failed_wakes": 0, "cuts": 0, "tapped_bytes": 0}
        self._count_lock = threading.Lock()
        self.last_wake_seconds: float | None = None
        self._fail_next = 0
        self._last_activity = time.monotonic()
        self._lock = threading.RLock()  # serialises wake / suspend / crash
        self._monitor_conn = None
        self.postgres.init()

    # -- lifecycle ---------------------------------------------------------
    def _delay(self) -> float:
        d = self.activation_delay
        if isinstance(d, (list, tuple)):
            return random.uniform(float(d[0]), float(d[1]))
        return float(d or 0.0)

    def ensure_active(self) -> str | None:
        """Wake the compute if needed; an error message when the wake fails."""
        with self._lock:
            if self.state == "active":
                return None
            if self._fail_next > 0:
                self._fail_next -= 1
                self.counters["failed_wakes"] += 1
                return COULD_NOT_CONNECT
            self.state = "starting"
            started = time.monotonic()
            try:
                self.postgres.start()
                if self.pgbouncer is not None:
                    self.pgbouncer.start()
            except Exception:
                log.exception("wake failed")
                self._stop_servers("immediate")
                self.state = "suspended"
                return COULD_NOT_CONNECT
            time.sleep(self._delay())
            self.last_wake_seconds = time.monotonic() - started
            self.counters["wakes"] += 1
            self._last_activity = time.monotonic()
            self.state = "active"
            return None

    def _stop_servers(self, mode: str) -> None:
        if self._monitor_conn is not None:
            try:
                self._monitor_conn.close()
            except Exception:
                pass
            self._monitor_conn = None
        if self.pgbouncer is not None:
            self.pgbouncer.kill()
        self.postgres.stop(mode)

    def suspend(self) -> None:
        """Suspend as Neon does: kill PgBouncer, fast-shutdown PostgreSQL."""
        with self._lock:
            if self.state != "active":
                return
            self._stop_servers("fast")
            self.state = "suspended"
            self.counters["suspensions"] += 1

    def crash(self) -> None:
        """Stop at once: PgBouncer killed, PostgreSQL immediate shutdown."""
        with self._lock:
            self._stop_servers("immediate")
            self.state = "suspended"
            self.counters["crashes"] += 1

    def fail_next_wakes(self, n: int) -> None:
        with self._lock:
            self._fail_next = int(n)

    def close(self) -> None:
        with self._lock:
            self._stop_servers("fast")
            self.state = "closed"

    def count(self, counter: str, n: int) -> None:
        """Add ``n`` to a counter from a relay thread (``+=`` on a dict is not atomic)."""
        with self._count_lock:
            self.counters[counter] += n

    def note_connection(self) -> None:
        self.count("connections", 1)
        self._last_activity = time.monotonic()

    # -- the compute monitor ------------------------------------------------
    def _last_active(self) -> float:
        """When PostgreSQL last saw activity, on this process's monotonic clock."""
        import psycopg

        if self._monitor_conn is None or self._monitor_conn.closed:
            self._monitor_conn = psycopg.connect(self.postgres.conninfo, autocommit=True,
                                                 application_name="compute_monitor")
        busy, seconds_ago = self._monitor_conn.execute(_ACTIVITY_SQL).fetchone()
        now = time.monotonic()
        if busy:
            return now
        return now - seconds_ago if seconds_ago is not None else float("-inf")  # no clients

    def monitor(self) -> None:
        """Suspend after ``suspend_after`` seconds without activity."""
        while True:
            time.sleep(self.monitor_interval)
            with self._lock:
                if self.state == "closed":
                    return
                if self.state != "active" or self.suspend_after is None:
                    continue
                try:
                    self._last_activity = max(self._last_activity, self._last_active())
                except Exception:
                    log.exception("compute monitor query failed")
                    self._monitor_conn = None
                    continue
                if time.monotonic() - self._last_activity >= self.suspend_after:
                    log.info("no activity for %.1f s: suspending", self.suspend_after)
                    self.suspend()

    def status(self) -> dict:
        return {"state": self.state, **self.counters, "last_wake_seconds": self.last_wake_seconds,
                "threads": threading.active_count(), "fds": _open_fds()}


def _open_fds() -> int | None:
    """File descriptors this process holds (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir opened
    except OSError:
        return None


class Faults:
    """An endpoint's injected faults; a connection accepted with none set takes the splice path.

    ``cut_after`` arms each connection accepted after it was set, for ``times``
    cuts in all (None: no end); setting it again (``None`` included) disarms the
    connections accepted before. ``latency`` is read for every chunk, so a change
    applies at once to the faulty connections.
    """

    def __init__(self) -> None:
        self.cut_after: int | None = None
        self.cut_epoch = 0
        self.cuts_left: int | None = None
        self.latency = 0.0
        self._lock = threading.Lock()

    @property
    def any(self) -> bool:
        return self.cut_after is not None or self.latency > 0

    def set_cut(self, nbytes: int | None, times: int | None = None) -> None:
        with self._lock:
            self.cut_after, self.cut_epoch, self.cuts_left = nbytes, self.cut_epoch + 1, times

    def _take_cut(self, epoch: int) -> bool:
        """Whether a connection armed in ``epoch`` is cut now; spends one of ``times``."""
        with self._lock:
            if epoch != self.cut_epoch or self.cuts_left == 0:
                return False
            if self.cuts_left is not None:
                self.cuts_left -= 1
            return True

    def tap(self, count) -> Tap:
        """A tap for a connection accepted now: armed until the next ``set_cut``."""
        with self._lock:  # the limit and its epoch from one set_cut
            nbytes, epoch = self.cut_after, self.cut_epoch
        return Tap(nbytes, lambda: self._take_cut(epoch), count)


class Endpoint(Listener):
    """A TCP listener that wakes the compute and relays to a backend socket."""

    def __init__(self, compute: Compute, name: str, backend: Path | None, missing: str | None = None):
        super().__init__()
        self.compute, self.name, self.backend, self.missing = compute, name, backend, missing
        self.faults = Faults()

    def _refuse(self, client: socket.socket, message: str) -> None:
        try:
            client.sendall(wire.error_response(message))
        finally:
            client.close()

    def _handle(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.faults.any:  # decided at accept, so the proxy's own messages count too
            client = TappedSocket.adopt(client, self.faults.tap(self.compute.count))
        try:
            self._serve(client)
        except OSError:  # the client went away, or a fault cut it, before the relay began
            client.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            code, packet = wire.read_startup(client)
        except (wire.ProtocolError, OSError):
            client.close()
            return
        if code == wire.CANCEL_REQUEST:
            if self.compute.state != "active" or self.backend is None:
                client.close()  # nothing to cancel; never wake a compute for a cancel
                return
            return self._open(client, packet, None)
        self.compute.note_connection()
        if self.missing:
            return self._refuse(client, self.missing)
        user = wire.startup_params(packet).get("user", "")
        final = None
        if user == "postgres":
            # As Neon's proxy: authenticate before waking, so a wrong password wakes nothing.
            try:
                final = scram.verify_client(client, self.compute.password, self.compute.salt)
            except scram.AuthFailed:
                return self._refuse(client, f'password authentication failed for user "{user}"')
            except (wire.ProtocolError, OSError):
                client.close()
                return
        error = self.compute.ensure_active()
        if error:
            return self._refuse(client, error)
        self._open(client, packet, final)

    def _open(self, client: socket.socket, packet: bytes, final: bytes | None) -> None:
        """Connect to the backend and relay; if the proxy authenticated the client, log in for it."""
        server = socket.socket(socket.AF_UNIX)
        try:
            server.connect(str(self.backend))
            server.sendall(packet)
            if final is not None:
                scram.login(server, self.compute.password)
                client.sendall(final + scram.auth_message(scram.AUTH_OK))
        except wire.ServerError as exc:
            server.close()
            client.sendall(exc.raw)
            client.close()
            return
        except (OSError, wire.ProtocolError):
            server.close()
            if isinstance(client, TappedSocket) and client.tap.cut:
                return client.close()
            return self._refuse(client, COULD_NOT_CONNECT)
        if isinstance(client, TappedSocket):
            return relay_faulty(client, server, lambda: self.faults.latency, name=self.name)
        relay(client, server, name=self.name)


def _raise_if(error: str | None) -> None:
    if error:
        raise LocalComputeError(error)


def _send(out, obj: dict) -> bool:
    """Write one JSON line to the parent; False when it is gone (its pipe is broken)."""
    try:
        out.write(json.dumps(obj) + "\n")
        out.flush()
        return True
    except (OSError, ValueError):
        return False


def _orphaned(cfg: dict) -> None:
    """The parent died without closing us: remove its temp dir (nobody else will), quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail either
    os.close(devnull)
    if cfg.get("tmp_dir"):  # the directory LocalCompute made; a data_dir of the user's is elsewhere
        shutil.rmtree(cfg["tmp_dir"], ignore_errors=True)


def _endpoints(compute: Compute, run_dir: Path) -> tuple[Endpoint, Endpoint]:
    direct = Endpoint(compute, "direct", run_dir / f".s.PGSQL.{compute.postgres.port}")
    if compute.pgbouncer is not None:
        return direct, Endpoint(compute, "pooled", compute.pgbouncer.socket_path)
    return direct, Endpoint(compute, "pooled", None, missing=(
        "PgBouncer is not installed, so this local compute has no pooled endpoint: "
        f"{PGBOUNCER_INSTALL_HINT}, or use the direct URL"))


def _http_endpoint(compute: Compute, direct: Endpoint, pooled: Endpoint, cfg: dict) -> HttpEndpoint:
    limits = Limits(cfg.get("http_max_request_bytes", 10 << 20), cfg.get("http_max_response_bytes", 10 << 20))
    return HttpEndpoint(compute, Faults(), {direct.port: direct.backend, pooled.port: pooled.backend},
                        direct.backend, pooled.missing, limits)


def _commands(compute: Compute, direct: Endpoint, pooled: Endpoint, http: HttpEndpoint) -> dict:
    """The parent's commands, by name: each takes the message and returns a result or None."""
    def chosen(msg: dict) -> list:
        return {"direct": [direct], "pooled": [pooled], "both": [direct, pooled], "http": [http],
                "all": [direct, pooled, http]}[msg["endpoint"]]

    def set_cut(msg: dict) -> None:
        for endpoint in chosen(msg):
            endpoint.faults.set_cut(msg["nbytes"], msg.get("times"))

    def set_latency(msg: dict) -> None:
        for endpoint in chosen(msg):
            endpoint.faults.latency = float(msg["seconds"])

    return {
        "status": lambda _: None,
        "suspend": lambda _: compute.suspend(),
        "crash": lambda _: compute.crash(),
        "wake": lambda _: _raise_if(compute.ensure_active()),
        "fail_next_wakes": lambda msg: compute.fail_next_wakes(msg["n"]),
        "cut_after": set_cut,
        "latency": set_latency,
    }


def _serve_parent(out, compute: Compute, commands: dict) -> bool:
    """Answer the parent's commands; True when it asked to close, False when it went away."""
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "close":
            return True
        try:
            result = commands[msg["cmd"]](msg)
            reply = {"ok": True, "result": result, **compute.status()}
        except Exception as exc:  # reported to the caller, never fatal to the proxy
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", **compute.status()}
        if not _send(out, reply):
            return False
    return False  # stdin closed without a "close": the parent died


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[0])
    logging.basicConfig(filename=str(Path(cfg["run_dir"]) / "compute.log"), level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    out = sys.stdout
    try:
        compute = Compute(cfg)
        direct, pooled = _endpoints(compute, Path(cfg["run_dir"]))
        http = _http_endpoint(compute, direct, pooled, cfg)
    except Exception as exc:
        log.exception("start-up failed")
        if not _send(out, {"error": f"{type(exc).__name__}: {exc}"}):
            _orphaned(cfg)
        return

    for target in (direct.serve, pooled.serve, http.serve, compute.monitor):
        threading.Thread(target=target, daemon=True).start()
    if cfg.get("start_active"):
        compute.ensure_active()

    def shutdown(*_: object) -> None:
        direct.close()
        pooled.close()
        http.close()
        compute.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    hello = {"ready": True, "direct_port": direct.port, "pooled_port": pooled.port, "http_port": http.port,
             "server_conninfo": compute.postgres.conninfo}
    closed = _send(out, hello) and _serve_parent(out, compute, _commands(compute, direct, pooled, http))
    direct.close()
    pooled.close()
    http.close()
    compute.close()
    if not (closed and _send(out, {"ok": True, "closed": True})):
        log.info("the owning process went away: stopped, removing %s", cfg.get("tmp_dir"))
        _orphaned(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
