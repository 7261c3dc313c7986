"""Durable, atomic file replacement and the data-directory lock.

Every file the snapshot layer publishes goes through :func:`atomic_write`:
a uniquely named temp file created exclusively in the target directory,
written, fsynced, renamed over the target, and the directory fsynced, so a
crash leaves either the old file or the new one, never a torn one, and two
writers never share a temp file (docs/FORMAT.md §4.2). :func:`sweep_temp_files` removes temp files a
crashed writer left behind.

Snapshot layer, bottom: plain files only (no CAS, no engine); the owners of the
data-directory files (head, refs log, base cache, tags) write through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import _io
from .._faults import fault_point
from .._io import fsync_dir
from .errors import LockTimeout, ManifestSerde, PersistIOError, ReadOnlyLab

#: format (docs/FORMAT.md §3.1): name prefix of a data directory's temp files.
TEMP_PREFIX = ".oluo-tmp-"
#: format (docs/FORMAT.md §3.1): the lock file's name in a data directory.
LOCK_NAME = "oluo.lock"

__all__ = [
    "LOCK_NAME",
    "TEMP_PREFIX",
    "BackgroundWrite",
    "atomic_write",
    "data_dir_lock",
    "fsync_dir",
    "read_table",
    "require_writable",
    "sweep_temp_files",
    "writable",
    "write_table",
]


def _unique_temp(directory: Path, name: str) -> tuple[int, Path]:
    for attempt in range(100):
        tmp = directory / f"{TEMP_PREFIX}{name}.{os.getpid()}.{time.monotonic_ns()}.{attempt}"
        try:
            fd = _io.create_excl(tmp)
        except FileExistsError:
            continue
        return fd, tmp
    raise PersistIOError(f"could not create a unique temp file for {name} in {directory}")


def atomic_write(path: Path | str, data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises :class:`PersistIOError` (wrapping the ``OSError``) on failure; the
    temp file is removed and the previous content of ``path`` is untouched.
    """
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp = _unique_temp(directory, path.name)
    except OSError as exc:
        raise PersistIOError(f"cannot create a temp file next to {path.name}", exc) from exc
    step = "write"
    try:
        try:
            _io.write_all(fd, data)
            fault_point("durable.tmp_written")
            step = "fsync"
            _io.fsync_fd(fd)
            fault_point("durable.fsynced")
        finally:
            _io.close(fd)
        step = "rename"
        _io.rename(tmp, path)
        tmp = None
        fault_point("durable.renamed")
        step = "fsync the directory of"
        fsync_dir(directory)
        fault_point("durable.dir_synced")
    except OSError as exc:
        _discard(tmp)
        raise PersistIOError(f"cannot {step} {path.name}", exc) from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path | None) -> None:
    """Remove a temp file (best effort: gc sweeps what is left)."""
    if tmp is not None:
        with contextlib.suppress(OSError):
            _io.unlink(tmp)


def read_table(path: Path, key: str, version: int = 1) -> dict | None:
    """The map under ``key`` of a ``{key: {...}, "version": version}`` JSON file (the tags
    and branches files); None when the file does not exist. A damaged file is
    :class:`ManifestSerde` naming it (never silently empty: gc must know every ref); an
    unreadable one is :class:`PersistIOError`."""
    try:
        doc = json.loads(_io.read_file(path))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ManifestSerde(f"{path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise PersistIOError(f"cannot read {path.name}", exc) from exc
    if (
        not isinstance(doc, dict)
        or doc.get("version") != version
        or not isinstance(doc.get(key), dict)
    ):
        raise ManifestSerde(f"{path}: expected {{'version': {version}, '{key}': {{...}}}}")
    return doc[key]


def write_table(path: Path, key: str, table: dict, version: int = 1) -> None:
    """Replace ``path`` with ``{key: table, "version": version}`` (JSON, sorted keys,
    one-space indent), atomically and durably."""
    doc = {key: table, "version": version}
    atomic_write(path, (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())


class BackgroundWrite:
    """:func:`atomic_write` in two halves, so a big file's write overlaps other work.

    On construction a thread writes ``data`` to a unique temp file next to ``path`` and
    fsyncs it (unless ``unchanged()`` says the target already holds ``data``);
    :meth:`commit` waits for it, then renames the temp file over ``path`` and fsyncs the
    directory, on the caller's thread, so the visible order of steps (and their fault
    points) is that of ``atomic_write``. :meth:`abort` waits and removes the temp file.
    Until commit nothing at ``path`` changes; a crash leaves at most a temp file, which
    :func:`sweep_temp_files` removes. Hold :func:`data_dir_lock` across the whole use.
    """

    def __init__(
        self,
        path: Path | str,
        data: bytes | bytearray | memoryview,
        unchanged: Callable[[], bool] | None = None,
    ) -> None:
        self.path = Path(path)
        self._data: bytes | bytearray | memoryview | None = data
        self._unchanged = unchanged
        self._tmp: Path | None = None
        self._skip = False
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="oluo-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._unchanged is not None and self._unchanged():
                self._skip = True
                return
            fd, self._tmp = _unique_temp(self.path.parent, self.path.name)
            try:
                _io.write_all(fd, self._data)
                _io.fsync_fd(fd)
            finally:
                _io.close(fd)
        except BaseException as exc:  # re-raised by commit() on the caller's thread
            self._error = exc
        finally:
            self._data = None

    def _wait(self) -> None:
        self._thread.join()
        self._done = True

    def commit(self) -> bool:
        """Publish the file (False when it already held the data and was left alone).

        Raises :class:`PersistIOError` on failure; the temp file is removed and the
        previous content of ``path`` is untouched.
        """
        self._wait()
        step = "write"
        try:
            if self._error is not None:
                exc = self._error
                if isinstance(exc, OSError):
                    raise PersistIOError(f"cannot write {self.path.name}", exc) from exc
                raise exc
            if self._skip:
                return False
            assert self._tmp is not None
            fault_point("durable.tmp_written")
            fault_point("durable.fsynced")
            step = "rename"
            _io.rename(self._tmp, self.path)
            self._tmp = None
            fault_point("durable.renamed")
            step = "fsync the directory of"
            fsync_dir(self.path.parent)
            fault_point("durable.dir_synced")
            return True
        except OSError as exc:
            raise PersistIOError(f"cannot {step} {self.path.name}", exc) from exc
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Wait for the thread and drop the temp file (the target is untouched)."""
        self._wait()
        self._cleanup()

    def _cleanup(self) -> None:
        _discard(self._tmp)
        self._tmp = None


def sweep_temp_files(directory: Path | str, older_than_s: float = 0.0) -> list[str]:
    """Remove temp files left by crashed writers; returns the names removed.

    Call it while holding :func:`data_dir_lock`: under the lock no live writer
    of this directory can own a temp file, so ``older_than_s=0`` is safe.
    """
    directory = Path(directory)
    removed: list[str] = []
    now = time.time()
    try:
        names = _io.list_names(directory)
    except FileNotFoundError:
        return removed
    except OSError as exc:
        raise PersistIOError(f"cannot list the data directory {directory.name}", exc) from exc
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        path = directory / name
        try:
            if now - path.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            _io.unlink(path)
            removed.append(name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PersistIOError(f"cannot remove the temp file {name}", exc) from exc
    return sorted(removed)


#: errno values that say the storage refuses writes (a read-only mount or bucket, no
#: permission): a reader goes on without writing, a writer raises :class:`ReadOnlyLab`.
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def writable(directory: Path | str) -> bool:
    """Can this process create files in ``directory``? (``access(W_OK)``, which also
    knows read-only mounts; root passes it everywhere but on a read-only mount.)"""
    return os.access(directory, os.W_OK)


def require_writable(directory: Path | str, what: str) -> None:
    """Raise :class:`ReadOnlyLab` naming ``what`` before anything is written, when
    ``directory`` cannot be written by this process."""
    if not writable(directory):
        raise ReadOnlyLab(Path(directory), what)


@contextlib.contextmanager
def data_dir_lock(
    directory: Path | str, timeout_s: float = 60.0, *, shared: bool = False
) -> Iterator[None]:
    """Hold an advisory lock (``flock``) on ``directory/oluo.lock``: exclusive for a
    writer; ``shared`` for a reader that must not see a writer's half-done work (a gc
    plan), which on storage this process cannot write opens the lock file read-only, or
    takes no lock when there is no lock file (nobody can have written through this mount
    either; :class:`ReadOnlyLab` is for writers).

    The lock file is never deleted (deleting it would let two processes lock
    different inodes). Waits up to ``timeout_s`` and raises :class:`LockTimeout`.
    """
    directory = Path(directory)
    lock_path = directory / LOCK_NAME
    if shared and not writable(directory):
        try:
            fd = _io.open_lock(lock_path, create=False)
        except FileNotFoundError:
            yield
            return
        except OSError as exc:
            raise PersistIOError(f"cannot open the lock file {LOCK_NAME}", exc) from exc
    else:
        try:
            fd = _io.open_lock(lock_path)
        except OSError as exc:
            if exc.errno in READ_ONLY_ERRNOS:
                raise ReadOnlyLab(directory, "take the write lock", exc) from exc
            raise PersistIOError(
                f"cannot open the lock file {LOCK_NAME} in the data directory", exc
            ) from exc
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise PersistIOError(f"cannot lock {LOCK_NAME}", exc) from exc
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{LOCK_NAME} is held by another process for more than {timeout_s:g} s"
                    ) from exc
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _io.close(fd)
