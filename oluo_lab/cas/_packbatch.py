"""The writer behind ``PackStore.batch()``: books become records, records become packs.

Layer: cas, below ``packs.py``. Books put inside one block are compressed on worker
threads in groups of about ``GROUP_BYTES``, and their records are appended to the open
pack in put order (so the same puts give the same packs, byte for byte, and the same
pack names), by one appender thread that also hashes them into the pack's name. A pack
that reaches the target size gets its trailer and is published (synced and linked, or
uploaded) on an I/O thread while the next one fills. When the block exits: the last pack
is sealed, every pack is durable (then the directory is synced), and only then does the
store write the index file naming them.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import blake3
import numpy as np

from oluo_lab.cas._backends import Backend, Sink
from oluo_lab.cas._bookfile import RAW_HEADER
from oluo_lab.cas._packfile import (
    ENTRY_LEN,
    PACK_DIR,
    PACK_HEADER,
    PackRef,
    encode_trailer_table,
    entry_rows,
    pack_key,
)
from oluo_lab.cas.base import Buffer
from oluo_lab.cas.cid import CID
from oluo_lab.cas.params import CID_LEN

__all__ = ["GROUP_BYTES", "PackBatch", "PackBuilder"]

#: Bytes of books queued before they go to a compression worker as one task.
GROUP_BYTES = 1 << 20

#: ``encode(items)`` turns ``[(cid, book bytes)]`` into ``[(cid, record header, payload)]``.
Encode = Callable[[list[tuple[CID, Buffer]]], list[tuple[CID, bytes, Buffer]]]


#: where a book of the batch is: (the pack builder holding it, record offset, length)
Placed = tuple["PackBuilder", int, int]


@dataclass
class PackBuilder:
    """One pack being filled: its sink, entry rows so far and running blake3 of its bytes."""

    sink: Sink
    #: the entries' 56-byte forms (N x 56 uint8), one array per append, in offset order
    tables: list[np.ndarray] = field(default_factory=list)
    pos: int = len(PACK_HEADER)
    hasher: blake3.blake3 = field(default_factory=lambda: blake3.blake3(PACK_HEADER))
    unique: bool = False  # holds a book put again after a tombstone: gets a nonce record
    #: set when sealed: the published pack (its sink is this one's)
    sealed: _Sealed | None = None

    def __post_init__(self) -> None:
        self.sink.append(PACK_HEADER)

    def add_run(self, records: list[tuple[CID, tuple[Buffer, ...]]]) -> list[tuple[int, int]]:
        """Append records back to back with one write and one hash update; each one's
        (offset, length)."""
        pieces: list[Buffer] = []
        placed = []
        pos = self.pos
        for _, parts in records:
            length = 0
            for piece in parts:
                pieces.append(piece)
                length += len(piece)
            placed.append((pos, length))
            pos += length
        blob = b"".join(pieces)
        self.sink.append(blob)
        self.hasher.update(blob)
        rows = np.frombuffer(b"".join([cid.raw for cid, _ in records]), np.uint8)
        offsets, lengths = zip(*placed, strict=True) if placed else ((), ())
        self.tables.append(entry_rows(rows.reshape(-1, CID_LEN), offsets, lengths))
        self.pos = pos
        return placed

    def add_table(self, rows: np.ndarray, records: np.ndarray) -> np.ndarray:
        """Append records of one length (an M x L array) named by M x 40 CID rows, with
        one write and one hash update; their offsets."""
        m, length = records.shape
        offsets = self.pos + length * np.arange(m, dtype=np.int64)
        blob = memoryview(np.ascontiguousarray(records).reshape(-1))
        self.sink.append(blob)
        self.hasher.update(blob)
        self.tables.append(entry_rows(rows, offsets, np.full(m, length)))
        self.pos += m * length
        return offsets

    def table(self) -> np.ndarray:
        """Every entry so far, N x 56."""
        if len(self.tables) != 1:
            self.tables = [np.concatenate(self.tables or [np.zeros((0, ENTRY_LEN), np.uint8)])]
        return self.tables[0]

    def seal(self) -> tuple[str, int, bytes]:
        """Append the trailer; (pack id, pack size, trailer)."""
        trailer = encode_trailer_table(self.table())
        self.sink.append(trailer)
        self.hasher.update(trailer)
        return self.hasher.hexdigest(), self.pos + len(trailer), trailer


@dataclass
class _Sealed:
    pack: PackRef
    sink: Sink
    done: Future[None]


class PackBatch:
    """Deferred-durability pack writer for one ``batch()`` block (see the module docstring).

    Three kinds of thread share the work: the caller's (hashing books into CIDs and
    queueing them), ``workers`` encoders (zstd), and one appender that takes encoded
    groups in queue order and writes, hashes and seals packs; publishing (fsync + link,
    or an upload) runs on ``publishers`` I/O threads, one pack each. At most
    ``2 * workers + 1`` groups are in flight, so memory stays at a few MiB plus (object
    stores) one pack per publisher and the one filling.
    """

    def __init__(
        self,
        backend: Backend,
        encode: Encode,
        *,
        workers: int,
        target_pack_size: int,
        publishers: int = 1,
    ) -> None:
        self._backend = backend
        self._encode = encode
        self._target = target_pack_size
        self._lock = threading.RLock()  # the caller's side: group, queue bookkeeping
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="oluo-pack-encode")
        self._appender = ThreadPoolExecutor(1, thread_name_prefix="oluo-pack-append")
        self._io = ThreadPoolExecutor(publishers, thread_name_prefix="oluo-pack-io")
        self._publishers = publishers
        self._slots = threading.BoundedSemaphore(2 * workers + 1)
        self._group: list[tuple[CID, Buffer]] = []
        self._group_bytes = 0
        self._appended: list[Future[None]] = []
        # books by the 40 bytes of their CID (a table of records has no CID objects)
        self._queued: dict[bytes, Future[None] | None] = {}  # None: in the unflushed group
        self._placed: dict[bytes, Placed] = {}
        self._open: PackBuilder | None = None  # appender thread only
        self._sealed: list[_Sealed] = []
        self._error: BaseException | None = None
        #: books (their CIDs' 40 bytes) put again because a two-phase gc tombstoned them:
        #: a pack holding one is made unique (a nonce book is added), so it is never an
        #: existing pack of the same content (which would hold a tombstoned copy)
        self.renewed: set[bytes] = set()

    # --- writing (caller's thread) ---------------------------------------------------------
    def __contains__(self, cid: CID) -> bool:
        return self.holds(cid.raw)

    def holds(self, raw: bytes) -> bool:
        """Whether the book whose CID's 40 bytes are ``raw`` is queued or packed here."""
        # in this order: the appender places a book before it unqueues it, so one of the
        # two always holds it (the other order can miss a book moving between them, which
        # would then be packed twice: a pack listing a CID twice is unreadable)
        return raw in self._queued or raw in self._placed

    def add(self, cid: CID, data: Buffer) -> None:
        """Queue a book (CID known, not yet stored) to be compressed and packed."""
        self.add_many([(cid, data)])

    def add_many(self, items: list[tuple[CID, Buffer]], *, raw: bool = False) -> None:
        """Queue books (CIDs known, not yet stored) to be compressed and packed, one lock.
        ``raw``: packed as raw records, with no zstd attempt (they skip the encoders)."""
        with self._lock:
            self._raise_failure()
            if raw:
                if items:
                    self._flush_group()  # keeps the books in the order they were put
                    done: Future[list[tuple[CID, bytes, Buffer]]] = Future()
                    done.set_result([(cid, RAW_HEADER, data) for cid, data in items])
                    self._submit([cid.raw for cid, _ in items], self._append_group, done)
                return
            for cid, data in items:
                self._queued[cid.raw] = None
                self._group.append((cid, data))
                self._group_bytes += len(data)
                if self._group_bytes >= GROUP_BYTES:
                    self._flush_group()

    def add_table(self, keys: list[bytes], rows: np.ndarray, records: np.ndarray) -> None:
        """Queue ready records of one length (M x L uint8, e.g. raw pages behind their
        header) of books not yet stored, named by their CIDs' M x 40 ``rows`` (and their
        bytes, ``keys``): packed in order with no per-book work but a dict entry. Books
        already in the batch must have been left out (see :meth:`holds`)."""
        with self._lock:
            self._raise_failure()
            if not keys:
                return
            self._flush_group()
            self._submit(keys, self._append_table, keys, rows, records)

    def add_record(self, cid: CID, record: Buffer) -> None:
        """Append an already-encoded record verbatim (repack and conversion: no recompression)."""
        with self._lock:
            self._raise_failure()
            self._flush_group()
            done: Future[list[tuple[CID, bytes, Buffer]]] = Future()
            done.set_result([(cid, b"", record)])
            self._submit([cid.raw], self._append_group, done)

    def _flush_group(self) -> None:
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        self._slots.acquire()
        try:
            encoded = self._pool.submit(self._encode, group)
        except BaseException:
            self._slots.release()
            raise
        keys = [cid.raw for cid, _ in group]
        self._submit(keys, self._append_group, encoded, acquired=True)

    def _submit(
        self, keys: list[bytes], append: Callable[..., None], *args: Any, acquired: bool = False
    ) -> None:
        if not acquired:
            self._slots.acquire()
        appended = self._appender.submit(append, *args)
        appended.add_done_callback(self._done)
        self._appended.append(appended)
        queued = self._queued
        for key in keys:
            queued[key] = appended

    def _done(self, fut: Future[None]) -> None:
        self._slots.release()
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    # --- the appender thread -----------------------------------------------------------------
    def _builder(self) -> PackBuilder:
        if self._open is None:  # a pack is opened only for records to put in it
            sink = self._backend.new_sink(PACK_DIR)
            try:
                self._open = PackBuilder(sink)
            except BaseException:
                sink.abort()
                raise
        return self._open

    def _append_group(self, encoded: Future[list[tuple[CID, bytes, Buffer]]]) -> None:
        if self._error is not None:
            return  # the batch has failed: write nothing more
        items = encoded.result()
        i = 0
        while i < len(items):
            run: list[tuple[CID, tuple[Buffer, ...]]] = []
            in_run: set[bytes] = set()
            pos = len(PACK_HEADER) if self._open is None else self._open.pos
            # records up to the one that takes the pack to its target size (at least one,
            # whatever the target), in one write
            while i < len(items) and (not run or pos < self._target):
                cid, header, payload = items[i]
                i += 1
                raw = cid.raw
                if raw in self._placed or raw in in_run:  # queued twice (racing puts)
                    self._queued.pop(raw, None)
                    continue
                pieces = (header, payload) if header else (payload,)
                run.append((cid, pieces))
                in_run.add(raw)
                pos += sum(len(p) for p in pieces)
            if not run:
                continue
            builder = self._builder()
            for (cid, _), (offset, length) in zip(run, builder.add_run(run), strict=True):
                raw = cid.raw
                self._placed[raw] = (builder, offset, length)
                self._queued.pop(raw, None)
                if raw in self.renewed:
                    builder.unique = True
            if builder.pos >= self._target:
                self._seal()

    def _append_table(self, keys: list[bytes], rows: np.ndarray, records: np.ndarray) -> None:
        if self._error is not None:
            return
        placed = self._placed
        fresh = [key not in placed for key in keys]
        if not all(fresh):  # queued twice (a racing put packed some first)
            for key in itertools.compress(keys, [not f for f in fresh]):
                self._queued.pop(key, None)
            keys = list(itertools.compress(keys, fresh))
            rows, records = rows[fresh], records[fresh]
        m, length = records.shape
        i = 0
        while i < m:
            builder = self._builder()
            # records up to the one that takes the pack to its target size, in one write
            n = min(m - i, max(1, -(-(self._target - builder.pos) // length)))
            offsets = builder.add_table(rows[i : i + n], records[i : i + n])
            renewed = self.renewed
            if renewed and any(key in renewed for key in keys[i : i + n]):
                builder.unique = True
            self._placed.update(
                zip(keys[i : i + n], [(builder, o, length) for o in offsets.tolist()], strict=True)
            )
            queued = self._queued
            for key in keys[i : i + n]:
                queued.pop(key, None)
            i += n
            if builder.pos >= self._target:
                self._seal()

    def _seal(self) -> None:
        builder, self._open = self._open, None
        if builder is None:
            return
        if builder.unique:  # a small random book, garbage for a later gc
            nonce = b"oluo-pack-nonce " + secrets.token_bytes(16)
            [(cid, header, payload)] = self._encode([(CID.for_book(nonce), nonce)])
            builder.add_run([(cid, (header, payload))])
        try:
            pack_id, size, _ = builder.seal()
            busy = [s for s in self._sealed if not s.done.done()]
            if len(busy) >= self._publishers:
                busy[0].done.result()  # at most ``publishers`` packs in flight
            done = self._io.submit(builder.sink.publish, pack_key(pack_id))
        except BaseException:
            builder.sink.abort()  # no one else holds it: close and remove its temp file
            raise
        sealed = _Sealed(PackRef(pack_id, size, table=builder.table()), builder.sink, done)
        self._sealed.append(sealed)
        builder.sealed = sealed

    # --- reading back ----------------------------------------------------------------------
    def record(self, cid: CID) -> bytes:
        """The stored record of a book put in this batch (waits until it is packed)."""
        raw = cid.raw
        with self._lock:
            appended = self._queued.get(raw)
            if raw in self._queued and appended is None:
                self._flush_group()
                appended = self._queued.get(raw)
        if appended is not None:
            appended.result()
        placed = self._placed.get(raw)
        if placed is None:  # the batch failed before its append: that failure, not a miss
            self._raise_failure()
            raise KeyError(raw)
        builder, offset, length = placed
        if builder.sealed is not None:
            builder.sealed.done.result()
        return builder.sink.read(offset, length)

    # --- ending ----------------------------------------------------------------------------
    def close(self, commit: bool) -> list[PackRef]:
        """Commit: seal, publish and make durable every pack; returns them (the caller
        writes the index). Otherwise (or on a failed write) discard what is unpublished;
        published packs stay as unreferenced files for gc. Raises the first write error."""
        with self._lock:
            error: BaseException | None = None
            if not commit and self._error is None:
                self._error = RuntimeError("batch abandoned")  # the appender stops writing
            try:
                if commit:
                    self._flush_group()
            except BaseException as exc:
                error = exc
            self._appender.shutdown(wait=True)
            self._pool.shutdown(wait=True, cancel_futures=True)
            for fut in self._appended:
                exc = fut.exception()
                if exc is not None and error is None:
                    error = exc
            if commit and error is None:
                try:
                    self._seal()
                except BaseException as exc:
                    error = exc
            for s in self._sealed:
                exc = s.done.exception()
                if exc is not None and error is None:
                    error = exc
            self._io.shutdown(wait=True)
            if self._open is not None:
                self._open.sink.abort()
                self._open = None
            for s in self._sealed:
                s.sink.abort()
            packs = [s.pack for s in self._sealed]
            self._sealed.clear()
            self._placed.clear()
            self._queued.clear()
            self._appended.clear()
            if error is not None:
                raise error
            if commit and packs:
                self._backend.barrier(PACK_DIR)
            return packs if commit else []
