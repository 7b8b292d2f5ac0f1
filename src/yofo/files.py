"""Atomic file writes, output locks and file digests.

Writes go to a temporary file beside the target, renamed over it when complete: an interrupted run never
leaves a half-written checkpoint, mask or video behind, and an earlier file at the same path survives until
the new one is whole. :func:`exclusive_lock` keeps two runs from writing the same output at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from yofo.errors import InputError


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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (checkpoints are reported with it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, removed on exit) while the block runs.

    The lock is an ``flock`` on an open file, so the system releases it when its process dies, however it
    dies; a lock file left behind by a killed run is simply taken over. Removing the file on exit is safe:
    a run that opened the file before it was removed sees that the path no longer names what it locked and
    tries again.

    Raises:
        InputError: another process holds the lock (``what`` says what it protects, for the message).
    """
    path = Path(path)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise InputError(f"{what}: another run is writing it (lock {path}); wait for that run to finish or "
                             f"choose another output") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(handle)  # removed (or replaced) by the run that held it just before us: lock the new file
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(handle)
