"""Small OS-level helpers any layer may import; the C library is loaded here, once.

Writing a whole buffer, the fsync family, and the two Linux calls the store's batched
writer relies on (``syncfs`` and ``sync_file_range``), loaded once from libc through
``ctypes``. The pack store does every file operation through the small functions at the
end of this module (create, write, fsync, link, rename, unlink, mkdir, list, read), so
one place can record or fail them. A leaf module: it imports nothing from the package.
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
    "close",
    "create_excl",
    "fsync_dir",
    "fsync_fd",
    "fsync_path",
    "link",
    "list_dir",
    "make_dir",
    "malloc_trim",
    "open_read",
    "pread_into",
    "preadv",
    "remove_dir",
    "rename",
    "start_writeback",
    "syncfs",
    "syncfs_available",
    "unlink",
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


# --- the pack store's file operations ---------------------------------------------------
# One function per operation, each a thin wrapper over one system call, so a test (or a
# recorder of operations) can replace or wrap it in one place. They raise OSError; the
# caller turns it into a typed error naming the file and the operation.


def create_excl(path: str) -> int:
    """Create and open a new file for writing and reading back (``O_CREAT|O_EXCL``: never
    an existing one)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)


def open_read(path: str) -> int:
    """Open a file for reading."""
    return os.open(path, os.O_RDONLY | O_CLOEXEC)


def close(fd: int) -> None:
    """Close a file descriptor."""
    os.close(fd)


def fsync_fd(fd: int) -> None:
    """Flush an open file's data and metadata to disk."""
    os.fsync(fd)


def link(src: str, dst: str) -> None:
    """Give the file ``src`` the second name ``dst``; ``FileExistsError`` if ``dst`` exists
    (so an existing file is never replaced)."""
    os.link(src, dst)


def rename(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, atomically replacing ``dst``."""
    os.rename(src, dst)


def unlink(path: str) -> None:
    """Remove a file name."""
    os.unlink(path)


def remove_dir(path: str) -> None:
    """Remove an empty directory."""
    os.rmdir(path)


def make_dir(path: str) -> bool:
    """Create a directory; False if it already exists (a file there is an error)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False
    return True


def list_dir(path: str) -> list[tuple[str, int, float]]:
    """(name, size, mtime) of every regular file in a directory, by name."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed since the listing
                continue
            if entry.is_file(follow_symlinks=False):
                out.append((entry.name, st.st_size, st.st_mtime))
    out.sort()
    return out


def pread_into(fd: int, buf: Any, offset: int) -> int:
    """Read into ``buf`` (a writable buffer) from ``offset`` until it is full or the file
    ends; returns the bytes read."""
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def preadv(fd: int, buffers: list[Any], offset: int) -> int:
    """Scatter-read consecutive bytes from ``offset`` into ``buffers`` in order (one system
    call per ``IOV_MAX`` buffers, repeated until all are full or the file ends); returns
    the bytes read."""
    views = [v for v in (memoryview(b).cast("B") for b in buffers) if len(v)]
    got = 0
    i = 0  # first buffer not yet full
    while i < len(views):
        n = os.preadv(fd, views[i : i + _IOV_MAX], offset + got)
        if n == 0:
            break
        got += n
        while n:  # advance past what this call filled
            take = min(n, len(views[i]))
            views[i] = views[i][take:]
            n -= take
            if not len(views[i]):
                i += 1
    return got


_IOV_MAX: int = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
