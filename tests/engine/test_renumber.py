"""Locality renumbering of rebuilt bases, the metadata ``row_order`` column, ``build_threads``."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from engine_helpers import make_vectors, oracle_topk

from oluo_lab.engine import OluoEngine, decode_metadata, encode_metadata, locality_order
from oluo_lab.engine.errors import InvalidEvent, SnapshotDecodeError
from oluo_lab.metrics import answer_overlap

N, DIM = 3000, 24


def _built(metric: str = "cosine", n: int = N, **kw) -> tuple[OluoEngine, np.ndarray]:
    v = make_vectors(metric, n, DIM if metric != "hamming" else 64, seed=3)
    eng = OluoEngine(
        DIM if metric != "hamming" else 64, metric, compact_threshold=n + 1, ef_search=128, **kw
    )
    eng.add(v, ids=[f"w{i}" for i in range(n)])
    eng.compact()
    return eng, v


def _recall(eng: OluoEngine, v: np.ndarray, metric: str, alive: np.ndarray) -> float:
    q = make_vectors(metric, 200, v.shape[1], seed=9)
    order, _ = oracle_topk(metric, q, v[alive], v.shape[1], 10)
    truth = np.asarray([f"w{i}" for i in alive], object)[order]
    got = eng.search(q, k=10).ids
    return answer_overlap(got, truth, 10)


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_full_build_is_renumbered_and_matches_brute_force(metric):
    eng, v = _built(metric)
    ix = eng._index
    keys = ix.base_keys
    assert sorted(keys.tolist()) == list(range(N))
    assert not (np.diff(keys) > 0).all()  # rows are no longer in key order
    # position i holds the vector of key base_keys[i]
    stored = ix.base_vectors()
    want = v[keys]
    if metric == "cosine":
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(stored, want, rtol=1e-6, atol=1e-6)
    assert _recall(eng, v, metric, np.arange(N)) >= 0.95
    if metric != "ip":  # every stored vector finds itself first (through the new order)
        res = eng.search(v[::97], k=1)
        assert res.ids[:, 0].tolist() == [f"w{i}" for i in range(0, N, 97)]


def test_locality_order_is_a_permutation_and_deterministic():
    eng, _ = _built("l2", 500)
    perm = locality_order(eng._index.base)
    assert sorted(perm.tolist()) == list(range(500))
    assert perm[0] == 0  # the entry point comes first (BFS of the renumbered graph)
    assert np.array_equal(perm, locality_order(eng._index.base))
    assert np.array_equal(perm, np.arange(500))  # BFS of a BFS-ordered graph is the identity


def test_hamming_keeps_key_order():
    eng, _ = _built("hamming", 800)
    assert np.array_equal(eng._index.base_keys, np.arange(800))


def test_key_mapping_after_renumbered_compaction_and_snapshot_round_trip():
    eng, v = _built("cosine")
    eng.delete([f"w{i}" for i in range(0, N, 5)])  # tombstones -> next compaction rebuilds
    eng.add(v[:3] * 2.0, ids=["w1", "w2", "new"])  # re-ingest (shadow) and a fresh id
    snap = eng.compact()
    meta = decode_metadata(snap.metadata_bytes)
    assert "index_keys" in cbor2.loads(snap.metadata_bytes)["entry_columns"]
    assert meta.row_order is not None
    assert np.array_equal(meta.row_keys(), eng._index.base_keys)
    back = OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, snap.generation
    )
    assert np.array_equal(back._index.base_keys, eng._index.base_keys)
    q = make_vectors("cosine", 50, DIM, seed=11)
    a, b = eng.search(q, k=10), back.search(q, k=10)
    assert a.ids.tolist() == b.ids.tolist()
    assert np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.keys, b.keys)
    ka, ia, va = eng.live_vectors()
    kb, ib, vb = back.live_vectors()
    assert np.array_equal(ka, kb) and ia.tolist() == ib.tolist() and np.array_equal(va, vb)
    # the restored engine resolves keys to the right rows: delete and shadow by id
    back.delete(["w7", "w8"])
    assert {"w7", "w8"}.isdisjoint(back.search(v[[7, 8]], k=3).ids.ravel().tolist())
    back.add(v[9], ids=["w103"])  # an existing id re-ingested: w103 now holds w9's vector
    top = back.search(v[9], k=2).ids[0].tolist()
    assert sorted(top) == ["w103", "w9"]
    assert "w103" not in back.search(v[103], k=3).ids[0].tolist()
    # and a renumbered restore survives its next (rebuild) compaction and round trip
    snap2 = back.compact()
    again = OluoEngine.from_snapshot(
        snap2.index_bytes, snap2.metadata_bytes, snap2.key_counter, snap2.generation
    )
    assert again.search(q, k=10).ids.tolist() == back.search(q, k=10).ids.tolist()
    assert len(again.live_vectors()[0]) == N - N // 5 + 1 - 2  # deleted, +"new", -w7 -w8


def test_append_keeps_old_positions():
    """Copy-on-write append after a renumbered build: old rows stay, new rows follow."""
    eng, v = _built("cosine", 1500)
    old_keys = eng._index.base_keys.copy()
    old = eng._index.base_vectors().copy()
    eng.add(make_vectors("cosine", 200, DIM, seed=4), ids=[f"x{i}" for i in range(200)])
    snap = eng.compact()
    ix = eng._index
    assert np.array_equal(ix.base_keys[:1500], old_keys)
    assert np.array_equal(ix.base_keys[1500:], np.arange(1500, 1700))
    assert np.array_equal(ix.base_vectors()[:1500], old)
    back = OluoEngine.from_snapshot(snap.index_bytes, snap.metadata_bytes, 0, snap.generation)
    assert np.array_equal(back._index.base_keys, ix.base_keys)


def test_row_order_column_only_when_not_in_key_order_and_strict():
    eng, _ = _built("hamming", 300)
    snap = eng.current_snapshot()
    doc = cbor2.loads(snap.metadata_bytes)
    assert doc["version"] == 4 and "index_keys" not in doc["entry_columns"]
    assert decode_metadata(snap.metadata_bytes).row_order is None
    entries = decode_metadata(snap.metadata_bytes).entries
    cfg = eng.config.as_dict()
    keys = np.arange(300, dtype=np.int64)
    assert encode_metadata(cfg, 300, 1, entries, keys) == encode_metadata(cfg, 300, 1, entries)
    perm = keys[::-1].copy()
    data = encode_metadata(cfg, 300, 1, entries, perm)
    assert np.array_equal(decode_metadata(data).row_keys(), perm)
    v2 = cbor2.loads(data)
    cols = v2["entry_columns"]
    bad = {
        "short": cols["index_keys"][:-8],
        "not a permutation": np.zeros(300, "<u8").tobytes(),
        "no such key": np.arange(1, 301, dtype="<u8").tobytes(),
        "identity": np.arange(300, dtype="<u8").tobytes(),
        "not bytes": list(range(300)),
    }
    for why, value in bad.items():
        doc_bad = dict(v2, entry_columns=dict(cols, index_keys=value))
        with pytest.raises(SnapshotDecodeError, match="index_keys"):
            decode_metadata(cbor2.dumps(doc_bad, canonical=True))
        assert why
    with pytest.raises(SnapshotDecodeError, match="columns"):
        decode_metadata(dict(v2, entry_columns=dict(cols, row_order=cols["index_keys"])))
    with pytest.raises(ValueError, match="permutation"):
        encode_metadata(cfg, 300, 1, entries, np.zeros(300, np.int64))


def test_build_threads_option():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidEvent, match="build_threads"):
            OluoEngine(8, build_threads=bad)
    eng, v = _built("l2", build_threads=2)
    assert eng._index.build_threads == 2
    assert _recall(eng, v, "l2", np.arange(N)) >= 0.95
    snap = eng.current_snapshot()
    back = OluoEngine.from_snapshot(
        snap.index_bytes, snap.metadata_bytes, snap.key_counter, 1, build_threads=2
    )
    q = make_vectors("l2", 20, DIM, seed=2)
    assert back.search(q, k=5).ids.tolist() == eng.search(q, k=5).ids.tolist()


ROW_ORDER_HEX = (
    "a865686f6c65730066636f6e666967a9614d106364696d04666d657472696362"
    "6c326965665f73656172636818406d66616973735f76657273696f6e66312e31"
    "352e316d686f6c655f6672616374696f6efb3fc999999999999a6e7072756e65"
    "5f68656164726f6f6df900006f65665f636f6e737472756374696f6e18806f72"
    "65706169725f6672616374696f6efb3fb999999999999a66666f726d6174746f"
    "6c756f2d656e67696e652d6d6574616461746167656e74726965730267766572"
    "73696f6e046a67656e65726174696f6e016b6b65795f636f756e746572046d65"
    "6e7472795f636f6c756d6e73ac646b6579735000000000000000000300000000"
    "0000006573636f7065420200677461726765747382616107686d657461646174"
    "614ea2616e0164776f726463746865a0686f7665726c61797381816270316a65"
    "7870697265735f61744828230000000000006a696e6465785f6b657973500300"
    "00000000000000000000000000006c657870697265735f6b6579734803000000"
    "000000006c6f7665726c61795f6b6579734803000000000000006c7072697661"
    "63795f746965724200016e696e6765737465645f61745f6d7350050000000000"
    "000006000000000000006e6d657461646174615f73697a6573480d0000000100"
    "0000"
)


def test_row_order_test_vector_is_pinned_and_in_format_doc():
    from pathlib import Path

    from test_snapshot import CFG, ENTRIES

    data = encode_metadata(CFG, 4, 1, ENTRIES, np.array([3, 0]))
    assert data.hex() == ROW_ORDER_HEX
    dec = decode_metadata(data)
    assert dec.entries == ENTRIES and dec.row_keys().tolist() == [3, 0]
    doc = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    section = doc.split("<!-- section:engine -->")[1].split("<!-- /section:engine -->")[0]
    assert ROW_ORDER_HEX in "".join(section.split())


def test_permuted_base_whose_ends_are_0_and_n_minus_1_still_translates_positions():
    """A renumbered base can start with key 0 and end with key n-1 without being the
    identity; positions must still be translated to keys."""
    eng, v = _built("l2", 300)
    ix = eng._index
    n = ix.base_n
    want = np.concatenate(([0], np.arange(1, n - 1)[::-1], [n - 1])).astype(np.int64)
    perm = np.argsort(ix.base_keys)[want]  # position i gets the row holding key want[i]
    ix.base.permute_entries(perm)
    data = ix.base_bytes()
    ix.install(ix.base, data, ix.base_keys[perm], ix.base_scope[perm])
    assert ix.base_keys.tolist() == want.tolist()
    # (not exact copies: those are answered through the exact-match table)
    q = v[:20] + np.float32(1e-4) * make_vectors("l2", 20, v.shape[1], seed=8)
    got = eng.search(q, k=5)
    assert got.keys[:, 0].tolist() == list(range(20))  # each finds its row, by key
    exact = eng.search(q, k=5, exact=True)
    assert np.array_equal(got.keys[:, 0], exact.keys[:, 0])
    one = eng.search(q[7], k=5)
    assert int(one.keys.ravel()[0]) == 7
