"""The abstract book store every backend implements, and its statistics record.

Layer: cas, below every store. A backend implements seven abstract methods: five storage
primitives (``_store``, ``_load``, ``_has``, ``_delete``, ``_iter_unsorted``), ``_stat``
(a book's stored size and write time) and ``stats`` (size accounting of the whole
store). The base class owns every check that must never differ between backends: book
size limits, bundle validation, and hash verification on every read. Two store-level
hooks have defaults a backend may replace: ``sweep`` (remove the books a gc doomed: book
by book here, mark-then-repack in a pack store) and ``check`` (the store's own
consistency, beyond the books; nothing to check here).
"""

from __future__ import annotations

import collections
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3
import numpy as np

from oluo_lab._faults import fault_point
from oluo_lab.cas.cid import CID, KIND_META, check_concat, cid_sizes, cids_from_concat, cids_of
from oluo_lab.cas.errors import (
    BookTooLarge,
    CorruptBook,
    DagDepthExceeded,
    MalformedBundle,
    MalformedCID,
)
from oluo_lab.cas.params import CID_LEN, MAX_BOOK_SIZE, MAX_DEPTH

Buffer = bytes | bytearray | memoryview

#: Seconds an unreferenced book or temp file is left alone, because a write of another
#: process may be about to name it or finish it: ``Lab.gc``'s default grace period and the
#: age past which a store removes crash-leftover temp files.
DEFAULT_GC_GRACE_S = 3600.0


@dataclass(frozen=True)
class StoreStats:
    """Size accounting of a store. ``compression_ratio`` = logical / stored (1.0 if empty)."""

    books: int
    logical_bytes: int
    stored_bytes: int

    @property
    def compression_ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["compression_ratio"] = self.compression_ratio
        return d

    def to_frame(self):  # pandas is a project dependency but only needed here
        import pandas as pd

        return pd.DataFrame([self.as_dict()])

    def __repr__(self) -> str:
        from oluo_lab._html import fmt_bytes

        return (
            f"StoreStats(books={self.books}, logical={fmt_bytes(self.logical_bytes)}, "
            f"stored={fmt_bytes(self.stored_bytes)}, "
            f"compression_ratio={self.compression_ratio:.3f})"
        )

    def rows(self) -> list[tuple[str, Any]]:
        """(label, value) rows of an HTML table (a store's repr shows them too)."""
        from oluo_lab._html import fmt_bytes

        return [
            ("books", self.books),
            ("logical bytes", fmt_bytes(self.logical_bytes)),
            ("stored bytes", fmt_bytes(self.stored_bytes)),
            ("compression ratio", f"{self.compression_ratio:.3f}"),
        ]

    def _repr_html_(self) -> str:
        from oluo_lab._html import kv_table

        return kv_table("StoreStats", self.rows())


@dataclass(frozen=True)
class SweepReport:
    """What ``store.sweep(doomed, ...)`` removed (or, ``dry_run``, would remove).

    ``books`` / ``logical_bytes``: doomed books taken out of the store. A pack store also
    reports the packs it wrote (live books of mostly-dead or small packs, copied without
    recompression), the packs it deleted, the unreferenced packs it kept because they are
    younger than the grace period, and the stored bytes the deletions freed; a two-phase
    sweep (an object store) the books it ``tombstoned`` now and those ``pending`` (tombstoned
    earlier, still within the grace period).
    """

    dry_run: bool
    books: int
    logical_bytes: int
    packs_written: int = 0
    packs_deleted: int = 0
    packs_young: int = 0
    freed_bytes: int = 0
    tombstoned: int = 0
    pending: int = 0
    stored_bytes: int = 0

    def __repr__(self) -> str:
        two_phase = (
            f", tombstoned={self.tombstoned}, pending={self.pending}"
            if self.tombstoned or self.pending
            else ""
        )
        return (
            f"SweepReport(dry_run={self.dry_run}, books={self.books}, "
            f"packs_written={self.packs_written}, packs_deleted={self.packs_deleted}, "
            f"packs_young={self.packs_young}, freed_bytes={self.freed_bytes}{two_phase})"
        )


@dataclass(frozen=True)
class StoreProblem:
    """One inconsistency ``store.check()`` found: the file (or CID) and what is wrong."""

    where: str
    message: str
    cid: CID | None = None


@dataclass(frozen=True)
class StoreCheck:
    """Result of ``store.check()``: truthy when no problem was found. ``info`` holds
    counts that are not problems (files, unreferenced packs and their bytes, ...)."""

    problems: tuple[StoreProblem, ...] = ()
    info: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return not self.problems

    def __repr__(self) -> str:
        info = ", ".join(f"{k}={v}" for k, v in sorted(self.info.items()))
        return f"StoreCheck(problems={len(self.problems)}{', ' if info else ''}{info})"

    def _repr_html_(self) -> str:
        from oluo_lab._html import kv_table

        rows: list[tuple[str, Any]] = [("problems", len(self.problems))]
        rows += [(p.where, p.message) for p in self.problems[:20]]
        rows += sorted(self.info.items())
        return kv_table("StoreCheck", rows)


def prefetch_get_many(
    get: Callable[[CID], bytes], cids: Iterable[CID], workers: int
) -> Iterator[bytes]:
    """``get`` of each CID in order, a few books ahead on ``workers`` threads."""
    ahead = 2 * workers
    it = iter(cids)
    with ThreadPoolExecutor(workers, thread_name_prefix="oluo-cas-read") as pool:
        window: collections.deque[Future[bytes]] = collections.deque()
        for cid in it:
            window.append(pool.submit(get, cid))
            if len(window) >= ahead:
                break
        try:
            while window:
                data = window.popleft().result()
                for cid in it:
                    window.append(pool.submit(get, cid))
                    break
                yield data
        finally:
            for fut in window:
                fut.cancel()


def concat_plan(cids: Any, out: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validated N x 40 CID rows, each book's start in ``out``, each book's size) for
    :meth:`BookStore.get_concat_into`; MalformedCID / ValueError on bad input."""
    if isinstance(cids, np.ndarray):
        if cids.dtype != np.uint8 or cids.ndim != 2 or cids.shape[1] != CID_LEN:
            raise ValueError(f"CID rows must be N x {CID_LEN} uint8, got {cids.dtype} {cids.shape}")
        cids = cids.tobytes()
    rows = check_concat(cids)
    sizes = cid_sizes(rows)
    starts = np.zeros(len(sizes), np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    total = int(sizes.sum())
    if total != len(memoryview(out).cast("B")):
        raise ValueError(f"buffer of {len(memoryview(out))} B for {total} B of books")
    return rows, starts, sizes


def verify_book(cid: CID, data: Buffer) -> None:
    """Raise CorruptBook unless ``data`` has exactly the length and blake3 digest of ``cid``."""
    if len(data) != cid.size:
        raise CorruptBook(cid, f"length {len(data)} != {cid.size}")
    if blake3.blake3(data).digest() != cid.digest:
        raise CorruptBook(cid, "blake3 digest mismatch")


def bundle_depth(data: Buffer, allow_meta: bool = True) -> int:
    """Depth a bundle with bytes ``data`` must have: max child depth + 1.

    The first entry may be a root-metadata record (``allow_meta``); every other entry must be
    a valid CID. Raises MalformedBundle / DagDepthExceeded (without a CID: the bundle has none yet).
    """
    n = len(data)
    if n % CID_LEN:
        raise MalformedBundle(f"bundle length {n} is not a multiple of {CID_LEN}")
    mv = memoryview(data)
    start = CID_LEN if allow_meta and n and mv[1] == KIND_META else 0
    if start >= n:
        raise MalformedBundle("bundle has no children")
    try:
        children = cids_from_concat(mv[start:])
    except MalformedCID as exc:
        entry = start // CID_LEN + exc.index  # type: ignore[attr-defined]
        raise MalformedBundle(f"bundle entry {entry} is not a CID: {exc}") from None
    deepest = max(c.depth for c in children)
    if deepest + 1 > MAX_DEPTH:
        raise DagDepthExceeded(f"bundle depth {deepest + 1} exceeds MAX_DEPTH {MAX_DEPTH}")
    return deepest + 1


class BookStore(ABC):
    """Abstract content-addressed book store.

    Public contract (proven for every backend by ``oluo_lab.testing.store.StoreConformance``):
    ``put`` is idempotent and returns the book CID; ``get`` re-verifies length and blake3
    on every read (CorruptBook / BookNotFound name the CID); ``delete`` of an absent CID
    raises BookNotFound; iteration yields CIDs in sorted (binary) order.
    """

    # --- backend primitives ---------------------------------------------------------
    @abstractmethod
    def _store(self, cid: CID, data: Buffer) -> None:
        """Persist ``data`` (already known to hash to ``cid``) unless ``cid`` is present."""

    @abstractmethod
    def _load(self, cid: CID) -> Buffer:
        """Return the stored (decoded, unverified) bytes; BookNotFound / CorruptBook."""

    @abstractmethod
    def _has(self, cid: CID) -> bool:
        """Whether ``cid`` is stored (without reading or verifying it)."""

    @abstractmethod
    def _delete(self, cid: CID) -> None:
        """Remove ``cid``; raise BookNotFound if absent."""

    @abstractmethod
    def _iter_unsorted(self) -> Iterable[CID]:
        """Every stored CID once, in any order (the base class sorts)."""

    @abstractmethod
    def _stat(self, cid: CID) -> tuple[int, float]:
        """(stored bytes, last-write time in POSIX seconds) of a book; BookNotFound."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """Books, logical bytes and stored bytes of the whole store."""

    # --- public API --------------------------------------------------------------------
    def put(self, data: Buffer) -> CID:
        """Store ``data`` as one book and return its CID (idempotent)."""
        if len(data) > MAX_BOOK_SIZE:
            raise BookTooLarge(f"book of {len(data)} bytes exceeds MAX_BOOK_SIZE {MAX_BOOK_SIZE}")
        cid = CID.for_book(data)
        self._store(cid, data)
        return cid

    def put_many(self, chunks: Iterable[Buffer], *, raw: bool = False) -> list[CID]:
        """:meth:`put` each chunk, in order; their CIDs (stores may queue them together).

        ``raw=True``: the caller found the chunks incompressible (e.g.
        ``pages_incompressible``); a store that compresses may store them raw without a
        zstd attempt each. Only the stored form differs; CIDs and reads do not.
        """
        with self.batch():
            return [self.put(data) for data in chunks]

    def put_pages(self, data: Buffer, page_size: int, *, raw: bool = False) -> np.ndarray:
        """Store bytes-like ``data`` cut into books of ``page_size`` bytes (the last one
        shorter when the length is not a multiple): :meth:`put_many` of those pages, with
        their CIDs as N x 40 uint8 rows. ``raw`` as for :meth:`put_many`. Stores may do it
        without a CID object per page."""
        if page_size < 1:
            raise ValueError(f"page_size must be positive, got {page_size!r}")
        mv = memoryview(data).cast("B")
        cids = self.put_many((mv[i : i + page_size] for i in range(0, len(mv), page_size)), raw=raw)
        return np.frombuffer(b"".join([c.raw for c in cids]), np.uint8).reshape(-1, CID_LEN)

    def put_bundle(self, data: Buffer) -> CID:
        """Store bundle bytes (concatenated 40-byte CIDs, optionally led by a root-metadata
        record); the depth is derived from the children. Returns the bundle CID."""
        if len(data) > MAX_BOOK_SIZE:
            raise BookTooLarge(f"bundle of {len(data)} bytes exceeds MAX_BOOK_SIZE {MAX_BOOK_SIZE}")
        cid = CID.for_bundle(data, bundle_depth(data))
        self._store(cid, data)
        return cid

    def put_raw(self, cid: CID, data: Buffer) -> CID:
        """Store ``data`` under a given CID after checking that it hashes to it.

        For copying books between stores; DAG structure is not checked here (readers do).
        """
        if not isinstance(cid, CID):
            raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
        verify_book(cid, data)
        self._store(cid, data)
        return cid

    def get(self, cid: CID) -> bytes:
        """The verified bytes of ``cid``: BookNotFound if absent, CorruptBook if they do not
        have the CID's exact length and blake3 digest."""
        if not isinstance(cid, CID):
            raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
        data = self._load(cid)
        verify_book(cid, data)
        return bytes(data) if not isinstance(data, bytes) else data

    def get_many(self, cids: Iterable[CID]) -> Iterator[bytes]:
        """Verified bytes of each CID, in order. Backends may prefetch ahead."""
        for cid in cids:
            yield self.get(cid)

    def get_into(self, cid: CID, out: memoryview) -> None:
        """Write the verified bytes of ``cid`` into ``out`` (whose length must be cid.size)."""
        if len(out) != cid.size:
            raise ValueError(f"buffer of {len(out)} B for a {cid.size} B book")
        out[:] = self.get(cid)

    def get_many_into(self, items: Iterable[tuple[CID, memoryview]]) -> None:
        """``get_into`` for each (cid, buffer) pair; backends may run them concurrently."""
        for cid, out in items:
            self.get_into(cid, out)

    def get_concat_into(self, cids: Any, out: memoryview) -> None:
        """Write the verified books named by ``cids`` (N x 40 uint8 CID rows, or their
        concatenated bytes) back to back into ``out``, whose length must be their total
        size: a blob's leaves without a CID object or a buffer per leaf. Errors as
        :meth:`get_many_into` (the first failing book in ``cids`` order is reported);
        here it is what this does, with one CID and one slice of ``out`` per book."""
        rows, starts, sizes = concat_plan(cids, out)
        mv = memoryview(out).cast("B")
        items = [
            (cid, mv[p : p + n])
            for cid, p, n in zip(cids_of(rows), starts.tolist(), sizes.tolist(), strict=True)
        ]
        try:
            self.get_many_into(items)
        finally:
            for _, part in items:
                part.release()

    def has(self, cid: CID) -> bool:
        return isinstance(cid, CID) and self._has(cid)

    def reusable(self, cid: CID) -> bool:
        """Whether a writer may name ``cid`` without putting it again (a store whose gc
        is two-phase says no for a tombstoned book, which is still readable)."""
        return self.has(cid)

    def tombstoned(self) -> frozenset[CID]:
        """Books a two-phase gc tombstoned (none here)."""
        return frozenset()

    def revive(self, cids: Iterable[CID]) -> int:
        """Store again those of ``cids`` that are tombstoned (nothing to do here)."""
        return 0

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, CID) and self._has(cid)

    def stored_size(self, cid: CID) -> int:
        """Bytes the book occupies in this store (after compression, with any header)."""
        return self._stat(cid)[0]

    def book_mtime(self, cid: CID) -> float:
        """When the book was written (POSIX seconds): gc's grace period is measured from it."""
        return self._stat(cid)[1]

    def delete(self, cid: CID) -> None:
        """Remove a book. Raises BookNotFound if it is absent (so gc notices double frees)."""
        if not isinstance(cid, CID):
            raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
        self._delete(cid)

    def __iter__(self) -> Iterator[CID]:
        return iter(sorted(self._iter_unsorted()))

    def __len__(self) -> int:
        return sum(1 for _ in self._iter_unsorted())

    def sweep(
        self,
        doomed: Iterable[CID],
        grace_s: float = DEFAULT_GC_GRACE_S,
        dry_run: bool = False,
        bar: Any = None,
        keep: Collection[CID] | None = None,
    ) -> SweepReport:
        """Remove the ``doomed`` books (gc's one call into any store).

        The caller decided they are unreachable and older than ``grace_s``; a store whose
        files hold many books (a pack store) also uses ``grace_s`` for the files it would
        delete, and ``keep`` (the books that must survive, when the caller knows them) to
        never delete a file holding one of them. Here: ``delete`` book by book. ``bar``
        (tqdm-like) advances per book.
        """
        doomed = list(doomed)
        if not dry_run:
            for cid in doomed:
                fault_point("gc.before_delete")
                self.delete(cid)
                fault_point("gc.after_delete")
                if bar is not None:
                    bar.update(1)
        return SweepReport(dry_run, len(doomed), sum(c.size for c in doomed))

    def check(self, *, read_files: bool = True, bar: Any = None) -> StoreCheck:
        """The store's own consistency beyond each book's hash (which ``get`` checks):
        nothing to check for a store that keeps one file per book."""
        return StoreCheck()

    def batch(self) -> contextlib.AbstractContextManager[BookStore]:
        """Group many puts; durable stores may defer syncing to the end of the block.

        Everything put inside the block is durable when the block exits normally.
        """
        return contextlib.nullcontext(self)
