"""Record batches -> PostgreSQL's binary COPY stream, in blocks of bounded size.

::

    targets = _pgtypes.create_targets(schema)      # or _pgtypes.target(field, oid, typmod)
    encoder = Encoder(schema, targets, block_bytes=8 << 20)
    with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(...)) as copy:
        copy.write(HEADER)
        for batch in batches:
            for block in encoder.blocks(batch):   # bytes, each <= block_bytes (>= one row)
                copy.write(block)
        copy.write(TRAILER)

The C extension ``_pgcopy_encode`` does the encoding without the GIL, reading
the Arrow buffers in place (one pass checks and sizes a block, a second fills
it).  A value its column cannot hold (an int64 past int4, a nanosecond value
that is not whole microseconds) raises
:class:`~neon_notebook.errors.UnrepresentableValue` naming the column, the row
(counted from 0 over everything this encoder encoded) and the value; nothing
is truncated.  There is no Python fallback: without the extension, importing
this module raises ImportError (a write path can fall back to psycopg's own
``copy.write_row``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

from ..errors import ConfigurationError, UnrepresentableValue
from ._pgtypes import Target

try:
    from ._pgcopy_encode import HEADER as _HEADER, TRAILER as _TRAILER, EncodeError, encode
except ImportError as exc:  # built optionally: no C compiler at install time
    raise ImportError(
        "neon_notebook's binary COPY encoder (the C extension "
        "neon_notebook.writers._pgcopy_encode) is not built; reinstall neon-notebook "
        "where a C compiler is available to write at COPY speed") from exc

#: The binary COPY stream's header (signature, flags, no extension) and trailer.
HEADER: bytes = _HEADER
TRAILER: bytes = _TRAILER
#: The default block size: large enough to amortise calls, far below PostgreSQL's 1 GiB.
BLOCK_BYTES = 8 << 20


class Encoder:
    """Encodes the record batches of one schema into binary COPY blocks."""

    def __init__(self, schema: pa.Schema, targets: Sequence[Target], *,
                 block_bytes: int = BLOCK_BYTES) -> None:
        if len(targets) != len(schema):
            raise ConfigurationError(f"{len(schema)} columns but {len(targets)} targets")
        self.schema = schema
        self.targets = list(targets)
        self.block_bytes = block_bytes
        self.rows = 0  # rows encoded so far, over every batch

    def blocks(self, batch: pa.RecordBatch) -> Iterator[bytes]:
        """The batch's rows as binary COPY tuples, in blocks of at most ``block_bytes``."""
        if not batch.schema.equals(self.schema):
            raise ConfigurationError(
                f"a batch's schema differs from the encoder's: {batch.schema} vs {self.schema}")
        arrays = [self._prepared(i, batch.column(i), t) for i, t in enumerate(self.targets)]
        columns = [_column(array, t) for array, t in zip(arrays, self.targets)]
        start, stop = 0, batch.num_rows
        while start < stop:
            try:
                block, start_next = encode(columns, start, stop, self.block_bytes)
            except EncodeError as exc:
                raise self._error(arrays, *exc.args) from None
            self.rows += start_next - start
            start = start_next
            yield block

    def _prepared(self, column: int, array: pa.Array, target: Target) -> pa.Array:
        if target.whole:
            return self._whole_numbers(column, array, target)
        if target.cast is None:
            return array
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        return array.cast(target.cast)

    def _whole_numbers(self, column: int, array: pa.Array, target: Target) -> pa.Array:
        """A float column as int64 for an integer column: NaN becomes NULL, anything but a whole
        number within int64 is an error naming its row (the encoder then checks the column's range)."""
        import pyarrow.compute as pc

        array = array.cast(pa.float64())
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, pa.float64()), array)
        bad = pc.or_(pc.not_equal(pc.floor(array), array), pc.greater_equal(pc.abs(array), 2.0 ** 63))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            raise self._error([array if i == column else None for i in range(column + 1)], column, row,
                              "an integer column takes whole numbers only")
        return array.cast(pa.int64())

    def _error(self, arrays: list[pa.Array], column: int, row: int, reason: str) -> UnrepresentableValue:
        name = self.schema.field(column).name
        scalar = arrays[column][row]
        try:
            value = repr(scalar.as_py())
        except (OverflowError, ValueError):  # past Python's datetime range
            raw = getattr(scalar, "value", None)  # a nested value holding one has none: its type
            value = f"{raw} ({scalar.type})" if isinstance(raw, int) else f"of type {scalar.type}"
        if len(value) > 200:  # a long list or struct: its start is enough to find it
            value = value[:200] + "..."
        return UnrepresentableValue(
            f"column {name!r}, row {self.rows + row} (counting from 0): the value {value} "
            f"cannot be written into {self.targets[column].sql_type}: {reason}")


_LISTS = frozenset(b"+=/%<")  # sources with an offsets buffer and a child (a map: its entries)


def _column(array: pa.Array, target: Target) -> tuple:
    """The extension's view of one column, its children's included (see ``_pgcopy_encode.c``):
    (op, param, offset, validity, offsets, values, children, names, extra)."""
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    code = target.op[0]
    if code == ord("0"):  # the null type has no bitmap: every value NULL
        validity = bytes((array.offset + len(array) + 7) // 8)
        return (target.op, 0, array.offset, validity, None, b"")
    buffers = array.buffers()
    validity = buffers[0] if array.null_count else None
    offsets, values, children = None, buffers[1] if len(buffers) > 1 else None, ()
    if code in b"sS":
        offsets, values = buffers[1], buffers[2]
    elif code in _LISTS:
        offsets, values = buffers[1], buffers[2] if code in b"/%" else None
        if code == ord("<"):
            entries = array.values
            children = tuple(_column(entries.field(k), t) for k, t in enumerate(target.children))
        else:
            children = (_column(array.values, target.children[0]),)
    elif code == ord("#"):
        values, children = None, (_column(array.values, target.children[0]),)
    elif code == ord("{"):
        values = None
        children = tuple(_column(array.field(k), t) for k, t in enumerate(target.children))
    return (target.op, target.param, array.offset, validity, offsets,
            b"" if values is None else values, children, target.names, target.extra)
