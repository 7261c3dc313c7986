"""Durable, atomic file replacement and the data-directory lock.

Every file the snapshot layer publishes goes through :func:`atomic_write`:
a uniquely named temp file created exclusively in the target directory,
written, fsynced, renamed over the target, and the directory fsynced, so a
crash leaves either the old file or the new one, never a torn one, and two
writers never share a temp file. :func:`sweep_temp_files` removes temp files a
crashed writer left behind.

Snapshot layer, bottom: plain files only (no CAS, no engine); the owners of the
data-directory files (head, refs log, base cache, tags) write through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .._faults import fault_point
from .._io import fsync_dir, write_all
from .errors import LockTimeout, PersistIOError

TEMP_PREFIX = ".oluo-tmp-"
LOCK_NAME = "oluo.lock"

__all__ = [
    "LOCK_NAME",
    "TEMP_PREFIX",
    "BackgroundWrite",
    "atomic_write",
    "data_dir_lock",
    "fsync_dir",
    "sweep_temp_files",
]


def _unique_temp(directory: Path, name: str) -> tuple[int, Path]:
    for attempt in range(100):
        tmp = directory / f"{TEMP_PREFIX}{name}.{os.getpid()}.{time.monotonic_ns()}.{attempt}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
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
    try:
        try:
            write_all(fd, data)
            fault_point("durable.tmp_written")
            os.fsync(fd)
            fault_point("durable.fsynced")
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fault_point("durable.renamed")
        fsync_dir(directory)
        fault_point("durable.dir_synced")
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PersistIOError(f"cannot write {path.name}", exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
                write_all(fd, self._data)
                os.fsync(fd)
            finally:
                os.close(fd)
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
            os.replace(self._tmp, self.path)
            self._tmp = None
            fault_point("durable.renamed")
            fsync_dir(self.path.parent)
            fault_point("durable.dir_synced")
            return True
        except OSError as exc:
            raise PersistIOError(f"cannot write {self.path.name}", exc) from exc
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Wait for the thread and drop the temp file (the target is untouched)."""
        self._wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
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
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            os.unlink(entry.path)
            removed.append(entry.name)
        except FileNotFoundError:
            continue
    return sorted(removed)


@contextlib.contextmanager
def data_dir_lock(directory: Path | str, timeout_s: float = 60.0) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``directory/oluo.lock``.

    The lock file is never deleted (deleting it would let two processes lock
    different inodes). Waits up to ``timeout_s`` and raises :class:`LockTimeout`.
    """
    directory = Path(directory)
    lock_path = directory / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PersistIOError(
            f"cannot open the lock file {LOCK_NAME} in the data directory", exc
        ) from exc
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
        os.close(fd)
