"""PersistSnapshot bytes, the canonical metadata format and from_snapshot."""

from __future__ import annotations

import math
import os

import cbor2
import numpy as np
import pytest
from engine_helpers import make_vectors

from oluo_lab.engine import (
    Delete,
    EngineError,
    EngineRestoreFailed,
    EntryMetadata,
    IndexLightweight,
    IndexUpdated,
    Ingest,
    InvalidEvent,
    OluoEngine,
    PrivacyTier,
    Scope,
    SnapshotDecodeError,
    UnencodableMetadata,
    decode_metadata,
    encode_metadata,
    read_metadata_header,
)
from oluo_lab.engine.index import CompactionPolicy

CFG = {
    "dim": 4,
    "metric": "l2",
    "M": 16,
    "ef_construction": 128,
    "ef_search": 64,
    "prune_headroom": 0.0,
    "repair_fraction": 0.1,
    "hole_fraction": 0.2,
    "faiss_version": "1.15.1",
}
# what version 3 decodes to: it records no compaction policy (the defaults apply)
CFG_V3 = dict(CFG, **CompactionPolicy().as_dict())
# what versions 1 and 2 decode to: they record no headroom and were built with faiss's 0.2
CFG_LEGACY = dict(CFG_V3, prune_headroom=0.2)
ENTRIES = {
    0: EntryMetadata(
        "a", {"word": "the", "n": 1}, PrivacyTier.PUBLIC_DURABLE, None, 5, Scope.NETWORK_WIDE, ()
    ),
    3: EntryMetadata(7, {}, PrivacyTier.PUBLIC_EPHEMERAL, 9000, 6, Scope.PERSONAL, ("p1",)),
}
# the test vector printed in docs/FORMAT.md (Appendix A.2): format version 4
VECTOR_HEX = (
    "a865686f6c65730066636f6e666967a9614d106364696d04666d657472696362"
    "6c326965665f73656172636818406d66616973735f76657273696f6e66312e31"
    "352e316d686f6c655f6672616374696f6efb3fc999999999999a6e7072756e65"
    "5f68656164726f6f6df900006f65665f636f6e737472756374696f6e18806f72"
    "65706169725f6672616374696f6efb3fb999999999999a66666f726d6174746f"
    "6c756f2d656e67696e652d6d6574616461746167656e74726965730267766572"
    "73696f6e046a67656e65726174696f6e016b6b65795f636f756e746572046d65"
    "6e7472795f636f6c756d6e73ab646b6579735000000000000000000300000000"
    "0000006573636f7065420200677461726765747382616107686d657461646174"
    "614ea2616e0164776f726463746865a0686f7665726c61797381816270316a65"
    "7870697265735f61744828230000000000006c657870697265735f6b65797348"
    "03000000000000006c6f7665726c61795f6b6579734803000000000000006c70"
    "7269766163795f746965724200016e696e6765737465645f61745f6d73500500"
    "00000000000006000000000000006e6d657461646174615f73697a6573480d00"
    "000001000000"
)
# the same table at index positions 0 and 2 around a hole at 1 (keys 3, -, 0)
HOLES_HEX = (
    "a865686f6c65730166636f6e666967a9614d106364696d04666d657472696362"
    "6c326965665f73656172636818406d66616973735f76657273696f6e66312e31"
    "352e316d686f6c655f6672616374696f6efb3fc999999999999a6e7072756e65"
    "5f68656164726f6f6df900006f65665f636f6e737472756374696f6e18806f72"
    "65706169725f6672616374696f6efb3fb999999999999a66666f726d6174746f"
    "6c756f2d656e67696e652d6d6574616461746167656e74726965730267766572"
    "73696f6e046a67656e65726174696f6e016b6b65795f636f756e746572046d65"
    "6e7472795f636f6c756d6e73ad646b6579735000000000000000000300000000"
    "0000006573636f7065420200677461726765747382616107686d657461646174"
    "614ea2616e0164776f726463746865a0686f7665726c61797381816270316a65"
    "7870697265735f61744828230000000000006a696e6465785f6b657973500300"
    "00000000000000000000000000006b696e6465785f686f6c657344010000006c"
    "657870697265735f6b6579734803000000000000006c6f7665726c61795f6b65"
    "79734803000000000000006c707269766163795f746965724200016e696e6765"
    "737465645f61745f6d7350050000000000000006000000000000006e6d657461"
    "646174615f73697a6573480d00000001000000"
)
# the same table in format version 3 (no compaction policy in the config), still decoded
V3_HEX = (
    "a766636f6e666967a7614d106364696d04666d6574726963626c326965665f73"
    "656172636818406d66616973735f76657273696f6e66312e31352e316e707275"
    "6e655f68656164726f6f6df900006f65665f636f6e737472756374696f6e1880"
    "66666f726d6174746f6c756f2d656e67696e652d6d6574616461746167656e74"
    "72696573026776657273696f6e036a67656e65726174696f6e016b6b65795f63"
    "6f756e746572046d656e7472795f636f6c756d6e73ab646b6579735000000000"
    "0000000003000000000000006573636f70654202006774617267657473826161"
    "07686d657461646174614ea2616e0164776f726463746865a0686f7665726c61"
    "797381816270316a657870697265735f61744828230000000000006c65787069"
    "7265735f726f77734801000000000000006c6f7665726c61795f726f77734801"
    "000000000000006c707269766163795f746965724200016d6d65746164617461"
    "5f656e6473500d000000000000000e000000000000006e696e6765737465645f"
    "61745f6d735005000000000000000600000000000000"
)
# the same table in format version 2 (no prune_headroom in the config), still decoded
V2_HEX = (
    "a766636f6e666967a6614d106364696d04666d6574726963626c326965665f73"
    "656172636818406d66616973735f76657273696f6e66312e31352e316f65665f"
    "636f6e737472756374696f6e188066666f726d6174746f6c756f2d656e67696e"
    "652d6d6574616461746167656e7472696573026776657273696f6e026a67656e"
    "65726174696f6e016b6b65795f636f756e746572046d656e7472795f636f6c75"
    "6d6e73ab646b65797350000000000000000003000000000000006573636f7065"
    "420200677461726765747382616107686d657461646174614ea2616e0164776f"
    "726463746865a0686f7665726c61797381816270316a657870697265735f6174"
    "4828230000000000006c657870697265735f726f77734801000000000000006c"
    "6f7665726c61795f726f77734801000000000000006c707269766163795f7469"
    "65724200016d6d657461646174615f656e6473500d000000000000000e000000"
    "000000006e696e6765737465645f61745f6d7350050000000000000006000000"
    "00000000"
)
# the same table in format version 1 (one array per entry), which is still decoded
V1_HEX = (
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
    assert dec.key_counter == 4 and dec.generation == 1 and len(dec) == 2
    head = read_metadata_header(data)
    assert (head.version, head.config, head.entries, head.holes) == (4, CFG, 2, 0)
    assert (head.key_counter, head.generation) == (4, 1)


def test_holes_test_vector_is_pinned():
    data = encode_metadata(CFG, 4, 1, ENTRIES, np.array([3, -1, 0]))
    assert data.hex() == HOLES_HEX
    dec = decode_metadata(data)
    assert dec.entries == ENTRIES and dec.row_keys().tolist() == [3, -1, 0]
    assert dec.holes.tolist() == [1] and dec.row_order.tolist() == [1, 0]
    assert read_metadata_header(data).holes == 1


@pytest.mark.parametrize(
    "version, hexdata, cfg", [(1, V1_HEX, CFG_LEGACY), (2, V2_HEX, CFG_LEGACY), (3, V3_HEX, CFG_V3)]
)
def test_older_versions_are_still_decoded_with_the_rules_they_were_built_with(
    version, hexdata, cfg
):
    raw = bytes.fromhex(hexdata)
    dec = decode_metadata(raw)
    assert dec.entries == ENTRIES and dec.config == cfg and len(dec) == 2
    assert len(dec.holes) == 0
    head = read_metadata_header(raw)
    assert (head.version, head.config, head.entries, head.holes) == (version, cfg, 2, 0)
    # and re-encoded as version 4, the headroom and the policy now written out
    again = encode_metadata(dec.config, 4, 1, dec.entries)
    assert again == encode_metadata(cfg, 4, 1, ENTRIES)
    assert cbor2.loads(again)["config"]["prune_headroom"] == cfg["prune_headroom"]
    assert cbor2.loads(again)["version"] == 4


def test_test_vector_in_format_doc():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    section = doc.split("<!-- section:engine -->")[1].split("<!-- /section:engine -->")[0]
    for vector in (VECTOR_HEX, HOLES_HEX, V3_HEX, V2_HEX, V1_HEX):
        assert vector in "".join(section.split())


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
    cols = doc["entry_columns"]
    dup = dict(doc, entry_columns=dict(cols, targets=["a", "b", "a", "c"]))
    with pytest.raises(EngineRestoreFailed, match="duplicate id 'a'"):
        OluoEngine.from_snapshot(ib, dup, kc, g)
    few = {
        name: (v[:3] if name == "targets" else v[: len(v) * 3 // 4])
        for name, v in cols.items()
        if name in ("keys", "targets", "scope", "privacy_tier", "ingested_at_ms")
    }
    sizes = cols["metadata_sizes"][:12]
    few.update(metadata_sizes=sizes, metadata=cols["metadata"][:3])
    keep = {name: v for name, v in cols.items() if name != "index_keys"}  # (renumbered base)
    fewer = dict(doc, entries=3, entry_columns=dict(keep, **few))
    assert len(decode_metadata(fewer)) == 3
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
        OluoEngine.from_snapshot(ib, dict(doc, version=5), kc, g)
    config = doc["config"]
    legacy = {k: v for k, v in config.items() if k != "prune_headroom"}
    v3 = {k: v for k, v in config.items() if k not in ("repair_fraction", "hole_fraction")}
    for bad, match in (
        (dict(doc, config=legacy), "version 4 config must have exactly"),
        (dict(doc, config=v3), "version 4 config must have exactly"),
        ({**{k: v for k, v in doc.items() if k != "holes"}, "version": 2}, "version 2 config"),
        ({k: v for k, v in doc.items() if k != "holes"}, "fields must be exactly"),
        (dict(doc, version=3), "version 3 config must have exactly"),
        (dict(doc, holes=-1), "holes must be a non-negative int"),
        (dict(doc, holes=2), "no index_holes column"),
        (dict(doc, config=dict(config, repair_fraction=1.5)), "repair_fraction must be a float"),
        (dict(doc, config=dict(config, hole_fraction=0)), "hole_fraction must be a float"),
        (dict(doc, config=dict(config, prune_headroom=0)), "prune_headroom must be a float"),
        (dict(doc, config=dict(config, prune_headroom=0.6)), "in \\[0, 0.5\\]"),
        (dict(doc, config=dict(config, prune_headroom=-0.1)), "prune_headroom"),
        (dict(doc, config=dict(config, prune_headroom=math.nan)), "prune_headroom"),
        (dict(doc, config=dict(config, prune_headroom="0")), "prune_headroom"),
    ):
        with pytest.raises(SnapshotDecodeError, match=match):
            OluoEngine.from_snapshot(ib, bad, kc, g)


def _rich_engine() -> OluoEngine:
    eng = OluoEngine(8, "l2", compact_threshold=10_000, M=8, ef_construction=40)
    vecs = make_vectors("l2", 60, 8, seed=5)
    eng.add(vecs[:40], ids=[f"w{i}" for i in range(40)], metadata=[{"i": i} for i in range(40)])
    eng.handle(
        Ingest(
            vecs[40:50],
            list(range(100, 110)),
            [{"j": [j, None]} for j in range(10)],
            IndexLightweight(30),
            now_ms=2000,
            scope=Scope.COMMUNITY,
            privacy_tier=PrivacyTier.PUBLIC_EPHEMERAL,
            overlays=[[f"o{j}"] * (j % 3) for j in range(10)],
        )
    )
    return eng


def test_restored_engine_is_the_same_engine_after_every_kind_of_change():
    """Columnar restore (entries built lazily) behaves exactly like the original engine:
    searches (ids, scores, entries), re-ingest, delete, evict, and the next snapshot bytes."""
    eng = _rich_engine()
    snap = eng.compact()
    back = OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    )
    assert len(back) == len(eng) == 50 and back.scope_counts == eng.scope_counts
    q = make_vectors("l2", 7, 8, seed=6)
    r1, r2 = eng.search(q, k=5), back.search(q, k=5)
    assert r1.ids.tolist() == r2.ids.tolist() and np.array_equal(r1.scores, r2.scores)
    assert r1.entries.tolist() == r2.entries.tolist()
    assert back.entry(105) == eng.entry(105) and "w3" in back and "nope" not in back
    pred = lambda e: e.metadata.get("i", 0) % 2 == 1  # noqa: E731
    assert (
        eng.search(q, k=3, predicate=pred).ids.tolist()
        == back.search(q, k=3, predicate=pred).ids.tolist()
    )
    vecs = make_vectors("l2", 5, 8, seed=7)
    for e in (eng, back):
        e.delete(["w0", 101])
        e.add(vecs[:2], ids=["w5", 102], metadata=[{"new": 1}, {"new": 2}], now_ms=3000)
        e.add(vecs[2:], ids=["z1", "z2", "w0"], scope=Scope.PERSONAL)
        assert e.evict_expired(32_000) == [100, 103, 104, 105, 106, 107, 108, 109]
    assert back.entries() == eng.entries() and back.scope_counts == eng.scope_counts
    assert back.entry("w5").metadata == {"new": 1} and back.entry("w5").ingested_at_ms == 3000
    s1, s2 = eng.compact(), back.compact()
    assert s1 == s2
    again = OluoEngine.from_snapshot(s2.index_bytes, s2.metadata_bytes, s2.key_counter, 2)
    assert again.entries() == eng.entries()
    assert again.compact(force=True).metadata_bytes == eng.compact(force=True).metadata_bytes


def test_unchanged_restore_reuses_the_stored_metadata_bytes():
    eng = _rich_engine()
    snap = eng.compact()
    back = OluoEngine.from_snapshot(snap.index_bytes, snap.metadata_bytes, snap.key_counter, 1)
    assert back.current_snapshot().metadata_bytes == snap.metadata_bytes
    assert back.compact(force=True).metadata_bytes == eng.compact(force=True).metadata_bytes


def test_header_is_read_without_the_entries_and_matches_the_full_decode():
    snap = _rich_engine().compact()
    head = read_metadata_header(snap.metadata_bytes)
    full = decode_metadata(snap.metadata_bytes)
    assert (head.config, head.entries, head.key_counter, head.generation) == (
        full.config,
        len(full),
        full.key_counter,
        full.generation,
    )
    with pytest.raises(SnapshotDecodeError, match="format"):
        read_metadata_header(
            snap.metadata_bytes.replace(b"oluo-engine-metadata", b"oluo-engine-metadatX")
        )
    with pytest.raises(SnapshotDecodeError):
        read_metadata_header(b"\x80")


def _damaged_map_snapshot():
    """Four entries "a".."d" with metadata {"k": 1}, and metadata bytes in which entry
    "c" (row 2, key 2) stores that map with a non-shortest integer (4 bytes -> 5, so the
    offsets after it shift by one): the columns decode, the map does not."""
    eng = OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"], metadata={"k": 1})
    snap = eng.compact()
    doc = _doc(snap)
    cols = doc["entry_columns"]
    blob = cols["metadata"]
    bad = blob[:8] + b"\xa1\x61\x6b\x18\x01" + blob[12:]
    sizes = np.frombuffer(cols["metadata_sizes"], "<u4").copy()
    sizes[2] += 1
    doc["entry_columns"] = dict(cols, metadata=bad, metadata_sizes=sizes.tobytes())
    return snap, doc, cbor2.dumps(doc, canonical=True)


def test_damaged_entry_metadata_is_found_on_access_and_by_check_entries():
    """Per-entry maps are decoded lazily but strictly: a payload whose stored map for one
    entry is not canonical still restores, fails loudly when that entry is read, and
    check_entries (what Lab.verify runs) finds it up front."""
    snap, doc, raw = _damaged_map_snapshot()
    cols = _doc(snap)["entry_columns"]
    blob = cols["metadata"]
    dec = decode_metadata(raw)  # the columns are fine
    with pytest.raises(SnapshotDecodeError, match=r"entry 2 \(key 2\).*not one canonical"):
        dec.check_entries()
    back = OluoEngine.from_snapshot(snap.index_bytes, raw, snap.key_counter, 1)
    assert back.entry("b").metadata == {"k": 1}
    with pytest.raises(SnapshotDecodeError, match="entry 2"):
        back.entry("c")
    # a map whose first byte is not a map is caught when the columns are decoded
    doc["entry_columns"] = dict(cols, metadata=blob[:8] + b"\x81" + blob[9:])
    with pytest.raises(SnapshotDecodeError, match="entry 2: metadata is not a CBOR map"):
        decode_metadata(cbor2.dumps(doc, canonical=True))


def test_handle_returns_the_error_of_a_damaged_entry_met_while_settling_results():
    """Before an event that can change entries, handle resolves the outstanding search
    results. When one holds a restored entry whose stored map is damaged, handle returns
    the EngineError (it never raises) and applies nothing; the result keeps the error
    (its ids stay readable), and it no longer holds the engine up."""
    snap, _, raw = _damaged_map_snapshot()
    back = OluoEngine.from_snapshot(snap.index_bytes, raw, snap.key_counter, 1)
    res = back.search(np.eye(4, dtype=np.float32)[2], k=4)  # "c" first, unresolved
    acts = back.handle(Delete(["a"]))
    assert len(acts) == 1 and type(acts[0]) is EngineError
    assert isinstance(acts[0].error, SnapshotDecodeError)
    assert "entry 2 (key 2)" in str(acts[0].error)
    assert "a" in back and len(back) == 4 and back.scope_counts == (0, 0, 4)
    assert res.ids[0].tolist() == ["c", "a", "b", "d"]
    with pytest.raises(SnapshotDecodeError, match=r"entry 2 \(key 2\)"):
        res.entries  # noqa: B018
    assert back.handle(Delete(["a"])) == [IndexUpdated((), ("a",))]
    assert "a" not in back and len(back) == 3
    with pytest.raises(SnapshotDecodeError):  # still the answer as of search time
        res.entries  # noqa: B018
    assert back.entry("b").metadata == {"k": 1}


@pytest.mark.parametrize(
    "column,value,match",
    [
        ("keys", (np.array([0, 2, 1, 3], "<u8")).tobytes(), "not greater than the previous"),
        ("keys", (np.array([0, 1, 2, 2**63], "<u8")).tobytes(), "below 2"),
        ("keys", b"\x00" * 31, "has 31 bytes"),
        ("scope", b"\x00\x01\x03\x00", "out of range"),
        ("privacy_tier", b"\x00\x00\x00\x04", "out of range"),
        ("targets", ["a", "b", True, "d"], "not str or int"),
        ("targets", ["a", "b", "c"], "array of 4"),
        ("expires_keys", np.array([4], "<u8").tobytes(), "names key 4, which no entry has"),
        ("expires_keys", np.array([1], "<u8").tobytes(), "expires_at has 0 bytes"),
        ("overlay_keys", np.array([2, 1], "<u8").tobytes(), "strictly increasing keys"),
        ("overlay_keys", b"\x00" * 7, "has 7 bytes"),
        ("overlays", [[]], "array of 0"),
        ("metadata_sizes", np.array([1, 1, 0, 2], "<u4").tobytes(), "at least one byte"),
        ("metadata_sizes", np.array([1, 1, 1, 2], "<u4").tobytes(), "add up to the length"),
        ("metadata_sizes", np.array([1, 1, 1], "<u4").tobytes(), "of 16 bytes"),
        ("metadata", b"\xa0\xa0\xa0\xa0\xa0", "add up to the length"),
        ("expires_rows", b"", "exactly the columns"),
    ],
)
def test_every_column_is_validated(column, value, match):
    eng = OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"])
    doc = _doc(eng.compact())
    doc["entry_columns"] = dict(doc["entry_columns"], **{column: value})
    with pytest.raises(SnapshotDecodeError, match=match):
        decode_metadata(cbor2.dumps(doc, canonical=True))


def test_huge_now_ms_is_refused_at_ingest():
    eng = OluoEngine(4, "l2")
    with pytest.raises(InvalidEvent, match="64-bit"):
        eng.add(np.ones((1, 4), np.float32), ids=["a"], now_ms=2**64)
    assert len(eng) == 0


def test_compact_complete_maps_the_file_it_hashed_even_if_replaced_meanwhile(tmp_path, monkeypatch):
    """Another writer renaming a new base over the path between the hash check and
    faiss's read must not get the engine to map the other bytes."""
    import faiss

    eng = OluoEngine(4, "l2")
    eng.add(np.eye(4, dtype=np.float32), ids=["a", "b", "c", "d"])
    snap = eng.compact()
    other = OluoEngine(4, "l2")
    other.add(np.eye(4, dtype=np.float32)[::-1] * 3, ids=["a", "b", "c", "d"])
    other_bytes = other.compact().index_bytes
    path = tmp_path / "oluo_base.bin"
    path.write_bytes(snap.index_bytes)
    real_read = faiss.read_index

    def replace_then_read(src, flags=0):
        tmp = tmp_path / "new.bin"
        tmp.write_bytes(other_bytes)
        os.replace(tmp, path)  # the other writer's rename lands now
        return real_read(src, flags)

    monkeypatch.setattr(faiss, "read_index", replace_then_read)
    before = eng.search(np.eye(4, dtype=np.float32), k=2)
    eng.compact_complete(str(path), snap.generation)
    assert eng._index.base_mapped
    after = eng.search(np.eye(4, dtype=np.float32), k=2)
    assert after.ids.tolist() == before.ids.tolist()
    assert np.array_equal(after.scores, before.scores)
    assert path.read_bytes() == other_bytes  # the path now names the other file
