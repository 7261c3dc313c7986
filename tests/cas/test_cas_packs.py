"""PackStore: the conformance suite on local packs, plus pack-specific behaviour."""

from __future__ import annotations

import errno
import os
import pickle
import threading
import time
from pathlib import Path

import cbor2
import numpy as np
import pytest
from pack_helpers import pack_corrupt

from oluo_lab import _io
from oluo_lab.cas import (
    CID,
    MAX_BOOK_SIZE,
    BookNotFound,
    BookTooLarge,
    ContentError,
    CorruptBook,
    CorruptStoreFile,
    DirStore,
    PackStore,
    StoreIOError,
    _packbatch,
    convert_to_packs,
    ingest,
    open_store,
    reassemble,
    store_kind,
)
from oluo_lab.cas import packs as packs_module
from oluo_lab.cas._bookfile import HEADER_LEN, RAW_HEADER
from oluo_lab.cas._packfile import (
    ENTRY_LEN,
    FOOTER_LEN,
    Entry,
    PackRef,
    decode_index,
    decode_tombstones,
    decode_trailer,
    encode_index,
    encode_trailer,
    file_id,
    parse_footer,
)
from oluo_lab.cas.base import BookStore
from oluo_lab.testing.damage import damage_book, drop_index_entry
from oluo_lab.testing.store import StoreConformance, xof


class TestPackStore(StoreConformance):
    def make_store(self, tmp_path):
        return PackStore(tmp_path / "packs", target_pack_size=256 << 10)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)


class TestPackStoreOnObstoreMemory(StoreConformance):
    def make_store(self, tmp_path):
        return PackStore("memory:///", target_pack_size=256 << 10)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)


class TestPackStoreOnS3(StoreConformance):
    @pytest.fixture(autouse=True)
    def _server(self, s3):
        self.s3 = s3

    def make_store(self, tmp_path):
        return PackStore(self.s3.url(tmp_path.name), target_pack_size=256 << 10, **self.s3.options)

    def corrupt(self, store, cid, how):
        pack_corrupt(store, cid, how)


# --- format: test vector, layout, determinism ----------------------------------------------
FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
VECTOR_BOOKS = (b"", b"hello", b"abc" * 1000)
VECTOR_PACK_ID = "75a2d8b201fc7827fcf263c10828b57221d8cd6a86e1611a4630c9d5115b2bee"
VECTOR_PACK = (
    "4f4c5031010000004f4c42310000000000000000000000004f4c423100000000000000000000000068656c6c"
    "6f4f4c4231010300006fcc97cf6576494628b52ffd60b80a550000186162630100b2d377430100000000000000"
    "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262000000000000000800000010"
    "000000000100000000000005ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
    "000000000000001800000015000000000100000000000bb85d392719c4f44790536b56909c3499d92a856154"
    "b8e8a6a2cba4662d3b473990000000000000002d000000240000000000000003e360a955f7ebb25a4f4c5054"
    "000000bc"
)
VECTOR_INDEX_ID = "4c885d53e02ea3548e3f2b6a486fb5f1b027d14b0cb36e9ace2a93914b08cb93"
VECTOR_INDEX = (
    "a4657061636b7381a3626964582075a2d8b201fc7827fcf263c10828b57221d8cd6a86e1611a4630c9d5115b"
    "2bee6473697a6519010d67656e747269657358a80100000000000000af1349b9f5f9a1a6a0404dea36dcc949"
    "9bcb25c9adc112b7cc9a93cae41f3262000000000000000800000010000000000100000000000005ea8f163d"
    "b38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f00000000000000180000001500000000"
    "0100000000000bb85d392719c4f44790536b56909c3499d92a856154b8e8a6a2cba4662d3b47399000000000"
    "0000002d000000240000000066666f726d61746f6f6c756f2d7061636b2d696e6465786776657273696f6e01"
    "6a7375706572736564657380"
)


def _files(d: Path, sub: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((d / sub).glob("*"))}


def test_pack_and_index_test_vector(tmp_path):
    """Appendix A.3 of docs/FORMAT.md: three books in one batch, zstd level 3."""
    store = PackStore(tmp_path / "s", level=3)
    with store.batch():
        cids = [store.put(b) for b in VECTOR_BOOKS]
    assert _files(tmp_path / "s", "packs") == {f"{VECTOR_PACK_ID}.olp": bytes.fromhex(VECTOR_PACK)}
    assert _files(tmp_path / "s", "index") == {
        f"{VECTOR_INDEX_ID}.oli": bytes.fromhex(VECTOR_INDEX)
    }
    assert (tmp_path / "s" / "oluo-cas-format").read_text() == "oluo-cas 2\n"
    pack = bytes.fromhex(VECTOR_PACK)
    assert (
        file_id(pack) == VECTOR_PACK_ID and file_id(bytes.fromhex(VECTOR_INDEX)) == VECTOR_INDEX_ID
    )
    entries = decode_trailer("vector", pack[-(3 * ENTRY_LEN + FOOTER_LEN) :], len(pack))
    assert [e.cid for e in entries] == cids
    assert [(e.offset, e.length) for e in entries] == [(8, 16), (24, 21), (45, 36)]
    doc = decode_index("vector", bytes.fromhex(VECTOR_INDEX))
    assert doc.packs[0].entries == tuple(entries) and doc.supersedes == ()
    text = FORMAT_MD.read_text()
    for value in (VECTOR_PACK_ID, VECTOR_INDEX_ID):
        assert value in text
    flat = "".join(text.split())
    assert VECTOR_PACK in flat and VECTOR_INDEX in flat


def test_records_are_the_book_file_records_byte_for_byte(tmp_path):
    dirs = DirStore(tmp_path / "d", level=3)
    packs = PackStore(tmp_path / "p", level=3, target_pack_size=1 << 20)
    datas = [b"vector " * 3000, xof(b"raw", 70_000), b"", b"x"]
    with packs.batch():
        for data in datas:
            cid = packs.put(data)
            dirs.put(data)
    for data in datas:
        cid = CID.for_book(data)
        pid, e = packs._view.loc[cid]
        record = (tmp_path / "p" / "packs" / f"{pid}.olp").read_bytes()[e.offset : e.end]
        assert record == Path(dirs._locate(cid)[1]).read_bytes()


def test_put_many_raw_stores_raw_records_without_a_zstd_attempt(tmp_path, monkeypatch):
    chunks = [bytes([i]) * 5000 for i in range(8)]  # each compresses to a few bytes
    s = PackStore(tmp_path / "p")
    s.put_many(chunks[:4])
    tried = []
    real = s._codec.encode
    monkeypatch.setattr(s._codec, "encode", lambda data: tried.append(data) or real(data))
    s.put_many(chunks[4:], raw=True)
    assert not tried
    for i, data in enumerate(chunks):
        cid = CID.for_book(data)
        pid, e = s._view.loc[cid]
        assert e.raw == (i >= 4)
        assert e.length == HEADER_LEN + len(data) if e.raw else e.length < len(data)
        assert PackStore(tmp_path / "p").get(cid) == data


def test_put_pages_as_a_table_writes_the_packs_put_many_writes(tmp_path, monkeypatch):
    page = 3000
    data = b"".join(xof(bytes([i % 40]), page) for i in range(100)) + b"tail"
    a = PackStore(tmp_path / "a", target_pack_size=50_000)
    b = PackStore(tmp_path / "b", target_pack_size=50_000)
    tried, tables = [], []
    real = a._codec.encode
    monkeypatch.setattr(a._codec, "encode", lambda d: tried.append(d) or real(d))
    add_table = _packbatch.PackBatch.add_table

    def spy(batch, keys, rows, records):
        tables.append(len(keys))
        return add_table(batch, keys, rows, records)

    monkeypatch.setattr(_packbatch.PackBatch, "add_table", spy)
    rows = a.put_pages(data, page, raw=True)
    assert not tried and sum(tables) == 40  # the 40 distinct whole pages went as tables
    cids = b.put_many([data[i : i + page] for i in range(0, len(data), page)], raw=True)
    assert rows.tobytes() == b"".join(c.raw for c in cids)
    # the same packs (each book once, split at the same target) and the same index file
    assert _files(tmp_path / "a", "packs") == _files(tmp_path / "b", "packs")
    assert _files(tmp_path / "a", "index") == _files(tmp_path / "b", "index")
    assert len(_files(tmp_path / "a", "packs")) == 3
    fresh = PackStore(tmp_path / "a")
    assert [fresh.get(c) for c in cids] == [data[i : i + page] for i in range(0, len(data), page)]
    assert fresh.check()


def test_put_pages_skips_books_stored_or_queued_and_an_abandoned_batch_stores_none(tmp_path):
    page = 2500
    pages = [xof(bytes([i]), page) for i in range(30)]
    s = PackStore(tmp_path / "s")
    s.put_many(pages[:10])  # stored, in a pack an index names
    with s.batch():
        s.put(pages[10])  # queued in this batch
        s.put_pages(b"".join(pages), page, raw=True)
        s.put_pages(b"".join(pages[::-1]), page, raw=True)  # every page known by now
    view = PackStore(tmp_path / "s")._view
    held = [e.cid for ref in view.docs.values() for p in ref.packs for e in p.entries]
    assert sorted(held) == sorted(CID.for_book(p) for p in pages)  # each book once
    before = _files(tmp_path / "s", "index")
    more = [xof(b"new" + bytes([i]), page) for i in range(5)]
    with pytest.raises(RuntimeError), s.batch():
        s.put_pages(b"".join(more), page, raw=True)
        raise RuntimeError("abandon")
    assert _files(tmp_path / "s", "index") == before
    assert not any(CID.for_book(p) in PackStore(tmp_path / "s") for p in more)


def test_put_pages_puts_tombstoned_pages_again_in_a_unique_pack(tmp_path, monkeypatch):
    page = 2500
    pages = [xof(bytes([i]), page) for i in range(12)]
    cids = [CID.for_book(p) for p in pages]
    s = PackStore(tmp_path / "s", two_phase=True)
    s.put_pages(b"".join(pages[:8]), page, raw=True)
    assert s.sweep(cids[:3], grace_s=0).tombstoned == 3
    assert s.tombstoned() == set(cids[:3])
    packs = set(_files(tmp_path / "s", "packs"))

    def book_by_book(*args, **kwargs):
        raise AssertionError("put_pages fell back to the book-by-book path")

    monkeypatch.setattr(BookStore, "put_pages", book_by_book)
    rows = s.put_pages(b"".join(pages), page, raw=True)  # the table path, tombstones and all
    assert [CID.from_bytes(r.tobytes()) for r in rows] == cids
    fresh = PackStore(tmp_path / "s", two_phase=True)
    assert fresh.tombstoned() == set()  # the three were put again: revived
    new = set(_files(tmp_path / "s", "packs")) - packs
    assert len(new) == 1  # the copies and the four new pages, made unique by a nonce book
    [nonce] = set(fresh) - set(cids)
    assert fresh.get(nonce).startswith(b"oluo-pack-nonce ")
    # the old copies' second phase removes nothing a reader needs
    fresh.sweep(cids[:3], grace_s=0)
    assert [fresh.get(c) for c in cids] == pages and fresh.check()


def test_a_table_record_a_racing_put_packed_first_is_dropped(tmp_path):
    page = 2000
    pages = [xof(bytes([i]), page) for i in range(6)]
    rows = np.frombuffer(b"".join(CID.for_book(p).raw for p in pages), np.uint8).reshape(-1, 40)
    records = np.frombuffer(b"".join(RAW_HEADER + p for p in pages), np.uint8).reshape(6, -1)
    keys = [r.tobytes() for r in rows]
    s = PackStore(tmp_path / "s")
    with s.batch():
        s.put(pages[2])  # packed by another thread between the check and add_table
        s._batch.record(CID.for_book(pages[2]))  # waits until it is placed
        s._batch.add_table(keys, rows, records)
    fresh = PackStore(tmp_path / "s")
    held = [e.cid for doc in fresh._view.docs.values() for p in doc.packs for e in p.entries]
    assert sorted(held) == sorted(CID.for_book(p) for p in pages)
    assert [fresh.get(CID.for_book(p)) for p in pages] == pages and fresh.check()


@pytest.mark.parametrize("target", [1, 8, 9])
def test_a_target_below_the_pack_header_still_packs_one_record_each(tmp_path, target):
    s = PackStore(tmp_path / "s", fsync=False, target_pack_size=target)
    datas = [xof(bytes([i]), 3000) for i in range(3)]
    cids = s.put_many(datas)
    s.put_pages(b"".join(datas), 3000, raw=True)
    assert [PackStore(tmp_path / "s").get(c) for c in cids] == datas
    assert len(_files(tmp_path / "s", "packs")) == 3


def test_same_puts_same_packs_and_index(tmp_path):
    datas = [xof(bytes([i]), 40_000 + i) for i in range(30)] + [b"text " * 9000]
    for name in ("a", "b"):
        s = PackStore(tmp_path / name, target_pack_size=200_000)
        with s.batch():
            for data in datas:
                s.put(data)
    assert _files(tmp_path / "a", "packs") == _files(tmp_path / "b", "packs")
    assert _files(tmp_path / "a", "index") == _files(tmp_path / "b", "index")
    assert len(_files(tmp_path / "a", "packs")) == 7  # ~1.2 MB at a 200 kB target


def test_a_book_put_again_while_the_appender_moves_it_is_packed_once(tmp_path):
    """``book in batch`` asked while the appender thread moves the book from queued to
    placed (held open here) must not answer no: the book would be packed twice, and a
    pack (and index) listing a CID twice is unreadable."""
    store = PackStore(tmp_path / "s")
    data = xof(b"big", 1 << 20)  # one whole group: it goes to the encoder at once
    with store.batch():
        batch = store._batch
        encode = batch._encode
        batch._encode = lambda group: time.sleep(0.2) or encode(group)

        caller = threading.current_thread()

        class Placed(dict):
            def __contains__(self, cid):  # the caller's answer waits for the appender
                here = dict.__contains__(self, cid)
                deadline = time.monotonic() + 10
                while (
                    threading.current_thread() is caller
                    and not here
                    and cid in batch._queued
                    and time.monotonic() < deadline
                ):
                    if dict.__contains__(self, cid) and cid not in batch._queued:
                        break
                    time.sleep(0.005)
                return here

        batch._placed = Placed()
        cid = store.put(data)
        assert store.put(data) == cid
    fresh = PackStore(tmp_path / "s")
    assert fresh.check() and fresh.get(cid) == data and len(fresh) == 1


def test_a_book_queued_twice_is_packed_once(tmp_path):
    """Puts of one book racing on two threads may both queue it: the appender packs it once."""
    store = PackStore(tmp_path / "s")
    data = b"twice " * 1000
    with store.batch():
        cid = CID.for_book(data)
        store._batch.add(cid, data)
        store._batch.add(cid, data)
    fresh = PackStore(tmp_path / "s")
    assert fresh.check() and fresh.get(cid) == data and len(fresh) == 1


def test_a_group_of_books_already_packed_opens_no_pack(tmp_path):
    store = PackStore(tmp_path / "s", target_pack_size=1000)  # each book seals its pack
    data = b"once " * 1000
    cid = CID.for_book(data)
    with store.batch():
        store._batch.add(cid, data)
        store._batch._flush_group()
        store._batch.add(cid, data)  # a second group holding only a book already packed
    assert len(list((tmp_path / "s" / "packs").iterdir())) == 1
    fresh = PackStore(tmp_path / "s")
    assert fresh.check() and fresh.get(cid) == data and len(fresh) == 1


def test_packs_split_at_the_target_and_reopen(tmp_path):
    store = PackStore(tmp_path / "s", target_pack_size=300_000)
    data = xof(b"big", 3_000_000)
    root = ingest(data, store)
    sizes = [p.stat().st_size for p in (tmp_path / "s" / "packs").iterdir()]
    assert len(sizes) >= 9 and all(s < 300_000 + 270_000 for s in sizes)
    assert len(list((tmp_path / "s" / "index").iterdir())) == 1  # one batch, one index file
    again = PackStore(tmp_path / "s")
    assert reassemble(root, again) == data and len(again) == len(store)
    st = again.stats()
    assert st.books == len(store) and st.logical_bytes == sum(c.size for c in again)


def test_reads_coalesce_neighbouring_records(tmp_path, monkeypatch):
    store = PackStore(tmp_path / "s")
    datas = [xof(bytes([i]), 20_000) if i % 3 else b"z" * 20_000 for i in range(40)]
    with store.batch():
        cids = [store.put(d) for d in datas]
    calls = []
    orig = store.backend.read_scatter
    monkeypatch.setattr(store.backend, "read_scatter", lambda *a: calls.append(a[1]) or orig(*a))
    bufs = [bytearray(c.size) for c in cids]
    store.get_many_into(zip(cids[::-1], map(memoryview, bufs[::-1]), strict=True))
    assert [bytes(b) for b in bufs] == datas
    assert calls == [8]  # one read from the first record of the pack
    sub = cids[::5]  # records 80 kB apart: still one read
    calls.clear()
    store.get_many_into((c, memoryview(bytearray(c.size))) for c in sub)
    assert calls == [8]


def test_reads_coalesce_on_an_object_store(monkeypatch):
    store = PackStore("memory:///")
    datas = [xof(bytes([i]), 20_000) for i in range(30)]
    with store.batch():
        cids = [store.put(d) for d in datas]
    calls = []
    orig = store.backend.read_ranges
    monkeypatch.setattr(
        store.backend, "read_ranges", lambda key, s, n: calls.append(len(s)) or orig(key, s, n)
    )
    bufs = [bytearray(c.size) for c in cids]
    store.get_many_into(zip(cids, map(memoryview, bufs), strict=True))
    assert [bytes(b) for b in bufs] == datas and calls == [1]  # one range, one request


def test_the_same_book_twice_in_one_read(tmp_path):
    store = PackStore(tmp_path / "s")
    cid = store.put(b"twice " * 100)
    a, b = bytearray(cid.size), bytearray(cid.size)
    store.get_many_into([(cid, memoryview(a)), (cid, memoryview(b))])
    assert bytes(a) == bytes(b) == b"twice " * 100


def test_two_index_files_naming_one_record_for_two_books_never_share_the_bytes(tmp_path):
    """Index files at odds (a second one names book Y at book X's record): a read of both
    verifies each against its own CID; Y must never come back holding X's bytes."""
    store = PackStore(tmp_path / "s")
    x = store.put(xof(b"x", 5000))
    y = CID.for_book(xof(b"y", 5000))  # same size, never stored
    pid, e = store._view.loc[x]
    data = encode_index([PackRef(pid, store._view.sizes[pid], (Entry(y, e.offset, e.length),))])
    store.backend.put_create(f"index/{file_id(data)}.oli", data)
    fresh = PackStore(tmp_path / "s")
    a, b = bytearray(5000), bytearray(5000)
    with pytest.raises(CorruptBook) as info:
        fresh.get_many_into([(x, memoryview(a)), (y, memoryview(b))])
    assert info.value.cid == y and bytes(a) == xof(b"x", 5000)
    assert [p.cid for p in fresh.check().problems] == [y]


def test_a_reader_follows_a_repack_by_another_store_object(tmp_path):
    reader, writer = PackStore(tmp_path / "s"), None
    cids = [reader.put(xof(bytes([i]), 5000)) for i in range(6)]  # six tiny packs
    writer = PackStore(tmp_path / "s")
    rep = writer.sweep([cids[0]], grace_s=0)
    assert rep.books == 1 and rep.packs_written == 1 and rep.packs_deleted == 6
    assert reader.get(cids[3]) == xof(bytes([3]), 5000)  # its view named a deleted pack
    bufs = [bytearray(c.size) for c in cids[1:]]
    reader.get_many_into(zip(cids[1:], map(memoryview, bufs), strict=True))
    assert cids[0] not in reader and len(reader) == 5


# --- sweep: mark-then-repack ----------------------------------------------------------------
def _pack_names(store: PackStore) -> set[str]:
    return {i.name for i in store.backend.list("packs")}


def test_sweep_drops_repacks_and_keeps(tmp_path):
    store = PackStore(tmp_path / "s", target_pack_size=100_000, small_pack_size=0)
    groups = []
    for g in range(3):  # three packs of ten 10 kB books
        with store.batch():
            groups.append([store.put(xof(bytes([g, i]), 10_000)) for i in range(10)])
    packs = {store._view.loc[grp[0]][0] for grp in groups}
    assert len(packs) == 3
    before = {c: store._view.loc[c][1].length for grp in groups for c in grp}
    records = {c: store._read_record(*store._view.loc[c]) for c in groups[1]}
    doomed = groups[0] + groups[1][:1]  # pack 0 empty, pack 1 10% dead, pack 2 untouched
    dry = store.sweep(doomed, grace_s=0, dry_run=True)
    assert dry.books == 11 and len(_pack_names(store)) == 3 and len(store) == 30
    rep = store.sweep(doomed, grace_s=0)
    assert (rep.books, rep.packs_written, rep.packs_deleted) == (11, 1, 2)
    assert len(_pack_names(store)) == 2 and len(store) == 19
    assert store._view.loc[groups[2][0]][0] in packs  # untouched pack kept as it is
    for c in groups[1][1:]:  # copied verbatim, never recompressed
        assert bytes(store._read_record(*store._view.loc[c])) == bytes(records[c])
        assert store._view.loc[c][1].length == before[c]
    assert len(list((tmp_path / "s" / "index").iterdir())) == 1  # one index supersedes all
    assert all(c not in store for c in doomed)
    again = store.sweep([], grace_s=0)  # nothing left to do: nothing is rewritten
    assert (again.packs_written, again.packs_deleted) == (0, 0)
    assert len(list((tmp_path / "s" / "index").iterdir())) == 1
    assert store.check()


def test_sweep_merges_small_packs_and_respects_the_grace_period(tmp_path):
    store = PackStore(tmp_path / "s")  # every pack here is far below a quarter of 16 MiB
    cids = [store.put(xof(bytes([i]), 3000)) for i in range(5)]
    assert len(_pack_names(store)) == 5
    rep = store.sweep([cids[0]], grace_s=3600)  # the old packs are too young to delete
    assert rep.packs_written == 1 and rep.packs_deleted == 0 and rep.packs_young == 5
    assert len(_pack_names(store)) == 6 and store.check().info["unreferenced_packs"] == 5
    assert store.get(cids[4]) == xof(bytes([4]), 3000)
    rep = store.sweep([], grace_s=0)
    assert rep.packs_deleted == 5 and len(_pack_names(store)) == 1
    assert sorted(store) == sorted(cids[1:])


def test_sweep_rescues_needed_books_from_a_pack_the_index_lost(tmp_path):
    store = PackStore(tmp_path / "s")
    lost = store.put(b"needed but unindexed " * 100)
    kept = store.put(b"indexed " * 100)
    drop_index_entry(store, lost)
    assert lost not in store
    rep = store.sweep([], grace_s=0, keep={lost, kept})
    assert rep.packs_written == 1 and store.get(lost) == b"needed but unindexed " * 100
    lone = store.put(b"nobody needs me " * 100)
    drop_index_entry(store, lone)
    store.sweep([], grace_s=0, keep={lost, kept})  # not needed: its pack goes
    assert lone not in store and store.check().info["unreferenced_packs"] == 0


def test_a_book_put_again_after_a_sweep_is_found(tmp_path):
    """The same batch written again gives the same pack and index content; the index name
    must not be one the sweep's index supersedes (else the book would stay invisible)."""
    store = PackStore(tmp_path / "s")
    x = store.put(b"x" * 3000)
    assert store.put(b"y" * 3000) in store
    first = {p.name for p in (tmp_path / "s" / "index").iterdir()}
    store.sweep([x], grace_s=0)
    assert x not in store and len(list((tmp_path / "s" / "packs").iterdir())) == 1
    assert store.put(b"x" * 3000) == x
    again = {p.name for p in (tmp_path / "s" / "index").iterdir()}
    assert not again & first  # the old name (superseded) is not reused
    assert x in PackStore(tmp_path / "s") and PackStore(tmp_path / "s").get(x) == b"x" * 3000


def test_a_sweep_split_into_index_files_never_supersedes_one_it_writes(tmp_path, monkeypatch):
    """A large index is written as several files, only the last naming what it supersedes;
    an earlier one with the content of a live file must not take that file's name (the last
    one would then supersede it, and hide its books)."""
    monkeypatch.setattr(packs_module, "_INDEX_ENTRIES_MAX", 2)
    store = PackStore(tmp_path / "s", small_pack_size=0)
    cids = [store.put(xof(bytes([i]), 3000)) for i in range(6)]  # six packs
    by_pack = sorted(cids, key=lambda c: store._view.loc[c][0])
    store.sweep([by_pack[-1]], grace_s=0)  # index files of packs {0, 1}, {2, 3}, {4}
    store.sweep([by_pack[-2]], grace_s=0)  # {0, 1} again, then {2, 3} superseding the rest
    assert sorted(store) == sorted(by_pack[:-2])
    fresh = PackStore(tmp_path / "s")
    assert sorted(fresh) == sorted(by_pack[:-2]) and fresh.check()
    assert all(fresh.get(c) == xof(bytes([cids.index(c)]), 3000) for c in by_pack[:-2])


def test_a_sweep_stopped_between_two_of_its_index_files_hides_no_book(tmp_path, monkeypatch):
    monkeypatch.setattr(packs_module, "_INDEX_ENTRIES_MAX", 2)
    store = PackStore(tmp_path / "s", small_pack_size=0)
    cids = [store.put(xof(bytes([i]), 3000)) for i in range(6)]
    by_pack = sorted(cids, key=lambda c: store._view.loc[c][0])
    add_index, calls = PackStore._add_index, []

    def fail_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return add_index(self, *a, **k)

    monkeypatch.setattr(PackStore, "_add_index", fail_second)
    with pytest.raises(OSError):
        store.sweep([by_pack[-1]], grace_s=0)
    monkeypatch.setattr(PackStore, "_add_index", add_index)
    fresh = PackStore(tmp_path / "s", small_pack_size=0)
    assert sorted(fresh) == sorted(cids) and fresh.check()  # the old index is still live
    fresh.sweep([by_pack[-1]], grace_s=0)  # its first index file has the content of one live
    again = PackStore(tmp_path / "s")
    assert sorted(again) == sorted(by_pack[:-1]) and again.check()
    assert again.check().info["unreferenced_packs"] == 0


def test_delete_takes_a_book_out_of_the_index_only(tmp_path):
    store = PackStore(tmp_path / "s")
    with store.batch():
        a, b = store.put(b"a" * 100), store.put(b"b" * 100)
    store.delete(a)
    assert a not in store and store.get(b) == b"b" * 100
    assert len(_pack_names(store)) == 1  # the bytes stay until a sweep repacks
    assert store.check().info["unused_bytes"] > 0


def test_sweep_stops_with_a_typed_error_at_a_missing_pack_it_must_rewrite(tmp_path):
    store = PackStore(tmp_path / "s")  # three small packs: a sweep merges them
    cids = [store.put(xof(bytes([i]), 3000)) for i in range(3)]
    pid = store._view.loc[cids[0]][0]
    (tmp_path / "s" / "packs" / f"{pid}.olp").unlink()
    before = _files(tmp_path / "s", "index")
    with pytest.raises(CorruptStoreFile) as info:
        store.sweep([cids[1]], grace_s=0)
    assert info.value.name == f"packs/{pid}.olp" and "missing" in str(info.value)
    assert _files(tmp_path / "s", "index") == before and cids[1] in store
    assert store.get(cids[2]) == xof(bytes([2]), 3000)


def test_sweep_refuses_inside_a_batch(tmp_path):
    store = PackStore(tmp_path / "s")
    with store.batch(), pytest.raises(RuntimeError):
        store.sweep([], grace_s=0)


# --- check ----------------------------------------------------------------------------------
def test_check_finds_an_index_entry_the_trailer_does_not_list(tmp_path):
    store = PackStore(tmp_path / "s")
    with store.batch():
        a = store.put(b"first " * 50)
        store.put(b"second " * 50)
    (ident,) = store._view.live
    doc = store._view.docs[ident]
    (pack,) = doc.packs
    e0 = pack.entries[0]
    shifted = (Entry(e0.cid, e0.offset + 1, e0.length - 1), *pack.entries[1:])
    data = encode_index([PackRef(pack.id, pack.size, shifted)])
    store.backend.put_create(f"index/{file_id(data)}.oli", data)
    store.backend.delete(f"index/{ident}.oli")
    fresh = PackStore(tmp_path / "s")
    problems = fresh.check().problems
    assert [(p.where, p.cid) for p in problems] == [(f"packs/{pack.id}.olp", a)]
    with pytest.raises(CorruptBook) as info:
        fresh.get(a)
    assert info.value.cid == a


def test_check_names_a_missing_pack(tmp_path):
    store = PackStore(tmp_path / "s")
    cid = store.put(b"lost pack")
    pid = store._view.loc[cid][0]
    (tmp_path / "s" / "packs" / f"{pid}.olp").unlink()
    check = PackStore(tmp_path / "s").check()
    assert [p.where for p in check.problems] == [f"packs/{pid}.olp"]
    assert "missing" in check.problems[0].message and not check
    with pytest.raises(BookNotFound, match=pid):
        PackStore(tmp_path / "s").get(cid)


# --- decoders: every rule --------------------------------------------------------------------
def _vector_index_doc() -> dict:
    return cbor2.loads(bytes.fromhex(VECTOR_INDEX))


def _entry_bytes(cid: CID, off: int, length: int, zero: int = 0) -> bytes:
    return cid.raw + off.to_bytes(8, "big") + length.to_bytes(4, "big") + zero.to_bytes(4, "big")


HELLO = CID.for_book(b"hello")


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("not-a-map", lambda d: [1]),
        ("extra-key", lambda d: {**d, "x": 1}),
        ("format", lambda d: {**d, "format": "other"}),
        ("version", lambda d: {**d, "version": 2}),
        ("packs-not-list", lambda d: {**d, "packs": {}}),
        ("pack-keys", lambda d: {**d, "packs": [{"id": b"x"}]}),
        ("pack-id-short", lambda d: {**d, "packs": [{**d["packs"][0], "id": b"\x01" * 31}]}),
        ("pack-size-bool", lambda d: {**d, "packs": [{**d["packs"][0], "size": True}]}),
        ("pack-size-tiny", lambda d: {**d, "packs": [{**d["packs"][0], "size": 10}]}),
        ("entries-ragged", lambda d: {**d, "packs": [{**d["packs"][0], "entries": b"\x01" * 55}]}),
        ("entry-bad-cid", lambda d: {**d, "packs": [{**d["packs"][0], "entries": b"\xff" * 56}]}),
        (
            "entry-reserved",
            lambda d: {**d, "packs": [{**d["packs"][0], "entries": _entry_bytes(HELLO, 8, 21, 1)}]},
        ),
        (
            "entry-too-long",
            lambda d: {**d, "packs": [{**d["packs"][0], "entries": _entry_bytes(HELLO, 8, 22)}]},
        ),
        (
            "entry-in-header",
            lambda d: {**d, "packs": [{**d["packs"][0], "entries": _entry_bytes(HELLO, 4, 21)}]},
        ),
        (
            "entry-past-end",
            lambda d: {**d, "packs": [{**d["packs"][0], "entries": _entry_bytes(HELLO, 240, 21)}]},
        ),
        (
            "entries-overlap",
            lambda d: {
                **d,
                "packs": [
                    {
                        **d["packs"][0],
                        "entries": _entry_bytes(CID.for_book(b""), 8, 16)
                        + _entry_bytes(HELLO, 20, 21),
                    }
                ],
            },
        ),
        (
            "entries-repeat-cid",
            lambda d: {
                **d,
                "packs": [
                    {
                        **d["packs"][0],
                        "entries": _entry_bytes(HELLO, 8, 21) + _entry_bytes(HELLO, 40, 21),
                    }
                ],
            },
        ),
        ("pack-twice", lambda d: {**d, "packs": d["packs"] * 2}),
        ("supersedes-short", lambda d: {**d, "supersedes": [b"\x00" * 5]}),
        ("supersedes-unsorted", lambda d: {**d, "supersedes": [b"\x02" * 32, b"\x01" * 32]}),
    ],
)
def test_index_decoder_rejects(name, change):
    data = cbor2.dumps(change(_vector_index_doc()), canonical=True)
    with pytest.raises(CorruptStoreFile) as info:
        decode_index("index/x.oli", data)
    assert info.value.name.startswith("index/x.oli") and "index/x.oli" in str(info.value)


def test_index_decoder_rejects_non_canonical_and_garbage():
    doc = _vector_index_doc()
    with pytest.raises(CorruptStoreFile, match="canonical"):
        decode_index("i", cbor2.dumps(dict(reversed(doc.items()))))
    with pytest.raises(CorruptStoreFile, match="not CBOR"):
        decode_index("i", b"\xff\x00")
    with pytest.raises(CorruptStoreFile):
        decode_index("i", bytes.fromhex(VECTOR_INDEX) + b"\x00")


@pytest.mark.parametrize(
    ("name", "i", "value"),
    [
        ("magic", -8, 0x01),
        ("check", -12, 0x01),
        ("count", -17, 0x04),
        ("trailer-length-huge", -4, 0x7F),
        ("entry-offset", -50, 0x01),
    ],
)
def test_trailer_decoder_rejects(name, i, value):
    pack = bytearray.fromhex(VECTOR_PACK)
    pack[i] ^= value
    n = 3 * ENTRY_LEN + FOOTER_LEN
    with pytest.raises(CorruptStoreFile):
        parse_footer("p", bytes(pack[-FOOTER_LEN:]), len(pack))
        decode_trailer("p", bytes(pack[-n:]), len(pack))


def test_trailer_with_a_gap_between_records_is_refused():
    pack = bytes.fromhex(VECTOR_PACK)
    entries = decode_trailer("p", pack[-(3 * ENTRY_LEN + FOOTER_LEN) :], len(pack))
    moved = [
        entries[0],
        Entry(entries[1].cid, entries[1].offset + 1, entries[1].length - 1),
        entries[2],
    ]
    trailer = encode_trailer(moved)
    with pytest.raises(CorruptStoreFile, match="gap"):
        decode_trailer("p", trailer, len(pack))


# --- open_store, conversion, errors ----------------------------------------------------------
def test_open_store_picks_the_kind_on_disk(tmp_path):
    assert isinstance(open_store(tmp_path / "new"), PackStore)
    assert store_kind(tmp_path / "new") == "packs"
    assert isinstance(open_store(tmp_path / "d", kind="dir"), DirStore)
    assert isinstance(open_store(tmp_path / "d"), DirStore)  # what is there, whatever default
    with pytest.raises(ContentError, match="holds a 'dir' store"):
        open_store(tmp_path / "d", kind="packs")
    with pytest.raises(ContentError, match="a pack store"):
        DirStore(tmp_path / "new")
    with pytest.raises(ContentError, match="directory store"):
        PackStore(tmp_path / "d")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "oluo-cas-format").write_text("oluo-cas 9\n")
    with pytest.raises(ContentError, match="oluo-cas 9"):
        open_store(tmp_path / "odd")
    with pytest.raises(ValueError):
        open_store(tmp_path / "x", kind="zip")
    assert isinstance(open_store(f"file://{tmp_path / 'u'}"), PackStore)
    assert (tmp_path / "u" / "oluo-cas-format").read_text() == "oluo-cas 2\n"
    cid = open_store(tmp_path / "d").put(b"in a directory store")
    by_url = open_store(f"file://{tmp_path / 'd'}")  # the store there, not a new one
    assert isinstance(by_url, DirStore) and by_url.get(cid) == b"in a directory store"
    assert isinstance(open_store(f"file://{tmp_path / 'd2'}", kind="dir"), DirStore)
    assert (tmp_path / "d2" / "oluo-cas-format").read_text() == "oluo-cas 1\n"
    (tmp_path / "legacy" / "books").mkdir(parents=True)  # book files, no marker
    assert store_kind(tmp_path / "legacy") == "dir"
    with pytest.raises(ContentError, match="not a pack store"):
        PackStore(tmp_path / "legacy")
    assert not (tmp_path / "legacy" / "oluo-cas-format").exists()


def _dir_store_with_books(path: Path) -> tuple[DirStore, CID, bytes]:
    d = DirStore(path)
    data = xof(b"conv", 900_000) + b"\x00" * 300_000
    root = ingest(data, d)
    return d, root, data


def test_convert_to_packs(tmp_path):
    d, root, data = _dir_store_with_books(tmp_path / "s")
    records = {c: Path(d._locate(c)[1]).read_bytes() for c in d}
    rep = convert_to_packs(tmp_path / "s", target_pack_size=400_000)
    assert rep.switched and rep.books_packed == len(records) == rep.book_files_deleted
    assert not (tmp_path / "s" / "books").exists() and store_kind(tmp_path / "s") == "packs"
    store = open_store(tmp_path / "s")
    assert isinstance(store, PackStore) and sorted(store) == sorted(records)
    for cid, record in records.items():  # copied verbatim
        assert bytes(store._read_record(*store._view.loc[cid])) == record
    assert reassemble(root, store) == data and store.check()
    again = convert_to_packs(tmp_path / "s")
    assert (again.books_packed, again.book_files_deleted, again.switched) == (0, 0, False)


def test_convert_stops_at_a_damaged_book_before_deleting_anything(tmp_path):
    d, root, _ = _dir_store_with_books(tmp_path / "s")
    victim = sorted(d)[3]
    damage_book(d, victim, "flip")
    with pytest.raises(CorruptBook) as info:
        convert_to_packs(tmp_path / "s")
    assert info.value.cid == victim
    assert store_kind(tmp_path / "s") == "dir" and len(DirStore(tmp_path / "s")) == len(d)


def test_convert_finishes_after_the_switch(tmp_path):
    d, root, data = _dir_store_with_books(tmp_path / "s")
    late = d.put(b"written after the packs")  # as if added between two runs
    n = len(d)
    rep = convert_to_packs(tmp_path / "s")
    assert late in open_store(tmp_path / "s") and rep.books_packed == n
    # an interrupted run: the marker says packs but some book files are still there
    (tmp_path / "t").mkdir()
    d2, root2, data2 = _dir_store_with_books(tmp_path / "t")
    convert_to_packs(tmp_path / "t")
    DirStore(tmp_path / "u").put(b"extra")
    (tmp_path / "t" / "books" / "00").mkdir(parents=True)
    extra = next((tmp_path / "u" / "books").glob("*/01*"))
    (tmp_path / "t" / "books" / "00" / extra.name).write_bytes(extra.read_bytes())
    rep = convert_to_packs(tmp_path / "t")
    assert rep.books_packed == 1 and rep.book_files_deleted == 1 and not rep.switched
    assert open_store(tmp_path / "t").get(CID.parse(extra.name)) == b"extra"
    assert not (tmp_path / "t" / "books").exists()


def test_a_read_back_racing_the_publish_of_its_pack(tmp_path, monkeypatch):
    """A book put in a batch may be read back on one thread while the I/O thread publishes
    its pack and closes the temp file: the read must not use the closed descriptor."""
    backend = PackStore(tmp_path / "s").backend
    sink = backend.new_sink("packs")
    sink.append(b"x" * 100)
    pread = _io.pread_into
    publishing = threading.Thread(target=sink.publish, args=("packs/p.olp",))

    def publish_meanwhile(fd, buf, offset):
        publishing.start()
        publishing.join(0.5)  # done by now, unless it waits for this read
        return pread(fd, buf, offset)

    monkeypatch.setattr(_io, "pread_into", publish_meanwhile)
    assert sink.read(10, 5) == b"x" * 5
    publishing.join()
    monkeypatch.undo()
    assert sink.read(10, 5) == b"x" * 5 and (tmp_path / "s" / "packs" / "p.olp").exists()


def test_os_errors_are_typed_and_name_file_and_operation(tmp_path, monkeypatch):
    store = PackStore(tmp_path / "s")
    before = _files(tmp_path / "s", "index"), _files(tmp_path / "s", "packs")

    def eio(*a):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_io, "fsync_fd", eio)
    with pytest.raises(StoreIOError) as info:
        store.put(b"x" * 5000)
    err = info.value
    assert err.op == "fsync" and err.name.startswith("packs/.tmp-") and err.errno == errno.EIO
    assert isinstance(err, OSError) and isinstance(err, ContentError)
    assert "cannot fsync packs/" in str(err)
    assert pickle.loads(pickle.dumps(err)).name == err.name
    monkeypatch.undo()
    assert (_files(tmp_path / "s", "index"), _files(tmp_path / "s", "packs")) == before
    assert len(PackStore(tmp_path / "s")) == 0 and not list((tmp_path / "s").glob("packs/*"))
    (tmp_path / "f").write_text("a file")
    with pytest.raises(StoreIOError) as info:
        PackStore(tmp_path / "f" / "s")
    assert (info.value.op, info.value.name) == ("open", "oluo-cas-format")


@pytest.mark.parametrize("where", ["header", "trailer"])
def test_a_pack_that_fails_to_start_or_seal_leaves_no_descriptor_or_temp_file(
    tmp_path, monkeypatch, where
):
    store = PackStore(tmp_path / "s")
    fds = len(os.listdir("/proc/self/fd"))

    def enospc(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "header":  # the pack's first write
        monkeypatch.setattr(_io, "write_all", enospc)
    else:
        monkeypatch.setattr(_packbatch, "encode_trailer_table", enospc)
    with pytest.raises(OSError) as info:
        store.put(b"x" * 5000)
    assert info.value.errno == errno.ENOSPC
    assert len(os.listdir("/proc/self/fd")) == fds
    assert not list((tmp_path / "s" / "packs").iterdir())
    monkeypatch.undo()
    assert store.get(store.put(b"x" * 5000)) == b"x" * 5000


def test_a_book_the_failed_batch_never_packed_reads_as_the_write_error(tmp_path, monkeypatch):
    store = PackStore(tmp_path / "s")
    first, second = xof(b"first", 5000), xof(b"second", 5000)
    go = threading.Event()
    add_run = _packbatch.PackBuilder.add_run

    def full_disk(builder, records):
        if records[0][0] == CID.for_book(first):
            go.wait(10)  # the second book is queued before this write fails
            raise StoreIOError("write", "packs/tmp", OSError(errno.ENOSPC, "No space left"))
        return add_run(builder, records)

    monkeypatch.setattr(_packbatch.PackBuilder, "add_run", full_disk)
    seen: list[BaseException] = []
    with pytest.raises(StoreIOError), store.batch():
        store.put_many([first], raw=True)
        [cid] = store.put_many([second], raw=True)
        go.set()
        try:
            store.get(cid)
        except BaseException as exc:  # noqa: BLE001 - the block's own error is raised on exit
            seen.append(exc)
    assert [type(e) for e in seen] == [StoreIOError]  # the appender's error, not a KeyError
    monkeypatch.undo()
    assert cid not in store and store.get(store.put(second)) == second


def test_bad_arguments(tmp_path):
    for kwargs in ({"level": 0}, {"level": 23}, {"target_pack_size": 0}, {"max_unused": 1.0},
                   {"workers": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            PackStore(tmp_path / "s", **kwargs)
    with pytest.raises(TypeError, match="no options"):
        PackStore(tmp_path / "s", endpoint="http://127.0.0.1:1")
    assert not (tmp_path / "s").exists()


# --- on the moto S3 server ------------------------------------------------------------------
def test_s3_store_from_environment_variables(s3, monkeypatch):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    url = s3.url("env")
    store = PackStore(url)
    cid = store.put(b"from the environment")
    assert PackStore(url).get(cid) == b"from the environment"
    assert repr(store) == f"PackStore({url!r}, level=1)"


def test_s3_two_writers_of_the_same_batch(s3):
    url = s3.url("twice")
    a, b = PackStore(url, **s3.options), PackStore(url, **s3.options)
    for store in (a, b):  # the second finds every pack and index already there: success
        with store.batch():
            for i in range(5):
                store.put(xof(bytes([i]), 30_000))
    assert len(PackStore(url, **s3.options)) == 5
    assert len(a.backend.list("packs")) == 1 and len(a.backend.list("index")) == 1


def test_s3_sweep_and_check(s3):
    store = PackStore(s3.url("sweep"), two_phase=False, **s3.options)
    cids = [store.put(xof(bytes([i]), 4000)) for i in range(4)]
    rep = store.sweep(cids[:1], grace_s=0)
    assert rep.packs_written == 1 and rep.packs_deleted == 4
    assert sorted(store) == sorted(cids[1:]) and store.check()
    assert [i.name for i in store.backend.list("index")] == [f"{store._view.live[0]}.oli"]


def test_s3_sweep_is_two_phase_tombstones_first_and_writers_revive(s3, tmp_path):
    url = s3.url("two-phase")
    store = PackStore(url, **s3.options)
    assert store.two_phase and not PackStore(tmp_path / "local").two_phase
    cids = [store.put(xof(bytes([i]), 4000)) for i in range(4)]
    first = store.sweep(cids[:2], grace_s=0)
    # phase 1: tombstones only; the books stay readable until a later sweep
    assert (first.tombstoned, first.pending, first.books) == (2, 0, 0)
    assert sorted(store) == sorted(cids) and store.get(cids[0]) == xof(bytes([0]), 4000)
    assert store.tombstoned() == set(cids[:2]) == PackStore(url, **s3.options).tombstoned()
    assert not store.reusable(cids[0]) and store.reusable(cids[2]) and store.has(cids[0])
    [tomb] = store.backend.list("tombstones")
    assert decode_tombstones("t", store.backend.read(f"tombstones/{tomb.name}")) == {
        store._view.loc[c][0]: (c,) for c in cids[:2]
    }
    # a writer needing a tombstoned book puts it again (a new pack), which revives it
    writer = PackStore(url, **s3.options)
    packs = len(writer.backend.list("packs"))
    assert writer.put(xof(bytes([0]), 4000)) == cids[0]
    assert len(writer.backend.list("packs")) == packs + 1
    assert store.tombstoned() == {cids[1]}
    # the new pack holds a nonce book (garbage for a later gc) besides the copy: a pack
    # of only the same records again would have the old pack's name (and its tombstone)
    [nonce] = set(store) - set(cids)
    assert store.get(nonce).startswith(b"oluo-pack-nonce ")
    # phase 2 waits for the grace period, then removes what is still tombstoned and doomed
    waiting = store.sweep(cids[1:2], grace_s=3600)
    assert (waiting.books, waiting.pending, waiting.tombstoned) == (0, 1, 0)
    done = store.sweep(cids[1:2], grace_s=0)
    assert done.books == 1 and cids[1] not in store and cids[0] in store
    assert store.check() and sorted(store) == sorted([cids[0], *cids[2:], nonce])
    # a revived book doomed again starts over: tombstoned now, removed by the next sweep
    again = store.sweep([cids[0], nonce], grace_s=0)
    assert (again.books, again.tombstoned) == (0, 2) and cids[0] in store
    assert store.sweep([cids[0], nonce], grace_s=0).books == 2 and cids[0] not in store
    assert store.sweep([], grace_s=0).tombstoned == 0 and not store.backend.list("tombstones")
    assert store.check() and sorted(store) == sorted(cids[2:])


def test_s3_bad_inputs_change_nothing(s3):
    url = s3.url("bad")
    store = PackStore(url, **s3.options)
    store.put(b"keep me")
    listing = sorted(i.name for d in ("", "packs", "index") for i in store.backend.list(d))
    with pytest.raises(StoreIOError) as info:  # no such bucket
        PackStore("s3://no-such-bucket/x", **s3.options).put(b"y")
    assert info.value.name and "no-such-bucket" not in info.value.name
    with pytest.raises(BookTooLarge):
        store.put(b"\x00" * (MAX_BOOK_SIZE + 1))
    with pytest.raises(CorruptBook):
        store.put_raw(CID.for_book(b"a"), b"b")
    with pytest.raises(TypeError):
        store.get("not a cid")
    with pytest.raises(BookNotFound):
        store.delete(CID.for_book(b"never"))
    store.backend.put_replace("oluo-cas-format", b"oluo-cas 7\n")
    with pytest.raises(ContentError, match="oluo-cas 7"):
        PackStore(url, **s3.options)
    store.backend.put_replace("oluo-cas-format", b"oluo-cas 2\n")
    after = sorted(i.name for d in ("", "packs", "index") for i in store.backend.list(d))
    assert after == listing and PackStore(url, **s3.options).get(CID.for_book(b"keep me"))
