"""The binary COPY decoder (``neon_notebook.readers._pgcopy``) on real and on broken input.

Real input comes from PostgreSQL's own ``COPY ... (FORMAT binary)``; the
oracle is psycopg's decoding of the same query.  Broken input (truncated,
mutated, random bytes) must raise, never crash or return a partial block.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neon_notebook.readers import iter_batches, read_arrow, to_parquet
from neon_notebook.readers import _copy, _decode
from neon_notebook.readers._registry import NUMERIC_DECIMAL, VARIABLE_CODES, VECTOR, VIEW_CODES, WIRE_CODES, builtin

pgcopy = _decode._pgcopy

ALLOCATE = functools.partial(pa.allocate_buffer)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One row per type the decoder reads, NULLs in the second row; each type's code is the registry's.
COLUMNS = {
    "b": "true",
    "i2": "-2::int2",
    "i4": "2147483647",
    "i8": "(-9223372036854775808)::int8",
    "f4": "'NaN'::float4",
    "f8": "'-Infinity'::float8",
    "d": "'infinity'::date",
    "ts": "'2024-02-29 12:34:56.789012'::timestamp",
    "tz": "'1900-01-01 00:00:00+05:30'::timestamptz",
    "t": "'24:00:00'::time",
    "iv": "interval '-1 year 2 days 03:04:05.000006'",
    "s": "E'tab\\there\\nnew ☃'",
    "y": "'\\x00ff10'::bytea",
    "j": "'{\"a\": [1, null]}'::jsonb",
    "u": "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
    "n": "-12345678901234567890.000100::numeric",
}


def _copy_binary(conn: psycopg.Connection, query: str) -> bytes:
    with conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
        return b"".join(bytes(chunk) for chunk in copy)


@pytest.fixture(scope="module")
def sample(direct_url):
    """A real binary COPY stream of two rows (values, then NULLs), and its codes."""
    with psycopg.connect(direct_url, autocommit=True) as conn:
        values = ", ".join(f"{expr} AS {name}" for name, expr in COLUMNS.items())
        nulls = ", ".join(f"NULL::{_type(conn, expr)}" for expr in COLUMNS.values())
        data = _copy_binary(conn, f"SELECT {values} UNION ALL SELECT {nulls}")
        oids = [c.type_code for c in conn.execute(f"SELECT {values} LIMIT 0").description]
    codes = "".join(builtin(oid).wire for oid in oids).encode()
    return data, codes


def _type(conn: psycopg.Connection, expr: str) -> str:
    return conn.execute(f"SELECT pg_typeof({expr})::text").fetchone()[0]


def test_decoder_is_built():
    # pip builds it; without a C compiler the readers fall back to COPY text,
    # which is slower -- not acceptable for this project's own test runs.
    assert pgcopy is not None, "neon_notebook.readers._pgcopy was not compiled (no C compiler?)"


def test_decodes_a_real_stream(sample):
    data, codes = sample
    assert set(codes.decode()) == set(WIRE_CODES) - {NUMERIC_DECIMAL, VECTOR}  # all but decimal128 and pgvector
    rows, columns, used = pgcopy.decode(data, codes, ALLOCATE)
    assert rows == 2 and used == codes and len(columns) == len(COLUMNS)
    for (validity, offsets, values), code in zip(columns, codes.decode()):
        assert validity is not None  # the second row is all NULLs
        assert bytes(validity)[0] & 0b11 == 0b01
        assert (offsets is None) == (code not in VARIABLE_CODES)


def test_numeric_text_matches_postgres(direct_url):
    """numeric_out's own text, for values around every digit-group boundary."""
    values = ["0", "0.0000", "-0.5", "1", "9999", "10000", "12345.6789", "0.00012", "-100000000.1",
              "1e-20", "123456789012345678901234567890.123456789", "NaN", "Infinity", "-Infinity",
              "0.1000", "1000.0001", "-99999999999999999999"]
    with psycopg.connect(direct_url, autocommit=True) as conn:
        query = "SELECT v::numeric FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i"
        data = _copy_binary(conn, psycopg.ClientCursor(conn).mogrify(query, [values]))
        expected = [r[0] for r in conn.execute(
            "SELECT v::numeric::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
            [values],
        )]
    rows, [(validity, offsets, text)], _ = pgcopy.decode(data, b"n", ALLOCATE)
    got = pa.Array.from_buffers(pa.string(), rows, [validity, offsets, text]).to_pylist()
    assert got == expected


def test_decimal_column_turns_to_text_on_nan(direct_url):
    with psycopg.connect(direct_url, autocommit=True) as conn:
        data = _copy_binary(conn, "SELECT v::numeric(6,2) FROM (VALUES (1.5), ('NaN'), (NULL)) AS t(v)")
        plain = _copy_binary(conn, "SELECT v::numeric(6,2) FROM (VALUES (1.5), (-2), (NULL)) AS t(v)")
    rows, [(validity, offsets, values)], used = pgcopy.decode(data, b"N", ALLOCATE, bytes([2]))
    assert used == b"n"
    assert pa.Array.from_buffers(pa.string(), rows, [validity, offsets, values]).to_pylist() == [
        "1.50", "NaN", None]
    rows, [(validity, offsets, values)], used = pgcopy.decode(plain, b"N", ALLOCATE, bytes([2]))
    assert used == b"N" and offsets is None
    got = pa.Array.from_buffers(pa.decimal128(6, 2), rows, [validity, values]).to_pylist()
    assert [str(v) if v is not None else None for v in got] == ["1.50", "-2.00", None]


def test_view_layout_matches_offsets(sample):
    data, codes = sample
    params = bytes(1 if c in VIEW_CODES else 0 for c in codes.decode())
    _, flat, _ = pgcopy.decode(data, codes, ALLOCATE)
    rows, viewed, _ = pgcopy.decode(data, codes, ALLOCATE, params)
    for code, (v1, o1, d1), (v2, o2, d2) in zip(codes.decode(), flat, viewed):
        if code not in VIEW_CODES:
            continue
        plain_type, view_type = (pa.binary(), pa.binary_view()) if code == "y" else (pa.string(), pa.string_view())
        a = pa.Array.from_buffers(plain_type, rows, [v1, o1, d1])
        b = pa.Array.from_buffers(view_type, rows, [v2, o2, d2])
        b.validate(full=True)
        assert b.to_pylist() == a.to_pylist()


def test_every_truncation_raises(sample):
    """A block cut anywhere but a row boundary is an error, never fewer rows passed off as whole."""
    data, codes = sample
    header = 19
    null_row = 2 + 4 * len(codes)  # the field count, then -1 for each field
    first_row_end = len(data) - 2 - null_row
    whole_rows = {header, first_row_end, len(data) - 2, len(data)}
    for cut in range(1, len(data)):
        if cut in whole_rows:
            continue
        with pytest.raises(ValueError):
            pgcopy.decode(data[:cut], codes, ALLOCATE)


@FUZZ
@given(data=st.binary(max_size=200), codes=st.text(WIRE_CODES, min_size=1, max_size=6))
def test_random_bytes_never_crash(data, codes):
    try:
        pgcopy.decode(data, codes.encode(), ALLOCATE, bytes(len(codes)))
    except (ValueError, ArithmeticError):
        pass


@FUZZ
@given(st.data())
def test_mutated_streams_never_crash(sample, data):
    stream, codes = sample
    stream = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    try:
        pgcopy.decode(bytes(stream), codes, ALLOCATE)
    except (ValueError, ArithmeticError):
        pass


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown column code"):
        pgcopy.decode(b"", b"x", ALLOCATE)
    with pytest.raises(ValueError, match="scale"):
        pgcopy.decode(b"", b"N", ALLOCATE)
    with pytest.raises(ValueError, match="too small"):
        pgcopy.decode(b"\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01", b"4", lambda n: bytearray(0) if n else bytearray())


def test_reader_uses_binary_for_common_types_and_text_for_the_rest(conn):
    conn.execute("DROP TYPE IF EXISTS mood CASCADE; CREATE TYPE mood AS ENUM ('ok', 'sad')")
    conn.execute("DROP DOMAIN IF EXISTS price; CREATE DOMAIN price AS numeric(8,2)")
    common = ", ".join(COLUMNS.values())
    common += ", 'ok'::mood, 3.5::price, 'n'::name, 'c'::char(3), 'v'::varchar, 7::oid, '{}'::json"
    stream = iter_batches(conn, f"SELECT {common}")
    stream.read_all()
    assert stream.path == "copy binary"
    for other in ["ARRAY[1, 2]", "'10.0.0.1'::inet", "'12:00+01'::timetz", "'a'::\"char\"", "'(1,2)'::point"]:
        stream = iter_batches(conn, f"SELECT {common}, {other}")
        stream.read_all()
        assert stream.path == "copy text", other


def test_timestamp_beyond_arrow_range_is_text_not_a_wrong_value(conn):
    from neon_notebook.readers import TypeFallbackWarning

    with pytest.warns(TypeFallbackWarning, match="past Arrow's range"):
        t = read_arrow(conn, "SELECT '294276-12-31 23:59:59'::timestamp AS t")
    assert t.column("t").to_pylist() == ["294276-12-31 23:59:59"]
    assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is fine


@pytest.fixture(params=["C loop", "Python loop"])
def reading_loop(request, monkeypatch):
    """Run a test with the C reading loop (libpq's PQgetCopyData) and with the Python one."""
    native = request.param == "C loop"
    if native:
        assert _copy.native_receive(), "the C reading loop could not bind psycopg's libpq"
    monkeypatch.setattr(_copy, "NATIVE_RECEIVE", native)
    return request.param


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_both_reading_loops_give_the_same_table(conn, reading_loop, binary):
    fmt = "binary" if binary else "text"
    query = ("SELECT i, md5(i::text) AS s, CASE WHEN i % 3 = 0 THEN NULL ELSE i * 1.5 END AS f, "
             "now()::date - i AS d FROM generate_series(1, 50000) i")
    expected = conn.execute(query).fetchall()
    table = read_arrow(conn, query, copy_format=fmt)
    assert table.num_rows == 50000 and table.column(0).num_chunks > 1  # several 1 MB blocks
    assert [tuple(r.values()) for r in table.to_pylist()] == expected
    stream = iter_batches(conn, query, batch_rows=7000, copy_format=fmt)
    assert [b.num_rows for b in stream] == [7000] * 7 + [1000]
    assert stream.path == ("copy binary" if binary else "copy text") and stream.rows == 50000
    seen = []
    read_arrow(conn, query, progress=lambda rows, nbytes, estimate: seen.append((rows, nbytes)),
               copy_format=fmt)
    assert seen[-1][0] == 50000 and seen == sorted(seen)


def test_blocks_cut_at_the_trailer(conn, reading_loop):
    """batch_rows landing on the last row, on an empty result, and on one row."""
    for n, batch in [(10, 5), (0, 1), (1, 1), (3, 1)]:
        stream = iter_batches(conn, "SELECT i, now()::date AS d FROM generate_series(1, %s) i", [n],
                              batch_rows=batch)
        sizes = [b.num_rows for b in stream]
        assert sum(sizes) == n and all(s == batch for s in sizes) and stream.rows == n
        assert stream.path == "copy binary"


@given(vectors=st.lists(st.one_of(st.none(), st.lists(
    st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=16)), max_size=8))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_pgvector_binary_against_psycopg_and_the_text_path(vector_table, vectors):
    conn, table = vector_table
    conn.execute(f"TRUNCATE {table} RESTART IDENTITY")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (v) VALUES (%s::vector)",
                        [(None if v is None else json.dumps(v),) for v in vectors])
    query = f"SELECT v FROM {table} ORDER BY id"
    stream = iter_batches(conn, query)
    binary = stream.read_all()
    assert stream.path == "copy binary" and binary.schema.field("v").type == pa.list_(pa.float32())
    oracle = [None if r[0] is None else [float(np.float32(x)) for x in json.loads(r[0])]
              for r in conn.execute(f"SELECT v::text FROM {table} ORDER BY id")]
    assert binary.column("v").to_pylist() == oracle
    assert read_arrow(conn, query, copy_format="text").equals(binary)


@pytest.fixture(scope="module")
def vector_table(direct_url):
    with psycopg.connect(direct_url, autocommit=True, prepare_threshold=None) as conn:
        # The embedded PostgreSQL ships pgvector; without it this fails, as it should.
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("DROP TABLE IF EXISTS vec_rt; CREATE TABLE vec_rt (id serial PRIMARY KEY, v vector)")
        yield conn, "vec_rt"


def test_decoder_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    """The C source, built with ASan + UBSan, decodes 20,000 random and corrupted blocks cleanly."""
    import subprocess
    import sys
    import sysconfig
    from pathlib import Path

    source = Path(_decode.__file__).with_name("_pgcopy.c")
    target = tmp_path / ("_pgcopy" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(["cc", "-shared", "-fPIC", "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                    "-I" + sysconfig.get_paths()["include"], str(source), "-o", str(target)], check=True)
    runtimes = [subprocess.run(["cc", f"-print-file-name={lib}"], capture_output=True, text=True,
                               check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    fuzz = Path(__file__).with_name("pgcopy_fuzz.py")
    proc = subprocess.run([sys.executable, str(fuzz), "20000", str(tmp_path)], capture_output=True, text=True,
                          env={"LD_PRELOAD": ":".join(runtimes), "ASAN_OPTIONS": "detect_leaks=0",
                               "PATH": "/usr/bin:/bin"}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, errors = (int(x) for x in proc.stdout.split()[1::2])
    assert ok > 3000 and errors > 3000  # both valid and broken blocks were exercised


def test_copy_format_text_on_request(conn, tmp_path):
    import pyarrow.parquet as pq

    query = "SELECT i, i % 2 = 0 AS even, now()::date + i AS d FROM generate_series(1, 3000) i"
    binary = iter_batches(conn, query)
    text = iter_batches(conn, query, copy_format="text")
    assert binary.read_all().equals(text.read_all())
    assert (binary.path, text.path) == ("copy binary", "copy text")
    assert text.bytes < binary.bytes  # small integers and booleans: text is the smaller format
    assert read_arrow(conn, query, copy_format="text").equals(read_arrow(conn, query))
    to_parquet(conn, query, tmp_path / "t.parquet", copy_format="text")
    assert pq.read_table(tmp_path / "t.parquet").num_rows == 3000
    with pytest.raises(ValueError, match="copy_format must be 'binary' or 'text'"):
        read_arrow(conn, query, copy_format="csv")
    assert conn.execute("SELECT 1").fetchone() == (1,)
