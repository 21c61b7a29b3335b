"""Block decoding without a server and without psycopg: binary COPY blocks built by hand.

The blocks are laid out as PostgreSQL's binary COPY writes them (header, rows of
length-prefixed big-endian fields, trailer); the columns come from the type
registry by OID, as a transport that knows only the OIDs would build them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import pathlib
import struct
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest

from neon_notebook.readers import _decode, _registry
from neon_notebook.readers._kinds import Column, make_kind

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = b"\xff\xff"
PG_EPOCH = dt.datetime(2000, 1, 1)
SETTINGS = {"TimeZone": "UTC", "IntervalStyle": "postgres", "bytea_output": "hex"}

needs_decoder = pytest.mark.skipif(_decode._pgcopy is None, reason="the C decoder was not built")


def column(name: str, oid: int, typmod: int = -1) -> Column:
    """A result column from the registry alone (no catalog, no connection)."""
    row = _registry.builtin(oid)
    return Column(name, oid, typmod, make_kind(row, typmod, SETTINGS), row.wire)


def numeric_typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | scale) + 4


def binary_numeric(text: str) -> bytes:
    """numeric_send's bytes for a plain decimal text (base-10000 digit groups)."""
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    whole = whole.lstrip("0")
    dscale = len(frac)
    whole = whole.rjust(-(-len(whole) // 4) * 4, "0")
    frac = frac.ljust(-(-len(frac) // 4) * 4, "0")
    groups = [int(whole[i:i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(frac[i:i + 4]) for i in range(0, len(frac), 4)]
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    head = struct.pack(">hhHH", len(groups), weight if groups else 0, 0x4000 if negative else 0, dscale)
    return head + b"".join(struct.pack(">H", g) for g in groups)


def block(rows: list[list[bytes | None]], header: bool = True, trailer: bool = True) -> bytes:
    """Rows of field bytes (``None``: NULL) as binary COPY data."""
    out = HEADER if header else b""
    for fields in rows:
        out += struct.pack(">h", len(fields))
        for f in fields:
            out += struct.pack(">i", -1) if f is None else struct.pack(">i", len(f)) + f
    return out + (TRAILER if trailer else b"")


def _us_since_2000(value: dt.datetime) -> int:
    return (value - PG_EPOCH) // dt.timedelta(microseconds=1)


UUID = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
TS = dt.datetime(2024, 2, 29, 12, 34, 56, 789012)
# (column, field bytes of row 1, the Arrow value expected for it); row 2 is all NULLs.
CASES = [
    (column("b", 16), b"\x01", True),
    (column("i2", 21), struct.pack(">h", -2), -2),
    (column("i4", 23), struct.pack(">i", 2**31 - 1), 2**31 - 1),
    (column("i8", 20), struct.pack(">q", -(2**63)), -(2**63)),
    (column("o", 26), struct.pack(">I", 4_000_000_000), 4_000_000_000),
    (column("f4", 700), struct.pack(">f", 1.5), 1.5),
    (column("f8", 701), struct.pack(">d", -0.25), -0.25),
    (column("d", 1082), struct.pack(">i", 8825), dt.date(2024, 2, 29)),
    (column("t", 1083), struct.pack(">q", 45_296_000_001), dt.time(12, 34, 56, 1)),
    (column("ts", 1114), struct.pack(">q", _us_since_2000(TS)), TS),
    (column("tz", 1184), struct.pack(">q", _us_since_2000(TS)), TS.replace(tzinfo=dt.timezone.utc)),
    (column("s", 25), "tab\there ☃".encode(), "tab\there ☃"),
    (column("v", 1043), b"", ""),
    (column("y", 17), b"\x00\xff\x10", b"\x00\xff\x10"),
    (column("j", 3802), b"\x01" + b'{"a": [1, null]}', '{"a": [1, null]}'),
    (column("u", 2950), UUID.bytes, str(UUID)),
    (column("n", 1700), binary_numeric("-12345678901234567890.000100"), "-12345678901234567890.000100"),
    (column("nd", 1700, numeric_typmod(10, 3)), binary_numeric("1234.5"), decimal.Decimal("1234.500")),
]


def decode_checks() -> None:
    """Decode hand-built blocks and compare every value; run here and where psycopg cannot load."""
    columns = [c for c, _, _ in CASES]
    raw = block([[f for _, f, _ in CASES], [None] * len(CASES)])
    got = _decode.BinaryBlockParser(columns).parse(raw, 2)
    assert got.num_rows == 2 and got.text_columns == frozenset()
    for (col, _, expected), chunks in zip(CASES, got.columns):
        (array,) = chunks
        assert array.to_pylist() == [expected, None], col.name
    # interval: months, days, microseconds -> month_day_nano
    raw = block([[struct.pack(">qii", 3_723_000_004, -2, 14)]])
    (array,), = _decode.BinaryBlockParser([column("iv", 1186)]).parse(raw, 1).columns
    assert array.type == pa.month_day_nano_interval()
    assert array.to_pylist() == [pa.MonthDayNano([14, -2, 3_723_000_004_000])]
    # COPY's text format, through Arrow's CSV reader: escapes undone, \N is NULL
    columns = [column("i", 23), column("s", 25), column("d", 1082)]
    text = _decode.TextBlockParser(columns, "utf-8").parse(b"1\ta\\tb\t2024-02-29\n\\N\t\\N\tinfinity\n", 2)
    assert [c[0].to_pylist() for c in text.columns[:2]] == [[1, None], ["a\tb", None]]
    days = (dt.date(2024, 2, 29) - dt.date(1970, 1, 1)).days
    assert text.columns[2][0].cast(pa.int32()).to_pylist() == [days, 2**31 - 1]  # 'infinity': the largest date32
    # the row path: PostgreSQL's text values
    rows = _decode.text_block(columns, [[b"7", None], [b"x", b"y"], [b"2000-01-01", None]], 2)
    assert [c[0].to_pylist() for c in rows.columns] == [[7, None], ["x", "y"], [dt.date(2000, 1, 1), None]]


@needs_decoder
def test_hand_built_blocks_decode_to_the_values_written():
    decode_checks()


@needs_decoder
def test_decoding_needs_neither_psycopg_nor_a_server():
    """In a fresh interpreter where ``import psycopg`` fails, the decoder imports and decodes."""
    tests = pathlib.Path(__file__).parent
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "import test_decode\n"
        "test_decode.decode_checks()\n"
        "print('psycopg' in sys.modules and sys.modules['psycopg'] is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


@needs_decoder
def test_blocks_without_header_or_trailer_and_views():
    """Blocks after the first carry no header, the last one the trailer; views for polars."""
    col = column("s", 25)
    raw = block([[b"short"], [b"a value longer than twelve bytes"], [None]], header=False, trailer=False)
    (array,), = _decode.BinaryBlockParser([col], views=True).parse(raw, 3).columns
    assert array.type == pa.string_view()
    assert array.to_pylist() == ["short", "a value longer than twelve bytes", None]


@needs_decoder
def test_timestamp_past_arrows_range_comes_as_postgres_text():
    # PostgreSQL's latest timestamp but a second (its END_TIMESTAMP is 294277-01-01 in us since 2000),
    # past the microseconds since 1970 an int64 holds
    late = struct.pack(">q", 9_223_371_331_200_000_000 - 1_000_000)
    got = _decode.BinaryBlockParser([column("ts", 1114)]).parse(block([[late], [None]]), 2)
    assert got.text_columns == frozenset({0})
    assert got.columns[0][0].to_pylist() == ["294276-12-31 23:59:59", None]


@needs_decoder
def test_numeric_nan_turns_a_decimal_block_into_text():
    nan = struct.pack(">hhHH", 0, 0, 0xC000, 0)
    col = column("n", 1700, numeric_typmod(6, 2))
    (array,), = _decode.BinaryBlockParser([col]).parse(block([[binary_numeric("1.50")], [nan]]), 2).columns
    assert array.to_pylist() == ["1.50", "NaN"]  # Numeric.decide makes the column text, with a warning


@needs_decoder
def test_rows_that_do_not_match_their_description_raise_decode_error():
    from neon_notebook.errors import DecodeError

    parser = _decode.BinaryBlockParser([column("i", 23)])
    raw = block([[struct.pack(">i", 1)]])
    with pytest.raises(DecodeError, match="COPY sent 2 rows but 1 were decoded"):
        parser.parse(raw, 2)
    with pytest.raises(DecodeError, match="malformed binary COPY data"):
        parser.parse(raw[:-3], 1)
    with pytest.raises(DecodeError, match="unexpected width"):
        parser.parse(block([[b"\x00\x01"]]), 1)
    with pytest.raises(DecodeError, match="2 rows but 1 were parsed"):
        _decode.TextBlockParser([column("i", 23)], "utf-8").parse(b"1\n", 2)


def test_unescape_copy_text_undoes_only_copys_escapes():
    arr = pa.array(["a\\\\nb", "tab\\there", "plain", None])
    assert _decode.unescape_copy_text(arr).to_pylist() == ["a\\nb", "tab\there", "plain", None]


def test_text_values_by_oid_alone():
    """What an HTTP transport has: PostgreSQL's text output and each column's type OID."""
    values = {
        1184: (["2024-02-29 12:34:56.5+00", None], [dt.datetime(2024, 2, 29, 12, 34, 56, 500000,
                                                                tzinfo=dt.timezone.utc), None]),
        1186: (["1 year 2 mons -3 days +04:05:06.5"], [pa.MonthDayNano([14, -3, 14_706_500_000_000])]),
        16: (["t", "f"], [True, False]),
        17: (["\\x00ff"], [b"\x00\xff"]),
        114: (['{"a": 1}'], ['{"a": 1}']),
    }
    for oid, (texts, expected) in values.items():
        kind = column("c", oid).kind
        assert kind.from_text(pa.array(texts, pa.string())).to_pylist() == expected, oid
    assert json.loads(values[114][1][0]) == {"a": 1}
