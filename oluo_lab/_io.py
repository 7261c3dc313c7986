"""Small OS-level helpers any layer may import; the C library is loaded here, once.

Writing a whole buffer, the fsync family, and the two Linux calls the store's batched
writer relies on (``syncfs`` and ``sync_file_range``), loaded once from libc through
``ctypes``. Both stores and the snapshot layer's files do every file operation through the
small functions of this module (create, open, write, read, fsync, syncfs, link, rename,
unlink, mkdir, list), so one place can record or fail them: :func:`set_hook` installs a
function that every such call goes through (the reliability tests inject ``ENOSPC``,
``EIO``, ... there, and record the operations a power cut could lose). A leaf module: it
imports nothing from the package.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "LIBC",
    "MADVISE",
    "O_CLOEXEC",
    "Hook",
    "close",
    "create_excl",
    "fsync_dir",
    "fsync_fd",
    "fsync_path",
    "link",
    "list_dir",
    "list_names",
    "make_dir",
    "malloc_trim",
    "open_append",
    "open_lock",
    "open_read",
    "pread_into",
    "preadv",
    "read",
    "read_file",
    "readv",
    "remove_dir",
    "rename",
    "set_hook",
    "start_writeback",
    "syncfs",
    "syncfs_available",
    "unlink",
    "write_all",
]

#: ``hook(op, fn, args)`` performs (or refuses) one file operation: ``op`` names it
#: (``"create"``, ``"write"``, ``"fsync"``, ...), ``fn(*args)`` is the real call.
Hook = Callable[[str, Callable[..., Any], tuple[Any, ...]], Any]
_hook: Hook | None = None


def set_hook(hook: Hook | None) -> Hook | None:
    """Route every file operation of this module through ``hook`` (None: call directly);
    returns the previous hook. For tests: a hook may raise ``OSError`` instead of calling
    ``fn`` (a full disk, an I/O error), or record the call (a power-cut simulator)."""
    global _hook
    previous, _hook = _hook, hook
    return previous


def _call(op: str, fn: Callable[..., Any], *args: Any) -> Any:
    hook = _hook
    if hook is None:
        return fn(*args)
    return hook(op, fn, args)


#: ``O_CLOEXEC`` where the platform has it (0 elsewhere), so no fd leaks into a child.
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def write_all(fd: int, data: Any) -> None:
    """Write every byte of the buffer ``data`` to ``fd`` (``os.write`` may write less)."""
    _call("write", _write_all, fd, data)


def _fsync_path(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's data and metadata to disk, opening it by name."""
    _call("fsync_path", _fsync_path, path)


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entry table to disk (makes creates, links and renames durable)."""
    _call("fsync_dir", _fsync_dir, path)


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
    _call("syncfs", _syncfs, path)


def _syncfs(path: str | os.PathLike[str]) -> None:
    assert _SYNCFS is not None
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


# --- file operations -----------------------------------------------------------------------
# One function per operation, each a thin wrapper over one system call, so a test (or a
# recorder of operations) can replace or wrap it in one place (:func:`set_hook`). They
# raise OSError; the caller turns it into a typed error naming the file and the operation.


def _open(path: str | os.PathLike[str], flags: int) -> int:
    return os.open(path, flags | O_CLOEXEC, 0o644)


def create_excl(path: str | os.PathLike[str]) -> int:
    """Create and open a new file for writing and reading back (``O_CREAT|O_EXCL``: never
    an existing one)."""
    return _call("create", _open, path, os.O_RDWR | os.O_CREAT | os.O_EXCL)


def open_read(path: str | os.PathLike[str]) -> int:
    """Open a file for reading."""
    return _call("open", _open, path, os.O_RDONLY)


def open_append(path: str | os.PathLike[str]) -> int:
    """Open a file for appending and reading, creating it if missing."""
    return _call("open_append", _open, path, os.O_RDWR | os.O_APPEND | os.O_CREAT)


def open_lock(path: str | os.PathLike[str], create: bool = True) -> int:
    """Open a lock file: for writing, created if missing (``create``), else read-only (an
    existing lock file on storage this process cannot write; ``flock`` works on either)."""
    if create:
        return _call("open_lock", _open, path, os.O_RDWR | os.O_CREAT)
    return _call("open", _open, path, os.O_RDONLY)


def close(fd: int) -> None:
    """Close a file descriptor."""
    os.close(fd)


def fsync_fd(fd: int) -> None:
    """Flush an open file's data and metadata to disk."""
    _call("fsync", os.fsync, fd)


def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Give the file ``src`` the second name ``dst``; ``FileExistsError`` if ``dst`` exists
    (so an existing file is never replaced)."""
    _call("link", os.link, src, dst)


def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst``, atomically replacing ``dst``."""
    _call("rename", os.rename, src, dst)


def unlink(path: str | os.PathLike[str]) -> None:
    """Remove a file name."""
    _call("unlink", os.unlink, path)


def remove_dir(path: str | os.PathLike[str]) -> None:
    """Remove an empty directory."""
    _call("rmdir", os.rmdir, path)


def _make_dir(path: str | os.PathLike[str]) -> bool:
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False
    return True


def make_dir(path: str | os.PathLike[str]) -> bool:
    """Create a directory; False if it already exists (a file there is an error)."""
    if os.path.isdir(path):  # also on storage this process cannot write
        return False
    return _call("mkdir", _make_dir, path)


def _list_dir(path: str | os.PathLike[str]) -> list[tuple[str, int, float]]:
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


def list_dir(path: str | os.PathLike[str]) -> list[tuple[str, int, float]]:
    """(name, size, mtime) of every regular file in a directory, by name."""
    return _call("list", _list_dir, path)


def list_names(path: str | os.PathLike[str]) -> list[str]:
    """Every name in a directory (files and directories), unsorted."""
    return _call("list", os.listdir, path)


def _read_file(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.readall()


def read_file(path: str | os.PathLike[str]) -> bytes:
    """A whole (small) file's bytes, by name."""
    return _call("read", _read_file, path)


def read(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from ``fd``'s position (``os.read``)."""
    return _call("read", os.read, fd, n)


def readv(fd: int, buffers: list[Any]) -> int:
    """Scatter-read from ``fd``'s position into ``buffers`` (``os.readv``)."""
    return _call("read", os.readv, fd, buffers)


def _pread_into(fd: int, buf: Any, offset: int) -> int:
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            break
        got += n
    return got


def pread_into(fd: int, buf: Any, offset: int) -> int:
    """Read into ``buf`` (a writable buffer) from ``offset`` until it is full or the file
    ends; returns the bytes read."""
    return _call("read", _pread_into, fd, buf, offset)


def _preadv(fd: int, buffers: list[Any], offset: int) -> int:
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


def preadv(fd: int, buffers: list[Any], offset: int) -> int:
    """Scatter-read consecutive bytes from ``offset`` into ``buffers`` in order (one system
    call per ``IOV_MAX`` buffers, repeated until all are full or the file ends); returns
    the bytes read."""
    return _call("read", _preadv, fd, buffers, offset)


_IOV_MAX: int = min(1024, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 16
