"""Reads over TLS, as every Neon connection is (sslmode=require).

The local compute's embedded PostgreSQL is built without SSL, so this module
starts the OS's PostgreSQL 15 server with a throwaway self-signed certificate
on a loopback TCP port.  libpq then decrypts inside PQgetCopyData, and the C
reading loop, the Python one and both COPY formats must read exactly what
psycopg reads.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import psycopg
import pytest

from conftest import IN_CI
from neon_notebook.local.binaries import postgres_bin_dir, server_dirs
from neon_notebook.local.postgres import Postgres
from neon_notebook.readers import _copy, iter_batches, read_arrow, read_polars

pytestmark = pytest.mark.db  # a PostgreSQL server of its own, with TLS

OS_POSTGRES = Path("/usr/lib/postgresql/15/bin")
QUERY = ("SELECT i, md5(i::text) AS s, CASE WHEN i % 5 = 0 THEN NULL ELSE i / 7.0 END AS f, "
         "timestamptz '2024-01-01' + i * interval '1 minute' AS ts, ARRAY[i, -i] AS a "
         "FROM generate_series(1, 200000) i")


@pytest.fixture(scope="module")
def tls_url():
    if not (OS_POSTGRES / "postgres").exists() or shutil.which("openssl") is None:
        message = f"needs PostgreSQL server binaries with SSL in {OS_POSTGRES} and openssl"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    bin_dir = postgres_bin_dir(OS_POSTGRES)
    tmp, data, run, user = server_dirs(bin_dir, "neon-tls-")  # PostgreSQL refuses to run as root
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Postgres(bin_dir, data, run, "tls-test-password", user, port=port)
    try:
        server.init()
        subprocess.run(["openssl", "req", "-new", "-x509", "-days", "1", "-nodes", "-subj", "/CN=localhost",
                        "-keyout", str(data / "server.key"), "-out", str(data / "server.crt")],
                       check=True, capture_output=True)
        os.chmod(data / "server.key", 0o600)
        if user is not None:
            for name in ("server.key", "server.crt"):
                shutil.chown(data / name, user, user)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\nssl = on\n")
        server.start()
        yield f"postgresql://postgres:tls-test-password@127.0.0.1:{port}/postgres?sslmode=require"
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def conn(tls_url):
    with psycopg.connect(tls_url, autocommit=True, prepare_threshold=None) as c:
        assert c.pgconn.ssl_in_use
        yield c


@pytest.mark.parametrize("native", [True, False], ids=["C loop", "Python loop"])
def test_reads_over_tls_equal_psycopg(conn, monkeypatch, native):
    monkeypatch.setattr(_copy, "NATIVE_RECEIVE", native)
    if native:
        assert _copy.native_receive()
    expected = conn.execute(QUERY).fetchall()
    table = read_arrow(conn, QUERY)  # the int[] column takes COPY's text format
    assert [tuple(r.values()) for r in table.to_pylist()] == expected
    binary = QUERY.replace(", ARRAY[i, -i] AS a", "")
    stream = iter_batches(conn, binary, batch_rows=30_000)
    rows = [tuple(r.values()) for b in stream for r in b.to_pylist()]
    assert stream.path == "copy binary" and rows == [r[:-1] for r in expected]
    frame = read_polars(conn, binary)
    assert frame.rows() == [r[:-1] for r in expected]
    assert conn.execute("SELECT 1").fetchone() == (1,)
