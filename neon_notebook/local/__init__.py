"""A local compute that behaves like Neon's: scale to zero, wake on connect, a pooler.

``LocalCompute`` runs a real PostgreSQL and a real PgBouncer (transaction mode)
behind a socket-activation proxy in a child process. Used by the test suite,
the demo, and users who want to work offline.
"""

from .compute import LocalCompute, LocalComputeError

__all__ = ["LocalCompute", "LocalComputeError"]
