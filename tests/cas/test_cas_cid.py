"""CID format: golden vectors (also listed in docs/FORMAT.md), parsing, value semantics."""

from __future__ import annotations

import pickle
from pathlib import Path

import blake3
import pytest

from oluo_lab.cas import CID, MAX_BOOK_SIZE, MAX_DEPTH, MalformedCID, MemoryStore, ingest

FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"

GOLDEN = {
    "empty": (
        b"",
        "0100000000000000af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    ),
    "hello": (
        b"hello",
        "0100000000000005ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
    ),
    "range256": (
        bytes(range(256)),
        "01000000000001004a495ba42461748eca8fdad618f976aa726cc2903de9fcb40735a786ac1c196b",
    ),
    "oluo_1mib": (
        blake3.blake3(b"oluo").digest(length=1 << 20),
        "0101010000000208f61db89bb5877c4e342c996af0f5b1305f3691b31706f0dd4cd683256bd6477f",
    ),
}
# The root metadata record of the oluo_1mib root: total 1 MiB, 12 chunks, 16K/64K/256K, nc 1.
GOLDEN_META = "010200000000000000100000000000000000000c0000400000010000000400000100000000000000"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_vectors(name):
    data, hexcid = GOLDEN[name]
    store = MemoryStore()
    cid = ingest(data, store)
    assert cid.hex == hexcid
    if cid.kind == "book":
        assert CID.for_book(data).hex == hexcid
    else:
        assert store.get(cid)[:40].hex() == GOLDEN_META


def test_golden_vectors_documented():
    text = FORMAT_MD.read_text()
    for _, hexcid in GOLDEN.values():
        assert hexcid in text
    assert GOLDEN_META in text


def test_layout_fields():
    cid = CID.for_book(b"hello")
    raw = cid.raw
    assert len(raw) == 40 and raw[0] == 1 and raw[1] == 0 and raw[2] == 0 and raw[3] == 0
    assert int.from_bytes(raw[4:8], "big") == 5 == cid.size
    assert raw[8:] == blake3.blake3(b"hello").digest() == cid.digest
    assert cid.short == cid.digest[:6].hex()
    assert str(cid) == cid.hex == raw.hex() and len(cid.hex) == 80


def test_parse_round_trip_and_case():
    cid = CID.for_book(b"x")
    assert CID.parse(cid.hex) == cid
    assert CID.parse(cid.hex.upper()) == cid
    assert str(CID.parse(cid.hex.upper())) == cid.hex
    assert CID.from_bytes(cid.raw) == cid and bytes(cid) == cid.raw


def _hx(version=1, kind=0, depth=0, reserved=0, size=5, digest=b"\x11" * 32) -> str:
    return (bytes([version, kind, depth, reserved]) + size.to_bytes(4, "big") + digest).hex()


MALFORMED = {
    "empty": "",
    "short": _hx()[:-2],
    "long": _hx() + "00",
    "non-hex": "zz" + _hx()[2:],
    "whitespace": " " + _hx()[1:],
    "inner space": _hx()[:40] + " " + _hx()[41:],
    "bad version 0": _hx(version=0),
    "bad version 2": _hx(version=2),
    "meta kind": _hx(kind=2),
    "unknown kind": _hx(kind=7),
    "reserved set": _hx(reserved=1),
    "book with depth": _hx(depth=1),
    "bundle depth 0": _hx(kind=1, depth=0, size=80),
    "bundle too deep": _hx(kind=1, depth=MAX_DEPTH + 1, size=80),
    "bundle size not multiple": _hx(kind=1, depth=1, size=81),
    "bundle size 0": _hx(kind=1, depth=1, size=0),
    "book too large": _hx(size=MAX_BOOK_SIZE + 1),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_parse_rejects(name):
    with pytest.raises(ValueError):
        CID.parse(MALFORMED[name])
    with pytest.raises(MalformedCID):
        CID.parse(MALFORMED[name])


def test_parse_rejects_non_str():
    with pytest.raises(ValueError):
        CID.parse(CID.for_book(b"x").raw)  # type: ignore[arg-type]


def test_valid_edge_cids_parse():
    assert CID.parse(_hx(size=MAX_BOOK_SIZE)).size == MAX_BOOK_SIZE
    deep = CID.parse(_hx(kind=1, depth=MAX_DEPTH, size=40))
    assert deep.kind == "bundle" and deep.depth == MAX_DEPTH


def test_from_bytes_validates():
    with pytest.raises(MalformedCID):
        CID.from_bytes(b"\x01" * 39)
    with pytest.raises(MalformedCID):
        CID.from_bytes(bytes.fromhex(_hx(kind=2)))


def test_value_semantics():
    a, b = CID.for_book(b"a"), CID.for_book(b"a")
    c = CID.for_book(b"bb")
    assert a == b and hash(a) == hash(b) and a != c and a != a.hex
    assert {a, b, c} == {a, c}
    with pytest.raises(AttributeError):
        a._raw = b"x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.foo = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(a)) == a


def test_ordering_is_bytewise_and_total():
    cids = [CID.for_book(bytes([i]) * i) for i in range(50)]
    cids += [CID.for_bundle(b"\0" * 40, d) for d in (1, 3)]
    assert sorted(cids) == sorted(cids, key=lambda c: c.raw)
    assert sorted(cids) == sorted(reversed(cids))
    assert min(cids) <= max(cids) and max(cids) > min(cids) and min(cids) < max(cids)


def test_repr():
    cid = CID.for_book(b"hello")
    assert repr(cid) == f"CID('{cid.short}…', book)"
    bundle = CID.for_bundle(cid.raw, 1)
    assert repr(bundle) == f"CID('{bundle.short}…', bundle, depth 1)"
    assert cid.hex in cid._repr_html_() and "<table>" in cid._repr_html_()


def test_repr_does_not_present_the_node_size_as_a_payload_size():
    """A payload's root CID names a small node (an index record of a few hundred bytes
    roots megabytes): the text repr leaves the node size out, the HTML labels it."""
    big = CID.for_book(b"x" * 3000)
    assert "3000" not in repr(big) and "B" not in repr(big).replace("book", "")
    html = big._repr_html_()
    assert "<th>node size</th><td>2.93 KiB (this book; a payload it roots can be larger)" in html
