"""Atomic file writes: a temporary file beside the target, renamed over it when complete.

An interrupted run therefore never leaves a half-written checkpoint, mask or video behind, and an earlier
file at the same path survives until the new one is whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary file beside ``path`` (same folder, so ``os.replace`` is atomic), with normal permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    os.chmod(name, 0o666 & ~umask())  # mkstemp's 0600 would make outputs private to their writer
    return Path(name)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_beside(path, suffix)
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
