"""Dedup-friendly, lossless storage of faiss HNSW serialisations in the CAS.

A byte-level chunker cannot dedupe two HNSW generations: every insert batch rewrites
neighbour lists all over the serialisation (docs/BENCHMARKS.md, "chunking"). This codec
parses the faiss bytes of an ``IndexHNSWFlat`` ("IHNf") or ``IndexBinaryHNSW`` ("IBHf")
into sections and stores each where it dedupes:

* ``frame`` — every byte outside the big arrays (headers, vector length prefixes, the
  HNSW scalars), kept verbatim inside the record;
* ``levels``, ``offsets``, ``codes`` (the stored vectors) — append-only under the
  engine's copy-on-write compaction, so a plain FastCDC DAG dedupes them;
* ``neighbors`` — either the full int32 array (a DAG), or, when a ``parent`` record is
  given and the new graph is the parent plus appended nodes, a *patch*: a bitmap of
  the changed fixed-size blocks of the old part, those blocks, and the appended tail.
  Patches chain to their parent's neighbours; the chain is bounded
  (:data:`MAX_PATCH_CHAIN`), and a patch larger than :data:`REBASE_FRACTION` of the
  full array is replaced by the full array.

Anything else (unknown fourcc, a parse failure, a big-endian file) is stored ``raw``:
one DAG of the whole bytes. Every form is lossless: :func:`decode_index` returns the
original bytes and checks their length and blake3 digest against the record.

The record is one small book of canonical CBOR; its layout is in docs/FORMAT.md §3.3.
Snapshot layer: reads and writes the CAS and knows the faiss byte layout, not the engine.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import blake3
import cbor2
import numpy as np

from ..cas import (
    CID,
    FINE_FANOUT,
    BookStore,
    FreshBytes,
    MalformedCID,
    blob_info,
    ingest,
    ingest_pages,
    reassemble,
)
from ..cas.dag import BlobWalk, root_params, walk_blob
from ..cas.params import MAX_BOOK_SIZE
from ..errors import OluoError
from .errors import IndexCodecError

__all__ = [
    "CODES_PAGE",
    "INDEX_RECORD_FORMAT",
    "INDEX_RECORD_VERSION",
    "MAX_PATCH_CHAIN",
    "PATCH_BLOCK",
    "REBASE_DEPTH",
    "REBASE_FRACTION",
    "IndexRecord",
    "decode_index",
    "encode_index",
    "index_books",
    "is_index_record",
    "read_index_record",
]

#: format (docs/FORMAT.md §3.3): the record's ``format`` field.
INDEX_RECORD_FORMAT = "oluo-index-record"
#: format (docs/FORMAT.md §3.3): the record version written and the only one read.
INDEX_RECORD_VERSION = 1
#: format (docs/FORMAT.md §3.3): longest chain of neighbour patches a reader follows
#: (deeper is refused).
MAX_PATCH_CHAIN = 8
#: Encoder policy: start a new full neighbour array after this many patches (each level
#: of the chain adds ~6% to load time at 100k vectors; see docs/BENCHMARKS.md).
REBASE_DEPTH = 4
#: Block size of neighbour patches, in int32 entries (encoder policy; recorded per patch).
PATCH_BLOCK = 8
#: A patch larger than this fraction of the full neighbour array re-bases the chain.
REBASE_FRACTION = 0.5
#: format (docs/FORMAT.md §3.3): the stored vectors are a paged blob of whole rows, the
#: fewest that fill this many bytes (a lab keeps its first page size, see
#: :func:`_codes_page`): a vector zeroed by an in-place delete rewrites one small page,
#: and the pages that hold no deleted vector are shared.
CODES_PAGE = 4096

_HNSW_FLAT = b"IHNf"
_HNSW_BINARY = b"IBHf"
_FLAT_STORAGE = (b"IxFI", b"IxF2", b"IxFl")
_BINARY_STORAGE = b"IBxF"
#: format (docs/FORMAT.md §3.3): the record kinds.
_KINDS = {"raw", "hnsw-flat", "hnsw-binary"}
#: format (docs/FORMAT.md §3.3): the sections of an hnsw record.
_SECTIONS = ("levels", "offsets", "neighbors", "codes")
_ITEM = {"levels": 4, "offsets": 8, "neighbors": 4, "codes": 1}
_I32 = np.dtype("<i4")


class _ParseError(OluoError):
    """The bytes are not a serialisation this codec understands (-> raw)."""


# --------------------------------------------------------------------------- parsing


class _Reader:
    def __init__(self, mv: memoryview) -> None:
        self.mv = mv
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        s = struct.Struct(fmt)
        if self.pos + s.size > len(self.mv):
            raise _ParseError(f"truncated at byte {self.pos}")
        out = s.unpack_from(self.mv, self.pos)
        self.pos += s.size
        return out

    def vector(self, item: int, unit: int | None = None) -> tuple[int, int]:
        """A faiss vector: u64 count then count * ``unit`` bytes; returns (start, nbytes)."""
        (count,) = self.take("<Q")
        nbytes = count * (unit or item)
        start = self.pos
        if nbytes % item or start + nbytes > len(self.mv):
            raise _ParseError(f"vector of {count} items at byte {start} overruns the data")
        self.pos += nbytes
        return start, nbytes


@dataclass(frozen=True)
class _Layout:
    kind: str
    ntotal: int
    spans: dict[str, tuple[int, int]]  # section -> (start, nbytes) in the serialisation
    cum_nneighbor: tuple[int, ...]
    row: int  # bytes per stored vector


def _array(mv: memoryview, span: tuple[int, int], dtype: str) -> np.ndarray:
    start, nbytes = span
    return np.frombuffer(mv[start : start + nbytes], dtype=dtype)


def _parse(mv: memoryview) -> _Layout:
    """Locate the sections of an IHNf / IBHf serialisation (faiss 1.x, little-endian)."""
    r = _Reader(mv)
    fourcc = bytes(mv[:4])
    r.pos = 4
    if fourcc == _HNSW_FLAT:
        kind = "hnsw-flat"
        d, ntotal, _, _, _, metric = r.take("<iqqq?i")
        if metric > 1:
            r.take("<f")
    elif fourcc == _HNSW_BINARY:
        kind = "hnsw-binary"
        d, code_size, ntotal, _, metric = r.take("<iiq?i")
    else:
        raise _ParseError(f"fourcc {fourcc!r} is not an HNSW index this codec splits")
    spans: dict[str, tuple[int, int]] = {}
    r.vector(8)  # assign_probas
    cum = r.vector(4)
    spans["levels"] = r.vector(4)
    spans["offsets"] = r.vector(8)
    spans["neighbors"] = r.vector(4)
    r.take("<iiiii")  # entry_point, max_level, efConstruction, efSearch, upper_beam
    sfour = bytes(r.take("<4s")[0])
    if kind == "hnsw-flat":
        if sfour not in _FLAT_STORAGE:
            raise _ParseError(f"storage fourcc {sfour!r} is not a flat index")
        sd, sn, _, _, _, smetric = r.take("<iqqq?i")
        if smetric > 1:
            r.take("<f")
        spans["codes"] = r.vector(1, unit=4)  # faiss writes flat codes as a float count
        row = 4 * d
    else:
        if sfour != _BINARY_STORAGE:
            raise _ParseError(f"storage fourcc {sfour!r} is not a binary flat index")
        sd, scode, sn, _, _ = r.take("<iiq?i")
        if scode != code_size:
            raise _ParseError("storage code size differs from the index's")
        spans["codes"] = r.vector(1)
        row = code_size
    if r.pos != len(mv):
        raise _ParseError(f"{len(mv) - r.pos} trailing bytes after the storage")
    if sd != d or sn != ntotal or ntotal < 0:
        raise _ParseError("storage header disagrees with the index header")
    levels = _array(mv, spans["levels"], "<i4")
    offsets = _array(mv, spans["offsets"], "<u8")
    if len(levels) != ntotal or len(offsets) != ntotal + 1:
        raise _ParseError("levels/offsets do not have ntotal / ntotal + 1 entries")
    if offsets[0] != 0 or int(offsets[-1]) * 4 != spans["neighbors"][1]:
        raise _ParseError("offsets do not frame the neighbour array")
    if ntotal and (np.diff(offsets.astype(np.int64)) <= 0).any():
        raise _ParseError("offsets are not increasing")
    if spans["codes"][1] != ntotal * row:
        raise _ParseError("codes do not hold ntotal vectors")
    cum_nn = tuple(int(x) for x in _array(mv, cum, "<i4"))
    return _Layout(kind, int(ntotal), spans, cum_nn, row)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class IndexRecord:
    """A decoded index record (see docs/FORMAT.md §3.3 for the CBOR layout)."""

    cid: CID
    kind: str
    length: int
    digest: bytes
    doc: dict[str, Any]

    @property
    def depth(self) -> int:
        """Patches between this record's neighbours and a full array (0 if full or raw)."""
        nb = self.doc["sections"]["neighbors"] if self.kind != "raw" else {}
        return int(nb.get("depth", 0))

    @property
    def parent(self) -> CID | None:
        """The record whose neighbours a patch applies to (None unless patched)."""
        nb = self.doc["sections"]["neighbors"] if self.kind != "raw" else {}
        if nb.get("form") == "patch":
            return CID.from_bytes(nb["parent"])
        return None

    def __repr__(self) -> str:
        extra = f", depth={self.depth}" if self.kind != "raw" else ""
        return f"IndexRecord('{self.cid.short}…', kind={self.kind!r}, length={self.length}{extra})"

    def _repr_html_(self) -> str:
        from .._html import Raw, kv_table, short_cid

        rows: list[tuple[str, object]] = [
            ("cid", Raw(f"<code>{self.cid.hex}</code>")),
            ("kind", self.kind),
            ("length", self.length),
        ]
        if self.kind != "raw":
            rows.append(("neighbour patch depth", self.depth))
        parent = self.parent
        if parent is not None:
            rows.append(("patch parent", short_cid(parent)))
        return kv_table("IndexRecord", rows)


def _bad(cid: CID, msg: str) -> IndexCodecError:
    return IndexCodecError(msg, cid)


def _need(doc: dict, key: str, typ: type | tuple, cid: CID, where: str = "record") -> Any:
    val = doc.get(key)
    if not isinstance(val, typ) or isinstance(val, bool) and typ is int:
        raise _bad(cid, f"{where} field {key!r} is missing or not {typ}")
    if typ is int and val < 0:
        raise _bad(cid, f"{where} field {key!r} is negative")
    return val


def _cid_field(doc: dict, key: str, cid: CID, where: str = "record") -> CID:
    raw = _need(doc, key, bytes, cid, where)
    try:
        return CID.from_bytes(raw)
    except MalformedCID as exc:
        raise _bad(cid, f"{where} field {key!r} is not a CID: {exc}") from None


def _looks_like_record(data: bytes) -> dict | None:
    if not data or data[0] >> 5 != 5:  # not a CBOR map: skip decoding arbitrary book bytes
        return None
    try:
        doc = cbor2.loads(data)
    except Exception:
        return None
    if isinstance(doc, dict) and doc.get("format") == INDEX_RECORD_FORMAT:
        return doc
    return None


def is_index_record(cid: CID, store: BookStore) -> bool:
    """True when ``cid`` names an index record (a book tagged "oluo-index-record"), False for
    anything else, e.g. the root of a plain DAG. BookNotFound if the book is absent."""
    if not isinstance(cid, CID):
        raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
    if not cid.is_book:
        return False
    return _looks_like_record(store.get(cid)) is not None


def read_index_record(cid: CID, store: BookStore) -> IndexRecord:
    """Fetch and validate the record ``cid`` (IndexCodecError names it if malformed)."""
    if not isinstance(cid, CID):
        raise TypeError(f"cid must be a CID, got {type(cid).__name__}")
    if not cid.is_book:
        raise _bad(cid, "a bundle is not an index record")
    doc = _looks_like_record(store.get(cid))
    if doc is None:
        raise _bad(cid, f"not canonical CBOR tagged {INDEX_RECORD_FORMAT!r}")
    if doc.get("version") != INDEX_RECORD_VERSION:
        raise _bad(
            cid,
            f"unsupported index record version {doc.get('version')!r} "
            f"(this build reads version {INDEX_RECORD_VERSION})",
        )
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise _bad(cid, f"unknown kind {kind!r}")
    length = _need(doc, "length", int, cid)
    digest = _need(doc, "blake3", bytes, cid)
    if len(digest) != 32:
        raise _bad(cid, "blake3 digest is not 32 bytes")
    if kind == "raw":
        _cid_field(doc, "blob", cid)
    else:
        _need(doc, "frame", bytes, cid)
        secs = _need(doc, "sections", dict, cid)
        if set(secs) != set(_SECTIONS):
            raise _bad(cid, f"sections must be {list(_SECTIONS)}, got {sorted(secs)}")
        for name in _SECTIONS:
            sec = _need(secs, name, dict, cid)
            _need(sec, "at", int, cid, name)
            if _need(sec, "len", int, cid, name) % _ITEM[name]:
                raise _bad(cid, f"section {name} length is not a multiple of {_ITEM[name]}")
        nb = secs["neighbors"]
        form = nb.get("form")
        if form == "full":
            _cid_field(nb, "blob", cid, "neighbors")
        elif form == "patch":
            _cid_field(nb, "blob", cid, "neighbors")
            _cid_field(nb, "parent", cid, "neighbors")
            if _need(nb, "block", int, cid, "neighbors") < 1:
                raise _bad(cid, "patch block size must be >= 1")
            _need(nb, "base_len", int, cid, "neighbors")
            depth = _need(nb, "depth", int, cid, "neighbors")
            if not 1 <= depth <= MAX_PATCH_CHAIN:
                raise _bad(cid, f"patch depth {depth} outside 1..{MAX_PATCH_CHAIN}")
        else:
            raise _bad(cid, f"unknown neighbors form {form!r}")
        for name in ("levels", "offsets", "codes"):
            _cid_field(secs[name], "blob", cid, name)
    return IndexRecord(cid, kind, length, digest, doc)


def _put_record(doc: dict, store: BookStore) -> CID:
    data = cbor2.dumps(doc, canonical=True)
    if len(data) > MAX_BOOK_SIZE:
        raise _ParseError("record does not fit one book")
    return store.put(data)


# --------------------------------------------------------------------------- encode


def _blob_into(
    cid: CID,
    store: BookStore,
    out: memoryview,
    owner: CID,
    walks: dict[CID, BlobWalk] | None = None,
) -> None:
    """Read the DAG ``cid`` straight into ``out`` (every book verified by the store);
    ``walks``: DAGs already read and checked (by :func:`_check_section_sizes`)."""
    walk = walks.get(cid) if walks is not None else None
    if walk is None:
        walk = walk_blob(cid, store)
    if walk.total_size != len(out):
        raise _bad(
            owner, f"blob {cid.hex} holds {walk.total_size} B, the record expects {len(out)}"
        )
    store.get_concat_into(walk.leaves, out)


def _neighbors_of(rec: IndexRecord, store: BookStore) -> np.ndarray:
    """The full neighbour array of a record (follows its patch chain), as a fresh array."""
    n = rec.doc["sections"]["neighbors"]["len"]
    buf = bytearray(n)
    mv = memoryview(buf)
    try:
        _neighbors_into(rec, store, mv)
    finally:
        mv.release()
    return np.frombuffer(buf, dtype=_I32)


def _block_mask(old: np.ndarray, new: np.ndarray, block: int) -> np.ndarray:
    """Per block of ``old``, whether ``new`` (same length) differs in it."""
    n = len(old)
    full = n // block
    ne = old != new
    mask = ne[: full * block].reshape(full, block).any(axis=1)
    if n % block:
        mask = np.append(mask, ne[full * block :].any())
    return mask


def _make_patch(old: np.ndarray, new: np.ndarray, block: int) -> bytes:
    """bitmap of changed blocks of the old part | those blocks | appended tail."""
    base = len(old)
    mask = _block_mask(old, new[:base], block)
    bitmap = np.packbits(mask, bitorder="little")
    full = base // block
    idx = np.flatnonzero(mask)
    partial = bool(base % block and len(idx) and idx[-1] == full)
    idx_full = idx[:-1] if partial else idx
    parts = [bitmap.tobytes(), new[: full * block].reshape(full, block)[idx_full].tobytes()]
    if partial:
        parts.append(new[full * block : base].tobytes())
    parts.append(new[base:].tobytes())
    return b"".join(parts)


def _parent_record(parent: CID | None, store: BookStore) -> IndexRecord | None:
    """The parent's index record, or None when there is none (or it is a plain DAG)."""
    if parent is None or not is_index_record(parent, store):
        return None
    return read_index_record(parent, store)


def _codes_page(layout: _Layout, prec: IndexRecord | None, store: BookStore) -> int:
    """Bytes per page of the stored vectors.

    The parent's page when its vectors are paged whole rows of this size, so that its
    unchanged pages are shared (a lab keeps the page size of its first paged record);
    otherwise the fewest whole rows that fill :data:`CODES_PAGE` bytes. A page of at least
    four 1 KiB blake3 chunks hashes about twice as fast per byte as one a little short of
    that (GloVe's 200-byte rows: 21 rows, 4,200 bytes, instead of 20), on write and on
    every verified read."""
    row = max(layout.row, 1)
    if prec is not None and prec.kind == layout.kind:
        blob = _cid_field(prec.doc["sections"]["codes"], "blob", prec.cid, "codes")
        params = root_params(blob, store)
        if params is not None and params.is_paged and params.max_size % row == 0:
            return params.max_size
    return row * max(1, -(-CODES_PAGE // row))


def _patch_parent(
    prec: IndexRecord | None, layout: _Layout, mv: memoryview, store: BookStore
) -> IndexRecord | None:
    """The parent record when the new graph is the parent plus appended nodes, else None."""
    if prec is None:
        return None
    parent = prec.cid
    if prec.kind != layout.kind or prec.doc.get("cum_nneighbor") != list(layout.cum_nneighbor):
        return None
    psecs = prec.doc["sections"]
    n_old = psecs["levels"]["len"] // 4
    if n_old > layout.ntotal or psecs["offsets"]["len"] != 8 * (n_old + 1):
        return None
    for name in ("levels", "offsets"):
        start, _ = layout.spans[name]
        old = reassemble(_cid_field(psecs[name], "blob", parent, name), store)
        if len(old) != psecs[name]["len"] or mv[start : start + len(old)] != old:
            return None
    return prec


def encode_index(
    index_bytes: bytes,
    store: BookStore,
    parent: CID | None = None,
    *,
    block: int = PATCH_BLOCK,
    max_chain: int = REBASE_DEPTH,
) -> CID:
    """Store a faiss index serialisation and return the CID of its index record.

    ``parent`` is the previous generation's index record: when the new index is the
    parent plus appended nodes (copy-on-write compaction), the neighbour array is stored
    as a patch against it (bounded chain). A ``parent`` that is not an index record
    (e.g. a plain DAG root) is ignored. Unknown bytes are stored raw. Same bytes and same
    parent give the same record CID. ``block`` is the patch block size in int32 entries
    (recorded in the patch; benchmarks vary it); ``max_chain`` (1..MAX_PATCH_CHAIN) is the
    patch depth after which the neighbours are stored in full again.
    """
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    if not isinstance(max_chain, int) or not 1 <= max_chain <= MAX_PATCH_CHAIN:
        raise ValueError(f"max_chain must be an int in 1..{MAX_PATCH_CHAIN}, got {max_chain!r}")
    if parent is not None and not isinstance(parent, CID):
        raise TypeError(f"parent must be a CID or None, got {type(parent).__name__}")
    mv = memoryview(index_bytes).cast("B")
    digest = blake3.blake3(mv, max_threads=blake3.blake3.AUTO).digest()
    head = {"format": INDEX_RECORD_FORMAT, "version": INDEX_RECORD_VERSION}
    head.update(length=len(mv), blake3=digest)
    try:
        layout = _parse(mv)
        return _encode_sections(mv, layout, head, store, parent, block, max_chain)
    except _ParseError:
        pass
    blob = ingest(mv, store)
    return store.put(cbor2.dumps(dict(head, kind="raw", blob=blob.raw), canonical=True))


def _encode_sections(
    mv: memoryview,
    layout: _Layout,
    head: dict,
    store: BookStore,
    parent: CID | None,
    block: int,
    max_chain: int,
) -> CID:
    spans = layout.spans
    order = sorted(_SECTIONS, key=lambda s: spans[s][0])
    frame, pos = [], 0
    secs: dict[str, dict] = {}
    for name in order:
        start, nbytes = spans[name]
        frame.append(mv[pos:start])
        secs[name] = {"at": start, "len": nbytes}
        pos = start + nbytes
    frame.append(mv[pos:])
    for name in ("levels", "offsets"):
        start, nbytes = spans[name]
        secs[name]["blob"] = ingest(mv[start : start + nbytes], store).raw
    parent_rec = _parent_record(parent, store)
    start, nbytes = spans["codes"]
    page = _codes_page(layout, parent_rec, store)
    secs["codes"]["blob"] = ingest_pages(
        mv[start : start + nbytes], store, page, fanout=FINE_FANOUT
    ).raw
    start, nbytes = spans["neighbors"]
    new = np.frombuffer(mv[start : start + nbytes], dtype=_I32)
    nb = secs["neighbors"]
    prec = _patch_parent(parent_rec, layout, mv, store)
    patch = None
    if prec is not None and prec.depth < max_chain:
        old = _neighbors_of(prec, store)
        patch = _make_patch(old, new, block)
        if len(patch) > REBASE_FRACTION * nbytes:
            patch = None
    if patch is not None:
        assert prec is not None
        nb.update(
            form="patch",
            parent=prec.cid.raw,
            depth=prec.depth + 1,
            block=block,
            base_len=len(old) * 4,
            blob=ingest(patch, store).raw,
        )
    else:
        nb.update(form="full", blob=ingest(new, store).raw)
    doc = dict(head, kind=layout.kind, frame=b"".join(frame), sections=secs)
    doc["cum_nneighbor"] = list(layout.cum_nneighbor)
    return _put_record(doc, store)


# --------------------------------------------------------------------------- decode


def _apply_patch(
    data: bytes, arr: np.ndarray, base: int, n: int, block: int, owner: CID | None
) -> None:
    """Apply patch bytes to ``arr[:base]`` and write their tail to ``arr[base:n]``.

    Inverse of :func:`_make_patch`; vectorised (no loop over blocks). IndexCodecError
    naming ``owner`` when the bytes do not fit the recorded lengths.
    """
    nblocks = -(-base // block)
    nbit = -(-nblocks // 8)
    if len(data) < nbit:
        raise IndexCodecError(f"patch of {len(data)} B is shorter than its {nbit} B bitmap", owner)
    mask = np.unpackbits(np.frombuffer(data, np.uint8, nbit), bitorder="little")
    if mask[nblocks:].any():
        raise IndexCodecError("patch bitmap sets bits past the last block", owner)
    idx = np.flatnonzero(mask[:nblocks])
    full = base // block
    partial = bool(base % block and len(idx) and idx[-1] == full)
    idx_full = idx[:-1] if partial else idx
    n_changed = len(idx_full) * block + (base - full * block if partial else 0)
    if len(data) != nbit + 4 * (n_changed + n - base):
        raise IndexCodecError(
            f"patch of {len(data)} B does not fit {len(idx)} changed blocks "
            f"and a tail of {n - base} entries",
            owner,
        )
    vals = np.frombuffer(data, _I32, offset=nbit)
    k = len(idx_full) * block
    arr[: full * block].reshape(full, block)[idx_full] = vals[:k].reshape(-1, block)
    if partial:
        arr[full * block : base] = vals[k:n_changed]
    arr[base:n] = vals[n_changed:]


def _neighbors_into(
    rec: IndexRecord, store: BookStore, out: memoryview, walks: dict[CID, BlobWalk] | None = None
) -> None:
    """Write the neighbour array of ``rec`` into ``out`` (its exact byte size)."""
    chain: list[IndexRecord] = []
    cur = rec
    while cur.doc["sections"]["neighbors"]["form"] == "patch":
        chain.append(cur)
        if len(chain) > MAX_PATCH_CHAIN:
            raise _bad(rec.cid, f"neighbour patch chain is deeper than {MAX_PATCH_CHAIN}")
        nb = cur.doc["sections"]["neighbors"]
        parent = read_index_record(CID.from_bytes(nb["parent"]), store)
        pnb = parent.doc["sections"].get("neighbors") if parent.kind != "raw" else None
        if pnb is None or pnb["len"] != nb["base_len"] or parent.kind != cur.kind:
            raise _bad(cur.cid, f"patch parent {parent.cid.hex} does not have its base array")
        if parent.depth != nb["depth"] - 1:
            raise _bad(cur.cid, f"patch depth {nb['depth']} but parent depth {parent.depth}")
        if nb["base_len"] > nb["len"]:
            raise _bad(cur.cid, "patch shrinks the neighbour array")
        cur = parent
    full_len = cur.doc["sections"]["neighbors"]["len"]
    if full_len > len(out):
        raise _bad(rec.cid, "neighbour chain base is longer than the array")
    _blob_into(
        CID.from_bytes(cur.doc["sections"]["neighbors"]["blob"]),
        store,
        out[:full_len],
        cur.cid,
        walks,
    )
    arr = np.frombuffer(out, dtype=_I32)
    try:
        for link in reversed(chain):
            nb = link.doc["sections"]["neighbors"]
            data = reassemble(CID.from_bytes(nb["blob"]), store)
            _apply_patch(data, arr, nb["base_len"] // 4, nb["len"] // 4, nb["block"], link.cid)
    finally:
        del arr


def decode_index(cid: CID, store: BookStore) -> bytes:
    """The original index bytes of record ``cid``, byte for byte.

    Every book is verified by the store; the output's length and blake3 digest are
    checked against the record (IndexCodecError naming ``cid`` on any mismatch). Memory:
    one output buffer, plus one patch at a time.
    """
    rec = read_index_record(cid, store)
    if rec.kind == "raw":
        out = reassemble(CID.from_bytes(rec.doc["blob"]), store)
    else:
        out = _decode_sections(rec, store)
    if len(out) != rec.length:
        raise _bad(cid, f"decoded {len(out)} B, the record says {rec.length}")
    if blake3.blake3(out, max_threads=blake3.blake3.AUTO).digest() != rec.digest:
        raise _bad(cid, "decoded bytes do not match the record's blake3 digest")
    return out


def _check_section_sizes(rec: IndexRecord, store: BookStore) -> dict[CID, BlobWalk]:
    """Refuse section lengths the record's DAGs cannot fill, before anything is allocated
    from them (a forged record could otherwise claim terabytes). Reads bundles only;
    returns the DAGs it read, for the decode to read their leaves."""
    secs = rec.doc["sections"]
    walks: dict[CID, BlobWalk] = {}

    def size_of(raw: bytes) -> int:
        cid = CID.from_bytes(raw)
        walks[cid] = walk = walks.get(cid) or walk_blob(cid, store)
        return walk.total_size

    for name in ("levels", "offsets", "codes"):
        size = size_of(secs[name]["blob"])
        if size != secs[name]["len"]:
            raise _bad(
                rec.cid, f"section {name} claims {secs[name]['len']} B, its blob holds {size}"
            )
    cur = rec
    for _ in range(MAX_PATCH_CHAIN + 1):
        nb = cur.doc["sections"]["neighbors"]
        size = size_of(nb["blob"])
        if nb["form"] == "full":
            if size != nb["len"]:
                raise _bad(cur.cid, f"neighbors claim {nb['len']} B, their blob holds {size}")
            return walks
        if nb["len"] > nb["base_len"] + size:
            raise _bad(cur.cid, f"a {size} B patch cannot grow {nb['base_len']} B to {nb['len']}")
        parent = read_index_record(CID.from_bytes(nb["parent"]), store)
        pnb = parent.doc["sections"].get("neighbors") if parent.kind != "raw" else None
        if pnb is None or pnb["len"] != nb["base_len"]:
            raise _bad(cur.cid, f"patch parent {parent.cid.hex} does not have its base array")
        cur = parent
    raise _bad(rec.cid, f"neighbour patch chain is deeper than {MAX_PATCH_CHAIN}")


def _decode_sections(rec: IndexRecord, store: BookStore) -> bytes:
    secs = rec.doc["sections"]
    frame = rec.doc["frame"]
    order = sorted(_SECTIONS, key=lambda s: secs[s]["at"])
    total = len(frame) + sum(secs[s]["len"] for s in _SECTIONS)
    if total != rec.length:
        raise _bad(rec.cid, f"frame and sections hold {total} B, the record says {rec.length}")
    walks = _check_section_sizes(rec, store)
    # one uninitialised allocation, first touched by the threads that fill it (a zero-filled
    # BytesIO cost ~80 ms of single-threaded page faults at 137 MB; see cas/_output.py)
    out = FreshBytes(total)
    view = out.view
    ok = False
    try:
        pos = fpos = 0
        for name in order:
            at, n = secs[name]["at"], secs[name]["len"]
            gap = at - pos
            if gap < 0 or fpos + gap > len(frame):
                raise _bad(rec.cid, f"section {name} at byte {at} overlaps or leaves the frame")
            view[pos:at] = frame[fpos : fpos + gap]
            fpos += gap
            part = view[at : at + n]
            try:
                if name == "neighbors":
                    _neighbors_into(rec, store, part, walks)
                else:
                    _blob_into(CID.from_bytes(secs[name]["blob"]), store, part, rec.cid, walks)
            finally:
                part.release()
            pos = at + n
        view[pos:] = frame[fpos:]
        ok = True
    finally:
        if not ok:
            out.discard()
    return out.finish()


# --------------------------------------------------------------------------- reachability


def _dag_books(cid: CID, store: BookStore) -> set[CID]:
    info = blob_info(cid, store)
    return set(info.bundles) | set(info.leaves)


def index_books(cid: CID, store: BookStore) -> set[CID]:
    """Every book that decoding record ``cid`` reads: the record, its section DAGs
    (bundles and leaves) and, for a patch, the parent records and neighbour books the
    chain needs (not the parents' other sections). For gc marking and diff sizes."""
    rec = read_index_record(cid, store)
    books = {cid}
    if rec.kind == "raw":
        return books | _dag_books(CID.from_bytes(rec.doc["blob"]), store)
    for name in ("levels", "offsets", "codes"):
        books |= _dag_books(CID.from_bytes(rec.doc["sections"][name]["blob"]), store)
    cur = rec
    for _ in range(MAX_PATCH_CHAIN + 1):
        nb = cur.doc["sections"]["neighbors"]
        books |= _dag_books(CID.from_bytes(nb["blob"]), store)
        if nb["form"] == "full":
            return books
        parent = CID.from_bytes(nb["parent"])
        books.add(parent)
        cur = read_index_record(parent, store)
        if cur.kind == "raw":
            raise _bad(rec.cid, f"patch parent {parent.hex} is a raw record")
    raise _bad(rec.cid, f"neighbour patch chain is deeper than {MAX_PATCH_CHAIN}")
