"""The default session behind the module-level readers: ``nn.read_polars(sql)`` without a Session.

The default is the session given to :func:`set_default_session`, else one made
on first use from ``DATABASE_URL``/``DIRECT_URL`` exactly as ``nn.connect()``
makes it.  Making it opens nothing: the first read connects (and wakes the
compute), as any read does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import os

    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from .session import Session

_lock = threading.Lock()
_default: Session | None = None
_made_here = False


def default_session() -> Session:
    """The session the module-level readers use (made from the environment on first use)."""
    global _default, _made_here
    with _lock:
        if _default is None or (_made_here and _default.closed):
            from ._connect import connect

            _default, _made_here = connect(), True
        return _default


def set_default_session(session: Session | None) -> None:
    """Make ``session`` the default (``None``: back to one made from the environment)."""
    global _default, _made_here
    with _lock:
        _default, _made_here = session, False


def read_arrow(sql: str, params: Any = None, **options: Any) -> pa.Table:
    """:meth:`Session.read_arrow` on the default session."""
    return default_session().read_arrow(sql, params, **options)


def read_pandas(sql: str, params: Any = None, **options: Any) -> pd.DataFrame:
    """:meth:`Session.read_pandas` on the default session."""
    return default_session().read_pandas(sql, params, **options)


def read_polars(sql: str, params: Any = None, **options: Any) -> pl.DataFrame:
    """:meth:`Session.read_polars` on the default session."""
    return default_session().read_polars(sql, params, **options)


def iter_batches(sql: str, params: Any = None, **options: Any) -> Iterator[pa.RecordBatch]:
    """:meth:`Session.iter_batches` on the default session."""
    return default_session().iter_batches(sql, params, **options)


def to_parquet(sql: str, path: str | os.PathLike[str], params: Any = None, **options: Any) -> int:
    """:meth:`Session.to_parquet` on the default session."""
    return default_session().to_parquet(sql, path, params, **options)


def write(data: Any, table: str | tuple[str, str], **options: Any) -> int:
    """:meth:`Session.write` on the default session."""
    return default_session().write(data, table, **options)
