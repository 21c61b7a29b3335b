"""neon_notebook: Neon serverless Postgres from Jupyter.

Cold-start-aware sessions over Neon's pooled and direct endpoints, fast readers
into Arrow, pandas and polars, notebook widgets, and a local compute that scales
to zero like Neon's (``neon_notebook.local``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
