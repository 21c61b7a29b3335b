"""Where DATABASE_URL and DIRECT_URL come from when no URL is given, read the way Prisma reads them.

Prisma (packages/internals/src/utils/getEnvPaths.ts, tryLoadEnvs.ts) loads the
project root's ``.env``, then the first of ``./prisma/.env`` and ``./.env``; a
variable already set wins over any file (dotenv does not override), the root
file over the other, and ``${VAR}`` is expanded with the environment first
(dotenv-expand). An explicit ``dotenv_path`` is the only file read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path


from .errors import ConfigurationError

__all__ = ["ENV_NAMES", "from_environment"]

ENV_NAMES = ("DATABASE_URL", "DIRECT_URL")
# Prisma's project root is the nearest directory with a package.json; a Python
# project marks its root with pyproject.toml, so both count here.
_ROOT_MARKERS = ("package.json", "pyproject.toml")


def from_environment(
    environ: Mapping[str, str], dotenv_path: str | os.PathLike[str] | None
) -> dict[str, tuple[str, str]]:
    """DATABASE_URL and DIRECT_URL (those found) with where each came from, for the error messages."""
    if dotenv_path is not None:
        files = [Path(dotenv_path)]
        if not files[0].is_file():
            raise ConfigurationError(f"dotenv_path {str(dotenv_path)!r} is not a file.")
    else:
        files = _dotenv_files(Path.cwd())
    loaded: dict[str, tuple[str, Path]] = {}
    for path in files:
        from dotenv import dotenv_values  # only when a .env file is read (Pyodide may lack python-dotenv)

        for key, value in dotenv_values(path, interpolate=False).items():
            if value is not None and key not in loaded:
                loaded[key] = (value, path)

    def lookup(name: str) -> str:
        return environ[name] if name in environ else loaded.get(name, ("",))[0]

    found = {}
    for name in ENV_NAMES:
        if environ.get(name):
            found[name] = (environ[name], f"{name} (from the environment)")
        elif name in loaded:
            value, path = loaded[name]
            expanded = _expand(value, lookup, frozenset({name}))
            if expanded:
                found[name] = (expanded, f"{name} (from {path})")
    return found


_REFERENCE = re.compile(r"(\\?)\$\{([A-Za-z0-9_]+)\}")


def _expand(value: str, lookup: Callable[[str], str], seen: frozenset[str]) -> str:
    """dotenv-expand's ``${VAR}`` substitution: recursive, ``\\${VAR}`` kept literally, cycles empty."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        name = match.group(2)
        return "" if name in seen else _expand(lookup(name), lookup, seen | {name})

    return _REFERENCE.sub(substitute, value)


def _dotenv_files(cwd: Path) -> list[Path]:
    """The .env files Prisma's CLI would load from ``cwd``, highest precedence first."""
    files = []
    root = next((d for d in (cwd, *cwd.parents) if any((d / m).is_file() for m in _ROOT_MARKERS)), None)
    if root is not None and (root / ".env").is_file():
        files.append(root / ".env")
    schema_env = next((p for p in (cwd / "prisma" / ".env", cwd / ".env") if p.is_file()), None)
    if schema_env is not None and all(schema_env.resolve() != f.resolve() for f in files):
        files.append(schema_env)
    return files
