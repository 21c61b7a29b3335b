"""Arrow -> pandas / polars / Parquet, where those cannot take an Arrow type as is.

What changes on the way (everything else is handed over unchanged, zero-copy
where the library can):

* ``interval`` (``month_day_nano_interval``): polars and Parquet have no such
  type.  polars gets ``Duration("us")`` when no value has a month part (days
  count as 24 hours), else a struct ``{months, days, nanoseconds}``; Parquet
  always gets that struct.  pandas gets ``timedelta64[us]`` under the same
  rule, else ``DateOffset`` objects (pyarrow's conversion).
* ``decimal256`` (``numeric(p, s)`` with p > 38): polars has no 256-bit
  decimal; it gets the exact text.
* duplicate column names (``SELECT 1 AS a, 2 AS a``): polars requires unique
  names, so later ones get ``_1``, ``_2``... suffixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    us = days * 86_400_000_000 + nanos // 1000
    mask = pc.is_null(flat).to_numpy(zero_copy_only=False) if flat.null_count else None
    return pa.chunked_array([pa.array(us, pa.duration("us"), mask=mask)])


def _replace_columns(table: pa.Table, fn) -> pa.Table:
    for i, f in enumerate(table.schema):
        new = fn(f, table.column(i))
        if new is not None:
            table = table.set_column(i, pa.field(f.name, new.type, metadata=f.metadata), new)
    return table


def for_parquet(table: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Intervals as struct<months, days, nanoseconds> (Parquet has no such type)."""
    if not any(pa.types.is_interval(f.type) for f in table.schema):
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
    return pa.schema(
        [
            pa.field(f.name, INTERVAL_STRUCT, metadata=f.metadata)
            if pa.types.is_interval(f.type)
            else f
            for f in schema
        ],
        metadata=schema.metadata,
    )


def to_polars(table: pa.Table) -> pl.DataFrame:
    pl = _import_optional("polars")

    def fix(f: pa.Field, col: pa.ChunkedArray):
        if pa.types.is_interval(f.type):
            return interval_as_duration(col) or interval_as_struct(col)
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
        raise ValueError(
            f"dtype_backend must be 'numpy_nullable' or 'pyarrow', not {dtype_backend!r}"
        )

    def fix(f: pa.Field, col: pa.ChunkedArray):
        if pa.types.is_interval(f.type):
            return interval_as_duration(col)
        return None

    table = _replace_columns(table, fix)
    mapping = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.float32(): pd.Float32Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
    }
    # Dates as datetime64[ms] (pyarrow's date_as_object=False): datetime.date
    # cannot hold 'infinity', BC dates or years past 9999.
    return table.to_pandas(types_mapper=mapping.get, date_as_object=False)
