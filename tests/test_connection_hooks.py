"""The pooled endpoint's SET LOCALs, through psycopg's private hooks and through the fallback.

On the pooled endpoint (PgBouncer, transaction mode) schema= and statement_timeout=
must apply inside every transaction (plain execute, ``transaction()``, pipeline mode,
a read) and never reach the next client of the same server connection. Both ways of
sending them (with psycopg's BEGIN, or a round trip of their own) must behave alike.
"""

from __future__ import annotations

import inspect

import psycopg
import pytest

from neon_notebook import _connection
from neon_notebook.errors import ConfigurationError

SCHEMA = "nn_hooks_schema"
SEEN = "select current_setting('search_path'), current_setting('statement_timeout'), pg_backend_pid()"


@pytest.fixture(params=["hooks", "round trip"])
def mode(request, monkeypatch):
    """Each test twice: with psycopg's hooks, and with the fallback forced."""
    if request.param == "round trip":
        monkeypatch.setattr(_connection, "HOOKS", False)
    else:
        assert _connection.HOOKS, "the hooks do not fit the installed psycopg: review pyproject.toml's bound"
    return request.param


@pytest.fixture
def session(make_session, pooled_url, mode):
    return make_session(pooled_url, schema=SCHEMA, statement_timeout=0.25, pool_size=1)


def applied(row) -> bool:
    path, timeout, _ = row
    return path.startswith(SCHEMA) and timeout == "250ms"


def record(row, pids: set[int]) -> None:
    """The row saw the settings; remember its server connection for the next client's check."""
    assert applied(row), row
    pids.add(row[2])


def assert_next_client_clean(pooled_url: str, pids: set[int]) -> None:
    """A plain client landing on those server connections sees none of the settings."""
    row = next_client_sees(pooled_url, pids)
    assert not row[0].startswith(SCHEMA) and row[1] == "0", row


def next_client_sees(pooled_url: str, pids: set[int]) -> tuple:
    """What a plain client of PgBouncer sees on one of ``pids``' server connections.

    Plain clients hold a transaction open each, so PgBouncer gives each its own
    server connection, until one lands on the session's.
    """
    plain: list[psycopg.Connection] = []
    seen = []
    try:
        for _ in range(15):
            plain.append(psycopg.connect(pooled_url, prepare_threshold=None))
            row = plain[-1].execute(SEEN).fetchone()
            seen.append(row[2])
            if row[2] in pids:
                return row
    finally:
        for conn in plain:
            conn.close()
    pytest.fail(f"no plain client landed on the session's server connections {pids} (they got {seen})")


def test_each_transaction_gets_the_settings_and_the_next_client_does_not(session, pooled_url, mode):
    pids = set()
    with session.connection() as conn:
        assert conn._tx_hooks is (mode == "hooks")
        for _ in range(2):
            with conn.transaction():
                row = conn.execute(SEEN).fetchone()
                record(row, pids)
            row = conn.execute(SEEN).fetchone()  # psycopg's implicit transaction
            record(row, pids)
            conn.commit()
        assert_next_client_clean(pooled_url, pids)
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.transaction():
                conn.execute("select pg_sleep(2)")  # statement_timeout=0.25 holds here too


def test_pipeline_mode_gets_the_settings_in_each_transaction(session, pooled_url, mode):
    pids = set()
    with session.connection() as conn:
        with conn.pipeline():
            first = conn.execute(SEEN)
            second = conn.execute("select 1")
        row = first.fetchone()
        assert applied(row) and second.fetchone() == (1,)
        pids.add(row[2])
        conn.commit()
        with conn.pipeline():
            for _ in range(2):
                with conn.transaction():
                    cur = conn.execute(SEEN)
                row = cur.fetchone()
                record(row, pids)
        # After a pipeline PgBouncer may keep the server connection linked to this client
        # until its next message; one plain transaction hands it back for the check below.
        row = conn.execute(SEEN).fetchone()
        record(row, pids)
        conn.commit()
        assert_next_client_clean(pooled_url, pids)
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.pipeline(), conn.transaction():
                conn.execute("select pg_sleep(2)")


def test_reads_and_autocommit_refusal_on_the_pooled_endpoint(session, mode):
    for _ in range(2):
        table = session.read_arrow("select current_setting('search_path') as p, "
                                   "current_setting('statement_timeout') as t", progress=False)
        assert table.column("p")[0].as_py().startswith(SCHEMA) and table.column("t")[0].as_py() == "250ms"
    with session.connection() as conn:
        with pytest.raises(ConfigurationError, match="autocommit=True is refused"):
            conn.autocommit = True
        with pytest.raises(ConfigurationError, match="autocommit=True is refused"):
            conn.set_autocommit(True)
        assert conn.autocommit is False
        conn.autocommit = False  # allowed: nothing changes


def test_the_hook_check_sees_a_changed_shape(monkeypatch):
    assert _connection._hooks_fit()

    def renamed(self, *, command):  # psycopg changed the hook's parameters
        return b"BEGIN"

    monkeypatch.setattr(psycopg.Connection, "_exec_command", renamed)
    assert not _connection._hooks_fit()
    monkeypatch.undo()
    monkeypatch.setattr(psycopg.transaction.BaseTransaction, "_get_enter_commands", lambda self: [b"BEGIN"])
    assert not _connection._hooks_fit()  # Transaction no longer asks for _get_tx_start_command
    monkeypatch.undo()
    assert _connection._hooks_fit()
    assert list(inspect.signature(_connection.NeonConnection._exec_command).parameters) == [
        "self", "command", "result_format"]
