"""MemoryStore and DirStore run the shared conformance suite, plus DirStore specifics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from oluo_lab.cas import (
    CID,
    DEFAULT_GC_GRACE_S,
    ContentError,
    CorruptBook,
    DirStore,
    MemoryStore,
    blob_info,
    ingest,
    reassemble,
)
from oluo_lab.cas._bookfile import HEADER_LEN
from oluo_lab.cas.directory import TMP_PREFIX
from oluo_lab.testing.store import StoreConformance, xof

REPO = Path(__file__).resolve().parents[2]


class TestMemoryStore(StoreConformance):
    def make_store(self, tmp_path):
        return MemoryStore()

    def corrupt(self, store, cid, how):
        books = store._books
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

    def test_repr(self):
        s = MemoryStore()
        s.put(b"a")
        assert repr(s) == "MemoryStore(books=1)"


def book_path(store: DirStore, cid: CID) -> Path:
    return Path(store._locate(cid)[1])


def dir_corrupt(store, cid, how):
    p = book_path(store, cid)
    raw = p.read_bytes()
    if how == "flip":
        b = bytearray(raw)
        b[HEADER_LEN + (len(raw) - HEADER_LEN) // 2] ^= 0x01
        p.write_bytes(bytes(b))
    elif how == "truncate":
        p.write_bytes(raw[:-1])
    elif how == "delete":
        p.unlink()
    elif how == "swap":
        other = next(c for c in store if c != cid)
        p.write_bytes(book_path(store, other).read_bytes())
    elif how == "garbage":
        p.write_bytes(os.urandom(len(raw)))
    elif how == "append":
        p.write_bytes(raw + b"\x00")
    elif how == "empty":
        p.write_bytes(b"")


class TestDirStore(StoreConformance):
    def make_store(self, tmp_path):
        return DirStore(tmp_path / "cas")

    def corrupt(self, store, cid, how):
        dir_corrupt(store, cid, how)

    def test_layout_and_header(self, tmp_path):
        s = DirStore(tmp_path / "cas", level=5)
        cid = s.put(b"z" * 10_000)
        p = book_path(s, cid)
        assert p.parent.name == cid.digest[:1].hex() and p.name == cid.hex
        raw = p.read_bytes()
        assert raw[:4] == b"OLB1" and raw[4] == 1 and raw[5] == 5 and raw[6:8] == b"\0\0"
        rcid = s.put(xof(b"r", 1000))
        rraw = book_path(s, rcid).read_bytes()
        assert rraw[:HEADER_LEN] == b"OLB1" + bytes(12) and rraw[HEADER_LEN:] == xof(b"r", 1000)

    def test_level_change_keeps_cids(self, tmp_path):
        data = b"vector " * 20_000
        a = DirStore(tmp_path / "a", level=1).put(data)
        b = DirStore(tmp_path / "b", level=19).put(data)
        assert a == b
        s = DirStore(tmp_path / "a", level=19)  # books written at level 1 still read
        assert s.get(a) == data

    @pytest.mark.parametrize(
        "data",
        [b"hello world " * 300, xof(b"raw", 3000), b"", b"x", bytes(range(256)) * 40],
        ids=["text", "random", "empty", "one", "pattern"],
    )
    def test_every_single_byte_flip_detected(self, tmp_path, data):
        s = DirStore(tmp_path / "cas", fsync=False)
        cid = s.put(data)
        p = book_path(s, cid)
        orig = p.read_bytes()
        positions = (
            range(len(orig))
            if len(orig) <= 400
            else list(range(64)) + list(range(64, len(orig), max(1, len(orig) // 200)))
        )
        for i in positions:
            for mask in (0x01, 0x80):
                b = bytearray(orig)
                b[i] ^= mask
                p.write_bytes(bytes(b))
                with pytest.raises(CorruptBook) as ei:
                    s.get(cid)
                assert ei.value.cid == cid
        for n in range(len(orig)):
            p.write_bytes(orig[:n])
            with pytest.raises(CorruptBook):
                s.get(cid)
        p.write_bytes(orig)
        assert s.get(cid) == data

    @pytest.mark.parametrize("how", ["garbage", "append", "empty"])
    def test_more_corruptions(self, tmp_path, how):
        s = DirStore(tmp_path / "cas", fsync=False)
        cid = s.put(b"glove-ish " * 5000)
        dir_corrupt(s, cid, how)
        with pytest.raises(CorruptBook) as ei:
            s.get(cid)
        assert cid.hex in str(ei.value)

    def test_iteration_skips_temp_and_foreign_files(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        cid = s.put(b"real")
        d = book_path(s, cid).parent
        (d / f"{TMP_PREFIX}123-abc").write_bytes(b"partial")
        (d / "notes.txt").write_text("hi")
        (d / cid.hex.upper()).write_bytes(b"x")
        other = CID.for_book(b"misplaced")
        wrong_dir = next(p for p in d.parent.iterdir() if p.name != other.digest[:1].hex())
        (wrong_dir / other.hex).write_bytes(b"x")
        assert list(s) == [cid] and len(s) == 1 and s.stats().books == 1

    def test_stale_temp_files_swept_on_open(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        cid = s.put(b"keep")
        d = book_path(s, cid).parent
        old, fresh = d / f"{TMP_PREFIX}1-old", d / f"{TMP_PREFIX}1-new"
        old.write_bytes(b"x")
        fresh.write_bytes(b"x")
        past = time.time() - DEFAULT_GC_GRACE_S - 60
        os.utime(old, (past, past))
        DirStore(tmp_path / "cas")
        assert not old.exists() and fresh.exists()

    def test_ingest_leaves_no_temp_files(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        root = ingest(xof(b"t", 1_500_000), s)
        leftovers = [p for p in (tmp_path / "cas").rglob(f"{TMP_PREFIX}*")]
        assert leftovers == [] and root in s

    def test_batch_error_discards_and_cleans(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        with pytest.raises(RuntimeError), s.batch():
            s.put(b"lost" * 1000)
            raise RuntimeError("boom")
        assert len(s) == 0 and not list((tmp_path / "cas").rglob(f"{TMP_PREFIX}*"))

    def test_compression_stats(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        s.put(b"\x00" * 500_000)
        s.put(xof(b"incompressible", 100_000))
        st = s.stats()
        assert st.logical_bytes == 600_000
        assert st.stored_bytes < 200_000 and st.compression_ratio > 3

    def test_probe_stores_incompressible_raw_and_compressible_zstd(self, tmp_path):
        s = DirStore(tmp_path / "cas", fsync=False)
        noise = xof(b"noise", 200_000)
        # Compressible only between the probe's sample points: stored raw by design, and
        # still read back exactly (a raw book is valid whatever its content).
        hidden = bytearray(noise)
        hidden[20_000:40_000] = bytes(20_000)
        # One of the four samples lands in the zeros: the whole book is compressed.
        tail = noise[:150_000] + bytes(50_000)
        for data, codec in ((noise, 0), (bytes(hidden), 0), (tail, 1), (b"v" * 200_000, 1)):
            cid = s.put(data)
            raw = book_path(s, cid).read_bytes()
            assert raw[4] == codec, (len(data), codec)
            assert s.get(cid) == data
            if codec == 0:
                assert raw[HEADER_LEN:] == data

    def test_reassemble_over_many_runs_names_first_bad_leaf(self, tmp_path):
        # ~6 MB of leaves: several read runs on the worker threads, mixing raw and zstd books.
        data = b"".join(
            xof(bytes([i]), 300_000) if i % 2 else bytes([i]) * 300_000 for i in range(20)
        )
        s = DirStore(tmp_path / "cas", fsync=False)
        root = ingest(data, s)
        assert reassemble(root, s) == data
        leaves = list(blob_info(root, s).leaves)
        assert len(leaves) > 40
        early, late = leaves[3], leaves[-2]
        dir_corrupt(s, late, "flip")
        dir_corrupt(s, early, "flip")
        with pytest.raises(CorruptBook) as exc:
            reassemble(root, s)
        assert exc.value.cid == early and early.hex in str(exc.value)

    def test_reassemble_inside_batch_reads_unflushed_books(self, tmp_path):
        s = DirStore(tmp_path / "cas")
        data = xof(b"pending", 3_000_000)
        with s.batch():
            root = ingest(data, s)
            assert reassemble(root, s) == data  # books still queued or on temp files
        assert reassemble(root, s) == data

    def test_format_marker_mismatch(self, tmp_path):
        DirStore(tmp_path / "cas")
        (tmp_path / "cas" / "oluo-cas-format").write_text("oluo-cas 99\n")
        with pytest.raises(ContentError):
            DirStore(tmp_path / "cas")

    def test_bad_arguments(self, tmp_path):
        with pytest.raises(ValueError):
            DirStore(tmp_path / "a", level=0)
        with pytest.raises(ValueError):
            DirStore(tmp_path / "b", sync_mode="nope")

    def test_repr(self, tmp_path):
        assert repr(DirStore(tmp_path / "mycas", level=3)) == "DirStore('mycas', level=3)"

    def test_reopen_in_new_process(self, tmp_path):
        data = xof(b"persist", 1_200_000)
        s = DirStore(tmp_path / "cas")
        root = ingest(data, s)
        small = s.put(b"small book")
        code = (
            "import sys, blake3\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "from oluo_lab.cas import CID, DirStore, reassemble\n"
            f"s = DirStore({str(tmp_path / 'cas')!r})\n"
            f"d = reassemble(CID.parse({root.hex!r}), s)\n"
            f"print(blake3.blake3(d).hexdigest(), len(d), len(s), s.get(CID.parse({small.hex!r})).decode())\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        digest, n, count, text = out.stdout.strip().split(" ", 3)
        assert digest == blake3.blake3(data).hexdigest() and int(n) == len(data)
        assert text == "small book" and int(count) == len(s)

    def test_writes_in_new_process_then_read_here(self, tmp_path):
        code = (
            "import sys\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "from oluo_lab.cas import DirStore, ingest\n"
            "import blake3\n"
            f"print(ingest(blake3.blake3(b'child').digest(length=900_000), DirStore({str(tmp_path / 'cas')!r})).hex)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        root = CID.parse(out.stdout.strip())
        assert reassemble(root, DirStore(tmp_path / "cas")) == xof(b"child", 900_000)


class TestDirStoreFsyncMode(StoreConformance):
    """The per-file fsync durability path passes the same suite."""

    def make_store(self, tmp_path):
        return DirStore(tmp_path / "cas", sync_mode="fsync", workers=3)

    def corrupt(self, store, cid, how):
        dir_corrupt(store, cid, how)
