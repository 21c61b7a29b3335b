"""The type registry: one row per type, true to PostgreSQL's catalog, the C decoder's alphabet its own."""

from __future__ import annotations

import psycopg
import pyarrow as pa
import pytest

from neon_notebook.readers import _decode, _kinds, _registry
from neon_notebook.readers._catalog import TypeResolver
from neon_notebook.readers._frames import to_pandas


def test_rows_are_one_per_type_and_name_known_kinds_and_codes():
    oids = [t.oid for t in _registry.TYPES]
    arrays = [t.array for t in _registry.TYPES if t.array is not None]
    assert len(set(oids)) == len(oids) and len(set(arrays)) == len(arrays)
    assert not set(oids) & set(arrays)
    assert len({t.name for t in _registry.TYPES}) == len(_registry.TYPES)
    for t in (*_registry.TYPES, *_registry.EXTENSIONS.values()):
        assert t.kind in _kinds._MAKERS, t
        assert t.wire is None or (len(t.wire) == 1 and t.wire in _registry.WIRE_CODES), t
        kind = _kinds.make_kind(t, -1, {})
        assert kind.pgname == t.name or t.kind == "Numeric"
        if t.arrow is not None:
            assert kind.arrow_type == t.arrow, t
    for t in _registry.TYPES:
        assert _registry.builtin(t.oid) is t and _registry.known(t.oid)
        if t.array is not None:
            assert _registry.array_element(t.array) == t.oid and _registry.known(t.array)
    assert _registry.builtin(1009) is None and _registry.array_element(25) is None
    assert not _registry.known(600)  # point: no row; the readers give its text


@pytest.mark.skipif(_decode._pgcopy is None, reason="the C decoder was not built")
def test_the_c_decoder_speaks_the_registrys_codes():
    pgcopy = _decode._pgcopy
    expected = _registry.WIRE_CODES if _registry.NUMERIC_DECIMAL in pgcopy.CODES \
        else _registry.WIRE_CODES.replace(_registry.NUMERIC_DECIMAL, "")
    assert pgcopy.CODES == expected
    assert pgcopy.VIEW_CODES == _registry.VIEW_CODES
    allocate = pa.allocate_buffer
    for code in _registry.WIRE_CODES:
        if code not in pgcopy.CODES:
            continue
        params = bytes([2 if code == _registry.NUMERIC_DECIMAL else 0])
        rows, _, used = pgcopy.decode(b"\x00\x01\xff\xff\xff\xff", code.encode(), allocate, params)
        assert rows == 1 and used == code.encode()  # one NULL: every code is read
    with pytest.raises(ValueError, match="unknown column code"):
        pgcopy.decode(b"", b"x", allocate)


def test_kinds_by_oid_need_no_database():
    settings = {"TimeZone": "Europe/Paris", "IntervalStyle": "iso_8601", "bytea_output": "hex"}
    kinds = {oid: _kinds.make_kind(_registry.builtin(oid), -1, settings) for oid in (1184, 1114, 1186, 23)}
    assert kinds[1184].arrow_type == pa.timestamp("us", tz="Europe/Paris")
    assert kinds[1114].arrow_type == pa.timestamp("us")
    assert kinds[1186].from_text(pa.array(["P1Y2M3DT4H5M6.5S"])).to_pylist() == [
        pa.MonthDayNano([14, 3, 14_706_500_000_000])]
    assert kinds[23].from_text(pa.array(["-7", None])).to_pylist() == [-7, None]
    numeric = _kinds.make_kind(_registry.builtin(1700), ((12 << 16) | 4) + 4, settings)
    assert numeric.arrow_type == pa.decimal128(12, 4) and numeric.pgname == "numeric(12,4)"


def test_pandas_dtypes_come_from_the_registry():
    table = pa.table({str(t): pa.array([None], t) for t in _registry.PANDAS_DTYPES})
    frame = to_pandas(table)
    assert [str(d) for d in frame.dtypes] == list(_registry.PANDAS_DTYPES.values())


def test_rows_agree_with_the_servers_catalog(direct_url):
    with psycopg.connect(direct_url, autocommit=True) as conn:
        catalog = {oid: (name, array) for oid, name, array in conn.execute(
            "SELECT oid::int8, typname::text, typarray::int8 FROM pg_type WHERE oid = ANY(%s)",
            [[t.oid for t in _registry.TYPES]])}
        for t in _registry.TYPES:
            assert (t.name, t.array or 0) == catalog[t.oid], t
        # Every builtin column type resolves from the registry, without asking the catalog.
        resolver = TypeResolver.for_connection(conn, {"TimeZone": "UTC"})
        columns = resolver.resolve([(t.name, t.oid, -1) for t in _registry.TYPES]
                                   + [(f"{t.name}[]", t.array, -1) for t in _registry.TYPES if t.array])
        assert resolver._catalog == {}
        assert [c.wire for c in columns[:len(_registry.TYPES)]] == [t.wire for t in _registry.TYPES]
        assert all(c.wire is None and c.kind.pgname.endswith("[]") for c in columns[len(_registry.TYPES):])
