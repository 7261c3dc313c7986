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
import ctypes
import itertools
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import blake3
import zstandard

from oluo_lab._faults import fault_point
from oluo_lab._io import write_all
from oluo_lab.cas.base import BookStore, Buffer, StoreStats, verify_book
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
#: Bounds of the contiguous runs of books one read task fills (see ``get_many_into``).
_RUN_MIN = 1 << 20
_RUN_MAX = 8 << 20
#: Bytes of books queued before a batch hands them to a write worker as one task.
_GROUP_BYTES = 1 << 20
#: zstd is tried on a book only if this many bytes sampled from it shrink (see ``_encode``).
_PROBE_LEN = 4096
_PROBE_PIECES = 4


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_available() -> bool:
    return _LIBC is not None and hasattr(_LIBC, "syncfs")


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now (Linux; a hint, not a barrier).

    The batch's final syncfs/fsync then waits for less: the disk works while we compute.
    """
    fn = _SFR
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # errors ignored: durability comes later


def _load_sfr():
    fn = getattr(_LIBC, "sync_file_range", None) if _LIBC is not None else None
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn


_SFR = _load_sfr()


def _syncfs(path: str) -> None:
    """Flush every dirty page and journal entry of the filesystem holding ``path`` (Linux)."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        if _LIBC.syncfs(fd) != 0:  # type: ignore[union-attr]
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Batch:
    """Deferred-durability write group.

    Each new book is written (unsynced) to a unique temp file in its fan-out directory, and
    the kernel is asked to start writing it back at once (``sync_file_range``, a hint). On
    close: (1) make all temp files durable (one ``syncfs`` of the store's filesystem, or an
    fsync of every temp file on worker threads); (2) hard-link each temp file to its final
    name (never replacing an existing book) and remove the temp name; (3) make the new
    names durable (``syncfs`` again, or an fsync of each touched directory). A crash at any
    point leaves only complete, durable books under final names, plus temp files that the
    next open sweeps.

    Books reach the worker threads in groups of about ``_GROUP_BYTES``: one task per ~64 KiB
    book costs more in future bookkeeping and GIL hand-offs than the write itself.
    """

    def __init__(self, store: DirStore) -> None:
        self.store = store
        self.pending: dict[CID, tuple[str, str, str]] = {}  # cid -> (dir, tmp, final)
        self.jobs: dict[CID, Future[None]] = {}
        self.pool = ThreadPoolExecutor(store._workers, thread_name_prefix="oluo-cas-write")
        self.slots = threading.BoundedSemaphore(2 * store._workers)  # groups in flight
        self.group: list[tuple[str, Buffer]] = []  # (tmp, data) not yet handed to a worker
        self.group_cids: set[CID] = set()
        self.group_bytes = 0
        self.tmp_stem = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-"
        self.counter = itertools.count()

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
        if self.group_bytes >= _GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the queued group to a worker (blocks while ``2 * workers`` groups are in flight)."""
        if not self.group:
            return
        group, cids = self.group, self.group_cids
        self.group, self.group_cids, self.group_bytes = [], set(), 0
        self.slots.acquire()
        try:
            fut = self.pool.submit(self.store._encode_group, group)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.slots.release())
        for cid in cids:
            self.jobs[cid] = fut

    def wait(self, cid: CID) -> None:
        if cid in self.group_cids:
            self.flush()
        fut = self.jobs.get(cid)
        if fut is not None:
            fut.result()

    def close(self, commit: bool) -> None:
        store = self.store
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
                if store._fsync:
                    if store._sync_mode == "syncfs":
                        _syncfs(store._books_dir)
                    else:
                        with ThreadPoolExecutor(store._workers) as pool:
                            list(pool.map(_fsync_path, [tmp for _, tmp, _ in items]))
                    fault_point("cas.synced")
                for _, tmp, final in items:
                    with contextlib.suppress(FileExistsError):  # same content already there
                        os.link(tmp, final)
                    fault_point("cas.linked")
                if store._fsync:
                    if store._sync_mode == "syncfs":
                        _syncfs(store._books_dir)
                    else:
                        for d in sorted({d for d, _, _ in items}):
                            _fsync_dir(d)
                    fault_point("cas.dir_synced")
        finally:
            for _, tmp, _ in items:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self.pending.clear()
            self.jobs.clear()
            self.group.clear()
            self.group_cids.clear()
        if first is not None:
            raise first


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
            sync_mode = "syncfs" if _syncfs_available() else "fsync"
        if sync_mode not in ("syncfs", "fsync") or (
            sync_mode == "syncfs" and not _syncfs_available()
        ):
            raise ValueError(f"sync_mode must be 'fsync' or (on Linux) 'syncfs', got {sync_mode!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.path = Path(path)
        self.level = level
        self._fsync = fsync
        self._sync_mode = sync_mode
        self._workers = workers
        self._books_dir = os.fspath(self.path / "books")
        self._local = threading.local()
        self._made: set[str] = set()
        self._batch: _Batch | None = None
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
        existing = set(os.listdir(self._books_dir))
        missing = [f"{i:02x}" for i in range(256) if f"{i:02x}" not in existing]
        for name in missing:
            os.makedirs(os.path.join(self._books_dir, name), exist_ok=True)
        if missing and self._fsync:
            _fsync_dir(self._books_dir)
        if not marker.exists():
            d = os.fspath(self.path)
            self._write_file(d, os.fspath(marker), b"", FORMAT_TEXT.encode(), True)

    def _sweep_stale_tmp(self) -> None:
        self.sweep_temp_files(STALE_TMP_SECONDS)

    def sweep_temp_files(self, older_than_s: float = STALE_TMP_SECONDS) -> int:
        """Remove temp files (crash leftovers) older than ``older_than_s``; returns how many.

        A small age is safe only while no other process writes to this store (a Lab's gc
        holds the data-directory lock that every writer of its store holds)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for sub in self._subdirs():
            with contextlib.suppress(FileNotFoundError), os.scandir(sub) as it:
                for entry in it:
                    if entry.name.startswith(TMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                                os.unlink(entry.path)
                                removed += 1
        return removed

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
        """File header and payload for ``data``: zstd if that is strictly shorter, else raw.

        A book above ``2 * _PROBE_LEN`` bytes whose probe (``_PROBE_PIECES`` slices spread
        over the book) does not shrink under zstd is stored raw without compressing the
        whole: random-looking bytes cost a full zstd pass for nothing. Deterministic (a
        function of the bytes only); readers accept a raw book whatever its content.
        """
        cctx = self._cctx()
        n = len(data)
        if n > 2 * _PROBE_LEN:
            mv = memoryview(data)
            w = _PROBE_LEN // _PROBE_PIECES
            step = (n - w) // (_PROBE_PIECES - 1)
            probe = b"".join([mv[k * step : k * step + w] for k in range(_PROBE_PIECES)])
            if len(cctx.compress(probe)) >= len(probe):
                return _RAW_HEADER, data
        comp = cctx.compress(data)
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
            # One-shot decode into exactly the recorded size; a truncated frame or bytes
            # after it raise ZstdError. (decompressobj would decode in 128 KiB pieces and join.)
            out = self._dctx().decompress(payload, allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CorruptBook(cid, f"zstd: {exc}") from None
        if len(out) != cid.size:
            raise CorruptBook(cid, f"zstd frame decoded to {len(out)} B, not {cid.size}")
        return out

    # --- file I/O ------------------------------------------------------------------------
    def _encode_group(self, group: list[tuple[str, Buffer]]) -> None:
        for tmp, data in group:
            self._ensure_dir(os.path.dirname(tmp))
            header, payload = self._encode(data)
            self._write_tmp(tmp, header, payload, sync=False)

    def _write_tmp(self, tmp: str, header: bytes, payload: Buffer, sync: bool) -> str:
        """Write header + payload to the new (O_EXCL) temp file ``tmp``."""
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            if header:
                write_all(fd, header)
            write_all(fd, payload)
            fault_point("cas.tmp_written")
            if sync:
                os.fsync(fd)
                fault_point("cas.synced")
            elif self._fsync:
                _start_writeback(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _write_file(
        self, dirpath: str, path: str, header: bytes, payload: Buffer, sync_dir: bool
    ) -> None:
        """Durably write one file: temp file, fsync, link into place (no clobber), fsync dir."""
        self._ensure_dir(dirpath)
        tmp = os.path.join(dirpath, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}")
        self._write_tmp(tmp, header, payload, sync=self._fsync)
        try:
            with contextlib.suppress(FileExistsError):  # another writer won: same content
                os.link(tmp, path)
            fault_point("cas.linked")
        finally:
            os.unlink(tmp)
        if sync_dir and self._fsync:
            _fsync_dir(dirpath)
            fault_point("cas.dir_synced")

    def _store(self, cid: CID, data: Buffer) -> None:
        dirpath, path = self._locate(cid)
        batch = self._batch
        if batch is not None and cid in batch.pending:
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
        if batch is not None and cid in batch.pending:
            batch.wait(cid)
            path = batch.pending[cid][1]
        else:
            path = self._locate(cid)[1]
        fd, size = self._open_book(cid, path)
        try:
            header = os.read(fd, HEADER_LEN)
            payload = os.read(fd, size - HEADER_LEN)
            if len(header) != HEADER_LEN or len(payload) != size - HEADER_LEN:
                raise CorruptBook(cid, "file changed size while being read")
        finally:
            os.close(fd)
        return self._decode(cid, header, payload)

    @staticmethod
    def _open_book(cid: CID, path: str) -> tuple[int, int]:
        """Open a book file and check its size against the header and the CID (the caller
        closes the fd); BookNotFound / CorruptBook name the CID."""
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
        except BaseException:
            os.close(fd)
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
        if batch is not None and cid in batch.pending:
            out[:] = self.get(cid)
            return
        fd, size = self._open_book(cid, self._locate(cid)[1])
        try:
            header = os.read(fd, HEADER_LEN)
            if header == _RAW_HEADER and size - HEADER_LEN == cid.size:
                got = 0
                while got < cid.size:
                    n = os.readv(fd, [out[got:]])
                    if not n:
                        raise CorruptBook(cid, "file changed size while being read")
                    got += n
                if os.read(fd, 1):
                    raise CorruptBook(cid, "file grew while being read")
                verify_book(cid, out)
                return
            payload = os.read(fd, size - HEADER_LEN)
            if len(header) != HEADER_LEN or len(payload) != size - HEADER_LEN:
                raise CorruptBook(cid, "file changed size while being read")
        finally:
            os.close(fd)
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
        if batch is not None and cid in batch.pending:
            return True
        return os.path.exists(self._locate(cid)[1])

    def _stat(self, cid: CID) -> tuple[int, float]:
        batch = self._batch
        path = (
            batch.pending[cid][1]
            if batch is not None and cid in batch.pending
            else self._locate(cid)[1]
        )
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise BookNotFound(cid) from None
        return st.st_size, st.st_mtime

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
        """Write many books with one durability barrier at the end (see ``_Batch``).

        Books put inside the block are readable at once and durable when it exits
        normally; if the block raises, they are discarded. Nested blocks join the outer one.
        """
        if self._batch is not None:
            yield self
            return
        self._batch = _Batch(self)
        ok = False
        try:
            yield self
            ok = True
        finally:
            batch, self._batch = self._batch, None
            batch.close(commit=ok)

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
        from oluo_lab._html import fmt_bytes, kv_table

        st = self.stats()
        return kv_table(
            "DirStore",
            [
                ("directory", self.path.name),
                ("zstd level", self.level),
                ("books", st.books),
                ("logical bytes", f"{st.logical_bytes} ({fmt_bytes(st.logical_bytes)})"),
                ("stored bytes", f"{st.stored_bytes} ({fmt_bytes(st.stored_bytes)})"),
                ("compression ratio", f"{st.compression_ratio:.3f}"),
            ],
        )
