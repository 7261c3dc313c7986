"""Scope and predicate filters run inside the search: only allowed hits, and the full k."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import make_vectors, oracle_scores

from oluo_lab.engine import Ingest, OluoEngine, Scope
from oluo_lab.engine import index as index_mod

METRICS = [("cosine", 16), ("l2", 16), ("ip", 16), ("hamming", 128)]


def _build(metric, dim, n, seed, compact=True):
    vecs = make_vectors(metric, n, dim, seed=seed)
    rng = np.random.default_rng(seed)
    scopes = rng.choice([0, 1, 2], size=n, p=[0.02, 0.18, 0.8])
    eng = OluoEngine(dim, metric, compact_threshold=10**9)
    eng.handle(
        Ingest(
            vecs,
            list(range(n)),
            [{"even": i % 2 == 0, "i": i} for i in range(n)],
            scope=scopes.tolist(),
        )
    )
    if compact:
        eng.compact()
    return eng, vecs, scopes


def _check(eng, vecs, queries, metric, dim, allowed, k, **kw):
    res = eng.search(queries, k=k, **kw)
    want = min(k, int(allowed.sum()))
    all_scores = oracle_scores(metric, queries, vecs, dim)
    for qi in range(len(queries)):
        got = [x for x in res.ids[qi].tolist() if x is not None]
        assert len(got) == want  # the full k
        assert all(allowed[g] for g in got)  # only allowed entries
        np.testing.assert_allclose(res.scores[qi, :want], all_scores[qi, got], rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(res.scores[qi, :want]) >= 0)
    return res


@pytest.mark.parametrize("metric,dim", METRICS)
@pytest.mark.parametrize("exact_limit", [2048, 0])  # 0 forces the HNSW-with-selector path
def test_narrow_scope_returns_full_k(metric, dim, exact_limit, monkeypatch):
    monkeypatch.setattr(index_mod, "EXACT_LIMIT", exact_limit)
    eng, vecs, scopes = _build(metric, dim, 3000, seed=21)
    queries = make_vectors(metric, 30, dim, seed=22)
    for scope in (Scope.PERSONAL, Scope.COMMUNITY, Scope.NETWORK_WIDE):
        _check(eng, vecs, queries, metric, dim, scopes <= scope, 10, scope=scope)


@pytest.mark.parametrize("where", ["base", "delta", "both"])
def test_scope_and_predicate_in_base_and_delta(where):
    eng, vecs, scopes = _build("l2", 16, 1500, seed=23, compact=where != "delta")
    if where == "both":  # re-ingest a third into the delta (same vectors, same scopes)
        idx = list(range(0, 1500, 3))
        eng.handle(
            Ingest(
                vecs[idx],
                idx,
                [{"even": i % 2 == 0, "i": i} for i in idx],
                scope=scopes[idx].tolist(),
            )
        )
        assert eng.delta_size == len(idx)
    queries = make_vectors("l2", 20, 16, seed=24)
    even = np.arange(1500) % 2 == 0
    _check(eng, vecs, queries, "l2", 16, even, 10, predicate=lambda e: e.metadata["even"])
    _check(
        eng,
        vecs,
        queries,
        "l2",
        16,
        even & (scopes <= 1),
        10,
        scope=Scope.COMMUNITY,
        predicate=lambda e: e.metadata["even"],
    )
    few = np.isin(np.arange(1500), [5, 600, 1499])
    res = _check(
        eng, vecs, queries, "l2", 16, few, 10, predicate=lambda e: e.metadata["i"] in (5, 600, 1499)
    )
    assert res.ids[:, 3:].tolist() == [[None] * 7] * 20


def test_deleted_base_entries_filtered_inside_search(monkeypatch):
    monkeypatch.setattr(index_mod, "EXACT_LIMIT", 0)
    eng, vecs, _ = _build("cosine", 16, 3000, seed=25)
    eng.delete(list(range(0, 3000, 2)))  # half the base is tombstoned
    alive = np.arange(3000) % 2 == 1
    _check(eng, vecs, vecs[:40], "cosine", 16, alive, 10)
