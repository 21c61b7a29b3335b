"""Modules loaded on first attribute access (the standard library's LazyLoader recipe).

``pyarrow.compute`` adds ~8 MB of resident memory at import and is needed only
by the COPY text path, the row path and a few conversions; the binary path of
common types never touches it.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, imported now if already imported elsewhere, else on first use."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - pyarrow is a dependency
        raise ImportError(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
