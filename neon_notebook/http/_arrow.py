"""An HTTP answer's rows (PostgreSQL's text output, by type OID) -> an Arrow table of exact types.

The same kinds, registry and assembly as the TCP path's row path, so a query
reads the same Arrow types and values over both transports (TYPES.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa

from ..readers._arrays import load_array
from ..readers._assemble import table_from_blocks
from ..readers._catalog import TypeResolver
from ..readers._decode import Block, strings_block
from ..readers._kinds import Column
from ._protocol import Result

__all__ = ["to_table"]


def to_table(result: Result, settings: dict[str, str], lookup: Callable[[list[int]], Sequence[Sequence]],
             views: bool = False, check: Callable[[list[Column]], None] | None = None) -> pa.Table:
    """The result as a table; ``lookup`` asks the catalog about OIDs the registry does not know,
    ``check`` may refuse the columns (an output setting the text changed)."""
    columns = TypeResolver(lookup, settings, load_array).resolve(
        [(f.name, f.type_oid, f.type_modifier) for f in result.fields])
    if check is not None:
        check(columns)
    n = len(result.rows)
    if not columns:
        return table_from_blocks([], [Block([], n)])
    values = list(zip(*result.rows)) if n else [() for _ in columns]
    arrays = [pa.array(v, pa.string()) for v in values]
    return table_from_blocks(columns, [strings_block(columns, arrays, n)], views)
