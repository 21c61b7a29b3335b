"""Modules loaded on first attribute access, safely from several threads at once.

``pyarrow.compute`` adds ~8 MB of resident memory at import and is needed only
by the COPY text path, the row path and a few conversions; the binary path of
common types never touches it.  The standard library's ``LazyLoader`` is not
thread-safe before Python 3.12.3 (a second thread can see the half-initialised
module: "module 'pyarrow.compute' has no attribute 'cast'"), so this is a
plain proxy that imports the real module under a lock, with the normal import
machinery, and forwards attributes to it.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()


class _LazyModule:
    """Stands for module ``name``; the first attribute access imports it (once, under a lock)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        module = self._module
        if module is None:
            with _lock:
                if self._module is None:
                    self._module = importlib.import_module(self._name)
                module = self._module
        return module

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._load(), attr)
        setattr(self, attr, value)  # found directly next time
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module else ''}>"


def lazy_module(name: str) -> Any:
    """``name``, as it is if already imported, else a proxy that imports it on first use."""
    if name in sys.modules:
        return sys.modules[name]
    return _LazyModule(name)
