"""What the HTTP path needs imports and works where psycopg is not installed (Pyodide has no libpq).

Each test runs its code in a fresh interpreter whose ``sys.modules`` holds ``None``
for psycopg, psycopg_pool and psycopg_binary, so importing them fails as if they
were not installed, and checks afterwards that none of them got loaded. Add a
transport's case as one more ``test_..._without_psycopg`` calling :func:`without_psycopg`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

BLOCKED = ("psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c")

_PRELUDE = f"""
import sys
for _name in {BLOCKED!r}:
    sys.modules[_name] = None  # "import psycopg" now raises ImportError
"""
_CHECK = """
_loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] in {blocked!r} and v is not None)
assert not _loaded, f"psycopg was loaded: {{_loaded}}"
print("NO-PSYCOPG-OK")
""".format(blocked=BLOCKED)


def without_psycopg(code: str, timeout: float = 60) -> str:
    """Run ``code`` in a new interpreter that cannot import psycopg; its stdout (fails on any error)."""
    script = _PRELUDE + textwrap.dedent(code) + _CHECK
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and "NO-PSYCOPG-OK" in done.stdout, done.stderr or done.stdout
    return done.stdout


def test_the_blocking_works():
    without_psycopg("""
        try:
            import psycopg
        except ImportError:
            pass
        else:
            raise AssertionError("psycopg imported")
    """)


def test_package_and_error_tree_without_psycopg():
    without_psycopg("""
        import pickle
        import neon_notebook as nn
        from neon_notebook import errors

        assert nn.NeonError is errors.NeonError and nn.__version__
        # The tree keeps its shape on the stand-in driver bases.
        assert issubclass(nn.ConnectError, errors.OperationalError)
        assert issubclass(nn.PoolExhausted, errors.PoolTimeout) and issubclass(errors.PoolTimeout, errors.OperationalError)
        assert issubclass(nn.UnrepresentableValue, errors.DataError)
        assert issubclass(nn.SessionStateRefused, errors.NotSupportedError)
        assert issubclass(nn.DecodeError, errors.InternalError)
        assert issubclass(errors.OperationalError, errors.DatabaseError) and issubclass(errors.DatabaseError, errors.Error)
        assert errors.Error.__module__ == "neon_notebook.errors"
        err = nn.WakeTimeout(attempts=3, waited=12.5, last_reason="starting up")
        assert "3 attempts" in str(err) and isinstance(err, errors.Error)

        # A server's SQL error: SQLError with psycopg's diag names.
        diag = errors.Diagnostic(severity="ERROR", sqlstate="42P01", statement_position="15",
                                 message_primary='relation "nope" does not exist', message_hint="check it")
        made = errors.sql_error(diag)
        assert type(made) is errors.SQLError and isinstance(made, errors.DatabaseError)
        assert not isinstance(made, errors.NeonError)
        assert made.sqlstate == "42P01" and made.diag.message_hint == "check it" and made.position == 15
        assert str(made) == 'relation "nope" does not exist'
        assert str(errors.sql_error(diag, "with an excerpt")) == "with an excerpt"
        back = pickle.loads(pickle.dumps(made))
        assert back.sqlstate == "42P01" and back.diag == diag and str(back) == str(made)
        assert errors.SQLError().sqlstate is None and errors.SQLError().position is None
    """)


def test_urls_and_endpoint_without_psycopg():
    without_psycopg("""
        from neon_notebook._config import resolve
        from neon_notebook._endpoint import Endpoint, summary
        from neon_notebook._urls import LIBPQ_KEYWORDS, _libpq_keywords, parse_url
        from neon_notebook.errors import ConfigurationError

        assert _libpq_keywords() == LIBPQ_KEYWORDS
        made_up = "S3cr%40t"  # a made-up password, percent-encoded: no real endpoint or secret here
        url = (f"postgresql://alex:{made_up}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
               "?pgbouncer=true&connect_timeout=10&connection_limit=3&channel_binding=require&schema=app")
        endpoint, chosen = parse_url(url, "DATABASE_URL", known_direct=False)
        assert endpoint.pooled and endpoint.password == "S3cr@t" and endpoint.database == "neondb"
        assert dict(endpoint.params) == {"channel_binding": "require", "sslmode": "require"}
        assert chosen == {"pool_size": 3, "connect_timeout": 10.0, "schema": "app"}
        assert "S3cr" not in repr(endpoint) + str(endpoint) + summary(endpoint)
        assert endpoint.endpoint_id == "ep-cool-darkness-123456"

        settings = resolve(url)
        assert settings.direct.host == "ep-cool-darkness-123456.us-east-2.aws.neon.tech" and not settings.direct.pooled
        assert settings.connect_timeout == 10.0 and settings.pool_size == 3

        for bad, says in [("postgresql://u:S3cr3tPw@h/db?foo=1", 'invalid URI query parameter: "foo"'),
                          ("postgresql://u:S3cr3tPw@h/d b", "contains a space"),
                          ("host=h dbname=x", "key=value connection strings are not accepted")]:
            try:
                parse_url(bad, "the url argument", known_direct=False)
            except ConfigurationError as exc:
                assert says in str(exc) and "S3cr3tPw" not in str(exc), str(exc)
            else:
                raise AssertionError(bad)

        # A conninfo string is what libpq connects with: it needs psycopg, and says so.
        try:
            Endpoint(host="h").conninfo()
        except ImportError:
            pass
        else:
            raise AssertionError("conninfo() without psycopg")
    """)


def test_retry_helpers_without_psycopg():
    without_psycopg("""
        import random
        from neon_notebook._retry import Attempts, Backoff, Deadline, retry_call

        now = [0.0]
        deadline = Deadline(10.0, clock=lambda: now[0])
        backoff = Backoff(random.Random(1))
        delays = [backoff.next_delay() for _ in range(6)]
        assert all(Backoff.initial_delay <= d <= Backoff.max_delay for d in delays)
        now[0] = 9.0
        assert deadline.remaining() == 1.0 and deadline.clamp(None) == Deadline.min_attempt_timeout
        attempts = Attempts()
        assert retry_call(lambda timeout: timeout, deadline=Deadline(5.0), attempt_timeout=3.0,
                          attempts=attempts) == 3.0
        assert attempts.count == 1
        try:  # not a driver or OS error: passes through untouched, not retried
            retry_call(lambda timeout: 1 / 0, deadline=Deadline(5.0), attempts=attempts)
        except ZeroDivisionError:
            assert attempts.count == 2
    """)


def test_text_decoding_without_psycopg():
    without_psycopg("""
        import datetime as dt
        import decimal
        import pyarrow as pa
        from neon_notebook.readers import _registry, _text
        from neon_notebook.readers._arrays import load_array
        from neon_notebook.readers._assemble import table_from_blocks
        from neon_notebook.readers._decode import text_block
        from neon_notebook.readers._kinds import Array, Bytea, Column, make_kind

        settings = {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
                    "bytea_output": "hex"}

        def column(name, oid, typmod=-1):
            row = _registry.builtin(oid)
            if row is None:  # a builtin array: its element's kind, split by load_array
                element = _registry.builtin(_registry.array_element(oid))
                return Column(name, oid, typmod, Array(make_kind(element, typmod, settings)))
            return Column(name, oid, typmod, make_kind(row, typmod, settings), row.wire)

        cols = [column("i", 23), column("n", 1700, (10 << 16 | 2) + 4), column("ts", 1184),
                column("d", 1082), column("b", 17), column("tags", 1009), column("xs", 1007)]
        rows = [[b"42", b"3.14", b"2024-05-01 12:30:00.5+00", b"2024-02-29", b"\\\\xdead",
                 b'{a,"b c",NULL}', b"{1,2,3}"],
                [None, b"-0.50", b"infinity", b"0044-03-15 BC", b"\\\\x", b"{}", b"[0:1]={7,8}"]]
        values = [list(c) for c in zip(*rows)]
        table = table_from_blocks(cols, [text_block(cols, values, len(rows))])
        assert table.column("i").to_pylist() == [42, None]
        assert table.column("n").type == pa.decimal128(10, 2)
        assert table.column("n").to_pylist() == [decimal.Decimal("3.14"), decimal.Decimal("-0.50")]
        assert table.column("ts").type == pa.timestamp("us", tz="UTC")
        assert table.column("ts")[0].as_py() == dt.datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=dt.timezone.utc)
        assert table.column("ts")[1].value == _text.TIMESTAMP_INFINITY_US
        assert table.column("d")[0].as_py() == dt.date(2024, 2, 29)
        assert table.column("b").to_pylist() == [b"\\xde\\xad", b""]
        assert table.column("tags").to_pylist() == [["a", "b c", None], []]
        assert table.column("xs").to_pylist() == [[1, 2, 3], [7, 8]]

        assert load_array(b'{{1,2},{"x\\\\"y",NULL}}') == [["1", "2"], ['x"y', None]]
        escaped = Bytea(escape=True).from_text(pa.array(["a\\\\\\\\b\\\\000\\\\377", None]))
        assert escaped.to_pylist() == [b"a\\\\b\\x00\\xff", None]
    """)


def test_http_transport_without_psycopg(compute):
    """The whole HTTP path: connect, execute, read into Arrow and pandas, an SQL error with its fields."""
    out = without_psycopg(f"""
        import neon_notebook as nn
        from neon_notebook import errors

        s = nn.connect({compute.pooled_url!r}, direct_url={compute.direct_url!r}, transport="http",
                       http_url={compute.http_url!r})
        assert s.execute("create temp table t (x int)") == -1  # its own request: gone after it
        assert s.execute("select * from generate_series(1, %s)", [3]) == 3
        table = s.read_arrow("select %s::int8 as n, %s as t, array[1.5::float8, null] as a", [7, "é"], progress=False)
        assert table.to_pylist() == [{{"n": 7, "t": "é", "a": [1.5, None]}}], table.to_pylist()
        assert str(table.schema.field("a").type) == "list<item: double>"
        assert s.read_pandas("select 1 as x", progress=False)["x"].tolist() == [1]
        try:
            s.read_arrow("select * from nope", progress=False)
        except errors.SQLError as exc:
            assert exc.sqlstate == "42P01" and exc.diag.statement_position == "15", exc.diag
            assert "LINE 1: select * from nope" in str(exc)
        else:
            raise AssertionError("no error")
        assert {urlsplit(compute.direct_url).password!r} not in repr(s) + str(s.status())
        print(s.state.value)
    """)
    assert "active" in out
