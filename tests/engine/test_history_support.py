"""Engine features the Lab relies on: exact search, live vectors, forced compaction,
current snapshot and renumbering."""

from __future__ import annotations

import numpy as np
import pytest

from oluo_lab.engine import InvalidEvent, OluoEngine, Scope


def _engine(n=500, dim=12, seed=0, metric="cosine"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    eng = OluoEngine(dim, metric, compact_threshold=10_000, M=8, ef_construction=40)
    eng.add(x, ids=[f"e{i}" for i in range(n)], metadata=[{"even": i % 2 == 0} for i in range(n)])
    return eng, x


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_search_is_brute_force(metric):
    eng, x = _engine(metric=metric)
    eng.compact()
    eng.add(x[:30] + 0.5, ids=[f"d{i}" for i in range(30)])  # some in the delta
    eng.delete([f"e{i}" for i in range(10)])
    q = np.random.default_rng(1).standard_normal((20, 12)).astype(np.float32)
    res = eng.search(q, k=7, exact=True)
    keys, ids, vecs = eng.live_vectors()
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    if metric == "l2":
        d = ((qq[:, None, :].astype(np.float64) - vecs[None].astype(np.float64)) ** 2).sum(-1)
    else:
        d = -(qq.astype(np.float64) @ vecs.T.astype(np.float64))
        if metric == "cosine":
            d = 1.0 + d
    order = np.argsort(d, axis=1, kind="stable")[:, :7]
    assert res.ids.tolist() == ids[order].tolist()
    np.testing.assert_allclose(res.scores, np.take_along_axis(d, order, 1), rtol=1e-5, atol=1e-5)


def test_exact_search_honours_scope_and_predicate():
    eng, x = _engine()
    eng.add(x[:5] * 2, ids=[f"p{i}" for i in range(5)], scope=Scope.PERSONAL)
    res = eng.search(x[:3], k=4, exact=True, scope=Scope.PERSONAL)
    assert set(res.ids.ravel().tolist()) <= {f"p{i}" for i in range(5)}
    res = eng.search(x[:3], k=10, exact=True, predicate=lambda e: e.metadata.get("even") is True)
    assert all(int(t[1:]) % 2 == 0 for t in res.ids.ravel())


def test_live_vectors_cover_base_and_delta_in_key_order():
    eng, x = _engine(n=50)
    eng.compact()
    eng.delete(["e3"])
    eng.add(x[:2] + 1, ids=["n0", "n1"])
    keys, ids, vecs = eng.live_vectors()
    assert keys.tolist() == sorted(keys.tolist()) and len(keys) == len(eng) == 51
    assert "e3" not in ids.tolist() and ids[-2:].tolist() == ["n0", "n1"]
    expect = (x[:2] + 1) / np.linalg.norm(x[:2] + 1, axis=1, keepdims=True)
    np.testing.assert_allclose(vecs[-2:], expect, rtol=1e-6)


def test_forced_compaction_and_current_snapshot():
    eng, _ = _engine(n=100)
    first = eng.compact()
    assert eng.compact() is None
    cur = eng.current_snapshot()
    assert cur == first  # same payloads, same generation
    forced = eng.compact(force=True)
    assert forced.generation == first.generation + 1
    assert forced.index_bytes == first.index_bytes  # same entries, same graph
    assert forced.metadata_bytes != first.metadata_bytes  # generation is recorded inside
    eng.add(np.ones((1, 12), np.float32), ids=["x"])
    assert eng.current_snapshot() is None  # delta not in the base yet


def test_renumber_only_moves_forward():
    eng, _ = _engine(n=20)
    eng.compact()
    eng.renumber(7)
    assert eng.generation == 7
    eng.add(np.ones((1, 12), np.float32), ids=["x"])
    assert eng.compact().generation == 8
    with pytest.raises(InvalidEvent):
        eng.renumber(3)
    assert eng.generation == 8
