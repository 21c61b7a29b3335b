"""What ``write`` accepts, as one Arrow schema and a stream of record batches.

A :class:`Source` is made from a pandas or polars DataFrame, a pyarrow Table or
RecordBatch, a ``RecordBatchReader`` (or anything with ``__arrow_c_stream__``),
any iterable of record batches, or the path of a Parquet file. Its batches come
in slices of at most ``BATCH_ROWS`` rows, converted as they are needed, so a
frame is never held twice in memory. ``replayable`` says whether the batches can
be produced again (a frame, a table, a file), which is what allows a write whose
transaction provably rolled back to run once more.

pandas, by the rules ``WRITE_TYPES.md`` gives: nullable extension dtypes keep
their NULLs (an ``Int64`` with ``<NA>`` stays an integer column); in a numpy
float column NaN is pandas' missing value and is written as NULL (Arrow and polars
keep NaN and null apart, and so does the write); the index is written as columns
only when it is named (``df.groupby(...).sum()``), a default or unnamed index is
not data and is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import ConfigurationError

#: Rows per converted slice: large enough to amortise each conversion, small enough to bound memory.
BATCH_ROWS = 65_536


@dataclass
class Source:
    """The data to write: its schema, its batches (``batches()``), and what is known of its size."""

    schema: pa.Schema
    _batches: Callable[[], Iterator[pa.RecordBatch]]
    rows: int | None  # the total row count, when known before reading
    replayable: bool  # whether ``batches()`` may be called again
    _used: bool = False

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The record batches, from the start (a second call only when ``replayable``)."""
        if self._used and not self.replayable:
            raise RuntimeError("this source's batches were already consumed")
        self._used = True
        return self._batches()


def source(data: Any) -> Source:
    """The :class:`Source` for ``data``; a TypeError names what is accepted."""
    if isinstance(data, (str, os.PathLike)):
        return _parquet(data)
    if isinstance(data, pa.Table):
        return _table(data)
    if isinstance(data, pa.RecordBatch):
        return _table(pa.Table.from_batches([data]))
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and type(data).__name__ == "DataFrame":
        return _pandas(data)
    if module == "polars" and type(data).__name__ == "DataFrame":
        return _polars(data)
    if module == "polars" and type(data).__name__ == "LazyFrame":
        raise TypeError("write() takes a polars DataFrame, not a LazyFrame: call .collect() first")
    if isinstance(data, pa.RecordBatchReader):
        return _reader(data)
    if isinstance(data, (pa.Array, pa.ChunkedArray)) or (
            module in ("pandas", "polars") and type(data).__name__ == "Series"):
        raise _one_column(data)
    if hasattr(data, "__arrow_c_stream__"):
        try:
            return _reader(pa.RecordBatchReader.from_stream(data))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a stream of one column, not of rows
            raise _one_column(data) from None
    if isinstance(data, Iterable) and not isinstance(data, (bytes, bytearray, dict)):
        return _iterable(iter(data))
    raise TypeError(
        "write() takes a pandas or polars DataFrame, a pyarrow Table or RecordBatchReader, an "
        f"iterable of pyarrow RecordBatches, or the path of a Parquet file; got {type(data).__name__}")


def _one_column(data: Any) -> TypeError:
    return TypeError(
        f"write() takes a table (columns with names), not one column ({type(data).__name__}): "
        "make it a frame first, e.g. series.to_frame() or pa.table({'name': array})")


def _table(table: pa.Table) -> Source:
    def batches() -> Iterator[pa.RecordBatch]:
        return iter(table.to_batches(max_chunksize=BATCH_ROWS))

    return Source(table.schema, batches, table.num_rows, True)


def _polars(df: Any) -> Source:
    """A polars frame, converted to Arrow a slice at a time (its strings are copied on the way)."""
    schema = df.head(0).to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(df), BATCH_ROWS):
            yield from df.slice(start, BATCH_ROWS).to_arrow().cast(schema).to_batches()

    return Source(schema, batches, len(df), True)


def _parquet(path: str | os.PathLike[str]) -> Source:
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        kind = "a directory" if os.path.isdir(path) else "no such file"
        raise FileNotFoundError(f"write(): {os.fspath(path)!r} is {kind}; give a Parquet file's path")
    try:
        # pre_buffer=False: pyarrow's default pre-buffering holds whole column chunks, so the
        # memory would grow with the file; without it, it stays one batch's worth.
        metadata = pq.ParquetFile(path, pre_buffer=False)
    except pa.ArrowInvalid as exc:
        raise ConfigurationError(f"write(): {os.fspath(path)!r} is not a Parquet file ({exc})") from None
    schema, rows = metadata.schema_arrow, metadata.metadata.num_rows
    metadata.close()

    def batches() -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(path, pre_buffer=False) as file:
            yield from file.iter_batches(batch_size=BATCH_ROWS)

    return Source(schema, batches, rows, True)


def _reader(reader: pa.RecordBatchReader) -> Source:
    return Source(reader.schema, lambda: iter(reader), None, False)


def _iterable(iterator: Iterator[Any]) -> Source:
    """An iterable of batches: the first one gives the schema (an empty one may still give it)."""
    try:
        first = next(iterator)
    except StopIteration as stop:  # iter_batches() of an empty result returns its schema
        schema = stop.value if isinstance(stop.value, pa.Schema) else None
        if schema is None:
            raise ConfigurationError(
                "write() got an empty iterable: with no batch there is no schema to write; pass "
                "an empty pyarrow Table (pa.table(...) with the columns) to create an empty table") from None
        return Source(schema, lambda: iter(()), 0, False)
    first = _batch(first)

    def batches() -> Iterator[pa.RecordBatch]:
        yield first
        for item in iterator:
            batch = _batch(item)
            if not batch.schema.equals(first.schema):
                raise ConfigurationError(
                    f"write(): a batch's columns differ from the first batch's:\n{batch.schema}\n"
                    f"vs\n{first.schema}")
            yield batch

    return Source(first.schema, batches, None, False)


def _batch(item: Any) -> pa.RecordBatch:
    if isinstance(item, pa.RecordBatch):
        return item
    if isinstance(item, pa.Table):
        return item.combine_chunks().to_batches()[0] if item.num_rows else pa.RecordBatch.from_pylist(
            [], schema=item.schema)
    raise TypeError(f"write() takes an iterable of pyarrow RecordBatches; one item is a {type(item).__name__}")


# -- pandas -------------------------------------------------------------------------------------


def _pandas(df: Any) -> Source:
    if df.columns.duplicated().any():
        dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise ConfigurationError(f"write(): the DataFrame has duplicate column names {dupes}")
    if any(name is not None for name in df.index.names):
        df = df.reset_index()
    names = [str(c) for c in df.columns]
    # The schema of the whole frame, so that a slice (say all-NULL in an object column)
    # cannot infer another type; found column by column, never converting the frame whole.
    # A column of Decimal objects is converted once here (16 bytes a value), as finding its
    # precision and scale already reads every value.
    decimals = {i: _pandas_decimals(df.iloc[:, i]) for i in range(len(names)) if df.dtypes.iloc[i] == object}
    decimals = {i: array for i, array in decimals.items() if array is not None}
    schema = pa.schema([pa.field(name, decimals[i].type if i in decimals else _pandas_type(df.iloc[:, i]))
                        for i, name in enumerate(names)])

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(df), BATCH_ROWS):
            part = df.iloc[start:start + BATCH_ROWS]
            yield pa.RecordBatch.from_arrays(
                [decimals[i].slice(start, BATCH_ROWS) if i in decimals
                 else _pandas_column(part.iloc[:, i], field.type) for i, field in enumerate(schema)],
                schema=schema)

    return Source(schema, batches, len(df), True)


def _pandas_decimals(series: Any) -> pa.Array | None:
    """A column of ``decimal.Decimal`` objects (and NULLs) as an exact Arrow decimal, or None when
    it holds anything else. Through their text, as PyArrow's own inference of precision and scale
    from the objects takes five times longer; a value with an exponent or a NaN takes that path."""
    import decimal

    import pandas as pd
    import pyarrow.compute as pc

    values = series.to_numpy()
    chunks = []  # the values' text, a slice at a time: a million Python strings would cost 55 MB
    for start in range(0, len(values), BATCH_ROWS):
        part = values[start:start + BATCH_ROWS]
        kinds = set(map(type, part))
        if kinds == {decimal.Decimal}:  # the common case, at C speed
            texts = list(map(str, part))
        else:
            texts = []
            for value in part:
                if value is None or value is pd.NA or (type(value) is float and value != value):
                    texts.append(None)
                elif type(value) is decimal.Decimal:
                    texts.append(str(value))
                else:
                    return None
        chunks.append(pa.array(texts, pa.string()))
    strings = pa.chunked_array(chunks, pa.string())
    if strings.null_count == len(strings):
        return None  # no Decimal at all: nothing to learn a type from
    if pc.any(pc.match_substring_regex(strings, "[^-0-9.]")).as_py():
        return pa.array(values, from_pandas=True)  # 1E+2, NaN, Infinity: PyArrow's own reading
    digits = pc.utf8_ltrim(strings, "-")
    point = pc.find_substring(digits, ".")
    length = pc.utf8_length(digits)
    scale = pc.max(pc.if_else(pc.less(point, 0), 0, pc.subtract(pc.subtract(length, point), 1))).as_py()
    whole = pc.if_else(pc.less(point, 0), length, point)
    whole = pc.if_else(pc.starts_with(digits, "0"), pc.subtract(whole, 1), whole)  # "0.05": no whole digit
    precision = max(1, pc.max(whole).as_py() + scale)
    if precision > 38:
        return pa.array(values, from_pandas=True)
    return pc.cast(strings, pa.decimal128(precision, scale)).combine_chunks()


def _pandas_type(series: Any) -> pa.DataType:
    """A column's Arrow type: from its dtype, or for Python objects from all its values.

    Objects holding dicts (or lists of them) are JSON (``pa.json_()``, written as jsonb):
    each value keeps exactly its own keys, which an Arrow struct (the union of every
    dict's keys, NULL where one lacks a key) would not.
    """
    if series.dtype != object:
        return _pandas_column(series.iloc[:0]).type
    values = series.to_numpy()

    def holds_dicts(arrow: pa.DataType) -> bool:
        return pa.types.is_struct(arrow) or (hasattr(arrow, "value_type") and holds_dicts(arrow.value_type))
    try:
        inferred = pa.infer_type(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if any(isinstance(v, dict) for v in values):
            return pa.json_()
        raise ConfigurationError(
            f"column {str(series.name)!r} (dtype object) holds values of more than one kind ({exc}); "
            "give the column one type (e.g. .astype('string'))") from None
    return pa.json_() if holds_dicts(inferred) else inferred


def _pandas_column(series: Any, arrow_type: pa.DataType | None = None) -> pa.Array:
    """One column as Arrow: NULLs where pandas has them (NaN in a numpy float column included);
    a JSON column's values as ``json.dumps`` gives them (NaN refused: JSON has none)."""
    import numpy as np

    if isinstance(arrow_type, pa.JsonType):
        import datetime as dt
        import json
        import uuid

        import pandas as pd

        from ..errors import UnrepresentableValue

        def default(value: Any) -> Any:  # what json cannot encode by itself
            if value is pd.NA or value is pd.NaT:
                return None
            if isinstance(value, np.generic):
                return value.item()
            if isinstance(value, (dt.date, dt.time)):
                return value.isoformat()
            if isinstance(value, uuid.UUID):
                return str(value)
            raise TypeError(f"a {type(value).__name__} has no exact JSON form; convert it first "
                            "(a Decimal to str, bytes to hex or base64)")
        texts = []
        for label, value in series.items():
            if pd.api.types.is_scalar(value) and pd.isna(value):
                texts.append(None)
                continue
            try:
                texts.append(json.dumps(value, ensure_ascii=False, allow_nan=False,
                                        separators=(",", ":"), default=default))
            except (TypeError, ValueError) as exc:
                raise UnrepresentableValue(
                    f"column {str(series.name)!r}, index {label!r}: the value {value!r:.200} cannot "
                    f"be written as JSON: {exc}") from None
        return pa.ExtensionArray.from_storage(arrow_type, pa.array(texts, pa.string()))
    dtype = series.dtype
    try:
        array = pa.array(series, type=arrow_type, from_pandas=True)
        # pyarrow-backed columns (pandas 3's default "str", ArrowDtype) come as chunked arrays
        return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigurationError(
            f"column {str(series.name)!r} (dtype {dtype}) cannot be converted to Arrow: {exc}; "
            "give the column one type (e.g. .astype('string'))") from None
