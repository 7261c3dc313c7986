"""oluo_lab.snapshot.index_codec: lossless, dedup-friendly storage of faiss HNSW bytes."""

from __future__ import annotations

import cbor2
import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oluo_lab.cas import CID, CorruptBook, MemoryStore, blob_info, ingest
from oluo_lab.engine import OluoEngine
from oluo_lab.snapshot.errors import IndexCodecError, OluoPersistError
from oluo_lab.snapshot.index_codec import (
    INDEX_RECORD_FORMAT,
    MAX_PATCH_CHAIN,
    REBASE_DEPTH,
    _apply_patch,
    _make_patch,
    decode_index,
    encode_index,
    index_books,
    is_index_record,
    read_index_record,
)

DIM = 16


def _vectors(metric: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if metric == "hamming":
        return rng.integers(0, 256, (n, 8 * DIM // 8), dtype=np.uint8)
    return rng.standard_normal((n, DIM)).astype(np.float32)


def _engine(metric: str) -> OluoEngine:
    dim = 8 * DIM if metric == "hamming" else DIM
    return OluoEngine(dim, metric, compact_threshold=10**9, M=8, ef_construction=40)


def _generations(metric: str) -> list[tuple[str, bytes]]:
    """gen1 (2,000), gen2/gen3 (appends, copy-on-write), gen4 after a delete (an in-place
    repair for float metrics: a patch; a rebuild for hamming), gen5 after a delete with
    repair switched off (a rebuild)."""
    x = _vectors(metric, 2300, seed=7)
    eng = _engine(metric)
    eng.add(x[:2000])
    out = [("full", eng.compact().index_bytes)]
    eng.add(x[2000:2100])
    out.append(("patch", eng.compact().index_bytes))
    eng.add(x[2100:2200])
    out.append(("patch", eng.compact().index_bytes))
    eng.delete([5, 17, 1999])
    eng.add(x[2200:2250])
    out.append(("full" if metric == "hamming" else "patch", eng.compact().index_bytes))
    eng.repair_fraction = 0.0
    eng.delete([6])
    eng.add(x[2250:])
    out.append(("full", eng.compact().index_bytes))
    return out


def _neighbors_form(cid: CID, store: MemoryStore) -> str:
    return read_index_record(cid, store).doc["sections"]["neighbors"]["form"]


@pytest.fixture(scope="module", params=["cosine", "l2", "ip", "hamming"])
def generations(request):
    return request.param, _generations(request.param)


def _encode_chain(gens: list[tuple[str, bytes]], store: MemoryStore) -> list[CID]:
    cids: list[CID] = []
    for _, data in gens:
        cids.append(encode_index(data, store, cids[-1] if cids else None))
    return cids


# --------------------------------------------------------------------------- round trips


def test_round_trip_every_generation_byte_identical(generations) -> None:
    metric, gens = generations
    store = MemoryStore()
    cids = _encode_chain(gens, store)
    kind = "hnsw-binary" if metric == "hamming" else "hnsw-flat"
    for (form, data), cid in zip(gens, cids, strict=True):
        rec = read_index_record(cid, store)
        assert rec.kind == kind
        assert _neighbors_form(cid, store) == form
        assert decode_index(cid, store) == data
    depths = [0, 1, 2, 0, 0] if metric == "hamming" else [0, 1, 2, 3, 0]
    assert [read_index_record(c, store).depth for c in cids] == depths
    assert read_index_record(cids[1], store).parent == cids[0]
    assert read_index_record(cids[4], store).parent is None


def test_codes_are_pages_of_whole_rows_and_older_plain_codes_still_decode(
    generations, monkeypatch
) -> None:
    from oluo_lab.cas import CHUNK_PARAMS, ChunkParams
    from oluo_lab.snapshot import index_codec

    metric, gens = generations
    data = gens[0][1]
    store = MemoryStore()
    codes = read_index_record(encode_index(data, store), store).doc["sections"]["codes"]
    row = DIM if metric == "hamming" else 4 * DIM  # bytes per stored vector
    info = blob_info(CID.from_bytes(codes["blob"]), store)
    assert info.params == ChunkParams.paged(row * -(-index_codec.CODES_PAGE // row))
    # a record written before paged codes existed: the codes as a plain FastCDC blob
    monkeypatch.setattr(index_codec, "ingest_pages", lambda mv, st, page, fanout: ingest(mv, st))
    old = MemoryStore()
    cid = encode_index(data, old)
    plain = read_index_record(cid, old).doc["sections"]["codes"]["blob"]
    assert blob_info(CID.from_bytes(plain), old).params in (None, CHUNK_PARAMS)
    assert decode_index(cid, old) == data


def _two_records(
    eng: OluoEngine, x: np.ndarray, first: int
) -> tuple[MemoryStore, tuple[bytes, bytes], tuple[CID, CID]]:
    """Two compactions of ``eng`` (``x[:first]``, then the rest) and their index records,
    the second encoded against the first, in a fresh store."""
    eng.add(x[:first])
    g1 = eng.compact().index_bytes
    eng.add(x[first:])
    g2 = eng.compact().index_bytes
    store = MemoryStore()
    c1 = encode_index(g1, store)
    return store, (g1, g2), (c1, encode_index(g2, store, c1))


def _codes_leaves(cid: CID, store: MemoryStore) -> tuple[int, set[CID]]:
    codes = read_index_record(cid, store).doc["sections"]["codes"]
    info = blob_info(CID.from_bytes(codes["blob"]), store)
    return info.params.max_size, set(info.leaves)


def test_codes_pages_fill_codes_page_and_a_lab_keeps_its_first_page_size(monkeypatch) -> None:
    from oluo_lab.snapshot import index_codec

    x = np.random.default_rng(1).standard_normal((1200, 50)).astype(np.float32)
    eng = OluoEngine(50, "l2", compact_threshold=10**9, M=8, ef_construction=40)
    store, (g1, g2), (c1, c2) = _two_records(eng, x, 1000)
    # 200-byte rows: the fewest whole rows that fill CODES_PAGE bytes (21, not 20)
    (p1, l1), (p2, l2) = _codes_leaves(c1, store), _codes_leaves(c2, store)
    assert p1 == p2 == 21 * 200
    assert len(l1 - l2) == 1  # only the last, partial page of the parent changed
    # a lab whose records have 20-row pages (written before the rule) keeps them, so the
    # next record shares its parent's pages instead of rewriting every vector once
    old = MemoryStore()
    monkeypatch.setattr(index_codec, "CODES_PAGE", 4000)
    o1 = encode_index(g1, old)
    monkeypatch.undo()
    o2 = encode_index(g2, old, o1)
    (q1, m1), (q2, m2) = _codes_leaves(o1, old), _codes_leaves(o2, old)
    assert q1 == q2 == 20 * 200 and m1 <= m2
    assert decode_index(o2, old) == g2
    # a parent whose vectors are not pages of whole rows: the rule's page
    monkeypatch.setattr(index_codec, "ingest_pages", lambda mv, st, page, fanout: ingest(mv, st))
    plain = MemoryStore()
    r1 = encode_index(g1, plain)
    monkeypatch.undo()
    r2 = encode_index(g2, plain, r1)
    assert _codes_leaves(r2, plain)[0] == 21 * 200
    assert decode_index(r2, plain) == g2


def test_decoded_index_searches_like_the_original() -> None:
    gens = _generations("l2")
    store = MemoryStore()
    cids = _encode_chain(gens, store)
    ix = faiss.deserialize_index(np.frombuffer(decode_index(cids[2], store), np.uint8))
    ref = faiss.deserialize_index(np.frombuffer(gens[2][1], np.uint8))
    q = _vectors("l2", 20, seed=3)
    assert np.array_equal(ix.search(q, 5)[1], ref.search(q, 5)[1])


def test_patch_without_parent_or_with_non_record_parent_is_full() -> None:
    gens = _generations("cosine")
    store = MemoryStore()
    raw_root = ingest(gens[0][1], store)
    cid = encode_index(gens[1][1], store, parent=raw_root)
    assert _neighbors_form(cid, store) == "full"
    assert decode_index(cid, store) == gens[1][1]
    # a parent of the other metric/kind cannot be patched against either
    other = encode_index(_generations("hamming")[0][1], store)
    assert _neighbors_form(encode_index(gens[1][1], store, parent=other), store) == "full"


# --------------------------------------------------------------------------- raw fallback


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a faiss index at all" * 1000,
        bytes(np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8)),
    ],
    ids=["empty", "text", "random-multi-chunk"],
)
def test_unknown_bytes_are_stored_raw_and_round_trip(data: bytes) -> None:
    store = MemoryStore()
    cid = encode_index(data, store)
    assert read_index_record(cid, store).kind == "raw"
    assert decode_index(cid, store) == data


def test_other_faiss_indexes_and_damaged_hnsw_bytes_fall_back_to_raw() -> None:
    store = MemoryStore()
    flat = faiss.IndexFlatL2(DIM)
    flat.add(_vectors("l2", 100, 0))
    flat_bytes = faiss.serialize_index(flat).tobytes()
    hnsw = _generations("l2")[0][1]
    for data in (flat_bytes, hnsw[:-3], hnsw + b"\0", hnsw[:4000]):
        cid = encode_index(data, store)
        assert read_index_record(cid, store).kind == "raw"
        assert decode_index(cid, store) == data


# --------------------------------------------------------------------------- chain bound


@pytest.mark.parametrize("max_chain", [REBASE_DEPTH, MAX_PATCH_CHAIN])
def test_chain_is_bounded_and_rebased(max_chain: int) -> None:
    x = _vectors("cosine", 1000 + 20 * (max_chain + 3), seed=11)
    eng = _engine("cosine")
    eng.add(x[:1000])
    store = MemoryStore()
    cids = [encode_index(eng.compact().index_bytes, store)]
    datas = []
    for g in range(max_chain + 2):
        eng.add(x[1000 + 20 * g : 1020 + 20 * g])
        datas.append(eng.compact().index_bytes)
        cids.append(encode_index(datas[-1], store, cids[-1], max_chain=max_chain))
    depths = [read_index_record(c, store).depth for c in cids]
    assert depths == [0, *range(1, max_chain + 1), 0, 1]
    for cid, data in zip(cids[1:], datas, strict=True):
        assert decode_index(cid, store) == data
    with pytest.raises(ValueError):
        encode_index(datas[0], store, cids[0], max_chain=MAX_PATCH_CHAIN + 1)


def _forge(store: MemoryStore, cid: CID, **nb_changes) -> CID:
    doc = cbor2.loads(store.get(cid))
    doc["sections"]["neighbors"].update(nb_changes)
    return store.put(cbor2.dumps(doc, canonical=True))


def test_forged_chain_deeper_than_the_bound_is_refused() -> None:
    gens = _generations("ip")
    store = MemoryStore()
    cids = _encode_chain(gens[:2], store)
    with pytest.raises(IndexCodecError, match="depth") as ei:
        decode_index(_forge(store, cids[1], depth=MAX_PATCH_CHAIN + 1), store)
    assert ei.value.cid != cids[1]
    # a depth that disagrees with the parent's
    bad = _forge(store, cids[1], depth=3)
    with pytest.raises(IndexCodecError, match="parent depth") as ei:
        decode_index(bad, store)
    assert ei.value.cid == bad
    # a record whose patch parent is itself a patch of it (a cycle cannot exceed the bound)
    loop = _forge(store, cids[1], parent=cids[1].raw)
    with pytest.raises(IndexCodecError):
        decode_index(loop, store)


# --------------------------------------------------------------------------- determinism


def test_same_bytes_and_parent_give_the_same_record_cid() -> None:
    gens = _generations("l2")
    a, b = MemoryStore(), MemoryStore()
    ca, cb = _encode_chain(gens, a), _encode_chain(gens, b)
    assert ca == cb
    assert sorted(a) == sorted(b)
    assert encode_index(gens[1][1], a, ca[0]) == ca[1]
    # without a parent the record differs (full neighbours), the content does not
    solo = encode_index(gens[1][1], a)
    assert solo != ca[1] and decode_index(solo, a) == gens[1][1]


def test_record_is_canonical_cbor_with_its_tag() -> None:
    gens = _generations("cosine")
    store = MemoryStore()
    cids = _encode_chain(gens[:2], store)
    raw = store.get(cids[1])
    doc = cbor2.loads(raw)
    assert cbor2.dumps(doc, canonical=True) == raw
    assert doc["format"] == INDEX_RECORD_FORMAT and doc["version"] == 1
    assert doc["length"] == len(gens[1][1])
    assert is_index_record(cids[1], store)
    root = ingest(gens[1][1], store)
    assert not is_index_record(root, store)
    assert not is_index_record(store.put(b"\xa1\x66format\x63xyz"), store)
    assert "kind='hnsw-flat'" in repr(read_index_record(cids[1], store))
    assert repr(read_index_record(cids[1], store)) == repr(read_index_record(cids[1], store))


# --------------------------------------------------------------------------- errors


def test_corrupt_patch_book_is_detected() -> None:
    gens = _generations("cosine")
    store = MemoryStore()
    cids = _encode_chain(gens[:2], store)
    patch = CID.from_bytes(read_index_record(cids[1], store).doc["sections"]["neighbors"]["blob"])
    leaf = blob_info(patch, store).leaves[0]
    good = store._books[leaf]
    store._books[leaf] = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(CorruptBook) as ei:
        decode_index(cids[1], store)
    assert ei.value.cid == leaf
    store._books[leaf] = good
    assert decode_index(cids[1], store) == gens[1][1]


def test_patch_that_does_not_apply_names_the_record() -> None:
    gens = _generations("cosine")
    store = MemoryStore()
    cids = _encode_chain(gens[:2], store)
    from oluo_lab.cas import reassemble

    nb = read_index_record(cids[1], store).doc["sections"]["neighbors"]
    short = ingest(reassemble(CID.from_bytes(nb["blob"]), store)[:-4], store)
    bad = _forge(store, cids[1], blob=short.raw)
    with pytest.raises(IndexCodecError, match="does not fit") as ei:
        decode_index(bad, store)
    assert ei.value.cid == bad
    wrong_base = _forge(store, cids[1], base_len=nb["base_len"] - 4)
    with pytest.raises(IndexCodecError, match="base array"):
        decode_index(wrong_base, store)


def _forge_top(store: MemoryStore, cid: CID, **changes) -> CID:
    doc = cbor2.loads(store.get(cid))
    doc.update(changes)
    return store.put(cbor2.dumps(doc, canonical=True))


def test_length_and_digest_are_verified() -> None:
    gens = _generations("l2")
    store = MemoryStore()
    cid = encode_index(gens[0][1], store)
    doc = cbor2.loads(store.get(cid))
    bad_digest = _forge_top(store, cid, blake3=bytes(32))
    with pytest.raises(IndexCodecError, match="blake3") as ei:
        decode_index(bad_digest, store)
    assert ei.value.cid == bad_digest and bad_digest.hex in str(ei.value)
    with pytest.raises(IndexCodecError, match="record says"):
        decode_index(_forge_top(store, cid, length=doc["length"] + 1), store)
    frame = doc["frame"]
    flipped = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(IndexCodecError, match="blake3"):
        decode_index(_forge_top(store, cid, frame=flipped), store)
    raw = encode_index(b"abc", store)
    with pytest.raises(IndexCodecError, match="blake3"):
        decode_index(_forge_top(store, raw, blob=ingest(b"abd", store).raw), store)


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 2},
        {"kind": "ivf"},
        {"length": -1},
        {"blake3": b"short"},
        {"sections": {}},
        {"frame": "text"},
    ],
    ids=["version", "kind", "length", "digest", "sections", "frame"],
)
def test_malformed_records_raise_typed_errors(changes: dict) -> None:
    store = MemoryStore()
    cid = encode_index(_generations("ip")[0][1], store)
    bad = _forge_top(store, cid, **changes)
    with pytest.raises(IndexCodecError) as ei:
        decode_index(bad, store)
    assert isinstance(ei.value, OluoPersistError) and ei.value.cid == bad


def test_non_records_are_refused() -> None:
    store = MemoryStore()
    data = bytes(np.random.default_rng(2).integers(0, 256, 300_000, dtype=np.uint8))
    root = ingest(data, store)
    with pytest.raises(IndexCodecError, match="bundle"):
        decode_index(root, store)
    book = store.put(b"plain")
    with pytest.raises(IndexCodecError, match="not canonical CBOR") as ei:
        decode_index(book, store)
    assert ei.value.cid == book
    with pytest.raises(TypeError):
        decode_index(book.hex, store)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_index(b"x", store, block=0)


# --------------------------------------------------------------------------- reachability


def test_index_books_are_exactly_what_decode_needs() -> None:
    gens = _generations("hamming")
    store = MemoryStore()
    cids = _encode_chain(gens[:3], store)
    books = index_books(cids[2], store)
    assert {cids[0], cids[1], cids[2]} <= books
    copy = MemoryStore()
    for c in books:
        copy.put_raw(c, store.get(c))
    assert decode_index(cids[2], copy) == gens[2][1]
    # the parents' vectors are not needed: gen1's codes DAG is not in gen3's books
    codes1 = CID.from_bytes(read_index_record(cids[0], store).doc["sections"]["codes"]["blob"])
    assert codes1 not in books
    # dropping any one book breaks the decode
    for victim in sorted(books)[:: max(1, len(books) // 5)]:
        partial = MemoryStore()
        for c in books - {victim}:
            partial.put_raw(c, store.get(c))
        with pytest.raises(Exception):  # noqa: B017 - BookNotFound, or a typed codec error
            decode_index(cids[2], partial)


def test_second_generation_adds_far_fewer_bytes_glove() -> None:
    from oluo_lab.datasets import glove_sample

    ds = glove_sample(verify=False)
    x = np.concatenate([ds.base, ds.queries[:200]]).astype(np.float32)
    eng = OluoEngine(x.shape[1], "cosine", compact_threshold=10**9)
    store, (g1, g2), (c1, c2) = _two_records(eng, x, 20_000)
    assert decode_index(c2, store) == g2
    new = sum(c.size for c in index_books(c2, store) - index_books(c1, store))
    first = sum(c.size for c in index_books(c1, store))
    assert first >= len(g1)  # generation 1 stores everything
    assert new < 0.25 * len(g2), f"{new / len(g2):.1%} new"
    r1, r2 = blob_info(ingest(g1, store), store), blob_info(ingest(g2, store), store)
    raw_new = sum(c.size for c in set(r2.leaves) | set(r2.bundles) if c not in set(r1.leaves))
    assert new < raw_new / 2


# --------------------------------------------------------------------------- patch property


@settings(max_examples=80, deadline=None)
@given(
    base=st.integers(0, 300),
    tail=st.integers(0, 50),
    block=st.integers(1, 40),
    changes=st.lists(st.tuples(st.integers(0, 10**6), st.integers(-1, 5000)), max_size=30),
    seed=st.integers(0, 2**16),
)
def test_patch_round_trip_property(base, tail, block, changes, seed) -> None:
    rng = np.random.default_rng(seed)
    old = rng.integers(-1, 5000, base).astype("<i4")
    new = np.concatenate([old, rng.integers(-1, 5000, tail).astype("<i4")])
    for pos, val in changes:
        if base:
            new[pos % base] = val
    patch = _make_patch(old, new, block)
    arr = np.zeros(base + tail, "<i4")
    arr[:base] = old
    _apply_patch(patch, arr, base, base + tail, block, None)
    assert np.array_equal(arr, new)
    blocks = {int(i) // block for i in np.flatnonzero(old != new[:base])}
    entries = sum(min(block, base - j * block) for j in blocks)
    bitmap = (-(-base // block) + 7) // 8
    assert len(patch) == bitmap + 4 * (entries + tail)
