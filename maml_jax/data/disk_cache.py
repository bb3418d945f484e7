"""Where and how the data loaders write their decoded caches (shared by every source).

Example:
    >>> user_cache_dir("omniglot").parts[-2:]
    ('maml_jax', 'omniglot')
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["atomic_write", "dir_is_writable", "user_cache_dir"]


def user_cache_dir(*parts: str) -> pathlib.Path:
    """``$XDG_CACHE_HOME/maml_jax/<parts>`` (default ``~/.cache/maml_jax/<parts>``)."""
    # XDG first because that is where Linux users expect re-creatable data to live.
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base.joinpath("maml_jax", *parts)


def dir_is_writable(path: pathlib.Path) -> bool:
    """Whether a cache may be written into ``path`` (a data folder)."""
    # os.access alone is not enough: for root it succeeds on a directory with mode
    # r-xr-xr-x, and shared read-only data folders (as in CI) are often mounted exactly
    # like that. Treat "no write bit for anyone" as the owner's intent: do not write.
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return path.is_dir() and bool(mode & 0o222) and os.access(path, os.W_OK | os.X_OK)


def atomic_write(dest: pathlib.Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``dest`` through ``write(file)`` so that readers never see a partial file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates 0600 files; caches and archives are meant to be shareable.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    finally:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
