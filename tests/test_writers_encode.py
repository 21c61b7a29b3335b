"""The binary COPY encoder (neon_notebook/writers): Arrow in, PostgreSQL's own decoding out.

Each test creates a table with ``_pgtypes``' DDL (or a given one), sends the
encoder's stream with psycopg's ``copy.write``, and compares what psycopg reads
back (the oracle) with the Arrow input's ``to_pylist()``.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from readers_support import connect_raw

from neon_notebook.errors import ConfigurationError, UnrepresentableValue
from neon_notebook.writers import _pgtypes
from neon_notebook.writers._encode import HEADER, TRAILER, Encoder

UTC = dt.timezone.utc


def stream(data: pa.Table, targets, block_bytes: int = 1 << 20) -> list[bytes]:
    encoder = Encoder(data.schema, targets, block_bytes=block_bytes)
    return [block for batch in data.to_batches() for block in encoder.blocks(batch)]


def copy_in(conn, table: str, data: pa.Table, targets=None, *, create=True) -> list[tuple]:
    """Create (unless told not to) and fill pg_temp.<table>; return psycopg's rows in order."""
    ident = sql.Identifier("pg_temp", table)
    targets = _pgtypes.create_targets(data.schema) if targets is None else targets
    if create:
        conn.execute(_pgtypes.create_table(ident, data.schema, targets))
    cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in data.schema)
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(ident, cols)) as cp:
        cp.write(HEADER + b"".join(stream(data, targets)) + TRAILER)
    return conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(cols, ident)).fetchall()


def as_rows(data: pa.Table) -> list[tuple]:
    return list(zip(*(data.column(i).to_pylist() for i in range(data.num_columns))))


def same(a, b) -> bool:
    """Equal values (NaN equals NaN; a bool only equals the same bool, not 0 or 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


TEXTS = ["", "plain", "tab\there", "new\nline", "back\\slash", "quote'\"", "ünïcødé ✓ 𝄞", None, "\r\n"]
DECIMALS = [Decimal("1000000000.5"), Decimal("0.00001"), Decimal("-12345678901234567890.1234567"),
            Decimal("1000000000"), Decimal("-1000000000000000000.0000001"), Decimal("0"),
            Decimal("9999999999999999999999999999999.9999999"), None, Decimal("100000000.0000000")]


def every_type() -> pa.Table:
    n = len(TEXTS)

    def col(values, type_):
        return pa.array((values * n)[:n], type_)
    return pa.table({
        "k": pa.array(range(n), pa.int32()),
        "i8": col([-128, 127, None, 0], pa.int8()),
        "i16": col([-32768, 32767, None], pa.int16()),
        "i32": col([-2**31, 2**31 - 1, None], pa.int32()),
        "i64": col([-2**63, 2**63 - 1, None, 0], pa.int64()),
        "u8": col([0, 255, None], pa.uint8()),
        "u16": col([0, 65535, None], pa.uint16()),
        "u32": col([0, 2**32 - 1, None], pa.uint32()),
        "u64": col([0, 2**64 - 1, None, 2**63], pa.uint64()),
        "f32": col([1.5, float("nan"), float("inf"), -float("inf"), None, -0.0], pa.float32()),
        "f64": col([1e308, float("nan"), -float("inf"), None, 5e-324, 0.1], pa.float64()),
        "b": col([True, False, None], pa.bool_()),
        "s": pa.array(TEXTS, pa.string()),
        "ls": pa.array(TEXTS[::-1], pa.large_string()),
        "sv": pa.array(TEXTS, pa.string_view()),
        "cat": pa.array(TEXTS, pa.string()).dictionary_encode(),
        "bin": col([b"", b"\x00\xff\\", None, bytes(range(256))], pa.binary()),
        "lbin": col([b"x", None, b""], pa.large_binary()),
        "d": col([dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(1970, 1, 1), dt.date(2000, 1, 1)], pa.date32()),
        "ts": col([dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), None,
                   dt.datetime(1969, 12, 31, 23, 59, 59, 1)], pa.timestamp("us")),
        "ts_s": col([dt.datetime(2024, 2, 29, 12), None], pa.timestamp("s")),
        "tstz": col([dt.datetime(2024, 3, 31, 1, 30, tzinfo=UTC), None, dt.datetime(1, 1, 1, tzinfo=UTC)],
                    pa.timestamp("ms", tz="Europe/Paris")),
        "t": col([dt.time(0), dt.time(23, 59, 59, 999999), None], pa.time64("us")),
        "t32": col([dt.time(12, 30, 1), None], pa.time32("s")),
        "dur": col([dt.timedelta(0), dt.timedelta(days=-3, microseconds=7), None,
                    dt.timedelta(days=36500, seconds=5)], pa.duration("us")),
        "num": pa.array(DECIMALS, pa.decimal128(38, 7)),
        "num5": col([Decimal("1.5"), Decimal("-0.00001"), None, Decimal("100000.00000")], pa.decimal128(11, 5)),
    })


def test_every_type_round_trips_through_postgres(conn):
    data = every_type()
    got = copy_in(conn, "every_type", data)
    want = as_rows(data)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for name, a, b in zip(data.column_names, w, g):
            assert same(a, b), (name, a, b)
    assert [type(v) for v in got[0]][1:5] == [int] * 4


def test_created_types_hold_each_arrow_type_exactly(conn):
    data = every_type()
    conn.execute(_pgtypes.create_table(sql.Identifier("pg_temp", "ddl"), data.schema))
    types = dict(conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'pg_temp.ddl'::regclass AND attnum > 0").fetchall())
    assert types == {
        "k": "integer", "i8": "smallint", "i16": "smallint", "i32": "integer", "i64": "bigint",
        "u8": "smallint", "u16": "integer", "u32": "bigint", "u64": "numeric(20,0)",
        "f32": "real", "f64": "double precision", "b": "boolean", "s": "text", "ls": "text",
        "sv": "text", "cat": "text", "bin": "bytea", "lbin": "bytea", "d": "date",
        "ts": "timestamp without time zone", "ts_s": "timestamp without time zone",
        "tstz": "timestamp with time zone", "t": "time without time zone",
        "t32": "time without time zone", "dur": "interval", "num": "numeric(38,7)",
        "num5": "numeric(11,5)"}


def test_nan_is_not_null_and_empty_text_is_not_null(conn):
    data = pa.table({"f": pa.array([float("nan"), None], pa.float64()), "s": pa.array(["", None])})
    copy_in(conn, "nulls", data)
    assert conn.execute("SELECT f = 'NaN', f IS NULL, s = '', s IS NULL FROM pg_temp.nulls "
                        "ORDER BY f NULLS LAST").fetchall() == [(True, False, True, False),
                                                                (None, True, None, True)]


def test_sliced_and_chunked_input_uses_array_offsets(conn):
    data = every_type()
    sliced = pa.concat_tables([data.slice(1, 3), data.slice(5)])  # two batches, both offset
    got = copy_in(conn, "sliced", sliced)
    for g, w in zip(got, as_rows(sliced)):
        assert all(same(a, b) for a, b in zip(w, g)), (w, g)


def test_pooled_endpoint_inside_a_transaction(pooled_url):
    data = every_type().select(["k", "s", "num", "tstz"])
    with connect_raw(pooled_url) as c, c.transaction():
        got = copy_in(c, "pooled", data)
    assert got == as_rows(data)


def test_narrowing_into_an_existing_column_is_range_checked(conn):
    conn.execute("CREATE TEMP TABLE narrow (k int4, v int4, w int2)")
    big = pa.table({"k": pa.array([0, 1], pa.int64()), "v": pa.array([2**31 - 1, -2**31], pa.int64()),
                    "w": pa.array([-32768, None], pa.int64())})
    targets = [_pgtypes.target(f, oid) for f, oid in zip(big.schema, (23, 23, 21))]
    assert copy_in(conn, "narrow", big, targets, create=False) == [(0, 2**31 - 1, -32768), (1, -2**31, None)]

    bad = pa.concat_tables([big, pa.table({"k": pa.array([2, 3], pa.int64()), "v": pa.array([5, 2**31], pa.int64()),
                                           "w": pa.array([1, 2], pa.int64())}, schema=big.schema)])
    with pytest.raises(UnrepresentableValue) as err:
        stream(bad, targets)
    message = str(err.value)
    assert "'v'" in message and "row 3" in message and "2147483648" in message and "int4" in message
    assert isinstance(err.value, psycopg.DataError)


def test_values_past_the_wire_range_are_errors_not_wraparounds():
    data = pa.table({"u": pa.array([2**63], pa.uint64())})
    with pytest.raises(UnrepresentableValue, match="'u', row 0"):
        stream(data, [_pgtypes.target(data.schema.field(0), 20)])
    data = pa.table({"t": pa.array([0, 10**17], pa.timestamp("s"))})
    with pytest.raises(UnrepresentableValue, match=r"'t', row 1.*100000000000000000 \(timestamp\[s\]\).*range"):
        stream(data, _pgtypes.create_targets(data.schema))


def test_nanoseconds_are_written_when_whole_microseconds_else_refused(conn):
    ns = pa.array([1_700_000_000_123_456_000, None], pa.timestamp("ns", tz="UTC"))
    got = copy_in(conn, "ns", pa.table({"t": ns}))
    assert got == [(dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),), (None,)]
    with pytest.raises(UnrepresentableValue, match="row 1.*not a whole number of microseconds"):
        stream(pa.table({"t": pa.array([0, 1_000_000_001], pa.duration("ns"))}),
               [_pgtypes.create_target(pa.field("t", pa.duration("ns")))])


def test_unsupported_types_raise_naming_the_column():
    for type_ in (pa.binary(16), pa.dense_union([pa.field("a", pa.int8())]), pa.decimal128(5, -2),
                  pa.bool8(), pa.list_(pa.binary(16))):
        with pytest.raises(ConfigurationError, match="column 'odd'.*not supported"):
            _pgtypes.create_target(pa.field("odd", type_))
    with pytest.raises(ConfigurationError, match="column 'odd' has no type.*null.*dtype"):
        _pgtypes.create_target(pa.field("odd", pa.null()))
    with pytest.raises(ConfigurationError, match="column 'odd' \\(its elements\\) has no type"):
        _pgtypes.create_target(pa.field("odd", pa.list_(pa.null())))
    for type_, word in ((pa.struct([("b", pa.binary())]), "the value.b is binary"),
                        (pa.map_(pa.binary(), pa.int8()), "binary keys"),
                        (pa.struct([("a", pa.int8()), ("a", pa.int8())]), "several fields named"),
                        (pa.list_(pa.struct([("d", pa.duration("s"))])), "the value.d is duration")):
        with pytest.raises(ConfigurationError, match=f"column 'odd'.*{word}"):
            _pgtypes.create_target(pa.field("odd", type_))


def test_existing_columns_refuse_types_that_would_change_values():
    cases = [(pa.decimal128(10, 4), 1700, _pgtypes._typmod(12, 2), "round"),
             (pa.timestamp("us"), 1184, -1, "timestamptz"),
             (pa.timestamp("us", tz="UTC"), 1114, -1, "timestamp"),
             (pa.float64(), 700, -1, "float4"),
             (pa.string(), 17, -1, "bytea")]
    for type_, oid, typmod, word in cases:
        with pytest.raises(ConfigurationError, match=f"column 'c'.*{word}"):
            _pgtypes.target(pa.field("c", type_), oid, typmod)
    # a wider scale is exact: PostgreSQL pads
    assert _pgtypes.target(pa.field("c", pa.decimal128(10, 2)), 1700, _pgtypes._typmod(12, 4)).op == b"xN"


def test_blocks_are_bounded_and_concatenate_to_the_whole():
    data = pa.table({"i": pa.array(range(1000), pa.int64()), "s": pa.array([str(i) * 3 for i in range(1000)])})
    targets = _pgtypes.create_targets(data.schema)
    whole = stream(data, targets)
    small = stream(data, targets, block_bytes=600)
    assert len(whole) == 1 and len(small) > 40
    assert b"".join(small) == whole[0]
    assert max(map(len, small)) <= 600


texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(
    st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
    st.one_of(st.none(), st.floats(allow_nan=True, width=64)),
    st.one_of(st.none(), texts),
    st.one_of(st.none(), st.decimals(min_value=-10**29, max_value=10**29, places=8, allow_nan=False))),
    max_size=20))
def test_property_ints_floats_text_decimals(conn, rows):
    data = pa.table({"k": pa.array(range(len(rows)), pa.int32()),
                     "i": pa.array([r[0] for r in rows], pa.int64()),
                     "f": pa.array([r[1] for r in rows], pa.float64()),
                     "s": pa.array([r[2] for r in rows], pa.string()),
                     "n": pa.array([r[3] for r in rows], pa.decimal128(38, 8))})
    conn.execute("DROP TABLE IF EXISTS pg_temp.prop")
    got = copy_in(conn, "prop", data)
    for g, w in zip(got, as_rows(data)):
        assert all(same(a, b) for a, b in zip(w, g)), (w, g)


def test_text_like_columns_take_strings(conn):
    conn.execute("CREATE TEMP TABLE tl (k int4, v varchar(3), c char(3), n name)")
    data = pa.table({"k": pa.array([1, 2], pa.int32()), "v": ["abc", ""], "c": ["a", None], "n": ["x", "y"]})
    targets = [_pgtypes.target(f, oid, typmod) for f, oid, typmod in
               zip(data.schema, (23, 1043, 1042, 19), (-1, 7, 7, -1))]
    assert [t.sql_type for t in targets] == ["int4", "varchar(3)", "bpchar(3)", "name"]
    assert copy_in(conn, "tl", data, targets, create=False) == [(1, "abc", "a  ", "x"), (2, "", None, "y")]
    with pytest.raises(psycopg.errors.StringDataRightTruncation):  # the server checks varchar(n)
        copy_in(conn, "tl", pa.table({"k": pa.array([3], pa.int32()), "v": ["abcd"], "c": ["x"], "n": ["z"]}),
                targets, create=False)


def test_citext_is_recognised_by_its_name():
    """An extension type has no fixed OID: format_type's name says what it is (its input is text)."""
    field = pa.field("c", pa.string())
    assert _pgtypes.target(field, 90001, -1, "citext").op == b"sy"
    assert _pgtypes.target(field, 90001, -1, "public.citext").sql_type == "public.citext"
    with pytest.raises(ConfigurationError, match="column 'c'.*type 90001"):
        _pgtypes.target(field, 90001)


UUID_TEXTS = ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
              "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11",
              "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
              "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
              "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-", "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
              "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
              "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
              " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ""]


def test_text_into_uuid_is_parsed_as_postgres_parses_it(conn):
    """The oracle: the server's own uuid_in on the same text."""
    conn.execute("CREATE TEMP TABLE uu (k int4, u uuid)")
    for k, text in enumerate(UUID_TEXTS):
        try:
            want = conn.execute("SELECT %s::text::uuid", (text,)).fetchone()[0]
        except psycopg.errors.InvalidTextRepresentation:
            want = None
        data = pa.table({"k": pa.array([k], pa.int32()), "u": [text]})
        targets = [_pgtypes.target(data.schema.field(0), 23), _pgtypes.target(data.schema.field(1), 2950)]
        if want is None:
            with pytest.raises(UnrepresentableValue, match="'u', row 0.*not a UUID"):
                stream(data, targets)
        else:
            assert copy_in(conn, "uu", data, targets, create=False)[-1] == (k, want), text


def digits(text: str) -> int:
    """Significant digits of a number's text."""
    return len(Decimal(text).normalize().as_tuple().digits)


def json_texts(values, type_) -> list[str]:
    """The JSON the encoder writes for struct<v: type_> values (read off the COPY stream)."""
    data = pa.table({"j": pa.array([{"v": v} for v in values], pa.struct([("v", type_)]))})
    block = b"".join(stream(data, _pgtypes.create_targets(data.schema)))
    texts, at = [], 0
    while at < len(block):  # per row: 2-byte field count, 4-byte length, jsonb's version byte
        size = int.from_bytes(block[at + 2:at + 6], "big")
        texts.append(block[at + 7:at + 6 + size].decode()[len('{"v":'):-1])
        at += 6 + size
    return texts


def test_json_floats_are_written_as_python_writes_them():
    doubles = [0.1, 1 / 3, 3.0, -0.0, 1e-05, 0.0001, 1e16, 1234567890123456.0, 123.456, 5e-324,
               1.7976931348623157e308, 2.2250738585072014e-308, 2.0**-24, 1e300]
    assert json_texts(doubles, pa.float64()) == [repr(d) for d in doubles]
    singles = [0.1, 3.0, 1e-05, 3.4028234663852886e38, 1e-45, 16777216.0]
    assert json_texts(singles, pa.float32()) == ["0.1", "3.0", "1e-05", "3.4028235e+38", "1e-45", "16777216.0"]
    assert json_texts([1e23], pa.float64()) == ["9.999999999999999e+22"]  # Grisu2's rare longer form


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doubles=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
       singles=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_property_json_floats_are_exact(conn, doubles, singles):
    """Inside JSON a float is text that reads back as the same float64 (float32), at most 17 (9) digits."""
    n = min(len(doubles), len(singles))
    data = pa.table({"k": pa.array(range(n), pa.int32()),
                     "j": pa.array([{"d": d, "s": s} for d, s in zip(doubles, singles)],
                                   pa.struct([("d", pa.float64()), ("s", pa.float32())]))})
    conn.execute("DROP TABLE IF EXISTS pg_temp.jf")
    copy_in(conn, "jf", data)
    rows = conn.execute("SELECT j->>'d', j->>'s' FROM pg_temp.jf ORDER BY k").fetchall()
    for (d, s), (dt_, st_) in zip(zip(doubles, singles), rows):
        assert float(dt_) == d and digits(dt_) <= 17  # shortest but rarely (Grisu2), never more than 17
        assert np.float32(st_) == np.float32(s) and digits(st_) <= 9


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.none() | st.decimals(-10**71 + 1, 10**71 - 1, places=5, allow_nan=False), max_size=15))
def test_property_decimal256_and_its_json(conn, values):
    data = pa.table({"k": pa.array(range(len(values)), pa.int32()),
                     "n": pa.array(values, pa.decimal256(76, 5)),
                     "j": pa.array([{"n": v} for v in values], pa.struct([("n", pa.decimal256(76, 5))]))})
    conn.execute("DROP TABLE IF EXISTS pg_temp.wide")
    got = conn.execute("SELECT 1") and copy_in(conn, "wide", data)
    assert [g[1] for g in got] == values
    texts = conn.execute("SELECT j->>'n' FROM pg_temp.wide ORDER BY k").fetchall()
    assert [None if t[0] is None else Decimal(t[0]) for t in texts] == values
