"""On-disk book store: one book file per book under 256 fan-out directories.

Layer: cas. This module owns the store's directory layout (docs/FORMAT.md §1.3), its read
path (``get``/``get_into``/``get_many_into`` on worker threads), the scan behind
iteration and ``stats``, and single durable ``put``s. The bytes of one book file are
``_bookfile.py``'s job; the deferred-durability writer behind ``batch()`` is ``_batch.py``'s.

Layout: ``<path>/books/<digest byte 0 as 2 hex>/<cid hex>``. A single ``put`` writes a
unique ``.tmp-*`` file in the same directory, fsyncs it, hard-links it to the final name
(so an existing book is never replaced) and fsyncs the directory (docs/FORMAT.md §4.1;
how a batch is made durable: Appendix B.1).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from oluo_lab import _io
from oluo_lab._faults import fault_point
from oluo_lab._io import start_writeback, syncfs_available
from oluo_lab.cas._batch import WriteBatch
from oluo_lab.cas._bookfile import HEADER_LEN, RAW_HEADER, BookCodec, check_file_size
from oluo_lab.cas.base import (
    DEFAULT_GC_GRACE_S,
    BookStore,
    Buffer,
    StoreStats,
    prefetch_get_many,
    verify_book,
)
from oluo_lab.cas.cid import CID
from oluo_lab.cas.errors import (
    BookNotFound,
    ContentError,
    CorruptBook,
    MalformedCID,
    StoreIOError,
    io_errors,
)

#: format (docs/FORMAT.md §1.3): name prefix of in-flight writes (never read as books).
TMP_PREFIX = ".tmp-"
#: format (docs/FORMAT.md §1.3): name of the marker file at the store's root.
FORMAT_FILE = "oluo-cas-format"
#: format (docs/FORMAT.md §1.3): the marker's text; a reader refuses any other.
FORMAT_TEXT = "oluo-cas 1\n"
#: Bounds of the contiguous runs of books one read task fills (see ``get_many_into``).
_RUN_MIN = 1 << 20
_RUN_MAX = 8 << 20


class DirStore(BookStore):
    """Durable on-disk store. ``level`` is the zstd level for new books (recorded per book,
    so changing it never changes a CID). ``fsync=False`` skips every fsync (scratch stores
    only). ``sync_mode`` picks how ``batch()`` makes its books durable: ``"syncfs"`` (Linux
    default: two filesystem-wide syncs per batch) or ``"fsync"`` (per file on ``workers``
    threads, then per directory). A plain ``put`` outside a batch always fsyncs its file and
    directory before returning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        level: int = 3,
        *,
        fsync: bool = True,
        sync_mode: str | None = None,
        workers: int = 2,
    ) -> None:
        if not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"zstd level must be an int in 1..22, got {level!r}")
        if sync_mode is None:
            sync_mode = "syncfs" if syncfs_available() else "fsync"
        if sync_mode not in ("syncfs", "fsync") or (
            sync_mode == "syncfs" and not syncfs_available()
        ):
            raise ValueError(f"sync_mode must be 'fsync' or (on Linux) 'syncfs', got {sync_mode!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.path = Path(path)
        self.level = level
        self._codec = BookCodec(level)
        self._fsync = fsync
        self._sync_mode = sync_mode
        self._workers = workers
        self._root = os.fspath(self.path)
        self._books_dir = os.fspath(self.path / "books")
        self._made: set[str] = set()
        self._batch: WriteBatch | None = None
        self._init_layout()
        self._sweep_stale_tmp()

    # --- layout ------------------------------------------------------------------------
    def _rel(self, path: str) -> str:
        """``path`` relative to the store's root (how errors name a file)."""
        return path[len(self._root) + 1 :] if path.startswith(self._root + os.sep) else path

    def _init_layout(self) -> None:
        """Create what is missing of the layout, durably; on a complete store (also one on
        storage this process cannot write) nothing is written."""
        marker = self.path / FORMAT_FILE
        if marker.exists():
            with io_errors("read", FORMAT_FILE):
                text = _io.read_file(marker).decode("utf-8", "replace")
            if text != FORMAT_TEXT:
                hint = (
                    " (a pack store: open it with PackStore or open_store)"
                    if text == "oluo-cas 2\n"
                    else ""
                )
                raise ContentError(
                    f"{FORMAT_FILE} says {text!r}; a DirStore reads {FORMAT_TEXT!r}{hint}"
                )
        self._make_dirs(self._books_dir)
        with io_errors("list", "books"):
            existing = set(_io.list_names(self._books_dir))
        missing = [f"{i:02x}" for i in range(256) if f"{i:02x}" not in existing]
        for name in missing:
            with io_errors("mkdir", f"books/{name}"):
                _io.make_dir(os.path.join(self._books_dir, name))
        if missing and self._fsync:
            with io_errors("fsync", "books"):
                _io.fsync_dir(self._books_dir)
        if not marker.exists():
            d = os.fspath(self.path)
            self._write_file(d, os.fspath(marker), b"", FORMAT_TEXT.encode(), True)

    def _make_dirs(self, path: str) -> None:
        """Create ``path`` and its missing parents, each made durable in its parent."""
        todo = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            todo.append(p)
            up = os.path.dirname(p)
            if up == p:
                break
            p = up
        for d in reversed(todo):
            with io_errors("mkdir", self._rel(d)):
                created = _io.make_dir(d)
            if created and self._fsync:
                with io_errors("fsync", self._rel(os.path.dirname(d)) or "."):
                    _io.fsync_dir(os.path.dirname(d))

    def _sweep_stale_tmp(self) -> None:
        self.sweep_temp_files(DEFAULT_GC_GRACE_S)

    def sweep_temp_files(self, older_than_s: float = DEFAULT_GC_GRACE_S) -> int:
        """Remove this store's book temp files (``books/<xx>/.tmp-*``, crash leftovers)
        older than ``older_than_s``; returns how many.

        Not the snapshot layer's ``oluo_lab.snapshot.sweep_temp_files(directory)``, which
        removes the data directory's own ``.oluo-tmp-*`` files (head, base) and returns
        their names; a Lab's gc calls both. A small age is safe only while no other process
        writes to this store (a Lab's gc holds the data-directory lock that every writer of
        its store holds)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for sub in self._subdirs():
            try:
                with io_errors("list", self._rel(sub)):
                    names = _io.list_names(sub)
            except ContentError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue
                raise
            for name in names:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(sub, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path, follow_symlinks=False).st_mtime <= cutoff:
                        with io_errors("unlink", self._rel(path)):
                            _io.unlink(path)
                        removed += 1
        return removed

    def _subdirs(self) -> list[str]:
        try:
            with io_errors("list", "books"):
                names = _io.list_names(self._books_dir)
        except ContentError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return []
            raise
        return [
            os.path.join(self._books_dir, n)
            for n in sorted(names)
            if len(n) == 2 and all(c in "0123456789abcdef" for c in n)
        ]

    def _locate(self, cid: CID) -> tuple[str, str]:
        d = os.path.join(self._books_dir, cid.raw[8:9].hex())
        return d, os.path.join(d, cid.hex)

    def _ensure_dir(self, dirpath: str) -> None:
        if dirpath in self._made:
            return
        if not os.path.isdir(dirpath):
            self._make_dirs(dirpath)
        self._made.add(dirpath)

    # --- codecs --------------------------------------------------------------------------
    def _encode(self, data: Buffer) -> tuple[bytes, Buffer]:
        """File header and payload for ``data`` at this store's level (see ``encode_book``)."""
        return self._codec.encode(data)

    def _decode(self, cid: CID, header: bytes, payload: bytes) -> bytes:
        return self._codec.decode(cid, header, payload)

    # --- file I/O ------------------------------------------------------------------------
    def _write_group(self, group: list[tuple[str, Buffer]]) -> None:
        """Encode each book and write it to its new, unsynced temp file (a batch worker)."""
        for tmp, data in group:
            self._ensure_dir(os.path.dirname(tmp))
            header, payload = self._encode(data)
            self._write_tmp(tmp, header, payload, sync=False)

    def _write_tmp(self, tmp: str, header: bytes, payload: Buffer, sync: bool) -> str:
        """Write header + payload to the new (O_EXCL) temp file ``tmp``."""
        name = self._rel(tmp)
        with io_errors("create", name):
            fd = _io.create_excl(tmp)
        try:
            with io_errors("write", name):
                if header:
                    _io.write_all(fd, header)
                _io.write_all(fd, payload)
            fault_point("cas.tmp_written")
            if sync:
                with io_errors("fsync", name):
                    _io.fsync_fd(fd)
                fault_point("cas.synced")
            elif self._fsync:
                start_writeback(fd)
        except BaseException:
            _io.close(fd)
            with contextlib.suppress(OSError):
                _io.unlink(tmp)
            raise
        _io.close(fd)
        return tmp

    def _write_file(
        self, dirpath: str, path: str, header: bytes, payload: Buffer, sync_dir: bool
    ) -> None:
        """Durably write one file: temp file, fsync, link into place (no clobber), fsync dir."""
        self._ensure_dir(dirpath)
        tmp = os.path.join(dirpath, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        self._write_tmp(tmp, header, payload, sync=self._fsync)
        try:
            with io_errors("link", self._rel(path)), contextlib.suppress(FileExistsError):
                _io.link(tmp, path)  # FileExistsError: another writer won, same content
            fault_point("cas.linked")
        finally:
            with io_errors("unlink", self._rel(tmp)), contextlib.suppress(FileNotFoundError):
                _io.unlink(tmp)
        if sync_dir and self._fsync:
            with io_errors("fsync", self._rel(dirpath)):
                _io.fsync_dir(dirpath)
            fault_point("cas.dir_synced")

    def _store(self, cid: CID, data: Buffer) -> None:
        dirpath, path = self._locate(cid)
        batch = self._batch
        if batch is not None and cid in batch:
            return
        if os.path.exists(path):
            return
        if batch is None:
            header, payload = self._encode(data)
            self._write_file(dirpath, path, header, payload, True)
            return
        if not isinstance(data, bytes) and not (
            isinstance(data, memoryview) and isinstance(data.obj, bytes)
        ):
            data = bytes(data)  # the caller may reuse a mutable buffer once put() returns
        batch.submit(cid, data, dirpath, path)

    def _load(self, cid: CID) -> bytes:
        batch = self._batch
        if batch is not None and cid in batch:
            batch.wait(cid)
            path = batch.temp_path(cid)
        else:
            path = self._locate(cid)[1]
        fd, size = self._open_book(cid, path)
        try:
            with io_errors("read", self._rel(path)):
                header = _io.read(fd, HEADER_LEN)
                payload = _io.read(fd, size - HEADER_LEN)
            if len(header) != HEADER_LEN or len(payload) != size - HEADER_LEN:
                raise CorruptBook(cid, "file changed size while being read")
        finally:
            _io.close(fd)
        return self._decode(cid, header, payload)

    @contextlib.contextmanager
    def _book_io(self, cid: CID, op: str, path: str) -> Iterator[None]:
        """``io_errors`` for one operation on ``cid``'s book file, with a missing file as
        :class:`BookNotFound`."""
        try:
            yield
        except FileNotFoundError:
            raise BookNotFound(cid) from None
        except OSError as exc:
            raise StoreIOError(op, self._rel(path), exc) from exc

    def _open_book(self, cid: CID, path: str) -> tuple[int, int]:
        """Open a book file and check its size against the header and the CID (the caller
        closes the fd); BookNotFound / CorruptBook name the CID, StoreIOError the file."""
        with self._book_io(cid, "open", path):
            fd = _io.open_read(path)
        try:
            with io_errors("stat", self._rel(path)):
                size = os.fstat(fd).st_size
            check_file_size(cid, size)
        except BaseException:
            _io.close(fd)
            raise
        return fd, size

    def get_into(self, cid: CID, out: memoryview) -> None:
        """Verified bytes of ``cid`` into ``out``; raw books are read straight into it."""
        if not isinstance(cid, CID):
            raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
        if len(out) != cid.size:
            raise ValueError(f"buffer of {len(out)} B for a {cid.size} B book")
        self._fill(cid, out)

    def _fill(self, cid: CID, out: memoryview) -> None:
        """``get_into`` without the argument checks (``len(out) == cid.size`` is given)."""
        batch = self._batch
        if batch is not None and cid in batch:
            out[:] = self.get(cid)
            return
        path = self._locate(cid)[1]
        fd, size = self._open_book(cid, path)
        try:
            with io_errors("read", self._rel(path)):
                header = _io.read(fd, HEADER_LEN)
                if header == RAW_HEADER and size - HEADER_LEN == cid.size:
                    got = 0
                    while got < cid.size:
                        n = _io.readv(fd, [out[got:]])
                        if not n:
                            raise CorruptBook(cid, "file changed size while being read")
                        got += n
                    if _io.read(fd, 1):
                        raise CorruptBook(cid, "file grew while being read")
                    verify_book(cid, out)
                    return
                payload = _io.read(fd, size - HEADER_LEN)
            if len(header) != HEADER_LEN or len(payload) != size - HEADER_LEN:
                raise CorruptBook(cid, "file changed size while being read")
        finally:
            _io.close(fd)
        data = self._decode(cid, header, payload)
        verify_book(cid, data)  # while the decoded bytes are still in cache
        out[:] = data

    def _fill_run(self, items: list[tuple[CID, memoryview]]) -> None:
        for cid, out in items:
            self._fill(cid, out)

    def get_many_into(self, items: Iterable[tuple[CID, memoryview]]) -> None:
        """Fill the buffers on ``workers`` threads (file reads, zstd and blake3 drop the GIL).

        Books are handed out in contiguous runs of a few MiB, not one task per book: with a
        future per ~64 KiB book the threads mostly wait for each other's GIL hand-offs. The
        first failing book in ``items`` order is the one reported.
        """
        todo = list(items)
        for cid, out in todo:
            if not isinstance(cid, CID):
                raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
            if len(out) != cid.size:
                raise ValueError(f"buffer of {len(out)} B for a {cid.size} B book")
        total = sum(len(out) for _, out in todo)
        target = min(_RUN_MAX, max(_RUN_MIN, total // (4 * self._workers)))
        runs: list[list[tuple[CID, memoryview]]] = []
        run: list[tuple[CID, memoryview]] = []
        acc = 0
        for item in todo:
            run.append(item)
            acc += len(item[1])
            if acc >= target:
                runs.append(run)
                run, acc = [], 0
        if run:
            runs.append(run)
        if len(runs) <= 1 or self._workers == 1:
            for r in runs:
                self._fill_run(r)
            return
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="oluo-cas-read")
        try:
            for fut in [pool.submit(self._fill_run, r) for r in runs]:
                fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _has(self, cid: CID) -> bool:
        batch = self._batch
        if batch is not None and cid in batch:
            return True
        return os.path.exists(self._locate(cid)[1])

    def _stat(self, cid: CID) -> tuple[int, float]:
        batch = self._batch
        path = batch.temp_path(cid) if batch is not None and cid in batch else self._locate(cid)[1]
        with self._book_io(cid, "stat", path):
            st = os.stat(path)
        return st.st_size, st.st_mtime

    def _delete(self, cid: CID) -> None:
        dirpath, path = self._locate(cid)
        with self._book_io(cid, "unlink", path):
            _io.unlink(path)
        if self._fsync:
            with io_errors("fsync", self._rel(dirpath)):
                _io.fsync_dir(dirpath)

    def _scan(self, sizes: bool = False) -> Iterator[tuple[CID, int]]:
        """(CID, file size when ``sizes``, else 0) of every book file."""
        for sub in self._subdirs():
            prefix = os.path.basename(sub)
            with io_errors("list", self._rel(sub)):
                if sizes:
                    rows = [(n, size) for n, size, _ in _io.list_dir(sub)]
                else:
                    rows = [(n, 0) for n in _io.list_names(sub)]
            for name, size in rows:
                if len(name) != 80 or name[16:18] != prefix:
                    continue  # temp files and foreign names
                try:
                    cid = CID.parse(name)
                except MalformedCID:
                    continue
                if cid.hex == name:
                    yield cid, size

    def _iter_unsorted(self) -> Iterable[CID]:
        return [cid for cid, _ in self._scan()]

    def stats(self) -> StoreStats:
        """Scan every book file (one stat per book: O(books), no reads)."""
        books = logical = stored = 0
        for cid, size in self._scan(sizes=True):
            books += 1
            logical += cid.size
            stored += size
        return StoreStats(books=books, logical_bytes=logical, stored_bytes=stored)

    # --- batching and prefetch --------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[DirStore]:
        """Write many books with one durability barrier at the end (see ``WriteBatch``).

        Books put inside the block are readable at once and durable when it exits
        normally; if the block raises, they are discarded. Nested blocks join the outer one.
        """
        if self._batch is not None:
            yield self
            return
        self._batch = WriteBatch(
            self._write_group,
            workers=self._workers,
            sync_mode=self._sync_mode if self._fsync else None,
            fs_path=self._books_dir,
            tmp_prefix=TMP_PREFIX,
        )
        ok = False
        try:
            yield self
            ok = True
        finally:
            batch, self._batch = self._batch, None
            batch.close(commit=ok)

    def get_many(self, cids: Iterable[CID]) -> Iterator[bytes]:
        """Verified bytes of each CID in order, reading a few books ahead on worker threads."""
        return prefetch_get_many(self.get, cids, self._workers)

    def __repr__(self) -> str:
        return f"DirStore({self.path.name!r}, level={self.level})"

    def _repr_html_(self) -> str:
        from oluo_lab._html import kv_table

        return kv_table(
            "DirStore",
            [
                ("directory", self.path.name),
                ("zstd level", self.level),
            ]
            + self.stats().rows(),
        )
