"""Where this code runs: the IPython shell, if any, and whether it is a Jupyter kernel.

The bottom of ``ui/``: the views ask it whether a widget can render (as tqdm's
``autonotebook``); it imports nothing of ours and never imports IPython itself.
"""

from __future__ import annotations

import sys
from typing import Any


def shell() -> Any:
    """The running IPython shell, or None (IPython is looked up, never imported)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel, where widgets can render."""
    return getattr(shell(), "kernel", None) is not None
