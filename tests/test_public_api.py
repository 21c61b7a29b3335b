"""The public surface is pinned, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import neon_notebook

PUBLIC = {
    "__version__", "connect", "Session", "WarmUpReport", "ComputeState", "StateChange", "Settings",
    "Endpoint", "NeonError", "ConfigurationError", "ConnectError", "PermanentConnectError",
    "WakeTimeout", "PoolExhausted", "ResultInterrupted", "load_ipython_extension",
    "default_session", "set_default_session", "read_arrow", "read_pandas", "read_polars",
    "iter_batches", "to_parquet", "SessionClosed", "CommitUncertain", "UnrepresentableValue",
    "OutputSettingChanged", "SessionStateRefused", "UnsupportedStatement", "DecodeError",
    "LocalComputeError", "BinariesNotFound", "NeonWarning", "TypeFallbackWarning",
    "SessionSettingWarning", "write", "WriteInterrupted",
}


def test_exported_names():
    assert set(neon_notebook.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(neon_notebook, name) is not None


def test_import_is_light():
    code = ("import sys, neon_notebook\n"
            "heavy = [m for m in ('pandas', 'polars', 'pyarrow', 'ipywidgets', 'IPython', 'psycopg') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_connect_does_not_import_dataframe_libraries():
    code = ("import sys, neon_notebook as nn\n"
            "s = nn.connect('postgresql://u:p@127.0.0.1:1/db', suspend_after=None)\n"
            "print(','.join(m for m in ('pandas', 'polars', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
