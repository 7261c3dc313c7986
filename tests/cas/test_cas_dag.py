"""DAG ingest / reassemble / streaming readers, determinism, and refusal of bad DAGs."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oluo_lab.cas import (
    CHUNK_PARAMS,
    CID,
    FINE_CHUNK_PARAMS,
    FINE_FANOUT,
    MAX_DEPTH,
    BookNotFound,
    ChunkParams,
    CorruptBook,
    DagDepthExceeded,
    DagSizeMismatch,
    MalformedBundle,
    MemoryStore,
    PackStore,
    RootMeta,
    UnsupportedChunker,
    blob_info,
    build_tree,
    ingest,
    ingest_pages,
    iter_chunks,
    open_blob,
    reassemble,
)
from oluo_lab.cas import open as cas_open
from oluo_lab.cas.dag import root_params, walk_blob
from oluo_lab.testing.store import xof

REPO = Path(__file__).resolve().parents[2]
P = CHUNK_PARAMS


def check_all_readers(data: bytes, store=None) -> CID:
    store = store or MemoryStore()
    root = ingest(data, store)
    assert reassemble(root, store) == data
    assert b"".join(iter_chunks(root, store)) == data
    with open_blob(root, store) as f:
        assert f.read() == data
    return root


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=700_000))
def test_round_trip_arbitrary_bytes(data):
    check_all_readers(data)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 3_000_000), st.integers(0, 2**32))
def test_round_trip_sizes(n, seed):
    check_all_readers(xof(seed.to_bytes(5, "big"), n))


@pytest.mark.parametrize(
    "n",
    [0, 1, P.min_size - 1, P.min_size, P.min_size + 1, P.avg_size, P.max_size - 1, P.max_size]
    + [P.max_size + 1, 2 * P.max_size, 2 * P.max_size + 1],
)
def test_round_trip_at_chunk_bounds(n):
    data = xof(b"bounds", n)
    root = check_all_readers(data)
    info = blob_info(root, MemoryStore()) if root.kind == "book" else None
    if n <= P.min_size:
        assert root.kind == "book" and root.size == n  # one chunk: a bare book
        assert info is not None and info.chunk_count == 1


def test_multi_mb_and_compressible():
    data = xof(b"multi", 6_000_000) + bytes(4_000_000) + b"abc" * 1_000_000
    root = check_all_readers(data)
    assert root.kind == "bundle" and root.depth == 1


def test_zero_runs_dedupe():
    store = MemoryStore()
    root = ingest(bytes(8 * P.max_size), store)
    info = blob_info(root, store)
    assert info.chunk_count == 8 and len(set(info.leaves)) == 1
    assert len(store) == 2  # one leaf book + the root


def test_small_data_is_a_bare_book():
    store = MemoryStore()
    assert ingest(b"", store) == CID.for_book(b"")
    assert ingest(b"hello", store) == CID.for_book(b"hello")
    assert reassemble(CID.for_book(b""), store) == b""


def test_root_records_size_count_params():
    store = MemoryStore()
    data = xof(b"meta", 2_000_000)
    root = ingest(data, store)
    meta = RootMeta.decode(store.get(root)[:40], root)
    info = blob_info(root, store)
    assert meta.total_size == len(data) == info.total_size
    assert meta.chunk_count == info.chunk_count == len(info.leaves)
    assert meta.params == CHUNK_PARAMS
    assert all(P.min_size <= c.size <= P.max_size for c in info.leaves[:-1])


def test_input_kinds_agree(tmp_path):
    data = xof(b"kinds", 1_500_000)
    store = MemoryStore()
    root = ingest(data, store)
    assert ingest(bytearray(data), store) == root
    assert ingest(memoryview(data), store) == root
    assert ingest(io.BytesIO(data), store) == root
    p = tmp_path / "blob.bin"
    p.write_bytes(data)
    assert ingest(p, store) == root
    with p.open("rb") as f:
        assert ingest(f, store) == root
    arr = np.frombuffer(data[: 4 * 300_000], dtype=np.float32).reshape(1000, 300)
    assert reassemble(ingest(arr, store), store) == arr.tobytes()
    with pytest.raises(TypeError):
        ingest(str(p), store)
    with pytest.raises(TypeError):
        ingest(12345, store)
    with pytest.raises(TypeError):
        ingest(arr[:, ::2], store)


def test_determinism_across_processes():
    data = xof(b"oluo", 3_000_000)
    here = ingest(data, MemoryStore())
    code = (
        f"import sys, blake3; sys.path.insert(0, {str(REPO)!r})\n"
        "from oluo_lab.cas import MemoryStore, ingest\n"
        "print(ingest(blake3.blake3(b'oluo').digest(length=3_000_000), MemoryStore()).hex)\n"
    )
    roots = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert roots == {here.hex}


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_open_seek_read_matches_slices(d):
    data = xof(b"seek", 1_200_000)
    store = MemoryStore()
    root = ingest(data, store)
    with cas_open(root, store) as f:
        assert f.seekable() and f.readable() and f.size == len(data)
        for _ in range(5):
            pos = d.draw(st.integers(0, len(data) + 10))
            n = d.draw(st.integers(0, 400_000))
            assert f.seek(pos) == pos and f.tell() == pos
            assert f.read(n) == data[pos : pos + n]
        f.seek(-7, io.SEEK_END)
        assert f.read() == data[-7:]
        f.seek(0)
        buf = bytearray(100)
        assert f.readinto(buf) == 100 and bytes(buf) == data[:100]
    assert f.closed and "closed" in repr(f)


def test_deep_trees_round_trip():
    data = xof(b"deep", 2_000_000)
    store = MemoryStore()
    info = blob_info(ingest(data, store), store)
    meta = RootMeta(info.total_size, info.chunk_count, CHUNK_PARAMS)
    for fanout in (2, 3, 4):
        n, depth = len(info.leaves), 1
        while n > fanout - 1:  # the root keeps one slot for the metadata record
            n, depth = -(-n // fanout), depth + 1
        root = build_tree(list(info.leaves), store, meta, fanout=fanout)
        assert root.depth == depth >= 3
        assert reassemble(root, store) == data
        assert b"".join(iter_chunks(root, store)) == data
        assert len(blob_info(root, store).bundles) > 1


# --- refusal of bad DAGs -------------------------------------------------------------------
def leaves_of(store, n=3):
    return [store.put(bytes([i]) * (1000 + i)) for i in range(n)]


def meta_for(leaves, **kw):
    total = kw.pop("total", sum(c.size for c in leaves))
    count = kw.pop("count", len(leaves))
    return RootMeta(total, count, kw.pop("params", CHUNK_PARAMS)).encode()


def join(cids):
    return b"".join(c.raw for c in cids)


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.book_reads = 0

    def get(self, cid):
        self.book_reads += cid.kind == "book"
        return super().get(cid)


def test_size_mismatch_fails_before_reading_leaves():
    store = CountingStore()
    leaves = leaves_of(store)
    for bad in ({"total": 1 << 40}, {"total": 3000}, {"count": 4}):
        root = store.put_bundle(meta_for(leaves, **bad) + join(leaves))
        for reader in (reassemble, blob_info, iter_chunks, open_blob):
            with pytest.raises(DagSizeMismatch) as ei:
                reader(root, store)
            assert ei.value.cid == root and root.hex in str(ei.value)
    assert store.book_reads == 0
    good = store.put_bundle(meta_for(leaves) + join(leaves))
    assert reassemble(good, store) == b"".join(bytes([i]) * (1000 + i) for i in range(3))


def test_unsupported_chunker():
    store = MemoryStore()
    leaves = leaves_of(store)
    other = ChunkParams(4096, 16384, 65536, 1)
    root = store.put_bundle(meta_for(leaves, params=other) + join(leaves))
    with pytest.raises(UnsupportedChunker) as ei:
        reassemble(root, store)
    assert ei.value.cid == root


def test_root_without_meta_and_meta_in_inner_bundle():
    store = MemoryStore()
    leaves = leaves_of(store)
    no_meta = store.put_bundle(join(leaves))
    with pytest.raises(MalformedBundle) as ei:
        reassemble(no_meta, store)
    assert ei.value.cid == no_meta
    inner = store.put_raw(
        CID.for_bundle(meta_for(leaves) + join(leaves), 1), meta_for(leaves) + join(leaves)
    )
    outer = store.put_bundle(meta_for(leaves) + inner.raw)
    with pytest.raises(MalformedBundle) as ei:
        reassemble(outer, store)
    assert ei.value.cid == inner


def test_depth_header_disagreeing_with_children():
    store = MemoryStore()
    leaves = leaves_of(store)
    body = meta_for(leaves) + join(leaves)
    liar = store.put_raw(CID.for_bundle(body, 3), body)  # books under a "depth 3" bundle
    with pytest.raises(MalformedBundle) as ei:
        reassemble(liar, store)
    assert ei.value.cid == liar and "depth" in str(ei.value)


def test_bundle_not_whole_cids():
    store = MemoryStore()
    leaves = leaves_of(store)
    with pytest.raises(MalformedBundle):
        store.put_bundle(meta_for(leaves) + join(leaves) + b"\x00" * 7)
    # an entry that is 40 bytes but not a valid CID, under a valid hash
    body = meta_for(leaves) + join(leaves[:2]) + b"\x09" * 40
    cid = store.put_raw(CID.for_bundle(body, 1), body)
    with pytest.raises(MalformedBundle) as ei:
        reassemble(cid, store)
    assert ei.value.cid == cid


def test_depth_beyond_limit_refused():
    store = MemoryStore()
    node = store.put(b"leaf")
    for _ in range(MAX_DEPTH):
        node = store.put_bundle(node.raw)
    assert node.depth == MAX_DEPTH
    with pytest.raises(DagDepthExceeded):
        store.put_bundle(node.raw)
    with pytest.raises(DagDepthExceeded):
        store.put_bundle(RootMeta(4, 1, CHUNK_PARAMS).encode() + node.raw)
    root = store.put_bundle(RootMeta(4, 1, CHUNK_PARAMS).encode() + store.put(b"leaf").raw)
    assert reassemble(root, store) == b"leaf"


def test_missing_and_corrupt_leaves_are_named():
    store = MemoryStore()
    root = ingest(xof(b"named", 900_000), store)
    info = blob_info(root, store)
    victim = info.leaves[2]
    good = store._books[victim]
    store._books[victim] = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(CorruptBook) as ei:
        reassemble(root, store)
    assert ei.value.cid == victim
    del store._books[victim]
    for reader in (
        reassemble,
        lambda r, s: list(iter_chunks(r, s)),
        lambda r, s: open_blob(r, s).read(),
    ):
        with pytest.raises(BookNotFound) as ei:
            reader(root, store)
        assert ei.value.cid == victim
    with pytest.raises(TypeError):
        reassemble(root.hex, store)


# --- fine and paged blobs ------------------------------------------------------------------
def test_fine_blob_round_trips_and_records_its_chunker():
    data = xof(b"fine", 300_000)
    store = MemoryStore()
    root = ingest(data, store, params=FINE_CHUNK_PARAMS, fanout=FINE_FANOUT)
    info = blob_info(root, store)
    assert info.params == FINE_CHUNK_PARAMS
    assert reassemble(root, store) == data
    assert max(c.size for c in info.leaves) <= FINE_CHUNK_PARAMS.max_size
    assert len(info.leaves) > FINE_FANOUT and root.depth == 2  # inner bundles needed
    assert all(b.size <= FINE_FANOUT * 40 for b in info.bundles[1:])
    # a scattered edit rewrites few of the fine leaves
    edited = bytearray(data)
    edited[150_000] ^= 1
    info2 = blob_info(ingest(bytes(edited), store, params=FINE_CHUNK_PARAMS), store)
    assert len(set(info2.leaves) - set(info.leaves)) <= 2


def test_paged_blob_has_fixed_leaves_and_changes_page_by_page():
    rows = np.arange(5000 * 50, dtype=np.float32).reshape(5000, 50)
    page = 200 * 10
    store = MemoryStore()
    root = ingest_pages(rows, store, page, fanout=FINE_FANOUT)
    info = blob_info(root, store)
    assert info.params == ChunkParams.paged(page) and info.params.is_paged
    assert [c.size for c in info.leaves] == [page] * 500
    assert reassemble(root, store) == rows.tobytes()
    rows[1234] = 0  # one row zeroed: one page differs, nothing else
    info2 = blob_info(ingest_pages(rows, store, page, fanout=FINE_FANOUT), store)
    assert sum(a != b for a, b in zip(info.leaves, info2.leaves, strict=True)) == 1
    # a short tail page; the empty and one-page blobs are plain books
    tail = ingest_pages(rows.tobytes()[: page * 3 + 8], store, page)
    assert [c.size for c in blob_info(tail, store).leaves] == [page, page, page, 8]
    assert ingest_pages(b"", store, page) == store.put(b"")
    assert ingest_pages(b"abc", store, page) == store.put(b"abc")
    assert repr(ChunkParams.paged(page)) == "ChunkParams(page=2000)"
    # the root alone names the chunker; a one-book blob has no root
    assert root_params(root, store) == ChunkParams.paged(page)
    assert root_params(ingest(bytes(300_000), store), store) == CHUNK_PARAMS
    assert root_params(tail, store) == ChunkParams.paged(page)
    assert root_params(ingest_pages(b"abc", store, page), store) is None


def test_paged_blob_of_incompressible_pages_is_put_raw():
    asked = []

    class Spy(MemoryStore):
        def put_many(self, chunks, *, raw=False):
            asked.append(raw)
            return super().put_many(chunks, raw=raw)

    rng = np.random.default_rng(5)
    floats = rng.standard_normal((5000, 50), dtype=np.float32)
    for rows, raw in ((floats, True), (np.zeros_like(floats), False), (floats[:10], False)):
        store = Spy()
        asked.clear()
        root = ingest_pages(rows, store, 2000)
        assert asked == [raw] and reassemble(root, store) == rows.tobytes()


def test_paged_root_with_a_wrong_page_is_refused():
    store = MemoryStore()
    leaves = [store.put(b"a" * 100), store.put(b"b" * 99), store.put(b"c" * 100)]
    root = store.put_bundle(meta_for(leaves, params=ChunkParams.paged(100)) + join(leaves))
    with pytest.raises(DagSizeMismatch, match="not a 100 B page") as e:
        reassemble(root, store)
    assert e.value.cid == root
    # min == avg == max with normalized chunking is no paged blob and no known chunker
    odd = store.put_bundle(meta_for(leaves, params=ChunkParams(100, 100, 100, 1)) + join(leaves))
    with pytest.raises(UnsupportedChunker):
        blob_info(odd, store)


def test_ingest_refuses_unknown_chunkers_and_pages():
    with pytest.raises(ValueError, match="unknown chunker"):
        ingest(b"x", MemoryStore(), params=ChunkParams(1, 2, 3))
    with pytest.raises(ValueError, match="page size"):
        ingest_pages(b"x", MemoryStore(), 0)


def test_paged_blob_is_the_same_dag_in_every_store(tmp_path):
    rng = np.random.default_rng(9)
    for rows_n in (5000, 40, 3):  # deep, one bundle level, a root only
        rows = rng.standard_normal((rows_n, 50), dtype=np.float32)
        data = rows.tobytes() + b"odd"
        mem, packs = MemoryStore(), PackStore(tmp_path / f"p{rows_n}")
        root = ingest_pages(data, mem, 400, fanout=4)
        assert ingest_pages(data, packs, 400, fanout=4) == root
        assert reassemble(root, packs) == data == reassemble(root, mem)


def test_a_root_naming_many_absent_bundles_fails_without_allocating_their_claims():
    """A root may name ~26,000 bundles claiming MAX_BOOK_SIZE each (26 GiB): the walk
    reads a level in bounded slices, so it fails at the first absent bundle, naming it,
    after allocating at most one slice, not the sum of the claims."""
    import tracemalloc

    from oluo_lab.cas import CID_LEN, MAX_BOOK_SIZE, BookNotFound

    store = MemoryStore()
    size = MAX_BOOK_SIZE - MAX_BOOK_SIZE % CID_LEN
    template = bytearray(CID.for_bundle(bytes(size), 1).raw)
    fakes = []
    for i in range(2000):  # 2 GiB of claims
        template[-8:] = i.to_bytes(8, "big")
        fakes.append(bytes(template))
    root = store.put_bundle(meta_for([], total=size * 2000, count=2000) + b"".join(fakes))
    tracemalloc.start()
    try:
        with pytest.raises(BookNotFound) as ei:
            walk_blob(root, store)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ei.value.cid.raw == fakes[0]
    assert peak < 256 << 20, f"{peak} B allocated for 2 GiB of claims"
