"""An HTTP answer's rows (PostgreSQL's text output, by type OID) -> an Arrow table of exact types.

The same kinds, registry and assembly as the TCP path's row path, so a query
reads the same Arrow types and values over both transports (TYPES.md).
"""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa

from ..readers._assemble import table_from_blocks
from ..readers._catalog import TypeResolver
from ..readers._decode import Block, text_block
from ..readers._arrays import load_array
from ._protocol import Result

__all__ = ["to_table"]


def to_table(result: Result, settings: dict[str, str],
             lookup: Callable[[list[int]], Sequence[Sequence]], views: bool = False) -> pa.Table:
    """The result as a table; ``lookup`` asks the catalog about OIDs the registry does not know."""
    columns = TypeResolver(lookup, settings, load_array).resolve(
        [(f.name, f.type_oid, f.type_modifier) for f in result.fields])
    n = len(result.rows)
    if not columns:
        return table_from_blocks([], [Block([], n)])
    values = [list(col) for col in zip(*result.rows)] if n else [[] for _ in columns]
    block = text_block(columns, values, n)  # str values: Arrow builds them as binary, then casts
    return table_from_blocks(columns, [block], views)
