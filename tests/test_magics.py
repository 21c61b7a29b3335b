"""%neon and %%sql in an in-process IPython shell, against a real local compute."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from neon_notebook.ui.magics import CellError, NeonMagics, bind_parameters, cell_offset


@pytest.fixture
def shell():
    return InteractiveShell.instance()


@pytest.fixture
def magics(shell, direct_url, pooled_url, monkeypatch):
    """Fresh %neon / %%sql state, DATABASE_URL and DIRECT_URL pointing at the run's database."""
    monkeypatch.setenv("DATABASE_URL", pooled_url + ("&" if "?" in pooled_url else "?") + "pgbouncer=true")
    monkeypatch.setenv("DIRECT_URL", direct_url)
    shell.run_line_magic("load_ext", "neon_notebook.ui.magics")
    fresh = NeonMagics(shell)
    shell.register_magics(fresh)
    yield fresh
    for name in list(fresh.sessions):
        fresh.sessions.pop(name).close()


@pytest.fixture
def table(direct_url):
    """A small table with a NULL, created over a plain psycopg connection."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(direct_url, autocommit=True) as conn:
        conn.execute(f"create table {name} (id int primary key, label text, score float8, ok bool)")
        conn.execute(f"insert into {name} values (1, 'one', 1.5, true), (2, null, -2.25, false), "
                     f"(3, 'it''s', null, null)")
        yield name
        conn.execute(f"drop table {name}")


def fetchall(direct_url, query, params=None):
    with psycopg.connect(direct_url) as conn:
        return conn.execute(query, params).fetchall()


def run(shell, capsys, cell):
    """Run a cell as a user would; returns (result, everything printed)."""
    result = shell.run_cell(cell)
    captured = capsys.readouterr()
    return result, captured.out + captured.err


def password(direct_url) -> str:
    return urlsplit(direct_url).password


# -- binding, no database -----------------------------------------------------------


@pytest.mark.parametrize("sql, expected, names", [
    ("select :a", "select %(a)s", ["a"]),
    ("select x::int, :a::text", "select x::int, %(a)s::text", ["a"]),
    ("select ':a', \":a\", $$ :a $$, $t$ :a $t$ -- :a\n", "select ':a', \":a\", $$ :a $$, $t$ :a $t$ -- :a\n", []),
    ("/* :a /* :a */ :a */ select E'\\' :a', :a", "/* :a /* :a */ :a */ select E'\\' :a', %(a)s", ["a"]),
    ("select arr[1:a], arr[:a], 'it''s :a'", "select arr[1:a], arr[%(a)s], 'it''s :a'", ["a"]),
    ("select '100%', :a", "select '100%%', %(a)s", ["a"]),
    ("select '100%'", "select '100%'", []),
])
def test_colon_names_become_psycopg_parameters(sql, expected, names):
    text, params, found = bind_parameters(sql, {"a": 1, "t": 2})
    assert text == expected
    assert [p.name for p in found] == names
    assert params == ({n: 1 for n in names} or None)


def test_unknown_name_is_a_usage_error():
    with pytest.raises(UsageError, match=":missing"):
        bind_parameters("select :missing", {})


def test_error_positions_map_back_to_the_cell():
    cell = "select :long, nope"
    _, params, found = bind_parameters(cell, {"long": "x" * 40})
    bound_position = len("select ") + len("'" + "x" * 40 + "'") + len(", ") + 1
    assert cell[cell_offset(bound_position, found, params):].startswith("nope")
    assert cell_offset(len("select ") + 5, found, params) == cell.index(":long")  # inside the value


# -- %%sql against the compute ----------------------------------------------------------


def test_sql_into_a_variable_matches_fetchall(shell, magics, direct_url, table):
    shell.run_line_magic("neon", "connect")
    query = f"select id, label, score, ok from {table} order by id"
    expected = fetchall(direct_url, query)
    shell.run_cell_magic("sql", "df", query)
    df = shell.user_ns["df"]
    assert [tuple(None if v is None or v != v else v for v in row)  # NA -> None
            for row in df.astype(object).where(df.notna(), None).itertuples(index=False)] == expected
    shell.run_cell_magic("sql", "--polars pl_df", query)
    assert shell.user_ns["pl_df"].rows() == expected
    shell.run_cell_magic("sql", "--arrow tbl", query)
    assert [tuple(r.values()) for r in shell.user_ns["tbl"].to_pylist()] == expected


def test_values_are_bound_as_data(shell, magics, direct_url, table, capsys):
    shell.run_line_magic("neon", "connect")
    shell.user_ns.update(evil="'; drop table x; --", n=41, who=f"{table}")
    cell = ("select :evil as v, :n::int + 1 as m, '::keep :evil' as lit, '100%' as pct,\n"
            f"       (select count(*) from {table}) as rows")
    shell.run_cell_magic("sql", "out", cell)
    out = shell.user_ns["out"]
    assert out.loc[0, "v"] == "'; drop table x; --"
    assert out.loc[0, "m"] == 42
    assert out.loc[0, "lit"] == "::keep :evil"
    assert out.loc[0, "pct"] == "100%"
    assert out.loc[0, "rows"] == 3  # the table is still there
    assert "out: 1 rows × 5 columns" in capsys.readouterr().out


def test_preview_is_bounded_and_cancels_the_rest(shell, magics, capsys):
    shell.run_line_magic("neon", "connect")
    started = time.monotonic()
    preview = shell.run_cell_magic("sql", "", "select g, repeat('x', 200) as pad from generate_series(1, 10000000) g")
    elapsed = time.monotonic() - started
    assert len(preview) == 50 and list(preview["g"]) == list(range(1, 51))
    assert elapsed < 5, f"the preview took {elapsed:.1f} s: the whole result was read"
    assert "showing first 50 rows; assign to a variable to load all" in capsys.readouterr().out
    session = magics.session()
    assert session.pool_stats()["pooled"]["in_use"] == 0
    small = shell.run_cell_magic("sql", "--preview 5 --polars", "select 1 as one")
    assert small.rows() == [(1,)] and "showing" not in capsys.readouterr().out


def test_direct_flag_uses_the_direct_endpoint(shell, magics):
    shell.run_line_magic("neon", "connect")
    shell.run_cell_magic("sql", "--direct d", "select 7 as seven")
    assert shell.user_ns["d"].loc[0, "seven"] == 7
    stats = magics.session().pool_stats()
    assert stats["direct"]["idle"] == 1 and stats["pooled"]["idle"] == 0


def test_server_errors_show_message_caret_and_hint(shell, magics, capsys):
    shell.run_line_magic("neon", "connect")
    shell.user_ns["long"] = "a fairly long value that shifts every position after it"
    result, out = run(shell, capsys, "%%sql\nselect :long as v,\n       relnam from pg_class")
    assert isinstance(result.error_in_exec, CellError)
    lines = out.splitlines()
    assert 'ERROR:  column "relnam" does not exist (SQLSTATE 42703)' in lines
    i = lines.index("LINE 2:        relnam from pg_class")
    assert lines[i + 1] == " " * len("LINE 2:        ") + "^"
    assert any(line.startswith("HINT:  Perhaps you meant") for line in lines)
    assert "Traceback" not in out


def test_server_errors_show_detail(shell, magics, table, capsys):
    shell.run_line_magic("neon", "connect")
    result, out = run(shell, capsys, f"%%sql\ninsert into {table} (id) values (1)")
    assert isinstance(result.error_in_exec, CellError)
    assert "duplicate key value violates unique constraint" in out
    assert "DETAIL:  Key (id)=(1) already exists." in out
    assert "Traceback" not in out


def test_connection_errors_are_plain_words_without_the_password(shell, magics, direct_url, capsys):
    parts = urlsplit(direct_url)
    wrong = "Wr0ng-secret"
    url = urlunsplit(parts._replace(netloc=f"postgres:{wrong}@{parts.hostname}:{parts.port}"))
    shell.run_line_magic("neon", f"connect bad {url}")
    result, out = run(shell, capsys, "%%sql -c bad\nselect 1")
    assert isinstance(result.error_in_exec, CellError)
    assert "PermanentConnectError: The server rejected the user name or password" in out
    assert wrong not in out and "Traceback" not in out


def test_connect_list_use_close(shell, magics, direct_url, capsys):
    shell.run_line_magic("neon", "connect")
    shell.run_line_magic("neon", f"connect other {direct_url}")
    shell.run_line_magic("neon", "list")
    out = capsys.readouterr().out
    assert "* default: postgres@" in out and "(pooled)" in out
    assert "  other: postgres@" in out and "[unknown]" in out
    shell.run_line_magic("neon", "use other")
    shell.run_line_magic("neon", "warm")
    assert "answered after" in capsys.readouterr().out
    assert magics.sessions["other"].state == "active" and magics.sessions["default"].state == "unknown"
    shell.run_line_magic("neon", "status")
    shell.run_line_magic("neon", "list")
    out = capsys.readouterr().out
    assert re.search(r"state +active", out) and "* other:" in out
    shell.run_line_magic("neon", "close other")
    shell.run_line_magic("neon", "list")
    out = capsys.readouterr().out
    assert "other" not in out.replace("closed other", "") and "* default:" in out
    with pytest.raises(UsageError, match="other"):
        shell.run_cell_magic("sql", "-c other", "select 1")
    with pytest.raises(UsageError):
        shell.run_line_magic("neon", "frobnicate")
    assert password(direct_url) not in out


def test_no_password_in_any_output(shell, magics, direct_url, capsys):
    shell.run_line_magic("neon", f"connect secretive {direct_url}")
    for cell in ("%neon list", "%neon status", "%neon warm secretive", "%%sql\nselect 1 as x",
                 "%%sql\nselect nope"):
        _, out = run(shell, capsys, cell)
        assert password(direct_url) not in out, cell


def test_sql_without_a_connection_says_how_to_make_one(shell, magics):
    with pytest.raises(UsageError, match="%neon connect"):
        shell.run_cell_magic("sql", "", "select 1")


def test_load_ext_neon_notebook(shell):
    import neon_notebook

    if "load_ipython_extension" not in dir(neon_notebook):
        pytest.skip("neon_notebook does not re-export load_ipython_extension yet")
    shell.run_line_magic("load_ext", "neon_notebook")
    assert "neon" in shell.magics_manager.magics["line"]
    assert "sql" in shell.magics_manager.magics["cell"]


def test_status_shows_the_sessions_panel_in_a_notebook(shell, magics, monkeypatch):
    from neon_notebook.ui import magics as magics_module

    shown = []
    monkeypatch.setattr(magics_module, "in_notebook", lambda: True)
    monkeypatch.setattr(magics_module, "display", shown.append)
    shell.run_line_magic("neon", "connect")
    shell.run_line_magic("neon", "status")
    shell.run_line_magic("neon", "")  # bare %neon is status
    assert len(shown) == 2 and shown[0] is shown[1]  # one panel per session, shown twice
    assert "unknown" in shown[0].state_html.value
    shown[0].close()


def test_connect_list_and_status_print_the_snapshot_without_a_server(shell, capsys):
    """Nothing connects until a query: these commands read the session's status() only."""
    from neon_notebook.ui.status import status_text

    fresh = NeonMagics(shell)
    shell.register_magics(fresh)
    try:
        shell.run_line_magic("neon", "connect nowhere postgresql://alex:s3cret@127.0.0.1:1/app")
        shell.run_line_magic("neon", "list")
        shell.run_line_magic("neon", "status nowhere")
        out = capsys.readouterr().out
        status = fresh.sessions["nowhere"].status()
        assert out.startswith("nowhere: alex@127.0.0.1:1/app (pooled)\n")
        assert f"* nowhere: {status.endpoints} [unknown]" in out
        assert status_text(status) in out and "endpoint  alex@127.0.0.1:1/app" in out
        assert "s3cret" not in out
    finally:
        for session in fresh.sessions.values():
            session.close()


def test_use_a_session_made_in_python(shell, direct_url, capsys):
    import neon_notebook as nn

    shell.run_line_magic("load_ext", "neon_notebook")
    shell.user_ns["my_session"] = nn.connect(direct_url, suspend_after=None)
    try:
        shell.run_line_magic("neon", "use my_session")
        shell.run_cell_magic("sql", "answer", "select 6 * 7 as x")
        assert shell.user_ns["answer"]["x"].tolist() == [42]
    finally:
        shell.user_ns["my_session"].close()


# -- regressions of issue #9 ---------------------------------------------------------

CARET_VALUES = {
    "bytes": b"ab\x00\xff\\",
    "empty bytes": b"",
    "bytearray": bytearray(b"xyz"),
    "str with quotes": "it's \"quoted\"",
    "str with a backslash": "back\\slash",
    "non-ASCII str": "é✓ snow ☃",
    "None": None,
    "int": 123456789,
    "negative int": -5,
    "float": 1.5,
    "decimal": __import__("decimal").Decimal("-12.3450"),
    "datetime": __import__("datetime").datetime(2024, 1, 2, 3, 4, 5, 6),
    "aware datetime": __import__("datetime").datetime(2024, 1, 2, tzinfo=__import__("datetime").timezone.utc),
    "date": __import__("datetime").date(2024, 1, 2),
    "timedelta": __import__("datetime").timedelta(days=1, seconds=3),
    "list of ints": [1, 2, None],
    "list of str": ["a'b", None, "c\\d"],
    "list of bytes": [b"x\x00", None],
}


def caret_target(out: str) -> str:
    """The text of the cell from the caret on (LINE n: ... / ^ lines of an error)."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("LINE "))
    return lines[i][lines[i + 1].index("^"):]


@pytest.mark.parametrize("kind", CARET_VALUES)
def test_error_caret_after_a_parameter_of_any_type(shell, magics, capsys, kind):
    shell.run_line_magic("neon", "connect")
    shell.user_ns["value"] = CARET_VALUES[kind]
    result, out = run(shell, capsys, "%%sql\nselect :value as v, nope_col as w")
    assert isinstance(result.error_in_exec, CellError)
    assert caret_target(out).startswith("nope_col")


def test_error_caret_after_many_parameters(shell, magics, capsys):
    shell.run_line_magic("neon", "connect")
    names = [f"p{i}" for i in range(len(CARET_VALUES))]
    shell.user_ns.update(zip(names, CARET_VALUES.values()))
    selects = ",\n       ".join(f":{name} as {name}" for name in names)
    result, out = run(shell, capsys, f"%%sql\nselect {selects}, :p0 as again,\n  nope_col")
    assert isinstance(result.error_in_exec, CellError)
    assert caret_target(out).startswith("nope_col")


def test_cell_offset_agrees_with_the_server_for_bytes(direct_url):
    """The server's position of an error after a bytes literal maps back to the cell."""
    cell = "select :b, :s, nope"
    values = {"b": b"\x00\x01\x02\x03" * 10, "s": "x"}
    text, params, found = bind_parameters(cell, values)
    with psycopg.connect(direct_url) as conn:
        bound = psycopg.ClientCursor(conn).mogrify(text, params)
    position = bound.index("nope") + 1
    assert cell[cell_offset(position, found, params):].startswith("nope")


def test_zero_row_preview_shows_the_columns(shell, magics, capsys):
    shell.run_line_magic("neon", "connect")
    cell = "select 1::int4 as id, 'x'::text as label, now() as at where false"
    result, out = run(shell, capsys, f"%%sql\n{cell}")
    frame = result.result
    assert list(frame.columns) == ["id", "label", "at"] and len(frame) == 0
    assert str(frame["id"].dtype) == "Int32"
    assert "0 rows" in out and "no rows returned" not in out
    result, out = run(shell, capsys, f"%%sql --polars\n{cell}")
    assert result.result.columns == ["id", "label", "at"] and result.result.height == 0
    assert "0 rows" in out
    result, out = run(shell, capsys, f"%%sql --arrow\n{cell}")
    assert result.result.schema.names == ["id", "label", "at"] and result.result.num_rows == 0
    assert str(result.result.schema.field("id").type) == "int32"
    result, out = run(shell, capsys, "%%sql\ndo $$ begin end $$")  # no result set at all
    assert result.result is None and "done; no rows returned" in out


@pytest.mark.parametrize("flags", ["--pandas --polars", "--polars --arrow v", "--arrow --pandas v"])
def test_conflicting_output_options_are_refused(shell, magics, flags):
    shell.run_line_magic("neon", "connect")
    with pytest.raises(UsageError, match=r"one of --pandas, --polars, --arrow"):
        shell.run_cell_magic("sql", flags, "select 1 as x")
    assert "v" not in shell.user_ns


def test_repeating_one_output_option_is_fine(shell, magics):
    shell.run_line_magic("neon", "connect")
    shell.run_cell_magic("sql", "--polars --polars twice", "select 1 as x")
    assert shell.user_ns["twice"].rows() == [(1,)]


@pytest.mark.parametrize("line, var, kind", [
    ("df <<", "df", "pandas"),
    ("df<<", "df", "pandas"),
    ("  df   <<  ", "df", "pandas"),
    ("--polars df <<", "df", "polars"),
    ("df << --arrow", "df", "arrow"),
    ("--direct result <<", "result", "pandas"),
])
def test_var_arrow_arrow_is_a_synonym_of_var(shell, magics, line, var, kind):
    shell.run_line_magic("neon", "connect")
    shell.user_ns.pop(var, None)
    shell.run_cell_magic("sql", line, "select 6 * 7 as x")
    value = shell.user_ns[var]
    assert type(value).__module__.split(".")[0] == {"pandas": "pandas", "polars": "polars",
                                                    "arrow": "pyarrow"}[kind]
    assert value["x"][0] == 42 if kind != "arrow" else value.column("x").to_pylist() == [42]


def test_arrow_arrow_without_a_variable_says_what_is_missing(shell, magics):
    shell.run_line_magic("neon", "connect")
    with pytest.raises(UsageError, match=r"<< needs a variable name before it"):
        shell.run_cell_magic("sql", "<<", "select 1")


def test_client_errors_are_one_clear_message(shell, magics, direct_url, capsys):
    import neon_notebook as nn

    shell.user_ns["gone"] = nn.connect(direct_url, suspend_after=None)
    shell.run_line_magic("neon", "use gone")
    shell.user_ns["gone"].close()
    result, out = run(shell, capsys, "%%sql\nselect 1")
    assert isinstance(result.error_in_exec, CellError)
    assert "SessionClosed: this session is closed" in out and "Traceback" not in out
    shell.run_line_magic("neon", "connect")
    shell.run_line_magic("neon", "use default")
    shell.user_ns["surrogate"] = "\udcff"  # what os.fsdecode makes of an undecodable byte
    for cell in ("%%sql\nselect :surrogate as s", "%%sql into\nselect :surrogate as s"):
        result, out = run(shell, capsys, cell)
        assert isinstance(result.error_in_exec, CellError), cell
        assert "UnicodeEncodeError" in out and "surrogates not allowed" in out
        assert "Traceback" not in out


def test_the_readers_warnings_are_plain_notices(shell, magics, capsys):
    shell.run_line_magic("neon", "connect")
    for cell in ("%%sql\nselect 'NaN'::numeric as n", "%%sql into\nselect 'NaN'::numeric as n"):
        result, out = run(shell, capsys, cell)
        assert result.error_in_exec is None, cell
        assert out.count("WARNING:  column 'n' (numeric) is returned as text") == 1, out
        assert ".py:" not in out and "TypeFallbackWarning" not in out


def test_a_position_past_the_cell_shows_no_caret(direct_url):
    """A server position the cell cannot hold (the text sent was longer) gives no misleading LINE."""
    from neon_notebook.ui.magics import error_lines

    with psycopg.connect(direct_url) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn) as caught:
            conn.execute("select 1 as padding_the_text_sent, nope")
    lines = error_lines(caught.value, "select nope", [], None)
    assert lines[0] == 'ERROR:  column "nope" does not exist (SQLSTATE 42703)'
    assert not any(line.startswith("LINE") or line.strip() == "^" for line in lines)


@pytest.mark.parametrize("cell", [
    "set search_path = public; select nope_col from (select 1) s",
    # several rewrites (SET SESSION x -> SET LOCAL x is shorter), a parameter between them
    "set session work_mem = '8MB';\nset search_path = public; select :value as v,\n  nope_col from (select 1) s",
])
def test_error_caret_after_a_set_the_pooled_endpoint_rewrote(shell, magics, capsys, pgbouncer, cell):
    """On the pooled endpoint SET runs as SET LOCAL: the server's positions are mapped back to the cell."""
    shell.run_line_magic("neon", "connect")
    shell.user_ns["value"] = "a'b"
    result, out = run(shell, capsys, "%%sql\n" + cell)
    assert isinstance(result.error_in_exec, CellError)
    assert "SET LOCAL" in out  # the rewrite happened (its warning is shown)
    assert caret_target(out).startswith("nope_col"), out


# -- %neon write ---------------------------------------------------------------------


@pytest.fixture
def new_table(direct_url):
    """A fresh table name in public, dropped after the test."""
    name = f"w_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(direct_url, autocommit=True) as conn:
        conn.execute(f"drop table if exists {name}")


def test_write_a_variable_in_every_mode(shell, magics, direct_url, new_table, capsys):
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    shell.run_line_magic("neon", "connect")
    shell.user_ns["df"] = pd.DataFrame({"id": pd.array([1, 2, 3], dtype="Int32"),
                                        "label": pd.array(["one", None, "it's"], dtype="string")})
    shell.run_line_magic("neon", f"write df {new_table} --mode create --key id")
    assert "df: 3 rows written (create into " in capsys.readouterr().out
    query = f"select id, label from {new_table} order by id"
    assert fetchall(direct_url, query) == [(1, "one"), (2, None), (3, "it's")]
    assert fetchall(direct_url, "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
                    "and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary",
                    (new_table,)) == [("id",)]

    shell.user_ns["more"] = pl.DataFrame({"id": [4], "label": ["four"]}, schema={"id": pl.Int32, "label": pl.String})
    shell.run_line_magic("neon", f"write more public.{new_table} --direct")  # append, the default
    assert capsys.readouterr().out == f"more: 1 row written (append into public.{new_table})\n"
    assert magics.session().pool_stats()["direct"]["idle"] == 1

    shell.user_ns["changes"] = pa.table({"id": pa.array([1, 5], pa.int32()), "label": ["uno", "five"]})
    shell.run_line_magic("neon", f"write changes {new_table} --mode upsert --key id")
    assert "changes: 2 rows written (upsert into public." in capsys.readouterr().out
    assert fetchall(direct_url, query) == [(1, "uno"), (2, None), (3, "it's"), (4, "four"), (5, "five")]

    shell.run_line_magic("neon", f"write changes {new_table} --mode replace")
    assert fetchall(direct_url, query) == [(1, "uno"), (5, "five")]
    assert magics.session().last_query.write == f"replace into public.{new_table}"


def test_write_errors_are_clear_and_write_nothing(shell, magics, direct_url, table, capsys):
    import pandas as pd

    shell.run_line_magic("neon", f"connect secretive {direct_url}")
    with pytest.raises(UsageError, match="'nope' names no variable of the notebook"):
        shell.run_line_magic("neon", f"write nope {table}")
    shell.user_ns["df"] = pd.DataFrame({"id": [9], "label": ["nine"], "score": [0.5], "ok": [True]})
    with pytest.raises(UsageError, match=r"invalid choice: 'merge'"):
        shell.run_line_magic("neon", f"write df {table} --mode merge")
    with pytest.raises(UsageError, match=r"--key 'id,,label'"):
        shell.run_line_magic("neon", f"write df {table} --mode upsert --key id,,label")
    shell.user_ns["n"] = 42
    cases = {f"%neon write n {table}": "TypeError: write() takes a pandas or polars DataFrame",
             f"%neon write df {table} --mode create": "ConfigurationError: ",
             f"%neon write df {table} --mode upsert": "ConfigurationError: mode='upsert' needs key=",
             f"%neon write df {table} --mode upsert --key label": "ConfigurationError: "}
    for cell, expected in cases.items():
        result, out = run(shell, capsys, cell)
        assert isinstance(result.error_in_exec, CellError), cell
        assert expected in out and "Traceback" not in out, (cell, out)
        assert password(direct_url) not in out
    assert fetchall(direct_url, f"select count(*) from {table}") == [(3,)]


def test_write_shows_a_write_bar_in_a_notebook(shell, magics, new_table, monkeypatch):
    import pyarrow as pa

    from neon_notebook.ui import magics as magics_module
    from neon_notebook.ui import progress

    bars, shown = [], []
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr("IPython.display.display", shown.append)
    monkeypatch.setattr(magics_module, "progress_bar",
                        lambda **options: bars.append(progress.progress_bar(**options, delay=0)) or bars[-1])
    shell.run_line_magic("neon", "connect")
    shell.user_ns["t"] = pa.table({"n": pa.array(range(3000), pa.int64())})
    shell.run_line_magic("neon", f"write t {new_table}")
    [bar] = bars
    assert bar.kind == "write" and bar.total == 3000 and bar.rows == 3000  # the exact count, not an estimate
    [box] = shown
    assert box.label.value == new_table
    assert (box.gauge.value, box.gauge.bar_style) == (1.0, "success")
    assert box.text.value.startswith("written: 3,000 rows · 0.")
