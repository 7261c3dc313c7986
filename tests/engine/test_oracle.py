"""Scores and neighbours against a NumPy brute-force oracle, for every metric."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import make_vectors, oracle_scores, oracle_topk

from oluo_lab.engine import OluoEngine

METRICS = [("cosine", 24), ("l2", 24), ("ip", 24), ("hamming", 256)]


def _engine(metric, dim, base, threshold=10_000, **kw):
    eng = OluoEngine(dim, metric, compact_threshold=threshold, **kw)
    eng.add(base)
    return eng


@pytest.mark.parametrize("metric,dim", METRICS)
@pytest.mark.parametrize("where", ["delta", "base", "mapped"])
def test_scores_match_oracle_exactly_small_n(metric, dim, where, tmp_path):
    """With efSearch >= n HNSW is exhaustive: ids and scores equal brute force."""
    base = make_vectors(metric, 300, dim, seed=1)
    queries = make_vectors(metric, 20, dim, seed=2)
    eng = _engine(metric, dim, base, ef_search=512)
    if where != "delta":
        snap = eng.compact()
        assert eng.delta_size == 0 and eng.base_size == 300
        if where == "mapped":
            p = tmp_path / "base.bin"
            p.write_bytes(snap.index_bytes)
            eng.compact_complete(str(p), snap.generation)
            assert eng._index.base_mapped
    res = eng.search(queries, k=10)
    want_idx, want_scores = oracle_topk(metric, queries, base, dim, 10)
    np.testing.assert_allclose(res.scores, want_scores, rtol=1e-5, atol=1e-5)
    # ids may differ only inside exact ties
    all_scores = oracle_scores(metric, queries, base, dim)
    got_scores = np.take_along_axis(all_scores, res.ids.astype(np.int64), 1)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(res.scores, axis=1) >= 0)


@pytest.mark.parametrize("metric,dim", METRICS)
def test_exact_duplicates_find_themselves(metric, dim):
    def vecs(n, seed):
        v = make_vectors(metric, n, dim, seed=seed)
        if metric == "ip":  # a duplicate is only the ip-nearest among unit vectors
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    base = vecs(3000, 3)
    eng = _engine(metric, dim, base, threshold=1000)  # one auto-compaction, then base
    assert eng.delta_size == 0 and eng.generation == 1
    extra = vecs(200, 4)
    eng.add(extra, ids=range(3000, 3200))  # these stay in the delta
    assert eng.delta_size == 200
    res = eng.search(np.concatenate([base, extra]), k=1)
    assert res.ids[:, 0].tolist() == list(range(3200))
    self_score = -1.0 if metric == "ip" else 0.0
    np.testing.assert_allclose(res.scores[:, 0], self_score, atol=1e-5)


def test_score_definitions():
    """Each metric's documented score on hand-computed vectors."""
    a = np.array([[1, 0, 0, 0]], np.float32)
    b = np.array([[3, 4, 0, 0]], np.float32)
    for metric, want in (("cosine", 1 - 3 / 5), ("l2", 4 + 16), ("ip", -3.0)):
        eng = OluoEngine(4, metric)
        eng.add(b, ids=["b"])
        res = eng.search(a, k=1)
        assert res.ids[0, 0] == "b"
        assert res.scores[0, 0] == pytest.approx(want, rel=1e-6)


def test_hamming_counts_every_bit():
    """Regression for upstream defect 1: bits beyond the first 64 count, score = bits/256."""
    zero = np.zeros((1, 32), np.uint8)
    eng = OluoEngine(256, "hamming")
    vecs = np.zeros((40, 32), np.uint8)
    for i in range(32):
        vecs[i, i] = 0x01  # one bit set in byte i
    vecs[32] = 0xFF  # all 256 bits
    vecs[33, 8:] = 0xFF  # 192 bits, none in the first 8 bytes
    vecs[34, 31] = 0x80  # the very last byte only
    eng.add(vecs[:35])
    res = eng.search(zero, k=35)
    scores = dict(zip(res.ids[0].tolist(), res.scores[0].tolist(), strict=True))
    for i in range(32):
        assert scores[i] == pytest.approx(1 / 256)
    assert scores[32] == 1.0
    assert scores[33] == pytest.approx(192 / 256)
    assert scores[34] == pytest.approx(1 / 256)
    # and after compaction into the faiss IndexBinaryHNSW base
    eng.compact()
    res2 = eng.search(zero, k=35, ef=64)
    assert dict(zip(res2.ids[0].tolist(), res2.scores[0].tolist(), strict=True)) == scores


def test_hamming_rejects_non_multiple_of_8():
    from oluo_lab.engine import InvalidEvent

    with pytest.raises(InvalidEvent):
        OluoEngine(100, "hamming")


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_recall_random_data_default_parameters(metric):
    rng = np.random.default_rng(7)
    # clustered data in 32 dims: a realistic, non-uniform distribution
    centers = rng.standard_normal((50, 32)).astype(np.float32) * 3
    base = (centers[rng.integers(0, 50, 8000)] + rng.standard_normal((8000, 32))).astype(np.float32)
    queries = (centers[rng.integers(0, 50, 200)] + rng.standard_normal((200, 32))).astype(
        np.float32
    )
    eng = OluoEngine(32, metric)  # defaults: M=16, efC=128, ef=64, threshold 1000
    eng.add(base)
    assert eng.generation == 1 and eng.delta_size == 0
    truth, _ = oracle_topk(metric, queries, base, 32, 10)
    res = eng.search(queries, k=10)
    assert _recall(res.ids.astype(np.int64), truth) >= 0.95


def test_recall_hamming_structured_codes():
    rng = np.random.default_rng(8)
    centers = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    noise = (rng.random((6000, 256)) < 0.08).astype(np.uint8)
    base = centers[rng.integers(0, 40, 6000)] ^ np.packbits(noise, axis=1)
    qnoise = (rng.random((200, 256)) < 0.08).astype(np.uint8)
    queries = centers[rng.integers(0, 40, 200)] ^ np.packbits(qnoise, axis=1)
    eng = OluoEngine(256, "hamming")
    eng.add(base)
    s = oracle_scores("hamming", queries, base, 256)
    res = eng.search(queries, k=10)
    # ties are common in Hamming space: count a hit as correct if its score is within the true top-10
    kth = np.sort(s, axis=1)[:, 9]
    assert np.all(np.diff(res.scores, axis=1) >= 0)
    ok = res.scores <= kth[:, None] + 1e-12
    assert ok.mean() >= 0.95


@pytest.mark.parametrize("metric,dim", METRICS)
def test_single_query_fast_path_equals_batch_path(metric, dim):
    base = make_vectors(metric, 2000, dim, seed=51)
    eng = _engine(metric, dim, base, threshold=500)
    assert eng.delta_size == 0
    queries = np.concatenate([make_vectors(metric, 30, dim, seed=52), base[:10]])
    batch = eng.search(queries, k=10)
    strided = np.asfortranarray(queries)  # its rows are non-contiguous 1-D views
    for i, q in enumerate(queries):
        for one in (eng.search(q, k=10), eng.search(strided[i], k=10)):
            assert one.ids[0].tolist() == batch.ids[i].tolist()
            assert np.array_equal(one.keys[0], batch.keys[i])
            assert np.array_equal(one.scores[0], batch.scores[i])
            assert one.scores.dtype == np.float64 and one.scores.shape == (1, 10)
    assert eng._index._plans  # the fast path answered (most of) the single queries
    assert batch.ids[30:, 0].tolist() == list(range(10))
    # keys that are no longer base positions (a delete + rebuild): same answers
    eng.delete(list(range(0, 2000, 3)))
    eng.compact()
    assert not eng._index._keys_are_positions()
    batch = eng.search(queries, k=10)
    exact = eng.search(queries, k=10, exact=True)
    alive = [i for i in range(10) if i % 3]
    assert [batch.ids[30 + i, 0] for i in alive] == [exact.ids[30 + i, 0] for i in alive] == alive
    for i, q in enumerate(queries):
        one = eng.search(q, k=10)
        assert np.array_equal(one.keys[0], batch.keys[i])
        assert np.array_equal(one.scores[0], batch.scores[i])


def test_huge_page_collapse_changes_nothing_visible():
    """The engine asks Linux for huge pages under its base (MADV_COLLAPSE): advisory
    only, so the index bytes and the search results must be exactly as before."""
    import faiss

    from oluo_lab.engine._faiss_native import collapse_huge_pages

    rng = np.random.default_rng(61)
    xb = rng.standard_normal((12_000, 64)).astype(np.float32)  # 3 MB of codes: >= 1 huge page
    ix = faiss.IndexHNSWFlat(64, 8)
    ix.add(xb)
    before = faiss.serialize_index(ix).tobytes()
    d0, i0 = ix.search(xb[:50], 5)
    collapse_huge_pages(ix)
    assert faiss.serialize_index(ix).tobytes() == before
    d1, i1 = ix.search(xb[:50], 5)
    assert np.array_equal(i0, i1) and np.array_equal(d0, d1)
    bix = faiss.IndexBinaryHNSW(256, 8)
    bix.add(rng.integers(0, 256, (2000, 32), dtype=np.uint8))
    bbefore = faiss.serialize_index_binary(bix).tobytes()
    collapse_huge_pages(bix)
    assert faiss.serialize_index_binary(bix).tobytes() == bbefore


def test_key_filter_never_misses_a_stored_key_and_rarely_hits_an_absent_one():
    """The single-query exact-match probe: a bitmap over the rows' 8-byte keys. A stored
    key must always probe positive (else a query equal to a stored row could miss it);
    absent keys probe positive only at the designed ~3% rate."""
    from oluo_lab.engine._exact_match import key_filter, may_hold, row_keys

    rng = np.random.default_rng(7)
    rows = rng.standard_normal((50_000, 16)).astype(np.float32)
    keys = np.sort(row_keys(rows))
    bits, shift = key_filter(keys)
    assert len(bits) * 8 >= 32 * len(keys) and len(bits) <= 64 * len(keys) // 8 + 8192

    def probe(k: int) -> bool:
        return may_hold((bits, shift), k.to_bytes(8, "little"))

    assert all(probe(k) for k in keys.tolist())
    absent = row_keys(rng.standard_normal((20_000, 16)).astype(np.float32)).tolist()
    rate = np.mean([probe(k) for k in absent])
    assert 0.005 < rate < 0.06
    assert key_filter(np.zeros(0, np.uint64))[1] == 64 - 16  # empty base: smallest bitmap
