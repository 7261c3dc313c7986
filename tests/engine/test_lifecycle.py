"""Ingest semantics, eviction, deletes, shadowing, compaction and CompactComplete."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import make_vectors

from oluo_lab.engine import (
    CompactComplete,
    CompactCompleteFailed,
    Delete,
    EngineError,
    EvictExpired,
    IndexFull,
    IndexLightweight,
    IndexUpdated,
    Ingest,
    OluoEngine,
    PersistSnapshot,
    PrivacyTier,
    Reject,
    Scope,
    Search,
    SearchResults,
)


def _vec(seed, dim=8):
    return make_vectors("l2", 1, dim, seed=seed)[0]


def _ids(eng, q, k=10, **kw):
    return [x for x in eng.search(q, k=k, **kw).ids[0].tolist() if x is not None]


def test_reject_and_encrypted_ephemeral_are_never_indexed():
    eng = OluoEngine(8, "l2")
    assert eng.handle(Ingest(_vec(1), "a", decision=Reject())) == []
    ee = PrivacyTier.ENCRYPTED_EPHEMERAL
    assert eng.handle(Ingest(_vec(2), "b", privacy_tier=ee)) == []
    assert len(eng) == 0 and eng.key_counter == 0


def test_reject_of_known_target_removes_the_old_entry():
    """Upstream left the older, less private entry searchable; here the newest decision wins."""
    eng = OluoEngine(8, "l2")
    eng.handle(Ingest(_vec(1), "a"))
    acts = eng.handle(Ingest(_vec(1), "a", privacy_tier=PrivacyTier.ENCRYPTED_EPHEMERAL))
    assert acts == [IndexUpdated((None,), ("a",))]
    assert len(eng) == 0 and _ids(eng, _vec(1)) == []


def test_reingest_reuses_key_widens_scope_and_replaces_fields():
    eng = OluoEngine(8, "l2")
    (a1,) = eng.handle(
        Ingest(_vec(1), "a", {"v": 1}, now_ms=5, scope=Scope.COMMUNITY, overlays=["o1", "o2"])
    )
    assert a1 == IndexUpdated((0,), ())
    eng.handle(Ingest(_vec(9), "b"))
    (a2,) = eng.handle(
        Ingest(
            _vec(2),
            "a",
            {"v": 2},
            IndexLightweight(10),
            now_ms=7,
            scope=Scope.PERSONAL,
            overlays=["o3"],
        )
    )
    assert a2.keys == (0,)
    assert len(eng) == 2 and eng.key_counter == 2
    e = eng.entry("a")
    assert e.scope == Scope.COMMUNITY  # max(old, new): never narrows
    assert e.metadata == {"v": 2} and e.overlays == ("o3",)  # replaced, not accumulated
    assert e.ingested_at_ms == 7 and e.expires_at == 7 + 10_000
    assert eng.scope_counts == (0, 1, 1)
    # the old vector is gone: the nearest to it is now the new vector of "a" or "b"
    res = eng.search(_vec(2), k=1)
    assert res.ids[0, 0] == "a" and res.scores[0, 0] == pytest.approx(0.0, abs=1e-6)


def test_ttl_saturates_and_eviction_boundary_is_expires_at():
    eng = OluoEngine(8, "l2")
    eng.handle(Ingest(_vec(1), "light", decision=IndexLightweight(3), now_ms=1000))
    eng.handle(Ingest(_vec(2), "full", now_ms=1000))
    eng.handle(Ingest(_vec(3), "huge", decision=IndexLightweight(2**62), now_ms=2**63))
    assert eng.entry("huge").expires_at == 2**64 - 1
    assert eng.entry("light").expires_at == 4000
    assert eng.handle(EvictExpired(3999)) == []
    assert "light" in _ids(eng, _vec(1))  # expired-but-not-evicted is still returned
    assert eng.handle(EvictExpired(4000)) == [IndexUpdated((), ("light",))]
    assert "light" not in _ids(eng, _vec(1)) and len(eng) == 2


@pytest.mark.parametrize("compact_first", [False, True])
def test_evicted_and_deleted_vectors_leave_every_later_snapshot(compact_first):
    vecs = make_vectors("l2", 50, 8, seed=5)
    eng = OluoEngine(8, "l2", compact_threshold=10_000)
    eng.handle(Ingest(vecs[:40], list(range(40))))
    eng.handle(Ingest(vecs[40:], list(range(40, 50)), decision=IndexLightweight(1), now_ms=0))
    if compact_first:
        first = eng.compact()
        assert vecs[3].tobytes() in first.index_bytes  # the probe works
        assert vecs[45].tobytes() in first.index_bytes
    eng.delete([3])
    eng.handle(EvictExpired(1000))
    assert len(eng) == 39
    for q, gone in ((vecs[3], 3), (vecs[45], 45)):
        assert gone not in _ids(eng, q, k=50)
    snap = eng.compact()
    assert snap is not None
    assert vecs[3].tobytes() not in snap.index_bytes
    for i in range(40, 50):
        assert vecs[i].tobytes() not in snap.index_bytes
    assert vecs[4].tobytes() in snap.index_bytes
    from oluo_lab.engine import decode_metadata

    meta = decode_metadata(snap.metadata_bytes)
    assert sorted(e.target for e in meta.entries.values()) == [i for i in range(40) if i != 3]


def test_delta_shadows_base_before_and_after_recompaction():
    vecs = make_vectors("l2", 20, 8, seed=6)
    eng = OluoEngine(8, "l2", ef_search=64)
    eng.add(vecs, ids=list(range(20)))
    eng.compact()
    new = vecs[7] + 100.0
    eng.add(new[None], ids=[7])  # key 7 moves to the delta
    assert eng.key_of(7) == 7 and eng.delta_size == 1
    for _ in range(2):
        res = eng.search(vecs[7], k=20)
        assert res.ids[0].tolist().count(7) == 1  # the old base copy never shows
        assert res.ids[0, 0] != 7
        res = eng.search(new, k=1)
        assert res.ids[0, 0] == 7 and res.scores[0, 0] == pytest.approx(0, abs=1e-4)
        snap = eng.compact()  # second round: after recompaction
        if snap is not None:
            assert vecs[7].tobytes() not in snap.index_bytes
            assert new.astype(np.float32).tobytes() in snap.index_bytes


def test_compaction_trigger_order_and_generations():
    eng = OluoEngine(8, "l2", compact_threshold=3)
    vecs = make_vectors("l2", 7, 8, seed=7)
    assert eng.handle(Ingest(vecs[0], 0)) == [IndexUpdated((0,), ())]
    assert eng.handle(Ingest(vecs[1], 1)) == [IndexUpdated((1,), ())]
    acts = eng.handle(Ingest(vecs[2], 2))
    assert [type(a) for a in acts] == [PersistSnapshot, IndexUpdated]
    assert acts[0].generation == 1 and acts[0].key_counter == 3 and eng.delta_size == 0
    acts = eng.handle(Ingest(vecs[3:7], [3, 4, 5, 6]))  # one batch, one compaction
    assert [type(a) for a in acts] == [PersistSnapshot, IndexUpdated]
    assert acts[0].generation == 2 == eng.generation
    assert eng.compact() is None  # nothing changed


def test_batch_ingest_compacts_once():
    eng = OluoEngine(8, "l2", compact_threshold=10)
    eng.add(make_vectors("l2", 95, 8, seed=8))
    assert eng.generation == 1 and len(eng.take_snapshots()) == 1
    assert eng.take_snapshots() == []


def test_compact_complete_is_ignored_when_stale_and_swaps_when_current(tmp_path):
    vecs = make_vectors("cosine", 400, 16, seed=9)
    eng = OluoEngine(16, "cosine", ef_search=512)
    assert eng.handle(CompactComplete(str(tmp_path / "x"), 0)) == []  # before any compaction
    eng.add(vecs)
    snap = eng.compact()
    before = eng.search(vecs[:50], k=10)
    p = tmp_path / "base.bin"
    p.write_bytes(snap.index_bytes)
    assert eng.handle(CompactComplete(str(p), 999)) == []  # stale generation
    assert not eng._index.base_mapped
    assert eng.handle(CompactComplete(str(p), snap.generation)) == []
    assert eng._index.base_mapped
    after = eng.search(vecs[:50], k=10)
    assert after.ids.tolist() == before.ids.tolist()
    assert np.array_equal(after.scores, before.scores)
    # a mapped base can be compacted again (copy-on-write), then deleted from (rebuild)
    eng.add(make_vectors("cosine", 5, 16, seed=10), ids=range(400, 405))
    s2 = eng.compact()
    assert s2.generation == 2 and eng.search(vecs[:5], k=1).ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    eng.delete([0])
    assert eng.compact().generation == 3 and 0 not in _ids(eng, vecs[0])


def test_compact_complete_with_wrong_file_is_a_typed_error(tmp_path):
    eng = OluoEngine(8, "l2")
    eng.add(make_vectors("l2", 10, 8, seed=11))
    snap = eng.compact()
    p = tmp_path / "base.bin"
    p.write_bytes(snap.index_bytes[:-1] + b"\x00")
    (act,) = eng.handle(CompactComplete(str(p), snap.generation))
    assert isinstance(act, EngineError) and isinstance(act.error, CompactCompleteFailed)
    (act,) = eng.handle(CompactComplete(str(tmp_path / "missing"), snap.generation))
    assert isinstance(act.error, CompactCompleteFailed)
    assert not eng._index.base_mapped


def test_search_results_action_and_k_zero():
    eng = OluoEngine(8, "l2")
    eng.add(make_vectors("l2", 5, 8, seed=12))
    (res,) = eng.handle(Search(42, _vec(1), k=0))
    assert isinstance(res, SearchResults) and res.query_id == 42 and res.ids.shape == (1, 0)
    (res,) = eng.handle(Search(43, make_vectors("l2", 2, 8, seed=13), k=8))
    assert res.query_id == 43 and res.ids.shape == (2, 8)
    assert res.ids[:, 5:].tolist() == [[None] * 3] * 2
    assert (res.keys[:, 5:] == -1).all() and np.isinf(res.scores[:, 5:]).all()
    assert (res.keys[:, :5] >= 0).all()


def test_empty_engine_search():
    eng = OluoEngine(8, "l2")
    res = eng.search(_vec(1), k=3)
    assert res.ids.tolist() == [[None, None, None]]


def test_delete_unknown_is_all_or_nothing():
    from oluo_lab.engine import UnknownId

    eng = OluoEngine(8, "l2")
    eng.add(make_vectors("l2", 3, 8, seed=14), ids=["a", "b", "c"])
    (act,) = eng.handle(Delete(["a", "zz"]))
    assert isinstance(act.error, UnknownId) and len(eng) == 3
    with pytest.raises(UnknownId):
        eng.delete(["zz"])
    eng.delete(["a", "b"])
    assert len(eng) == 1


def test_keys_are_never_reused():
    eng = OluoEngine(8, "l2")
    eng.add(make_vectors("l2", 3, 8, seed=15), ids=["a", "b", "c"])
    eng.delete(["c"])
    eng.compact()
    (keys,) = [eng.add(_vec(3)[None], ids=["c"])]
    assert keys == [3] and eng.key_counter == 4


def test_to_frame_long_format_with_metadata_columns():
    eng = OluoEngine(8, "l2")
    vecs = make_vectors("l2", 4, 8, seed=16)
    eng.add(vecs, ids=["w", "x", "y", "z"], metadata=[{"word": s} for s in "wxyz"])
    res = eng.search(vecs[:2], k=3)
    df = res.to_frame()
    assert list(df.columns) == ["query", "rank", "id", "key", "score", "word"]
    assert len(df) == 6 and df["query"].tolist() == [0, 0, 0, 1, 1, 1]
    assert df.loc[0, "id"] == "w" and df.loc[0, "word"] == "w" and df.loc[3, "id"] == "x"
    assert repr(res) == "SearchResults(query_id=None, queries=2, k=3, hits=6)"
    assert "<table>" in res._repr_html_()


def test_on_snapshot_callback_receives_auto_compactions():
    got = []
    eng = OluoEngine(8, "l2", compact_threshold=4, on_snapshot=got.append)
    eng.add(make_vectors("l2", 9, 8, seed=17))
    assert [s.generation for s in got] == [1] and eng.pending_snapshots == []
    assert repr(eng) == "OluoEngine(dim=8, metric='l2', entries=9, base=9, delta=0, generation=1)"


def test_single_vector_ingest_forms():
    eng = OluoEngine(8, "l2")
    eng.handle(Ingest(_vec(1), 7, {"a": 1}, IndexFull(), overlays=["p"]))
    assert eng.entry(7).overlays == ("p",)
    eng.handle(Ingest(make_vectors("l2", 2, 8, 2), ["x", "y"], overlays=[["p"], []]))
    assert eng.entry("y").overlays == ()


@pytest.mark.parametrize("single", [False, True])
def test_search_results_describe_the_engine_at_search_time(single):
    """ids and entries are resolved lazily, but a later re-ingest / eviction / delete
    never shows through in a result taken before it (single-query fast path too)."""
    eng = OluoEngine(8, "cosine")
    vecs = make_vectors("cosine", 40, 8, seed=21)
    eng.add(vecs, ids=[f"w{i}" for i in range(40)], metadata=[{"n": i} for i in range(40)])
    eng.compact()
    q = make_vectors("cosine", 3, 8, seed=22)
    q = q[0] if single else q
    eng.search(q, k=5)  # warm the filter / exact-match caches so the fast path applies
    res = [eng.search(q, k=5) for _ in range(4)]
    if single:
        assert eng._index._plans  # the fast path answered
    lazy = eng._table.n_lazy
    assert lazy > 0  # entries of a compacted engine are built on first use
    first = res[0].ids.copy()  # resolved before any change
    assert eng._table.n_lazy == lazy  # reading ids builds no entries
    hit0, hit1 = first[0, 0], first[0, 1]
    keys = res[0].keys.copy()
    # each change happens with results still unresolved
    eng.add(vecs[int(hit0[1:])], ids=[hit0], metadata={"n": -1})  # new metadata
    eng.add(vecs[int(hit1[1:])], ids=[hit1], ttl_secs=1)
    assert eng.evict_expired(10_000) == [hit1]
    eng.delete([hit0])
    for r in res[1:] + res[:1]:
        assert np.array_equal(r.keys, keys) and np.array_equal(r.ids, first)
        assert [e.target for e in r.entries[0, :2]] == [hit0, hit1]
        assert r.entries[0, 0].metadata == {"n": int(hit0[1:])}
        assert r.entries[0, 1].expires_at is None
        assert r.to_frame()["id"].iloc[:2].tolist() == [hit0, hit1]
    after = eng.search(q, k=5).ids.tolist()[0]
    assert hit0 not in after and hit1 not in after


def test_search_results_are_immutable_and_pickle_resolved():
    import dataclasses
    import pickle

    eng = OluoEngine(8, "l2")
    vecs = make_vectors("l2", 6, 8, seed=23)
    eng.add(vecs, ids=list("abcdef"), metadata=[{"c": c} for c in "abcdef"])
    res = eng.search(vecs[:2], k=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.ids = None
    with pytest.raises(AttributeError):
        res.keys = None
    back = pickle.loads(pickle.dumps(res))
    assert np.array_equal(back.keys, res.keys) and np.array_equal(back.scores, res.scores)
    assert back.ids.tolist() == res.ids.tolist()
    assert [[e.metadata for e in row] for row in back.entries] == res.metadata


def test_search_results_match_positionally():
    eng = OluoEngine(8, "l2")
    vecs = make_vectors("l2", 4, 8, seed=24)
    eng.add(vecs, ids=list("wxyz"))
    match eng.handle(Search(7, vecs[:1], k=2)):
        case [SearchResults(qid, ids, keys, scores, entries)]:
            assert qid == 7 and ids[0, 0] == "w" and keys[0, 0] == 0 and scores[0, 0] == 0.0
            assert entries[0, 0].target == "w"
        case other:
            raise AssertionError(other)
