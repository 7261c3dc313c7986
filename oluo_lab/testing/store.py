"""The conformance suite every ``BookStore`` must pass, as pytest tests.

Layer: testing, on top of ``oluo_lab.cas`` only. It imports pytest, which is a development
dependency, so nothing in the package imports this module: a test module does.

The suite states the public contract of a book store: ``put`` is idempotent and returns
the book's CID, ``get`` re-verifies length and blake3 on every read and names the CID in
``BookNotFound`` / ``CorruptBook``, a store-side corruption is always detected, ``delete``
of an absent book raises, iteration is sorted, ``stats`` adds up, a ``batch()`` is
readable inside and durable after, and whole blobs round-trip through ``ingest``.

A store written outside this package proves itself by subclassing
:class:`StoreConformance` in a test module, naming the class ``Test...`` so pytest
collects it, and implementing two hooks: ``make_store`` (a fresh, empty store) and
``corrupt`` (damage one stored book behind the store's back)::

    # test_my_store.py
    from oluo_lab.testing.store import StoreConformance

    from my_package import DictStore


    class TestDictStore(StoreConformance):
        def make_store(self, tmp_path):
            return DictStore()

        def corrupt(self, store, cid, how):
            books = store.books  # wherever the store keeps its bytes
            if how == "flip":
                b = bytearray(books[cid])
                b[len(b) // 2] ^= 0x01
                books[cid] = bytes(b)
            elif how == "truncate":
                books[cid] = books[cid][:-1]
            elif how == "delete":
                del books[cid]
            elif how == "swap":
                books[cid] = next(v for k, v in books.items() if k != cid)

Then ``python -m pytest test_my_store.py`` runs every test below against ``DictStore``;
a subclass adds its store's own tests beside them.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path

import blake3
import numpy as np
import pytest

from oluo_lab.cas import (
    CID,
    FINE_CHUNK_PARAMS,
    FINE_FANOUT,
    MAX_BOOK_SIZE,
    BookNotFound,
    BookStore,
    BookTooLarge,
    CorruptBook,
    MalformedBundle,
    MalformedCID,
    blob_info,
    ingest,
    ingest_pages,
    iter_chunks,
    open_blob,
    reassemble,
)

__all__ = ["CORRUPTIONS", "StoreConformance", "xof"]

#: The ways ``StoreConformance.corrupt`` must be able to damage a stored book.
CORRUPTIONS = ("flip", "truncate", "delete", "swap")


def xof(seed: bytes, n: int) -> bytes:
    """``n`` deterministic, incompressible bytes derived from ``seed`` (blake3 XOF)."""
    return blake3.blake3(seed).digest(length=n)


class StoreConformance(ABC):
    """Behaviour shared by every book store. Subclasses implement the two hooks below.

    pytest creates one store per test through the ``store`` fixture, which calls
    :meth:`make_store` with pytest's ``tmp_path``.
    """

    @abstractmethod
    def make_store(self, tmp_path: Path) -> BookStore:
        """A fresh, empty store (``tmp_path`` is a new directory it may use)."""

    @abstractmethod
    def corrupt(self, store: BookStore, cid: CID, how: str) -> None:
        """Damage ``cid``'s stored form behind the store's back, ``how`` one of
        ``CORRUPTIONS``: ``"flip"`` one bit of the stored bytes, ``"truncate"`` them by a
        byte, ``"delete"`` the book, or ``"swap"`` in another stored book's bytes."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> BookStore:
        return self.make_store(tmp_path)

    # --- put / get ------------------------------------------------------------------------
    @pytest.mark.parametrize("data", [b"", b"x", b"hello world" * 1000, None])
    def test_put_get_round_trip(self, store, data):
        data = xof(b"rt", 300_000) if data is None else data
        cid = store.put(data)
        assert cid == CID.for_book(data)
        assert cid.kind == "book" and cid.size == len(data)
        assert store.get(cid) == data
        assert isinstance(store.get(cid), bytes)

    def test_put_accepts_buffers(self, store):
        data = xof(b"buf", 5000)
        a = store.put(bytearray(data))
        b = store.put(memoryview(data)[100:200])
        assert store.get(a) == data
        assert store.get(b) == data[100:200]

    def test_put_is_idempotent(self, store):
        c1 = store.put(b"same")
        c2 = store.put(b"same")
        assert c1 == c2 and len(store) == 1

    def test_max_book_size_boundary(self, store):
        data = xof(b"max", MAX_BOOK_SIZE)
        assert store.get(store.put(data)) == data
        with pytest.raises(BookTooLarge):
            store.put(data + b"!")
        assert len(store) == 1

    def test_put_many_is_put_for_each(self, store):
        old = store.put(b"stored before")
        buf = bytearray(b"reused buffer 1")
        chunks = [b"a", b"stored before", b"a", xof(b"pm", 9000), buf, b""]
        cids = store.put_many(chunks)
        buf[-1:] = b"2"  # the caller may reuse its buffer once put_many returns
        want = [b"a", b"stored before", b"a", xof(b"pm", 9000), b"reused buffer 1", b""]
        assert cids == [CID.for_book(d) for d in want] and cids[1] == old
        assert [store.get(c) for c in cids] == want
        assert len(store) == 5
        with pytest.raises(BookTooLarge):
            store.put_many([b"fine", xof(b"max", MAX_BOOK_SIZE) + b"!"])
        # raw=True only permits skipping compression: same CIDs, same bytes back
        zeros = [bytes(3000), b"z" * 9000, b"a"]
        assert store.put_many(zeros, raw=True) == [CID.for_book(d) for d in zeros]
        assert [store.get(CID.for_book(d)) for d in zeros] == zeros

    def test_get_missing_names_cid(self, store):
        cid = CID.for_book(b"never stored")
        with pytest.raises(BookNotFound) as ei:
            store.get(cid)
        assert ei.value.cid == cid and cid.hex in str(ei.value)

    def test_get_rejects_non_cid(self, store):
        with pytest.raises(TypeError):
            store.get(CID.for_book(b"a").hex)

    def test_get_many_keeps_order(self, store):
        datas = [xof(bytes([i]), 1000 * (i + 1)) for i in range(6)]
        cids = [store.put(d) for d in datas]
        order = [5, 0, 3, 3, 1]
        assert list(store.get_many([cids[i] for i in order])) == [datas[i] for i in order]

    def test_get_into_fills_exactly_the_buffer(self, store):
        data = b"into " * 3000
        cid = store.put(data)
        buf = bytearray(cid.size)
        store.get_into(cid, memoryview(buf))
        assert bytes(buf) == data
        with pytest.raises(ValueError):
            store.get_into(cid, memoryview(bytearray(cid.size + 1)))

    def test_get_many_into_names_the_first_bad_book(self, store):
        # Enough bytes that a store reading on several threads splits them into runs.
        datas = [xof(bytes([i]), 300_000) if i % 2 else bytes([i]) * 300_000 for i in range(12)]
        cids = [store.put(d) for d in datas]
        bufs = [bytearray(c.size) for c in cids]
        store.get_many_into(zip(cids, map(memoryview, bufs), strict=True))
        assert [bytes(b) for b in bufs] == datas
        self.corrupt(store, cids[10], "flip")
        self.corrupt(store, cids[1], "flip")
        with pytest.raises(CorruptBook) as ei:
            store.get_many_into((c, memoryview(bytearray(c.size))) for c in cids)
        assert ei.value.cid == cids[1]

    def test_put_pages_is_put_many_of_the_pages(self, store):
        page = 2000
        stored_before = xof(b"p3", page)
        store.put(stored_before)
        pages = [xof(bytes([i % 5]), page) for i in range(9)]  # repeats among them
        pages[3] = stored_before
        for raw, tail in ((True, b"tail"), (False, b""), (True, b"")):
            data = bytearray(b"".join(pages) + tail)
            rows = store.put_pages(data, page, raw=raw)
            data[:] = bytes(len(data))  # the caller may reuse its buffer once it returns
            want = [*pages, tail] if tail else pages
            assert rows.shape == (len(want), 40) and rows.dtype == np.uint8
            assert [CID.from_bytes(r.tobytes()) for r in rows] == [CID.for_book(p) for p in want]
            assert [store.get(CID.for_book(p)) for p in want] == want
        assert len(store) == 7  # six distinct pages (one stored before) and the tail
        assert store.put_pages(b"", page).shape == (0, 40)
        assert store.put_pages(b"short", page, raw=True).tobytes() == CID.for_book(b"short").raw
        with pytest.raises(ValueError):
            store.put_pages(b"abc", 0)

    def test_get_concat_into_fills_the_books_back_to_back(self, store):
        datas = [xof(bytes([i]), 40_000) if i % 2 else bytes([i]) * 30_000 for i in range(10)]
        cids = [store.put(d) for d in datas]
        order = [7, 0, 3, 3, 9, 1, 7]  # out of store order, with books asked twice
        want = b"".join(datas[i] for i in order)
        raw = b"".join(cids[i].raw for i in order)
        out = bytearray(len(want))
        store.get_concat_into(raw, memoryview(out))
        assert bytes(out) == want
        rows = np.frombuffer(raw, np.uint8).reshape(-1, 40)
        out = bytearray(len(want))
        store.get_concat_into(rows, memoryview(out))
        assert bytes(out) == want
        store.get_concat_into(b"", memoryview(bytearray(0)))
        with pytest.raises(ValueError):
            store.get_concat_into(raw, memoryview(bytearray(len(want) + 1)))
        with pytest.raises(ValueError):
            store.get_concat_into(rows[:, :20], memoryview(bytearray(len(want))))
        with pytest.raises(MalformedCID):
            store.get_concat_into(b"\x02" + raw[1:], memoryview(bytearray(len(want))))

    def test_get_concat_into_names_the_first_bad_book(self, store):
        datas = [xof(bytes([i]), 300_000) if i % 2 else bytes([i]) * 300_000 for i in range(12)]
        cids = [store.put(d) for d in datas]
        absent = CID.for_book(b"never stored")
        self.corrupt(store, cids[10], "flip")
        self.corrupt(store, cids[3], "flip")
        order = [cids[k] for k in (0, 10, 2, 3, 11, 10)]
        out = memoryview(bytearray(sum(c.size for c in order)))
        with pytest.raises(CorruptBook) as ei:
            store.get_concat_into(b"".join(c.raw for c in order), out)
        assert ei.value.cid == cids[10]
        order = [cids[0], absent, cids[3]]
        out = memoryview(bytearray(sum(c.size for c in order)))
        with pytest.raises(BookNotFound) as nf:
            store.get_concat_into(b"".join(c.raw for c in order), out)
        assert nf.value.cid == absent

    def test_has_contains_len_iter(self, store):
        cids = [store.put(bytes([i]) * (i + 1)) for i in range(20)]
        other = CID.for_book(b"absent")
        assert all(store.has(c) and c in store for c in cids)
        assert not store.has(other) and other not in store
        assert "not a cid" not in store
        assert len(store) == 20
        assert list(store) == sorted(cids)

    def test_delete(self, store):
        a, b = store.put(b"a"), store.put(b"b")
        store.delete(a)
        assert a not in store and b in store and len(store) == 1
        with pytest.raises(BookNotFound) as ei:
            store.delete(a)
        assert ei.value.cid == a
        with pytest.raises(BookNotFound):
            store.get(a)

    def test_stored_size_and_mtime(self, store):
        before = time.time()
        cid = store.put(b"timed book" * 100)
        assert 0 < store.stored_size(cid) <= cid.size + 64
        assert before - 2 <= store.book_mtime(cid) <= time.time() + 2
        missing = CID.for_book(b"never stored")
        with pytest.raises(BookNotFound) as ei:
            store.book_mtime(missing)
        assert ei.value.cid == missing
        with pytest.raises(BookNotFound):
            store.stored_size(missing)

    # --- bundles / raw puts ----------------------------------------------------------------
    def test_put_bundle_derives_depth(self, store):
        leaves = [store.put(bytes([i])) for i in range(3)]
        b1 = store.put_bundle(b"".join(c.raw for c in leaves))
        assert b1.kind == "bundle" and b1.depth == 1 and b1.size == 120
        b2 = store.put_bundle(b1.raw + leaves[0].raw)
        assert b2.depth == 2
        assert store.get(b2) == b1.raw + leaves[0].raw

    def test_put_bundle_rejects_bad_bytes(self, store):
        leaf = store.put(b"leaf")
        with pytest.raises(MalformedBundle):
            store.put_bundle(leaf.raw + b"\x00")
        with pytest.raises(MalformedBundle):
            store.put_bundle(b"\xff" * 40)
        with pytest.raises(MalformedBundle, match="entry 1 is not a CID"):
            store.put_bundle(leaf.raw + b"\x01\x00\x01" + leaf.raw[3:])  # a book at depth 1
        with pytest.raises(MalformedBundle):
            store.put_bundle(b"")
        assert len(store) == 1

    def test_put_raw_checks_hash(self, store):
        cid = CID.for_book(b"payload")
        with pytest.raises(CorruptBook) as ei:
            store.put_raw(cid, b"other bytes")
        assert ei.value.cid == cid and len(store) == 0
        assert store.put_raw(cid, b"payload") == cid and store.get(cid) == b"payload"

    # --- corruption --------------------------------------------------------------------------
    @pytest.mark.parametrize("how", ["flip", "truncate", "swap"])
    @pytest.mark.parametrize("kind", ["compressible", "random"])
    def test_corruption_detected(self, store, how, kind):
        data = b"abc" * 20_000 if kind == "compressible" else xof(b"c", 60_000)
        cid = store.put(data)
        store.put(b"another valid book")
        self.corrupt(store, cid, how)
        with pytest.raises(CorruptBook) as ei:
            store.get(cid)
        assert ei.value.cid == cid and cid.hex in str(ei.value)

    def test_deleted_behind_back(self, store):
        cid = store.put(b"gone")
        self.corrupt(store, cid, "delete")
        with pytest.raises(BookNotFound) as ei:
            store.get(cid)
        assert ei.value.cid == cid

    def test_corrupt_leaf_named_by_reassemble(self, store):
        data = xof(b"leafy", 700_000)
        root = ingest(data, store)
        leaf = sorted(c for c in store if c.kind == "book")[0]
        self.corrupt(store, leaf, "flip")
        with pytest.raises(CorruptBook) as ei:
            reassemble(root, store)
        assert ei.value.cid == leaf

    # --- stats / batch / DAG ---------------------------------------------------------------------
    def test_stats(self, store):
        assert store.stats().books == 0
        store.put(b"x" * 1000)
        store.put(b"y" * 10)
        st = store.stats()
        assert st.books == 2 and st.logical_bytes == 1010
        assert st.stored_bytes > 0
        assert st.compression_ratio == pytest.approx(st.logical_bytes / st.stored_bytes)
        assert st.as_dict()["books"] == 2
        assert list(st.to_frame().columns) == [
            "books",
            "logical_bytes",
            "stored_bytes",
            "compression_ratio",
        ]

    def test_batch_visible_inside_and_after(self, store):
        with store.batch():
            cid = store.put(b"in batch" * 100)
            assert cid in store and store.get(cid) == b"in batch" * 100
            assert store.put(b"in batch" * 100) == cid
        assert store.get(cid) == b"in batch" * 100 and len(store) == 1

    def test_ingest_round_trip(self, store):
        data = xof(b"dag", 2_000_000) + b"\x00" * 500_000
        root = ingest(data, store)
        assert root.kind == "bundle"
        assert reassemble(root, store) == data
        assert b"".join(iter_chunks(root, store)) == data
        with open_blob(root, store) as f:
            assert f.read() == data
        assert ingest(data, store) == root

    def test_fine_and_paged_blobs_round_trip_and_dedupe(self, store):
        # vectors are stored as a paged blob of whole rows, engine metadata as a fine blob
        rows, page = bytearray(xof(b"rows", 200 * 1000)), 200 * 10
        root = ingest_pages(rows, store, page, fanout=FINE_FANOUT)
        fine = ingest(xof(b"fine", 300_000), store, params=FINE_CHUNK_PARAMS, fanout=FINE_FANOUT)
        assert reassemble(root, store) == rows
        assert reassemble(fine, store) == xof(b"fine", 300_000)
        before = len(store)
        assert ingest_pages(rows, store, page, fanout=FINE_FANOUT) == root
        assert len(store) == before  # stored again: no new book
        rows[200 * 345 : 200 * 346] = bytes(200)  # one row zeroed: one new page
        again = blob_info(ingest_pages(rows, store, page, fanout=FINE_FANOUT), store)
        assert len(set(again.leaves) - set(blob_info(root, store).leaves)) == 1
        assert len(again.bundles) == 3  # 100 pages: a root over two bundles
        assert len(store) - before == 3  # the page, its bundle and the root
        assert reassemble(again.cid, store) == rows

    def test_repr_is_deterministic(self, store):
        r = repr(store)
        assert "0x" not in r and os.sep + "tmp" not in r
        assert repr(store) == r
