"""Blocks of COPY data -> Arrow arrays: the binary decoder (``_pgcopy.c``) and the text parsers.

Arrow, numpy and the C extension only -- no psycopg, so decoding can be used
and tested without a driver or a server (the error classes, which subclass
psycopg's, load only when one is raised).  A block is whole rows: CopyData
payloads laid end to end (:data:`RawBlock`); its parser turns it into a
:class:`Block` of Arrow chunks per column, on the reader's parsing thread.

* :class:`BinaryBlockParser`: COPY's binary format, by each column's wire code
  (:mod:`._registry`), straight into Arrow buffers, without the GIL;
* :class:`TextBlockParser`: COPY's text format, by Arrow's CSV reader, then
  the kinds' ``from_csv`` / ``from_text``;
* :func:`text_block`: PostgreSQL's text values (the row path).

``_pgcopy`` is ``None`` when the extension was not built (no C compiler): the
COPY text format then serves every read, as it does with ``_pgcopy`` set to
``None`` in tests.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pyarrow as pa

from . import _registry as wire
from ._kinds import Column, beyond_arrow
from ._lazy import lazy_module
from ._text import TIMESTAMP_INFINITY_US, TIMESTAMP_NEG_INFINITY_US, interval_text, timestamp_text

pc = lazy_module("pyarrow.compute")
pcsv = lazy_module("pyarrow.csv")
errors = lazy_module("neon_notebook.errors")  # with psycopg, which decoding does not need

#: A block of CopyData messages: a ``bytearray``, or a ``_pgcopy.RowBuffer`` (read-only bytes-like).
RawBlock = Any

try:
    from . import _pgcopy
except ImportError:  # built without a C compiler: the COPY text path serves every read
    _pgcopy = None
else:
    # The codes are defined once, in the registry; a stale build must not read with other meanings.
    if _pgcopy.CODES not in (wire.WIRE_CODES, wire.WIRE_CODES.replace(wire.NUMERIC_DECIMAL, "")) \
            or getattr(_pgcopy, "VIEW_CODES", None) != wire.VIEW_CODES:
        raise ImportError(f"neon_notebook.readers._pgcopy knows the codes {_pgcopy.CODES!r}, the registry "
                          f"{wire.WIRE_CODES!r}: rebuild it (pip install -e .)")


@dataclass
class Block:
    """One parsed block: per column, a list of Arrow chunks (raw text for deferred kinds)."""

    columns: list[list[pa.Array]]
    num_rows: int
    #: Columns held as PostgreSQL's text in this block: a timestamp or
    #: interval past its Arrow type's range (the reader decides the column).
    text_columns: frozenset[int] = frozenset()


@functools.lru_cache(maxsize=None)
def parse_pool() -> pa.MemoryPool:
    """The pool blocks are parsed into: jemalloc where pyarrow has it.

    Arrow's default pool (mimalloc) keeps freed pages resident for a while, so
    the parser's short-lived buffers pile up next to the result; jemalloc
    reuses them (measured: ~10 MB lower peak RSS per 1M mixed rows, same speed).
    """
    try:
        return pa.jemalloc_memory_pool()
    except (NotImplementedError, pa.ArrowNotImplementedError):
        return pa.default_memory_pool()


class TextBlockParser:
    """Blocks of COPY's text format, parsed by Arrow's CSV reader into each kind's Arrow type."""

    def __init__(self, columns: list[Column], encoding: str):
        self.columns = columns
        self.encoding = encoding
        pc.cast  # load the lazy modules here, not first in the parsing thread
        names = [f"c{i}" for i in range(len(columns))]
        self._names = names
        # COPY's text format: one line per row, tab-separated, \N for NULL,
        # and backslash escapes (undone by unescape_copy_text) instead of quotes.
        self._parse_opts = pcsv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,  # a one-column row holding '' is an empty line
        )
        common = dict(
            null_values=["\\N"],
            strings_can_be_null=True,
            true_values=["t"],
            false_values=["f"],
            timestamp_parsers=[pcsv.ISO8601],
        )
        self._typed = pcsv.ConvertOptions(
            column_types={
                n: c.kind.csv_type for n, c in zip(names, columns)
            },
            **common,
        )
        self._text = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, **common
        )

    def _read(self, data: pa.Buffer, convert: pcsv.ConvertOptions) -> pa.Table:
        # One chunk per block, on this (the parsing) thread: the reading
        # thread and the server keep the other cores busy, and a block that is
        # one chunk becomes a record batch without a copy.
        return pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(
                column_names=self._names, use_threads=False, block_size=data.size + 1
            ),
            parse_options=self._parse_opts,
            convert_options=convert,
            memory_pool=parse_pool(),
        )

    def parse(self, raw: RawBlock, num_rows: int) -> Block:
        if self.encoding not in ("utf-8", "utf8"):
            raw = bytearray(bytes(raw).decode(self.encoding).encode("utf-8"))
        data = pa.py_buffer(raw)
        try:
            table = self._read(data, self._typed)
            typed = True
        except pa.ArrowInvalid:
            # infinity, BC dates, 24:00:00...: everything as PostgreSQL's
            # text, then the robust converters.
            table = self._read(data, self._text)
            typed = False
        if table.num_rows != num_rows:
            raise errors.DecodeError(
                f"COPY sent {num_rows} rows but {table.num_rows} were parsed"
            )
        escaped = _BACKSLASH.search(raw) is not None  # COPY escapes are rare: spare a scan per column
        out, text = [], set()
        for i, (col, chunked) in enumerate(zip(self.columns, table.columns)):
            kind = col.kind
            if escaped and pa.types.is_string(chunked.type):
                chunked = pa.chunked_array(
                    [unescape_copy_text(a) for a in chunked.chunks], pa.string()
                )
            if kind.deferred:
                out.append(chunked.chunks)
                continue
            chunks, as_text = _finish(col, kind.from_csv if typed else kind.from_text, chunked.chunks)
            out.append(chunks)
            if as_text:
                text.add(i)
        return Block(out, num_rows, frozenset(text))


class BinaryBlockParser:
    """Blocks of COPY's binary format, decoded by ``_pgcopy`` into Arrow buffers.

    The decoder releases the GIL, so the reading loop keeps receiving while a
    block is decoded, and writes into buffers from the parsing memory pool
    that become the Arrow arrays as they are.  With ``views``, strings and
    bytea come as ``string_view``/``binary_view``, which polars adopts
    without a copy.
    """

    def __init__(self, columns: list[Column], views: bool = False):
        self.columns = columns
        codes, params, self._types = [], [], []
        for c in columns:
            kind, code, param, type_ = c.kind, c.wire, 0, c.kind.arrow_type
            declared = kind.csv_type if code == wire.NUMERIC_TEXT else None
            if declared is not None and pa.types.is_decimal128(declared) \
                    and wire.NUMERIC_DECIMAL in _pgcopy.CODES:
                # numeric(p<=38, s) straight into its decimal128.
                code, param, type_ = wire.NUMERIC_DECIMAL, declared.scale, declared
            elif code == wire.NUMERIC_TEXT:
                # Other numerics as numeric_out's text, decided by the Numeric kind.
                type_ = pa.string()
            elif views and code in wire.VIEW_CODES and not kind.deferred:
                param = 1
                type_ = pa.binary_view() if pa.types.is_binary(type_) else pa.string_view()
            codes.append(code)
            params.append(param)
            self._types.append(type_)
        self.codes = "".join(codes).encode("ascii")
        self.params = bytes(params)
        self._allocate = functools.partial(pa.allocate_buffer, memory_pool=parse_pool())

    def _past_range(self, raw: RawBlock, codes: bytes) -> tuple[int, list, bytes, dict[int, pa.Array]]:
        """Decode a block holding a timestamp or interval past Arrow's range.

        The timestamp and interval columns are decoded as raw bytes first, to
        find which hold such a value; the block is then decoded with only
        those as raw bytes, which become PostgreSQL's text.
        """
        suspects = [i for i, c in enumerate(codes) if c in _RANGED]
        trial = bytes(_BYTES if i in suspects else c for i, c in enumerate(codes))
        _, buffers, _ = _pgcopy.decode(raw, trial, self._allocate, self.params)
        raw_columns = {i: self._raw(buffers[i]) for i in suspects}
        bad = [i for i in suspects if any(_wire_text(codes[i], v, self.columns[i]) is not None
                                          for v in raw_columns[i] if v is not None)]
        final = bytes(_BYTES if i in bad else c for i, c in enumerate(codes))
        rows, buffers, used = _pgcopy.decode(raw, final, self._allocate, self.params)
        text = {}
        for i in bad:
            text[i] = pa.array([None if v is None else _wire_text(codes[i], v, self.columns[i], True)
                                for v in raw_columns[i]], pa.string())
        return rows, buffers, used, text

    @staticmethod
    def _raw(buffers: tuple) -> list[bytes | None]:
        validity, offsets, values = buffers
        n = len(offsets) // 4 - 1
        return pa.Array.from_buffers(pa.binary(), n, [validity, offsets, values]).to_pylist()

    def _type(self, i: int, code: int) -> pa.DataType:
        # An 'N' column read as text ('n') in a block holding NaN or Infinity.
        return pa.string() if code == _NUMERIC_TEXT else self._types[i]

    def parse(self, raw: RawBlock, num_rows: int) -> Block:
        codes = self.codes
        try:
            try:
                rows, buffers, used = _pgcopy.decode(raw, codes, self._allocate, self.params)
            except _pgcopy.DecimalOverflow:
                # Digits past a numeric's typmod (never seen from PostgreSQL
                # itself): this block's numerics as text, which Numeric decides.
                codes = codes.replace(bytes([_NUMERIC_DECIMAL]), bytes([_NUMERIC_TEXT]))
                rows, buffers, used = _pgcopy.decode(raw, codes, self._allocate, self.params)
            text: dict[int, pa.Array] = {}
        except OverflowError:
            rows, buffers, used, text = self._past_range(raw, codes)
        except ValueError as ex:
            raise errors.DecodeError(f"{ex} (COPY sent {num_rows} rows)") from None
        if rows != num_rows:
            raise errors.DecodeError(f"COPY sent {num_rows} rows but {rows} were decoded")
        out = []
        for i, (code, (validity, offsets, values)) in enumerate(zip(used, buffers)):
            if i in text:
                out.append([text[i]])
                continue
            if code == _VECTOR:  # list<float32>: offsets, and the floats as its child
                floats = pa.Array.from_buffers(pa.float32(), values.size // 4, [None, values])
                array = pa.Array.from_buffers(self._types[i], rows, [validity, offsets], children=[floats])
            else:
                bufs = [validity] if offsets is None else [validity, offsets]
                array = pa.Array.from_buffers(self._type(i, code), rows, bufs + [values])
            out.append([array])
        return Block(out, rows, frozenset(text))


# The codes as the bytes the decoder takes and returns.
_BYTES, _NUMERIC_TEXT, _NUMERIC_DECIMAL, _VECTOR, _TIMESTAMP = (
    ord(c) for c in (wire.BYTES, wire.NUMERIC_TEXT, wire.NUMERIC_DECIMAL, wire.VECTOR, wire.TIMESTAMP))
_RANGED = wire.RANGED_CODES.encode("ascii")


def _wire_text(code: int, value: bytes, col: Column, always: bool = False) -> str | None:
    """A binary timestamp or interval as PostgreSQL's text: if Arrow cannot hold it, or ``always``."""
    us = int.from_bytes(value[:8], "big", signed=True)
    if code == _TIMESTAMP:
        if us == 2**63 - 1 or us == -(2**63):  # PostgreSQL's ±infinity
            return ("infinity" if us > 0 else "-infinity") if always else None
        shifted = us + 946_684_800_000_000  # to microseconds since 1970
        if not always and TIMESTAMP_NEG_INFINITY_US < shifted < TIMESTAMP_INFINITY_US:
            return None
        return timestamp_text(shifted, col.kind.tz is not None)
    if not always and abs(us) <= (2**63 - 1) // 1000:
        return None
    days = int.from_bytes(value[8:12], "big", signed=True)
    months = int.from_bytes(value[12:16], "big", signed=True)
    return interval_text(months, days, us)


_BACKSLASH = re.compile(rb"\\")
_ESCAPES = [("\\b", "\b"), ("\\f", "\f"), ("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\v", "\v")]


def unescape_copy_text(arr: pa.Array) -> pa.Array:
    """Undo COPY text-format escaping (``\\\\ \\b \\f \\n \\r \\t \\v``) in one string array.

    COPY TO emits no other escapes.  ``\\\\`` goes first, to NUL -- which
    PostgreSQL text never holds -- so ``\\\\n`` stays a backslash and an n.
    Arrays without a backslash (most) are returned as they are.
    """
    if len(arr) == 0 or not pc.any(pc.match_substring(arr, "\\")).as_py():
        return arr
    out = pc.replace_substring(arr, "\\\\", "\x00")
    for escaped, char in _ESCAPES:
        out = pc.replace_substring(out, escaped, char)
    return pc.replace_substring(out, "\x00", "\\")


def text_block(
    columns: list[Column], values: list[list[bytes | None]], num_rows: int, encoding: str = "utf-8"
) -> Block:
    """A block from PostgreSQL text values (the row path)."""
    utf8 = encoding in ("utf-8", "utf8")
    arrays = [pa.array(vals, pa.binary()).cast(pa.string()) if utf8
              else pa.array([v if v is None else v.decode(encoding) for v in vals], pa.string())
              for vals in values]
    return strings_block(columns, arrays, num_rows)


def strings_block(columns: list[Column], arrays: list[pa.Array], num_rows: int) -> Block:
    """A block from one string array of PostgreSQL text per column (the row path, the HTTP transport)."""
    out, text = [], set()
    for i, (col, arr) in enumerate(zip(columns, arrays)):
        if col.kind.deferred:
            out.append([arr])
            continue
        chunks, as_text = _finish(col, col.kind.from_text, [arr])
        out.append(chunks)
        if as_text:
            text.add(i)
    return Block(out, num_rows, frozenset(text))


def _finish(col: Column, convert: Callable[[pa.Array], pa.Array],
            chunks: list[pa.Array]) -> tuple[list[pa.Array], bool]:
    """``convert`` applied to a column's text chunks; the text itself (True) past Arrow's range."""
    try:
        with _naming(col):
            return [convert(a) for a in chunks], False
    except errors.UnrepresentableValue:
        if not beyond_arrow(col.kind) or not all(pa.types.is_string(a.type) for a in chunks):
            raise
        return chunks, True


@contextlib.contextmanager
def _naming(col: Column) -> Iterator[None]:
    """Put the column's name into an UnrepresentableValue that lacks it."""
    try:
        yield
    except errors.UnrepresentableValue as ex:
        if "column " in str(ex):
            raise
        raise errors.UnrepresentableValue(
            f"column {col.name!r} ({col.kind.pgname}): {ex}; cast it in SQL (e.g. ::text) to read it as text"
        ) from None
