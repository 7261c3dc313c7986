"""On-disk book store: one zstd-compressed file per book under 256 fan-out directories.

Layout: ``<path>/books/<digest byte 0 as 2 hex>/<cid hex>``. Each file is a 16-byte header
(``b"OLB1"``, codec, level, 0, 0, 8-byte check) followed by the payload: the raw bytes, or one
zstd frame carrying its content size. For zstd books the check is blake3(header[:8] + payload)
truncated to 8 bytes, so even a flip that zstd would decode to identical bytes is caught;
raw books have an all-zero check (the CID's digest already covers every payload byte). Writes go to a unique ``.tmp-*`` file in the same
directory, are fsync'd, hard-linked to the final name (so an existing book is never
replaced) and the directory is fsync'd. See docs/FORMAT.md section 1.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3
import zstandard

from oluo_lab.cas.base import BookStore, Buffer, StoreStats
from oluo_lab.cas.cid import CID
from oluo_lab.cas.errors import BookNotFound, ContentError, CorruptBook, MalformedCID

MAGIC = b"OLB1"
HEADER_LEN = 16
CODEC_RAW = 0
CODEC_ZSTD = 1
TMP_PREFIX = ".tmp-"
#: Temp files older than this are removed when a DirStore is opened (crash leftovers).
STALE_TMP_SECONDS = 3600
FORMAT_FILE = "oluo-cas-format"
FORMAT_TEXT = "oluo-cas 1\n"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_RAW_HEADER = MAGIC + bytes((CODEC_RAW, 0, 0, 0)) + bytes(8)


def _write_all(fd: int, data: Buffer) -> None:
    mv = memoryview(data)
    while mv:
        n = os.write(fd, mv)
        mv = mv[n:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Batch:
    """Deferred-durability write group: worker threads write + fsync each book file; the
    touched directories are fsync'd once when the group closes."""

    def __init__(self, store: DirStore, workers: int) -> None:
        self.store = store
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="oluo-cas-write")
        self.slots = threading.BoundedSemaphore(4 * workers)  # bounds payloads in flight
        self.pending: dict[CID, Future[None]] = {}
        self.dirs: set[str] = set()

    def submit(self, cid: CID, dirpath: str, path: str, header: bytes, payload: Buffer) -> None:
        self.slots.acquire()
        try:
            fut = self.pool.submit(self.store._write_file, dirpath, path, header, payload, False)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        self.pending[cid] = fut
        self.dirs.add(dirpath)

    def close(self) -> None:
        first: BaseException | None = None
        try:
            for fut in self.pending.values():
                exc = fut.exception()
                if exc is not None and first is None:
                    first = exc
        finally:
            self.pool.shutdown(wait=True)
        if first is not None:
            raise first
        if self.store._fsync:
            for d in sorted(self.dirs):
                _fsync_dir(d)


class DirStore(BookStore):
    """Durable on-disk store. ``level`` is the zstd level for new books (recorded per book,
    so changing it never changes a CID). ``fsync=False`` skips every fsync (scratch stores
    only). ``workers`` threads write files inside ``batch()`` and prefetch in ``get_many``.
    """

    def __init__(
        self, path: str | os.PathLike[str], level: int = 3, *, fsync: bool = True, workers: int = 4
    ) -> None:
        if not isinstance(level, int) or not 1 <= level <= 22:
            raise ValueError(f"zstd level must be an int in 1..22, got {level!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.path = Path(path)
        self.level = level
        self._fsync = fsync
        self._workers = workers
        self._books_dir = os.fspath(self.path / "books")
        self._local = threading.local()
        self._made: set[str] = set()
        self._batch: _Batch | None = None
        self._batch_depth = 0
        self._init_layout()
        self._sweep_stale_tmp()

    # --- layout ------------------------------------------------------------------------
    def _init_layout(self) -> None:
        marker = self.path / FORMAT_FILE
        if marker.exists():
            text = marker.read_text()
            if text != FORMAT_TEXT:
                raise ContentError(f"{FORMAT_FILE} says {text!r}; this build reads {FORMAT_TEXT!r}")
        os.makedirs(self._books_dir, exist_ok=True)
        if not marker.exists():
            d = os.fspath(self.path)
            self._write_file(d, os.fspath(marker), b"", FORMAT_TEXT.encode(), True)

    def _sweep_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for sub in self._subdirs():
            with contextlib.suppress(FileNotFoundError), os.scandir(sub) as it:
                for entry in it:
                    if entry.name.startswith(TMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                                os.unlink(entry.path)

    def _subdirs(self) -> list[str]:
        try:
            names = os.listdir(self._books_dir)
        except FileNotFoundError:
            return []
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
            os.makedirs(dirpath, exist_ok=True)
            if self._fsync:
                _fsync_dir(self._books_dir)
        self._made.add(dirpath)

    # --- codecs --------------------------------------------------------------------------
    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(level=self.level)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d

    def _encode(self, data: Buffer) -> tuple[bytes, Buffer]:
        comp = self._cctx().compress(data)
        if len(comp) < len(data):
            head = MAGIC + bytes((CODEC_ZSTD, self.level, 0, 0))
            h = blake3.blake3(head)
            h.update(comp)
            return head + h.digest(length=8), comp
        return _RAW_HEADER, data

    def _decode(self, cid: CID, header: bytes, payload: bytes) -> bytes:
        if header[:4] != MAGIC:
            raise CorruptBook(cid, f"bad file magic {header[:4]!r}")
        codec, level = header[4], header[5]
        if header[6:8] != b"\0\0":
            raise CorruptBook(cid, "nonzero reserved header bytes")
        if codec == CODEC_RAW:
            if header != _RAW_HEADER:
                raise CorruptBook(cid, "raw book header has a nonzero level or check")
            return payload  # length and digest verified by BookStore.get
        if codec != CODEC_ZSTD or not 1 <= level <= 22:
            raise CorruptBook(cid, f"unknown codec {codec} / level {level}")
        if len(payload) >= cid.size:
            raise CorruptBook(cid, "compressed payload is not smaller than the book")
        h = blake3.blake3(header[:8])
        h.update(payload)
        if h.digest(length=8) != header[8:]:
            raise CorruptBook(cid, "stored-bytes check mismatch")
        try:
            if zstandard.frame_content_size(payload) != cid.size:
                raise CorruptBook(cid, "zstd frame content size differs from the CID size")
            dobj = self._dctx().decompressobj()
            out = dobj.decompress(payload)
            if not dobj.eof or dobj.unused_data:
                raise CorruptBook(cid, "zstd frame truncated or followed by extra bytes")
        except zstandard.ZstdError as exc:
            raise CorruptBook(cid, f"zstd: {exc}") from None
        return out

    # --- file I/O ------------------------------------------------------------------------
    def _write_file(
        self, dirpath: str, path: str, header: bytes, payload: Buffer, sync_dir: bool
    ) -> None:
        """Write header + payload to a unique temp file, fsync, link into place (no clobber)."""
        self._ensure_dir(dirpath)
        tmp = os.path.join(dirpath, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            try:
                if header:
                    _write_all(fd, header)
                _write_all(fd, payload)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another writer won: same content
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        if sync_dir and self._fsync:
            _fsync_dir(dirpath)

    def _store(self, cid: CID, data: Buffer) -> None:
        dirpath, path = self._locate(cid)
        batch = self._batch
        if batch is not None and cid in batch.pending:
            return
        if os.path.exists(path):
            return
        header, payload = self._encode(data)
        if batch is None:
            self._write_file(dirpath, path, header, payload, True)
            return
        if payload is data and not isinstance(data, bytes):
            payload = bytes(data)  # the caller may reuse its buffer once put() returns
        batch.submit(cid, dirpath, path, header, payload)

    def _load(self, cid: CID) -> bytes:
        batch = self._batch
        if batch is not None and cid in batch.pending:
            batch.pending[cid].result()
        _, path = self._locate(cid)
        try:
            fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        except FileNotFoundError:
            raise BookNotFound(cid) from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_LEN:
                raise CorruptBook(cid, f"file of {size} bytes is shorter than the header")
            if size - HEADER_LEN > cid.size:
                raise CorruptBook(cid, f"file payload {size - HEADER_LEN} B exceeds book size")
            header = os.read(fd, HEADER_LEN)
            payload = os.read(fd, size - HEADER_LEN)
            if len(header) != HEADER_LEN or len(payload) != size - HEADER_LEN:
                raise CorruptBook(cid, "file changed size while being read")
        finally:
            os.close(fd)
        return self._decode(cid, header, payload)

    def _has(self, cid: CID) -> bool:
        batch = self._batch
        if batch is not None and cid in batch.pending:
            return True
        return os.path.exists(self._locate(cid)[1])

    def _delete(self, cid: CID) -> None:
        dirpath, path = self._locate(cid)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise BookNotFound(cid) from None
        if self._fsync:
            _fsync_dir(dirpath)

    def _scan(self) -> Iterator[tuple[CID, os.DirEntry[str]]]:
        for sub in self._subdirs():
            prefix = os.path.basename(sub)
            with os.scandir(sub) as it:
                for entry in it:
                    name = entry.name
                    if len(name) != 80 or name[16:18] != prefix:
                        continue  # temp files and foreign names
                    try:
                        cid = CID.parse(name)
                    except MalformedCID:
                        continue
                    if cid.hex == name:
                        yield cid, entry

    def _iter_unsorted(self) -> Iterable[CID]:
        return [cid for cid, _ in self._scan()]

    def stats(self) -> StoreStats:
        """Scan every book file (one stat per book: O(books), no reads)."""
        books = logical = stored = 0
        for cid, entry in self._scan():
            books += 1
            logical += cid.size
            stored += entry.stat(follow_symlinks=False).st_size
        return StoreStats(books=books, logical_bytes=logical, stored_bytes=stored)

    # --- batching and prefetch --------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self) -> Iterator[DirStore]:
        """Write books on ``workers`` threads; each file is fsync'd before it is linked into
        place, and every touched directory is fsync'd once when the block exits. Nested
        blocks join the outer one. Everything put inside is durable when this returns."""
        if self._batch is not None:
            self._batch_depth += 1
            try:
                yield self
            finally:
                self._batch_depth -= 1
            return
        self._batch = _Batch(self, self._workers)
        try:
            yield self
        finally:
            batch, self._batch = self._batch, None
            batch.close()

    def get_many(self, cids: Iterable[CID]) -> Iterator[bytes]:
        """Verified bytes of each CID in order, reading a few books ahead on worker threads."""
        ahead = 2 * self._workers
        it = iter(cids)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="oluo-cas-read") as pool:
            window: collections.deque[Future[bytes]] = collections.deque()
            for cid in it:
                window.append(pool.submit(self.get, cid))
                if len(window) >= ahead:
                    break
            try:
                while window:
                    data = window.popleft().result()
                    for cid in it:
                        window.append(pool.submit(self.get, cid))
                        break
                    yield data
            finally:
                for fut in window:
                    fut.cancel()

    def __repr__(self) -> str:
        return f"DirStore({self.path.name!r}, level={self.level})"

    def _repr_html_(self) -> str:
        return (
            f"<table><tr><th>DirStore</th><td>{self.path.name}</td></tr>"
            f"<tr><th>zstd level</th><td>{self.level}</td></tr></table>"
        )
