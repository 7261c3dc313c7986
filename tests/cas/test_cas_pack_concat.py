"""Reading many books at once from a pack store (``get_concat_into``) and the arrays
behind it: the same bytes and the same first error as the book-by-book path."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from pack_helpers import pack_corrupt, rewrite_pack

from oluo_lab.cas import (
    CID,
    BookNotFound,
    BookStore,
    ContentError,
    CorruptBook,
    CorruptStoreFile,
    MalformedBundle,
    MemoryStore,
    PackStore,
    RootMeta,
    reassemble,
)
from oluo_lab.cas import packs as packs_module
from oluo_lab.cas._packfile import (
    FOOTER_LEN,
    Entry,
    IndexDoc,
    PackRef,
    decode_index,
    encode_index,
    pack_key,
)
from oluo_lab.cas.dag import blob_info
from oluo_lab.cas.params import CHUNK_PARAMS
from oluo_lab.testing.store import xof


def _books(store: PackStore, n: int = 60) -> tuple[list[CID], list[bytes]]:
    """Raw (random) and zstd (repetitive) books over several packs and index files."""
    datas = [xof(bytes([i]), 3000 + 97 * i) if i % 3 else bytes([i]) * (5000 + i) for i in range(n)]
    cids: list[CID] = []
    for k in range(0, n, 20):  # one batch, one index file, per 20 books
        with store.batch():
            cids += [store.put(d) for d in datas[k : k + 20]]
    return cids, datas


def _per_book(store: PackStore, raw: bytes, out: memoryview) -> None:
    """The book-by-book path (``BookStore``'s ``get_concat_into``)."""
    BookStore.get_concat_into(store, raw, out)


def _both(store: PackStore, cids: list[CID]) -> tuple[object, object]:
    """What each path gives for ``cids``: the bytes, or the error (type, CID, message)."""
    raw = b"".join(c.raw for c in cids)
    got = []
    for read in (PackStore.get_concat_into, _per_book):
        out = bytearray(sum(c.size for c in cids))
        try:
            read(store, raw, memoryview(out))
            got.append(bytes(out))
        except ContentError as exc:
            got.append((type(exc), exc.cid, str(exc)))
    return got[0], got[1]


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    where = tmp_path / "s" if request.param == "local" else "memory:///"
    return PackStore(where, target_pack_size=64 << 10)


def test_the_same_bytes_as_book_by_book_in_any_order_with_repeats(store):
    cids, datas = _books(store)
    assert len(store._view.sizes) > 3 and len(store._view.live) == 3
    rng = random.Random(5)
    order = [rng.randrange(len(cids)) for _ in range(150)]
    fast, slow = _both(store, [cids[i] for i in order])
    assert fast == slow == b"".join(datas[i] for i in order)
    fresh = PackStore(store.backend, target_pack_size=64 << 10)  # arrays from the index files
    assert fresh._view._loc is None
    out = bytearray(len(fast))
    fresh.get_concat_into(b"".join(cids[i].raw for i in order), memoryview(out))
    assert bytes(out) == fast and fresh._view._loc is None  # no entry object was needed


@pytest.mark.parametrize("how", ["flip", "swap", "truncate"])
def test_the_same_first_error_as_book_by_book(store, how):
    cids, _ = _books(store)
    for k in (40, 7, 8):  # a zstd book, then a raw book, earlier in the order asked
        pack_corrupt(store, cids[k], how)
    order = cids[30:] + cids[:30] + [cids[8]]
    fast, slow = _both(store, order)
    assert isinstance(fast, tuple) and fast == slow
    assert fast[1] == next(c for c in order if c in (cids[40], cids[7], cids[8]))


def test_a_missing_book_is_named_as_book_by_book(store):
    cids, _ = _books(store, 20)
    absent = CID.for_book(b"never stored")
    fast, slow = _both(store, [cids[3], absent, cids[1]])
    assert fast == slow and fast[0] is BookNotFound and fast[1] == absent


def test_a_book_in_an_open_batch(store):
    cids, datas = _books(store, 20)
    with store.batch():
        new = store.put(b"queued " * 700)
        out = bytearray(new.size + cids[2].size)
        store.get_concat_into(new.raw + cids[2].raw, memoryview(out))
    assert bytes(out) == b"queued " * 700 + datas[2]


def test_a_pack_a_gc_elsewhere_removed_is_read_from_its_new_pack(tmp_path):
    reader = PackStore(tmp_path / "s")
    cids = [reader.put(xof(bytes([i]), 5000)) for i in range(6)]  # six tiny packs
    reader._view.located()  # arrays of the view the repack makes stale
    PackStore(tmp_path / "s").sweep([cids[0]], grace_s=0)
    out = bytearray(5 * 5000)
    reader.get_concat_into(b"".join(c.raw for c in cids[1:]), memoryview(out))
    assert bytes(out) == b"".join(xof(bytes([i]), 5000) for i in range(1, 6))


def test_runs_are_coalesced(tmp_path, monkeypatch):
    store = PackStore(tmp_path / "s")
    with store.batch():
        cids = [store.put(xof(bytes([i]), 20_000)) for i in range(40)]
    calls = []
    orig = store.backend.read_scatter
    monkeypatch.setattr(store.backend, "read_scatter", lambda *a: calls.append(a[1]) or orig(*a))
    out = bytearray(40 * 20_000)
    store.get_concat_into(b"".join(c.raw for c in cids[::-1]), memoryview(out))
    assert calls == [8]  # one read from the first record of the pack
    mem = PackStore("memory:///")
    with mem.batch():
        cids = [mem.put(xof(bytes([i]), 20_000)) for i in range(30)]
    ranges = []
    read = mem.backend.read_ranges
    monkeypatch.setattr(
        mem.backend, "read_ranges", lambda key, s, n: ranges.append(len(s)) or read(key, s, n)
    )
    mem.get_concat_into(b"".join(c.raw for c in cids), memoryview(bytearray(30 * 20_000)))
    assert ranges == [1]  # one range, one request


def _twin(cid: CID, size: int | None = None) -> CID:
    """Another CID whose first 8 digest bytes (the arrays' sort key) are ``cid``'s."""
    raw = bytearray(cid.raw)
    if size is not None:
        raw[4:8] = size.to_bytes(4, "big")
    raw[20:] = bytes(20)
    return CID.from_bytes(bytes(raw))


def test_cids_sharing_their_sort_key_are_told_apart():
    a = CID.for_book(b"a" * 300)
    b, c = _twin(a), _twin(a, 500)
    pa, pb = "a" * 64, "b" * 64
    docs = [
        IndexDoc(
            (
                PackRef(pa, 10_000, (Entry(a, 8, 100), Entry(b, 108, 100), Entry(c, 208, 100))),
                PackRef(pb, 10_000, (Entry(a, 8, 200),)),
            ),
            (),
        ),
        IndexDoc((PackRef(pa, 10_000, (Entry(b, 400, 90), Entry(c, 500, 80))),), ()),
    ]
    view = packs_module._View(docs={"1": docs[0], "2": docs[1]}, live=["1", "2"])
    want = {cid: view.loc[cid] for cid in (a, b, c)}
    assert want[b] == (pa, Entry(b, 108, 100)) and want[a] == (pa, Entry(a, 8, 100))
    for table in (packs_module._Table.of_docs(docs), packs_module._Table.of(view.loc)):
        rows = np.frombuffer(b"".join(x.raw for x in (c, a, b, c)), np.uint8).reshape(-1, 40)
        pos = table.find(rows)
        assert pos is not None
        got = [(table.pids[table.pack[k]], int(table.offset[k]), int(table.length[k])) for k in pos]
        assert got == [(want[x][0], want[x][1].offset, want[x][1].length) for x in (c, a, b, c)]
        other = _twin(a, 700).raw
        assert table.find(np.frombuffer(other, np.uint8).reshape(1, 40)) is None
    fresh = packs_module._View(docs=view.docs, live=view.live)
    assert all(fresh.where(x) == want[x] for x in (a, b, c)) and fresh._loc is None


def test_an_index_naming_cids_sharing_their_sort_key_is_valid():
    a = CID.for_book(b"a" * 300)
    b = _twin(a)
    size = 8 + 500 + 2 * 56 + FOOTER_LEN
    doc = decode_index(
        "i", encode_index([PackRef("c" * 64, size, (Entry(a, 8, 200), Entry(b, 208, 300)))])
    )
    assert doc.packs[0].entries == (Entry(a, 8, 200), Entry(b, 208, 300))
    twice = encode_index([PackRef("c" * 64, size, (Entry(a, 8, 200), Entry(a, 208, 300)))])
    with pytest.raises(CorruptStoreFile, match="repeats a CID"):
        decode_index("i", twice)


def test_a_bad_bundle_after_good_ones_in_its_level_is_named():
    store = MemoryStore()
    leaves = [store.put(bytes([i]) * 100) for i in range(6)]
    good = store.put_bundle(b"".join(c.raw for c in leaves[:3]))
    body = b"".join(c.raw for c in leaves[3:])
    liar = store.put_raw(CID.for_bundle(body, 2), body)  # books under a "depth 2" bundle
    meta = RootMeta(600, 6, CHUNK_PARAMS).encode()
    root = store.put_raw(CID.for_bundle(meta + good.raw + liar.raw, 3), meta + good.raw + liar.raw)
    with pytest.raises(MalformedBundle) as ei:
        reassemble(root, store)
    assert ei.value.cid == liar and "depth" in str(ei.value)
    fine = store.put_bundle(meta + good.raw + store.put_bundle(body).raw)
    assert reassemble(fine, store) == b"".join(bytes([i]) * 100 for i in range(6))
    assert blob_info(fine, store).leaves == tuple(leaves)


def test_a_bundle_reached_at_two_levels_is_read_once_and_walked_twice():
    store = MemoryStore()
    leaves = [store.put(bytes([i]) * 100) for i in range(3)]
    low = store.put_bundle(b"".join(c.raw for c in leaves))
    high = store.put_bundle(low.raw)  # depth 2, over the same bundle
    root = store.put_bundle(RootMeta(600, 6, CHUNK_PARAMS).encode() + low.raw + high.raw)
    assert reassemble(root, store) == 2 * b"".join(bytes([i]) * 100 for i in range(3))
    info = blob_info(root, store)
    assert info.leaves == 2 * tuple(leaves) and info.bundles == (root, low, high, low)


def test_a_reader_building_the_lookup_table_while_a_batch_commits_sees_the_new_book(
    tmp_path, monkeypatch
):
    s = PackStore(tmp_path / "s", fsync=False)
    old = s.put(b"old book" * 100)
    s._refresh(force=True)  # a fresh view: its table is not built yet
    started, go = threading.Event(), threading.Event()
    build = packs_module._Table.of_docs.__func__

    def slow(cls, docs):
        table = build(cls, docs)  # from the index files as they were
        if threading.current_thread().name == "reader":
            started.set()
            go.wait()  # a slow build overlaps another thread's commit
        return table

    monkeypatch.setattr(packs_module._Table, "of_docs", classmethod(slow))
    reader = threading.Thread(target=lambda: s.get(old), name="reader")
    reader.start()
    started.wait()
    new = s.put(b"new book" * 100)
    go.set()
    reader.join()
    assert s.get(new) == b"new book" * 100 and s.has(new) and s.reusable(new)


def test_get_concat_into_keeps_one_table_while_another_thread_commits(tmp_path, monkeypatch):
    s = PackStore(tmp_path / "s", fsync=False)
    datas = [xof(bytes([i]), 3000) for i in range(20)]
    cids = [s.put(d) for d in datas]
    rows = np.frombuffer(b"".join(c.raw for c in cids), np.uint8).reshape(-1, 40)
    find = packs_module._Table.find
    fired = []

    def find_then_commit_elsewhere(table, want):
        pos = find(table, want)
        if not fired:
            fired.append(1)
            more = [xof(b"more" + bytes([i]), 3000) for i in range(200)]
            t = threading.Thread(target=lambda: s.put_many(more))
            t.start()
            t.join()  # another thread's batch commits between the lookup and the reads
        return pos

    monkeypatch.setattr(packs_module._Table, "find", find_then_commit_elsewhere)
    out = bytearray(sum(len(d) for d in datas))
    s.get_concat_into(rows, memoryview(out))
    assert fired and bytes(out) == b"".join(datas)


def _cut_before_the_record(store: PackStore, cid: CID) -> None:
    """Truncate ``cid``'s pack before its record starts (a short copy of the pack)."""
    pid, e = store._view.loc[cid]
    data = store.backend.read(pack_key(pid))
    rewrite_pack(store, pid, data[: e.offset - 1])


def _a_pack_cut_before_a_record_is_a_corrupt_book(store: PackStore) -> None:
    cids, _ = _books(store, 20)
    cut = cids[12]
    _cut_before_the_record(store, cut)
    with pytest.raises(CorruptBook) as ei:
        store.get(cut)
    assert ei.value.cid == cut
    for order in ([cut], [cids[0], cut, cids[1]]):
        fast, slow = _both(store, order)
        assert fast == slow and fast[0] is CorruptBook and fast[1] == cut


def test_a_pack_cut_before_a_record_is_a_corrupt_book_naming_it(store):
    _a_pack_cut_before_a_record_is_a_corrupt_book(store)


def test_a_pack_cut_before_a_record_is_a_corrupt_book_naming_it_on_s3(s3, tmp_path):
    store = PackStore(s3.url(tmp_path.name), target_pack_size=64 << 10, **s3.options)
    _a_pack_cut_before_a_record_is_a_corrupt_book(store)
