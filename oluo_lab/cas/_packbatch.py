"""The writer behind ``PackStore.batch()``: books become records, records become packs.

Layer: cas, below ``packs.py``. Books put inside one block are compressed on worker
threads in groups of about ``GROUP_BYTES``, and their records are appended to the open
pack in put order (so the same puts give the same packs, byte for byte, and the same
pack names). A pack that reaches the target size gets its trailer and is published
(synced and linked, or uploaded) on an I/O thread while the next one fills. When the
block exits: the last pack is sealed, every pack is durable (then the directory is
synced), and only then does the store write the index file naming them.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from oluo_lab.cas._backends import Backend, Sink
from oluo_lab.cas._packfile import (
    PACK_DIR,
    PACK_HEADER,
    Entry,
    PackRef,
    encode_trailer,
    pack_key,
)
from oluo_lab.cas.base import Buffer
from oluo_lab.cas.cid import CID

__all__ = ["GROUP_BYTES", "PackBatch", "PackBuilder"]

#: Bytes of books queued before they go to a compression worker as one task.
GROUP_BYTES = 1 << 20

#: ``encode(items)`` turns ``[(cid, book bytes)]`` into ``[(cid, record header, payload)]``.
Encode = Callable[[list[tuple[CID, Buffer]]], list[tuple[CID, bytes, Buffer]]]


@dataclass
class PackBuilder:
    """One pack being filled: its sink, entries so far and running blake3 of its bytes."""

    sink: Sink
    entries: list[Entry] = field(default_factory=list)
    pos: int = len(PACK_HEADER)
    hasher: blake3.blake3 = field(default_factory=lambda: blake3.blake3(PACK_HEADER))

    def __post_init__(self) -> None:
        self.sink.append(PACK_HEADER)

    def add(self, cid: CID, pieces: tuple[Buffer, ...]) -> Entry:
        """Append one record (its pieces back to back) and return its entry."""
        length = 0
        for piece in pieces:
            self.sink.append(piece)
            self.hasher.update(piece)
            length += len(piece)
        entry = Entry(cid, self.pos, length)
        self.entries.append(entry)
        self.pos += length
        return entry

    def seal(self) -> tuple[str, int, bytes]:
        """Append the trailer; (pack id, pack size, trailer)."""
        trailer = encode_trailer(self.entries)
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

    Thread-safe: every method takes the batch's lock. ``encode`` runs on ``workers``
    threads; publishing runs on one I/O thread with at most one pack waiting, so memory
    stays at about two packs plus the groups in flight.
    """

    def __init__(
        self, backend: Backend, encode: Encode, *, workers: int, target_pack_size: int
    ) -> None:
        self._backend = backend
        self._encode = encode
        self._target = target_pack_size
        self._workers = workers
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="oluo-pack-encode")
        self._io = ThreadPoolExecutor(1, thread_name_prefix="oluo-pack-io")
        self._group: list[tuple[CID, Buffer]] = []
        self._group_bytes = 0
        self._queue: collections.deque[Future[list[tuple[CID, bytes, Buffer]]]] = (
            collections.deque()
        )
        self._queued: set[CID] = set()  # put, not yet in a pack
        self._placed: dict[CID, tuple[PackBuilder | _Sealed, Entry]] = {}
        self._open: PackBuilder | None = None
        self._sealed: list[_Sealed] = []

    # --- writing ---------------------------------------------------------------------------
    def __contains__(self, cid: CID) -> bool:
        return cid in self._queued or cid in self._placed

    def add(self, cid: CID, data: Buffer) -> None:
        """Queue a book (CID known, not yet stored) to be compressed and packed."""
        with self._lock:
            self._queued.add(cid)
            self._group.append((cid, data))
            self._group_bytes += len(data)
            if self._group_bytes >= GROUP_BYTES:
                self._flush_group()
            self._drain(block=len(self._queue) > 2 * self._workers)

    def add_record(self, cid: CID, record: Buffer) -> None:
        """Append an already-encoded record verbatim (repack and conversion: no recompression)."""
        with self._lock:
            self._queued.add(cid)
            self._flush_group()
            done: Future[list[tuple[CID, bytes, Buffer]]] = Future()
            done.set_result([(cid, b"", record)])
            self._queue.append(done)
            self._drain(block=False)

    def _flush_group(self) -> None:
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        self._queue.append(self._pool.submit(self._encode, group))

    def _drain(self, block: bool) -> None:
        """Append finished groups' records to the open pack, in put order."""
        while self._queue and (block or self._queue[0].done()):
            records = self._queue.popleft().result()
            for cid, header, payload in records:
                self._append(cid, (header, payload) if header else (payload,))
            block = block and len(self._queue) > 2 * self._workers

    def _append(self, cid: CID, pieces: tuple[Buffer, ...]) -> None:
        if self._open is None:
            self._open = PackBuilder(self._backend.new_sink(PACK_DIR))
        builder = self._open
        entry = builder.add(cid, pieces)
        self._queued.discard(cid)
        self._placed[cid] = (builder, entry)
        if builder.pos >= self._target:
            self._seal()

    def _seal(self) -> None:
        builder, self._open = self._open, None
        if builder is None:
            return
        pack_id, size, _ = builder.seal()
        if self._sealed and not self._sealed[-1].done.done():
            self._sealed[-1].done.result()  # at most one pack waits for the I/O thread
        sealed = _Sealed(
            PackRef(pack_id, size, tuple(builder.entries)),
            builder.sink,
            self._io.submit(builder.sink.publish, pack_key(pack_id)),
        )
        self._sealed.append(sealed)
        for e in builder.entries:
            self._placed[e.cid] = (sealed, e)

    # --- reading back ----------------------------------------------------------------------
    def record(self, cid: CID) -> bytes:
        """The stored record of a book put in this batch (waits until it is packed)."""
        with self._lock:
            if cid in self._queued:
                self._flush_group()
                while cid not in self._placed:
                    self._drain(block=True)
            where, entry = self._placed[cid]
            sink = where.sink
            if isinstance(where, _Sealed):
                where.done.result()
        return sink.read(entry.offset, entry.length)

    # --- ending ----------------------------------------------------------------------------
    def close(self, commit: bool) -> list[PackRef]:
        """Commit: seal, publish and make durable every pack; returns them (the caller
        writes the index). Otherwise (or on a failed write) discard what is unpublished;
        published packs stay as unreferenced files for gc. Raises the first write error."""
        with self._lock:
            error: BaseException | None = None
            try:
                if commit:
                    self._flush_group()
                    while self._queue:
                        self._drain(block=True)
                    self._seal()
            except BaseException as exc:
                error = exc
            finally:
                self._pool.shutdown(wait=True, cancel_futures=True)
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
            self._queue.clear()
            if error is not None:
                raise error
            if commit and packs:
                self._backend.barrier(PACK_DIR)
            return packs if commit else []
