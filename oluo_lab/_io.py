"""Small OS-level helpers any layer may import; the C library is loaded here, once.

Writing a whole buffer, the fsync family, and the two Linux calls the store's batched
writer relies on (``syncfs`` and ``sync_file_range``), loaded once from libc through
``ctypes``. A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

__all__ = [
    "LIBC",
    "MADVISE",
    "O_CLOEXEC",
    "fsync_dir",
    "fsync_path",
    "malloc_trim",
    "start_writeback",
    "syncfs",
    "syncfs_available",
    "write_all",
]

#: ``O_CLOEXEC`` where the platform has it (0 elsewhere), so no fd leaks into a child.
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)


def write_all(fd: int, data: Any) -> None:
    """Write every byte of the buffer ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to disk, opening it by name."""
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entry table to disk (makes creates, links and renames durable)."""
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


#: The C library of this process on Linux (``None`` elsewhere or if it cannot be loaded).
LIBC: ctypes.CDLL | None = _load_libc()


def _load_madvise():
    fn = getattr(LIBC, "madvise", None) if LIBC is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
    return fn


#: libc's ``madvise(addr, length, advice)`` (0 or -1 with errno), or ``None`` where the
#: C library has none. Callers use it for advice only and ignore its failures.
MADVISE = _load_madvise()


def malloc_trim() -> bool:
    """Hand the C heap's free memory back to the OS (glibc ``malloc_trim(0)``), so the
    resident set size reflects what is in use; False where the C library has no such call."""
    fn = getattr(LIBC, "malloc_trim", None) if LIBC is not None else None
    if fn is None:
        return False
    fn(0)
    return True


def _load_syncfs():
    fn = getattr(LIBC, "syncfs", None) if LIBC is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
    return fn


def _load_sync_file_range():
    fn = getattr(LIBC, "sync_file_range", None) if LIBC is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()
_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


def syncfs_available() -> bool:
    """Whether :func:`syncfs` can be called here (Linux with a libc that has it)."""
    return _SYNCFS is not None


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every dirty page and journal entry of the filesystem holding ``path`` (Linux).

    Raises ``OSError`` if the call fails, and ``RuntimeError`` where it does not exist
    (check :func:`syncfs_available` first).
    """
    if _SYNCFS is None:
        raise RuntimeError("syncfs(2) is not available on this platform")
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now (Linux; a hint, not a barrier).

    A later ``syncfs``/``fsync`` then waits for less: the disk works while we compute.
    Errors are ignored (durability comes from that later barrier); elsewhere a no-op.
    """
    fn = _SYNC_FILE_RANGE
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
