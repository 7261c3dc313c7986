"""persist_snapshot / load_snapshot: the tests of Harmony's persistence, plus its fixed defects."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from snap_helpers import make_engine

from oluo_lab.cas import CID, BookNotFound, CorruptBook, MemoryStore, reassemble
from oluo_lab.snapshot import (
    BASE_NAME,
    HEAD_NAME,
    EngineRestoreError,
    HeadRegression,
    ManifestSerde,
    MetadataDeserialize,
    PersistIOError,
    SnapshotManifest,
    SnapshotNotFound,
    UnsupportedVersion,
    fetch_manifest,
    load_snapshot,
    persist_snapshot,
    read_head,
)
from oluo_lab.snapshot.index_codec import decode_index, encode_index
from oluo_lab.testing.damage import damage_book


def persist(engine, data_dir, store):
    snap = engine.compact()
    assert snap is not None
    return snap, persist_snapshot(
        data_dir, store, snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    )


def assert_same_answers(a, b, queries, k=10):
    ra, rb = a.search(queries, k=k), b.search(queries, k=k)
    assert ra.ids.tolist() == rb.ids.tolist()
    assert np.array_equal(ra.scores, rb.scores)
    assert ra.to_frame().equals(rb.to_frame())


def test_round_trip_identical_ids_order_scores_metadata(lab_dir, engine_and_vectors):
    d, store = lab_dir
    eng, x = engine_and_vectors
    _, (base_path, gen) = persist(eng, d, store)
    loaded = load_snapshot(d, store)
    assert loaded is not None
    restored, base2, gen2 = loaded
    assert (base2, gen2) == (base_path, gen) == (d / BASE_NAME, 1)
    assert len(restored) == len(eng) and restored.key_counter == eng.key_counter
    assert restored.entries() == eng.entries()
    assert_same_answers(eng, restored, x[:50])


def test_loaded_engine_maps_the_base_file_and_keeps_working(lab_dir, engine_and_vectors):
    """load_snapshot maps the verified base file (as after CompactComplete) instead of
    copying the index; the engine then changes, compacts and persists like the original."""
    d, store = lab_dir
    eng, x = engine_and_vectors
    snap, _ = persist(eng, d, store)
    restored, base_path, gen = load_snapshot(d, store)
    assert restored._index.base_mapped
    assert restored.current_snapshot() == eng.current_snapshot()
    restored.compact_complete(str(base_path), gen)  # the digest handed over is the file's
    more = x[:5] + 0.5
    for e in (eng, restored):
        e.delete(["w0", "w1"])
        e.add(more, ids=["m0", "m1", "m2", "m3", "m4"])
    assert_same_answers(eng, restored, x[:50])
    s1, s2 = eng.compact(), restored.compact()
    assert s1 == s2 and s1.generation == snap.generation + 1
    persist_snapshot(d, store, s2.index_bytes, s2.metadata_bytes, s2.key_counter, s2.generation)
    again, _, _ = load_snapshot(d, store)
    assert again.entries() == eng.entries()
    assert_same_answers(eng, again, x[:50])


def test_head_and_base_created_and_fresh_start_is_none(lab_dir, engine_and_vectors):
    d, store = lab_dir
    assert load_snapshot(d, store) is None
    snap, (base_path, _) = persist(engine_and_vectors[0], d, store)
    assert (d / HEAD_NAME).is_file()
    assert base_path.read_bytes() == snap.index_bytes
    head = json.loads((d / HEAD_NAME).read_text())
    assert head["version"] == 1 and head["generation"] == 1
    assert CID.parse(head["head"]).kind == "book"


def test_manifest_fields_match_payload(lab_dir, engine_and_vectors):
    d, store = lab_dir
    eng = engine_and_vectors[0]
    snap, _ = persist(eng, d, store)
    head = read_head(d)
    m = fetch_manifest(store, head.cid)
    assert m.version == 1 and m.compact_generation == snap.generation == 1
    assert m.key_counter == snap.key_counter and m.parent is None
    assert m.entries == len(eng)
    assert m.index_config["dim"] == 16 and m.index_config["metric"] == "cosine"
    assert decode_index(m.index_cid, store) == snap.index_bytes
    assert reassemble(m.metadata_cid, store) == snap.metadata_bytes
    assert (m.index_size, m.metadata_size) == (len(snap.index_bytes), len(snap.metadata_bytes))


def test_head_deleted_is_a_fresh_start(lab_dir, engine_and_vectors):
    d, store = lab_dir
    persist(engine_and_vectors[0], d, store)
    (d / HEAD_NAME).unlink()
    assert load_snapshot(d, store) is None


def test_same_state_two_dirs_same_manifest_and_head(tmp_path):
    heads = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        store = MemoryStore()
        eng, _ = make_engine(seed=3)
        persist(eng, d, store)
        heads.append((d / HEAD_NAME).read_bytes())
    assert heads[0] == heads[1]


def test_parent_chain_and_generation_regression(lab_dir):
    d, store = lab_dir
    eng, x = make_engine(n=200)
    snap1, _ = persist(eng, d, store)
    eng.add(x[:20] * 2, ids=[f"n{i}" for i in range(20)])
    snap2, _ = persist(eng, d, store)
    m2 = fetch_manifest(store, read_head(d).cid)
    assert m2.compact_generation == 2
    assert m2.parent is not None and fetch_manifest(store, m2.parent).compact_generation == 1
    head_before = (d / HEAD_NAME).read_bytes()
    with pytest.raises(HeadRegression) as ei:
        persist_snapshot(d, store, snap1.index_bytes, snap1.metadata_bytes, snap1.key_counter, 1)
    assert ei.value.current == 2 and ei.value.attempted == 1
    assert (d / HEAD_NAME).read_bytes() == head_before
    # re-persisting exactly the head generation is an idempotent no-op
    persist_snapshot(d, store, snap2.index_bytes, snap2.metadata_bytes, snap2.key_counter, 2)
    assert (d / HEAD_NAME).read_bytes() == head_before


def test_base_file_not_rewritten_when_it_holds_the_right_bytes(lab_dir, engine_and_vectors):
    d, store = lab_dir
    persist(engine_and_vectors[0], d, store)
    before = os.stat(d / BASE_NAME)
    load_snapshot(d, store)
    after = os.stat(d / BASE_NAME)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    # a damaged base cache is rebuilt from the CAS
    (d / BASE_NAME).write_bytes(b"garbage")
    load_snapshot(d, store)
    assert (d / BASE_NAME).read_bytes() == decode_index(
        fetch_manifest(store, read_head(d).cid).index_cid, store
    )


def test_temp_leftovers_are_swept(lab_dir, engine_and_vectors):
    d, store = lab_dir
    stale = d / ".oluo-tmp-oluo_head.json.999.1.0"
    stale.write_bytes(b"half a head")
    persist(engine_and_vectors[0], d, store)
    assert not stale.exists()
    assert not [p for p in os.listdir(d) if p.startswith(".oluo-tmp-")]


# ---------------------------------------------------------------- errors from real bad input


@pytest.fixture
def persisted(lab_dir, engine_and_vectors):
    d, store = lab_dir
    snap, _ = persist(engine_and_vectors[0], d, store)
    return d, store, snap


@pytest.mark.parametrize(
    "text, error",
    [
        ("{not json", ManifestSerde),
        ("[1, 2]", ManifestSerde),
        ('{"head": "00"}', ManifestSerde),
        ('{"version": 2, "head": "00"}', UnsupportedVersion),
        ('{"version": 1, "head": "zz"}', ManifestSerde),
        ('{"version": 1, "head": 5}', ManifestSerde),
        ('{"version": 1, "head": "' + "0" * 80 + '"}', ManifestSerde),
    ],
)
def test_bad_head_files(persisted, text, error):
    d, store, _ = persisted
    (d / HEAD_NAME).write_text(text)
    with pytest.raises(error) as ei:
        load_snapshot(d, store)
    if error is not UnsupportedVersion:
        assert HEAD_NAME in str(ei.value)


def test_head_naming_a_missing_manifest(persisted):
    d, store, _ = persisted
    missing = CID.for_book(b"no such manifest")
    (d / HEAD_NAME).write_text(json.dumps({"version": 1, "head": missing.hex}))
    with pytest.raises(SnapshotNotFound) as ei:
        load_snapshot(d, store)
    assert ei.value.cid == missing.hex


def _rewrite_head_to(d, store, manifest: SnapshotManifest) -> CID:
    cid = store.put(manifest.to_bytes())
    (d / HEAD_NAME).write_text(json.dumps({"version": 1, "head": cid.hex}))
    return cid


def test_manifest_that_is_not_a_manifest(persisted):
    d, store, _ = persisted
    cid = store.put(b"\xa1\x61x\x01")  # CBOR {"x": 1}
    (d / HEAD_NAME).write_text(json.dumps({"version": 1, "head": cid.hex}))
    with pytest.raises(ManifestSerde, match=cid.hex):
        load_snapshot(d, store)


def test_manifest_version_unsupported(persisted):
    import cbor2

    d, store, _ = persisted
    m = fetch_manifest(store, read_head(d).cid)
    doc = cbor2.loads(m.to_bytes())
    doc["version"] = 7
    cid = store.put(cbor2.dumps(doc, canonical=True))
    (d / HEAD_NAME).write_text(json.dumps({"version": 1, "head": cid.hex}))
    with pytest.raises(UnsupportedVersion) as ei:
        load_snapshot(d, store)
    assert ei.value.version == 7


def test_metadata_that_does_not_decode(persisted):
    d, store, _ = persisted
    m = fetch_manifest(store, read_head(d).cid)
    junk = store.put(b"not cbor metadata")
    bad = SnapshotManifest(
        **{**m.__dict__, "metadata_cid": junk, "metadata_size": len(b"not cbor metadata")}
    )
    _rewrite_head_to(d, store, bad)
    with pytest.raises(MetadataDeserialize, match=junk.hex):
        load_snapshot(d, store)


def test_index_bytes_the_engine_refuses(persisted):
    d, store, _ = persisted
    m = fetch_manifest(store, read_head(d).cid)
    junk = encode_index(b"\x00" * 64, store)  # a valid (raw) record of bytes faiss refuses
    bad = SnapshotManifest(**{**m.__dict__, "index_cid": junk, "index_size": 64})
    _rewrite_head_to(d, store, bad)
    with pytest.raises(EngineRestoreError):
        load_snapshot(d, store)


def test_missing_and_corrupt_payload_books(persisted):
    d, store, _ = persisted
    m = fetch_manifest(store, read_head(d).cid)
    victim = m.metadata_cid
    damage_book(store, victim, "flip", where=1.0)
    with pytest.raises(CorruptBook) as ei:
        load_snapshot(d, store)
    assert ei.value.cid == victim
    damage_book(store, victim, "delete")
    with pytest.raises(BookNotFound) as ei:
        load_snapshot(d, store)
    assert ei.value.cid == victim


def test_persist_refuses_bad_input_and_changes_nothing(persisted):
    d, store, snap = persisted
    head = (d / HEAD_NAME).read_bytes()
    books = sorted(store)
    with pytest.raises(MetadataDeserialize):
        persist_snapshot(d, store, snap.index_bytes, b"garbage", snap.key_counter, 5)
    with pytest.raises(ManifestSerde):
        persist_snapshot(d, store, snap.index_bytes, snap.metadata_bytes, snap.key_counter, -1)
    with pytest.raises(PersistIOError):
        persist_snapshot(d / "nope", store, snap.index_bytes, snap.metadata_bytes, 1, 5)
    (d / "afile").write_bytes(b"")
    with pytest.raises(PersistIOError):
        persist_snapshot(d / "afile", store, snap.index_bytes, snap.metadata_bytes, 1, 5)
    assert (d / HEAD_NAME).read_bytes() == head
    assert sorted(store) == books


def test_manifest_encoding_is_canonical_and_strict(persisted):
    d, store, _ = persisted
    m = fetch_manifest(store, read_head(d).cid)
    assert SnapshotManifest.from_bytes(m.to_bytes()) == m
    with pytest.raises(ManifestSerde):
        SnapshotManifest.from_bytes(m.to_bytes() + b"\x00")
    with pytest.raises(ManifestSerde):
        SnapshotManifest(**{**m.__dict__, "annotations": {"x": {1, 2}}}).to_bytes()
    with pytest.raises(ManifestSerde):
        SnapshotManifest(**{**m.__dict__, "annotations": {"x": float("nan")}}).to_bytes()
