"""Chunked blobs: FastCDC chunks -> books -> bundles of child CIDs -> one root.

``ingest`` turns bytes or a binary stream into a root CID; ``reassemble``, ``iter_chunks``
and ``open_blob`` read it back. Readers verify every book (the store re-hashes), check
each bundle's depth header against its children, and compare the root's recorded total
size and chunk count with the exact sizes carried by the leaf CIDs *before* any leaf is
fetched, so a lying root fails fast and nothing is ever preallocated from a claim.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pyfastcdc.cy import FastCDC

from oluo_lab.cas._bookfile import pages_incompressible
from oluo_lab.cas._output import FreshBytes
from oluo_lab.cas.base import BookStore
from oluo_lab.cas.cid import (
    CID,
    CID_VERSION,
    KIND_BOOK,
    KIND_META,
    check_concat,
    cid_sizes,
    cids_of,
)
from oluo_lab.cas.errors import (
    DagDepthExceeded,
    DagSizeMismatch,
    MalformedBundle,
    MalformedCID,
    UnsupportedChunker,
)
from oluo_lab.cas.params import (
    CHUNK_PARAMS,
    CID_LEN,
    FANOUT,
    KNOWN_CHUNK_PARAMS,
    MAX_DEPTH,
    ChunkParams,
)

#: format (docs/FORMAT.md §1.2): the root-metadata record: version, kind, 2 zero,
#: total_size u64, chunk_count u64, chunker min/avg/max u32, nc u8, 7 zero.
_META = struct.Struct(">BBHQQIIIB7s")
assert _META.size == CID_LEN


@dataclass(frozen=True)
class RootMeta:
    """The 40-byte record that leads every root bundle."""

    total_size: int
    chunk_count: int
    params: ChunkParams

    def encode(self) -> bytes:
        p = self.params
        return _META.pack(
            CID_VERSION,
            KIND_META,
            0,
            self.total_size,
            self.chunk_count,
            p.min_size,
            p.avg_size,
            p.max_size,
            p.normalized_chunking,
            bytes(7),
        )

    @classmethod
    def decode(cls, raw: bytes | memoryview, cid: CID) -> RootMeta:
        version, kind, zero, total, count, mn, avg, mx, nc, tail = _META.unpack(raw)
        if version != CID_VERSION or kind != KIND_META or zero or any(tail):
            raise MalformedBundle(f"root {cid.hex} has a malformed metadata record", cid)
        return cls(total, count, ChunkParams(mn, avg, mx, nc, 0))


@dataclass(frozen=True)
class BlobInfo:
    """What a root says about its blob, checked against its leaves (no leaf data read)."""

    cid: CID
    total_size: int
    chunk_count: int
    depth: int
    params: ChunkParams | None  # None for a bare book
    bundles: tuple[CID, ...]
    leaves: tuple[CID, ...]

    def __repr__(self) -> str:
        return (
            f"BlobInfo({self.cid!r}, total_size={self.total_size}, "
            f"chunk_count={self.chunk_count}, depth={self.depth})"
        )

    def _repr_html_(self) -> str:
        from oluo_lab._html import Raw, details, fmt_bytes, kv_table, short_cid, table

        p = self.params
        chunker = (
            "bare book"
            if p is None
            else f"FastCDC min {p.min_size} / avg {p.avg_size} / max {p.max_size}"
        )
        out = kv_table(
            "BlobInfo",
            [
                ("cid", short_cid(self.cid)),
                ("total size", f"{self.total_size} B ({fmt_bytes(self.total_size)})"),
                ("chunks", self.chunk_count),
                ("depth", self.depth),
                ("chunker", chunker),
                ("bundles", len(self.bundles)),
            ],
        )
        if self.leaves:
            rows = [[i, short_cid(c), c.size] for i, c in enumerate(self.leaves[:100])]
            if len(self.leaves) > 100:
                rows.append(["…", f"{len(self.leaves) - 100} more", ""])
            leaves = table(None, ["#", "leaf", "bytes"], rows)
            out += details(f"{len(self.leaves)} leaves", leaves)
        return Raw(out)


@lru_cache(maxsize=8)
def _chunker(params: ChunkParams) -> FastCDC:
    return FastCDC(
        params.avg_size,
        min_size=params.min_size,
        max_size=params.max_size,
        normalized_chunking=params.normalized_chunking,
        seed=params.seed,
    )


def _cut(data: Any, params: ChunkParams) -> tuple[Iterator[Any], Any]:
    """Chunk iterator for a buffer, a binary file object or a path; plus a file to close."""
    cdc = _chunker(params)
    if isinstance(data, os.PathLike):
        f = open(data, "rb", buffering=0)  # noqa: SIM115 - closed by ingest
        return cdc.cut_stream(f), f
    if isinstance(data, str):
        raise TypeError(
            "ingest takes bytes-like data or a binary file; pass a pathlib.Path for a path"
        )
    if hasattr(data, "readinto") or hasattr(data, "read"):
        return cdc.cut_stream(data), None
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"cannot ingest {type(data).__name__}: not bytes-like or a file") from None
    if not mv.c_contiguous:
        raise TypeError("ingest needs a C-contiguous buffer")
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return cdc.cut_buf(mv), None


def _join(cids: Sequence[CID] | np.ndarray) -> bytes:
    """The 40-byte forms of CIDs, or of N x 40 CID rows, back to back."""
    if isinstance(cids, np.ndarray):
        return cids.tobytes()
    return b"".join(c.raw for c in cids)


def build_tree(
    leaves: Sequence[CID] | np.ndarray, store: BookStore, meta: RootMeta, fanout: int = FANOUT
) -> CID:
    """Store left-packed bundle levels over ``leaves`` (CIDs, or their N x 40 rows) and a
    root led by ``meta``.

    ``fanout`` is the format constant; tests pass a small one to build deep trees cheaply.
    """
    if fanout < 2 or fanout > FANOUT:
        raise ValueError(f"fanout must be in 2..{FANOUT}")
    level = leaves
    while len(level) > fanout - 1:  # the root needs one slot for the metadata record
        level = [
            store.put_bundle(_join(level[i : i + fanout])) for i in range(0, len(level), fanout)
        ]
    return store.put_bundle(meta.encode() + _join(level))


def ingest(
    data: Any,
    store: BookStore,
    *,
    params: ChunkParams = CHUNK_PARAMS,
    fanout: int = FANOUT,
) -> CID:
    """Chunk ``data`` (bytes-like, binary file object, or ``pathlib.Path``) into ``store``.

    Returns a book CID when the data is at most one chunk (including empty data), else the
    root bundle CID. Files are streamed: memory stays bounded by a few chunks. Same bytes
    and same format constants always give the same CID. Durable when it returns.

    ``params``: the chunker, one of :data:`KNOWN_CHUNK_PARAMS` (``FINE_CHUNK_PARAMS`` for
    payloads that change in many scattered places at once). ``fanout``: entries per
    bundle (at most :data:`FANOUT`); smaller bundles make a scattered change rewrite
    less of the tree, at the cost of more bundles.
    """
    if params not in KNOWN_CHUNK_PARAMS:
        raise ValueError(f"unknown chunker {params!r}")
    chunks, owned = _cut(data, params)
    try:
        with store.batch():
            leaves = store.put_many(c.data for c in chunks)
            return _blob_root(leaves, sum(c.size for c in leaves), store, params, fanout)
    finally:
        if owned is not None:
            owned.close()


def ingest_pages(data: Any, store: BookStore, page_size: int, *, fanout: int = FANOUT) -> CID:
    """Store bytes-like ``data`` as a *paged* blob: leaves of exactly ``page_size`` bytes
    (the last one shorter if the length is not a multiple). For arrays of fixed-size rows
    changed in place (a page of whole rows changes only when one of its rows does);
    ``fanout`` as for :func:`ingest`. Read back by :func:`reassemble` like any blob.
    Pages that a probe of the blob finds incompressible (``pages_incompressible``) are
    stored raw without a zstd attempt each."""
    params = ChunkParams.paged(page_size)
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise TypeError("ingest_pages needs a C-contiguous buffer")
    mv = mv.cast("B") if (mv.format != "B" or mv.ndim != 1) else mv
    with store.batch():
        rows = store.put_pages(mv, page_size, raw=pages_incompressible(mv, page_size))
        return _blob_root(rows, len(mv), store, params, fanout)


def _blob_root(
    leaves: Sequence[CID] | np.ndarray,
    total: int,
    store: BookStore,
    params: ChunkParams,
    fanout: int,
) -> CID:
    """The CID of a blob of ``total`` bytes whose stored leaves are ``leaves``: the empty
    book, the one leaf, or the root of a tree over them."""
    if len(leaves) == 0:
        return store.put(b"")
    if len(leaves) == 1:
        return CID.from_bytes(_join(leaves[:1]))
    return build_tree(leaves, store, RootMeta(total, len(leaves), params), fanout)


def _parse_bundle(cid: CID, raw: bytes, root: bool) -> tuple[RootMeta | None, np.ndarray]:
    """The root metadata (``root``) and the children of a bundle, as N x 40 CID rows."""
    if len(raw) % CID_LEN:
        raise MalformedBundle(f"bundle {cid.hex} is {len(raw)} B, not a multiple of {CID_LEN}", cid)
    mv = memoryview(raw)
    meta = None
    start = 0
    if root:
        if len(raw) < CID_LEN or raw[1] != KIND_META:
            raise MalformedBundle(f"root bundle {cid.hex} lacks its metadata record", cid)
        meta = RootMeta.decode(mv[:CID_LEN], cid)
        start = CID_LEN
    try:
        children = check_concat(mv[start:])
    except MalformedCID as exc:
        entry = start // CID_LEN + exc.index  # type: ignore[attr-defined]
        raise MalformedBundle(f"bundle {cid.hex} entry {entry} is not a CID: {exc}", cid) from None
    if not len(children):
        raise MalformedBundle(f"bundle {cid.hex} has no children", cid)
    deepest = int(children[:, 2].max())
    if deepest + 1 != cid.depth:
        raise MalformedBundle(
            f"bundle {cid.hex} claims depth {cid.depth} but its deepest child has depth {deepest}",
            cid,
        )
    return meta, children


def _parse_level(bundles: list[CID], data: bytes) -> list[np.ndarray]:
    """The children of non-root ``bundles`` whose bytes are ``data``, back to back:
    checked all at once, and bundle by bundle only to name the first bad one."""
    counts = [c.size // CID_LEN for c in bundles]
    starts = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    with contextlib.suppress(MalformedCID):
        rows = check_concat(data)
        deepest = np.maximum.reduceat(rows[:, 2], starts)
        if (deepest.astype(np.int64) + 1 == [c.depth for c in bundles]).all():
            return np.split(rows, starts[1:])
    out = []
    for c, start in zip(bundles, starts.tolist(), strict=True):
        raw = data[start * CID_LEN : start * CID_LEN + c.size]
        out.append(_parse_bundle(c, raw, root=False)[1])
    raise AssertionError("level check disagrees with the bundle check")  # pragma: no cover


def _rows(cids: list[CID]) -> np.ndarray:
    return np.frombuffer(b"".join([c.raw for c in cids]), np.uint8).reshape(-1, CID_LEN)


def _sub_bundles(rows: np.ndarray) -> list[CID]:
    return cids_of(rows[rows[:, 1] != KIND_BOOK])


@dataclass(frozen=True)
class BlobWalk:
    """A blob's checked DAG: root metadata (None for a bare book), bundles depth-first,
    and the leaf CIDs in order as N x 40 rows (no CID objects: a blob has many leaves)."""

    meta: RootMeta | None
    bundles: list[CID]
    leaves: np.ndarray

    @property
    def total_size(self) -> int:
        return int(cid_sizes(self.leaves).sum())


#: bundle bytes read per request while walking a level: a root may name up to ~26,000
#: bundles of up to MAX_BOOK_SIZE each, so a level is never allocated whole from their
#: claimed sizes; a lying root fails at its first missing or bad bundle instead.
_LEVEL_READ = 64 << 20


def _read_slices(bundles: list[CID]) -> Iterator[list[CID]]:
    """``bundles`` in order, cut into runs of at most ``_LEVEL_READ`` claimed bytes."""
    start, size = 0, 0
    for i, c in enumerate(bundles):
        if size and size + c.size > _LEVEL_READ:
            yield bundles[start:i]
            start, size = i, 0
        size += c.size
    yield bundles[start:]


def walk_blob(cid: CID, store: BookStore) -> BlobWalk:
    """Read and check the bundles of a blob (never its leaves)."""
    if not isinstance(cid, CID):
        raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
    if cid.is_book:
        return BlobWalk(None, [], np.frombuffer(cid.raw, np.uint8).reshape(1, CID_LEN))
    meta, children = _parse_bundle(cid, store.get(cid), root=True)
    assert meta is not None
    if meta.params not in KNOWN_CHUNK_PARAMS and not meta.params.is_paged:
        raise UnsupportedChunker(f"root {cid.hex} records unknown chunker {meta.params!r}", cid)
    # the bundles are read one level at a time, each level with one get_concat_into (a few
    # coalesced reads: one request per bundle would be hundreds of GETs on an object store)
    parsed: dict[CID, np.ndarray] = {cid: children}
    frontier = _sub_bundles(children)
    level = 1
    while frontier:
        if level >= MAX_DEPTH:
            raise DagDepthExceeded(f"DAG under {cid.hex} is deeper than {MAX_DEPTH}", frontier[0])
        todo = [c for c in dict.fromkeys(frontier) if c not in parsed]
        if not todo:  # each was read at a level nearer the root already
            break
        kids: list[np.ndarray] = []
        for part in _read_slices(todo):
            buf = bytearray(sum(c.size for c in part))
            store.get_concat_into(_rows(part), memoryview(buf))
            kids += _parse_level(part, bytes(buf))
        parsed.update(zip(todo, kids, strict=True))
        frontier = _sub_bundles(np.concatenate(kids))
        level += 1
    bundles = [cid]
    pieces: list[np.ndarray] = []

    def collect(kids: np.ndarray) -> None:  # depth-first, in order
        start = 0
        for i in np.flatnonzero(kids[:, 1] != KIND_BOOK).tolist():
            pieces.append(kids[start:i])
            child = CID._unchecked(kids[i].tobytes())
            bundles.append(child)
            collect(parsed[child])
            start = i + 1
        pieces.append(kids[start:])

    collect(children)
    leaves = np.concatenate(pieces)
    sizes = cid_sizes(leaves)
    total = int(sizes.sum())
    if total != meta.total_size or len(leaves) != meta.chunk_count:
        raise DagSizeMismatch(
            f"root {cid.hex} records {meta.total_size} B in {meta.chunk_count} chunks, "
            f"its leaves hold {total} B in {len(leaves)} chunks",
            cid,
        )
    if meta.params.is_paged:
        page = meta.params.max_size
        if (sizes[:-1] != page).any() or not 0 < sizes[-1] <= page:
            raise DagSizeMismatch(
                f"paged root {cid.hex} has a leaf that is not a {page} B page", cid
            )
    return BlobWalk(meta, bundles, leaves)


def root_params(cid: CID, store: BookStore) -> ChunkParams | None:
    """The chunker a blob's root records, reading the root bundle only (None for a blob of
    one book, which has no root)."""
    if not isinstance(cid, CID):
        raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
    if cid.is_book:
        return None
    meta, _ = _parse_bundle(cid, store.get(cid), root=True)
    assert meta is not None
    return meta.params


def blob_info(cid: CID, store: BookStore) -> BlobInfo:
    """Read and check the bundles of a blob (never its leaves) and describe it."""
    walk = walk_blob(cid, store)
    if walk.meta is None:
        return BlobInfo(cid, cid.size, 1, 0, None, (), (cid,))
    leaves = tuple(cids_of(walk.leaves))
    return BlobInfo(
        cid,
        walk.meta.total_size,
        len(leaves),
        cid.depth,
        walk.meta.params,
        tuple(walk.bundles),
        leaves,
    )


def iter_chunks(cid: CID, store: BookStore) -> Iterator[bytes]:
    """Verified chunk bytes of a blob in order (the DAG is checked before the first one)."""
    info = blob_info(cid, store)
    return store.get_many(info.leaves)


def reassemble(cid: CID, store: BookStore) -> bytes:
    """The whole blob as bytes; every book is verified. The result is allocated once, from the
    verified leaf sizes, and books are decoded straight into it (raw books are read into it
    from their files). Use ``open_blob``/``iter_chunks`` to stream large blobs instead."""
    walk = walk_blob(cid, store)
    if walk.meta is None:
        return store.get(cid)
    # One allocation of the verified total, filled in place by the store (see _output.py).
    out = FreshBytes(walk.total_size)
    ok = False
    try:
        store.get_concat_into(walk.leaves, out.view)
        ok = True
    finally:
        if not ok:
            out.discard()
    return out.finish()


class BlobReader(io.RawIOBase):
    """Read-only, seekable file over a blob, fetching (and verifying) one book at a time."""

    def __init__(self, info: BlobInfo, store: BookStore) -> None:
        super().__init__()
        self._info = info
        self._store = store
        self._starts: list[int] = []
        pos = 0
        for leaf in info.leaves:
            self._starts.append(pos)
            pos += leaf.size
        self._pos = 0
        self._idx = -1  # index of the chunk held in self._buf
        self._buf = b""
        self._stream: Iterator[bytes] | None = None
        self._next_idx = 0

    @property
    def size(self) -> int:
        return self._info.total_size

    @property
    def cid(self) -> CID:
        return self._info.cid

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def _chunk_for(self, pos: int) -> int:
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _load(self, idx: int) -> None:
        if idx != self._next_idx or self._stream is None:
            self._close_stream()
            self._stream = self._store.get_many(self._info.leaves[idx:])
        self._buf = next(self._stream)
        self._idx = idx
        self._next_idx = idx + 1

    def _close_stream(self) -> None:
        if self._stream is not None:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
            self._stream = None

    def _ensure(self) -> int:
        """Load the chunk holding ``self._pos``; return the offset of pos inside it."""
        idx = self._idx
        if idx < 0 or not self._starts[idx] <= self._pos < self._starts[idx] + len(self._buf):
            self._load(self._chunk_for(self._pos))  # largest start <= pos skips empty leaves
        return self._pos - self._starts[self._idx]

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed BlobReader")
        if self._pos >= self.size:
            return 0
        off = self._ensure()
        out = memoryview(b).cast("B")
        n = min(len(out), len(self._buf) - off)
        out[:n] = self._buf[off : off + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all remaining if negative); short only at end of blob."""
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(max(0, min(size, self.size - self._pos)))
        mv = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.readinto(mv[got:])
            if not n:
                break
            got += n
        del mv
        return bytes(buf[:got]) if got < len(buf) else bytes(buf)

    def readall(self) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed BlobReader")
        parts = []
        while self._pos < self.size:
            off = self._ensure()
            piece = self._buf[off:] if off else self._buf
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def close(self) -> None:
        self._close_stream()
        self._buf = b""
        super().close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pos={self._pos}"
        return f"BlobReader({self._info.cid!r}, size={self.size}, {state})"


def open_blob(cid: CID, store: BookStore) -> BlobReader:
    """A file-like reader over a blob (checked like ``reassemble`` before the first read)."""
    return BlobReader(blob_info(cid, store), store)
