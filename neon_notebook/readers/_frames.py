"""Arrow -> pandas / polars / Parquet, where those cannot take an Arrow type as is.

What changes on the way (everything else is handed over unchanged, zero-copy
where the library can), for columns and for the elements of list columns:

* ``interval`` (``month_day_nano_interval``): polars and Parquet have no such
  type.  polars gets ``Duration("us")`` when no value has a month part (days
  count as 24 hours), else a struct ``{months, days, nanoseconds}``; Parquet
  always gets that struct.  pandas gets ``timedelta64[us]`` under the same
  rule, else ``DateOffset`` objects (pyarrow's conversion).
* ``time`` holding 24:00:00 (valid in PostgreSQL): pandas and polars get a
  duration since midnight for that column, with a ``TypeFallbackWarning``.
* ``decimal256`` (``numeric(p, s)`` with p > 38): polars has no 256-bit
  decimal; it gets the exact text.
* pandas, ``dtype_backend="numpy_nullable"``: nullable ``Int*``, ``Float*``,
  ``boolean`` and ``string`` dtypes; lists (arrays, vectors) as
  ``ArrowDtype(list<...>)``, exact (numpy arrays would make floats of integer
  lists holding a NULL); decimals as ``ArrowDtype(decimal128)``
  (pandas has no decimal dtype; object columns of ``Decimal`` are ~100x slower
  to build); dates as ``datetime64[ms]`` (``datetime.date`` cannot hold
  'infinity' or years past 9999).  Whether a float NaN counts as NA is
  pandas' own option ``future.distinguish_nan_and_na``.
* duplicate column names (``SELECT 1 AS a, 2 AS a``): polars requires unique
  names, so later ones get ``_1``, ``_2``... suffixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa

from ..errors import ConfigurationError
from ._lazy import lazy_module
from ._registry import PANDAS_DTYPES

pc = lazy_module("pyarrow.compute")

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import polars as pl

DtypeBackend = Literal["numpy_nullable", "pyarrow"]

INTERVAL_STRUCT = pa.struct(
    [("months", pa.int32()), ("days", pa.int32()), ("nanoseconds", pa.int64())]
)


def _import_optional(name: str):
    try:
        return __import__(name)
    except ImportError as ex:  # pragma: no cover - both are dependencies
        raise ImportError(
            f"{name} is needed for this reader; install it with `pip install {name}`"
        ) from ex


def interval_as_struct(arr: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """``month_day_nano_interval`` -> struct<months, days, nanoseconds>, exactly."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    out = []
    for c in chunks:
        if len(c) == 0:
            out.append(pa.array([], INTERVAL_STRUCT))
            continue
        validity, data = c.buffers()
        rec = np.frombuffer(
            data, dtype=[("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")]
        )[c.offset : c.offset + len(c)]
        mask = pc.is_null(c) if c.null_count else None
        out.append(
            pa.StructArray.from_arrays(
                [
                    pa.array(rec["months"].copy()),
                    pa.array(rec["days"].copy()),
                    pa.array(rec["nanos"].copy()),
                ],
                fields=list(INTERVAL_STRUCT),
                mask=mask,
            )
        )
    return pa.chunked_array(out, INTERVAL_STRUCT)


def interval_as_duration(arr: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """``duration[us]`` if no value has months (days = 24 h) and the sum fits, else None."""
    s = interval_as_struct(arr)
    months = pc.fill_null(s.combine_chunks().field("months") if len(s) else pa.array([], pa.int32()), 0)
    if len(months) and pc.any(pc.not_equal(months, 0)).as_py():
        return None
    flat = s.combine_chunks() if len(s) else pa.array([], INTERVAL_STRUCT)
    days = flat.field("days").to_numpy(zero_copy_only=False).astype(np.int64)
    nanos = flat.field("nanoseconds").to_numpy(zero_copy_only=False)
    if len(nanos) and (nanos % 1000).any():
        return None  # PostgreSQL has microseconds; never expected, never rounded
    if len(days) and np.abs(days).max() > (2**62) // 86_400_000_000:
        return None  # more days than a duration[us] holds: keep the struct
    us = days * 86_400_000_000 + nanos // 1000
    mask = pc.is_null(flat).to_numpy(zero_copy_only=False) if flat.null_count else None
    return pa.chunked_array([pa.array(us, pa.duration("us"), mask=mask)])


def time_as_duration(f: pa.Field, col: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A ``time`` column holding 24:00:00 as a duration since midnight, else None.

    PostgreSQL's ``time`` allows 24:00:00; ``datetime.time`` and polars'
    ``Time`` do not (polars would silently make it null).
    """
    latest = pc.max(col.cast(pa.int64())).as_py() if len(col) else None
    if latest is None or latest < 86_400_000_000:
        return None
    import warnings

    from ..errors import TypeFallbackWarning

    warnings.warn(
        f"column {f.name!r} (time) holds 24:00:00, which a time of day cannot; "
        "it is returned as a duration since midnight",
        TypeFallbackWarning,
        stacklevel=7,  # read_polars/read_pandas' caller
    )
    return col.cast(pa.int64()).cast(pa.duration("us"))


def _through_lists(fn):
    """Extend a column conversion to the elements of list columns (any depth)."""

    def convert(f: pa.Field, col: pa.ChunkedArray) -> pa.ChunkedArray | None:
        if not pa.types.is_list(f.type):
            return fn(f, col)
        chunks = col.chunks
        values = pa.chunked_array([c.values for c in chunks], f.type.value_type)
        new = convert(pa.field(f.name, f.type.value_type), values)
        if new is None:
            return None
        flat = new.combine_chunks() if new.num_chunks != 1 else new.chunk(0)
        out, base = [], 0
        for c in chunks:
            offsets = pc.add(c.offsets, pa.scalar(base, pa.int32()))
            mask = pc.is_null(c) if c.null_count else None
            out.append(pa.ListArray.from_arrays(offsets, flat, mask=mask))
            base += len(c.values)
        return pa.chunked_array(out, pa.list_(flat.type))

    return convert


def _replace_columns(table: pa.Table, fn) -> pa.Table:
    fn = _through_lists(fn)
    for i, f in enumerate(table.schema):
        new = fn(f, table.column(i))
        if new is not None:
            table = table.set_column(i, pa.field(f.name, new.type, metadata=f.metadata), new)
    return table


def _has(type_: pa.DataType, predicate) -> bool:
    while pa.types.is_list(type_):
        type_ = type_.value_type
    return predicate(type_)


def for_parquet(table: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Intervals as struct<months, days, nanoseconds> (Parquet has no such type)."""
    if not any(_has(f.type, pa.types.is_interval) for f in table.schema):
        return table
    is_batch = isinstance(table, pa.RecordBatch)
    t = pa.Table.from_batches([table]) if is_batch else table
    t = _replace_columns(
        t, lambda f, col: interval_as_struct(col) if pa.types.is_interval(f.type) else None
    )
    return t.combine_chunks().to_batches()[0] if is_batch and t.num_rows else (
        pa.RecordBatch.from_pylist([], schema=t.schema) if is_batch else t
    )


def parquet_schema(schema: pa.Schema) -> pa.Schema:
    return for_parquet(schema.empty_table()).schema


def to_polars(table: pa.Table) -> pl.DataFrame:
    pl = _import_optional("polars")

    def fix(f: pa.Field, col: pa.ChunkedArray):
        if pa.types.is_interval(f.type):
            duration = interval_as_duration(col)
            return interval_as_struct(col) if duration is None else duration
        if pa.types.is_time(f.type):
            return time_as_duration(f, col)
        if pa.types.is_decimal256(f.type):
            return col.cast(pa.string())
        return None

    table = _replace_columns(table, fix)
    names = table.column_names
    if len(set(names)) != len(names):
        seen: dict[str, int] = {}
        unique = []
        for n in names:
            k = seen.get(n, 0)
            seen[n] = k + 1
            unique.append(n if k == 0 else f"{n}_{k}")
        table = table.rename_columns(unique)
    return pl.from_arrow(table, rechunk=False)


def to_pandas(table: pa.Table, dtype_backend: DtypeBackend = "numpy_nullable") -> pd.DataFrame:
    pd = _import_optional("pandas")
    if dtype_backend == "pyarrow":
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    if dtype_backend != "numpy_nullable":
        raise ConfigurationError(
            f"dtype_backend must be 'numpy_nullable' or 'pyarrow', not {dtype_backend!r}"
        )

    def fix(f: pa.Field, col: pa.ChunkedArray):
        if pa.types.is_interval(f.type):
            return interval_as_duration(col)
        if pa.types.is_time(f.type):
            return time_as_duration(f, col)
        return None

    table = _replace_columns(table, fix)
    # pandas has no decimal dtype of its own: object columns of Decimal are
    # ~100x slower to build and several times larger, so decimals stay Arrow
    # decimals (values still come out as decimal.Decimal).
    decimals = {
        f.type: pd.ArrowDtype(f.type)
        for f in table.schema
        if pa.types.is_decimal(f.type)
    }
    mapping = {**decimals, **{t: pd.api.types.pandas_dtype(name) for t, name in PANDAS_DTYPES.items()}}

    def dtype(type_: pa.DataType):
        # Lists stay Arrow lists: numpy arrays of their elements would turn
        # int8[] holding a NULL into floats (2**53 + 1 rounded) and lose NULL
        # against NaN in float8[].  Cells are Python lists (ints, None, nan).
        return pd.ArrowDtype(type_) if pa.types.is_list(type_) else mapping.get(type_)

    # Dates as datetime64[ms] (pyarrow's date_as_object=False): datetime.date
    # cannot hold 'infinity', BC dates or years past 9999.
    return table.to_pandas(types_mapper=dtype, date_as_object=False)
