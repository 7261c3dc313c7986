"""PersistSnapshot bytes, the canonical metadata format and from_snapshot."""

from __future__ import annotations

import math

import cbor2
import numpy as np
import pytest
from engine_helpers import make_vectors

from oluo_lab.engine import (
    EngineRestoreFailed,
    EntryMetadata,
    Ingest,
    OluoEngine,
    PrivacyTier,
    Scope,
    SnapshotDecodeError,
    UnencodableMetadata,
    decode_metadata,
    encode_metadata,
)

CFG = {
    "dim": 4,
    "metric": "l2",
    "M": 16,
    "ef_construction": 128,
    "ef_search": 64,
    "faiss_version": "1.15.1",
}
ENTRIES = {
    0: EntryMetadata(
        "a", {"word": "the", "n": 1}, PrivacyTier.PUBLIC_DURABLE, None, 5, Scope.NETWORK_WIDE, ()
    ),
    3: EntryMetadata(7, {}, PrivacyTier.PUBLIC_EPHEMERAL, 9000, 6, Scope.PERSONAL, ("p1",)),
}
# the test vector printed in docs/FORMAT.md (section engine)
VECTOR_HEX = (
    "a666636f6e666967a6614d106364696d04666d6574726963626c326965665f73656172636818406d66616973"
    "735f76657273696f6e66312e31352e316f65665f636f6e737472756374696f6e188066666f726d6174746f6c"
    "756f2d656e67696e652d6d6574616461746167656e747269657382880061610200f60580a2616e0164776f72"
    "646374686588030700011923280681627031a06776657273696f6e016a67656e65726174696f6e016b6b6579"
    "5f636f756e74657204"
)


def test_metadata_test_vector_is_pinned():
    data = encode_metadata(CFG, 4, 1, ENTRIES)
    assert data.hex() == VECTOR_HEX
    dec = decode_metadata(bytes.fromhex(VECTOR_HEX))
    assert dec.entries == ENTRIES and dec.config == CFG
    assert dec.key_counter == 4 and dec.generation == 1


def test_test_vector_in_format_doc():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    section = doc.split("<!-- section:engine -->")[1].split("<!-- /section:engine -->")[0]
    assert VECTOR_HEX in "".join(section.split())


def test_encoding_independent_of_insertion_order():
    rev = dict(reversed(list(ENTRIES.items())))
    assert encode_metadata(CFG, 4, 1, rev) == encode_metadata(CFG, 4, 1, ENTRIES)


RICH = {
    "none": None,
    "t": True,
    "f": False,
    "int": -(2**70),
    "u": 2**64 - 1,
    "float": 0.1,
    "neg0": -0.0,
    "inf": math.inf,
    "half": 1.5,
    "s": "héllo",
    "b": b"\x00\xff",
    "list": [1, "x", [2.5, None], {"k": b""}],
    "dict": {"": {"nested": [True]}},
}


def test_rich_metadata_round_trips_exactly_through_a_snapshot():
    eng = OluoEngine(4, "l2")
    eng.handle(
        Ingest(np.ones(4, np.float32), "r", RICH, overlays=["x", "y"], scope=Scope.COMMUNITY)
    )
    snap = eng.compact()
    back = OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    )
    got = back.entry("r").metadata
    assert got == RICH
    assert (
        math.copysign(1, got["neg0"]) == -1 and type(got["t"]) is bool and type(got["b"]) is bytes
    )
    assert back.entry("r") == eng.entry("r")


@pytest.mark.parametrize(
    "bad",
    [
        {"x": (1, 2)},
        {"x": {1, 2}},
        {"x": float("nan")},
        {1: "int key"},
        {"x": {2.5: "float key"}},
        {"x": object()},
        {"x": np.zeros(3)},
        ["not", "a", "mapping"],
    ],
)
def test_unencodable_metadata_is_rejected_at_add_time(bad):
    eng = OluoEngine(4, "l2")
    with pytest.raises(UnencodableMetadata):
        eng.add(np.ones((1, 4), np.float32), ids=["a"], metadata=[bad])
    assert len(eng) == 0 and eng.key_counter == 0


def test_numpy_scalars_are_converted():
    eng = OluoEngine(4, "l2")
    eng.add(
        np.ones((1, 4), np.float32),
        ids=[np.int64(5)],
        metadata=[{"w": np.str_("x"), "f": np.float32(0.5)}],
    )
    e = eng.entry(5)
    assert (
        e.metadata == {"w": "x", "f": 0.5}
        and type(e.metadata["w"]) is str
        and type(e.target) is int
    )


@pytest.mark.parametrize("metric,dim", [("cosine", 16), ("l2", 16), ("ip", 16), ("hamming", 128)])
def test_restore_gives_identical_ids_order_scores(metric, dim):
    vecs = make_vectors(metric, 1500, dim, seed=31)
    eng = OluoEngine(dim, metric, compact_threshold=1000, M=8, ef_construction=40, ef_search=32)
    eng.add(vecs, ids=[f"w{i}" for i in range(1500)], metadata=[{"i": i} for i in range(1500)])
    eng.delete(["w3", "w4"])
    snap = eng.compact()
    queries = make_vectors(metric, 50, dim, seed=32)
    before = eng.search(queries, k=10)
    back = OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    )
    # the config comes from the snapshot, not from defaults
    assert (back.config.M, back.config.ef_construction, back.config.ef_search) == (8, 40, 32)
    after = back.search(queries, k=10)
    assert after.ids.tolist() == before.ids.tolist()
    assert np.array_equal(after.scores, before.scores)
    assert back.entries() == eng.entries() and back.scope_counts == eng.scope_counts
    assert back.key_counter == eng.key_counter and back.generation == eng.generation
    # next compaction continues the generation and produces the same bytes as the original engine
    more = make_vectors(metric, 5, dim, seed=33)
    s1 = (eng.add(more, ids=list(range(5))), eng.compact())[1]
    s2 = (back.add(more, ids=list(range(5))), back.compact())[1]
    assert s1.generation == s2.generation == snap.generation + 1
    assert s1 == s2


def test_restore_clamps_key_counter_and_accepts_compact_complete(tmp_path):
    eng = OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"])
    snap = eng.compact()
    back = OluoEngine.from_snapshot(snap.index_bytes, snap.metadata_bytes, 0, snap.generation)
    assert back.key_counter == 4
    assert back.add(np.ones((1, 4), np.float32), ids=["e"]) == [4]
    p = tmp_path / "b.bin"
    p.write_bytes(snap.index_bytes)
    back.compact_complete(str(p), snap.generation)
    assert back._index.base_mapped
    assert back.search(np.eye(4, dtype=np.float32), k=1).ids[:, 0].tolist() == ["a", "b", "c", "d"]


def _doc(snap):
    return cbor2.loads(snap.metadata_bytes)


def test_restore_rejects_bad_snapshots():
    eng = OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"])
    snap = eng.compact()
    ib, mb, kc, g = snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    with pytest.raises(EngineRestoreFailed, match="not a faiss index"):
        OluoEngine.from_snapshot(ib[: len(ib) // 2], mb, kc, g)
    with pytest.raises(EngineRestoreFailed, match="not a faiss index"):
        OluoEngine.from_snapshot(b"garbage" * 20, mb, kc, g)
    doc = _doc(snap)
    dup = dict(doc, entries=[[i, "a", *row[2:]] for i, row in enumerate(doc["entries"])])
    with pytest.raises(EngineRestoreFailed, match="duplicate id"):
        OluoEngine.from_snapshot(ib, dup, kc, g)
    v1 = {f: v for f, v in doc.items() if f != "row_order"} | {"version": 1}
    fewer = dict(v1, entries=doc["entries"][:3])
    with pytest.raises(EngineRestoreFailed, match="4 vectors but the metadata has 3"):
        OluoEngine.from_snapshot(ib, fewer, kc, g)
    for field, value in (
        ("dim", 8),
        ("metric", "ip"),
        ("M", 32),
        ("ef_construction", 7),
        ("metric", "hamming"),
    ):
        wrong = dict(doc, config=dict(doc["config"], **{field: value}))
        with pytest.raises(EngineRestoreFailed):
            OluoEngine.from_snapshot(ib, wrong, kc, g)
    with pytest.raises(EngineRestoreFailed):
        OluoEngine.from_snapshot(ib, dict(doc, config=dict(doc["config"], metric="nope")), kc, g)
    with pytest.raises(SnapshotDecodeError, match="trailing"):
        OluoEngine.from_snapshot(ib, mb + b"\x00", kc, g)
    with pytest.raises(SnapshotDecodeError, match="not canonical"):
        OluoEngine.from_snapshot(ib, cbor2.dumps(dict(reversed(list(doc.items())))), kc, g)
    with pytest.raises(SnapshotDecodeError):
        OluoEngine.from_snapshot(ib, mb[:-3], kc, g)
    with pytest.raises(SnapshotDecodeError, match="version"):
        OluoEngine.from_snapshot(ib, dict(doc, version=3), kc, g)
