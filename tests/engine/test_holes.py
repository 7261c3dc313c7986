"""Deletes, updates and expiry compacted by in-place repair: holes, policy, oracle, restore."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from engine_helpers import make_vectors, oracle_topk

from oluo_lab.engine import (
    EngineRestoreFailed,
    InvalidEvent,
    OluoEngine,
    Scope,
    decode_metadata,
)

DIM = 24
N = 3000


def _engine(metric: str, n: int = N, **kw) -> tuple[OluoEngine, np.ndarray]:
    dim = 8 * DIM if metric == "hamming" else DIM
    eng = OluoEngine(dim, metric, compact_threshold=10**9, M=8, ef_construction=60, **kw)
    v = make_vectors(metric, n, dim, seed=11)
    eng.add(v, ids=[f"v{i}" for i in range(n)], progress=False)
    eng.compact()
    return eng, v


def _live(eng: OluoEngine) -> tuple[np.ndarray, np.ndarray]:
    keys, ids, vecs = eng.live_vectors()
    return ids, vecs


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_repaired_base_answers_like_the_oracle(metric):
    eng, v = _engine(metric, hole_fraction=0.2)  # four repairs in a row: ~11% holes
    rng = np.random.default_rng(1)
    gone: set[str] = set()
    holes = 0
    for r in range(4):  # delete, update, add; each compaction a repair
        ids = sorted(set(_live(eng)[0].tolist()) - gone)
        kill = [ids[i] for i in rng.choice(len(ids), 60, replace=False)]
        eng.delete(kill)
        gone |= set(kill)
        upd = [i for i in rng.choice(len(ids), 20, replace=False) if ids[i] not in gone]
        eng.add(
            make_vectors(metric, len(upd), DIM, seed=20 + r),
            ids=[ids[i] for i in upd],
            progress=False,
        )
        eng.add(make_vectors(metric, 40, DIM, seed=40 + r), ids=[f"n{r}-{i}" for i in range(40)])
        holes += len(kill) + len(upd)
        assert eng.compaction_mode == "repair"
        eng.compact()
        assert eng.graph_problems() == []
        assert eng.holes == holes and eng.base_size == len(eng) + holes
    ids, vecs = _live(eng)
    q = make_vectors(metric, 200, DIM, seed=99)
    got = eng.search(q, k=10, ef_search=128)
    want, want_s = oracle_topk(metric, q, vecs, DIM, 10)
    assert not set(got.ids.ravel().tolist()) & gone  # a deleted id is never returned
    hits = [len(set(g) & set(ids[w].tolist())) for g, w in zip(got.ids.tolist(), want, strict=True)]
    assert np.mean(hits) / 10 >= 0.95
    exact = eng.search(q, k=10, exact=True)
    assert np.allclose(exact.scores, want_s, atol=1e-4)
    # every live vector's own nearest neighbour is still found (no node was cut off)
    top1, _ = oracle_topk(metric, vecs[::7], vecs, DIM, 1)
    self_hit = eng.search(vecs[::7], k=1)
    assert (self_hit.ids[:, 0] == ids[top1[:, 0]]).mean() >= 0.99


def test_holes_are_never_returned_even_when_asking_for_everything():
    eng, v = _engine("l2", n=400, repair_fraction=0.5, hole_fraction=0.5)
    dead = [f"v{i}" for i in range(0, 400, 3)]
    eng.delete(dead)
    eng.compact()
    assert eng.holes == len(dead)
    res = eng.search(v[:5], k=400)
    flat = [t for row in res.ids.tolist() for t in row if t is not None]
    assert not set(flat) & set(dead)
    assert all(len([t for t in row if t is not None]) == 400 - len(dead) for row in res.ids)
    # a selective filter goes through the exact path over live positions only
    few = eng.search(v[:5], k=5, predicate=lambda e: e.target in {"v1", "v2"})
    assert {t for row in few.ids.tolist() for t in row if t} == {"v1", "v2"}
    # the zero vector equals every hole's bytes: still no hole comes back
    zero = eng.search(np.zeros(DIM, np.float32), k=10)
    assert not set(zero.ids.ravel().tolist()) & set(dead)


def test_update_is_a_hole_plus_an_append_and_expiry_a_hole():
    eng, v = _engine("cosine")
    new = make_vectors("cosine", 5, DIM, seed=3)
    eng.add(new, ids=["v10", "v11", "v12", "v13", "v14"], progress=False)
    assert eng.compaction_mode == "repair"
    eng.compact()
    assert eng.holes == 5 and eng.base_size == N + 5 and len(eng) == N
    assert eng.search(new, k=1).ids[:, 0].tolist() == ["v10", "v11", "v12", "v13", "v14"]
    # the old vectors are gone: they no longer find their id first
    assert "v10" not in eng.search(v[10], k=3).ids[0].tolist()
    ttl = make_vectors("cosine", 30, DIM, seed=4)
    eng.add(ttl, ids=[f"t{i}" for i in range(30)], ttl_secs=1, now_ms=0, progress=False)
    eng.compact()
    assert eng.compaction_mode == "append"
    assert len(eng.evict_expired(1000)) == 30
    assert eng.compaction_mode == "repair"
    eng.compact()
    assert eng.holes == 35 and eng.graph_problems() == []


def test_policy_switches_to_a_rebuild_past_its_thresholds():
    eng, v = _engine("ip", repair_fraction=0.05, hole_fraction=0.1)
    assert (eng.repair_fraction, eng.hole_fraction) == (0.05, 0.1)
    eng.delete([f"v{i}" for i in range(0, 140)])  # 4.7% of the entries: repair
    assert eng.compaction_mode == "repair"
    eng.compact()
    assert eng.holes == 140
    eng.delete([f"v{i}" for i in range(140, 300)])  # 5.6% of the entries: rebuild
    assert eng.compaction_mode == "rebuild"
    eng.compact()
    assert eng.holes == 0 and eng.base_size == len(eng) == N - 300
    # holes pile up across repairs until the next one would pass hole_fraction
    modes = []
    for r in range(4):
        eng.delete([f"v{i}" for i in range(300 + 100 * r, 400 + 100 * r)])
        modes.append(eng.compaction_mode)
        eng.compact()
    assert modes == ["repair", "repair", "rebuild", "repair"]
    assert eng.holes == 100
    eng.repair_fraction = 0
    eng.delete(["v1000"])
    assert eng.compaction_mode == "rebuild"
    with pytest.raises(InvalidEvent, match="hole_fraction"):
        eng.hole_fraction = 1.5
    with pytest.raises(InvalidEvent, match="repair_fraction"):
        OluoEngine(8, repair_fraction=-0.1)
    assert eng.repair_fraction == 0.0  # a refused value changes nothing


def test_hamming_bases_keep_rebuilding():
    eng, v = _engine("hamming", n=600)
    eng.delete(["v1", "v2"])
    assert eng.compaction_mode == "rebuild"
    eng.compact()
    assert eng.holes == 0 and eng.base_size == 598


def test_the_policy_travels_with_the_snapshot_and_restore_continues_it():
    eng, v = _engine("l2", repair_fraction=0.07, hole_fraction=0.3)
    eng.delete(["v1", "v2", "v3"])
    snap = eng.compact()
    cfg = decode_metadata(snap.metadata_bytes).config
    assert (cfg["repair_fraction"], cfg["hole_fraction"]) == (0.07, 0.3)
    back = OluoEngine.from_snapshot(snap.index_bytes, snap.metadata_bytes, snap.key_counter, 2)
    assert (back.repair_fraction, back.hole_fraction, back.holes) == (0.07, 0.3, 3)
    assert "holes=3" in repr(back) and "holes" in back._repr_html_()
    q = make_vectors("l2", 30, DIM, seed=5)
    assert back.search(q, k=5).ids.tolist() == eng.search(q, k=5).ids.tolist()


@pytest.mark.parametrize("mapped", [False, True])
def test_restore_then_repair_equals_repair_then_restore(tmp_path, mapped):
    eng, v = _engine("cosine")
    eng.add(make_vectors("cosine", 50, DIM, seed=8), ids=[f"a{i}" for i in range(50)])
    first = eng.compact()
    path = tmp_path / "base.faiss"
    path.write_bytes(first.index_bytes)
    back = OluoEngine.from_snapshot(
        first.index_bytes,
        first.metadata_bytes,
        first.key_counter,
        first.generation,
        base_path=path if mapped else None,
    )
    assert back._index.base_mapped == mapped
    for e in (eng, back):
        e.delete([f"v{i}" for i in range(5, 3000, 37)] + ["a3"])
        e.add(make_vectors("cosine", 9, DIM, seed=9), ids=[f"v{i}" for i in range(9)])
    a, b = eng.compact(), back.compact()
    assert a.index_bytes == b.index_bytes and a.metadata_bytes == b.metadata_bytes
    # and restoring the repaired snapshot gives the same engine again
    c = OluoEngine.from_snapshot(a.index_bytes, a.metadata_bytes, a.key_counter, a.generation)
    for e in (eng, c):
        e.delete(["v100", "v200"])
    assert eng.compact().index_bytes == c.compact().index_bytes


def test_restore_refuses_an_index_that_does_not_fit_the_holes():
    eng, v = _engine("l2", n=500)
    eng.delete(["v4", "v9"])
    snap = eng.compact()
    doc = cbor2.loads(snap.metadata_bytes)
    assert doc["holes"] == 2 and len(doc["entry_columns"]["index_holes"]) == 8
    fewer = dict(doc, holes=1, entry_columns=dict(doc["entry_columns"], index_holes=b"\x04\0\0\0"))
    with pytest.raises(EngineRestoreFailed, match="498 entries and 1 holes"):
        OluoEngine.from_snapshot(snap.index_bytes, fewer, snap.key_counter, 2)
    for bad, match in (
        (b"\x09\0\0\0\x04\0\0\0", "strictly increasing"),
        (b"\x04\0\0\0\xf4\x01\0\0", "below 500"),
        (b"\x04\0\0\0", "8 bytes"),
    ):
        doc_bad = dict(doc, entry_columns=dict(doc["entry_columns"], index_holes=bad))
        with pytest.raises(EngineRestoreFailed, match=match):
            OluoEngine.from_snapshot(snap.index_bytes, doc_bad, snap.key_counter, 2)


def test_scoped_search_with_holes_keeps_the_fast_path_rules():
    eng, v = _engine("cosine", n=800)
    eng.add(
        make_vectors("cosine", 20, DIM, seed=6),
        ids=[f"p{i}" for i in range(20)],
        scope=Scope.PERSONAL,
        progress=False,
    )
    eng.delete([f"v{i}" for i in range(0, 800, 10)])
    eng.compact()
    assert eng._index.base_entries == len(eng)
    q = v[1]
    one = eng.search(q, k=5)
    assert one.ids[0, 0] == "v1"
    assert eng._index._scope_allowed(int(Scope.NETWORK_WIDE))[2]  # holes filter nothing
    personal = eng.search(q, k=5, scope=Scope.PERSONAL)
    assert all(t.startswith("p") for t in personal.ids[0].tolist())
    batch = eng.search(v[:3], k=5).ids.tolist()
    assert batch == [eng.search(x, k=5).ids[0].tolist() for x in v[:3]]


def test_a_repair_changes_the_metadata_columns_only_where_entries_were_removed():
    """Version 4 names entries by key and stores map sizes, so after a delete every column
    is the old column without the removed entries' values: nothing shifts (row numbers
    and end offsets would, making the whole column new bytes in the next snapshot)."""
    eng = OluoEngine(DIM, "l2", compact_threshold=10**9, M=8, ef_construction=60)
    v = make_vectors("l2", 600, DIM, seed=3)
    ids = [f"v{i}" for i in range(600)]
    eng.add(v[:400], ids=ids[:400], metadata={"k": 1}, progress=False)
    eng.add(v[400:], ids=ids[400:], ttl_secs=60, metadata={"long": "x" * 30}, progress=False)
    eng.delete(ids[:5])  # dead entries: the next compaction rebuilds and renumbers
    before = cbor2.loads(eng.compact().metadata_bytes)["entry_columns"]
    assert "index_keys" in before  # a renumbered base
    gone = sorted(np.random.default_rng(4).choice(np.arange(5, 600), 12, replace=False))
    assert eng.compaction_mode == "append"
    eng.delete([ids[i] for i in gone])
    assert eng.compaction_mode == "repair"
    after = cbor2.loads(eng.compact().metadata_bytes)["entry_columns"]
    keys = np.frombuffer(before["keys"], "<u8")
    dead = np.isin(keys, np.frombuffer(after["keys"], "<u8"), invert=True)
    assert dead.sum() == 12
    dead_keys = keys[dead]

    def without(name: str, dtype: str, by_key: bool) -> np.ndarray:
        col = np.frombuffer(before[name], dtype)
        return col[~np.isin(col, dead_keys)] if by_key else col[~dead]

    for name in ("keys", "expires_keys", "index_keys"):
        assert np.array_equal(np.frombuffer(after[name], "<u8"), without(name, "<u8", True))
    assert np.array_equal(
        np.frombuffer(after["metadata_sizes"], "<u4"), without("metadata_sizes", "<u4", False)
    )
    assert np.array_equal(
        np.frombuffer(after["ingested_at_ms"], "<u8"), without("ingested_at_ms", "<u8", False)
    )
