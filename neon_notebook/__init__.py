"""neon_notebook: Neon serverless Postgres from Jupyter.

Cold-start-aware sessions over Neon's pooled and direct endpoints, fast readers
into Arrow, pandas and polars, notebook widgets, and a local compute that scales
to zero like Neon's (``neon_notebook.local``)::

    import neon_notebook as nn
    session = nn.connect()            # DATABASE_URL / DIRECT_URL, as Prisma reads them
    session.warm_up()                 # wake the compute before the analysis
    with session.connection() as conn:
        conn.execute("select 1")
    df = nn.read_polars("select 1 as x")   # the same reads on a default session

Names load on first use, so ``import neon_notebook`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "_connect",
    "Session": "session",
    "WarmUpReport": "session",
    "ComputeState": "_state",
    "StateChange": "_state",
    "Settings": "_config",
    "Endpoint": "_endpoint",
    "NeonError": "errors",
    "ConfigurationError": "errors",
    "ConnectError": "errors",
    "PermanentConnectError": "errors",
    "WakeTimeout": "errors",
    "PoolExhausted": "errors",
    "ResultInterrupted": "errors",
    "SessionClosed": "errors",
    "CommitUncertain": "errors",
    "WriteInterrupted": "errors",
    "UnrepresentableValue": "errors",
    "OutputSettingChanged": "errors",
    "SessionStateRefused": "errors",
    "UnsupportedStatement": "errors",
    "DecodeError": "errors",
    "LocalComputeError": "errors",
    "BinariesNotFound": "errors",
    "NeonWarning": "errors",
    "TypeFallbackWarning": "errors",
    "SessionSettingWarning": "errors",
    "load_ipython_extension": "ui.magics",
    "default_session": "default",
    "set_default_session": "default",
    "read_arrow": "default",
    "read_pandas": "default",
    "read_polars": "default",
    "iter_batches": "default",
    "to_parquet": "default",
    "write": "default",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from .default import (default_session, iter_batches, read_arrow, read_pandas, read_polars,
                          set_default_session, to_parquet, write)
    from .ui.magics import load_ipython_extension
    from .errors import (BinariesNotFound, CommitUncertain, ConfigurationError, ConnectError,
                         DecodeError, LocalComputeError, NeonError, NeonWarning, OutputSettingChanged,
                         PermanentConnectError, PoolExhausted, ResultInterrupted, SessionClosed,
                         SessionSettingWarning, SessionStateRefused, TypeFallbackWarning,
                         UnrepresentableValue, UnsupportedStatement, WakeTimeout, WriteInterrupted)
    from ._connect import connect
    from .session import Session, WarmUpReport
    from ._config import Settings
    from ._endpoint import Endpoint
    from ._state import ComputeState, StateChange


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'neon_notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
