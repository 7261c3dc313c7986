"""The deferred-durability batch writer behind ``DirStore.batch()``.

Layer: cas, below ``directory.py``. It owns the worker threads, the temp files of the books
put inside one ``batch()`` block and the durability barrier at its end; the store supplies
the function that encodes and writes a group of books (``write_group``) and decides where
each temp file goes. The protocol is docs/FORMAT.md §4.1 and Appendix B.1; crash points are
named in ``oluo_lab/_faults.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from oluo_lab import _io
from oluo_lab._faults import fault_point
from oluo_lab.cas.base import Buffer
from oluo_lab.cas.cid import CID
from oluo_lab.cas.errors import io_errors

__all__ = ["GROUP_BYTES", "WriteBatch"]

#: Bytes of books queued before the batch hands them to a write worker as one task.
GROUP_BYTES = 1 << 20

#: ``write_group(items)`` writes each ``(temp path, book bytes)`` to its new temp file.
WriteGroup = Callable[[list[tuple[str, Buffer]]], None]


class WriteBatch:
    """Deferred-durability write group.

    Each new book is written (unsynced) to a unique temp file in its fan-out directory, and
    the kernel is asked to start writing it back at once (``sync_file_range``, a hint). On
    close: (1) make all temp files durable (one ``syncfs`` of the store's filesystem, or an
    fsync of every temp file on worker threads); (2) hard-link each temp file to its final
    name (never replacing an existing book) and remove the temp name; (3) make the new
    names durable (``syncfs`` again, or an fsync of each touched directory). A crash at any
    point leaves only complete, durable books under final names, plus temp files that the
    next open sweeps.

    ``sync_mode`` is ``"syncfs"`` (of the filesystem holding ``fs_path``), ``"fsync"``, or
    ``None`` to skip every barrier (scratch stores). Books reach the worker threads in
    groups of about ``GROUP_BYTES``: one task per ~64 KiB book costs more in future
    bookkeeping and GIL hand-offs than the write itself.
    """

    def __init__(
        self,
        write_group: WriteGroup,
        *,
        workers: int,
        sync_mode: str | None,
        fs_path: str,
        tmp_prefix: str,
    ) -> None:
        self._write_group = write_group
        self._workers = workers
        self._sync_mode = sync_mode
        self._fs_path = fs_path
        self.pending: dict[CID, tuple[str, str, str]] = {}  # cid -> (dir, tmp, final)
        self.jobs: dict[CID, Future[None]] = {}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="oluo-cas-write")
        self.slots = threading.BoundedSemaphore(2 * workers)  # groups in flight
        self.group: list[tuple[str, Buffer]] = []  # (tmp, data) not yet handed to a worker
        self.group_cids: set[CID] = set()
        self.group_bytes = 0
        self.tmp_stem = f"{tmp_prefix}{os.getpid()}-{secrets.token_hex(6)}-"
        self.counter = itertools.count()

    def __contains__(self, cid: CID) -> bool:
        """Whether ``cid`` was put in this batch (it is readable from its temp file)."""
        return cid in self.pending

    def temp_path(self, cid: CID) -> str:
        """The temp file holding ``cid`` (put in this batch); call :meth:`wait` to read it."""
        return self.pending[cid][1]

    def tmp_name(self, dirpath: str) -> str:
        """A temp path unique to this process and batch (the open is O_EXCL regardless)."""
        return os.path.join(dirpath, f"{self.tmp_stem}{next(self.counter)}")

    def submit(self, cid: CID, data: Buffer, dirpath: str, path: str) -> None:
        """Queue ``data`` (CID known, not present) to be compressed and written by a worker."""
        tmp = self.tmp_name(dirpath)
        self.pending[cid] = (dirpath, tmp, path)
        self.group.append((tmp, data))
        self.group_cids.add(cid)
        self.group_bytes += len(data)
        if self.group_bytes >= GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the queued group to a worker (blocks while ``2 * workers`` groups are in flight)."""
        if not self.group:
            return
        group, cids = self.group, self.group_cids
        self.group, self.group_cids, self.group_bytes = [], set(), 0
        self.slots.acquire()
        try:
            fut = self.pool.submit(self._write_group, group)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        for cid in cids:
            self.jobs[cid] = fut

    def wait(self, cid: CID) -> None:
        """Block until ``cid``'s temp file is written (raising its writer's error)."""
        if cid in self.group_cids:
            self.flush()
        fut = self.jobs.get(cid)
        if fut is not None:
            fut.result()

    def close(self, commit: bool) -> None:
        """Publish every book (``commit``) or discard them all; temp files are removed.

        A failed write discards the whole batch and is raised here.
        """
        first: BaseException | None = None
        try:
            if commit:
                self.flush()
            for fut in self.jobs.values():
                exc = fut.exception()
                if exc is not None and first is None:
                    first = exc
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if first is not None:
            commit = False
        items = list(self.pending.values())
        try:
            if commit and items:
                self._publish(items)
        finally:
            for _, tmp, _ in items:
                with contextlib.suppress(OSError):  # a leftover is swept later
                    _io.unlink(tmp)
            self.pending.clear()
            self.jobs.clear()
            self.group.clear()
            self.group_cids.clear()
        if first is not None:
            raise first

    def _publish(self, items: list[tuple[str, str, str]]) -> None:
        """Steps (1)-(3) of the class docstring, with their crash points."""
        mode = self._sync_mode
        if mode is not None:
            if mode == "syncfs":
                with io_errors("syncfs", "books"):
                    _io.syncfs(self._fs_path)
            else:
                with ThreadPoolExecutor(self._workers) as pool:
                    list(pool.map(self._fsync_tmp, [tmp for _, tmp, _ in items]))
            fault_point("cas.synced")
        for _, tmp, final in items:
            with io_errors("link", self._name(final)), contextlib.suppress(FileExistsError):
                _io.link(tmp, final)  # FileExistsError: the same content is already there
            fault_point("cas.linked")
        if mode is not None:
            if mode == "syncfs":
                with io_errors("syncfs", "books"):
                    _io.syncfs(self._fs_path)
            else:
                for d in sorted({d for d, _, _ in items}):
                    with io_errors("fsync", self._name(d)):
                        _io.fsync_dir(d)
            fault_point("cas.dir_synced")

    def _name(self, path: str) -> str:
        """A path under the books directory, as errors name it (``books/xx/...``)."""
        return "books" + path[len(self._fs_path) :]

    def _fsync_tmp(self, tmp: str) -> None:
        with io_errors("fsync", self._name(tmp)):
            _io.fsync_path(tmp)
