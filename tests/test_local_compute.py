"""The local compute behaves like a Neon compute: scale to zero, wake, pooler quirks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import errors

from neon_notebook.errors import ConfigurationError
from neon_notebook.local import LocalCompute


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def raw_startup_error(url: str) -> dict[str, str]:
    """Send a StartupMessage by hand and parse the ErrorResponse fields the server answers."""
    import struct

    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # Not the owner role, so the proxy does not ask for a password before waking.
    body = struct.pack("!i", 196608) + b"user\0someone\0database\0postgres\0\0"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!i", len(body) + 4) + body)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data[:1] == b"E", data[:20]
    (length,) = struct.unpack("!i", data[1:5])
    return {f[:1].decode(): f[1:].decode() for f in data[5:1 + length].split(b"\0") if f}


def test_starts_suspended_and_wakes_on_connect(make_compute):
    c = make_compute(suspend_after=None)
    assert c.state == "suspended" and c.wakes == 0
    with psycopg.connect(c.direct_url, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert c.state == "active"
    assert (c.wakes, c.connections) == (1, 1)


def test_cold_start_longer_than_connect_timeout(make_compute):
    """Plain psycopg with a short timeout fails during the wake; a patient client succeeds."""
    c = make_compute(suspend_after=None, activation_delay=4.0)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match="timeout expired"):
        psycopg.connect(c.direct_url, connect_timeout=2)
    assert time.monotonic() - started < 3.5
    with psycopg.connect(c.direct_url, connect_timeout=15) as conn:
        assert conn.execute("select 42").fetchone() == (42,)
    assert c.wakes == 1  # one wake served both clients
    assert c.last_wake_seconds >= 4.0


def test_activation_delay_range(make_compute):
    c = make_compute(suspend_after=None, activation_delay=(0.3, 0.6))
    started = time.monotonic()
    psycopg.connect(c.direct_url, connect_timeout=10).close()
    assert 0.3 <= c.last_wake_seconds <= 0.6 + 1.0
    assert time.monotonic() - started >= 0.3


def test_idle_suspension_closes_direct_with_57p01_and_pooled_with_eof(make_compute, pgbouncer):
    c = make_compute(suspend_after=1.0)
    direct = psycopg.connect(c.direct_url, autocommit=True)
    pooled = psycopg.connect(c.pooled_url, autocommit=True, prepare_threshold=None)
    pooled.execute("select 1")
    assert wait_for(lambda: c.state == "suspended", timeout=10), "idle connections kept it awake"
    assert c.suspensions == 1
    with pytest.raises(psycopg.OperationalError) as direct_err:
        direct.execute("select 1")
    # The FATAL 57P01 arrives first; psycopg reports it, then the socket is at EOF.
    assert "terminating connection due to administrator command" in str(direct_err.value)
    with pytest.raises(psycopg.OperationalError) as pooled_err:
        pooled.execute("select 1")
    assert "administrator command" not in str(pooled_err.value)
    assert "server closed the connection unexpectedly" in str(pooled_err.value) or \
        "consuming input failed" in str(pooled_err.value)
    assert direct.closed and pooled.closed


def test_direct_client_sees_sqlstate_57p01(make_compute):
    c = make_compute(suspend_after=None, start_active=True)
    conn = psycopg.connect(c.direct_url, autocommit=True)
    conn.execute("select 1")
    c.suspend()
    with pytest.raises(psycopg.OperationalError) as err:
        conn.execute("select 1")
    assert isinstance(err.value, errors.AdminShutdown) or err.value.sqlstate == "57P01" or \
        "57P01" in repr(err.value.diag.sqlstate) or "administrator command" in str(err.value)


def test_open_transaction_keeps_it_awake(make_compute, pgbouncer):
    c = make_compute(suspend_after=1.0)
    conn = psycopg.connect(c.pooled_url)  # not autocommit: a transaction stays open
    conn.execute("select 1")
    time.sleep(3.0)
    assert c.state == "active" and c.suspensions == 0
    conn.commit()  # now idle: it may suspend
    assert wait_for(lambda: c.state == "suspended", timeout=10)
    conn.close()


def test_short_queries_between_polls_count_as_activity(make_compute):
    """A query that starts and ends between two monitor polls still keeps the compute awake."""
    c = make_compute(suspend_after=1.5, monitor_interval=0.5)
    conn = psycopg.connect(c.direct_url, autocommit=True)
    for _ in range(8):
        conn.execute("select 1")
        time.sleep(0.5)
    assert c.suspensions == 0 and c.state == "active"
    assert wait_for(lambda: c.state == "suspended", timeout=10)
    conn.close()


def test_new_connections_count_as_activity(make_compute):
    c = make_compute(suspend_after=1.5)
    for _ in range(6):
        psycopg.connect(c.direct_url).close()
        time.sleep(0.5)
    assert c.suspensions == 0 and c.wakes == 1
    assert wait_for(lambda: c.state == "suspended", timeout=10)


def test_wake_failures_arrive_as_xx000(make_compute):
    c = make_compute(suspend_after=None)
    c.fail_next_wakes(2)
    for _ in range(2):
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(c.direct_url, connect_timeout=5)
        assert "Couldn't connect to compute node" in str(err.value)
    # libpq does not expose a start-up error's SQLSTATE; read it off the wire.
    c.fail_next_wakes(1)
    fields = raw_startup_error(c.direct_url)
    assert fields["C"] == "XX000" and fields["S"] == "FATAL"
    assert fields["M"] == "Couldn't connect to compute node"
    assert c.wakes == 0 and c.state == "suspended"
    with psycopg.connect(c.direct_url, connect_timeout=5) as conn:
        conn.execute("select 1")
    assert c.wakes == 1


def test_pooler_breaks_automatic_prepared_statements(compute, pgbouncer):
    """Two clients sharing a server connection collide on psycopg's `_pg3_0`."""
    a = psycopg.connect(compute.pooled_url, autocommit=True)
    b = psycopg.connect(compute.pooled_url, autocommit=True)
    with pytest.raises(psycopg.errors.DuplicatePreparedStatement, match='"_pg3_0" already exists'):
        for i in range(10):
            for conn in (a, b):
                conn.execute("select %s::int + 1", (i,)).fetchone()
    a.close()
    b.close()


def test_pooler_refuses_startup_options(compute, pgbouncer):
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(compute.pooled_url, options="-c search_path=public")
    with psycopg.connect(compute.direct_url, options="-c search_path=pg_catalog") as conn:
        assert conn.execute("show search_path").fetchone() == ("pg_catalog",)


def test_pooled_endpoint_is_transaction_mode(compute, pgbouncer):
    a = psycopg.connect(compute.pooled_url, autocommit=True, prepare_threshold=None)
    b = psycopg.connect(compute.pooled_url, autocommit=True, prepare_threshold=None)
    pids_a = {a.execute("select pg_backend_pid()").fetchone()[0] for _ in range(3)}
    pid_b = b.execute("select pg_backend_pid()").fetchone()[0]
    assert pid_b in pids_a  # server connections are shared between clients
    a.close()
    b.close()


def test_wrong_password_is_refused(compute):
    bad = compute.direct_url.replace("postgres:", "postgres:x", 1)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=5)


@pytest.mark.parametrize("endpoint", ["direct_url", "pooled_url"])
def test_wrong_password_wakes_nothing(make_compute, pgbouncer, endpoint):
    """As on Neon, the proxy checks the password before it wakes the compute."""
    c = make_compute(suspend_after=None, activation_delay=2.0)
    bad = getattr(c, endpoint).replace("postgres:", "postgres:x", 1)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "postgres"'):
        psycopg.connect(bad, connect_timeout=10)
    assert time.monotonic() - started < 1.0
    assert (c.wakes, c.state) == (0, "suspended")
    with psycopg.connect(getattr(c, endpoint), connect_timeout=10, prepare_threshold=None) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
    assert c.wakes == 1


def test_other_roles_are_authenticated_by_postgres(compute):
    with psycopg.connect(compute.direct_url, autocommit=True) as admin:
        admin.execute("drop role if exists analyst")
        admin.execute("create role analyst login password 'se cret'")
    url = compute.direct_url.replace("postgres:", "analyst:", 1).split("@")[0].rsplit(":", 1)[0]
    url = url + ":se%20cret@" + compute.direct_url.split("@")[1]
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "analyst"'):
        psycopg.connect(url.replace("se%20cret", "nope"), connect_timeout=5)


def test_crash_and_restart(make_compute, pgbouncer):
    c = make_compute(suspend_after=None)
    conn = psycopg.connect(c.direct_url, autocommit=True)
    conn.execute("create table t (x int)")
    conn.execute("insert into t values (1)")
    c.crash()
    assert c.state == "suspended"
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    with psycopg.connect(c.direct_url, connect_timeout=10) as conn2:  # crash recovery on wake
        assert conn2.execute("select x from t").fetchall() == [(1,)]
    with psycopg.connect(c.pooled_url, connect_timeout=10, prepare_threshold=None) as conn3:
        assert conn3.execute("select count(*) from t").fetchone() == (1,)
    assert c.wakes == 2


@pytest.mark.local_compute
def test_close_leaves_no_ports_or_processes(pgbouncer):
    import psutil

    c = LocalCompute(suspend_after=None, start_active=True)
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in (c.direct_url, c.pooled_url)]
    psycopg.connect(c.pooled_url).close()
    daemon_pid = c._proc.pid
    children = psutil.Process(daemon_pid).children(recursive=True)
    assert len(children) >= 2  # postgres and pgbouncer
    c.close()
    assert not psutil.pid_exists(daemon_pid)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_missing_pgbouncer_says_how_to_install(make_compute):
    c = make_compute(suspend_after=None, pgbouncer="/nonexistent/pgbouncer")
    assert not c.has_pooler
    with pytest.raises(psycopg.OperationalError, match="PgBouncer is not installed.*apt-get install pgbouncer"):
        psycopg.connect(c.pooled_url, connect_timeout=5)
    with psycopg.connect(c.direct_url, connect_timeout=10) as conn:  # direct still works
        conn.execute("select 1")


def test_password_not_in_repr_or_process_list(compute):
    import psutil

    password = compute.direct_url.split(":")[2].split("@")[0]
    assert password not in repr(compute)
    for proc in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(proc.info["cmdline"] or [])


@pytest.mark.local_compute
def test_cli_prints_urls_and_stops_on_interrupt():
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "neon_notebook", "local", "--suspend-after", "60"],
                            stdout=subprocess.PIPE, text=True)
    try:
        database_url = proc.stdout.readline()
        direct_url = proc.stdout.readline()
        assert database_url.startswith("DATABASE_URL=postgresql://")
        assert direct_url.startswith("DIRECT_URL=postgresql://")
        with psycopg.connect(direct_url.split("=", 1)[1].strip(), connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "1 wakes" in out


@pytest.mark.local_compute
def test_servers_stop_when_the_owning_process_dies():
    """A notebook kernel killed with SIGKILL must not leave PostgreSQL running."""
    import psutil
    import signal

    script = (
        "import psycopg, sys, time\n"
        "from neon_notebook.local import LocalCompute\n"
        "c = LocalCompute(suspend_after=None)\n"
        "psycopg.connect(c.direct_url).close()\n"
        "print(c._proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    daemon_pid = int(owner.stdout.readline())
    servers = psutil.Process(daemon_pid).children(recursive=True)
    assert servers
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_for(lambda: not psutil.pid_exists(daemon_pid) and
                    not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers))


SYSTEM_PG = "/usr/lib/postgresql/15/bin"


@pytest.mark.skipif(not __import__("os").path.exists(f"{SYSTEM_PG}/postgres"),
                    reason="no system PostgreSQL 15 server binaries on this machine")
def test_system_binaries_when_configured(make_compute):
    c = make_compute(suspend_after=None, pg_bin=SYSTEM_PG)
    with psycopg.connect(c.direct_url, connect_timeout=10) as conn:
        assert conn.info.server_version // 10000 == 15


def test_postgres_18_from_the_wheel(make_compute):
    c = make_compute(suspend_after=None, postgres_version=18)
    with psycopg.connect(c.direct_url, connect_timeout=10) as conn:
        assert conn.info.server_version // 10000 == 18


def test_password_files_are_private(compute):
    import stat
    from pathlib import Path

    run_dir = Path(psycopg.conninfo.conninfo_to_dict(compute.server_conninfo)["host"])
    password = compute.direct_url.split(":")[2].split("@")[0]
    holding = [p for p in run_dir.iterdir() if p.is_file() and password in p.read_text(errors="ignore")]
    assert [p.name for p in holding] == ["userlist.txt"]  # PgBouncer's, and nothing else
    for path in holding:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is readable by others"


def test_a_failed_wake_command_raises(make_compute):
    from neon_notebook.local import LocalComputeError

    c = make_compute(suspend_after=None)
    c.fail_next_wakes(1)
    with pytest.raises(LocalComputeError, match="Couldn't connect to compute node"):
        c.wake()
    c.wake()
    assert c.state == "active" and c.wakes == 1


@pytest.mark.parametrize("kwargs", [
    {"activation_delay": -1}, {"activation_delay": float("nan")}, {"activation_delay": float("inf")},
    {"activation_delay": (2, 1)}, {"activation_delay": (-1, 1)}, {"activation_delay": (0, float("nan"))},
    {"activation_delay": (1, 2, 3)}, {"activation_delay": "1"}, {"activation_delay": None},
    {"suspend_after": 0}, {"suspend_after": -5}, {"suspend_after": float("nan")},
    {"suspend_after": "300"}, {"monitor_interval": 0}, {"monitor_interval": -0.5},
    {"monitor_interval": float("inf")}, {"password": "two\nlines"}, {"password": "nul\0"},
])
def test_lifecycle_settings_are_checked_before_anything_starts(kwargs):
    """A negative or inverted delay used to leave the compute "starting" and its clients hanging."""
    import tempfile
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).iterdir())
    name = next(iter(kwargs))
    with pytest.raises(ConfigurationError, match=f"^{name} must be "):
        LocalCompute(**kwargs).close()
    assert set(Path(tempfile.gettempdir()).iterdir()) == before  # no server directory was made


@pytest.mark.parametrize("args", [["--activation-delay", "-1"], ["--suspend-after", "-5"],
                                  ["--suspend-after", "0"], ["--activation-delay", "nan"]])
def test_cli_refuses_bad_lifecycle_settings(args):
    proc = subprocess.run([sys.executable, "-m", "neon_notebook", "local", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"argument {args[0]}: must be a number of seconds" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "DATABASE_URL" not in proc.stdout


@pytest.mark.local_compute
@pytest.mark.parametrize("data_dir", [False, True])
def test_a_killed_owner_leaves_no_files_and_no_traceback(data_dir):
    """SIGKILL of the owner: the daemon stops the servers, removes its temp dir, says nothing."""
    import os
    import psutil
    import shutil
    import signal
    import tempfile
    from pathlib import Path

    parent = Path(tempfile.mkdtemp())
    parent.chmod(0o755)  # as root, the servers' user must reach a data_dir of the user's
    user_dir = parent / "mine"
    script = (
        "import os, psycopg, signal, sys\n"
        "from neon_notebook.local import LocalCompute\n"
        f"c = LocalCompute(suspend_after=None, data_dir={str(user_dir)!r} if {data_dir} else None)\n"
        "psycopg.connect(c.direct_url).close()\n"
        "print(c._proc.pid, c._tmp, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    pid, tmp = owner.stdout.readline().split()
    servers = psutil.Process(int(pid)).children(recursive=True)
    assert servers and Path(tmp).is_dir()
    assert owner.wait(30) == -signal.SIGKILL
    stderr = owner.stderr.read()  # EOF once the daemon, which shares the pipe, has exited
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in servers)
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    assert not os.path.exists(tmp), os.listdir(tmp)
    if data_dir:  # a data directory the user gave is theirs: kept
        assert (user_dir / "PG_VERSION").exists()
    shutil.rmtree(parent)


# ASCII that URLs and conninfo strings must escape, then characters SASLprep maps:
# a black-letter H (NFKC: "H"), a no-break space (a space), a soft hyphen (nothing).
NORMALISED = "p@ss/w:?#&= 'q\"\\%ℌ\u00a0I\u00adX"
REFUSED = "ℌ\u0007x"  # a control character: SASLprep refuses, the raw password is hashed


@pytest.mark.parametrize("password", [NORMALISED, REFUSED], ids=["normalised", "refused"])
def test_custom_passwords_work_as_postgresql_takes_them(make_compute, pgbouncer, password):
    """The URLs percent-encode the password; the proxy's SCRAM applies SASLprep as libpq does."""
    from urllib.parse import unquote, urlsplit

    c = make_compute(suspend_after=None, password=password)
    for url in (c.direct_url, c.pooled_url):
        parts = urlsplit(url)
        assert (unquote(parts.password), parts.hostname, parts.path) == (password, "127.0.0.1", "/postgres")
        assert psycopg.conninfo.conninfo_to_dict(url)["password"] == password
        with psycopg.connect(url, connect_timeout=10, prepare_threshold=None) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
        with psycopg.connect(host="127.0.0.1", port=parts.port, user="postgres", dbname="postgres",
                             password=password, connect_timeout=10, prepare_threshold=None) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url.replace("postgres:", "postgres:x", 1), connect_timeout=10)
    with psycopg.connect(c.server_conninfo, connect_timeout=10) as conn:  # PostgreSQL's own socket
        assert conn.execute("select 1").fetchone() == (1,)
    for url in c.env().values():
        assert unquote(urlsplit(url).password) == password


@pytest.mark.parametrize("given, prepared", [
    ("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX"),
    ("ℌ\u00a0x", "H x"), ("\u200bab", " ab"),  # U+200B: a space first, as PostgreSQL maps it
    ("\u0007", "\u0007"), ("a\u0007é", "a\u0007é"),  # prohibited: unchanged
    ("\u0627\u0031", "\u0627\u0031"), ("\u0627x\u0628", "\u0627x\u0628"),  # bidi rules broken
    ("\u0627\u0031\u0628", "\u0627\u0031\u0628"), ("\u00ad", "\u00ad"),  # empty once mapped
    ("x\u0221", "x\u0221"),  # unassigned in Unicode 3.2
])
def test_saslprep_as_postgresql(given, prepared):
    from neon_notebook.local.scram import saslprep

    assert saslprep(given) == prepared
