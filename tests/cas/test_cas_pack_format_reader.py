"""An independent reader of a pack store, written from docs/FORMAT.md §0, §1.1, §1.3 and
§1.4 alone (no oluo_lab code but the writer under test): it must read back every book a
PackStore wrote, before and after a gc rewrote packs and superseded index files."""

from __future__ import annotations

import struct
from pathlib import Path

import blake3
import cbor2
import zstandard

from oluo_lab.cas import PackStore, ingest
from oluo_lab.testing.store import xof


class FormatError(Exception):
    pass


def need(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError(what)


def parse_cid(raw: bytes) -> tuple[int, int, bytes]:
    """§1.1: (kind, size, digest) of 40 CID bytes."""
    need(len(raw) == 40, "CID length")
    version, kind, depth, reserved, size = struct.unpack(">BBBBI", raw[:8])
    need(version == 1 and kind in (0, 1) and reserved == 0, "CID header")
    need((depth == 0) if kind == 0 else 1 <= depth <= 8, "CID depth")
    need(size <= 1 << 20, "CID size")
    return kind, size, raw[8:]


def decode_record(cid: bytes, record: bytes) -> bytes:
    """§1.3: the book bytes of one record, checked against its CID."""
    _, size, digest = parse_cid(cid)
    header, payload = record[:16], record[16:]
    need(len(header) == 16 and header[:4] == b"OLB1" and header[6:8] == b"\0\0", "record header")
    codec = header[4]
    if codec == 0:
        need(header[8:] == bytes(8), "raw check field")
        book = payload
    else:
        need(codec == 1 and len(payload) < size, "codec")
        need(blake3.blake3(header[:8] + payload).digest()[:8] == header[8:], "record check")
        book = zstandard.ZstdDecompressor().decompress(payload)
    need(len(book) == size and blake3.blake3(book).digest() == digest, "book digest")
    return book


def parse_entries(raw: bytes) -> list[tuple[bytes, int, int]]:
    """§1.4: 56-byte entries CID ‖ u64 offset ‖ u32 length ‖ u32 zero."""
    need(len(raw) % 56 == 0, "entries length")
    out = []
    for cid, offset, length, zero in struct.iter_unpack(">40sQII", raw):
        _, size, _ = parse_cid(cid)
        need(zero == 0 and 16 <= length <= 16 + size, "entry fields")
        out.append((cid, offset, length))
    return out


def read_pack(path: Path, pack_id: str) -> tuple[bytes, list[tuple[bytes, int, int]]]:
    """§1.4: a pack's bytes and its trailer's entries, every trailer rule checked."""
    data = path.read_bytes()
    need(blake3.blake3(data).hexdigest() == pack_id, "pack name")
    need(data[:8] == b"OLP1\x01\0\0\0" and len(data) >= 28, "pack header")
    n, check, magic, trailer_len = struct.unpack(">I8s4sI", data[-20:])
    need(magic == b"OLPT" and trailer_len == 56 * n + 20 and trailer_len <= len(data) - 8, "footer")
    body = data[len(data) - trailer_len : len(data) - 20]
    need(blake3.blake3(body).digest()[:8] == check, "trailer check")
    entries = parse_entries(body)
    pos = 8
    for _, offset, length in entries:  # back to back from byte 8 up to the trailer
        need(offset == pos, "records not contiguous")
        pos += length
    need(pos == len(data) - trailer_len, "records end")
    need(len({cid for cid, _, _ in entries}) == len(entries), "a CID twice")
    return data, entries


def read_store(root: Path) -> dict[bytes, bytes]:
    """Every book of the store: CID bytes -> book bytes (§1.4 "Reading the store")."""
    need((root / "oluo-cas-format").read_bytes() == b"oluo-cas 2\n", "marker")
    docs = {}
    for path in sorted((root / "index").glob("*.oli")):
        data = path.read_bytes()
        need(blake3.blake3(data).hexdigest() + ".oli" == path.name, "index name")
        doc = cbor2.loads(data)
        need(cbor2.dumps(doc, canonical=True) == data, "canonical CBOR")
        keys = set(doc) - {"salt"}
        need(keys == {"format", "version", "packs", "supersedes"}, "index keys")
        need(doc["format"] == "oluo-pack-index" and doc["version"] == 1, "index format")
        need(doc.get("salt", 1) >= 1, "salt")
        docs[path.name[:64]] = doc
    superseded = {s.hex() for doc in docs.values() for s in doc["supersedes"]}
    books: dict[bytes, bytes] = {}
    for ident in sorted(set(docs) - superseded):
        packs = docs[ident]["packs"]
        need([p["id"] for p in packs] == sorted({p["id"] for p in packs}), "packs order")
        for p in packs:
            need(set(p) == {"id", "size", "entries"} and len(p["id"]) == 32, "pack keys")
            pid = p["id"].hex()
            data, trailer = read_pack(root / "packs" / f"{pid}.olp", pid)
            need(len(data) == p["size"], "pack size")
            listed = parse_entries(p["entries"])
            need(listed and set(listed) <= set(trailer), "index entries not in the trailer")
            offsets = [offset for _, offset, _ in listed]
            need(offsets == sorted(set(offsets)), "index entries order")
            for cid, offset, length in listed:
                books.setdefault(cid, decode_record(cid, data[offset : offset + length]))
    return books


def test_an_independent_reader_of_the_documented_format_reads_a_real_store(tmp_path):
    root = tmp_path / "s"
    store = PackStore(root, level=3, target_pack_size=64 << 10, small_pack_size=48 << 10)
    written: dict[bytes, bytes] = {}
    with store.batch():  # raw, zstd, empty, and a DAG with bundles; several packs
        for data in (b"", b"hello", b"abc" * 1000, xof(b"raw", 30_000), b"z" * 50_000):
            written[store.put(data).raw] = data
        ingest(xof(b"blob", 300_000) + bytes(300_000), store)
    for cid in store:
        written.setdefault(cid.raw, store.get(cid))
    assert len(list((root / "packs").iterdir())) >= 3
    assert read_store(root) == written
    for i in range(4):  # small packs of their own, then a gc that merges and supersedes
        with store.batch():
            data = xof(bytes([i]), 5000)
            written[store.put(data).raw] = data
    doomed = [c for c in store if c.raw in (store.put(b"hello").raw, store.put(b"").raw)]
    rep = store.sweep(doomed, grace_s=0)
    assert rep.packs_written >= 1 and rep.packs_deleted >= 1
    for cid in doomed:
        del written[cid.raw]
    assert read_store(root) == written
    assert sorted(written) == sorted(c.raw for c in PackStore(root))
