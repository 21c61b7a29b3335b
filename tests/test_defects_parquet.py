"""Issue #9, defect 14: to_parquet's target is checked before the query, and ``~`` is expanded."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

import neon_notebook as nn


@pytest.fixture
def session(compute):
    with nn.connect(compute.direct_url, suspend_after=None) as s:
        yield s


def test_a_home_relative_path_is_expanded(session, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    rows = session.to_parquet("select g from generate_series(1, 1000) g", "~/x.parquet", progress=False)
    assert rows == 1000
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 1000
    assert os.listdir(tmp_path) == ["x.parquet"]  # no .partial left, nothing under a literal "~"
    assert not os.path.exists("~")


def test_a_missing_directory_fails_before_the_query_runs(compute, tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "x.parquet"
    before = compute.connections
    with nn.connect(compute.direct_url, suspend_after=None) as s:
        with pytest.raises(FileNotFoundError, match="create it first"):
            s.to_parquet("select pg_sleep(3)", target, progress=False)
        # Nothing was borrowed or run: no connection reached the compute.
        assert compute.connections == before
        assert s.last_query is None
    assert not target.parent.exists()


def test_a_directory_as_the_target_fails_before_the_query_runs(session, tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        session.to_parquet("select 1 as x", tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_the_raw_reader_checks_the_target_too(compute, tmp_path):
    import psycopg

    from neon_notebook.readers import to_parquet

    with psycopg.connect(compute.direct_url, autocommit=True) as conn:
        with pytest.raises(FileNotFoundError, match="create it first"):
            to_parquet(conn, "select pg_sleep(3)", tmp_path / "missing" / "x.parquet")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("select 1").fetchone() == (1,)
